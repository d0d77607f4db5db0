//go:build linux || darwin || freebsd || openbsd || netbsd || dragonfly

package tokenstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// canLock says that FileStore locks work here (and CompareAndSet with them).
const canLock = true

// How long a waiter for a lock sleeps between tries at most: a refresh lock
// is held across a call to the token endpoint, a write lock for a rename
// and two fsyncs.
const (
	lockPollMax      = 25 * time.Millisecond
	writeLockPollMax = 5 * time.Millisecond
)

// Lock takes the refresh lock of key, shared by every FileStore on this
// host that uses the same directory (in this process or another), and
// returns the function that releases it. It waits until the lock is free
// or ctx is done; the lock is also released when the process dies, so a
// crash leaves no stale lock (only its file, which the next Lock of the
// key or NewFileStore removes).
//
// Hold it across "re-read the store, call the token endpoint, store the
// result": two refreshes of one key racing each other would use a rotated
// refresh token twice. The lock is a flock(2) on <dir>/<hex
// sha256(key)>.lock, a file that exists while the lock is held or waited
// for. It only excludes other callers of Lock: Get, Set, CompareAndSet and
// Delete take the key's write lock, another file, so they can be called
// while holding it. It is not reliable on network file systems.
func (f *FileStore) Lock(ctx context.Context, key string) (unlock func(), err error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("tokenstore: file lock: %w", err)
	}
	_, name := keyName(key)
	lf, err := lockFile(ctx, filepath.Join(f.dir, name+lockExt), lockPollMax)
	if err != nil {
		return nil, fmt.Errorf("tokenstore: file lock %s: %w", name, err)
	}
	var once sync.Once
	return func() { once.Do(func() { unlockFile(lf) }) }, nil
}

// lockWrite takes the write lock of the key whose file name is name: a
// flock on <dir>/<name>.wlock, held by Set, CompareAndSet and Delete (and
// Get removing a dead record) for their compare and rename. The returned
// function releases it and must be called exactly once.
func (f *FileStore) lockWrite(ctx context.Context, name string) (unlock func(), err error) {
	lf, err := lockFile(ctx, filepath.Join(f.dir, name+writeLockExt), writeLockPollMax)
	if err != nil {
		return nil, fmt.Errorf("write lock %s: %w", name, err)
	}
	return func() { unlockFile(lf) }, nil
}

// lockFile takes an exclusive flock on the file at path, creating it, and
// returns it once path still names the file locked: the holder before
// may have unlinked it while this caller waited (see unlockFile), and a
// lock on an unlinked file excludes no one who comes after. flock cannot
// be interrupted by a context, so it is polled without blocking, backing
// off from 1 ms to maxWait, until ctx is done.
func lockFile(ctx context.Context, path string, maxWait time.Duration) (*os.File, error) {
	var timer *time.Timer
	wait := time.Millisecond
	for {
		lf, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, err
		}
		fd := int(lf.Fd())
		for {
			err := syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB)
			if err == nil {
				break
			}
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			if !errors.Is(err, syscall.EWOULDBLOCK) {
				lf.Close()
				return nil, err
			}
			if timer == nil {
				timer = time.NewTimer(wait)
				defer timer.Stop()
			} else {
				timer.Reset(wait)
			}
			select {
			case <-ctx.Done():
				lf.Close()
				return nil, context.Cause(ctx)
			case <-timer.C:
			}
			wait = min(2*wait, maxWait)
		}
		same, err := namesFile(path, lf)
		if same {
			return lf, nil
		}
		_ = syscall.Flock(fd, syscall.LOCK_UN)
		lf.Close()
		if err != nil {
			return nil, err
		}
	}
}

// namesFile reports whether path names the open file lf.
func namesFile(path string, lf *os.File) (bool, error) {
	fst, err := lf.Stat()
	if err != nil {
		return false, err
	}
	pst, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return os.SameFile(fst, pst), nil
}

// unlockFile releases a lock lockFile took: it unlinks the lock file while
// still holding its flock, so that no lock file outlives its use, and then
// lets go. A waiter holding the unlinked file notices and starts over.
func unlockFile(lf *os.File) {
	_ = os.Remove(lf.Name())
	_ = syscall.Flock(int(lf.Fd()), syscall.LOCK_UN)
	lf.Close()
}

// removeIdleLock removes the lock file at path if no one holds or waits
// for its lock right now (a crash left it behind), by the rule of
// unlockFile: the flock first, then the unlink.
func removeIdleLock(path string) {
	lf, err := os.Open(path)
	if err != nil {
		return
	}
	defer lf.Close()
	if syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		return // held: its holder removes it
	}
	if same, _ := namesFile(path, lf); same {
		_ = os.Remove(path)
	}
	_ = syscall.Flock(int(lf.Fd()), syscall.LOCK_UN)
}
