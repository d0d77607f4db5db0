package tokenstore_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
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

func newFileStore(t testing.TB, dir string, now func() time.Time) *tokenstore.FileStore {
	t.Helper()
	f, err := tokenstore.NewFileStore(dir, tokenstore.FileOptions{Now: now})
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
			f := newFileStore(t, dir, c.Now)
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
			c.Advance(59 * time.Second)
			if err := os.Chtimes(tmp, t0, t0); err != nil {
				t.Fatal(err)
			}
			newFileStore(t, dir, c.Now)
			if _, err := os.Stat(tmp); err != nil {
				t.Fatalf("a temp file 59s old was removed: %v", err)
			}
			c.Advance(2 * time.Second)
			newFileStore(t, dir, c.Now)
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
			f := newFileStore(t, dir, newClock(t0).Now)
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
	f := newFileStore(t, dir, newClock(t0).Now)
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
	pattern := regexp.MustCompile(`^[0-9a-f]{64}\.(tok|lock|wlock)$`)
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
	f := newFileStore(t, dir, newClock(t0).Now)
	if err := f.Set(ctx, "k", sample(t0)); err != nil {
		t.Fatal(err)
	}
	unlock, err := f.Lock(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock() // the lock file exists while the lock is held
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
	f := newFileStore(t, t.TempDir(), newClock(t0).Now)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ops := map[string]func() error{
		"Get":    func() error { _, err := f.Get(ctx, "k"); return err },
		"Set":    func() error { return f.Set(ctx, "k", sample(t0)) },
		"Delete": func() error { return f.Delete(ctx, "k") },
		"CompareAndSet": func() error {
			err := f.CompareAndSet(ctx, "k", 0, sample(t0))
			if errors.Is(err, errors.ErrUnsupported) {
				return context.Canceled
			}
			return err
		},
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
	if names := dirNames(t, f.Dir()); len(names) != 0 {
		t.Errorf("canceled calls left files: %v", names)
	}
}

func TestFileStore_Concurrent(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c := newClock(t0)
	// Two stores on one directory, as two processes would have.
	stores := []*tokenstore.FileStore{newFileStore(t, dir, c.Now), newFileStore(t, dir, c.Now)}
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
	a, b := newFileStore(t, dir, ca.Now), newFileStore(t, dir, cb.Now)
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
			ca.Advance(200 * 24 * time.Hour)
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
	a, b := newFileStore(t, dir, c.Now), newFileStore(t, dir, c.Now)

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
		stores := []*tokenstore.FileStore{a, b, newFileStore(t, dir, c.Now)}
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
		f := newFileStore(t, dir, newClock(t0).Now)
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
	newFileStore(t, dir, c.Now)
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
	f := newFileStore(t, dir, newClock(t0).Now)
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

// lockFiles lists the lock files in dir (of Lock and of the writes).
func lockFiles(t testing.TB, dir string) []string {
	t.Helper()
	var locks []string
	for _, name := range dirNames(t, dir) {
		if strings.HasSuffix(name, ".lock") || strings.HasSuffix(name, ".wlock") {
			locks = append(locks, name)
		}
	}
	return locks
}

// Lock files exist while a lock is held, not one per key ever seen.
func TestFileStore_LockFilesRemoved(t *testing.T) {
	if runtime.GOOS == "windows" || runtime.GOOS == "solaris" || runtime.GOOS == "aix" {
		t.Skip("no flock")
	}
	ctx := context.Background()
	dir := t.TempDir()
	c := newClock(t0)
	a, b := newFileStore(t, dir, c.Now), newFileStore(t, dir, c.Now)
	const keys = 200
	for i := range keys {
		key := fmt.Sprintf("user:%d", i)
		unlock, err := a.Lock(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			// The name checked for below is the one in use.
			if locks := lockFiles(t, dir); len(locks) != 1 || locks[0] != filepath.Base(strings.TrimSuffix(recordPath(dir, key), ".tok")+".lock") {
				t.Fatalf("lock files while a lock is held: %v, want the key's .lock", locks)
			}
		}
		// The writes under the lock, as a refresh makes them.
		if err := b.CompareAndSet(ctx, key, 0, versioned(1)); err != nil {
			t.Fatal(err)
		}
		if err := a.CompareAndSet(ctx, key, 0, versioned(2)); !errors.Is(err, tokenstore.ErrConflict) {
			t.Fatalf("CompareAndSet(old 0) over a live set = %v, want ErrConflict", err)
		}
		if err := a.CompareAndSet(ctx, key, 1, versioned(2)); err != nil {
			t.Fatal(err)
		}
		unlock()
		if err := b.Set(ctx, key, versioned(3)); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if err := a.Delete(ctx, key); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Get removing dead records takes the write lock too.
	c.Advance(200 * 24 * time.Hour)
	for i := range keys {
		if _, err := b.Get(ctx, fmt.Sprintf("user:%d", i)); !errors.Is(err, tokenstore.ErrNotFound) {
			t.Fatalf("Get of a dead or deleted set = %v, want ErrNotFound", err)
		}
	}
	if names := dirNames(t, dir); len(names) != 0 {
		t.Fatalf("%d files left after %d keys were locked, written and deleted or expired: %v", len(names), keys, names[:min(len(names), 5)])
	}
}

// TestFileStore_LockHammer runs the refresh pattern on several stores of
// one directory at once: hold Lock, read the set, write its successor with
// CompareAndSet. Lock files are unlinked on every unlock, so waiters keep
// finding that the file they locked is gone; if one went ahead on it, two
// holders would read the same version, one CompareAndSet would conflict,
// and the count kept beside it (read and written in two steps) would lose
// increments.
func TestFileStore_LockHammer(t *testing.T) {
	if runtime.GOOS == "windows" || runtime.GOOS == "solaris" || runtime.GOOS == "aix" {
		t.Skip("no flock")
	}
	ctx := context.Background()
	dir := t.TempDir()
	c := newClock(t0)
	stores := []*tokenstore.FileStore{newFileStore(t, dir, c.Now), newFileStore(t, dir, c.Now), newFileStore(t, dir, c.Now), newFileStore(t, dir, c.Now)}
	keys := []string{"user:a", "user:b"}
	for _, k := range keys {
		if err := stores[0].Set(ctx, k, versioned(1)); err != nil {
			t.Fatal(err)
		}
	}
	const workers, rounds = 8, 40
	var inside [2]atomic.Int32
	var count [2]atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			f := stores[w%len(stores)]
			for i := range rounds {
				k := (w + i) % len(keys)
				unlock, err := f.Lock(ctx, keys[k])
				if err != nil {
					t.Error(err)
					return
				}
				if n := inside[k].Add(1); n != 1 {
					t.Errorf("%d holders of the lock of %s", n, keys[k])
				}
				n := count[k].Load()
				runtime.Gosched()
				count[k].Store(n + 1)
				got, err := f.Get(ctx, keys[k])
				if err == nil {
					err = f.CompareAndSet(ctx, keys[k], got.Version, versioned(got.Version+1))
				}
				if err != nil {
					t.Errorf("read and write under the lock: %v", err)
				}
				inside[k].Add(-1)
				unlock()
			}
		})
	}
	wg.Wait()
	total := int64(0)
	for k, key := range keys {
		got, err := stores[1].Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		checkVersioned(t, got)
		if got.Version != uint64(1+count[k].Load()) {
			t.Errorf("%s: version %d after %d increments from 1", key, got.Version, count[k].Load())
		}
		total += count[k].Load()
	}
	if total != workers*rounds {
		t.Errorf("%d increments counted, want %d", total, workers*rounds)
	}
	if locks := lockFiles(t, dir); len(locks) != 0 {
		t.Errorf("lock files left: %v", locks)
	}
}

// A crash leaves the lock file it held behind; NewFileStore removes those
// nobody holds, and leaves a held one to its holder.
func TestFileStore_NewRemovesIdleLocks(t *testing.T) {
	if runtime.GOOS == "windows" || runtime.GOOS == "solaris" || runtime.GOOS == "aix" {
		t.Skip("no flock")
	}
	ctx := context.Background()
	dir := t.TempDir()
	c := newClock(t0)
	a := newFileStore(t, dir, c.Now)
	base := func(key string) string { return strings.TrimSuffix(recordPath(dir, key), ".tok") }
	left := []string{base("crashed-refresh") + ".lock", base("crashed-write") + ".wlock"}
	for _, p := range left {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	unlock, err := a.Lock(ctx, "held")
	if err != nil {
		t.Fatal(err)
	}
	b := newFileStore(t, dir, c.Now)
	if locks := lockFiles(t, dir); len(locks) != 1 || locks[0] != filepath.Base(base("held")+".lock") {
		t.Fatalf("lock files after NewFileStore: %v, want only the held one", locks)
	}
	tctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	if u, err := b.Lock(tctx, "held"); !errors.Is(err, context.DeadlineExceeded) {
		if u != nil {
			u()
		}
		t.Fatalf("Lock of a held key after NewFileStore: err = %v, want DeadlineExceeded", err)
	}
	unlock()
	if locks := lockFiles(t, dir); len(locks) != 0 {
		t.Fatalf("lock files left: %v", locks)
	}
}

// casChildEnv, when set, makes TestFileStore_CompareAndSetAcrossProcesses
// the child: it increments the counter in the store in that directory.
const casChildEnv = "TOKENSTORE_CAS_CHILD_DIR"

// casIncrements is how many increments each incrementer makes.
const casIncrements = 40

// casIncrement adds n to the counter kept as the version of the set of key
// "counter": read it, CompareAndSet its successor, again on a conflict. It
// returns how many conflicts it met.
func casIncrement(ctx context.Context, f *tokenstore.FileStore, n int) (conflicts int, err error) {
	for done := 0; done < n; {
		got, err := f.Get(ctx, "counter")
		if err != nil {
			return conflicts, err
		}
		switch err := f.CompareAndSet(ctx, "counter", got.Version, versioned(got.Version+1)); {
		case err == nil:
			done++
		case errors.Is(err, tokenstore.ErrConflict):
			conflicts++
		default:
			return conflicts, err
		}
	}
	return conflicts, nil
}

// TestFileStore_CompareAndSetAcrossProcesses increments a counter from
// this process and two children at once, each increment a read and a
// CompareAndSet from the version read. If compare and write were not
// atomic across processes, two incrementers would both win from one
// version and the count would come out short.
func TestFileStore_CompareAndSetAcrossProcesses(t *testing.T) {
	if dir := os.Getenv(casChildEnv); dir != "" {
		casChild(t, dir)
		return
	}
	if runtime.GOOS == "windows" || runtime.GOOS == "solaris" || runtime.GOOS == "aix" {
		t.Skip("no flock")
	}
	if testing.Short() {
		t.Skip("starts child processes")
	}
	ctx := context.Background()
	dir := t.TempDir()
	f := newFileStore(t, dir, newClock(t0).Now)
	if err := f.Set(ctx, "counter", versioned(1)); err != nil {
		t.Fatal(err)
	}
	const children, goroutines = 2, 2
	type child struct {
		cmd    *exec.Cmd
		start  io.WriteCloser
		out    *bufio.Scanner
		stderr strings.Builder
	}
	var kids []*child
	for range children {
		k := &child{cmd: exec.Command(os.Args[0], "-test.run=^TestFileStore_CompareAndSetAcrossProcesses$", "-test.count=1")}
		k.cmd.Env = append(os.Environ(), casChildEnv+"="+dir)
		k.cmd.Stderr = &k.stderr
		var err error
		if k.start, err = k.cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		out, err := k.cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		k.out = bufio.NewScanner(out)
		if err := k.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { k.cmd.Process.Kill(); k.cmd.Wait() })
		kids = append(kids, k)
	}
	// Everyone starts at once: the children say they are ready, then
	// wait for a line on stdin.
	for _, k := range kids {
		if !k.out.Scan() || k.out.Text() != "ready" {
			t.Fatalf("child did not get ready: %q %v\n%s", k.out.Text(), k.out.Err(), k.stderr.String())
		}
	}
	for _, k := range kids {
		fmt.Fprintln(k.start, "go")
	}
	var conflicts atomic.Int64
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			n, err := casIncrement(ctx, newFileStore(t, dir, newClock(t0).Now), casIncrements)
			conflicts.Add(int64(n))
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for _, k := range kids {
		var n int64
		if !k.out.Scan() {
			t.Fatalf("child said nothing more: %v\n%s", k.out.Err(), k.stderr.String())
		}
		if _, err := fmt.Sscanf(k.out.Text(), "done %d", &n); err != nil {
			t.Fatalf("child said %q\n%s", k.out.Text(), k.stderr.String())
		}
		conflicts.Add(n)
		if err := k.cmd.Wait(); err != nil {
			t.Fatalf("child: %v\n%s", err, k.stderr.String())
		}
	}
	got, err := f.Get(ctx, "counter")
	if err != nil {
		t.Fatal(err)
	}
	checkVersioned(t, got)
	want := uint64(1 + (children+goroutines)*casIncrements)
	t.Logf("%d incrementers in %d processes, %d conflicts, counter at %d", children+goroutines, 1+children, conflicts.Load(), got.Version)
	if got.Version != want {
		t.Fatalf("counter at %d, want %d: increments were lost", got.Version, want)
	}
	if locks := lockFiles(t, dir); len(locks) != 0 {
		t.Errorf("lock files left: %v", locks)
	}
}

// casChild is a child of TestFileStore_CompareAndSetAcrossProcesses.
func casChild(t *testing.T, dir string) {
	f := newFileStore(t, dir, newClock(t0).Now)
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		t.Fatal(err) // the parent is gone
	}
	n, err := casIncrement(context.Background(), f, casIncrements)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("done", n)
}
