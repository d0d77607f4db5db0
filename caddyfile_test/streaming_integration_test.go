package caddyfile_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tasknation/tokengate/internal/streamtest"
)

// streamTimeout bounds each streaming exchange through Caddy: a body read
// ahead, or an answer buffered, shows as a missing echo or event, which
// fails the test at this deadline instead of hanging it.
const streamTimeout = streamtest.Timeout

// streamUpstream is a streaming API on a real loopback HTTP/1.1 server:
// /stream/echo writes back each piece of the request body as it reads it
// (and flushes); /stream/events sends a server-sent event, then a second
// one only once the test calls proceed. It records the Authorization of
// each request.
type streamUpstream struct {
	*httptest.Server
	proceedCh chan struct{} // unbuffered: one send lets one stream go on

	mu   sync.Mutex
	auth []string
	body []byte // what /stream/echo read
}

func newStreamUpstream(t *testing.T) *streamUpstream {
	t.Helper()
	u := &streamUpstream{proceedCh: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /stream/echo", func(w http.ResponseWriter, r *http.Request) {
		u.record(r)
		rc := http.NewResponseController(w)
		// Without it Go's HTTP/1 server consumes the unread body before
		// the first write of the answer.
		if err := rc.EnableFullDuplex(); err != nil {
			t.Errorf("upstream: EnableFullDuplex: %v", err)
		}
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				u.mu.Lock()
				u.body = append(u.body, buf[:n]...)
				u.mu.Unlock()
				if _, werr := w.Write(buf[:n]); werr != nil {
					return
				}
				if ferr := rc.Flush(); ferr != nil {
					t.Errorf("upstream: Flush: %v", ferr)
					return
				}
			}
			if err != nil {
				return
			}
		}
	})
	mux.HandleFunc("GET /stream/events", func(w http.ResponseWriter, r *http.Request) {
		u.record(r)
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		io.WriteString(w, "event: first\ndata: 1\n\n")
		if err := http.NewResponseController(w).Flush(); err != nil {
			t.Errorf("upstream: Flush: %v", err)
			return
		}
		// The second event is sent only once the client read the first
		// through Caddy: a buffered first event never arrives.
		select {
		case <-u.proceedCh:
		case <-r.Context().Done():
			return
		case <-time.After(streamTimeout):
			return
		}
		io.WriteString(w, "event: second\ndata: 2\n\n")
	})
	u.Server = httptest.NewServer(mux)
	t.Cleanup(u.Close)
	return u
}

func (u *streamUpstream) record(r *http.Request) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.auth = append(u.auth, r.Header.Get("Authorization"))
}

// proceed lets the waiting /stream/events request send its second
// event.
func (u *streamUpstream) proceed(t *testing.T) {
	t.Helper()
	select {
	case u.proceedCh <- struct{}{}:
	case <-time.After(streamTimeout):
		t.Fatal("no /stream/events request waits to send its second event")
	}
}

// take returns and forgets the Authorization of each request and the
// body /stream/echo read.
func (u *streamUpstream) take() ([]string, string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	auth, body := u.auth, string(u.body)
	u.auth, u.body = nil, nil
	return auth, body
}

// streamingCaddyfile is the gateway's Caddyfile with /stream/* proxied to
// upstream (a path matcher sorts it before the fake API's reverse_proxy;
// oauth2_token covers both), on a server that speaks h1 and h2c and lets
// handlers read an HTTP/1.1 request while writing its answer:
// enable_full_duplex, without which Go's HTTP/1 server consumes the
// unread body before the first write of the answer, and a client waiting
// for that answer before it sends more waits forever.
//
// No flush_interval: reverse_proxy flushes at once an answer without a
// Content-Length (the echo, chunked) or of type text/event-stream.
func streamingCaddyfile(t *testing.T, g *gateway, upstream string) string {
	t.Helper()
	cfg := g.caddyfile(siteOptions{site: "\treverse_proxy /stream/* " + upstream})
	if !strings.HasPrefix(cfg, "{\n") {
		t.Fatalf("the Caddyfile does not start with its global options:\n%s", cfg)
	}
	return "{\n\tservers {\n\t\tprotocols h1 h2c\n\t\tenable_full_duplex\n\t}\n" + cfg[len("{\n"):]
}

// streamClients are the ways a client reaches Caddy here.
func streamClients(t *testing.T) []struct {
	name, proto string
	client      *http.Client
} {
	h1 := &http.Transport{}
	var p http.Protocols
	p.SetUnencryptedHTTP2(true) // HTTP/2 with prior knowledge, no TLS
	h2c := &http.Transport{Protocols: &p}
	t.Cleanup(h1.CloseIdleConnections)
	t.Cleanup(h2c.CloseIdleConnections)
	return []struct {
		name, proto string
		client      *http.Client
	}{
		{"h1_chunked", "HTTP/1.1", &http.Client{Transport: h1}},
		{"h2c", "HTTP/2.0", &http.Client{Transport: h2c}},
	}
}

