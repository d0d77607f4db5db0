package tasknationtest

import (
	"bufio"
	"net"
	"net/http"
)

// TokenEvent describes one finished token-endpoint request. For
// client_credentials, Issued means an access token was issued.
type TokenEvent struct {
	Grant  string // grant_type of the request ("" if none)
	Status int    // HTTP status written; 0 when the connection was dropped
	Issued bool   // the server issued tokens (a code exchanged or a refresh token rotated), whether or not the answer reached the client
	Lost   bool   // the answer was dropped (FaultDrop, FaultLostAfterRotation)
}

// OnTokenAnswer installs f, called once for every token-endpoint request
// after its answer has been written and flushed to the connection, or after
// the connection was closed for FaultDrop and FaultLostAfterRotation: a
// test can kill a client process right after the server answered, or right
// after a rotation whose answer was lost. nil removes the hook.
//
// f runs on the request's handler goroutine, possibly on several at once.
// A slow f delays the handler's return, not the answer: the answers the
// server writes itself carry a Content-Length, so the client can read all of
// an answer while f still runs. (An answer from SetTokenResponder is flushed
// as written; without a Content-Length its chunked body ends only when the
// handler returns. A responder that hijacks the connection is reported with
// Status 0.) A request abandoned while waiting in SetLatency is reported
// with Status 0 too, as nothing was written. Close waits for the hooks of
// answered requests (one that never returns makes Close hang), not for the
// hooks of dropped connections, which net/http no longer tracks.
func (s *Server) OnTokenAnswer(f func(TokenEvent)) {
	if f == nil {
		s.answerHook.Store(nil)
		return
	}
	s.answerHook.Store(&f)
}

// answered flushes what has been written to w (nil when nothing can be
// flushed: the connection is gone or was never written to) and reports ev
// to the OnTokenAnswer hook.
func (s *Server) answered(w http.ResponseWriter, ev TokenEvent) {
	f := s.answerHook.Load()
	if f == nil {
		return // no one waits for the bytes: let net/http send them as usual
	}
	if w != nil {
		// An error means the client went away; the answer was still written.
		_ = http.NewResponseController(w).Flush()
	}
	(*f)(ev)
}

// statusRecorder remembers the status a SetTokenResponder handler wrote, and
// whether it took the connection over.
type statusRecorder struct {
	http.ResponseWriter
	status   int
	hijacked bool
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 && code >= 200 { // 1xx answers are informational
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// Flush lets responders that assert http.Flusher keep working.
func (r *statusRecorder) Flush() {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	_ = http.NewResponseController(r.ResponseWriter).Flush()
}

// Hijack lets responders that assert http.Hijacker keep working.
func (r *statusRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, rw, err := http.NewResponseController(r.ResponseWriter).Hijack()
	if err == nil {
		r.hijacked = true
	}
	return conn, rw, err
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
