package readmetest

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// How a ```go block of README.md is built:
//
//   - a block with a package clause is a file of its own package;
//   - a block that starts with an import or a top-level declaration
//     (func, type, var, const) is a file of package main;
//   - any other block is a list of statements: the body of a function in
//     a package that imports the module's packages and the standard ones
//     the README uses, and declares the names in prelude (proxy, addr,
//     cfg, ...), which fragments may use without declaring them;
//   - a block opened with "```go nobuild" is not built (pseudocode).
//
// Every snippet is built by one `go build` over an -overlay, so nothing
// is written into the source tree; errors point at README.md lines
// (//line directives).

// prelude is the head of the fragments' file.
const prelude = `package fragments

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"time"

	"golang.org/x/oauth2"

	"github.com/tasknation/tokengate/middleware"
	"github.com/tasknation/tokengate/middleware/tasknationtest"
	"github.com/tasknation/tokengate/tokenstore"
)

// Names README fragments use without declaring them.
var (
	ctx             = context.Background()
	addr            string                            // the gateway's listen address
	proxy           http.Handler                      // the handler in front of the API, usually an httputil.ReverseProxy
	cfg             middleware.Config                 // a Config being filled in
	sealedFileStore tokenstore.Store                  // tokenstore.NewSealed over a FileStore
	yourLogin       func(http.Handler) http.Handler   // your own authentication middleware
	session         interface{ UserID(*http.Request) string } // your own session lookup
)

// The imports, used whether or not a fragment uses them.
var (
	_ = errors.New
	_ = fmt.Sprint
	_ = log.Fatal
	_ = httputil.NewSingleHostReverseProxy
	_ = url.Parse
	_ = os.Getenv
	_ = time.Second
	_ = oauth2.NewClient
	_ = middleware.New
	_ = tasknationtest.NewServer
)
`

// snippet is one ```go block.
type snippet struct {
	line int    // README.md line of its first line of code
	code string // its text
}

// goBlocks returns the ```go blocks of a Markdown text that are built, and
// how many were marked nobuild.
func goBlocks(md []byte) (built []snippet, skipped int, err error) {
	fs, err := fences(md, nil)
	if err != nil {
		return nil, 0, err
	}
	for _, f := range fs {
		switch lang, mode := f.lang(); {
		case lang != "go":
		case mode == "nobuild":
			skipped++
		default:
			built = append(built, snippet{line: f.line, code: f.text})
		}
	}
	return built, skipped, nil
}

// kind is "package", "file" or "fragment" (see the conventions above).
func kind(code string) string {
	for _, l := range strings.Split(code, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "//") {
			continue
		}
		switch {
		case strings.HasPrefix(l, "package "):
			return "package"
		case strings.HasPrefix(l, "import"), strings.HasPrefix(l, "func "), strings.HasPrefix(l, "type "),
			strings.HasPrefix(l, "var "), strings.HasPrefix(l, "const "):
			return "file"
		}
		return "fragment"
	}
	return "fragment"
}

