package main

import (
	"math"
	"os"
	"runtime"
	"testing"
	"time"
)

func TestParseProcStat(t *testing.T) {
	// A real line's shape: the command name may hold spaces and
	// parentheses; utime (14) is 1234 ticks, stime (15) 567.
	const line = "4242 (ca ddy) (x)) S 1 4242 4242 0 -1 4194560 9000 0 0 0 1234 567 0 0 20 0 12 0 99999 1500000000 8000 18446744073709551615 1 1 0 0 0 0 0 0 2143420159 0 0 0 17 1 0 0 0 0 0\n"
	got, err := parseProcStat(line, 100)
	if err != nil {
		t.Fatal(err)
	}
	if want := 18010 * time.Millisecond; got != want {
		t.Errorf("parseProcStat = %v, want %v", got, want)
	}
	if got, _ := parseProcStat(line, 1000); got != 1801*time.Millisecond {
		t.Errorf("parseProcStat at 1000 Hz = %v, want 1.801s", got)
	}
	for _, bad := range []string{"", "4242 caddy S 1", "4242 (caddy) S 1 2 3", "4242 (caddy) S 1 4242 4242 0 -1 4194560 9000 0 0 0 x 567 0"} {
		if _, err := parseProcStat(bad, 100); err == nil {
			t.Errorf("parseProcStat(%q) accepted", bad)
		}
	}
}

func TestProcCPUOfSelf(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc is Linux only")
	}
	m := newCPUMeter(os.Getpid())
	if !m.ok {
		t.Fatal(m.desc)
	}
	before, _ := m.read()
	for start := time.Now(); time.Since(start) < 50*time.Millisecond; {
	}
	after, ok := m.read()
	if !ok || after <= before {
		t.Errorf("CPU time %v then %v after 50ms of spinning", before, after)
	}
}

func TestCPUPerRequest(t *testing.T) {
	if got := cpuPerRequest(2*time.Second, 20000); got != 100 {
		t.Errorf("cpuPerRequest(2s, 20000) = %v µs, want 100", got)
	}
	for _, n := range []int64{0, -1} {
		if got := cpuPerRequest(time.Second, n); !math.IsNaN(got) {
			t.Errorf("cpuPerRequest(1s, %d) = %v, want NaN", n, got)
		}
	}
	if got := cpuPerRequest(-time.Second, 10); !math.IsNaN(got) {
		t.Errorf("cpuPerRequest(-1s, 10) = %v, want NaN", got)
	}
}
