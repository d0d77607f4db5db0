package caddyfile_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// chromiumPath finds Debian's chromium. Without it the browser tests skip
// on a developer's machine and fail in CI, which must run them.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "/usr/bin/chromium"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	const msg = "chromium is not installed: run `make browser-deps` (Debian's chromium package, as root)"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// lockedBuffer collects what the browser and chromedp print, for the log of
// a failed test (they write from their own goroutines).
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) Printf(format string, args ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.WriteString(strings.TrimSuffix(fmt.Sprintf(format, args...), "\n") + "\n")
}

// String is what was written, less the lines that say nothing about the
// test: a headless browser without a D-Bus complains about it on every
// start.
func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out strings.Builder
	for line := range strings.Lines(b.buf.String()) {
		if !strings.Contains(line, ":ERROR:dbus/") {
			out.WriteString(line)
		}
	}
	return out.String()
}

// newBrowser starts a headless Chromium with a profile of its own and
// returns the context of its first tab. The browser is closed, and waited
// for, when the test ends or ctx is done; its output goes to the test log
// if the test failed.
func newBrowser(t *testing.T, ctx context.Context) context.Context {
	t.Helper()
	path := chromiumPath(t)
	profile := t.TempDir() // removed after the browser has exited (cleanups run last in, first out)
	out := &lockedBuffer{}
	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]),
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox, // the tests run as root
		chromedp.DisableGPU,
		chromedp.UserDataDir(profile),
		// Nothing but the page under test goes on the network.
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-quic", true),
		chromedp.CombinedOutput(out),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	tab, cancelTab := chromedp.NewContext(allocCtx,
		chromedp.WithLogf(out.Printf), chromedp.WithErrorf(out.Printf), chromedp.WithBrowserOption(chromedp.WithConsolef(out.Printf)))
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc() // waits for the browser process to exit
		if t.Failed() {
			t.Logf("browser output:\n%s", out.String())
		}
	})
	return tab
}

// setBasicAuth makes the tab send HTTP Basic credentials with every
// request, as a browser does once its user has logged in to the site.
func setBasicAuth(ctx context.Context, user, password string) error {
	_, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
		Headers: network.Headers{"Authorization": "Basic " + basicCredentials(user, password)},
	})
	return err
}

// basicCredentials is the credential of an HTTP Basic Authorization header.
func basicCredentials(user, password string) string {
	return base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
}

// browserCookie returns the cookie called name that the tab would send to
// url, or nil.
func browserCookie(ctx context.Context, url, name string) (*network.Cookie, error) {
	res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{url}})
	if err != nil {
		return nil, err
	}
	for _, c := range res.Cookies {
		if c.Name == name {
			return c, nil
		}
	}
	return nil, nil
}

// page is what the tab shows after a navigation.
type page struct {
	status   int64
	location string
	text     string // the body's visible text
}

// load runs the actions, which must cause one navigation (a Navigate, a
// click on a form button), waits for the page and reads it.
func load(ctx context.Context, steps ...chromedp.Action[chromedp.Void]) (page, error) {
	resp, err := chromedp.RunResponse(ctx, steps...)
	if err != nil {
		return page{}, err
	}
	p := page{}
	if resp != nil {
		p.status = resp.Status
	}
	if p.location, err = chromedp.Run(ctx, chromedp.Location()); err != nil {
		return p, err
	}
	p.text, err = chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	return p, err
}
