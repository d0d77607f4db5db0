// Package streamtest holds what the streaming tests of the middleware and
// of the Caddy module share: a client that sends one message, waits for
// the API's echo of it, then sends the next, as a gRPC-style client does.
// A gateway that reads a request body ahead of the API makes it hang; the
// client fails the test at Timeout instead.
package streamtest

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"
)

// Timeout bounds one exchange.
const Timeout = 10 * time.Second

// Echo POSTs chunks to u through an io.Pipe (no length: chunked on
// HTTP/1.1) with the given Authorization (a client's own, which a gateway
// must replace), one at a time: each is written
// only after the echo of the one before was read, as a client waiting
// for an answer per message does. It fails the test, within
// Timeout, when an echo does not come, and returns the response
// (its body read to the end and closed).
func Echo(t testing.TB, c *http.Client, u, authorization string, chunks ...string) *http.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	pr, pw := io.Pipe()
	// A write that nobody reads ends with the deadline.
	defer context.AfterFunc(ctx, func() { pw.CloseWithError(ctx.Err()) })()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", authorization)
	type answer struct {
		resp *http.Response
		err  error
	}
	answers := make(chan answer, 1)
	go func() {
		resp, err := c.Do(req) // returns with the headers, which follow the first echo
		answers <- answer{resp, err}
	}()
	var resp *http.Response
	for i, chunk := range chunks {
		if _, err := io.WriteString(pw, chunk); err != nil {
			t.Fatalf("writing chunk %d: %v", i+1, err)
		}
		if resp == nil {
			select {
			case a := <-answers:
				if a.err != nil {
					t.Fatalf("no answer after chunk %d: %v", i+1, a.err)
				}
				resp = a.resp
				defer resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b, _ := io.ReadAll(resp.Body)
					t.Fatalf("status %d %s, want 200", resp.StatusCode, b)
				}
			case <-ctx.Done():
				t.Fatalf("no answer within %v after chunk %d: was the body read ahead (by the gateway, or by a server without full duplex)?", Timeout, i+1)
			}
		}
		echo := make([]byte, len(chunk))
		if _, err := io.ReadFull(resp.Body, echo); err != nil {
			t.Fatalf("reading the echo of chunk %d (the client sends no more before it): %v", i+1, err)
		}
		if string(echo) != chunk {
			t.Fatalf("echo %d = %q, want %q", i+1, echo, chunk)
		}
	}
	if err := pw.Close(); err != nil {
		t.Fatal(err)
	}
	if rest, err := io.ReadAll(resp.Body); err != nil || len(rest) > 0 {
		t.Fatalf("after the last echo: %q, %v; want the end of the answer", rest, err)
	}
	return resp
}
