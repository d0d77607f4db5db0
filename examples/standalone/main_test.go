package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// The demo runs end to end against the fake server: what `DEMO_ONESHOT=1
// make demo` does.
func TestRun_Oneshot(t *testing.T) {
	env := map[string]string{"DEMO_ONESHOT": "1", "LISTEN": "127.0.0.1:0"}
	var out bytes.Buffer
	if err := run(context.Background(), func(k string) string { return env[k] }, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	for _, want := range []string{"fake TaskNation server", "curl -s http://127.0.0.1:", "Self-check passed"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "tn_at_") {
		t.Error("output shows a token")
	}
}
