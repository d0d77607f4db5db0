package testkit

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"sync"
	"testing"
)

// APISpy is the upstream of a gateway under test: a real server on
// loopback (so it sees what went over the wire) that records the
// Authorization values each request arrived with, then passes the request
// on to the API at its target (the fake's), which checks the token.
type APISpy struct {
	*httptest.Server
	mu  sync.Mutex
	got [][]string
}

// NewAPISpy starts a spy in front of the API at target (a base URL, such
// as a tasknationtest.Server's URL), closed when the test ends.
func NewAPISpy(t testing.TB, target string) *APISpy {
	t.Helper()
	api, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	proxy := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(api) }}
	s := &APISpy{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.got = append(s.got, slices.Clone(r.Header.Values("Authorization")))
		s.mu.Unlock()
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

// Last is the Authorization values of the last request the spy got, and
// how many requests it got in all (since the last Take).
func (s *APISpy) Last() ([]string, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.got) == 0 {
		return nil, 0
	}
	return s.got[len(s.got)-1], len(s.got)
}

// Take returns the Authorization values of each request the spy got since
// the last Take, in order, and forgets them.
func (s *APISpy) Take() [][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.got
	s.got = nil
	return out
}
