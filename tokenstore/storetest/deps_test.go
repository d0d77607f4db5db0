package storetest

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps: storetest is for stores of one's own, so it builds on
// tokenstore and the standard library only, never on the middleware (or
// the module's internal test kits, which build on it).
func TestDeps(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on PATH")
	}
	out, err := exec.Command(goBin, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	const mod = "github.com/tasknation/tokengate/"
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, mod) && p != mod+"tokenstore" && p != mod+"tokenstore/storetest" {
			t.Errorf("storetest depends on %s", p)
		}
	}
}
