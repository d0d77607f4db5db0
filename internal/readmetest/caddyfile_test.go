package readmetest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/tasknation/tokengate/caddymodule"
)

// How a ```caddyfile block of README.md is checked: every block is as
// `caddy fmt` writes it (caddyfile.Format leaves it unchanged), and
//
//   - a block opened with "```caddyfile" is a whole Caddyfile: it adapts,
//     as `caddy adapt` does, with this module and Caddy's standard ones;
//   - "```caddyfile site" is directives of a site block: they adapt inside
//     one (http://127.0.0.1:8080 { ... });
//   - "```caddyfile fragment" is syntax, or an excerpt (subdirectives of
//     an oauth2_token block, a config that needs another plugin): it is
//     only formatted.

// caddyBlock is one ```caddyfile block.
type caddyBlock struct {
	line int    // README.md line of its first line
	mode string // "", "site" or "fragment"
	text string
}

// caddyBlocks returns the ```caddyfile blocks of a Markdown text.
func caddyBlocks(md []byte) ([]caddyBlock, error) {
	fs, err := fences(md, nil)
	if err != nil {
		return nil, err
	}
	var out []caddyBlock
	for _, f := range fs {
		lang, mode := f.lang()
		if lang != "caddyfile" {
			continue
		}
		switch mode {
		case "", "site", "fragment":
		default:
			return nil, fmt.Errorf("line %d: ```caddyfile %s: want no word, site or fragment", f.line-1, mode)
		}
		out = append(out, caddyBlock{line: f.line, mode: mode, text: f.text})
	}
	return out, nil
}

// checkCaddyBlock returns what is wrong with b: a difference from
// caddyfile.Format's output, or an adapt error.
func checkCaddyBlock(b caddyBlock) error {
	if got := string(caddyfile.Format([]byte(b.text))); got != b.text {
		return fmt.Errorf("not as `caddy fmt` writes it; it writes:\n%s", got)
	}
	cfg := b.text
	switch b.mode {
	case "fragment":
		return nil
	case "site":
		cfg = "http://127.0.0.1:8080 {\n" + b.text + "}\n"
	}
	if _, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cfg), nil); err != nil {
		return fmt.Errorf("does not adapt: %v", err)
	}
	return nil
}

func TestReadmeCaddyfileSnippets(t *testing.T) {
	md, err := os.ReadFile(filepath.Join(moduleRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks, err := caddyBlocks(md)
	if err != nil {
		t.Fatalf("README.md: %v", err)
	}
	if len(blocks) < 4 {
		t.Fatalf("found %d ```caddyfile blocks in README.md, want at least 4: is the parser broken?", len(blocks))
	}
	adapted := 0
	for _, b := range blocks {
		if err := checkCaddyBlock(b); err != nil {
			t.Errorf("README.md:%d: the ```caddyfile %s block %v", b.line, b.mode, err)
		}
		if b.mode != "fragment" {
			adapted++
		}
	}
	t.Logf("%d ```caddyfile blocks formatted, %d of them adapted", len(blocks), adapted)
}

// The checks can fail: a block indented with spaces, and a whole
// Caddyfile with an unknown subdirective.
func TestBrokenCaddyfileSnippetFails(t *testing.T) {
	md := []byte("# x\n\n```caddyfile fragment\nfoo {\n    bar\n}\n```\n\n" +
		"```caddyfile\nhttp://127.0.0.1:8080 {\n\toauth2_token {\n\t\tclient_idd x\n\t}\n}\n```\n\n" +
		"```caddyfile site\nrespond 200\n```\n")
	blocks, err := caddyBlocks(md)
	if err != nil || len(blocks) != 3 {
		t.Fatalf("caddyBlocks: %d blocks, %v; want 3", len(blocks), err)
	}
	if err := checkCaddyBlock(blocks[0]); err == nil || !strings.Contains(err.Error(), "caddy fmt") {
		t.Errorf("a block indented with spaces: %v; want a formatting error", err)
	}
	if err := checkCaddyBlock(blocks[1]); err == nil || !strings.Contains(err.Error(), "client_idd") {
		t.Errorf("an unknown subdirective: %v; want an adapt error naming it", err)
	}
	if err := checkCaddyBlock(blocks[2]); err != nil {
		t.Errorf("a site directive: %v; want none", err)
	}
}
