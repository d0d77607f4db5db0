package tasknationtest_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tasknation/tokengate/middleware/tasknationtest"
)

// waitTimeout bounds every wait on a channel in these tests.
const waitTimeout = 10 * time.Second

func TestRefreshReuseCounters(t *testing.T) {
	tests := []struct {
		name  string
		grace time.Duration // Options.GracePeriod
		lost  bool          // the answer of the rotation is lost (FaultLostAfterRotation)
		// reuses are the reuses of the rotated refresh token, each made
		// after advancing the clock by its duration.
		reuses               []time.Duration
		wantStale, wantGrace int64
	}{
		{name: "rotation only"},
		{name: "reuse at once", reuses: []time.Duration{0}, wantGrace: 1},
		{name: "reuse at the 60s boundary", reuses: []time.Duration{60 * time.Second}, wantGrace: 1},
		{name: "two reuses within grace", reuses: []time.Duration{10 * time.Second, 10 * time.Second}, wantGrace: 2},
		{name: "reuse after grace", reuses: []time.Duration{61 * time.Second}, wantStale: 1},
		{name: "reuse within then after grace", reuses: []time.Duration{30 * time.Second, 31 * time.Second}, wantStale: 1, wantGrace: 1},
		{name: "second stale reuse, family already revoked", reuses: []time.Duration{61 * time.Second, time.Second}, wantStale: 2},
		{name: "lost answer, retry within grace", lost: true, reuses: []time.Duration{59 * time.Second}, wantGrace: 1},
		{name: "lost answer, retry after grace", lost: true, reuses: []time.Duration{61 * time.Second}, wantStale: 1},
		{name: "custom 5s grace, 6s later", grace: 5 * time.Second, reuses: []time.Duration{6 * time.Second}, wantStale: 1},
		{name: "grace disabled", grace: -1, reuses: []time.Duration{time.Millisecond}, wantStale: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, clk := newServer(t, tasknationtest.Options{GracePeriod: tc.grace})
			grace := tc.grace
			switch {
			case grace == 0:
				grace = 60 * time.Second
			case grace < 0:
				grace = 0
			}
			rt0 := login(t, s, "supply::leads offline_access").str("refresh_token")
			// Neither an unknown token nor a first use is a reuse.
			wantError(t, tokenCall(t, s, refreshForm("tn_rt_unknown")), 400, "invalid_grant")
			if tc.lost {
				s.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultLostAfterRotation, Grant: tasknationtest.GrantRefreshToken, Count: 1})
				if err := tokenCallErr(t, s, refreshForm(rt0)); err == nil {
					t.Fatal("rotation with a lost answer: got an answer")
				}
			} else {
				succ := mustOK(t, tokenCall(t, s, refreshForm(rt0)))
				mustOK(t, tokenCall(t, s, refreshForm(succ.str("refresh_token")))) // a first use too
			}
			var elapsed time.Duration
			for i, d := range tc.reuses {
				clk.Advance(d)
				elapsed += d
				r := tokenCall(t, s, refreshForm(rt0))
				if elapsed <= grace {
					mustOK(t, r)
				} else {
					wantError(t, r, 400, "invalid_grant")
				}
				if t.Failed() {
					t.Fatalf("reuse %d, %v after the rotation", i+1, elapsed)
				}
			}
			if got := s.StaleRefreshReuses(); got != tc.wantStale {
				t.Errorf("StaleRefreshReuses = %d, want %d", got, tc.wantStale)
			}
			if got := s.GraceRefreshReuses(); got != tc.wantGrace {
				t.Errorf("GraceRefreshReuses = %d, want %d", got, tc.wantGrace)
			}
			s.ResetCounters()
			if s.StaleRefreshReuses() != 0 || s.GraceRefreshReuses() != 0 {
				t.Errorf("after ResetCounters: stale %d, grace %d; want 0, 0", s.StaleRefreshReuses(), s.GraceRefreshReuses())
			}
		})
	}
}

// recordEvents installs an OnTokenAnswer hook that sends every event on the
// returned channel.
func recordEvents(s *tasknationtest.Server) <-chan tasknationtest.TokenEvent {
	ch := make(chan tasknationtest.TokenEvent, 16)
	s.OnTokenAnswer(func(ev tasknationtest.TokenEvent) { ch <- ev })
	return ch
}

func waitEvent(t *testing.T, ch <-chan tasknationtest.TokenEvent) tasknationtest.TokenEvent {
	t.Helper()
	select {
	case ev := <-ch:
		return ev
	case <-time.After(waitTimeout):
		t.Fatal("OnTokenAnswer hook not called")
		return tasknationtest.TokenEvent{}
	}
}

