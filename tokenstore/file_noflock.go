//go:build !(linux || darwin || freebsd || openbsd || netbsd || dragonfly)

package tokenstore

import (
	"context"
	"fmt"
)

// canLock says that FileStore locks do not work here: CompareAndSet
// returns an error wrapping errors.ErrUnsupported.
const canLock = false

// Lock is not available on this platform: it returns ErrLockUnsupported.
// Callers that share a store directory between processes here must
// serialize refreshes some other way.
func (f *FileStore) Lock(ctx context.Context, key string) (unlock func(), err error) {
	return nil, fmt.Errorf("tokenstore: file lock: %w", ErrLockUnsupported)
}

// lockWrite does nothing here: writes are not locked, and removeDead falls
// back on renaming the dead record aside.
func (f *FileStore) lockWrite(ctx context.Context, name string) (unlock func(), err error) {
	return func() {}, nil
}

// removeIdleLock does nothing here: no lock files are made.
func removeIdleLock(path string) {}
