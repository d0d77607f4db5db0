// Package middleware gets OAuth 2.0 access tokens, keeps them fresh and
// injects them into HTTP requests, as a net/http middleware (Gate.Wrap) or
// an outbound RoundTripper (Gate.Transport).
//
// The hot path, a cached token outside its refresh window, takes no lock,
// reads no clock and does no I/O: two atomic loads. A token inside its
// refresh window is refreshed once, in the background, while requests keep
// using it. Without a valid token, callers share one token request per key
// (singleflight) run on the Gate's own context, so a caller that goes away
// does not fail the others. Failed token requests back off exponentially,
// with jitter, for all callers together.
package middleware

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/tasknation/tokengate/tokenstore"
)

// Gate obtains tokens for one client and injects them: one application
// token (client_credentials), or a token set per subject
// (authorization_code) obtained through the connect flow it serves. It is
// safe for concurrent use. Close releases it.
type Gate struct {
	cfg      Config
	log      atomic.Pointer[zap.Logger]
	clock    Clock
	x        *exchanger
	store    tokenstore.Store
	ownStore *tokenstore.MemoryStore
	flight   singleflight.Group
	app      *slot  // client_credentials
	u        *users // authorization_code

	ctx    context.Context // the Gate's lifetime; token requests run on it
	cancel context.CancelFunc
	mu     sync.Mutex // guards closed and bg.Add
	closed bool
	bg     sync.WaitGroup
}

// slot is the state of one token key.
type slot struct {
	key        string // store and singleflight key; no client id in clear
	cur        atomic.Pointer[entry]
	refreshing atomic.Bool  // a background refresh is running
	retryAt    atomic.Int64 // Unix ns before which no token request is made

	mu       sync.Mutex // guards failures and lastErr
	failures int
	lastErr  error
}

// entry is a token ready for the hot path: the header value is built once
// per token, not per request, and timers move its phase along so that
// requests need not read the clock.
type entry struct {
	tok       *tokenstore.Token
	header    string
	refreshAt time.Time // phaseDue from here
	expireAt  time.Time // phaseExpired from here
	phase     atomic.Int32
	timers    [2]Timer // set before the entry is published
}

// Phases of an entry.
const (
	phaseFresh   int32 = iota // use it
	phaseDue                  // use it, and refresh it in the background
	phaseExpired              // do not use it
)

// New returns a Gate for the client in cfg. It validates the configuration
// (errors name the field) but makes no network request: the first token is
// fetched on first use.
func New(cfg Config) (*Gate, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if mixed, _ := c.Provider.checkScopes(c.Scopes); mixed {
		c.Logger.Warn("scopes mix Supply and Demand partner types; a TaskNation client is usually one or the other",
			zap.Strings("scopes", c.Scopes))
	}
	g := &Gate{cfg: c, clock: c.Clock, x: newExchanger(c), store: c.Store}
	g.log.Store(c.Logger)
	if g.store == nil {
		m, err := tokenstore.NewMemoryStore(tokenstore.MemoryConfig{Now: c.Clock.Now})
		if err != nil {
			return nil, err
		}
		g.store, g.ownStore = m, m
	}
	g.app = &slot{key: appKey(c)}
	if c.Grant == GrantAuthorizationCode {
		if g.u, err = newUsers(c); err != nil {
			if g.ownStore != nil {
				g.ownStore.Close()
			}
			return nil, err
		}
	}
	g.ctx, g.cancel = context.WithCancel(context.Background())
	return g, nil
}

func (g *Gate) logger() *zap.Logger { return g.log.Load() }

// SetLogger replaces the logger, for a Gate that outlives the
// configuration that made it (a Caddy reload hands it the new config's
// logger). A nil logger discards.
func (g *Gate) SetLogger(l *zap.Logger) {
	if l == nil {
		l = zap.NewNop()
	}
	g.log.Store(l)
}

// appKey identifies the application token of a client: same endpoint,
// client and scopes, same token. Hashed so that no store holds the client
// id in clear.
func appKey(c Config) string {
	h := sha256.Sum256([]byte(strings.Join([]string{"app", c.TokenURL, c.ClientID, strings.Join(c.Scopes, " ")}, "\x00")))
	return "app:" + hex.EncodeToString(h[:16])
}