// wantTransportError posts form and fails unless the connection fails.
func wantTransportError(t *testing.T, s *tasknationtest.Server, form url.Values) {
	t.Helper()
	if err := tokenCallErr(t, s, form); err == nil {
		t.Fatal("got an answer, want a transport error")
	}
}

func TestOnTokenAnswer(t *testing.T) {
	const (
		cc      = tasknationtest.GrantClientCredentials
		code    = tasknationtest.GrantAuthorizationCode
		refresh = tasknationtest.GrantRefreshToken
	)
	lostAfterRotation := tasknationtest.Fault{Kind: tasknationtest.FaultLostAfterRotation, Count: 1}
	tests := []struct {
		name string
		// request prepares s (before the hook is installed) and returns the
		// one token request whose event is checked.
		request func(t *testing.T, s *tasknationtest.Server, clk *clock) func(t *testing.T)
		want    tasknationtest.TokenEvent
	}{
		{
			name: "client_credentials",
			request: func(t *testing.T, s *tasknationtest.Server, _ *clock) func(t *testing.T) {
				return func(t *testing.T) { mustOK(t, tokenCall(t, s, ccForm("supply::leads"))) }
			},
			want: tasknationtest.TokenEvent{Grant: cc, Status: 200, Issued: true},
		},
		{
			name: "authorization_code",
			request: func(t *testing.T, s *tasknationtest.Server, _ *clock) func(t *testing.T) {
				verifier, challenge := pkce()
				c := authorize(t, s, authParams("supply::leads offline_access", challenge))
				return func(t *testing.T) { mustOK(t, tokenCall(t, s, codeForm(c, verifier))) }
			},
			want: tasknationtest.TokenEvent{Grant: code, Status: 200, Issued: true},
		},
		{
			name: "refresh rotated",
			request: func(t *testing.T, s *tasknationtest.Server, _ *clock) func(t *testing.T) {
				rt := login(t, s, "supply::leads offline_access").str("refresh_token")
				return func(t *testing.T) { mustOK(t, tokenCall(t, s, refreshForm(rt))) }
			},
			want: tasknationtest.TokenEvent{Grant: refresh, Status: 200, Issued: true},
		},
		{
			name: "refresh lost after rotation",
			request: func(t *testing.T, s *tasknationtest.Server, _ *clock) func(t *testing.T) {
				first := login(t, s, "supply::leads offline_access")
				s.InjectFault(lostAfterRotation)
				return func(t *testing.T) {
					wantTransportError(t, s, refreshForm(first.str("refresh_token")))
					if s.Active(first.str("access_token")) {
						t.Error("the refresh was not processed: old access token still active")
					}
				}
			},
			want: tasknationtest.TokenEvent{Grant: refresh, Issued: true, Lost: true},
		},
		{
			name: "code lost after exchange",
			request: func(t *testing.T, s *tasknationtest.Server, _ *clock) func(t *testing.T) {
				verifier, challenge := pkce()
				c := authorize(t, s, authParams("supply::leads", challenge))
				s.InjectFault(lostAfterRotation)
				return func(t *testing.T) { wantTransportError(t, s, codeForm(c, verifier)) }
			},
			want: tasknationtest.TokenEvent{Grant: code, Issued: true, Lost: true},
		},
		{
			name: "refused grant lost",
			request: func(t *testing.T, s *tasknationtest.Server, _ *clock) func(t *testing.T) {
				s.InjectFault(lostAfterRotation)
				return func(t *testing.T) { wantTransportError(t, s, refreshForm("tn_rt_unknown")) }
			},
			want: tasknationtest.TokenEvent{Grant: refresh, Lost: true},
		},
		{
			name: "FaultDrop",
			request: func(t *testing.T, s *tasknationtest.Server, _ *clock) func(t *testing.T) {
				s.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultDrop, Count: 1})
				return func(t *testing.T) { wantTransportError(t, s, ccForm("")) }
			},
			want: tasknationtest.TokenEvent{Grant: cc, Lost: true},
		},
		{
			name: "FaultStatus",
			request: func(t *testing.T, s *tasknationtest.Server, _ *clock) func(t *testing.T) {
				s.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultStatus, Count: 1})
				return func(t *testing.T) { wantError(t, tokenCall(t, s, ccForm("")), 503, "server_error") }
			},
			want: tasknationtest.TokenEvent{Grant: cc, Status: 503},
		},
		{
			name: "FaultGarbage",
			request: func(t *testing.T, s *tasknationtest.Server, _ *clock) func(t *testing.T) {
				s.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultGarbage, Count: 1})
				return func(t *testing.T) {
					if r := tokenCall(t, s, ccForm("")); r.status != 200 || !strings.Contains(string(r.body), "<html>") {
						t.Errorf("got %d %q, want the HTML page", r.status, r.body)
					}
				}
			},
			want: tasknationtest.TokenEvent{Grant: cc, Status: 200},
		},
		{
			name: "stale refresh token",
			request: func(t *testing.T, s *tasknationtest.Server, clk *clock) func(t *testing.T) {
				rt := login(t, s, "supply::leads offline_access").str("refresh_token")
				mustOK(t, tokenCall(t, s, refreshForm(rt)))
				clk.Advance(61 * time.Second)
				return func(t *testing.T) { wantError(t, tokenCall(t, s, refreshForm(rt)), 400, "invalid_grant") }
			},
			want: tasknationtest.TokenEvent{Grant: refresh, Status: 400},
		},
		{
			name: "wrong secret",
			request: func(t *testing.T, s *tasknationtest.Server, _ *clock) func(t *testing.T) {
				form := ccForm("")
				form.Set("client_secret", "wrong")
				return func(t *testing.T) { wantError(t, tokenCall(t, s, form), 401, "invalid_client") }
			},
			want: tasknationtest.TokenEvent{Grant: cc, Status: 401},
		},
		{
			name: "GET",
			request: func(t *testing.T, s *tasknationtest.Server, _ *clock) func(t *testing.T) {
				return func(t *testing.T) {
					req := tokenRequest(context.Background(), t, s, nil)
					req.Method = http.MethodGet
					wantError(t, do(t, req), 405, "invalid_request")
				}
			},
			want: tasknationtest.TokenEvent{Status: 405},
		},
		{
			name: "responder status",
			request: func(t *testing.T, s *tasknationtest.Server, _ *clock) func(t *testing.T) {
				s.SetTokenResponder(func(w http.ResponseWriter, r *http.Request) {
					w.WriteHeader(http.StatusTeapot)
					io.WriteString(w, "short and stout")
				})
				return func(t *testing.T) {
					if r := tokenCall(t, s, ccForm("")); r.status != http.StatusTeapot || string(r.body) != "short and stout" {
						t.Errorf("got %d %q, want the responder's answer", r.status, r.body)
					}
				}
			},
			want: tasknationtest.TokenEvent{Grant: cc, Status: http.StatusTeapot},
		},
		{
			name: "responder implicit 200",
			request: func(t *testing.T, s *tasknationtest.Server, _ *clock) func(t *testing.T) {
				s.SetTokenResponder(func(http.ResponseWriter, *http.Request) {})
				return func(t *testing.T) {
					if r := tokenCall(t, s, ccForm("")); r.status != 200 || len(r.body) != 0 {
						t.Errorf("got %d %q, want an empty 200", r.status, r.body)
					}
				}
			},
			want: tasknationtest.TokenEvent{Grant: cc, Status: 200},
		},
		{
			name: "responder hijacks",
			request: func(t *testing.T, s *tasknationtest.Server, _ *clock) func(t *testing.T) {
				s.SetTokenResponder(func(w http.ResponseWriter, r *http.Request) {
					conn, _, err := w.(http.Hijacker).Hijack()
					if err != nil {
						panic(err)
					}
					conn.Close()
				})
				return func(t *testing.T) { wantTransportError(t, s, ccForm("")) }
			},
			want: tasknationtest.TokenEvent{Grant: cc},
		},
		{
			name: "abandoned during latency",
			request: func(t *testing.T, s *tasknationtest.Server, _ *clock) func(t *testing.T) {
				s.SetLatency(time.Hour)
				ctx, cancel := context.WithCancel(context.Background())
				t.Cleanup(cancel)
				tasknationtest.SetTestHook(s, func(event string) {
					if event == "latency-wait" {
						cancel()
					}
				})
				return func(t *testing.T) {
					resp, err := httpClient.Do(tokenRequest(ctx, t, s, ccForm("")))
					if err == nil {
						resp.Body.Close()
						t.Fatal("got an answer, want the request abandoned")
					}
				}
			},
			want: tasknationtest.TokenEvent{Grant: cc},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, clk := newServer(t, tasknationtest.Options{})
			send := tc.request(t, s, clk)
			events := recordEvents(s)
			send(t)
			if got := waitEvent(t, events); got != tc.want {
				t.Errorf("event = %+v, want %+v", got, tc.want)
			}
			// Close waits for the handlers still running (not for
			// hijacked ones, whose single event has arrived already).
			s.Close()
			if len(events) != 0 {
				t.Errorf("hook called again: %+v", <-events)
			}
		})
	}
}

