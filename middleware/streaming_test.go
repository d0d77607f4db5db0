package middleware_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tasknation/tokengate/internal/streamtest"
	"github.com/tasknation/tokengate/middleware"
)

// A streaming client (gRPC-like) writes a message and waits for the API's
// answer to it before it writes the next. Nothing on the way may read the
// request body ahead of the API: these tests hang (until their deadline)
// if the Gate does, and check that a 401 is still replayed when the whole
// body passed.

// streamTimeout bounds each streaming exchange: a body read ahead shows as
// a missing echo, which fails the test at this deadline instead of hanging.
const streamTimeout = streamtest.Timeout

// echoUpstream is a streaming API on a real loopback server: it writes
// back each piece of the request body as it reads it, and flushes. It
// records the Authorization header and the body of each request. A
// request whose Authorization refuse reports is answered 401
// invalid_token after its whole body was read (a 401 before the body
// passed cannot be replayed).
type echoUpstream struct {
	*httptest.Server
	refuse func(authorization string) bool

	mu     sync.Mutex
	auth   []string
	bodies [][]byte
}

// refusal is the body of echoUpstream's 401.
const refusal = `{"error":"invalid_token","from":"upstream"}`

// newEchoUpstream starts an echoUpstream: HTTP/1.1 in cleartext, or
// HTTP/2 over TLS.
func newEchoUpstream(t *testing.T, h2TLS bool, refuse func(string) bool) *echoUpstream {
	t.Helper()
	u := &echoUpstream{refuse: refuse}
	u.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.serve(t, w, r)
	}))
	if h2TLS {
		u.EnableHTTP2 = true
		u.StartTLS()
	} else {
		u.Start()
	}
	t.Cleanup(u.Close)
	return u
}

func (u *echoUpstream) serve(t *testing.T, w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	// HTTP/1: without it the server consumes the unread body before the
	// first write of the answer. HTTP/2 always is full duplex (no-op).
	if err := rc.EnableFullDuplex(); err != nil {
		t.Errorf("upstream: EnableFullDuplex: %v", err)
	}
	authz := r.Header.Get("Authorization")
	if u.refuse != nil && u.refuse(authz) {
		body, _ := io.ReadAll(r.Body)
		u.record(authz, body)
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, refusal)
		return
	}
	var got []byte
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Body.Read(buf)
		if n > 0 {
			got = append(got, buf[:n]...)
			if _, werr := w.Write(buf[:n]); werr != nil {
				break
			}
			if ferr := rc.Flush(); ferr != nil {
				t.Errorf("upstream: Flush: %v", ferr)
				break
			}
		}
		if err != nil {
			break
		}
	}
	u.record(authz, got)
}

func (u *echoUpstream) record(authz string, body []byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.auth = append(u.auth, authz)
	u.bodies = append(u.bodies, body)
}

// seen returns the Authorization header and the body of each request, in
// the order they ended.
func (u *echoUpstream) seen() ([]string, [][]byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.auth...), append([][]byte(nil), u.bodies...)
}

// gatewayProtocol is a way a client reaches the Gate's handler.
type gatewayProtocol struct {
	name  string
	proto string // the request's Proto at the gateway
}

var gatewayProtocols = []gatewayProtocol{
	{"h1_chunked", "HTTP/1.1"},
	{"h2c", "HTTP/2.0"},
	{"h2_TLS", "HTTP/2.0"},
}

// inbound is what the gateway's server saw of the client's request.
type inbound struct {
	mu            sync.Mutex
	proto         string
	contentLength int64
}

func (in *inbound) get() (string, int64) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.proto, in.contentLength
}

// startGateway serves f's Gate.Wrap around a ReverseProxy to upstream on
// a loopback server speaking protocol (one of gatewayProtocols, or
// h1_duplex_behind_Wrap: HTTP/1.1 with full duplex enabled by the handler
// Wrap calls, through the Gate's ResponseWriter), and returns its URL and
// a client for it.
func startGateway(t *testing.T, f *fixture, upstream *echoUpstream, protocol string) (string, *http.Client, *inbound) {
	t.Helper()
	target, _ := url.Parse(upstream.URL)
	proxy := &httputil.ReverseProxy{
		Rewrite:   func(r *httputil.ProxyRequest) { r.SetURL(target) },
		Transport: upstream.Client().Transport,
	}
	behindWrap := protocol == "h1_duplex_behind_Wrap"
	if behindWrap {
		protocol = "h1_chunked"
	}
	wrapped := f.gate.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if behindWrap {
			if err := http.NewResponseController(w).EnableFullDuplex(); err != nil {
				t.Errorf("behind Wrap: EnableFullDuplex: %v", err)
			}
		}
		proxy.ServeHTTP(w, r)
	}))
	in := &inbound{}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		in.mu.Lock()
		in.proto, in.contentLength = r.Proto, r.ContentLength
		in.mu.Unlock()
		if r.ProtoMajor == 1 && !behindWrap {
			// Go's HTTP/1 server otherwise consumes the unread request
			// body before the first write of the answer (to keep the
			// connection usable), which waits for a client that waits
			// for that answer: full duplex lets the proxy stream the
			// echo while the body is still arriving. (Caddy's
			// enable_full_duplex does the same.) HTTP/2 needs nothing.
			if err := http.NewResponseController(w).EnableFullDuplex(); err != nil {
				t.Errorf("gateway: EnableFullDuplex: %v", err)
			}
		}
		wrapped.ServeHTTP(w, r)
	})
	ts := httptest.NewUnstartedServer(handler)
	client := (*http.Client)(nil)
	switch protocol {
	case "h1_chunked":
		ts.Start()
		client = ts.Client()
	case "h2c":
		var p http.Protocols
		p.SetHTTP1(true)
		p.SetUnencryptedHTTP2(true) // HTTP/2 with prior knowledge, no TLS
		ts.Config.Protocols = &p
		ts.Start()
		var cp http.Protocols
		cp.SetUnencryptedHTTP2(true)
		tr := &http.Transport{Protocols: &cp}
		t.Cleanup(tr.CloseIdleConnections)
		client = &http.Client{Transport: tr}
	case "h2_TLS":
		ts.EnableHTTP2 = true
		ts.StartTLS()
		client = ts.Client()
	default:
		t.Fatalf("unknown protocol %q", protocol)
	}
	t.Cleanup(ts.Close)
	return ts.URL, client, in
}

