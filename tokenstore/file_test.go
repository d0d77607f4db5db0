package tokenstore_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tasknation/tokengate/tokenstore"
)

// recordPath is where a FileStore in dir keeps key: the documented naming
// scheme, which the tests check instead of trusting.
func recordPath(dir, key string) string {
	sum := sha256.Sum256([]byte(key))
	return filepath.Join(dir, hex.EncodeToString(sum[:])+".tok")
}

func newFileStore(t testing.TB, dir string, c *clock) *tokenstore.FileStore {
	t.Helper()
	f, err := tokenstore.NewFileStore(dir, tokenstore.FileOptions{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// versioned is a token whose credentials and their lengths follow from its
// version, so that a record mixing two writes cannot pass for either.
func versioned(v uint64) *tokenstore.Token {
	tok := sample(t0)
	tok.Version = v
	tok.AccessToken = "tn_at_" + strconv.FormatUint(v, 10) + "_" + strings.Repeat("a", int(v%97))
	tok.RefreshToken = "tn_rt_" + strconv.FormatUint(v, 10) + "_" + strings.Repeat("r", int(v*7%89))
	return tok
}

// checkVersioned fails unless tok is exactly versioned(tok.Version).
func checkVersioned(t testing.TB, tok *tokenstore.Token) {
	t.Helper()
	if want := versioned(tok.Version); !equal(tok, want) {
		t.Errorf("torn or mixed record: got %v with access token of %d bytes, want %v", tok, len(tok.AccessToken), want)
	}
}

func dirNames(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func encodedFile(key string, tok *tokenstore.Token) []byte {
	rec, _ := tok.MarshalBinary()
	return tokenstore.AppendFileRecord(nil, sha256.Sum256([]byte(key)), rec)
}

// TestFileStore_CrashLeftovers puts the directory in the states a crash
// can leave behind (the write goes to a temp file, renamed over the record
// only when complete) and checks that Get sees the intact record and that
// NewFileStore cleans up stale temp files only.
func TestFileStore_CrashLeftovers(t *testing.T) {
	ctx := context.Background()
	old, next := versioned(1), versioned(2)
	nextFile := encodedFile("k", next)
	tests := []struct {
		name     string
		record   bool   // an intact record of old is in place
		temp     []byte // what the interrupted write left in its temp file
		wantVers uint64 // 0: ErrNotFound
	}{
		{"crash while writing: half a record in the temp file", true, nextFile[:len(nextFile)/2], 1},
		{"crash before the first byte: empty temp file", true, nil, 1},
		{"crash after fsync, before rename: whole record in the temp file", true, nextFile, 1},
		{"crash during the first write of a key", false, nextFile[:10], 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClock(t0)
			dir := t.TempDir()
			f := newFileStore(t, dir, c)
			if tt.record {
				if err := f.Set(ctx, "k", old); err != nil {
					t.Fatal(err)
				}
			}
			tmp := filepath.Join(dir, ".tmp-123456789")
			if err := os.WriteFile(tmp, tt.temp, 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := f.Get(ctx, "k")
			switch {
			case tt.wantVers == 0 && !errors.Is(err, tokenstore.ErrNotFound):
				t.Fatalf("Get = %v, %v; want ErrNotFound", got, err)
			case tt.wantVers != 0 && err != nil:
				t.Fatalf("Get: %v", err)
			case tt.wantVers != 0:
				checkVersioned(t, got)
				if got.Version != tt.wantVers {
					t.Fatalf("version %d, want %d", got.Version, tt.wantVers)
				}
			}

			// Restart: a temp file younger than a minute may be another
			// process's write in progress and stays; an older one goes.
			c.Add(59 * time.Second)
			if err := os.Chtimes(tmp, t0, t0); err != nil {
				t.Fatal(err)
			}
			newFileStore(t, dir, c)
			if _, err := os.Stat(tmp); err != nil {
				t.Fatalf("a temp file 59s old was removed: %v", err)
			}
			c.Add(2 * time.Second)
			newFileStore(t, dir, c)
			if _, err := os.Stat(tmp); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("a stale temp file was kept: %v", err)
			}
			if _, err := os.Stat(recordPath(dir, "k")); (err == nil) != tt.record {
				t.Fatalf("record file after cleanup: %v", err)
			}
		})
	}
}

func TestFileStore_CorruptFile(t *testing.T) {
	ctx := context.Background()
	tok := sample(t0)
	good := encodedFile("k", tok)
	flip := func(i int) []byte {
		b := append([]byte(nil), good...)
		b[i] ^= 0x40
		return b
	}
	tests := []struct {
		name string
		file []byte
		size int64 // when set, the file is this many zero bytes (sparse)
	}{
		{"empty", []byte{}, 0},
		{"header only", good[:40], 0},
		{"truncated by half", good[:len(good)/2], 0},
		{"truncated by one byte", good[:len(good)-1], 0},
		{"trailing bytes", append(append([]byte(nil), good...), 0), 0},
		{"bad magic", flip(0), 0},
		{"future format version", append([]byte("TGF2"), good[4:]...), 0},
		{"bit flip in the token text", flip(len(good) - 10), 0},
		{"bit flip in the length", flip(38), 0},
		{"bit flip in the checksum", flip(len(good) - 1), 0},
		{"valid envelope around a bad token record", tokenstore.AppendFileRecord(nil, sha256.Sum256([]byte("k")), []byte{1, 2, 3}), 0},
		{"record of another key copied over", encodedFile("someone-else", tok), 0},
		{"huge file", nil, 3 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			f := newFileStore(t, dir, newClock(t0))
			path := recordPath(dir, "k")
			if tt.size > 0 {
				fh, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o600)
				if err != nil {
					t.Fatal(err)
				}
				if err := fh.Truncate(tt.size); err != nil {
					t.Fatal(err)
				}
				fh.Close()
			} else if err := os.WriteFile(path, tt.file, 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := f.Get(ctx, "k")
			if err == nil {
				t.Fatalf("corrupt file decoded: %v", got)
			}
			if !errors.Is(err, tokenstore.ErrCorruptFile) || errors.Is(err, tokenstore.ErrNotFound) {
				t.Fatalf("err = %v, want ErrCorruptFile", err)
			}
			msg := err.Error()
			t.Log(msg)
			if !strings.HasPrefix(msg, "tokenstore: ") || strings.Contains(msg, tok.AccessToken) || strings.Contains(msg, tok.RefreshToken) {
				t.Fatalf("bad error message: %s", msg)
			}
			if _, err := os.Stat(path); err != nil {
				t.Fatalf("the corrupt file was not left for inspection: %v", err)
			}
			// The next write replaces it.
			if err := f.Set(ctx, "k", tok); err != nil {
				t.Fatal(err)
			}
			if got, err := f.Get(ctx, "k"); err != nil || !equal(got, tok) {
				t.Fatalf("after Set: %v, %v", got, err)
			}
		})
	}
}

func TestFileStore_NamesHideKeys(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	f := newFileStore(t, dir, newClock(t0))
	keys := []string{
		"user:alice@example.com",
		"client-7f3a|user-4711|supply::leads",
		"",
		"../../escape",
		"/etc/passwd",
		"ünïcødé/ключ",
		strings.Repeat("long-key-", 2000),
	}
	for _, k := range keys {
		if err := f.Set(ctx, k, sample(t0)); err != nil {
			t.Fatalf("Set(%.20q): %v", k, err)
		}
		unlock, err := f.Lock(ctx, k)
		if err != nil && !errors.Is(err, tokenstore.ErrLockUnsupported) {
			t.Fatal(err)
		}
		if unlock != nil {
			unlock()
		}
	}
	pattern := regexp.MustCompile(`^[0-9a-f]{64}\.(tok|lock)$`)
	names := dirNames(t, dir)
	for _, name := range names {
		if !pattern.MatchString(name) {
			t.Errorf("unexpected file name %q", name)
		}
		for _, k := range keys {
			for _, part := range strings.FieldsFunc(k, func(r rune) bool { return strings.ContainsRune(":|/.@-", r) }) {
				if len(part) >= 3 && strings.Contains(name, part) {
					t.Errorf("file name %q contains key text %q", name, part)
				}
			}
		}
	}
	for _, k := range keys {
		if _, err := os.Stat(recordPath(dir, k)); err != nil {
			t.Errorf("record of %.20q not at its hashed name: %v", k, err)
		}
		if got, err := f.Get(ctx, k); err != nil || !equal(got, sample(t0)) {
			t.Errorf("Get(%.20q) = %v, %v", k, got, err)
		}
	}
	if filepath.Dir(filepath.Dir(dir)) != "" {
		if parent := dirNames(t, filepath.Dir(dir)); len(parent) != 1 {
			t.Errorf("files written outside the store directory: %v", parent)
		}
	}
}

func TestFileStore_Permissions(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("POSIX permissions")
	}
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "state", "tokens")
	f := newFileStore(t, dir, newClock(t0))
	if err := f.Set(ctx, "k", sample(t0)); err != nil {
		t.Fatal(err)
	}
	unlock, err := f.Lock(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	unlock()
	want := map[string]fs.FileMode{
		dir:                  0o700,
		recordPath(dir, "k"): 0o600,
		strings.TrimSuffix(recordPath(dir, "k"), ".tok") + ".lock": 0o600,
	}
	for path, mode := range want {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != mode {
			t.Errorf("%s: mode %#o, want %#o", filepath.Base(path), st.Mode().Perm(), mode)
		}
	}

	// An existing directory: readable by others is fine, writable is not.
	for _, tt := range []struct {
		mode fs.FileMode
		ok   bool
	}{{0o700, true}, {0o750, true}, {0o755, true}, {0o770, false}, {0o777, false}, {0o722, false}} {
		t.Run(fmt.Sprintf("%#o", tt.mode), func(t *testing.T) {
			d := filepath.Join(t.TempDir(), "d")
			if err := os.Mkdir(d, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(d, tt.mode); err != nil {
				t.Fatal(err)
			}
			_, err := tokenstore.NewFileStore(d, tokenstore.FileOptions{})
			if (err == nil) != tt.ok {
				t.Fatalf("NewFileStore on a %#o directory: err = %v, want ok = %v", tt.mode, err, tt.ok)
			}
			if err != nil && !strings.HasPrefix(err.Error(), "tokenstore: ") {
				t.Fatalf("error %q", err)
			}
		})
	}
}

func TestNewFileStore_Errors(t *testing.T) {
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for name, dir := range map[string]string{"empty name": "", "a file": notDir, "below a file": filepath.Join(notDir, "sub")} {
		t.Run(name, func(t *testing.T) {
			_, err := tokenstore.NewFileStore(dir, tokenstore.FileOptions{})
			if err == nil || !strings.HasPrefix(err.Error(), "tokenstore: ") {
				t.Fatalf("err = %v", err)
			}
		})
	}
}

func TestFileStore_CanceledContext(t *testing.T) {
	f := newFileStore(t, t.TempDir(), newClock(t0))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ops := map[string]func() error{
		"Get":    func() error { _, err := f.Get(ctx, "k"); return err },
		"Set":    func() error { return f.Set(ctx, "k", sample(t0)) },
		"Delete": func() error { return f.Delete(ctx, "k") },
		"Lock": func() error {
			_, err := f.Lock(ctx, "k")
			if errors.Is(err, tokenstore.ErrLockUnsupported) {
				return context.Canceled
			}
			return err
		},
	}
	for name, op := range ops {
		if err := op(); !errors.Is(err, context.Canceled) {
			t.Errorf("%s: err = %v, want context.Canceled", name, err)
		}
	}
	if err := f.Set(context.Background(), "k", nil); err == nil {
		t.Error("Set of a nil token succeeded")
	}
}

func TestFileStore_Concurrent(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c := newClock(t0)
	// Two stores on one directory, as two processes would have.
	stores := []*tokenstore.FileStore{newFileStore(t, dir, c), newFileStore(t, dir, c)}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			f := stores[w%2]
			for i := range 100 {
				key := fmt.Sprintf("k%d", i%4)
				v := uint64(w*1000 + i)
				if err := f.Set(ctx, key, versioned(v)); err != nil {
					t.Error(err)
					return
				}
				got, err := f.Get(ctx, key)
				switch {
				case errors.Is(err, tokenstore.ErrNotFound): // deleted by another worker
				case err != nil:
					t.Error(err)
					return
				default:
					checkVersioned(t, got)
				}
				if i%10 == 9 {
					if err := f.Delete(ctx, key); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	for _, name := range dirNames(t, dir) {
		if strings.HasPrefix(name, ".tmp-") {
			t.Errorf("temp file left behind: %s", name)
		}
	}
}

func TestFileStore_SharedDirectory(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	ca, cb := newClock(t0), newClock(t0)
	a, b := newFileStore(t, dir, ca), newFileStore(t, dir, cb)
	steps := []struct {
		name  string
		do    func() error
		check *tokenstore.FileStore
		want  uint64 // 0: ErrNotFound
	}{
		{"a writes, b reads", func() error { return a.Set(ctx, "k", versioned(1)) }, b, 1},
		{"b overwrites, a reads", func() error { return b.Set(ctx, "k", versioned(2)) }, a, 2},
		{"a deletes, b reads", func() error { return a.Delete(ctx, "k") }, b, 0},
		{"b writes again, a reads", func() error { return b.Set(ctx, "k", versioned(3)) }, a, 3},
		{"a's clock passes the expiry: a removes the dead record, b reads", func() error {
			ca.Add(200 * 24 * time.Hour)
			_, err := a.Get(ctx, "k")
			if !errors.Is(err, tokenstore.ErrNotFound) {
				return fmt.Errorf("a.Get after expiry: %v", err)
			}
			return nil
		}, b, 0},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		got, err := s.check.Get(ctx, "k")
		if s.want == 0 {
			if !errors.Is(err, tokenstore.ErrNotFound) {
				t.Fatalf("%s: Get = %v, %v; want ErrNotFound", s.name, got, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		checkVersioned(t, got)
		if got.Version != s.want {
			t.Fatalf("%s: version %d, want %d", s.name, got.Version, s.want)
		}
	}
}

func TestFileStore_Lock(t *testing.T) {
	if runtime.GOOS == "windows" || runtime.GOOS == "solaris" || runtime.GOOS == "aix" {
		t.Skip("no flock")
	}
	ctx := context.Background()
	dir := t.TempDir()
	c := newClock(t0)
	a, b := newFileStore(t, dir, c), newFileStore(t, dir, c)

	t.Run("excludes other holders of the key", func(t *testing.T) {
		unlock, err := a.Lock(ctx, "k")
		if err != nil {
			t.Fatal(err)
		}
		tctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
		defer cancel()
		if u, err := b.Lock(tctx, "k"); !errors.Is(err, context.DeadlineExceeded) {
			if u != nil {
				u()
			}
			t.Fatalf("second Lock while held: err = %v, want DeadlineExceeded", err)
		}
		// Other keys are independent.
		other, err := b.Lock(ctx, "other")
		if err != nil {
			t.Fatal(err)
		}
		other()
		unlock()
		unlock() // a second call does nothing
		again, err := b.Lock(ctx, "k")
		if err != nil {
			t.Fatal(err)
		}
		again()
	})

	t.Run("mutual exclusion across stores and goroutines", func(t *testing.T) {
		stores := []*tokenstore.FileStore{a, b, newFileStore(t, dir, c)}
		var inside, entries atomic.Int32
		var wg sync.WaitGroup
		for w := range 6 {
			wg.Go(func() {
				for range 15 {
					unlock, err := stores[w%len(stores)].Lock(ctx, "k")
					if err != nil {
						t.Error(err)
						return
					}
					if n := inside.Add(1); n != 1 {
						t.Errorf("%d holders of one lock", n)
					}
					entries.Add(1)
					inside.Add(-1)
					unlock()
				}
			})
		}
		wg.Wait()
		if entries.Load() != 6*15 {
			t.Fatalf("%d entries, want %d", entries.Load(), 6*15)
		}
	})

	t.Run("through Sealed", func(t *testing.T) {
		s, err := tokenstore.NewSealed(a, testKey("one"))
		if err != nil {
			t.Fatal(err)
		}
		unlock, err := s.Lock(ctx, "k")
		if err != nil {
			t.Fatal(err)
		}
		tctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
		defer cancel()
		if _, err := b.Lock(tctx, "k"); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Lock through Sealed does not take the file lock: %v", err)
		}
		unlock()
	})
}

// crashChildEnv, when set, makes TestFileStore_CrashChild the child: it
// writes versioned token sets to the store in that directory and reports
// each completed Set on stdout until it is killed.
const crashChildEnv = "TOKENSTORE_CRASH_CHILD_DIR"

// TestFileStore_CrashChild kills a real process (SIGKILL) in the middle of
// its writes, at a different point each round, and checks that the record
// left is a complete one, at least as new as the last Set that returned.
// (A process crash, not a power loss: that relies on the fsyncs, which a
// test cannot observe.)
func TestFileStore_CrashChild(t *testing.T) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(t, dir)
		return
	}
	if testing.Short() {
		t.Skip("starts child processes")
	}
	ctx := context.Background()
	dir := t.TempDir()
	var last uint64
	for round := range 6 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestFileStore_CrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Let the child complete 1, 4, 7, ... writes (its stdout says
		// so), then kill it wherever it is.
		lines := bufio.NewScanner(out)
		want := 1 + 3*round
		var seen uint64
		for n := 0; n < want && lines.Scan(); n++ {
			v, err := strconv.ParseUint(lines.Text(), 10, 64)
			if err != nil {
				t.Fatalf("child said %q", lines.Text())
			}
			seen = v
		}
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		if seen == 0 {
			t.Fatalf("round %d: the child wrote nothing", round)
		}
		f := newFileStore(t, dir, newClock(t0))
		got, err := f.Get(ctx, "user")
		if err != nil {
			t.Fatalf("round %d: after the crash: %v", round, err)
		}
		checkVersioned(t, got)
		t.Logf("round %d: killed after the child reported version %d; the store holds version %d", round, seen, got.Version)
		if got.Version < seen || got.Version <= last {
			t.Fatalf("round %d: version %d, but the child had completed version %d (previous round %d)", round, got.Version, seen, last)
		}
		last = got.Version
	}
	// Whatever temp files the kills left are removed once stale.
	temps := 0
	for _, name := range dirNames(t, dir) {
		if strings.HasPrefix(name, ".tmp-") {
			temps++
		}
	}
	t.Logf("%d kills landed inside a write (temp files left)", temps)
	c := newClock(time.Now().Add(2 * time.Minute))
	newFileStore(t, dir, c)
	for _, name := range dirNames(t, dir) {
		if strings.HasPrefix(name, ".tmp-") {
			t.Errorf("stale temp file kept: %s", name)
		}
	}
}

// crashChild is the child of TestFileStore_CrashChild. It stops by itself
// after a while in case its parent is gone.
func crashChild(t *testing.T, dir string) {
	ctx := context.Background()
	f := newFileStore(t, dir, newClock(t0))
	v := uint64(1)
	if tok, err := f.Get(ctx, "user"); err == nil {
		v = tok.Version + 1
	}
	w := bufio.NewWriter(os.Stdout)
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); v++ {
		if err := f.Set(ctx, "user", versioned(v)); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintln(w, v)
		w.Flush()
	}
}
