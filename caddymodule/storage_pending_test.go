package caddymodule

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tasknation/tokengate/internal/testkit"
	"github.com/tasknation/tokengate/tokenstore"
)

// TestStorage_PendingFiles: the files of pending connects name neither
// the subject key nor the id, and under Sealed hold no record in clear.
func TestStorage_PendingFiles(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := newTestStorage(t, dir, testkit.NewClockAt(time.Now()).Now)
	sealed, err := tokenstore.NewSealed(s, sealKey)
	if err != nil {
		t.Fatal(err)
	}
	const (
		subject = "user:SUBJECT-KEY-MARKER-5c1e8a0b"
		id      = "ID-MARKER-0f3b9d27c4e1"
		record  = "PENDING-RECORD-MARKER-VERIFIER-9a7d3e5f1b2c"
	)
	if err := sealed.PutPending(ctx, subject, id, []byte(record), time.Minute, 5); err != nil {
		t.Fatal(err)
	}
	var files int
	err = filepath.WalkDir(filepath.Join(dir, filepath.FromSlash(pendingPrefix)), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.Contains(path, "MARKER") {
			t.Errorf("path %s shows the subject key or the id", path)
		}
		if d.IsDir() {
			return nil
		}
		files++
		v, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(v, []byte("MARKER")) {
			t.Errorf("%s holds the record in clear", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files != 1 {
		t.Fatalf("%d pending files, want 1", files)
	}
	if got, err := sealed.TakePending(ctx, subject, id); err != nil || string(got) != record {
		t.Fatalf("TakePending = %q, %v", got, err)
	}
}
