package tokenstore

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unsafe"
)

// Sealed tokens replace the credential fields of a Token, each on its own:
//
//	"tgs1." base64url-unpadded( key id [4] | nonce [12] | AES-256-GCM ciphertext+tag )
//
// "tgs1." marks a sealed value and carries the format version. The key id
// is the first 4 bytes of SHA-256("tokengate sealed key id\x00" || key): it
// tells a wrong key from a tampered record, and picks the key that opens a
// value among the store's keys while keys rotate.
//
// The additional authenticated data binds the ciphertext to where it sits:
//
//	"tokengate/sealed/v1\x00" | field ('a' access, 'r' refresh) |
//	uvarint(len(store key)) | store key |
//	Token.MarshalBinary of the set with both credential fields empty
//
// so a value moved to another key or the other field fails to open, and so
// does a set whose clear fields (expiry, refresh expiry, obtained at,
// version, token type, scopes) were edited.
const (
	sealPrefix   = "tgs1."
	sealKeyIDLen = 4
	sealNonceLen = 12
	sealTagLen   = 16
	sealMinBlob  = sealKeyIDLen + sealNonceLen + sealTagLen
	sealAADTag   = "tokengate/sealed/v1\x00"
)

// SealKeySize is the size in bytes of a Sealed key (AES-256).
const SealKeySize = 32

// MaxSealKeys is the most keys a Sealed takes: the key that seals and the
// older keys that still open. Two cover a rotation; a key is retired once
// no set sealed with it is still in use (see NewSealed).
const MaxSealKeys = 4

var sealEncoding = base64.RawURLEncoding

// ErrWrongKey is wrapped by the error Sealed.Get returns when a token was
// sealed with a key that is none of the store's.
var ErrWrongKey = errors.New("tokenstore: token sealed with a different key")

// ErrTampered is wrapped by the error Sealed.Get returns when a sealed
// token does not open with the right key: its ciphertext or clear fields
// were altered or damaged, or it was moved from another key or field.
var ErrTampered = errors.New("tokenstore: sealed token failed authentication (tampered, damaged or moved)")

// ErrNotSealed is wrapped by the error Sealed.Get returns when the inner
// store holds a credential in clear (for example one written before
// encryption was turned on). It is refused rather than used, since anyone
// able to write to the store could plant it.
var ErrNotSealed = errors.New("tokenstore: token in store is not sealed")

// Sealed is a Store that encrypts the credentials of every token set at
// rest in an inner store with AES-256-GCM: the access token and the refresh
// token are both sealed (an access token is a bearer credential too, and
// one rule is simpler to check than two). The other fields (expiries,
// obtained at, version, token type, scopes) stay in clear, authenticated
// with the ciphertexts, so the inner store keeps checking expiry on read
// and removing dead sets exactly as it does without encryption, and a
// sealed set stays a Token: it round-trips through any Store (MemoryStore,
// FileStore, ...).
//
// What sealing does not cover: someone able to write to the inner store can
// still delete a set or one of its credentials, or put back an older set
// sealed for the same key (a rollback, which at worst makes the refresh
// fail with invalid_grant). The clear fields are readable.
//
// Keys rotate: a Sealed has one key that seals and may have older keys
// that only open (NewSealed). Each sealed value names its key by key id, so
// the key that opens it is looked up, not tried. A set read with an older
// key is not rewritten by Get: it is sealed with the current key on its
// next write (Set or CompareAndSet: a refresh, a connect), which keeps
// every write where the caller fences it.
//
// A Sealed is safe for concurrent use if the inner store is.
type Sealed struct {
	inner Store
	keys  []sealKey // keys[0] seals; all open
}

// sealKey is one key of a Sealed, in its expanded form.
type sealKey struct {
	id   [sealKeyIDLen]byte
	aead cipher.AEAD
}

