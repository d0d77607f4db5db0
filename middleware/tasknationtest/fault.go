package tasknationtest

import (
	"cmp"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// FaultKind is the kind of failure a Fault injects into the token endpoint.
type FaultKind int

const (
	// FaultNone lets the request through. A FaultNone entry with a Count
	// still consumes matching requests, so it can let the first N through
	// before a later fault in the queue applies.
	FaultNone FaultKind = iota
	// FaultStatus answers Fault.Status (default 503) with a JSON
	// {"error":"server_error",...} body; the grant is not processed.
	FaultStatus
	// FaultGarbage answers 200 OK with Content-Type text/html and an HTML
	// page, as a captive portal or a misrouted proxy would; the grant is not
	// processed.
	FaultGarbage
	// FaultDrop closes the connection without answering, before the grant is
	// processed: nothing changes on the server.
	FaultDrop
	// FaultLostAfterRotation processes the grant fully (rotates the refresh
	// token, revokes the old access token, burns the code) and then closes
	// the connection without answering: the answer is lost on the network.
	FaultLostAfterRotation
	// FaultRedirect answers Fault.Status (default 307 Temporary Redirect)
	// with a Location header of Fault.Location (default: the token
	// endpoint itself, so that a client that follows it shows as a second
	// request); the grant is not processed. A client that follows a 307 or
	// 308 posts its credentials again to Location.
	FaultRedirect
	// FaultReject answers the RFC 6749 error Fault.Code (default
	// invalid_grant) with status Fault.Status (default 401 for
	// invalid_client, 400 for others); the grant is not processed. With
	// Fault.EchoCredentials its error_description quotes the credentials
	// the request carried, as a careless server does.
	FaultReject
)

// String returns the name of the kind, e.g. "FaultDrop".
func (k FaultKind) String() string {
	switch k {
	case FaultNone:
		return "FaultNone"
	case FaultStatus:
		return "FaultStatus"
	case FaultGarbage:
		return "FaultGarbage"
	case FaultDrop:
		return "FaultDrop"
	case FaultLostAfterRotation:
		return "FaultLostAfterRotation"
	case FaultRedirect:
		return "FaultRedirect"
	case FaultReject:
		return "FaultReject"
	}
	return fmt.Sprintf("FaultKind(%d)", int(k))
}

// Fault describes a failure of the token endpoint.
type Fault struct {
	// Kind is the failure.
	Kind FaultKind
	// Status is the HTTP status of FaultStatus (default 503), FaultRedirect
	// (a 3xx, default 307) and FaultReject (default 401 for
	// invalid_client, 400 for other codes).
	Status int
	// Count is how many matching token requests the fault affects; 0 means
	// every matching request until ClearFaults.
	Count int
	// Grant restricts the fault to requests with this grant_type; "" matches
	// every token request.
	Grant string
	// RetryAfter is sent verbatim as the Retry-After header of a
	// FaultStatus or FaultReject answer ("120", an HTTP-date, or anything
	// a client's parser should survive); "" sends none.
	RetryAfter string
	// Location is where FaultRedirect points; default TokenURL().
	Location string
	// Code is the RFC 6749 error code of FaultReject; default
	// invalid_grant.
	Code string
	// EchoCredentials makes FaultReject's error_description quote the
	// client secret or assertion, refresh token, authorization code and code verifier
	// the request carried, for tests that a client keeps what a server
	// says about them out of its logs and errors.
	EchoCredentials bool
}

type activeFault struct {
	f         Fault
	remaining int // 0 = unlimited
}

// InjectFault appends f to the fault queue. For each token request the
// first queued fault whose Grant matches applies and uses up one of its
// Count. It panics on an unknown Kind, a negative Count or a FaultRedirect
// Status that is not a 3xx.
func (s *Server) InjectFault(f Fault) {
	if f.Kind < FaultNone || f.Kind > FaultReject {
		panic(fmt.Sprintf("tasknationtest: InjectFault: unknown kind %v", f.Kind))
	}
	if f.Count < 0 {
		panic("tasknationtest: InjectFault: negative Count")
	}
	switch f.Kind {
	case FaultStatus:
		f.Status = cmp.Or(f.Status, http.StatusServiceUnavailable)
	case FaultRedirect:
		f.Status = cmp.Or(f.Status, http.StatusTemporaryRedirect)
		if f.Status/100 != 3 {
			panic(fmt.Sprintf("tasknationtest: InjectFault: FaultRedirect with status %d", f.Status))
		}
		f.Location = cmp.Or(f.Location, s.TokenURL())
	case FaultReject:
		f.Code = cmp.Or(f.Code, "invalid_grant")
		if f.Status == 0 {
			f.Status = http.StatusBadRequest
			if f.Code == "invalid_client" {
				f.Status = http.StatusUnauthorized
			}
		}
	}
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	s.faults = append(s.faults, &activeFault{f: f, remaining: f.Count})
}

// ClearFaults removes every queued fault.
func (s *Server) ClearFaults() {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	s.faults = nil
}

// takeFault returns the fault that applies to a request with this grant
// type and uses it up once; the zero Fault (FaultNone) if none matches.
func (s *Server) takeFault(grant string) Fault {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	for i, af := range s.faults {
		if af.f.Grant != "" && af.f.Grant != grant {
			continue
		}
		if af.remaining > 0 {
			af.remaining--
			if af.remaining == 0 {
				s.faults = slices.Delete(s.faults, i, i+1)
			}
		}
		return af.f
	}
	return Fault{}
}

// SetLatency delays every token answer by d (0 disables), before the
// responder, faults and grant processing. If the client goes away or the
// server closes while waiting, the request is abandoned and nothing changes
// on the server.
func (s *Server) SetLatency(d time.Duration) { s.latency.Store(int64(d)) }

// delay waits for the configured latency; false means the request is abandoned.
func (s *Server) delay(r *http.Request) bool {
	d := time.Duration(s.latency.Load())
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	s.hook("latency-wait")
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		s.hook("latency-abort")
		return false
	case <-s.done:
		return false
	}
}

