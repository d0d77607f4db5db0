package tokenstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"
	"unsafe"
)

// The stored form of a Token is a small binary record, cheap to decode on
// the hot path (no reflection, one string allocation for all text):
//
//	byte     format (1)
//	int64    expiry, Unix ns (0 = zero time)
//	int64    refresh expiry, Unix ns (0 = zero time)
//	int64    obtained at, Unix ns (0 = zero time)
//	uint64   version
//	int64    connected at, Unix ns (format 2 only)
//	uvarint  len(access) len(type) len(refresh) len(scopes)
//	bytes    access type refresh scopes (scopes joined by one space)
//
// A set without ConnectedAt is written in format 1, byte for byte as
// before format 2 existed: the additional data of a Sealed set is its
// encoding, so records sealed before stay openable.
const (
	formatV1     = 1
	formatV2     = 2
	headerSizeV1 = 1 + 8*4
	// headerSize is the largest header, for size estimates.
	headerSize = headerSizeV1 + 8
)

// errCorrupt is wrapped by every decoding failure.
var errCorrupt = errors.New("tokenstore: corrupt token record")

// MarshalBinary encodes t in the compact stored form.
func (t *Token) MarshalBinary() ([]byte, error) {
	return t.appendBinary(nil), nil
}

func (t *Token) appendBinary(b []byte) []byte {
	scopes := strings.Join(t.Scopes, " ")
	n := headerSize + 4*binary.MaxVarintLen32 + len(t.AccessToken) + len(t.TokenType) + len(t.RefreshToken) + len(scopes)
	if cap(b)-len(b) < n {
		b = append(make([]byte, 0, len(b)+n), b...)
	}
	format := byte(formatV1)
	if !t.ConnectedAt.IsZero() {
		format = formatV2
	}
	b = append(b, format)
	b = binary.BigEndian.AppendUint64(b, uint64(unixNano(t.Expiry)))
	b = binary.BigEndian.AppendUint64(b, uint64(unixNano(t.RefreshExpiry)))
	b = binary.BigEndian.AppendUint64(b, uint64(unixNano(t.ObtainedAt)))
	b = binary.BigEndian.AppendUint64(b, t.Version)
	if format == formatV2 {
		b = binary.BigEndian.AppendUint64(b, uint64(unixNano(t.ConnectedAt)))
	}
	for _, s := range [...]string{t.AccessToken, t.TokenType, t.RefreshToken, scopes} {
		b = binary.AppendUvarint(b, uint64(len(s)))
	}
	b = append(b, t.AccessToken...)
	b = append(b, t.TokenType...)
	b = append(b, t.RefreshToken...)
	b = append(b, scopes...)
	return b
}

// UnmarshalBinary decodes the stored form. A record that is truncated, has
// trailing bytes or an unknown format is an error, never a panic.
func (t *Token) UnmarshalBinary(b []byte) error {
	r, err := parse(b)
	if err != nil {
		return err
	}
	d := decode(b, &r, false)
	*t = d.Token
	t.Scopes = append([]string(nil), d.Token.Scopes...)
	return nil
}

// decoded carries a Token and room for its scopes, so that a decode costs
// one allocation for the struct and one for the text.
type decoded struct {
	Token
	scopes [4]string
}

// record is a parsed stored token before any allocation: enough to reject
// an expired entry without copying it, and to build the Token after.
type record struct {
	expiry, refreshExpiry int64
	connectedAt           int64     // 0 in format 1
	lens                  [4]uint64 // access, type, refresh, scopes
	text                  []byte
}

