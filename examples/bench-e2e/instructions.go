package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The instruction count of a request (-instructions N): Caddy runs under
// valgrind's callgrind, which counts the instructions its process executes
// (every thread), whatever else the machine runs; each site gets N
// requests in a row from one connection, between two dumps of the
// counters (callgrind_control -d zeroes them), in rotating order over
// -rounds rounds. Instructions are not time (no cache misses, no
// contention between cores, no garbage collection: see callgrindWrap),
// but unlike the CPU time of a loaded run they come out the same twice:
// the figure to compare what a handler costs Caddy per request.

// callgrindOut is the name callgrind dumps to in dir: <name>.<n>, n from 1.
const callgrindOut = "callgrind.out"

// callgrindWrap is the command line that runs Caddy under callgrind, and
// the environment it needs: Go's asynchronous preemption signals upset
// valgrind, and one P keeps the scheduler's share of the count steady.
// GOGC=off leaves the collector out of the count: a cycle falls into
// whichever run it falls into and adds a third to that run's figure,
// which would swamp a difference of a few percent; what allocating costs
// the request path itself (mallocgc) is still counted.
func callgrindWrap(dir string) (argv, env []string, err error) {
	for _, bin := range []string{"valgrind", "callgrind_control"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, nil, fmt.Errorf("-instructions needs %s (Debian's valgrind package): %w", bin, err)
		}
	}
	return []string{"valgrind", "--tool=callgrind", "--callgrind-out-file=" + filepath.Join(dir, callgrindOut)},
		[]string{"GODEBUG=asyncpreemptoff=1", "GOMAXPROCS=1", "GOGC=off"}, nil
}

// counter dumps and zeroes the counters of the callgrind run of pid.
type counter struct {
	pid   int
	dir   string
	dumps int
}

// dump writes the counts since the last dump and returns their total.
func (c *counter) dump(ctx context.Context, label string) (int64, error) {
	out, err := exec.CommandContext(ctx, "callgrind_control", "--dump="+label, strconv.Itoa(c.pid)).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("callgrind_control: %w: %s", err, out)
	}
	c.dumps++
	f, err := os.Open(filepath.Join(c.dir, fmt.Sprintf("%s.%d", callgrindOut, c.dumps)))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return callgrindTotal(f)
}

// callgrindTotal reads the "totals:" (or "summary:") line of a callgrind
// dump: the first event, instructions.
func callgrindTotal(r io.Reader) (int64, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		for _, p := range []string{"totals:", "summary:"} {
			if rest, ok := strings.CutPrefix(line, p); ok {
				f := strings.Fields(rest)
				if len(f) == 0 {
					return 0, errors.New("callgrind dump: an empty " + p + " line")
				}
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("callgrind dump: no totals line")
}

// irResult is one measured run: instructions per request of a site.
type irResult struct {
	round int
	site  *site
	ir    float64
}

// measureInstructions runs the rounds of instruction counts and reports
// them.
func measureInstructions(ctx context.Context, out io.Writer, o options, cnt *counter, sites []*site, base *site, pairs [][2]*site, users []string, up *upstream) error {
	tr := &http.Transport{MaxIdleConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: time.Minute}
	next := 0
	send := func(s *site, n int) error {
		up.reset()
		for range n {
			a, err := fetch(ctx, client, s.url, users[next%len(users)], nil)
			next++
			if err != nil {
				return fmt.Errorf("site %s: %w", s.name, err)
			}
			if a.status != http.StatusOK {
				return fmt.Errorf("site %s answered %d: %s", s.name, a.status, a.body)
			}
		}
		if seen := up.counts(); seen[s.kind] != int64(n) || seen.total() != int64(n) {
			return fmt.Errorf("site %s: the upstream saw %v, want %d %s tokens", s.name, seen, n, s.kind)
		}
		return nil
	}
	for _, s := range sites { // warm: pools, connections, the hot set
		if err := send(s, max(o.instructions/4, len(users))); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	var results []irResult
	const row = "%5s  %4s  %14s\n"
	fmt.Fprintf(out, row, "round", "site", "instr/request")
	for r := 1; r <= o.rounds; r++ {
		for _, s := range roundOrder(sites, r) {
			if _, err := cnt.dump(ctx, "idle"); err != nil {
				return err
			}
			if err := send(s, o.instructions); err != nil {
				return fmt.Errorf("round %d: %w", r, err)
			}
			total, err := cnt.dump(ctx, fmt.Sprintf("round-%d-%s", r, s.name))
			if err != nil {
				return err
			}
			res := irResult{round: r, site: s, ir: float64(total) / float64(o.instructions)}
			results = append(results, res)
			fmt.Fprintf(out, row, strconv.Itoa(r), s.name, fmt.Sprintf("%.0f", res.ir))
		}
	}
	reportInstructions(out, results, base, sites, pairs)
	return nil
}

// reportInstructions prints each site's median and its ratios to base's,
// per round (back to back) and of the medians.
func reportInstructions(out io.Writer, results []irResult, base *site, sites []*site, pairs [][2]*site) {
	per := func(s *site) map[int]float64 {
		m := map[int]float64{}
		for _, r := range results {
			if r.site == s {
				m[r.round] = r.ir
			}
		}
		return m
	}
	med := func(m map[int]float64) float64 {
		var xs []float64
		for _, v := range m {
			xs = append(xs, v)
		}
		return median(xs)
	}
	b := per(base)
	fmt.Fprintf(out, "\nmedians over %d rounds (instructions Caddy executed per request):\n", len(b))
	for _, s := range sites {
		fmt.Fprintf(out, "  %s %-52s %9.0f\n", s.name, s.desc, med(per(s)))
	}
	var cmp [][2]*site
	for _, s := range sites {
		if s != base {
			cmp = append(cmp, [2]*site{s, base})
		}
	}
	for _, p := range append(cmp, pairs...) {
		s, base := p[0], p[1]
		m, b := per(s), per(base)
		var ratios []float64
		for r, v := range m {
			if bv, ok := b[r]; ok && bv > 0 {
				ratios = append(ratios, v/bv)
			}
		}
		slices.Sort(ratios)
		line := fmt.Sprintf("instructions per request %s/%s: %.4f (of the medians; per-round median %.4f, range %s)",
			s.name, base.name, med(m)/med(b), median(ratios), fmtRange(ratios))
		if s.name == "a" && base.name == "b" {
			line += fmt.Sprintf("; target ≤ %.2f: %s", targetAppCPU, verdict(med(m)/med(b) <= targetAppCPU))
		}
		fmt.Fprintln(out, line)
	}
}
