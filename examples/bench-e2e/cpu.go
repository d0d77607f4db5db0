package main

import (
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// cpuMeter reads the CPU time (user + system) of the Caddy process.
//
// It reads utime and stime, fields 14 and 15 of /proc/<pid>/stat, in clock
// ticks. That is the kernel's total for the whole thread group, exited
// threads included, and the sum of the two is the scheduler's precise
// runtime truncated to a tick; only the split between user and system is
// estimated. Summing the first field of /proc/<pid>/task/*/schedstat would
// give nanoseconds, but only over the threads alive at the time of reading:
// a thread that exits during a run (the Go runtime ends the thread of a
// goroutine that exits locked to it, for one) takes its time with it, and
// the difference comes out short or even negative.
// A tick is 10ms (USER_HZ is 100 on Linux; getconf says otherwise if not),
// so each difference is off by at most two ticks: 20ms against the seconds
// of CPU a 5s run under load uses, a fraction of a percent.
type cpuMeter struct {
	pid  int
	hz   int64
	ok   bool
	desc string // how it measures, or why it cannot
}

func newCPUMeter(pid int) *cpuMeter {
	m := &cpuMeter{pid: pid, hz: clockTicks()}
	if runtime.GOOS != "linux" {
		m.desc = "n/a (Linux only: /proc/<pid>/stat)"
		return m
	}
	if _, err := m.readErr(); err != nil {
		m.desc = "n/a (" + err.Error() + ")"
		return m
	}
	m.ok = true
	m.desc = fmt.Sprintf("utime+stime of pid %d from /proc/%d/stat (%d ticks/s), per request proxied", pid, pid, m.hz)
	return m
}

// read returns the process's CPU time so far, and false if it cannot.
func (m *cpuMeter) read() (time.Duration, bool) {
	if !m.ok {
		return 0, false
	}
	d, err := m.readErr()
	return d, err == nil
}

func (m *cpuMeter) readErr() (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(m.pid) + "/stat")
	if err != nil {
		return 0, err
	}
	return parseProcStat(string(b), m.hz)
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's times: getconf's
// CLK_TCK, or 100 (its value on every Linux architecture Go runs on).
func clockTicks() int64 {
	if out, err := exec.Command("getconf", "CLK_TCK").Output(); err == nil {
		if hz, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64); err == nil && hz > 0 {
			return hz
		}
	}
	return 100
}

// parseProcStat returns utime + stime of a /proc/<pid>/stat line as a
// duration, hz ticks to the second. The second field, the command name in
// parentheses, may itself hold spaces and parentheses: the fields are
// counted from the last ')'.
func parseProcStat(line string, hz int64) (time.Duration, error) {
	i := strings.LastIndexByte(line, ')')
	if i < 0 || hz <= 0 {
		return 0, errors.New("not a /proc/<pid>/stat line")
	}
	// f[0] is field 3 (state), so field n is f[n-3].
	f := strings.Fields(line[i+1:])
	if len(f) < 13 {
		return 0, errors.New("/proc/<pid>/stat: too few fields")
	}
	utime, err1 := strconv.ParseUint(f[14-3], 10, 64)
	stime, err2 := strconv.ParseUint(f[15-3], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/<pid>/stat: utime or stime: %w", err)
	}
	ticks := utime + stime
	return time.Duration(ticks/uint64(hz))*time.Second + time.Duration(ticks%uint64(hz))*time.Second/time.Duration(hz), nil
}

// cpuPerRequest is d spread over n requests, in microseconds; NaN for no
// requests or a negative d.
func cpuPerRequest(d time.Duration, n int64) float64 {
	if n <= 0 || d < 0 {
		return math.NaN()
	}
	return float64(d) / float64(time.Microsecond) / float64(n)
}
