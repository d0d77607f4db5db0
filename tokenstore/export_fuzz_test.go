package tokenstore

import "path/filepath"

// Hooks for the fuzz tests of package tokenstore_test, which plant raw
// records where the stores keep them.

// ErrCorrupt is wrapped by every token record decoding failure.
var ErrCorrupt = errCorrupt

// SetRawMemory stores b as the raw entry of key in m, as a damaged entry
// would be.
func SetRawMemory(m *MemoryStore, key string, b []byte) error { return m.cache.Set(key, b) }

// RecordPath is the file f keeps the record of key in.
func RecordPath(f *FileStore, key string) string {
	_, name := keyName(key)
	return filepath.Join(f.dir, name+recordExt)
}
