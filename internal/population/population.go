// Package population builds the million users of the memory benchmarks
// (tokenstore's and the middleware's): token sets of TaskNation's sizes,
// built one by one as decoding a million token answers would, and measures
// what a garbage collection costs while they are live.
package population

import (
	"encoding/base64"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/metrics"
	"strings"
	"testing"
	"time"

	"github.com/tasknation/tokengate/tokenstore"
)

const (
	// N is the number of users.
	N = 1_000_000
	// Scopes are a user set's scopes.
	Scopes = "supply::businesses supply::leads offline_access"
	// gcRuns is how many collections MeasureGC measures.
	gcRuns = 5
)

// Source is the deterministic random source the populations are drawn
// from.
func Source() *rand.ChaCha8 {
	return rand.NewChaCha8([32]byte{'t', 'o', 'k', 'e', 'n', 'g', 'a', 't', 'e'})
}

// Token is user i's set, obtained at t0 and valid for an hour, with access
// and refresh tokens drawn from src: every set is its own handful of heap
// objects, as a decoded token answer is.
func Token(src *rand.ChaCha8, i int, t0 time.Time) *tokenstore.Token {
	var raw [32]byte
	_, _ = src.Read(raw[:])
	access := "tn_at_" + base64.RawURLEncoding.EncodeToString(raw[:])
	_, _ = src.Read(raw[:])
	refresh := "tn_rt_" + base64.RawURLEncoding.EncodeToString(raw[:])
	return &tokenstore.Token{
		AccessToken:   access,
		TokenType:     strings.Clone("bearer"),
		RefreshToken:  refresh,
		Expiry:        t0.Add(time.Hour),
		RefreshExpiry: t0.Add(180 * 24 * time.Hour),
		Scopes:        strings.Split(strings.Clone(Scopes), " "),
		ObtainedAt:    t0,
		Version:       uint64(i) + 1,
	}
}

// Order is a random permutation of 0..n-1 from src: the order in which
// the sets are stored, so that the entries the lookups (in index order)
// reach are scattered in memory as they would be after a million logins.
func Order(src *rand.ChaCha8, n int) []uint32 {
	order := make([]uint32, n)
	for i := range order {
		order[i] = uint32(i)
	}
	rand.New(src).Shuffle(n, func(i, j int) { order[i], order[j] = order[j], order[i] })
	return order
}

// Packed is n strings of one length back to back in one pointer-free
// string: the list costs the collector nothing and At slices it without
// allocating.
type Packed struct {
	all string
	n   int
}

// Pack packs n strings of length size made by f.
func Pack(n, size int, f func(i int, dst []byte) []byte) Packed {
	b := make([]byte, 0, n*size)
	for i := range n {
		if b = f(i, b); len(b) != (i+1)*size {
			panic("population: Pack: a string of the wrong length")
		}
	}
	return Packed{all: string(b), n: size}
}

// At is string i.
func (p Packed) At(i int) string { return p.all[i*p.n : (i+1)*p.n] }

// GCCost is what a full collection costs with a population live.
type GCCost struct {
	MsPerCycle float64 // GC CPU (all workers and pauses) per cycle, in ms
	HeapMB     float64 // live heap after the last cycle, in MiB
	// ScanMB is what the last cycle scanned (heap, stacks, globals), in
	// MiB: the work a cycle does, which, unlike its CPU time, does not
	// depend on what else the machine runs.
	ScanMB float64
}

// MeasureGC runs a few collections while live is reachable.
func MeasureGC(live any) GCCost {
	samples := []metrics.Sample{
		{Name: "/cpu/classes/gc/total:cpu-seconds"},
		{Name: "/gc/cycles/total:gc-cycles"},
		{Name: "/gc/heap/live:bytes"},
		{Name: "/gc/scan/total:bytes"},
	}
	runtime.GC() // the measured cycles see only live data, no garbage left over
	metrics.Read(samples)
	cpu0, cycles0 := samples[0].Value.Float64(), samples[1].Value.Uint64()
	for range gcRuns {
		runtime.GC()
	}
	metrics.Read(samples)
	runtime.KeepAlive(live)
	cycles := samples[1].Value.Uint64() - cycles0 // at least gcRuns
	return GCCost{
		MsPerCycle: (samples[0].Value.Float64() - cpu0) * 1e3 / float64(cycles),
		HeapMB:     float64(samples[2].Value.Uint64()) / (1 << 20),
		ScanMB:     float64(samples[3].Value.Uint64()) / (1 << 20),
	}
}

// Report measures the GC cost with live reachable and reports it as the
// benchmark's gc-ms/cycle, gc-scan-MB/cycle and heap-MB.
func Report(b *testing.B, live any) {
	c := MeasureGC(live)
	b.ReportMetric(c.MsPerCycle, "gc-ms/cycle")
	b.ReportMetric(c.ScanMB, "gc-scan-MB/cycle")
	b.ReportMetric(c.HeapMB, "heap-MB")
}

// Live holds one population at a time across the sub-benchmarks of a
// benchmark and their -count runs, so that each is built once and never
// while another is still live. Benchmarks run one at a time: no lock.
type Live struct {
	name  string
	v     any
	close func()
}

// Load returns the population called name, building it (after dropping
// the one held) when it is not the one held.
func (l *Live) Load(name string, build func() (v any, close func())) any {
	if l.name != name {
		l.Drop()
		l.v, l.close = build()
		l.name = name
		runtime.GC() // the timed loop must not collect the build's garbage
	}
	return l.v
}

// Drop frees the population held and collects it.
func (l *Live) Drop() {
	if l.close != nil {
		l.close()
	}
	*l = Live{}
	runtime.GC()
}

// MinGCRatio is how many times less GC CPU a cycle must cost with the
// population in the candidate than in the baseline (a map of *Token).
const MinGCRatio = 20

// CheckGCRatio builds the baseline and the candidate population one after
// the other (build returns it live and a function freeing it), measures a
// collection with each, and fails t unless the candidate's costs at least
// MinGCRatio times less GC CPU. It builds a million sets twice: slow, so it
// runs only with TOKENGATE_GC_RATIO=1 and without -short.
func CheckGCRatio(t *testing.T, baseline, candidate string, build func(impl string) (live any, free func())) {
	t.Helper()
	if testing.Short() || os.Getenv("TOKENGATE_GC_RATIO") != "1" {
		t.Skip("builds 1,000,000 token sets twice: set TOKENGATE_GC_RATIO=1 (and no -short) to run")
	}
	cost := map[string]GCCost{}
	for _, impl := range []string{baseline, candidate} {
		live, free := build(impl)
		c := MeasureGC(live)
		free()
		runtime.GC() // free it before the next one is built
		cost[impl] = c
		t.Logf("impl=%s: %.2f gc-ms/cycle, %.1f gc-scan-MB/cycle, %.0f heap-MB", impl, c.MsPerCycle, c.ScanMB, c.HeapMB)
	}
	b, c := cost[baseline].MsPerCycle, cost[candidate].MsPerCycle
	if c*MinGCRatio > b {
		t.Errorf("GC CPU per cycle: %s %.2f ms, %s %.2f ms: ratio %.1f, want at least %d", baseline, b, candidate, c, b/c, MinGCRatio)
	}
}
