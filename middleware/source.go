package middleware

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/tasknation/tokengate/tokenstore"
)

// A Gate has one tokenSource: the application token (appSource,
// client_credentials) or the token sets of subjects (userSource,
// authorization_code). Everything around it is shared: the request path
// (credential), the refresh ahead of expiry, the wait for a refresh, the
// singleflight, the backoff and the panic recovery.
//
// Keys are the store, singleflight and backoff keys: hashed, so that no
// store holds a client id or a subject in clear.
type tokenSource interface {
	// ready is the hot path: subject's token when memory holds it ready
	// and outside its refresh window, found without hashing the subject,
	// decoding a set or building a header, and shared (never written once
	// published: nothing to copy); nil otherwise, and the request takes
	// the path through key and cached.
	ready(subject string) *held
	// key is the key of subject's tokens ("" for the application token),
	// or a *UserError for a request that cannot have any.
	key(subject string) (string, error)
	// cached is what memory holds for subject's key: ok is false when
	// nothing is held. No lock, no I/O. A non-nil error is final for this
	// request.
	cached(subject, key string) (h held, ok bool, err error)
	// renew runs in key's singleflight, one at a time per key in the
	// process: it brings key's tokens up to date (from the store, or from
	// the token endpoint) and returns what to use. Errors are
	// *UnavailableError or *UserError.
	renew(ctx context.Context, key, subject string) (held, error)
	// reject records that the API refused version of key's token (an
	// upstream 401 invalid_token) and reports whether a replay may get
	// another: the version was marked unusable now or earlier, or key
	// has moved past it. A version is marked at most once, and not within
	// minRejectAge of being obtained: an API path that refuses every
	// token must not make the Gate ask for one per request.
	reject(key string, version uint64, now time.Time) bool
	// close releases what the source holds.
	close() error
}

// held is a token ready for a request: its header value, the token, its
// phase at the time of the lookup, and its key.
type held struct {
	header string
	tok    *tokenstore.Token
	phase  int32
	key    string
}

// newHeld is tok of key ready for a request, in phase.
func newHeld(key string, tok *tokenstore.Token, phase int32) held {
	return held{header: "Bearer " + tok.AccessToken, tok: tok, phase: phase, key: key}
}

// Phases of a token.
const (
	phaseFresh   int32 = iota // use it
	phaseDue                  // use it, and refresh it in the background
	phaseExpired              // do not use it
)

// minRejectAge is how old a token must be before an upstream 401 may
// invalidate it. A token obtained seconds ago that the API refuses is
// refused for another reason (a route that wants other credentials, an
// API having a bad moment); fetching another would let any client make
// the Gate call the token endpoint once per request.
const minRejectAge = 5 * time.Second

// young reports whether tok was obtained less than minRejectAge before
// now. A token obtained "in the future" came from a machine whose clock is
// ahead of ours: its age cannot be told, and it is not young (a fleet with
// skewed clocks must still be able to replace a refused token, at most
// once per version).
func young(tok *tokenstore.Token, now time.Time) bool {
	age := now.Sub(tok.ObtainedAt)
	return age >= 0 && age < minRejectAge
}

// schedule is when tok is due for a refresh and when it stops being used.
// The refresh point has a jitter drawn from the token's version: stable
// for one token, so every instance of a fleet sees the same point (and
// the store's lease lets one of them refresh), and spread across keys.
func (g *Gate) schedule(tok *tokenstore.Token) (refreshAt, expireAt time.Time) {
	life := max(tok.Lifetime(), 0) // a damaged stored record may claim less
	expireAt = tok.Expiry.Add(-min(g.cfg.ExpiryLeeway, life/10))
	window := time.Duration(float64(life) * g.cfg.RefreshWindow)
	jitter := time.Duration(tok.Version % uint64(window/4+1))
	refreshAt = tok.Expiry.Add(-window - jitter)
	if refreshAt.After(expireAt) {
		refreshAt = expireAt
	}
	return refreshAt, expireAt
}