// clientJunkBearer is the client's own Authorization: the upstream must
// see the Gate's instead.
const clientJunkBearer = "Bearer client-junk"

// postStream POSTs chunks through an io.Pipe (no length) as fast as the
// other side reads them, closes the body, and returns the answer and its
// body, all within streamTimeout.
func postStream(t *testing.T, c *http.Client, u string, chunks ...string) (*http.Response, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), streamTimeout)
	defer cancel()
	pr, pw := io.Pipe()
	defer context.AfterFunc(ctx, func() { pw.CloseWithError(ctx.Err()) })()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u+"/api/v1/stream", pr)
	if err != nil {
		t.Fatal(err)
	}
	writeErr := make(chan error, 1)
	go func() {
		for _, chunk := range chunks {
			if _, err := io.WriteString(pw, chunk); err != nil {
				writeErr <- err
				return
			}
		}
		writeErr <- pw.Close()
	}()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	select {
	case err := <-writeErr:
		if err != nil {
			t.Fatalf("writing the body: %v", err)
		}
	case <-ctx.Done():
		t.Fatalf("the body was not all read within %v", streamTimeout)
	}
	return resp, string(body)
}

// checkOneStream checks that u saw one request, with the Gate's bearer
// and the whole body, and that the Gate made one token request.
func checkOneStream(t *testing.T, f *fixture, u *echoUpstream, body string) {
	t.Helper()
	auth, bodies := u.seen()
	if want := "Bearer " + f.token(t); len(auth) != 1 || auth[0] != want {
		t.Errorf("upstream saw Authorization %q, want one request with the Gate's bearer", auth)
	}
	if len(bodies) == 1 && string(bodies[0]) != body {
		t.Errorf("upstream got body %q, want %q", bodies[0], body)
	}
	if n := f.ccRequests(); n != 1 {
		t.Errorf("token requests = %d, want 1", n)
	}
}

// TestStream_EchoThroughWrap: a client that waits for the echo of each
// message before sending the next gets both echoes, in order, through
// Wrap(ReverseProxy) over HTTP/1.1 chunked (full duplex enabled before
// Wrap, or by the handler behind it), h2c and HTTP/2 over TLS; the
// upstream saw the Gate's bearer and the whole body, and one token was
// requested.
func TestStream_EchoThroughWrap(t *testing.T) {
	protocols := slices.Concat(gatewayProtocols, []gatewayProtocol{{"h1_duplex_behind_Wrap", "HTTP/1.1"}})
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			f := newFixture(t, nil)
			up := newEchoUpstream(t, false, nil)
			gw, client, in := startGateway(t, f, up, p.name)
			resp := streamtest.Echo(t, client, gw+"/api/v1/stream", clientJunkBearer, "message one\n", "message two\n")
			if resp.Proto != p.proto {
				t.Errorf("client got %s, want %s", resp.Proto, p.proto)
			}
			if proto, length := in.get(); proto != p.proto || length != -1 {
				t.Errorf("the gateway got a %s request of length %d, want %s with no length (streamed)", proto, length, p.proto)
			}
			checkOneStream(t, f, up, "message one\nmessage two\n")
		})
	}
}

