//go:build !(linux || darwin || freebsd || openbsd || netbsd || dragonfly)

package tokenstore

import (
	"context"
	"fmt"
)

// Lock is not available on this platform: it returns ErrLockUnsupported.
// Callers that share a store directory between processes here must
// serialize refreshes some other way.
func (f *FileStore) Lock(ctx context.Context, key string) (unlock func(), err error) {
	return nil, fmt.Errorf("tokenstore: file lock: %w", ErrLockUnsupported)
}
