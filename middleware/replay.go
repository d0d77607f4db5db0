package middleware

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
)

// An access token can die before its expiry (revoked, the user's password
// changed, a server restart lost its sessions): the API then answers 401
// with `WWW-Authenticate: Bearer error="invalid_token"`. Serve holds such
// an answer back, invalidates that token version (not a newer one another
// request fetched meanwhile), gets a new token through the same
// singleflight, and replays the request once, when its body can be
// replayed: no body, a GetBody, or a body of at most MaxReplayBody bytes,
// which is then buffered in memory. `insufficient_scope` is passed on: a
// new token would not have more scope.

// DefaultMaxReplayBody is the default of Config.MaxReplayBody.
const DefaultMaxReplayBody = 64 << 10

// ReplayObserver is the optional part of an Observer that counts replays
// after an upstream 401.
type ReplayObserver interface {
	// Replay reports a request replayed with a new token after the
	// upstream answered 401 invalid_token.
	Replay()
}

// prepareReplay arranges for r to be replayable after a held 401 and
// reports whether it may be: a request without a body, or with a GetBody,
// always is. Any other body streams to the API as it arrives (nothing is
// read ahead: a client that sends one message and waits for the answer
// before the next must not hang), through a keptBody that keeps what
// passed, up to MaxReplayBody; kept is that body (nil when none is
// needed), and whether the replay can be made is known only when the 401
// comes: when the whole body passed and fit.
func (g *Gate) prepareReplay(r *http.Request) (kept *keptBody, replayable bool) {
	if r.Body == nil || r.Body == http.NoBody || r.GetBody != nil {
		return nil, true
	}
	max := g.cfg.MaxReplayBody
	if max <= 0 || r.ContentLength > max {
		return nil, false
	}
	kept = &keptBody{src: r.Body, max: max, length: r.ContentLength}
	r.Body = kept
	return kept, true
}

// keptBody is a request body that passes through as it is read and keeps
// what passed, up to max bytes. It may be read by the API's transport in
// a goroutine of its own, so its state is behind a mutex (never held
// across a read of the source).
type keptBody struct {
	src    io.ReadCloser
	max    int64
	length int64 // the request's ContentLength: -1 when unknown

	mu       sync.Mutex
	buf      []byte
	overflow bool // more than max passed: the replay cannot be made
	eof      bool // the source is exhausted
	replaced bool // a replay took over: reads of this one end
}

var errBodyReplaced = errors.New("middleware: the request body was handed to a replay")

func (k *keptBody) Read(p []byte) (int, error) {
	k.mu.Lock()
	done := k.replaced
	k.mu.Unlock()
	if done {
		return 0, errBodyReplaced
	}
	n, err := k.src.Read(p)
	k.mu.Lock()
	defer k.mu.Unlock()
	if n > 0 && !k.overflow {
		if int64(len(k.buf)+n) > k.max {
			k.overflow, k.buf = true, nil
		} else {
			k.buf = append(k.buf, p[:n]...)
		}
	}
	if err == io.EOF {
		k.eof = true
	}
	return n, err
}

// Close leaves the source open: the server closes the request's body when
// the handler returns, and a replay may still need it.
func (k *keptBody) Close() error { return nil }

// complete reports whether all of the body passed, and fit: then it can be
// sent again as it was.
func (k *keptBody) complete() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return !k.overflow && (k.eof || (k.length >= 0 && int64(len(k.buf)) == k.length))
}

// again returns the body for the replay, when the whole body passed, and
// ends reads of this one.
func (k *keptBody) again() (io.ReadCloser, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.overflow || !(k.eof || (k.length >= 0 && int64(len(k.buf)) == k.length)) {
		return nil, false
	}
	k.replaced = true
	return io.NopCloser(bytes.NewReader(k.buf)), true
}

type readCloser struct {
	io.Reader
	io.Closer
}

