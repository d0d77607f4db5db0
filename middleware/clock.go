package middleware

import "time"

// Clock is the Gate's time source. The hot path never reads it: timers set
// when a token arrives mark the token due for refresh, then expired, so a
// cache hit costs one atomic load instead of a clock read. Tests inject a
// clock whose timers fire when it is advanced.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine (or synchronously, for a test
	// clock) once d has passed, unless the returned Timer is stopped.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc.
type Timer interface {
	Stop() bool
}

// SystemClock is the real clock.
type SystemClock struct{}

// Now is time.Now.
func (SystemClock) Now() time.Time { return time.Now() }

// AfterFunc is time.AfterFunc.
func (SystemClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }
