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

// Lock takes the advisory lock of key, shared by every FileStore on this
// host that uses the same directory (in this process or another), and
// returns the function that releases it. It waits until the lock is free
// or ctx is done; the lock is also released when the process dies, so a
// crash leaves no stale lock.
//
// Hold it across "re-read the store, call the token endpoint, Set": two
// refreshes of one key racing each other would use a rotated refresh token
// twice. The lock is a flock(2) on <dir>/<hex sha256(key)>.lock; it only
// excludes other callers of Lock (Get, Set and Delete do not take it), and
// it is not reliable on network file systems.
func (f *FileStore) Lock(ctx context.Context, key string) (unlock func(), err error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("tokenstore: file lock: %w", err)
	}
	_, name := keyName(key)
	lf, err := os.OpenFile(filepath.Join(f.dir, name+lockExt), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("tokenstore: file lock: %w", err)
	}
	fd := int(lf.Fd())
	// flock cannot be interrupted by a context, so poll it without
	// blocking, backing off from 1 ms to 25 ms.
	var timer *time.Timer
	for wait := time.Millisecond; ; wait = min(2*wait, 25*time.Millisecond) {
		err := syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			lf.Close()
			return nil, fmt.Errorf("tokenstore: file lock %s: %w", name, err)
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
			return nil, fmt.Errorf("tokenstore: file lock %s: %w", name, context.Cause(ctx))
		case <-timer.C:
		}
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			_ = syscall.Flock(fd, syscall.LOCK_UN)
			lf.Close()
		})
	}, nil
}
