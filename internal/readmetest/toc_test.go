package readmetest

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode"
)

var update = flag.Bool("update", false, "rewrite README.md's table of contents")

// The table of contents of README.md stands between the lines <!-- toc -->
// and <!-- /toc -->: a link to every ## and ### heading (outside code
// blocks), with GitHub's anchors. `go test ./internal/readmetest -run TOC
// -update` rewrites it.
const (
	tocStart = "<!-- toc -->\n"
	tocEnd   = "<!-- /toc -->\n"
)

type heading struct {
	level int // 2 or 3
	text  string
}

// headings returns the ## and ### headings of a Markdown text, and the
// anchors of all its headings.
func headings(md []byte) ([]heading, map[string]bool, error) {
	var out []heading
	anchors := map[string]bool{}
	_, err := fences(md, func(line string) {
		switch {
		case strings.HasPrefix(line, "### "):
			out = append(out, heading{3, strings.TrimPrefix(line, "### ")})
		case strings.HasPrefix(line, "## "):
			out = append(out, heading{2, strings.TrimPrefix(line, "## ")})
		}
		if strings.HasPrefix(line, "#") {
			anchors[anchor(strings.TrimSpace(strings.TrimLeft(line, "#")))] = true
		}
	})
	return out, anchors, err
}

// anchor is GitHub's anchor of a heading: lower case, without what is
// neither a letter, a digit, a space, a hyphen nor an underscore, spaces
// made hyphens.
func anchor(text string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(text) {
		switch {
		case unicode.IsLetter(r), unicode.IsDigit(r), r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

// toc is the table of contents of hs.
func toc(hs []heading) string {
	var b strings.Builder
	seen := map[string]int{}
	for _, h := range hs {
		a := anchor(h.text)
		if n := seen[a]; n > 0 {
			seen[a]++
			a = fmt.Sprintf("%s-%d", a, n)
		} else {
			seen[a] = 1
		}
		fmt.Fprintf(&b, "%s- [%s](#%s)\n", strings.Repeat("  ", h.level-2), h.text, a)
	}
	return b.String()
}

func TestReadmeTOC(t *testing.T) {
	path := filepath.Join(moduleRoot(t), "README.md")
	md, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	i, j := bytes.Index(md, []byte(tocStart)), bytes.Index(md, []byte(tocEnd))
	if i < 0 || j < i {
		t.Fatalf("README.md has no %q ... %q lines", strings.TrimSpace(tocStart), strings.TrimSpace(tocEnd))
	}
	hs, _, err := headings(md)
	if err != nil {
		t.Fatalf("README.md: %v", err)
	}
	if len(hs) < 10 {
		t.Fatalf("found %d ## and ### headings in README.md: is the parser broken?", len(hs))
	}
	want := toc(hs)
	got := string(md[i+len(tocStart) : j])
	if got == want {
		return
	}
	if *update {
		out := append(append(append([]byte{}, md[:i+len(tocStart)]...), want...), md[j:]...)
		if err := os.WriteFile(path, out, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("README.md's table of contents is not its headings' (go test ./internal/readmetest -run TOC -update rewrites it); want:\n%s", want)
}

func TestAnchor(t *testing.T) {
	for text, want := range map[string]string{
		"Caddy module: `oauth2_token`":                       "caddy-module-oauth2_token",
		"x/oauth2 interop: `TokenSource`":                    "xoauth2-interop-tokensource",
		"User context (authorization_code)":                  "user-context-authorization_code",
		"When the API rejects a token (upstream 401)":        "when-the-api-rejects-a-token-upstream-401",
		"Testing your own code: `middleware/tasknationtest`": "testing-your-own-code-middlewaretasknationtest",
	} {
		if got := anchor(text); got != want {
			t.Errorf("anchor(%q) = %q, want %q", text, got, want)
		}
	}
}

// Every link to a heading of README.md ([...](#anchor)) leads to one.
func TestReadmeAnchorsExist(t *testing.T) {
	md, err := os.ReadFile(filepath.Join(moduleRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, have, err := headings(md)
	if err != nil {
		t.Fatalf("README.md: %v", err)
	}
	links := 0
	for rest := string(md); ; {
		i := strings.Index(rest, "](#")
		if i < 0 {
			break
		}
		rest = rest[i+3:]
		a, _, _ := strings.Cut(rest, ")")
		links++
		if !have[a] {
			t.Errorf("README.md links to #%s, which is no heading's anchor", a)
		}
	}
	if links < 10 {
		t.Fatalf("found %d links to headings in README.md: is the parser broken?", links)
	}
}