// TestStream_EchoThroughTransport: the same client through an http.Client
// whose Transport is Gate.Transport, straight to the upstream over
// HTTP/1.1 and HTTP/2 over TLS.
func TestStream_EchoThroughTransport(t *testing.T) {
	for _, c := range []struct {
		name  string
		h2TLS bool
		proto string
	}{
		{"h1_chunked", false, "HTTP/1.1"},
		{"h2_TLS", true, "HTTP/2.0"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, nil)
			up := newEchoUpstream(t, c.h2TLS, nil)
			client := &http.Client{Transport: f.gate.Transport(up.Client().Transport)}
			resp := streamtest.Echo(t, client, up.URL+"/api/v1/stream", clientJunkBearer, "message one\n", "message two\n")
			if resp.Proto != c.proto {
				t.Errorf("client got %s, want %s", resp.Proto, c.proto)
			}
			checkOneStream(t, f, up, "message one\nmessage two\n")
		})
	}
}

// TestStream_ReplayWhenWholeBodyPassed: a streamed body (three 1 KiB
// chunks, no length) that passed whole before the API refused the token
// (revoked mid-life) is replayed with a new token: the client gets the
// replay's 200 and echo, the upstream got the whole body twice.
func TestStream_ReplayWhenWholeBodyPassed(t *testing.T) {
	chunks := []string{strings.Repeat("a", 1<<10), strings.Repeat("b", 1<<10), strings.Repeat("c", 1<<10)}
	whole := strings.Join(chunks, "")
	for _, p := range gatewayProtocols {
		t.Run(p.name, func(t *testing.T) {
			ev := &events{}
			f := newFixture(t, func(c *middleware.Config) { c.Observer = &replayEvents{events: ev} })
			up := newEchoUpstream(t, false, func(authz string) bool {
				return !f.srv.Active(strings.TrimPrefix(authz, "Bearer "))
			})
			gw, client, _ := startGateway(t, f, up, p.name)
			old := f.token(t)
			f.clock.Advance(10 * time.Minute) // mid-life: a token seconds old is not replaced
			f.srv.Revoke(old)

			resp, body := postStream(t, client, gw, chunks...)
			if resp.StatusCode != http.StatusOK || body != whole {
				t.Fatalf("client got %d with %d body bytes, want 200 with the echo of %d", resp.StatusCode, len(body), len(whole))
			}
			auth, bodies := up.seen()
			cur := f.token(t)
			if len(auth) != 2 || auth[0] != "Bearer "+old || auth[1] != "Bearer "+cur || cur == old {
				t.Errorf("upstream saw Authorization %q, want the revoked token then a new one", auth)
			}
			for i, b := range bodies {
				if !bytes.Equal(b, []byte(whole)) {
					t.Errorf("upstream request %d carried %d body bytes, want all %d", i+1, len(b), len(whole))
				}
			}
			if n := f.ccRequests(); n != 2 {
				t.Errorf("token requests = %d, want 2", n)
			}
			if got := ev.snapshot(); countOf(got, "replay") != 1 {
				t.Errorf("Replay events = %d, want 1", countOf(got, "replay"))
			}
		})
	}
}

// TestStream_BodyOverMaxReplayBodyGoesOnce: a streamed body larger than
// MaxReplayBody (16 KiB past a 4 KiB limit) goes to the API once, whole,
// and when the API refuses the token the client gets the API's own 401
// (not a 503); the refused token is dropped for the next request.
func TestStream_BodyOverMaxReplayBodyGoesOnce(t *testing.T) {
	chunks := []string{strings.Repeat("a", 4<<10), strings.Repeat("b", 4<<10), strings.Repeat("c", 4<<10), strings.Repeat("d", 4<<10)}
	whole := strings.Join(chunks, "")
	for _, p := range gatewayProtocols {
		t.Run(p.name, func(t *testing.T) {
			ev := &events{}
			f := newFixture(t, func(c *middleware.Config) {
				c.MaxReplayBody = 4 << 10
				c.Observer = &replayEvents{events: ev}
			})
			up := newEchoUpstream(t, false, func(string) bool { return true })
			gw, client, _ := startGateway(t, f, up, p.name)
			first := f.token(t)
			f.clock.Advance(10 * time.Minute) // mid-life: a token seconds old is not rejected

			resp, body := postStream(t, client, gw, chunks...)
			if resp.StatusCode != http.StatusUnauthorized || body != refusal {
				t.Fatalf("client got %d %q, want the API's 401 %q", resp.StatusCode, body, refusal)
			}
			if www := resp.Header.Get("WWW-Authenticate"); !strings.Contains(www, "invalid_token") {
				t.Errorf("WWW-Authenticate = %q, want the API's challenge", www)
			}
			auth, bodies := up.seen()
			if len(auth) != 1 || auth[0] != "Bearer "+first {
				t.Errorf("upstream saw Authorization %q, want one request with the Gate's token", auth)
			}
			if len(bodies) == 1 && !bytes.Equal(bodies[0], []byte(whole)) {
				t.Errorf("upstream got %d body bytes, want all %d", len(bodies[0]), len(whole))
			}
			if countOf(ev.snapshot(), "replay") != 0 {
				t.Error("a body past MaxReplayBody was replayed")
			}
			if f.token(t) == first {
				t.Error("the refused token is still served")
			}
		})
	}
}

func countOf(events []string, e string) int {
	n := 0
	for _, s := range events {
		if s == e {
			n++
		}
	}
	return n
}
