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
//	<dir>/<hex sha256(key)>.tok     the record (mode 0600)
//	<dir>/<hex sha256(key)>.lock    the refresh lock of Lock (empty, mode 0600)
//	<dir>/<hex sha256(key)>.wlock   the write lock of Set, CompareAndSet, Delete
//	                                and of Get removing a dead record (empty, 0600)
//	<dir>/.tmp-*                    a write in progress, or one a crash left behind
//
// A lock file exists only while its lock is held or waited for. A locker
// opens (creating) the file, flocks it, and then checks that the name
// still points at the file it locked; if not, it starts over. The holder
// unlinks the name before it lets go of the flock, so a waiter that then
// gets the flock of the unlinked file sees that and starts over on a new
// file. A process that dies holding a lock leaves its file behind; the
// next lock of the key removes it, and so does NewFileStore for every lock
// file nobody holds.
//
// The two locks of a key are different files because the refresh lock is
// held across a whole refresh, during which the holder writes the rotated
// set with CompareAndSet; flock excludes a second open file of the same
// file even in the holder's own process.
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

	recordExt    = ".tok"
	lockExt      = ".lock"
	writeLockExt = ".wlock"
	tempPrefix   = ".tmp-"
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
// reader sees a whole record, the old one or the new one. Set,
// CompareAndSet and Delete of one key hold its write lock (a flock held for
// the compare, the rename and the directory fsync), so a CompareAndSet is
// atomic with respect to the other writes of every FileStore sharing the
// directory: a set deleted in between is not written back. Set is still
// last-writer-wins; serializing the refreshes of one key (so that a rotated
// refresh token is never used twice) is the caller's job, with Lock, and
// fencing a refresh against a disconnect is CompareAndSet's. Where flock
// is not available, writes are not locked and CompareAndSet is not
// supported.
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
// rename one. Lock files that no one holds (a crash leaves the one it held)
// are removed too. Removal is best effort.
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
	f.removeLeftovers()
	return f, nil
}

// removeLeftovers removes the temp files and the lock files a crash left
// behind.
func (f *FileStore) removeLeftovers() {
	entries, err := os.ReadDir(f.dir)
	if err != nil {
		return
	}
	cutoff := f.now().Add(-staleTemp)
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() {
			continue
		}
		switch {
		case strings.HasSuffix(name, lockExt) || strings.HasSuffix(name, writeLockExt):
			removeIdleLock(filepath.Join(f.dir, name))
		case strings.HasPrefix(name, tempPrefix):
			info, err := e.Info()
			if err != nil || !info.ModTime().Before(cutoff) {
				continue
			}
			_ = os.Remove(filepath.Join(f.dir, name))
		}
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
	r, rec, st, err := readRecord("get", path, name, sum)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	if !r.usable(f.now()) {
		f.removeDead(ctx, path, name, st)
		return nil, ErrExpired
	}
	d := decode(rec, &r, true) // rec is ours alone and never written again
	return &d.Token, nil
}

// readRecord reads and checks the record file at path, named name, of the
// key whose SHA-256 is sum, and returns the parsed token record, its bytes
// and the file's FileInfo. An absent file is an error wrapping
// fs.ErrNotExist; one that cannot be trusted, an error wrapping
// ErrCorruptFile. op names the caller in other errors.
func readRecord(op, path, name string, sum [sha256.Size]byte) (record, []byte, fs.FileInfo, error) {
	fh, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return record{}, nil, nil, err
		}
		return record{}, nil, nil, fmt.Errorf("tokenstore: file %s %s: %w", op, name, err)
	}
	st, buf, err := readRecordFile(fh)
	fh.Close()
	if errors.Is(err, errTooBig) {
		return record{}, nil, nil, fmt.Errorf("%w %s: %d bytes, more than any token record", ErrCorruptFile, name, st.Size())
	}
	if err != nil {
		return record{}, nil, nil, fmt.Errorf("tokenstore: file %s %s: %w", op, name, err)
	}
	owner, rec, err := decodeFileRecord(buf)
	if err != nil {
		return record{}, nil, nil, fmt.Errorf("%w %s: %w", ErrCorruptFile, name, err)
	}
	if owner != sum {
		return record{}, nil, nil, fmt.Errorf("%w %s: the record belongs to another key", ErrCorruptFile, name)
	}
	r, err := parse(rec)
	if err != nil {
		return record{}, nil, nil, fmt.Errorf("%w %s: %s", ErrCorruptFile, name, strings.TrimPrefix(err.Error(), "tokenstore: "))
	}
	return r, rec, st, nil
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

// removeDead removes the record file at path, named name, that Get read
// and found unusable (dead is its FileInfo), unless another writer has
// replaced it since. It holds the key's write lock, so that a Delete or a
// write cannot fall between its check and its removal; where there is no
// lock, the file is renamed aside (atomic) and linked back if it is not
// the dead one, unless an even newer record has taken its place. Removal
// is best effort: the next Get tries again.
func (f *FileStore) removeDead(ctx context.Context, path, name string, dead fs.FileInfo) {
	unlock, err := f.lockWrite(ctx, name)
	if err != nil {
		return
	}
	defer unlock()
	aside := filepath.Join(f.dir, tempPrefix+"dead-"+rand.Text())
	if err := os.Rename(path, aside); err != nil {
		return // gone already (another reader), or not ours to touch
	}
	if st, err := os.Lstat(aside); err == nil && !os.SameFile(st, dead) {
		_ = os.Link(aside, path)
	}
	_ = os.Remove(aside)
	_ = f.syncDir()
}