func TestOnTokenAnswerOncePerRequest(t *testing.T) {
	s, _ := newServer(t, tasknationtest.Options{})
	events := recordEvents(s)
	const n = 5
	for range n {
		mustOK(t, tokenCall(t, s, ccForm("")))
	}
	for range n {
		if ev := waitEvent(t, events); ev != (tasknationtest.TokenEvent{Grant: tasknationtest.GrantClientCredentials, Status: 200, Issued: true}) {
			t.Errorf("event = %+v", ev)
		}
	}
	s.OnTokenAnswer(nil)
	mustOK(t, tokenCall(t, s, ccForm("")))
	s.Close()
	if len(events) != 0 {
		t.Errorf("%d extra events, want none (one per request, none once cleared)", len(events))
	}
}

// TestOnTokenAnswerAfterAnswer holds the hook until the client has what the
// server sent: the whole answer, or the dropped connection. The client can
// only get it while the handler goroutine sits in the hook if the server
// flushed (or closed) before calling the hook.
func TestOnTokenAnswerAfterAnswer(t *testing.T) {
	tests := []struct {
		name   string
		fault  tasknationtest.Fault // Kind FaultNone: no fault
		grant  string
		wantOK bool // the client gets a token; else a transport error
		want   tasknationtest.TokenEvent
	}{
		{
			name:   "client_credentials answered",
			grant:  tasknationtest.GrantClientCredentials,
			wantOK: true,
			want:   tasknationtest.TokenEvent{Grant: tasknationtest.GrantClientCredentials, Status: 200, Issued: true},
		},
		{
			name:   "refresh answered",
			grant:  tasknationtest.GrantRefreshToken,
			wantOK: true,
			want:   tasknationtest.TokenEvent{Grant: tasknationtest.GrantRefreshToken, Status: 200, Issued: true},
		},
		{
			name:  "refresh lost after rotation",
			fault: tasknationtest.Fault{Kind: tasknationtest.FaultLostAfterRotation, Count: 1},
			grant: tasknationtest.GrantRefreshToken,
			want:  tasknationtest.TokenEvent{Grant: tasknationtest.GrantRefreshToken, Issued: true, Lost: true},
		},
		{
			name:  "dropped",
			fault: tasknationtest.Fault{Kind: tasknationtest.FaultDrop, Count: 1},
			grant: tasknationtest.GrantClientCredentials,
			want:  tasknationtest.TokenEvent{Grant: tasknationtest.GrantClientCredentials, Lost: true},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newServer(t, tasknationtest.Options{})
			form := ccForm("supply::leads")
			if tc.grant == tasknationtest.GrantRefreshToken {
				form = refreshForm(login(t, s, "supply::leads offline_access").str("refresh_token"))
			}
			if tc.fault.Kind != tasknationtest.FaultNone {
				s.InjectFault(tc.fault)
			}
			entered := make(chan tasknationtest.TokenEvent, 1)
			release := make(chan struct{})
			t.Cleanup(func() { close(release) }) // before s.Close, which waits for the hook
			s.OnTokenAnswer(func(ev tasknationtest.TokenEvent) {
				entered <- ev
				<-release
			})

			type outcome struct {
				status int
				body   string
				err    error
			}
			got := make(chan outcome, 1)
			req := tokenRequest(context.Background(), t, s, form)
			go func() {
				resp, err := httpClient.Do(req)
				if err != nil {
					got <- outcome{err: err}
					return
				}
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				got <- outcome{status: resp.StatusCode, body: string(b), err: err}
			}()

			if ev := waitEvent(t, entered); ev != tc.want {
				t.Errorf("event = %+v, want %+v", ev, tc.want)
			}
			// The hook is blocked now; the client must still get its answer.
			var o outcome
			select {
			case o = <-got:
			case <-time.After(waitTimeout):
				t.Fatal("the client got nothing while the hook ran: the answer was not flushed before the hook")
			}
			switch {
			case tc.wantOK && (o.err != nil || o.status != 200 || !strings.Contains(o.body, `"access_token"`)):
				t.Errorf("client got %d %q (err %v), want a token", o.status, o.body, o.err)
			case !tc.wantOK && o.err == nil:
				t.Errorf("client got %d %q, want a transport error", o.status, o.body)
			}
		})
	}
}
