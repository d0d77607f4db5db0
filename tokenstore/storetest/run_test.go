package storetest_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tasknation/tokengate/tokenstore"
	"github.com/tasknation/tokengate/tokenstore/storetest"
)

// memoryOpen opens a MemoryStore, wrapped by wrap, for Run.
func memoryOpen(wrap func(tokenstore.Store) tokenstore.Store) storetest.Open {
	return func(t *testing.T, now func() time.Time) (func() tokenstore.Store, func() int) {
		s, err := tokenstore.NewMemoryStore(tokenstore.MemoryConfig{Now: now})
		if err != nil {
			t.Fatal(err)
		}
		w := wrap(s)
		return func() tokenstore.Store { return w }, nil
	}
}

// The contract passes on a correct store: the memory store, as is.
func TestRun_MemoryStore(t *testing.T) {
	storetest.Run(t, memoryOpen(func(s tokenstore.Store) tokenstore.Store { return s }), storetest.Options{ErrPrefix: "tokenstore:"})
}

// broken is a store that drops its writes (set) or its deletes (delete).
type broken struct {
	tokenstore.Store
	drop string
}

func (b broken) Set(ctx context.Context, key string, tok *tokenstore.Token) error {
	if b.drop == "set" {
		return nil
	}
	return b.Store.Set(ctx, key, tok)
}

func (b broken) Delete(ctx context.Context, key string) error {
	if b.drop == "delete" {
		return nil
	}
	return b.Store.Delete(ctx, key)
}

// TestRun_FailsOnBrokenStore: the contract can fail. A store that drops
// its writes, and one that drops its deletes, each run the contract in a
// child process (a failing subtest would fail this test too), which must
// exit with a failure that names the contract.
func TestRun_FailsOnBrokenStore(t *testing.T) {
	if drop := os.Getenv("STORETEST_BROKEN"); drop != "" {
		t.Skip("the child's own run: see TestBrokenStoreChild")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, drop := range []string{"set", "delete"} {
		t.Run("drops "+drop, func(t *testing.T) {
			cmd := exec.Command(exe, "-test.run", "^TestBrokenStoreChild$", "-test.count", "1")
			cmd.Env = append(os.Environ(), "STORETEST_BROKEN="+drop)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("the contract passed on a store that drops its %ss:\n%s", drop, out)
			}
			if _, ok := err.(*exec.ExitError); !ok {
				t.Fatalf("running the child: %v", err)
			}
			if !strings.Contains(string(out), "--- FAIL: TestBrokenStoreChild/Contract") {
				t.Fatalf("the child failed, but not in the contract:\n%s", out)
			}
		})
	}
}

// TestBrokenStoreChild runs the contract on a broken store; it only runs
// as TestRun_FailsOnBrokenStore's child.
func TestBrokenStoreChild(t *testing.T) {
	drop := os.Getenv("STORETEST_BROKEN")
	if drop == "" {
		t.Skip("runs as TestRun_FailsOnBrokenStore's child")
	}
	storetest.Run(t, memoryOpen(func(s tokenstore.Store) tokenstore.Store { return broken{Store: s, drop: drop} }),
		storetest.Options{ErrPrefix: "tokenstore:"})
}