// Token returns a valid application token, fetching one if needed. It
// blocks only when no valid token is held, and then no longer than ctx
// allows. The error is an *UnavailableError when no token could be had.
//
// A Gate of the authorization_code grant has no application token: use
// UserToken.
func (g *Gate) Token(ctx context.Context) (tokenstore.Token, error) {
	if g.u != nil {
		return tokenstore.Token{}, errors.New("middleware: the Gate's grant is authorization_code: use UserToken")
	}
	e, err := g.current(ctx, g.app)
	if err != nil {
		return tokenstore.Token{}, err
	}
	return *e.tok, nil
}

// current is the request path: the cached entry when it is fresh, else a
// shared refresh.
func (g *Gate) current(ctx context.Context, s *slot) (*entry, error) {
	if e := s.cur.Load(); e != nil {
		if p := e.phase.Load(); p != phaseExpired {
			if o := g.cfg.Observer; o != nil {
				o.CacheLookup(true)
			}
			if p == phaseDue {
				g.refreshAhead(s)
			}
			return e, nil
		}
	}
	if o := g.cfg.Observer; o != nil {
		o.CacheLookup(false)
	}
	return g.await(ctx, s)
}

// refreshAhead starts one background refresh of a token that is still
// valid, unless one runs already or the endpoint is backing off.
func (g *Gate) refreshAhead(s *slot) {
	if g.clock.Now().UnixNano() < s.retryAt.Load() || !s.refreshing.CompareAndSwap(false, true) {
		return
	}
	started := g.background(func() {
		defer s.refreshing.Store(false)
		r := <-g.flight.DoChan(s.key, func() (any, error) { return g.refresh(s) })
		if r.Err == nil {
			g.logger().Debug("token refreshed ahead of expiry")
		}
	})
	if !started {
		s.refreshing.Store(false)
	}
}

// background runs a refresh ahead of expiry, f, in a goroutine Close
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

// await waits for the shared refresh of s, or for ctx.
func (g *Gate) await(ctx context.Context, s *slot) (*entry, error) {
	if now := g.clock.Now(); now.UnixNano() < s.retryAt.Load() {
		return nil, s.unavailable(now, nil)
	}
	ch := g.flight.DoChan(s.key, func() (any, error) { return g.refresh(s) })
	select {
	case r := <-ch:
		var ue *UnavailableError
		if errors.As(r.Err, &ue) {
			return nil, ue
		}
		if r.Err != nil {
			return nil, s.unavailable(g.clock.Now(), r.Err)
		}
		return r.Val.(*entry), nil
	case <-ctx.Done():
		return nil, &UnavailableError{RetryAfter: time.Second, Err: fmt.Errorf("%w: %w", errClientGone, ctx.Err())}
	}
}

// refresh runs inside the singleflight: one at a time per key.
func (g *Gate) refresh(s *slot) (val any, err error) {
	defer func() {
		// A panic inside DoChan kills the process; turn it into an error.
		if p := recover(); p != nil {
			g.logger().Error("token refresh panicked", zap.String("panic", fmt.Sprintf("%T", p)), zap.Stack("stack"))
			err = fmt.Errorf("middleware: token refresh panicked")
			s.failed(g, g.clock.Now(), err)
		}
	}()
	now := g.clock.Now()
	cur := s.cur.Load()
	if cur != nil && cur.phase.Load() == phaseFresh {
		return cur, nil // refreshed by the flight that just ended
	}
	if now.UnixNano() < s.retryAt.Load() {
		// Failed in the flight that just ended: callers that checked
		// before it failed must not start another request in this step.
		return nil, s.unavailable(now, nil)
	}
	// The store may hold a fresher token: another Gate of the same client
	// sharing it, or a Gate this one replaced.
	tok, err := g.store.Get(g.ctx, s.key)
	switch {
	case err == nil && (cur == nil || tok.Version != cur.tok.Version):
		if e := g.newEntry(tok); now.Before(e.refreshAt) {
			g.install(s, e)
			return e, nil
		}
	case err != nil && !errors.Is(err, tokenstore.ErrNotFound):
		g.logger().Warn("token store read failed", zap.Error(err))
	}

	tok, err = g.x.clientCredentials(g.ctx)
	if err != nil {
		s.failed(g, g.clock.Now(), err)
		return nil, err
	}
	e := g.newEntry(tok)
	if !g.clock.Now().Before(e.expireAt) {
		// Clock skew, or a lifetime shorter than the time on the wire:
		// using it would only earn a 401 and another request at once.
		err := errExpiredOnArrival(tok)
		s.failed(g, g.clock.Now(), err)
		return nil, err
	}
	s.succeeded()
	if err := g.store.Set(g.ctx, s.key, tok); err != nil {
		g.logger().Warn("token store write failed", zap.Error(err))
	}
	g.install(s, e)
	g.logger().Info("token obtained",
		zap.String("grant", "client_credentials"),
		zap.Duration("lifetime", tok.Lifetime()),
		zap.Strings("scopes", tok.Scopes),
		zap.Uint64("version", tok.Version))
	return e, nil
}