// Set stores tok under key, replacing what was there, atomically and
// durably: the record is written to a temp file in the same directory and
// fsynced; then, holding the key's write lock, it is renamed over the
// key's file and the directory is fsynced.
func (f *FileStore) Set(ctx context.Context, key string, tok *Token) error {
	if tok == nil {
		return errors.New("tokenstore: file set: nil token")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("tokenstore: file set: %w", err)
	}
	_, name := keyName(key)
	tmp, err := f.writeTemp("set", key, tok)
	if err != nil {
		return err
	}
	defer os.Remove(tmp) // gone already once renamed
	unlock, err := f.lockWrite(ctx, name)
	if err != nil {
		return fmt.Errorf("tokenstore: file set: %w", err)
	}
	defer unlock()
	return f.install("set", tmp, name)
}

// CompareAndSet stores tok under key if the set stored there has Version
// old, or, when old is 0, if no set is stored or nothing in it is usable
// (Get would say ErrExpired); else it returns an error wrapping
// ErrConflict, and nothing is written. The record is written as by Set;
// the compare, the rename and the directory fsync hold the key's write
// lock, so a Set, Delete or CompareAndSet of any FileStore sharing the
// directory cannot fall in between. A stored record that cannot be trusted
// is an error wrapping ErrCorruptFile (neither a match nor a conflict).
// Where flock is not available the error wraps errors.ErrUnsupported.
func (f *FileStore) CompareAndSet(ctx context.Context, key string, old uint64, tok *Token) error {
	if tok == nil {
		return errors.New("tokenstore: file compare-and-set: nil token")
	}
	if !canLock {
		return fmt.Errorf("tokenstore: file compare-and-set: no file locks on this platform: %w", errors.ErrUnsupported)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("tokenstore: file compare-and-set: %w", err)
	}
	sum, name := keyName(key)
	tmp, err := f.writeTemp("compare-and-set", key, tok)
	if err != nil {
		return err
	}
	defer os.Remove(tmp) // gone already once renamed
	unlock, err := f.lockWrite(ctx, name)
	if err != nil {
		return fmt.Errorf("tokenstore: file compare-and-set: %w", err)
	}
	defer unlock()
	r, rec, _, err := readRecord("compare-and-set", filepath.Join(f.dir, name+recordExt), name, sum)
	stored := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	usable := stored && r.usable(f.now())
	if !(stored && recordVersion(rec) == old) && !(old == 0 && !usable) {
		if !usable {
			return fmt.Errorf("%w: file compare-and-set %s: nothing usable is stored, want version %d", ErrConflict, name, old)
		}
		return fmt.Errorf("%w: file compare-and-set %s: version %d is stored, want %d", ErrConflict, name, recordVersion(rec), old)
	}
	return f.install("compare-and-set", tmp, name)
}

// writeTemp writes the record of tok stored under key to a new temp file
// in the directory, fsyncs and closes it, and returns its path.
func (f *FileStore) writeTemp(op, key string, tok *Token) (string, error) {
	sum, name := keyName(key)
	rec := tok.appendBinary(nil)
	if len(rec) > maxRecordLen {
		return "", fmt.Errorf("tokenstore: file %s: token record of %d bytes exceeds %d", op, len(rec), maxRecordLen)
	}
	buf := appendFileRecord(make([]byte, 0, fileHeaderLen+len(rec)+fileTrailer), sum, rec)
	tmp, err := os.CreateTemp(f.dir, tempPrefix+"*") // mode 0600
	if err != nil {
		return "", fmt.Errorf("tokenstore: file %s: %w", op, err)
	}
	tmpName := tmp.Name()
	_, err = tmp.Write(buf)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmpName)
		return "", fmt.Errorf("tokenstore: file %s %s: %w", op, name, err)
	}
	return tmpName, nil
}

// install renames the temp file tmp over the record file named name and
// fsyncs the directory. The caller holds the key's write lock.
func (f *FileStore) install(op, tmp, name string) error {
	if err := os.Rename(tmp, filepath.Join(f.dir, name+recordExt)); err != nil {
		return fmt.Errorf("tokenstore: file %s %s: %w", op, name, err)
	}
	if err := f.syncDir(); err != nil {
		// The record is in place for every reader; only its durability
		// across a power loss is in doubt.
		return fmt.Errorf("tokenstore: file %s %s: sync directory: %w", op, name, err)
	}
	return nil
}

// Delete removes key, holding its write lock; deleting an absent key is
// not an error. Lock files are not touched: each is removed by whoever
// holds it, when it lets go.
func (f *FileStore) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("tokenstore: file delete: %w", err)
	}
	_, name := keyName(key)
	unlock, err := f.lockWrite(ctx, name)
	if err != nil {
		return fmt.Errorf("tokenstore: file delete: %w", err)
	}
	defer unlock()
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
	_ Store    = (*FileStore)(nil)
	_ Locker   = (*FileStore)(nil)
	_ CASStore = (*FileStore)(nil)
)
