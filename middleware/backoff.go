package middleware

import (
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// backoff is the failure state of one token key: when the next token
// request may be made, and why the last one failed.
//
// Two regimes (defect 10 of the 2026-12 review):
//   - While a valid token is still held (a refresh ahead of expiry failed),
//     clients are served and nothing is urgent: the delay grows
//     exponentially from MinBackoff to MaxBackoff, with equal jitter.
//   - While no valid token is held, every client is refused, so a long
//     delay would turn the end of an outage into minutes more of refusals.
//     The delay stays between 2 and 2.5 times MinBackoff whatever the
//     number of failures: with the defaults the endpoint sees at most one
//     request per 2 s per key, and service resumes within 2.5 s (plus the
//     request itself) of the endpoint's recovery.
//
// A Retry-After from the token endpoint lengthens either, capped by
// MaxBackoff.
type backoff struct {
	retryAt atomic.Int64 // Unix ns before which no token request is made

	mu       sync.Mutex // guards failures and lastErr
	failures int
	lastErr  error
}

// blocked reports whether no token request may be made at now.
func (b *backoff) blocked(now time.Time) bool { return now.UnixNano() < b.retryAt.Load() }

// failed records a failed attempt and returns the delay before the next;
// holding says whether a valid token is still served meanwhile.
func (b *backoff) failed(cfg *Config, now time.Time, err error, holding bool) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures++
	var d time.Duration
	if holding {
		d = cfg.MinBackoff << min(b.failures-1, 30)
		if d <= 0 || d > cfg.MaxBackoff {
			d = cfg.MaxBackoff
		}
		d = d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
	} else {
		d = min(2*cfg.MinBackoff, cfg.MaxBackoff)
		d += time.Duration(rand.Int64N(int64(d/4) + 1))
	}
	var ee *EndpointError
	if errors.As(err, &ee) && ee.RetryAfter > d {
		d = min(ee.RetryAfter, cfg.MaxBackoff)
	}
	b.retryAt.Store(now.Add(d).UnixNano())
	b.lastErr = err
	return d
}

// unavailable is the error for a caller left without a token: err, or the
// last failure when err is nil.
func (b *backoff) unavailable(now time.Time, err error) *UnavailableError {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err == nil {
		err = b.lastErr
	}
	if err == nil {
		err = errors.New("middleware: token endpoint backing off")
	}
	wait := time.Duration(b.retryAt.Load() - now.UnixNano())
	return &UnavailableError{RetryAfter: max(wait, time.Second), Err: err}
}

func (b *backoff) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.failures
}

// backoffs holds the backoff state of the keys whose last attempt failed,
// and only theirs: a million healthy subjects cost nothing here. It is
// bounded: an entry goes when its key succeeds or is forgotten, and an
// entry whose retry time passed more than MaxBackoff ago (a subject that
// never came back after an outage) is swept at the next success of any
// key (at most once per MaxBackoff), and on inserts into a large table.
type backoffs struct {
	clock     Clock
	mu        sync.Mutex
	m         map[string]*backoff
	nextSweep int
	maxAge    time.Duration // how long past its retry time an entry is kept
	lastSweep time.Time
}

// backoffSweepMin is the table size below which no sweep runs.
const backoffSweepMin = 64

// maxBackoffEntries caps the table even when every entry is current (a
// store outage with more failing subjects than this): past it, arbitrary
// entries are dropped, which costs those subjects one early retry.
const maxBackoffEntries = 100_000

func newBackoffs(clock Clock, maxAge time.Duration) *backoffs {
	return &backoffs{clock: clock, m: map[string]*backoff{}, nextSweep: backoffSweepMin, maxAge: maxAge}
}

// get returns key's entry, or nil.
func (t *backoffs) get(key string) *backoff {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[key]
}

// blocked reports whether key may not be retried at now, and its entry.
func (t *backoffs) blocked(key string, now time.Time) (*backoff, bool) {
	b := t.get(key)
	return b, b != nil && b.blocked(now)
}

// entry returns key's entry, creating it.
func (t *backoffs) entry(key string, now time.Time) *backoff {
	t.mu.Lock()
	defer t.mu.Unlock()
	if b := t.m[key]; b != nil {
		return b
	}
	if len(t.m) >= t.nextSweep {
		t.sweepLocked(now)
		t.nextSweep = max(2*len(t.m), backoffSweepMin)
	}
	b := new(backoff)
	t.m[key] = b
	return b
}

func (t *backoffs) sweepLocked(now time.Time) {
	t.lastSweep = now
	stale := now.Add(-t.maxAge).UnixNano()
	for k, b := range t.m {
		if b.retryAt.Load() < stale {
			delete(t.m, k)
		}
	}
	for k := range t.m {
		if len(t.m) < maxBackoffEntries {
			break
		}
		delete(t.m, k)
	}
}

// reset forgets key's failures, and sweeps the table when it holds
// entries and was not swept for MaxBackoff.
func (t *backoffs) reset(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.m, key)
	if len(t.m) == 0 {
		return
	}
	if now := t.clock.Now(); now.Sub(t.lastSweep) >= t.maxAge {
		t.sweepLocked(now)
	}
}

func (t *backoffs) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

// failed records a failed attempt of key and logs it with msg.
func (g *Gate) failed(key string, err error, holding bool, msg string) *backoff {
	now := g.clock.Now()
	b := g.backoffs.entry(key, now)
	d := b.failed(&g.cfg, now, err, holding)
	level := zap.WarnLevel
	var ee *EndpointError
	if errors.As(err, &ee) && (ee.Kind == KindRejected || ee.Kind == KindRedirect) {
		level = zap.ErrorLevel // bad credentials or scopes: retrying will not help
	}
	g.logger().Log(level, msg, zap.Error(err), zap.Int("failures", b.count()), zap.Duration("retry_in", d))
	return b
}