// checkGatewayBearer checks that each Authorization the upstream saw is
// a bearer the fake issued and still holds active: the gateway's, not the
// client's junk.
func checkGatewayBearer(t *testing.T, g *gateway, auth []string, requests int) {
	t.Helper()
	if len(auth) != requests {
		t.Fatalf("upstream saw %d requests, want %d", len(auth), requests)
	}
	for _, a := range auth {
		tok, ok := strings.CutPrefix(a, "Bearer ")
		if !ok || !strings.HasPrefix(tok, accessTokenMark) || !g.fake.Active(tok) {
			t.Errorf("upstream saw Authorization %q, want the gateway's bearer", a)
		}
	}
}

// TestStream_EchoThroughCaddy: a client that sends a message and waits
// for its echo before the next gets both echoes, in order, through
// oauth2_token and reverse_proxy, over HTTP/1.1 chunked and over h2c; the
// upstream saw the gateway's bearer and the whole body, and one token was
// requested.
func TestStream_EchoThroughCaddy(t *testing.T) {
	g := newGateway(t)
	up := newStreamUpstream(t)
	g.loadCaddyfile(streamingCaddyfile(t, g, up.URL))
	base := fmt.Sprintf("http://127.0.0.1:%d", g.httpPort)
	for _, c := range streamClients(t) {
		t.Run(c.name, func(t *testing.T) {
			up.take() // nothing left over from a subtest before
			chunks := []string{"message one (" + c.name + ")\n", "message two (" + c.name + ")\n"}
			resp := streamtest.Echo(t, c.client, base+"/stream/echo", clientJunk, chunks...)
			if resp.Proto != c.proto {
				t.Errorf("client got %s, want %s", resp.Proto, c.proto)
			}
			auth, body := up.take()
			checkGatewayBearer(t, g, auth, 1)
			if want := strings.Join(chunks, ""); body != want {
				t.Errorf("upstream read %q, want %q", body, want)
			}
			if n := g.tokenRequests(); n != 1 {
				t.Errorf("token requests = %d, want 1", n)
			}
		})
	}
}

// TestSSE_ThroughCaddy: server-sent events pass through oauth2_token and
// reverse_proxy as they are sent: the client reads the first event while
// the upstream holds the second back (it sends it only once the client
// has the first), over HTTP/1.1 and h2c.
func TestSSE_ThroughCaddy(t *testing.T) {
	g := newGateway(t)
	up := newStreamUpstream(t)
	g.loadCaddyfile(streamingCaddyfile(t, g, up.URL))
	base := fmt.Sprintf("http://127.0.0.1:%d", g.httpPort)
	for _, c := range streamClients(t) {
		t.Run(c.name, func(t *testing.T) {
			up.take() // nothing left over from a subtest before
			ctx, cancel := context.WithTimeout(context.Background(), streamTimeout)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/stream/events", nil)
			req.Header.Set("Authorization", clientJunk)
			req.Header.Set("Accept", "text/event-stream")
			resp, err := c.client.Do(req)
			if err != nil {
				t.Fatalf("GET /stream/events: %v (no headers: the answer was buffered?)", err)
			}
			defer resp.Body.Close()
			if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "text/event-stream" || resp.Proto != c.proto {
				t.Fatalf("GET /stream/events: %d %s %q, want 200 %s text/event-stream", resp.StatusCode, resp.Proto, ct, c.proto)
			}
			events := bufio.NewReader(resp.Body)
			if ev, err := readEvent(events); err != nil || ev != "event: first\ndata: 1\n" {
				t.Fatalf("first event: %q, %v; want it before the second is sent (buffered?)", ev, err)
			}
			up.proceed(t)
			if ev, err := readEvent(events); err != nil || ev != "event: second\ndata: 2\n" {
				t.Fatalf("second event: %q, %v", ev, err)
			}
			if rest, err := io.ReadAll(events); err != nil || len(rest) > 0 {
				t.Errorf("after the second event: %q, %v; want the end of the stream", rest, err)
			}
			auth, _ := up.take()
			checkGatewayBearer(t, g, auth, 1)
			if n := g.tokenRequests(); n != 1 {
				t.Errorf("token requests = %d, want 1", n)
			}
		})
	}
}

// readEvent reads one server-sent event: its lines up to the blank line
// that ends it.
func readEvent(r *bufio.Reader) (string, error) {
	var ev strings.Builder
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return ev.String() + line, err
		}
		if line == "\n" {
			return ev.String(), nil
		}
		ev.WriteString(line)
	}
}