// phaseAt places tok at now.
func (g *Gate) phaseAt(tok *tokenstore.Token, now time.Time) int32 {
	refreshAt, expireAt := g.schedule(tok)
	switch {
	case !now.Before(expireAt):
		return phaseExpired
	case !now.Before(refreshAt):
		return phaseDue
	}
	return phaseFresh
}

// credential is the request path: the token of subject's key from memory
// when it is usable (starting a refresh in the background when it is
// due), else the result of the shared refresh.
//
// The held it returns is read-only: on the hot path it is the one in
// memory, shared by every request.
func (g *Gate) credential(ctx context.Context, subject string) (*held, error) {
	if h := g.src.ready(subject); h != nil {
		g.cacheLookup(true)
		return h, nil
	}
	key, err := g.src.key(subject)
	if err != nil {
		return nil, err
	}
	h, ok, err := g.src.cached(subject, key)
	if err != nil {
		return nil, err
	}
	if ok && h.phase != phaseExpired {
		g.cacheLookup(true)
		if h.phase == phaseDue {
			g.refreshAhead(key, subject)
		}
		return &h, nil
	}
	g.cacheLookup(false)
	h, err = g.await(ctx, key, subject)
	if err != nil {
		var ue *UnavailableError
		if o := g.cfg.Observer; o != nil && errors.As(err, &ue) {
			o.Refused()
		}
		return nil, err
	}
	return &h, nil
}

func (g *Gate) cacheLookup(hit bool) {
	if o := g.cfg.Observer; o != nil {
		o.CacheLookup(hit)
	}
}

// refreshAhead starts one background refresh of key's token, which is
// still valid, unless one runs already or the key is backing off.
func (g *Gate) refreshAhead(key, subject string) {
	if _, running := g.ahead.Load(key); running {
		return
	}
	if _, blocked := g.backoffs.blocked(key, g.clock.Now()); blocked {
		return
	}
	if _, running := g.ahead.LoadOrStore(key, struct{}{}); running {
		return
	}
	started := g.background(func() {
		defer g.ahead.Delete(key)
		r := <-g.flight.DoChan(key, func() (any, error) { return g.renew(key, subject) })
		if r.Err == nil {
			g.logger().Debug("token refreshed ahead of expiry")
		}
	})
	if !started {
		g.ahead.Delete(key)
	}
}

// background runs f, a refresh ahead of expiry, in a goroutine Close
// waits for, and reports whether it started (not once the Gate is closed).
func (g *Gate) background(f func()) bool {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return false
	}
	g.bg.Add(1)
	g.mu.Unlock()
	if o := g.cfg.Observer; o != nil {
		o.BackgroundRefresh()
	}
	go func() {
		defer g.bg.Done()
		f()
	}()
	return true
}

// await waits for the shared refresh of key, or for ctx.
func (g *Gate) await(ctx context.Context, key, subject string) (held, error) {
	now := g.clock.Now()
	if b, blocked := g.backoffs.blocked(key, now); blocked {
		return held{}, b.unavailable(now, nil)
	}
	ch := g.flight.DoChan(key, func() (any, error) { return g.renew(key, subject) })
	select {
	case r := <-ch:
		if r.Err != nil {
			return held{}, r.Err
		}
		if h, ok := r.Val.(held); ok {
			return h, nil
		}
		if g.users == nil {
			return held{}, &UnavailableError{RetryAfter: time.Second, Err: errors.New("middleware: no token from the refresh")}
		}
		// Joined a Disconnect of this subject.
		return held{}, g.users.userError(CodeNotConnected, "no TaskNation account is connected for this user")
	case <-ctx.Done():
		return held{}, &UnavailableError{RetryAfter: time.Second, Err: fmt.Errorf("%w: %w", errClientGone, ctx.Err())}
	}
}

