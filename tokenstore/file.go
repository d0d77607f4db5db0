package tokenstore

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// A FileStore keeps one file per key in a directory:
//
//	<dir>/<hex sha256(key)>.tok    the record (mode 0600)
//	<dir>/<hex sha256(key)>.lock   the advisory lock file of Lock (empty, never removed)
//	<dir>/.tmp-*                   a write in progress, or one a crash left behind
//
// A record file is a small versioned envelope around Token.MarshalBinary:
//
//	[4]byte  magic "TGF1" (the format version is the last byte)
//	[32]byte sha256(key): a file copied or renamed to another key's name is refused
//	uint32   length n of the token record, big endian
//	[n]byte  the token record (Token.MarshalBinary)
//	uint32   CRC-32C (Castagnoli) of everything before it, big endian
//
// The token record carries its expiry, so Get checks it as MemoryStore does.
const (
	fileMagic     = "TGF1"
	fileHeaderLen = len(fileMagic) + sha256.Size + 4
	fileTrailer   = 4
	// maxRecordLen caps what Get reads: token sets are a few KB at most
	// (the token endpoint's body is capped at 1 MiB), so a bigger file is
	// not ours or is damaged.
	maxRecordLen = 1 << 20

	recordExt  = ".tok"
	lockExt    = ".lock"
	tempPrefix = ".tmp-"
	// staleTemp is the age past which NewFileStore removes a temp file. A
	// write takes milliseconds; a younger temp file may belong to another
	// process sharing the directory that is about to rename it.
	staleTemp = time.Minute
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// ErrCorruptFile is wrapped by the error Get returns when a record file
// cannot be trusted: truncated, bad magic or checksum, a token record that
// does not decode, or a record that belongs to another key. Get leaves such
// a file in place for inspection; the next Set of the key replaces it.
var ErrCorruptFile = errors.New("tokenstore: corrupt token file")

// errTooBig is returned by readRecordFile for a file larger than any record.
var errTooBig = errors.New("tokenstore: file too big")

// ErrLockUnsupported is returned by Lock where advisory file locks are not
// available (platforms without flock), and by Sealed.Lock when the wrapped
// store is not a Locker.
var ErrLockUnsupported = errors.New("tokenstore: locking not supported")

// Locker is implemented by stores that can serialize work on one key across
// the processes sharing them (FileStore, and Sealed over a FileStore).
//
// Lock blocks until the caller holds the key's lock or ctx is done. The
// caller must call unlock exactly once when done (extra calls do nothing).
type Locker interface {
	Lock(ctx context.Context, key string) (unlock func(), err error)
}

// FileOptions configures a FileStore. The zero value is ready to use.
type FileOptions struct {
	// Now is the clock used to check expiry on read and the age of
	// leftover temp files. Default: time.Now.
	Now func() time.Time
}

// FileStore is a durable Store: one file per key in a directory, written
// atomically so that a crash at any point leaves the old or the new record,
// never a torn one.
//
// File names are the hex SHA-256 of the key, so no key text (user id,
// client id) appears on disk in clear. Note that a hash of a guessable key
// can be confirmed by guessing; callers that need more derive keys with a
// secret (as the Store interface asks), and wrap the store in Sealed to
// encrypt the tokens themselves.
//
// A FileStore is safe for concurrent use, and several FileStores (in one
// process or in several processes on one host) may share a directory: a
// reader sees a whole record, the old one or the new one. Concurrent
// writers of the same key are last-writer-wins; serializing the refreshes
// of one key (so that a rotated refresh token is never used twice) is the
// caller's job, with Lock.
//
// A FileStore holds no open files between calls and needs no Close.
type FileStore struct {
	dir string
	now func() time.Time
}

// NewFileStore opens the store kept in dir, creating dir with mode 0700 when
// it does not exist. An existing dir that group or others can write to is
// refused: whoever can create files there could plant a token for any key.
// (Group or others being able to read it is allowed: names are hashes and
// every record file is 0600.)
//
// Temp files older than one minute, left behind by a crash, are removed;
// younger ones are kept because another process sharing dir may be about to
// rename one. Removal is best effort.
func NewFileStore(dir string, opts FileOptions) (*FileStore, error) {
	if dir == "" {
		return nil, errors.New("tokenstore: file store: empty directory name")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("tokenstore: file store: %w", err)
	}
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("tokenstore: file store: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("tokenstore: file store: %s is not a directory", dir)
	}
	if runtime.GOOS != "windows" && st.Mode().Perm()&0o022 != 0 {
		return nil, fmt.Errorf("tokenstore: file store: directory %s is writable by group or others (mode %#o); chmod 700 it", dir, st.Mode().Perm())
	}
	f := &FileStore{dir: dir, now: opts.Now}
	f.removeStaleTemps()
	return f, nil
}

// removeStaleTemps removes the temp files a crash left behind.
func (f *FileStore) removeStaleTemps() {
	entries, err := os.ReadDir(f.dir)
	if err != nil {
		return
	}
	cutoff := f.now().Add(-staleTemp)
	for _, e := range entries {
		if !e.Type().IsRegular() || !strings.HasPrefix(e.Name(), tempPrefix) {
			continue
		}
		info, err := e.Info()
		if err != nil || !info.ModTime().Before(cutoff) {
			continue
		}
		_ = os.Remove(filepath.Join(f.dir, e.Name()))
	}
}

// Dir is the directory the store keeps its files in.
func (f *FileStore) Dir() string { return f.dir }

// keyName is the SHA-256 of key and the file name derived from it (without
// extension).
func keyName(key string) (sum [sha256.Size]byte, name string) {
	sum = sha256.Sum256([]byte(key))
	return sum, hex.EncodeToString(sum[:])
}

// Get returns the token set stored under key, or ErrNotFound when there is
// none or nothing in it is usable any more (the file is then removed). A
// file that cannot be trusted is an error wrapping ErrCorruptFile.
func (f *FileStore) Get(ctx context.Context, key string) (*Token, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("tokenstore: file get: %w", err)
	}
	sum, name := keyName(key)
	path := filepath.Join(f.dir, name+recordExt)
	fh, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("tokenstore: file get: %w", err)
	}
	st, buf, err := readRecordFile(fh)
	fh.Close()
	if errors.Is(err, errTooBig) {
		return nil, fmt.Errorf("%w %s: %d bytes, more than any token record", ErrCorruptFile, name, st.Size())
	}
	if err != nil {
		return nil, fmt.Errorf("tokenstore: file get %s: %w", name, err)
	}
	owner, rec, err := decodeFileRecord(buf)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %w", ErrCorruptFile, name, err)
	}
	if owner != sum {
		return nil, fmt.Errorf("%w %s: the record belongs to another key", ErrCorruptFile, name)
	}
	r, err := parse(rec)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %s", ErrCorruptFile, name, strings.TrimPrefix(err.Error(), "tokenstore: "))
	}
	if !r.usable(f.now()) {
		f.removeDead(path, st)
		return nil, ErrExpired
	}
	d := decode(rec, &r, true) // buf is ours alone and never written again
	return &d.Token, nil
}