// errExpiredOnArrival is a token that was no longer usable when its answer
// arrived.
func errExpiredOnArrival(tok *tokenstore.Token) error {
	return &EndpointError{Grant: "", Kind: "invalid_response", Status: 200,
		Err: fmt.Errorf("the token had expired on arrival (lifetime %v; clock skew or a slow answer)", tok.Lifetime().Round(time.Millisecond))}
}

// newEntry computes when tok must be refreshed and when it stops being used.
func (g *Gate) newEntry(tok *tokenstore.Token) *entry {
	life := max(tok.Lifetime(), 0) // a damaged stored record may claim less
	expireAt := tok.Expiry.Add(-min(g.cfg.ExpiryLeeway, life/10))
	window := time.Duration(float64(life) * g.cfg.RefreshWindow)
	jitter := time.Duration(rand.Int64N(int64(window/4) + 1))
	refreshAt := tok.Expiry.Add(-window - jitter)
	if refreshAt.After(expireAt) {
		refreshAt = expireAt
	}
	return &entry{tok: tok, header: "Bearer " + tok.AccessToken, refreshAt: refreshAt, expireAt: expireAt}
}

// install publishes e as the current entry of s, with timers for its
// phases, and stops the timers of the entry it replaces. Only the refresh
// of s calls it, so there is one writer per slot.
func (g *Gate) install(s *slot, e *entry) {
	now := g.clock.Now()
	if d := e.refreshAt.Sub(now); d > 0 {
		e.timers[0] = g.clock.AfterFunc(d, func() { e.phase.CompareAndSwap(phaseFresh, phaseDue) })
	} else {
		e.phase.Store(phaseDue)
	}
	if d := e.expireAt.Sub(now); d > 0 {
		e.timers[1] = g.clock.AfterFunc(d, func() { e.phase.Store(phaseExpired) })
	} else {
		e.phase.Store(phaseExpired)
	}
	if old := s.cur.Swap(e); old != nil {
		old.stop()
	}
}

func (e *entry) stop() {
	for _, t := range e.timers {
		if t != nil {
			t.Stop()
		}
	}
}

// failed records a failed token request and schedules the next attempt:
// exponential backoff from MinBackoff to MaxBackoff, with equal jitter.
func (s *slot) failed(g *Gate, now time.Time, err error) {
	s.backOff(g, now, err, "token request failed")
}

// backOff is failed with the log message of the failure.
func (s *slot) backOff(g *Gate, now time.Time, err error, msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures++
	d := g.cfg.MinBackoff << min(s.failures-1, 30)
	if d <= 0 || d > g.cfg.MaxBackoff {
		d = g.cfg.MaxBackoff
	}
	d = d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
	s.retryAt.Store(now.Add(d).UnixNano())
	s.lastErr = err
	level := zap.WarnLevel
	var ee *EndpointError
	if errors.As(err, &ee) && ee.Kind == "rejected" {
		level = zap.ErrorLevel // bad credentials or scopes: retrying will not help
	}
	g.logger().Log(level, msg, zap.Error(err), zap.Int("failures", s.failures), zap.Duration("retry_in", d))
}

func (s *slot) succeeded() {
	s.mu.Lock()
	s.failures, s.lastErr = 0, nil
	s.retryAt.Store(0)
	s.mu.Unlock()
}

// unavailable builds the error for a caller left without a token.
func (s *slot) unavailable(now time.Time, err error) *UnavailableError {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		err = s.lastErr
	}
	if err == nil {
		err = errors.New("middleware: token endpoint backing off")
	}
	wait := time.Duration(s.retryAt.Load() - now.UnixNano())
	return &UnavailableError{RetryAfter: max(wait, time.Second), Err: err}
}

// Close stops background refreshes and releases the Gate's own store.
// Requests after Close fail.
func (g *Gate) Close() error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil
	}
	g.closed = true
	g.mu.Unlock()
	g.cancel()
	g.bg.Wait()
	if e := g.app.cur.Load(); e != nil {
		e.stop()
	}
	var err error
	if g.u != nil {
		err = g.u.l1.Close()
	}
	if g.ownStore != nil {
		err = errors.Join(err, g.ownStore.Close())
	}
	return err
}