// SetTokenResponder makes h answer every token request verbatim, after the
// request is counted and delayed, instead of the faults and grant logic:
// for tests of malformed answers. The form is already parsed (use
// r.PostForm). nil restores normal behaviour.
func (s *Server) SetTokenResponder(h http.HandlerFunc) {
	if h == nil {
		s.responder.Store(nil)
		return
	}
	s.responder.Store(&h)
}

// writeRedirect answers f, a FaultRedirect.
func writeRedirect(w http.ResponseWriter, f Fault) {
	w.Header().Set("Location", f.Location)
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(f.Status)
}

// rejection is the error answer of f, a FaultReject, to r.
func rejection(r *http.Request, f Fault) *oauthError {
	desc := "the request was refused"
	if f.EchoCredentials {
		var quoted []string
		_, basicSecret, _ := r.BasicAuth()
		for _, name := range []string{"client_secret", "client_assertion", "refresh_token", "code", "code_verifier"} {
			v := r.PostForm.Get(name)
			if name == "client_secret" && v == "" {
				v = basicSecret
			}
			if v != "" {
				quoted = append(quoted, name+" "+strconv.Quote(v))
			}
		}
		if quoted != nil {
			desc = "the request was refused: " + strings.Join(quoted, ", ") + " is not valid"
		}
	}
	return &oauthError{status: f.Status, code: f.Code, description: desc}
}

const garbagePage = `<!DOCTYPE html>
<html><head><title>Service Unavailable</title></head>
<body><h1>We'll be right back</h1><p>TaskNation is undergoing maintenance.</p></body></html>
`

func writeGarbage(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(garbagePage)))
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, garbagePage)
}

// dropConnection closes the client connection without writing an answer and
// reports ev to the OnTokenAnswer hook once it is closed.
func (s *Server) dropConnection(w http.ResponseWriter, ev TokenEvent) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		// Not hijackable (e.g. HTTP/2): abort the response instead. The
		// abort happens once the handler has panicked, so the hook can
		// only run just before it.
		s.answered(nil, ev)
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
	s.answered(nil, ev)
}