// readRecordFile reads the whole of an open record file. Record files are
// never written in place (only renamed over), so the size Stat reports is
// the size there is to read.
func readRecordFile(fh *os.File) (fs.FileInfo, []byte, error) {
	st, err := fh.Stat()
	if err != nil {
		return nil, nil, err
	}
	if st.Size() > int64(fileHeaderLen+maxRecordLen+fileTrailer) {
		return st, nil, errTooBig
	}
	buf := make([]byte, st.Size())
	if _, err := io.ReadFull(fh, buf); err != nil {
		return nil, nil, err
	}
	return st, buf, nil
}

// removeDead removes the record file at path that Get read and found
// unusable (dead is its FileInfo), without losing a record another writer
// may have renamed over it in the meantime: the file is first renamed
// aside, which is atomic; if what was renamed is not the dead file, it is
// linked back, unless an even newer record has taken its place.
func (f *FileStore) removeDead(path string, dead fs.FileInfo) {
	aside := filepath.Join(f.dir, tempPrefix+"dead-"+rand.Text())
	if err := os.Rename(path, aside); err != nil {
		return // gone already (another reader), or not ours to touch
	}
	if st, err := os.Lstat(aside); err == nil && !os.SameFile(st, dead) {
		// A writer replaced the dead record after we read it. Put the
		// new one back; Link fails if a newer one still has arrived.
		_ = os.Link(aside, path)
	}
	_ = os.Remove(aside)
	_ = f.syncDir()
}

