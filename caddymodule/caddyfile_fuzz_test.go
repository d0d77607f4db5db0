package caddymodule

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// fuzzSecretDirectives are the subdirectives whose value is a secret:
// FuzzCaddyfile writes one of them, first in the block, with a fuzzed
// line of arguments.
var fuzzSecretDirectives = [...]string{"client_secret", "redis_password", "encryption_key", "redis_sentinel_password"}

// FuzzCaddyfile parses arbitrary oauth2_token blocks with
// UnmarshalCaddyfile: it must not panic, a block that parses must hold
// the secret it was given, and an error must never repeat the value (or
// an extra argument) of a secret subdirective. Seeds: the oauth2_token
// blocks of every adapt fixture and example Caddyfile.
//
// The block is
//
//	oauth2_token {
//		<secret subdirective> <secret>
//		<block>
//	}
//
// and an error that holds a secret token is compared with the error for
// the same block with the secret's letters and digits rotated: a fixed
// word of the message stays, an echo changes with the secret.
func FuzzCaddyfile(f *testing.F) {
	fixtures, _ := filepath.Glob("../caddyfile_test/caddyfile_adapt/*.caddyfiletest")
	examples, _ := filepath.Glob("../examples/*Caddyfile")
	more, _ := filepath.Glob("../examples/*/Caddyfile")
	n := 0
	for _, path := range append(append(fixtures, examples...), more...) {
		b, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		text, _, _ := strings.Cut(string(b), "\n----------\n")
		for _, block := range oauth2TokenBlocks(text) {
			which, secret, rest := splitSecret(block)
			f.Add(which, secret, rest)
			n++
		}
	}
	if n == 0 {
		f.Fatal("no oauth2_token block found in the adapt fixtures")
	}
	for _, s := range []struct {
		which         uint8
		secret, block string
	}{
		{0, "s3cr3t-XYZ", "client_id app"},
		{0, "s3cr3t-XYZ extra-s3cr3t-ABC", "client_id app"},
		{0, "s3cr3t-XYZ {", "client_id app\n}"},
		{0, `"s3cr3t XYZ"`, "client_id app\nscopes"},
		{0, "`s3cr3t XYZ`", "client_id app\nprovider s3cr3t"},
		{0, "s3cr3t-{XYZ}", "client_id app\nstore file"},
		{0, `s3cr3t-\{XYZ\}`, "client_id app\ngrant authorization_code\nuser {http.auth.user.id}"},
		{0, "{env.TN_SECRET}", "client_id app\ntoken_url http://example.com/token"},
		{0, "<<EOF\ns3cr3t-XYZ\nEOF", "client_id app"},
		{0, "", "client_id app"},
		{1, "r3d1s-PASSWORD", "client_id app\nclient_secret x\nstore redis localhost:6379"},
		{1, "r3d1s-PASSWORD extra-PASSWORD", "client_id app\nclient_secret x\nstore redis localhost:6379"},
		{2, "bm90LWEta2V5LW5vdC1hLWtleS1ub3QtYS1rZXktbm8", "client_id app\nclient_secret x\nstore file /tmp/x"},
		{2, "c2VjcmV0LWtleS1zZWNyZXQta2V5LXNlY3JldC1rZXk=", "client_id app\nclient_secret x\nstore file /tmp/x"},
		{2, "c2VjcmV0LWtleS1zZWNyZXQta2V5LXNlY3JldC1rZXk= {env.OLD_KEY}", "client_id app\nclient_secret x\nstore file /tmp/x"},
		{2, "{env.NEW_KEY} bm90LWEta2V5LW5vdC1hLWtleS1ub3QtYS1rZXktbm8", "client_id app\nclient_secret x\nstore file /tmp/x"},
		{2, "{env.K} {env.K}", "client_id app\nclient_secret x\nstore file /tmp/x"},
		{3, "s3nt1nel-PASSWORD", "client_id app\nclient_secret x\nstore redis\nredis_sentinel m 127.0.0.1:26379"},
		{3, "s3nt1nel-PASSWORD", "client_id app\nclient_secret x\nstore redis 127.0.0.1:6379"},
	} {
		f.Add(s.which, s.secret, s.block)
	}

	f.Fuzz(func(t *testing.T, which uint8, secret, block string) {
		sub := fuzzSecretDirectives[int(which)%len(fuzzSecretDirectives)]
		tokens, err := caddyfile.Tokenize([]byte(fuzzBlock(sub, secret, block)), "Caddyfile")
		if err != nil {
			return // not a Caddyfile: the lexer's business
		}
		h := new(Handler)
		err = h.UnmarshalCaddyfile(caddyfile.NewDispenser(tokens))

		// The tokens on the secret line after the subdirective.
		var values []string
		for _, tok := range tokens[3:] {
			if tok.Line != 2 {
				break
			}
			values = append(values, tok.Text)
		}
		if err == nil {
			got := map[string][]string{"client_secret": {h.ClientSecret}}
			if st := h.Store; st != nil {
				got["encryption_key"] = st.EncryptionKeys
				if rc := st.Redis; rc != nil {
					got["redis_password"] = []string{rc.Password}
					if rc.Sentinel != nil {
						got["redis_sentinel_password"] = []string{rc.Sentinel.Password}
					}
				}
			}
			if !slices.Equal(got[sub], values) {
				t.Fatalf("parsed: %s is %q, the block gave it %q", sub, got, values)
			}
			return
		}

		msg := err.Error()
		var other string // the error for the rotated secret, when needed
		for _, v := range values {
			if len(v) < 6 || !strings.Contains(msg, v) {
				continue
			}
			if other == "" {
				rotTokens, rerr := caddyfile.Tokenize([]byte(fuzzBlock(sub, rotate(secret), block)), "Caddyfile")
				if rerr != nil || !sameShape(tokens, rotTokens) {
					return // the rotation changed how the block lexes
				}
				rerr = new(Handler).UnmarshalCaddyfile(caddyfile.NewDispenser(rotTokens))
				if rerr == nil {
					t.Fatalf("the block fails (%v) but not with the secret rotated", err)
				}
				other = rerr.Error()
			}
			if !strings.Contains(other, v) {
				t.Fatalf("the error repeats the %s value %q:\n%s\n(rotated: %s)", sub, v, msg, other)
			}
		}
	})
}

