package tasknationtest

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
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
	}
	return fmt.Sprintf("FaultKind(%d)", int(k))
}

// Fault describes a failure of the token endpoint.
type Fault struct {
	// Kind is the failure.
	Kind FaultKind
	// Status is the HTTP status for FaultStatus; default 503.
	Status int
	// Count is how many matching token requests the fault affects; 0 means
	// every matching request until ClearFaults.
	Count int
	// Grant restricts the fault to requests with this grant_type; "" matches
	// every token request.
	Grant string
}

type activeFault struct {
	f         Fault
	remaining int // 0 = unlimited
}

// InjectFault appends f to the fault queue. For each token request the
// first queued fault whose Grant matches applies and uses up one of its
// Count. It panics on an unknown Kind or a negative Count.
func (s *Server) InjectFault(f Fault) {
	if f.Kind < FaultNone || f.Kind > FaultLostAfterRotation {
		panic(fmt.Sprintf("tasknationtest: InjectFault: unknown kind %v", f.Kind))
	}
	if f.Count < 0 {
		panic("tasknationtest: InjectFault: negative Count")
	}
	if f.Kind == FaultStatus && f.Status == 0 {
		f.Status = http.StatusServiceUnavailable
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
