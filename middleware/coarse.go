package middleware

import (
	"sync"
	"sync/atomic"
	"time"
)

// The hot paths (the users' hot set, and the application token's entry
// beside its phase timers) compare a token's refresh point with a coarse
// clock:
// the wall clock, read every coarseTick by a goroutine of its own and kept
// in an atomic, so that a hit costs an atomic load where time.Now costs
// ~45 ns (two vDSO reads) per request. Unlike a timer per token, which
// runs on the monotonic clock, it follows the wall clock's jumps (a
// suspended machine, a stepped clock) within a tick.
//
// An entry leaves the hot set coarseSlack before its refresh point, so
// that a coarse clock running late by less than that (a tick, a goroutine
// scheduled late) never serves a token the exact path would not: from
// there on requests take the engine's path, which reads the Gate's clock.
const (
	coarseTick  = 100 * time.Millisecond
	coarseSlack = time.Second
)

// coarseClock is the wall clock at most a tick old.
type coarseClock struct {
	ns   atomic.Int64 // Unix ns
	stop chan struct{}
	done chan struct{} // closed when the goroutine has returned
	once sync.Once
}

// startCoarseClock reads now at once, then every tick until close.
func startCoarseClock(now func() time.Time, tick time.Duration) *coarseClock {
	c := &coarseClock{stop: make(chan struct{}), done: make(chan struct{})}
	c.ns.Store(now().UnixNano())
	go func() {
		defer close(c.done)
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				c.ns.Store(now().UnixNano())
			case <-c.stop:
				return
			}
		}
	}()
	return c
}

func (c *coarseClock) now() int64 { return c.ns.Load() }

// close stops the clock and returns once it no longer moves. A nil
// clock (see coarseClockFor) has nothing to stop.
func (c *coarseClock) close() {
	if c == nil {
		return
	}
	c.once.Do(func() { close(c.stop) })
	<-c.done
}

// coarseClockFor is a coarse clock on the wall clock when clock is the
// real one, and nil for any other (a test's clock, which a hot path reads
// as it is, or whose timers it follows).
func coarseClockFor(clock Clock) *coarseClock {
	switch clock.(type) {
	case SystemClock, *SystemClock:
		return startCoarseClock(time.Now, coarseTick)
	}
	return nil
}