// fuzzBlock is the Caddyfile text of FuzzCaddyfile: sub and its
// arguments secret on line 2, then block.
func fuzzBlock(sub, secret, block string) string {
	return "oauth2_token {\n" + sub + " " + secret + "\n" + block + "\n}\n"
}

// rotate turns letters and digits into others of their kind (ROT13, and
// digits by 5), leaving every character the lexer reads alone.
func rotate(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z':
			return 'a' + (r-'a'+13)%26
		case r >= 'A' && r <= 'Z':
			return 'A' + (r-'A'+13)%26
		case r >= '0' && r <= '9':
			return '0' + (r-'0'+5)%10
		}
		return r
	}, s)
}

// sameShape reports whether b lexes as a did with only the secret line
// (line 2) rotated.
func sameShape(a, b []caddyfile.Token) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Line != b[i].Line {
			return false
		}
		want := a[i].Text
		if i >= 3 && a[i].Line == 2 {
			want = rotate(want)
		}
		if b[i].Text != want {
			return false
		}
	}
	return true
}

// oauth2TokenBlocks returns the lines inside each oauth2_token block of a
// Caddyfile.
func oauth2TokenBlocks(text string) []string {
	tokens, err := caddyfile.Tokenize([]byte(text), "Caddyfile")
	if err != nil {
		return nil
	}
	lines := strings.Split(text, "\n")
	var blocks []string
	for i := 0; i < len(tokens); i++ {
		if tokens[i].Text != "oauth2_token" {
			continue
		}
		j := i + 1
		for j < len(tokens) && tokens[j].Line == tokens[i].Line && tokens[j].Text != "{" {
			j++
		}
		if j == len(tokens) || tokens[j].Text != "{" {
			continue // a block-less oauth2_token
		}
		depth, k := 0, j
		for ; k < len(tokens); k++ {
			switch tokens[k].Text {
			case "{":
				depth++
			case "}":
				depth--
			}
			if depth == 0 {
				break
			}
		}
		if k == len(tokens) {
			continue
		}
		// Lines are 1-based: the block is strictly between the line of
		// its { and the line of its }.
		blocks = append(blocks, strings.Join(lines[tokens[j].Line:tokens[k].Line-1], "\n"))
		i = k
	}
	return blocks
}

// splitSecret takes the first secret subdirective line out of block.
func splitSecret(block string) (which uint8, secret, rest string) {
	lines := strings.Split(block, "\n")
	for i, l := range lines {
		name, args, _ := strings.Cut(strings.TrimSpace(l), " ")
		for w, sub := range fuzzSecretDirectives {
			if name == sub {
				return uint8(w), strings.TrimSpace(args), strings.Join(append(lines[:i:i], lines[i+1:]...), "\n")
			}
		}
	}
	return 0, "", block
}
