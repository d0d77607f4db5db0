package testkit

import (
	"slices"
	"sync"
	"time"

	"github.com/tasknation/tokengate/middleware"
)

// Clock is a settable clock, safe for concurrent use: the code under test
// reads it (a middleware.Clock, or its Now method as a store's or the
// fake server's time source), the test moves it. Its timers fire,
// synchronously and in order, when Advance passes them.
type Clock struct {
	mu     sync.Mutex
	t      time.Time
	step   time.Duration
	timers []*timer
}

type timer struct {
	c       *Clock
	at      time.Time
	f       func()
	stopped bool
}

// NewClock returns a clock at the current time.
func NewClock() *Clock { return &Clock{t: time.Now()} }

// NewClockAt returns a clock at t. A clock behind the real one makes
// tokens look expired to code that reads time.Now (x/oauth2's
// ReuseTokenSource), so that only the clock decides.
func NewClockAt(t time.Time) *Clock { return &Clock{t: t} }

// Now is the clock's time. With a step set, every reading then moves the
// clock on by the step (timers do not fire: only Advance fires them).
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.t
	c.t = c.t.Add(c.step)
	return t
}

// SetStep makes every later reading of Now move the clock d forward: time
// that passes between two readings, such as the fake server's issue and
// expiry checks of one request. Zero, the default, stops it.
func (c *Clock) SetStep(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.step = d
}

// AfterFunc runs f once the clock has been advanced past d from now.
func (c *Clock) AfterFunc(d time.Duration, f func()) middleware.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &timer{c: c, at: c.t.Add(d), f: f}
	c.timers = append(c.timers, t)
	return t
}

func (t *timer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.stopped
	t.stopped = true
	return was
}

// Pending is the number of timers not yet fired or stopped.
func (c *Clock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, t := range c.timers {
		if !t.stopped {
			n++
		}
	}
	return n
}

// Advance moves the clock and runs the timers that came due, in order.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	var due, pending []*timer
	for _, t := range c.timers {
		switch {
		case t.stopped:
		case !t.at.After(c.t):
			t.stopped = true
			due = append(due, t)
		default:
			pending = append(pending, t)
		}
	}
	c.timers = pending
	c.mu.Unlock()
	slices.SortFunc(due, func(a, b *timer) int { return a.at.Compare(b.at) })
	for _, t := range due {
		t.f()
	}
}

// Skewed is a view of a Clock that is off by Skew: a machine whose clock
// is ahead (positive) or behind.
type Skewed struct {
	*Clock
	Skew time.Duration
}

// Now is the base clock's time plus the skew.
func (s Skewed) Now() time.Time { return s.Clock.Now().Add(s.Skew) }

var (
	_ middleware.Clock = (*Clock)(nil)
	_ middleware.Clock = Skewed{}
)
