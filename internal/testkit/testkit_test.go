package testkit_test

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/tasknation/tokengate/internal/testkit"
)

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func TestClock_TimersFireInOrderOnAdvance(t *testing.T) {
	c := testkit.NewClockAt(t0)
	var fired []string
	c.AfterFunc(2*time.Second, func() { fired = append(fired, "2s") })
	c.AfterFunc(time.Second, func() { fired = append(fired, "1s") })
	stopped := c.AfterFunc(time.Second, func() { fired = append(fired, "stopped") })
	c.AfterFunc(time.Hour, func() { fired = append(fired, "1h") })
	if !stopped.Stop() || stopped.Stop() {
		t.Fatal("Stop: want true the first time, false after")
	}
	if n := c.Pending(); n != 3 {
		t.Fatalf("Pending = %d, want 3", n)
	}
	c.Advance(1999 * time.Millisecond)
	if !slices.Equal(fired, []string{"1s"}) {
		t.Fatalf("after 1.999s fired %v, want [1s]", fired)
	}
	c.Advance(time.Millisecond)
	if !slices.Equal(fired, []string{"1s", "2s"}) || c.Pending() != 1 {
		t.Fatalf("after 2s fired %v with %d pending, want [1s 2s] and 1", fired, c.Pending())
	}
	if got := c.Now(); !got.Equal(t0.Add(2 * time.Second)) {
		t.Fatalf("Now = %v, want %v", got, t0.Add(2*time.Second))
	}
}

func TestClock_StepAndSkew(t *testing.T) {
	c := testkit.NewClockAt(t0)
	c.SetStep(time.Second)
	if a, b := c.Now(), c.Now(); !a.Equal(t0) || !b.Equal(t0.Add(time.Second)) {
		t.Fatalf("two readings with a 1s step: %v, %v; want %v and a second later", a, b, t0)
	}
	c.SetStep(0)
	ahead := testkit.Skewed{Clock: c, Skew: 5 * time.Second}
	if got, want := ahead.Now(), c.Now().Add(5*time.Second); !got.Equal(want) {
		t.Fatalf("Skewed.Now = %v, want %v", got, want)
	}
}

func TestAPISpy_RecordsAuthorization(t *testing.T) {
	api := http.NewServeMux()
	api.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	upstream := newServer(t, api)
	spy := testkit.NewAPISpy(t, upstream)
	for _, auth := range []string{"Bearer one", "Bearer two"} {
		req, _ := http.NewRequest(http.MethodGet, spy.URL+"/x", nil)
		req.Header.Set("Authorization", auth)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusTeapot {
			t.Fatalf("status %d through the spy, want the API's %d", resp.StatusCode, http.StatusTeapot)
		}
	}
	if last, n := spy.Last(); n != 2 || !slices.Equal(last, []string{"Bearer two"}) {
		t.Fatalf("Last = %v, %d; want [Bearer two], 2", last, n)
	}
	if got := spy.Take(); len(got) != 2 || got[0][0] != "Bearer one" {
		t.Fatalf("Take = %v, want both requests in order", got)
	}
	if got := spy.Take(); len(got) != 0 {
		t.Fatalf("Take after Take = %v, want nothing", got)
	}
}

// newServer serves h on loopback until the test ends and returns its URL.
func newServer(t *testing.T, h http.Handler) string {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s.URL
}