// buildSnippets builds the snippets of the Markdown file readme (named
// name in errors) as packages under the module at root, and returns the
// go command's output on failure.
func buildSnippets(t *testing.T, goCmd, root, readme, name string, snippets []snippet) error {
	t.Helper()
	tmp := t.TempDir()
	const pkgDir = "internal/readmetest/testdata/snippets" // never on disk: only in the overlay
	overlay := map[string]string{}
	var pkgs []string
	add := func(pkg, file, src string) {
		backing := filepath.Join(tmp, strings.ReplaceAll(pkg, "/", "_")+"_"+file)
		if err := os.WriteFile(backing, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		overlay[filepath.Join(root, pkgDir, pkg, file)] = backing
	}
	var frag strings.Builder
	frag.WriteString(prelude)
	for i, s := range snippets {
		lineDirective := fmt.Sprintf("//line %s:%d\n", name, s.line)
		switch kind(s.code) {
		case "package":
			pkg := fmt.Sprintf("p%d", i)
			add(pkg, "snippet.go", lineDirective+s.code)
			pkgs = append(pkgs, "./"+pkgDir+"/"+pkg)
		case "file":
			pkg := fmt.Sprintf("p%d", i)
			// The package clause on the directive's line keeps the
			// block's lines where they are.
			add(pkg, "snippet.go", "package main\n"+lineDirective+s.code)
			pkgs = append(pkgs, "./"+pkgDir+"/"+pkg)
		default:
			fmt.Fprintf(&frag, "\nfunc snippet%d() {\n%s%s}\n", i, lineDirective, s.code)
		}
	}
	add("fragments", "fragments.go", frag.String())
	pkgs = append(pkgs, "./"+pkgDir+"/fragments")

	raw, err := json.Marshal(map[string]any{"Replace": overlay})
	if err != nil {
		t.Fatal(err)
	}
	overlayFile := filepath.Join(tmp, "overlay.json")
	if err := os.WriteFile(overlayFile, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	// One go build (type check, compile, link the mains); go vet would
	// need the packages' directories on disk.
	args := append([]string{"build", "-overlay=" + overlayFile, "-o", os.DevNull}, pkgs...)
	cmd := exec.Command(goCmd, args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=readonly", "GOPROXY=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build of the %s snippets: %v\n%s", name, err, out)
	}
	return nil
}

// moduleRoot is the directory of go.mod, two levels up.
func moduleRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root: %v", err)
	}
	return root
}

func goCommand(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("go")
	if err != nil {
		t.Skip("the go command is not on PATH: README snippets not built (CI has it)")
	}
	return p
}

func TestReadmeGoSnippetsBuild(t *testing.T) {
	goCmd := goCommand(t)
	root := moduleRoot(t)
	readme := filepath.Join(root, "README.md")
	md, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	snippets, skipped, err := goBlocks(md)
	if err != nil {
		t.Fatalf("README.md: %v", err)
	}
	if len(snippets) < 4 {
		t.Fatalf("found %d ```go blocks to build in README.md, want at least 4: is the parser broken?", len(snippets))
	}
	t.Logf("building %d README snippets (%d marked nobuild)", len(snippets), skipped)
	if err := buildSnippets(t, goCmd, root, readme, "README.md", snippets); err != nil {
		t.Fatal(err)
	}
}

// The check can fail: a snippet that does not compile is reported at its
// README line.
func TestBrokenSnippetFails(t *testing.T) {
	goCmd := goCommand(t)
	root := moduleRoot(t)
	md := []byte("# x\n\n```go\ngate, err := middleware.New(middleware.Config{})\n```\n\n```go nobuild\nnot Go\n```\n")
	snippets, skipped, err := goBlocks(md)
	if err != nil || len(snippets) != 1 || skipped != 1 {
		t.Fatalf("goBlocks: %d built, %d skipped, %v; want 1 and 1", len(snippets), skipped, err)
	}
	err = buildSnippets(t, goCmd, root, "BROKEN.md", "BROKEN.md", snippets)
	if err == nil || !strings.Contains(err.Error(), "BROKEN.md:4") || !strings.Contains(err.Error(), "declared and not used") {
		t.Fatalf("building a snippet with unused variables: %v; want an error at BROKEN.md:4", err)
	}
}

func TestKind(t *testing.T) {
	for code, want := range map[string]string{
		"package main\n\nfunc main() {}\n":      "package",
		"// Comment\nimport \"fmt\"\n":          "file",
		"func main() {}\n":                      "file",
		"gate, err := middleware.New(cfg)\n":    "fragment",
		"srv := tasknationtest.NewServer(o)\n":  "fragment",
		"\n// a comment first\nx := 1\n_ = x\n": "fragment",
	} {
		if got := kind(code); got != want {
			t.Errorf("kind(%q) = %s, want %s", code, got, want)
		}
	}
}