// NewSealed wraps inner so that tokens are sealed with key and opened with
// key or any of the older keys: the keys of a rotation, newest first, so
// that sets sealed before the rotation keep opening and each is resealed
// with key when it is next written. Every key must be exactly 32 bytes
// (AES-256; see ParseKey), no key may be given twice, and there are at
// most MaxSealKeys in all. An older key can be dropped once every set
// sealed with it has been written again or is past its refresh token's
// expiry. The keys are not retained beyond the ciphers' expanded forms.
func NewSealed(inner Store, key []byte, older ...[]byte) (*Sealed, error) {
	if inner == nil {
		return nil, errors.New("tokenstore: sealed: nil inner store")
	}
	all := append([][]byte{key}, older...)
	if len(all) > MaxSealKeys {
		return nil, fmt.Errorf("tokenstore: sealed: %d keys, want at most %d (the key that seals and the older keys that still open)", len(all), MaxSealKeys)
	}
	s := &Sealed{inner: inner, keys: make([]sealKey, len(all))}
	for i, k := range all {
		name := sealKeyName(i, len(all))
		if len(k) != SealKeySize {
			return nil, fmt.Errorf("tokenstore: sealed: %s is %d bytes, want %d (AES-256)", name, len(k), SealKeySize)
		}
		block, err := aes.NewCipher(k)
		if err != nil {
			return nil, fmt.Errorf("tokenstore: sealed: %s: %w", name, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("tokenstore: sealed: %s: %w", name, err)
		}
		s.keys[i] = sealKey{id: sealKeyID(k), aead: aead}
		for j := range i {
			if s.keys[j].id != s.keys[i].id {
				continue
			}
			if subtle.ConstantTimeCompare(all[j], k) == 1 {
				return nil, fmt.Errorf("tokenstore: sealed: %s repeats %s", name, sealKeyName(j, len(all)))
			}
			// One chance in 2^32: the key id could not tell them apart.
			return nil, fmt.Errorf("tokenstore: sealed: %s and %s have the same key id: generate another key", name, sealKeyName(j, len(all)))
		}
	}
	return s, nil
}

// sealKeyName names the i-th of n keys in errors, without its value.
func sealKeyName(i, n int) string {
	if n == 1 {
		return "key"
	}
	return fmt.Sprintf("key %d of %d", i+1, n)
}

// sealKeyID is the key id of key.
func sealKeyID(key []byte) [sealKeyIDLen]byte {
	h := sha256.New()
	h.Write([]byte("tokengate sealed key id\x00"))
	h.Write(key)
	var id [sealKeyIDLen]byte
	copy(id[:], h.Sum(nil))
	return id
}

// ParseKey decodes a Sealed key from configuration: base64 in the standard
// or URL alphabet, padded or not, surrounding white space ignored; it must
// decode to exactly 32 bytes (for example the output of
// "openssl rand -base64 32"). Errors are *KeyError: they describe the
// problem without echoing the key.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, &KeyError{Reason: "is empty"}
	}
	var key []byte
	var err error
	for _, enc := range [...]*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if key, err = enc.DecodeString(s); err == nil {
			break
		}
	}
	if err != nil {
		return nil, &KeyError{Reason: fmt.Sprintf("is not valid base64 (standard or URL alphabet, %d characters)", len(s))}
	}
	if len(key) != SealKeySize {
		return nil, &KeyError{Reason: fmt.Sprintf("decodes to %d bytes, want %d (generate one with: openssl rand -base64 32)", len(key), SealKeySize)}
	}
	return key, nil
}

// KeyError is an encryption key that ParseKey refuses. Neither it nor its
// text holds the key.
type KeyError struct {
	// Reason continues "encryption key": "is empty", "decodes to 9 bytes,
	// want 32 (...)".
	Reason string
}

func (e *KeyError) Error() string { return "tokenstore: encryption key " + e.Reason }

// Get returns the token set stored under key with its credentials opened.
// The inner store's errors pass through unchanged (ErrNotFound when there is
// no usable set: expiry is checked by the inner store on the clear fields).
// A set that does not open is an error wrapping ErrWrongKey, ErrTampered or
// ErrNotSealed; Get leaves it in the inner store.
func (s *Sealed) Get(ctx context.Context, key string) (*Token, error) {
	tok, err := s.inner.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	// One allocation: both values are decoded into buf and opened in
	// place, and the additional data is built in its spare capacity. The
	// clear texts become strings pointing into buf, which nothing writes
	// to after that.
	n := sealEncoding.DecodedLen(max(len(tok.AccessToken)-len(sealPrefix), 0)) +
		sealEncoding.DecodedLen(max(len(tok.RefreshToken)-len(sealPrefix), 0))
	buf := make([]byte, n, n+aadSize(key, tok))
	aad := s.aad(buf[n:], key, tok)
	access, n, err := s.open(buf, aad, 'a', tok.AccessToken)
	if err != nil {
		return nil, err
	}
	refresh, _, err := s.open(buf[n:], aad, 'r', tok.RefreshToken)
	if err != nil {
		return nil, err
	}
	out := *tok // a fresh copy even if the inner store shares its values
	out.AccessToken = bytesString(access)
	out.RefreshToken = bytesString(refresh)
	return &out, nil
}

// Set seals the credentials of tok and stores the result in the inner
// store under key. tok itself is not modified.
func (s *Sealed) Set(ctx context.Context, key string, tok *Token) error {
	if tok == nil {
		return errors.New("tokenstore: sealed set: nil token")
	}
	return s.inner.Set(ctx, key, s.sealToken(key, tok))
}

// sealToken returns a copy of tok, stored under key, with its credentials
// sealed.
func (s *Sealed) sealToken(key string, tok *Token) *Token {
	aad := s.aad(make([]byte, 0, aadSize(key, tok)), key, tok)
	sealed := *tok
	sealed.AccessToken = s.seal(aad, 'a', tok.AccessToken)
	sealed.RefreshToken = s.seal(aad, 'r', tok.RefreshToken)
	return &sealed
}

// Delete removes key from the inner store.
func (s *Sealed) Delete(ctx context.Context, key string) error {
	return s.inner.Delete(ctx, key)
}