// Set stores tok under key, replacing what was there, atomically and
// durably: the record is written to a temp file in the same directory,
// fsynced, renamed over the key's file, and the directory is fsynced.
func (f *FileStore) Set(ctx context.Context, key string, tok *Token) error {
	if tok == nil {
		return errors.New("tokenstore: file set: nil token")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("tokenstore: file set: %w", err)
	}
	sum, name := keyName(key)
	rec := tok.appendBinary(nil)
	if len(rec) > maxRecordLen {
		return fmt.Errorf("tokenstore: file set: token record of %d bytes exceeds %d", len(rec), maxRecordLen)
	}
	buf := appendFileRecord(make([]byte, 0, fileHeaderLen+len(rec)+fileTrailer), sum, rec)

	tmp, err := os.CreateTemp(f.dir, tempPrefix+"*") // mode 0600
	if err != nil {
		return fmt.Errorf("tokenstore: file set: %w", err)
	}
	tmpName := tmp.Name()
	fail := func(err error) error {
		tmp.Close()
		os.Remove(tmpName)
		return fmt.Errorf("tokenstore: file set %s: %w", name, err)
	}
	if _, err := tmp.Write(buf); err != nil {
		return fail(err)
	}
	if err := tmp.Sync(); err != nil {
		return fail(err)
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmpName)
		return fmt.Errorf("tokenstore: file set %s: %w", name, err)
	}
	if err := os.Rename(tmpName, filepath.Join(f.dir, name+recordExt)); err != nil {
		os.Remove(tmpName)
		return fmt.Errorf("tokenstore: file set %s: %w", name, err)
	}
	if err := f.syncDir(); err != nil {
		// The record is in place for every reader; only its durability
		// across a power loss is in doubt.
		return fmt.Errorf("tokenstore: file set %s: sync directory: %w", name, err)
	}
	return nil
}

// Delete removes key; deleting an absent key is not an error. The key's
// lock file, if any, stays (removing it would let two processes lock
// different files).
func (f *FileStore) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("tokenstore: file delete: %w", err)
	}
	_, name := keyName(key)
	if err := os.Remove(filepath.Join(f.dir, name+recordExt)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("tokenstore: file delete %s: %w", name, err)
	}
	if err := f.syncDir(); err != nil {
		return fmt.Errorf("tokenstore: file delete %s: sync directory: %w", name, err)
	}
	return nil
}

// syncDir makes renames and removals in the directory durable.
func (f *FileStore) syncDir() error {
	if runtime.GOOS == "windows" {
		return nil // directories cannot be opened for fsync there
	}
	d, err := os.Open(f.dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// appendFileRecord appends the file envelope of the token record rec,
// stored under the key whose SHA-256 is owner, to b.
func appendFileRecord(b []byte, owner [sha256.Size]byte, rec []byte) []byte {
	start := len(b)
	b = append(b, fileMagic...)
	b = append(b, owner[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(rec)))
	b = append(b, rec...)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b[start:], crcTable))
}

// decodeFileRecord checks the envelope of a record file and returns the
// SHA-256 of the key it was written for and the token record inside (a
// subslice of b). It does not decode the token record.
func decodeFileRecord(b []byte) (owner [sha256.Size]byte, rec []byte, err error) {
	if len(b) < fileHeaderLen+fileTrailer {
		return owner, nil, fmt.Errorf("truncated: %d bytes, want at least %d", len(b), fileHeaderLen+fileTrailer)
	}
	if string(b[:len(fileMagic)]) != fileMagic {
		if string(b[:len(fileMagic)-1]) == fileMagic[:len(fileMagic)-1] {
			return owner, nil, fmt.Errorf("unsupported format version %q", b[len(fileMagic)-1])
		}
		return owner, nil, errors.New("not a token file (bad magic)")
	}
	n := binary.BigEndian.Uint32(b[fileHeaderLen-4:])
	if want := uint64(fileHeaderLen) + uint64(n) + fileTrailer; uint64(len(b)) != want {
		if uint64(len(b)) < want {
			return owner, nil, fmt.Errorf("truncated: %d bytes, want %d", len(b), want)
		}
		return owner, nil, fmt.Errorf("%d trailing bytes", uint64(len(b))-want)
	}
	body := b[:len(b)-fileTrailer]
	if got, want := crc32.Checksum(body, crcTable), binary.BigEndian.Uint32(b[len(body):]); got != want {
		return owner, nil, fmt.Errorf("checksum mismatch (%08x, want %08x)", got, want)
	}
	copy(owner[:], b[len(fileMagic):])
	return owner, body[fileHeaderLen:], nil
}

var (
	_ Store  = (*FileStore)(nil)
	_ Locker = (*FileStore)(nil)
)