// renew runs the source's renew for key inside key's singleflight, as an
// in-flight refresh that Close lets finish, and turns a panic into an
// error: a panic inside DoChan cannot be recovered by the caller and
// would kill the process.
func (g *Gate) renew(key, subject string) (val any, err error) {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil, &UnavailableError{RetryAfter: time.Second, Err: errGateClosed}
	}
	g.inflight.Add(1)
	g.mu.Unlock()
	defer g.inflight.Done()
	defer func() {
		if p := recover(); p != nil {
			g.logger().Error("token refresh panicked", zap.String("panic", fmt.Sprintf("%T", p)), zap.Stack("stack"))
			err = errors.New("middleware: token refresh panicked")
			b := g.failed(key, err, false, "token refresh failed")
			val, err = nil, b.unavailable(g.clock.Now(), err)
		}
	}()
	h, err := g.src.renew(g.ctx, key, subject)
	if err != nil {
		return nil, err
	}
	return h, nil
}

// serialized runs fn inside the singleflight of key, so that it never
// overlaps a refresh of key in this process: when it joins a flight that
// was running, it waits for that one to end and tries again. Callers that
// join fn's flight get what fn returns (a held, or nil for "no tokens").
func (g *Gate) serialized(ctx context.Context, key string, fn func() (any, error)) error {
	for {
		ran := false
		ch := g.flight.DoChan(key, func() (any, error) {
			ran = true
			return fn()
		})
		select {
		case r := <-ch:
			if ran {
				return r.Err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// lock takes store's lock of key when it is a tokenstore.Locker, waiting
// at most RequestTimeout; unlock is a no-op when it is not.
func (g *Gate) lock(ctx context.Context, store tokenstore.Store, key string) (unlock func(), err error) {
	l, ok := store.(tokenstore.Locker)
	if !ok {
		return func() {}, nil
	}
	lctx, cancel := context.WithTimeout(ctx, g.cfg.RequestTimeout)
	defer cancel()
	unlock, err = l.Lock(lctx, key)
	if errors.Is(err, tokenstore.ErrLockUnsupported) {
		return func() {}, nil
	}
	return unlock, err
}

// writeContext is the context of a store write that must not be lost to
// Close: a rotated refresh token is persisted even when the Gate's
// context has just been cancelled, within RequestTimeout.
func (g *Gate) writeContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(g.ctx), g.cfg.RequestTimeout)
}

// writeFenced writes tok, made from the stored set of version old (0:
// none), to store: with compare-and-set when the store has it, so that a
// writer whose lease lapsed, or who raced a delete, cannot overwrite what
// another instance stored since (the error then wraps
// tokenstore.ErrConflict). A failed write is tried three times.
func (g *Gate) writeFenced(store tokenstore.Store, key string, old uint64, tok *tokenstore.Token) error {
	ctx, cancel := g.writeContext()
	defer cancel()
	cas, fenced := store.(tokenstore.CASStore)
	var err error
	for range 3 {
		if fenced {
			err = cas.CompareAndSet(ctx, key, old, tok)
			if errors.Is(err, errors.ErrUnsupported) { // Sealed over a store without compare-and-set
				fenced = false
				err = store.Set(ctx, key, tok)
			}
		} else {
			err = store.Set(ctx, key, tok)
		}
		// A write the primary holds but no replica acknowledged is not
		// tried again: a compare-and-set would now meet the set itself.
		if err == nil || errors.Is(err, tokenstore.ErrConflict) || errors.Is(err, tokenstore.ErrNotReplicated) {
			return err
		}
	}
	return err
}

// errExpiredOnArrival is a token that was no longer usable when its answer
// arrived.
func errExpiredOnArrival(tok *tokenstore.Token) error {
	return &EndpointError{Grant: "", Kind: KindInvalidResponse, Status: 200,
		Err: fmt.Errorf("the token had expired on arrival (lifetime %v; clock skew or a slow answer)", tok.Lifetime().Round(time.Millisecond))}
}
