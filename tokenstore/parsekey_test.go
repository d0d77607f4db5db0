package tokenstore_test

import (
	"encoding/base64"
	"errors"
	"testing"

	"github.com/tasknation/tokengate/tokenstore"
)

// ParseKey's refusals are *KeyError values whose Reason continues
// "encryption key", so that a front end can word them its own way.
func TestParseKey_KeyError(t *testing.T) {
	for _, tt := range []struct{ in, reason string }{
		{"", "is empty"},
		{"not base64!", "is not valid base64 (standard or URL alphabet, 11 characters)"},
		{base64.StdEncoding.EncodeToString([]byte("short-key")), "decodes to 9 bytes, want 32 (generate one with: openssl rand -base64 32)"},
	} {
		_, err := tokenstore.ParseKey(tt.in)
		var ke *tokenstore.KeyError
		if !errors.As(err, &ke) || ke.Reason != tt.reason {
			t.Errorf("ParseKey(%q) = %v, want a *KeyError with reason %q", tt.in, err, tt.reason)
			continue
		}
		if want := "tokenstore: encryption key " + tt.reason; err.Error() != want {
			t.Errorf("text %q, want %q", err, want)
		}
	}
}