// parse reads the header and lengths of a stored token. A record that is
// truncated, has trailing bytes or an unknown format is an error.
func parse(b []byte) (record, error) {
	if len(b) < headerSizeV1 {
		return record{}, fmt.Errorf("%w: %d bytes, want at least %d", errCorrupt, len(b), headerSizeV1)
	}
	size := headerSizeV1
	switch b[0] {
	case formatV1:
	case formatV2:
		size = headerSize
		if len(b) < size {
			return record{}, fmt.Errorf("%w: %d bytes, want at least %d", errCorrupt, len(b), size)
		}
	default:
		return record{}, fmt.Errorf("%w: unknown format %d", errCorrupt, b[0])
	}
	r := record{
		expiry:        int64(binary.BigEndian.Uint64(b[1:])),
		refreshExpiry: int64(binary.BigEndian.Uint64(b[9:])),
	}
	if b[0] == formatV2 {
		r.connectedAt = int64(binary.BigEndian.Uint64(b[headerSizeV1:]))
		if r.connectedAt == 0 {
			// Format 2 exists to carry it: one encoding per set.
			return record{}, fmt.Errorf("%w: format 2 without a connect time", errCorrupt)
		}
	}
	rest := b[size:]
	total := uint64(0)
	for i := range r.lens {
		n, k := binary.Uvarint(rest)
		if k <= 0 || k != uvarintLen(n) { // one encoding per record
			return record{}, fmt.Errorf("%w: bad length field", errCorrupt)
		}
		if n > uint64(len(b)) || total+n > uint64(len(b)) {
			return record{}, fmt.Errorf("%w: length %d exceeds record", errCorrupt, n)
		}
		r.lens[i] = n
		total += n
		rest = rest[k:]
	}
	if total != uint64(len(rest)) {
		return record{}, fmt.Errorf("%w: %d bytes of text, want %d", errCorrupt, len(rest), total)
	}
	r.text = rest
	return r, nil
}

// recordVersion is the version of the stored token b, which parse
// accepted.
func recordVersion(b []byte) uint64 { return binary.BigEndian.Uint64(b[1+3*8:]) }

// usable is Token.Usable on the raw record: an access token counts only
// when there is one.
func (r *record) usable(now time.Time) bool {
	ns := now.UnixNano()
	if r.lens[0] > 0 && r.expiry != 0 && ns < r.expiry {
		return true
	}
	return r.lens[2] > 0 && (r.refreshExpiry == 0 || ns < r.refreshExpiry)
}

// decode builds the Token of a parsed record b. When owned is true, b
// belongs to the caller alone and is never written again (a copy bigcache
// made for this read), so the strings may point into it instead of into a
// second copy.
func decode(b []byte, r *record, owned bool) *decoded {
	var text string
	if owned && len(r.text) > 0 {
		text = unsafe.String(&r.text[0], len(r.text))
	} else {
		text = string(r.text)
	}
	d := &decoded{}
	t := &d.Token
	t.Expiry = fromUnixNano(r.expiry)
	t.RefreshExpiry = fromUnixNano(r.refreshExpiry)
	t.ObtainedAt = fromUnixNano(int64(binary.BigEndian.Uint64(b[17:])))
	t.Version = binary.BigEndian.Uint64(b[25:])
	t.ConnectedAt = fromUnixNano(r.connectedAt)
	off := uint64(0)
	field := func(i int) string {
		s := text[off : off+r.lens[i]]
		off += r.lens[i]
		return s
	}
	t.AccessToken = field(0)
	t.TokenType = field(1)
	t.RefreshToken = field(2)
	if scopes := field(3); scopes != "" {
		n := strings.Count(scopes, " ") + 1
		var list []string
		if n <= len(d.scopes) {
			list = d.scopes[:0:n]
		} else {
			list = make([]string, 0, n)
		}
		for {
			i := strings.IndexByte(scopes, ' ')
			if i < 0 {
				break
			}
			list = append(list, scopes[:i])
			scopes = scopes[i+1:]
		}
		t.Scopes = append(list, scopes)
	}
	return d
}

// uvarintLen is the length of the shortest uvarint encoding of n.
func uvarintLen(n uint64) int {
	k := 1
	for ; n >= 0x80; n >>= 7 {
		k++
	}
	return k
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}