// holdWriter passes a response through, except a first 401 whose
// challenge says the token was refused, of a replayable request: that one
// it holds back (headers and up to maxHeldBody of body), so that the
// request can be replayed, or the answer released to the client as it was
// when no replay can be made.
type holdWriter struct {
	w http.ResponseWriter
	// saved is w's header before next ran: the keys and their value
	// slices (not copies: a handler that adds a value appends past the
	// saved length, which restoring cuts off again). Pooled with the
	// writer, so that saving costs no allocation; not cleared on put (the
	// next reset overwrites it, and the pool lets go of idle writers
	// within two collections).
	saved    []savedField
	canHold  bool
	kept     *keptBody // the request's body, when it must have passed whole to be replayed
	wrote    bool
	held     bool   // a refusing 401 is held back
	rejected bool   // a refusing 401 went out (not replayable, or too big to hold)
	body     []byte // the held answer's body
	// bearers is what is left of a run of string slots, each handed out
	// once as the one-value slice of a request's Authorization header
	// (see bearer).
	bearers []string
	// pad makes a writer 128 bytes, a size class of its own whose
	// objects start on a cache-line boundary: at 88 bytes, two pooled
	// writers serving on two cores shared a line, and every request
	// pulled it from the other core (Wrap_Parallel 31.1 -> 24.4 ns).
	_ [16]byte
}

// bearerRun is how many Authorization values one allocation holds.
const bearerRun = 64

// bearer returns v as a one-value slice for a request's Authorization
// header, cut from a run of slots allocated bearerRun at a time, as
// net/textproto's ReadMIMEHeader cuts header values: one allocation per
// bearerRun requests instead of one per request. A slot is never handed
// out twice, so a request that outlives its handler, or a handler that
// writes into its header's values, touches no other request's; its
// capacity is 1, so an append copies.
func (h *holdWriter) bearer(v string) []string {
	if len(h.bearers) == 0 {
		h.bearers = make([]string, bearerRun)
	}
	s := h.bearers[:1:1]
	h.bearers = h.bearers[1:]
	s[0] = v
	return s
}

// savedField is one header field of a writer before next ran.
type savedField struct {
	key  string
	vals []string
}

// maxHeldBody is the most of a held 401's body kept for release; a longer
// one is sent on at once, and the request is not replayed.
const maxHeldBody = 16 << 10

var holdPool = sync.Pool{New: func() any { return new(holdWriter) }}

func (h *holdWriter) reset(w http.ResponseWriter, canHold bool, kept *keptBody) {
	h.w, h.canHold, h.kept = w, canHold, kept
	h.wrote, h.held, h.rejected = false, false, false
	h.body, h.saved = h.body[:0], h.saved[:0]
	if canHold {
		h.save(w.Header())
	}
}

// serverHeaders are what a server's writer commonly holds before a handler
// runs (Caddy's: Server; Alt-Svc with HTTP/3).
var serverHeaders = [...]string{"Server", "Alt-Svc"}

// save notes what to go back to if the answer is held. When the header
// holds only serverHeaders, looking them up costs less than walking the
// map (whose iterator draws a random start on every range).
func (h *holdWriter) save(hdr http.Header) {
	n := len(hdr)
	if n == 0 {
		return
	}
	if n <= len(serverHeaders) {
		for _, k := range serverHeaders {
			if v, ok := hdr[k]; ok {
				h.saved = append(h.saved, savedField{k, v})
				if len(h.saved) == n {
					return
				}
			}
		}
		h.saved = h.saved[:0]
	}
	for k, v := range hdr {
		h.saved = append(h.saved, savedField{k, v})
	}
}

// put returns h to the pool, without a large held body.
func (h *holdWriter) put() {
	if cap(h.body) > maxHeldBody {
		h.body = nil
	}
	h.w, h.kept = nil, nil
	holdPool.Put(h)
}

func (h *holdWriter) Header() http.Header { return h.w.Header() }

func (h *holdWriter) WriteHeader(code int) {
	if h.wrote {
		return
	}
	if code < 200 { // informational: pass on, the real answer follows
		h.w.WriteHeader(code)
		return
	}
	h.wrote = true
	if code == http.StatusUnauthorized && challengeRefusesToken(h.w.Header()) {
		if h.canHold && (h.kept == nil || h.kept.complete()) {
			h.held = true
			return
		}
		h.rejected = true
	}
	h.w.WriteHeader(code)
}

