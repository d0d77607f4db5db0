package caddyfile_test

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// The one way these tests write a Caddyfile (testCaddyfile), and where the
// Caddy they run logs: to the running test's t.Log, so that a failure shows
// Caddy's lines under the test that failed, not on the process's stderr.

// caddyGlobal is the global options block of every test site: the admin
// API and the HTTP ports on loopback, no certificate trust installed, no
// automatic HTTPS, no persisted config, Caddy storage in a directory of
// the test, and Caddy's default log to the running test's t.Log (or to a
// file).
type caddyGlobal struct {
	admin               string // host:port
	httpPort, httpsPort int
	storage             string // the file_system storage's directory
	logFile             string // Caddy's default log in this file; "": t.Log
	logLevel            string // its level; "": INFO
	extra               string // more lines in the block, each tab-indented and ending in a newline
}

// testCaddyfile is the Caddyfile of a test: global's options, then the
// site http://127.0.0.1:<port>, bound to loopback, with body's directives
// (each line tab-indented and ending in a newline).
func testCaddyfile(global caddyGlobal, port int, body string) string {
	output := "test_log"
	if global.logFile != "" {
		output = "file " + global.logFile
	}
	log := "\tlog {\n\t\toutput " + output + "\n"
	if global.logFile == "" {
		log += "\t\tformat console {\n\t\t\tlevel_format upper\n\t\t}\n"
	}
	if global.logLevel != "" {
		log += "\t\tlevel " + global.logLevel + "\n"
	}
	log += "\t}\n"
	return fmt.Sprintf(`{
	admin %s
	http_port %d
	https_port %d
	skip_install_trust
	auto_https off
	persist_config off
	storage file_system %s
%s%s}

http://127.0.0.1:%d {
	bind 127.0.0.1
%s}
`, global.admin, global.httpPort, global.httpsPort, global.storage, log, global.extra, port, body)
}

// testLog is the log writer test_log (caddy.logging.writers.test_log):
// every entry goes to the t.Log of the test that started the running
// Caddy (see logCaddyTo); outside one (a child process's Caddy, a log
// line after its test has stopped Caddy), to stderr.
type testLog struct{}

func init() { caddy.RegisterModule(testLog{}) }

func (testLog) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "caddy.logging.writers.test_log", New: func() caddy.Module { return new(testLog) }}
}

func (testLog) String() string                      { return "the running test's t.Log" }
func (testLog) WriterKey() string                   { return "tokengate_test_log" }
func (testLog) OpenWriter() (io.WriteCloser, error) { return testLogWriter{}, nil }
func (*testLog) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the writer's name
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}

// logSink is the test Caddy logs to: set while the test runs, nil after.
var logSink struct {
	mu sync.Mutex
	t  testing.TB
}

// logCaddyTo sends Caddy's log to t.Log until t's cleanups run; call it
// before the cleanup that stops Caddy is registered, so that the lines
// logged while Caddy stops go to t.Log too.
func logCaddyTo(t testing.TB) {
	logSink.mu.Lock()
	prev := logSink.t
	logSink.t = t
	logSink.mu.Unlock()
	t.Cleanup(func() {
		logSink.mu.Lock()
		logSink.t = prev
		logSink.mu.Unlock()
	})
}

type testLogWriter struct{}

// Write logs one entry (zap writes each whole): under the lock, so that
// the test cannot end between the check and t.Log.
func (testLogWriter) Write(p []byte) (int, error) {
	logSink.mu.Lock()
	defer logSink.mu.Unlock()
	if logSink.t == nil {
		return os.Stderr.Write(p)
	}
	logSink.t.Log("caddy: " + strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func (testLogWriter) Close() error { return nil }

var (
	_ caddy.WriterOpener    = (*testLog)(nil)
	_ caddyfile.Unmarshaler = (*testLog)(nil)
)