// CompareAndSet seals the credentials of tok and stores the result in the
// inner store under key if the set stored there still has Version old (see
// CASStore); versions are clear fields, so the inner store compares them
// as it does without encryption. When the inner store is not a CASStore
// the error wraps errors.ErrUnsupported (callers fall back to Set).
func (s *Sealed) CompareAndSet(ctx context.Context, key string, old uint64, tok *Token) error {
	if tok == nil {
		return errors.New("tokenstore: sealed compare-and-set: nil token")
	}
	c, ok := s.inner.(CASStore)
	if !ok {
		return fmt.Errorf("tokenstore: sealed compare-and-set: the inner store (%T) has no compare-and-set: %w", s.inner, errors.ErrUnsupported)
	}
	return c.CompareAndSet(ctx, key, old, s.sealToken(key, tok))
}

// Lock takes the inner store's lock of key when the inner store is a
// Locker, and returns an error wrapping ErrLockUnsupported otherwise.
func (s *Sealed) Lock(ctx context.Context, key string) (unlock func(), err error) {
	l, ok := s.inner.(Locker)
	if !ok {
		return nil, fmt.Errorf("tokenstore: sealed lock: %w", ErrLockUnsupported)
	}
	return l.Lock(ctx, key)
}

// Unwrap returns the inner store.
func (s *Sealed) Unwrap() Store { return s.inner }

// aadSize is an upper bound of the size of the additional authenticated
// data of tok stored under key.
func aadSize(key string, tok *Token) int {
	n := len(sealAADTag) + 1 + binary.MaxVarintLen64 + len(key) +
		headerSize + 4*binary.MaxVarintLen32 + len(tok.TokenType)
	for _, sc := range tok.Scopes {
		n += len(sc) + 1
	}
	return n
}

// aad appends the additional authenticated data of tok's credentials
// stored under key to b, with a zero byte where the field goes.
func (s *Sealed) aad(b []byte, key string, tok *Token) []byte {
	b = append(b, sealAADTag...)
	b = append(b, 0) // the field, set by seal and open
	b = binary.AppendUvarint(b, uint64(len(key)))
	b = append(b, key...)
	meta := *tok
	meta.AccessToken, meta.RefreshToken = "", ""
	return meta.appendBinary(b)
}

// seal returns the sealed form of the credential v of the given field
// ("" stays "", so the inner store still sees which credentials exist).
// aad's field byte is overwritten.
func (s *Sealed) seal(aad []byte, field byte, v string) string {
	if v == "" {
		return ""
	}
	aad[len(sealAADTag)] = field
	k := &s.keys[0]
	blob := make([]byte, sealKeyIDLen+sealNonceLen, sealMinBlob+len(v))
	copy(blob, k.id[:])
	rand.Read(blob[sealKeyIDLen:]) // never returns an error (Go 1.24+)
	blob = k.aead.Seal(blob, blob[sealKeyIDLen:], []byte(v), aad)
	out := make([]byte, len(sealPrefix)+sealEncoding.EncodedLen(len(blob)))
	copy(out, sealPrefix)
	sealEncoding.Encode(out[len(sealPrefix):], blob)
	return bytesString(out)
}

// open opens the sealed credential v of the given field into buf, which
// must have room for its decoded form, and returns the clear text (a
// subslice of buf) and how much of buf it used. aad's field byte is
// overwritten.
func (s *Sealed) open(buf, aad []byte, field byte, v string) (clear []byte, used int, err error) {
	if v == "" {
		return nil, 0, nil
	}
	what := "access token"
	if field == 'r' {
		what = "refresh token"
	}
	enc, ok := strings.CutPrefix(v, sealPrefix)
	if !ok {
		return nil, 0, fmt.Errorf("%w: %s", ErrNotSealed, what)
	}
	n, err := sealEncoding.Decode(buf, unsafe.Slice(unsafe.StringData(enc), len(enc)))
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %s: bad encoding", ErrTampered, what)
	}
	blob := buf[:n]
	if len(blob) < sealMinBlob {
		return nil, 0, fmt.Errorf("%w: %s: %d bytes, want at least %d", ErrTampered, what, len(blob), sealMinBlob)
	}
	k := s.key(blob[:sealKeyIDLen])
	if k == nil {
		return nil, 0, fmt.Errorf("%w: %s", ErrWrongKey, what)
	}
	aad[len(sealAADTag)] = field
	nonce, ct := blob[sealKeyIDLen:sealKeyIDLen+sealNonceLen], blob[sealKeyIDLen+sealNonceLen:]
	clear, err = k.aead.Open(ct[:0], nonce, ct, aad)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %s", ErrTampered, what)
	}
	return clear, n, nil
}

// key returns the key of s whose key id is id, or nil. Key ids are not
// secret (a hash of the key cut to 4 bytes), nor is which key opened a
// set; ids are compared in constant time all the same.
func (s *Sealed) key(id []byte) *sealKey {
	for i := range s.keys {
		if subtle.ConstantTimeCompare(id, s.keys[i].id[:]) == 1 {
			return &s.keys[i]
		}
	}
	return nil
}

// bytesString is b as a string without a copy; b must never be written
// again.
func bytesString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

var (
	_ Store    = (*Sealed)(nil)
	_ Locker   = (*Sealed)(nil)
	_ CASStore = (*Sealed)(nil)
)
