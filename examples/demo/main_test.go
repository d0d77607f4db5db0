package main

import (
	"bytes"
	"context"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The demo runs end to end, Caddy and the fake server on free loopback
// ports: what `DEMO_ONESHOT=1 make demo` does. Afterwards Caddy no longer
// listens.
func TestRun_Oneshot(t *testing.T) {
	env := map[string]string{"DEMO_ONESHOT": "1", "DEMO_PORT": "0", "DEMO_ADMIN_PORT": "0"}
	var out bytes.Buffer
	if err := run(context.Background(), func(k string) string { return env[k] }, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	for _, want := range []string{"Fake TaskNation server", "curl -s http://127.0.0.1:", "/metrics", "Self-check passed"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "tn_at_") {
		t.Error("output shows a token")
	}

	m := regexp.MustCompile(`listening on http://(127\.0\.0\.1:\d+)\b.*admin API on http://(127\.0\.0\.1:\d+)`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("output names no gateway and admin address:\n%s", out.String())
	}
	for _, addr := range m[1:] {
		// The admin endpoint shuts down in the background: allow it a moment.
		deadline := time.Now().Add(5 * time.Second)
		for {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err != nil {
				break
			}
			c.Close()
			if time.Now().After(deadline) {
				t.Errorf("%s still accepts connections after run returned", addr)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func TestPickPort(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	takenPort := taken.Addr().(*net.TCPAddr).Port

	tests := []struct {
		name, setting string
		preferred     int
		check         func(string) bool
		wantErr       bool
	}{
		{"explicit", "9123", 8080, func(p string) bool { return p == "9123" }, false},
		{"zero picks a free port", "0", 8080, func(p string) bool { return p != "0" && p != "8080" }, false},
		{"preferred taken falls back", "", takenPort, func(p string) bool { return p != "" && p != strconv.Itoa(takenPort) }, false},
		{"not a number", "http", 8080, nil, true},
		{"out of range", "70000", 8080, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := pickPort(tt.setting, tt.preferred)
			if (err != nil) != tt.wantErr {
				t.Fatalf("pickPort(%q) error = %v, want error %v", tt.setting, err, tt.wantErr)
			}
			if err == nil && !tt.check(got) {
				t.Errorf("pickPort(%q, %d) = %q", tt.setting, tt.preferred, got)
			}
		})
	}
}