func (h *holdWriter) Write(b []byte) (int, error) {
	if !h.wrote {
		h.WriteHeader(http.StatusOK)
	}
	if !h.held {
		return h.w.Write(b)
	}
	if len(h.body)+len(b) <= maxHeldBody {
		h.body = append(h.body, b...)
		return len(b), nil
	}
	// Too big to hold: the answer goes out as it is, not replayed.
	if err := h.release(); err != nil {
		return 0, err
	}
	h.rejected = true
	return h.w.Write(b)
}

// release sends the held answer on as the API gave it.
func (h *holdWriter) release() error {
	h.held = false
	h.w.WriteHeader(http.StatusUnauthorized)
	if len(h.body) > 0 {
		if _, err := h.w.Write(h.body); err != nil {
			return err
		}
	}
	return nil
}

// Flush lets streaming answers (and a ReverseProxy's FlushInterval) work.
func (h *holdWriter) Flush() {
	if h.held {
		return
	}
	if !h.wrote {
		h.WriteHeader(http.StatusOK)
	}
	_ = http.NewResponseController(h.w).Flush()
}

// Unwrap lets http.ResponseController reach the real writer.
func (h *holdWriter) Unwrap() http.ResponseWriter { return h.w }

// restoreHeader takes the header map back to what it was before the held
// answer wrote to it.
func (h *holdWriter) restoreHeader() {
	hdr := h.w.Header()
	for k := range hdr {
		delete(hdr, k)
	}
	for _, f := range h.saved {
		hdr[f.key] = f.vals
	}
}

// challengeRefusesToken reports whether a 401's WWW-Authenticate says the
// bearer token itself was refused: a Bearer challenge with
// error="invalid_token", or a Bearer challenge with no error (RFC 6750
// §3.1: what a resource server answers a request without a token, such as
// one whose bearer a proxy dropped). A bare 401, another scheme's
// challenge (an API route behind Basic auth) or another error
// (insufficient_scope) is the API's business: a new token would not
// change it, and fetching one per such request would let any client make
// the Gate call the token endpoint at will.
func challengeRefusesToken(h http.Header) bool {
	for _, v := range h["Www-Authenticate"] {
		for _, c := range splitChallenges(v) {
			scheme, params, _ := strings.Cut(strings.TrimSpace(c), " ")
			if !strings.EqualFold(scheme, "Bearer") {
				continue
			}
			code, found := authParam(params, "error")
			if !found || code == "invalid_token" {
				return true
			}
		}
	}
	return false
}

// splitChallenges splits a WWW-Authenticate value into its challenges: a
// new challenge starts at a token followed by a space, after a comma
// outside quotes (RFC 9110 §11.6.1).
func splitChallenges(v string) []string {
	var out []string
	start, inQuote := 0, false
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '\\' && inQuote:
			i++
		case c == '"':
			inQuote = !inQuote
		case c == ',' && !inQuote:
			rest := strings.TrimLeft(v[i+1:], " \t")
			tok, _, _ := strings.Cut(rest, " ")
			if tok != "" && !strings.Contains(tok, "=") {
				out = append(out, v[start:i])
				start = i + 1
			}
		}
	}
	return append(out, v[start:])
}

// authParam returns the value of the auth-param name in params
// (name=token or name="quoted"), case-insensitive on the name.
func authParam(params, name string) (string, bool) {
	for params != "" {
		params = strings.TrimLeft(params, " \t,")
		k, rest, ok := strings.Cut(params, "=")
		if !ok {
			return "", false
		}
		k = strings.TrimSpace(k)
		rest = strings.TrimLeft(rest, " \t")
		var val string
		if strings.HasPrefix(rest, `"`) {
			var b strings.Builder
			i := 1
			for ; i < len(rest) && rest[i] != '"'; i++ {
				if rest[i] == '\\' && i+1 < len(rest) {
					i++
				}
				b.WriteByte(rest[i])
			}
			val, params = b.String(), rest[min(i+1, len(rest)):]
		} else {
			val, params, _ = strings.Cut(rest, ",")
			val = strings.TrimSpace(val)
		}
		if strings.EqualFold(k, name) {
			return val, true
		}
	}
	return "", false
}
