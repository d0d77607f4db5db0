package middleware

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/tasknation/tokengate/tokenstore"
)

// users is the user-context (authorization_code) state of a Gate.
//
// Token sets live in two layers: l1, a bigcache store the Gate owns (the
// hot path: no lock beyond bigcache's shard, no I/O), and durable, the
// Config.Store that is the source of truth (nil: memory only). Refreshes
// of one subject run one at a time in the process (singleflight on the
// subject's key) and, when durable is a tokenstore.Locker, one at a time
// across the processes sharing it.
type users struct {
	l1         *tokenstore.MemoryStore
	durable    tokenstore.Store
	states     *stateStore
	connectURL string
	keyPrefix  string       // hashed with the subject into its store key
	ahead      sync.Map     // key → struct{}: a background refresh runs
	revoked    sync.Map     // key → uint64: a version the API rejected (Invalidate)
	nRevoked   atomic.Int64 // entries in revoked: the hot path looks only when there are any
	failing    sync.Map     // key → *slot: backoff state of subjects whose refresh failed
	secure     bool         // cookies get Secure (the redirect URI is https)
}

func newUsers(c Config) (*users, error) {
	l1, err := tokenstore.NewMemoryStore(tokenstore.MemoryConfig{
		Now:             c.Clock.Now,
		MaxSizeMB:       c.CacheSizeMB,
		ExpectedEntries: 4096,
		Shards:          256,
	})
	if err != nil {
		return nil, err
	}
	ru, _ := url.Parse(c.RedirectURI) // checked by withDefaults
	origin := (&url.URL{Scheme: ru.Scheme, Host: ru.Host}).String()
	return &users{
		l1:         l1,
		durable:    c.Store,
		states:     newStateStore(c.MaxPendingStates),
		connectURL: origin + c.ConnectPath,
		keyPrefix:  strings.Join([]string{"user", c.TokenURL, c.ClientID, ""}, "\x00"),
		secure:     ru.Scheme == "https",
	}, nil
}

// revoke marks version of key's set as rejected by the API.
func (u *users) revoke(key string, version uint64) {
	if _, loaded := u.revoked.Swap(key, version); !loaded {
		u.nRevoked.Add(1)
	}
}

// unrevoke forgets a rejected version once key has moved past it (version
// 0: whatever it was).
func (u *users) unrevoke(key string, version uint64) {
	var gone bool
	if version == 0 {
		_, gone = u.revoked.LoadAndDelete(key)
	} else {
		gone = u.revoked.CompareAndDelete(key, version)
	}
	if gone {
		u.nRevoked.Add(-1)
	}
}

// isRevoked reports whether the API rejected this version of key's set.
func (u *users) isRevoked(key string, version uint64) bool {
	if u.nRevoked.Load() == 0 {
		return false
	}
	v, ok := u.revoked.Load(key)
	return ok && v.(uint64) == version
}

// source is where the truth about a subject's tokens is read.
func (u *users) source() tokenstore.Store {
	if u.durable != nil {
		return u.durable
	}
	return u.l1
}

// userKey is the store and singleflight key of a subject: same endpoint,
// client and subject, same key. Hashed so that no store holds the subject
// or the client id in clear.
func (u *users) userKey(subject string) string {
	var buf [192]byte // on the stack for the usual subject: one allocation, the key
	h := sha256.Sum256(append(append(buf[:0], u.keyPrefix...), subject...))
	var key [len("user:") + 32]byte
	copy(key[:], "user:")
	hex.Encode(key[len("user:"):], h[:16])
	return string(key[:])
}

// ConnectURL is the absolute URL at which a person connects their
// TaskNation account (authorization_code grant); "" for client_credentials.
func (g *Gate) ConnectURL() string {
	if g.u == nil {
		return ""
	}
	return g.u.connectURL
}

type subjectKey struct{}

// WithSubject returns a context carrying subject, for requests sent through
// a Transport of an authorization_code Gate.
func WithSubject(ctx context.Context, subject string) context.Context {
	return context.WithValue(ctx, subjectKey{}, subject)
}

// SubjectFrom returns the subject WithSubject put in ctx, or "".
func SubjectFrom(ctx context.Context) string {
	s, _ := ctx.Value(subjectKey{}).(string)
	return s
}

var errNotUserGate = errors.New("middleware: the Gate's grant is client_credentials; subjects need authorization_code")

// AuthorizeSubject sets "Authorization: Bearer <token>" of subject's token
// set on r, replacing any Authorization header it had. subject must come
// from a trusted source (see Config.Subject). On error r is left without
// the header the client sent, and the error is for WriteError: a
// *UserError (401) or an *UnavailableError (503).
func (g *Gate) AuthorizeSubject(r *http.Request, subject string) error {
	if r.Header == nil {
		r.Header = make(http.Header, 1)
	}
	delete(r.Header, "Authorization")
	tok, err := g.UserToken(r.Context(), subject)
	if err != nil {
		return err
	}
	r.Header["Authorization"] = []string{"Bearer " + tok.AccessToken}
	return nil
}

// UserToken returns a valid access token of subject, refreshing it if
// needed. It blocks only when the subject holds no valid token, and no
// longer than ctx allows.
func (g *Gate) UserToken(ctx context.Context, subject string) (tokenstore.Token, error) {
	tok, err := g.userToken(ctx, subject)
	if err != nil {
		var ue *UnavailableError
		if o := g.cfg.Observer; o != nil && errors.As(err, &ue) {
			o.Refused()
		}
		return tokenstore.Token{}, err
	}
	return *tok, nil
}

func (g *Gate) userToken(ctx context.Context, subject string) (*tokenstore.Token, error) {
	if g.u == nil {
		return nil, errNotUserGate
	}
	if subject == "" {
		return nil, &UserError{Code: CodeUnauthenticated, Description: "the request has no authenticated user"}
	}
	key := g.u.userKey(subject)
	tok, err := g.u.l1.Get(ctx, key)
	if err == nil && !g.u.isRevoked(key, tok.Version) {
		switch g.userPhase(tok, g.clock.Now()) {
		case phaseFresh:
			g.cacheLookup(true)
			return tok, nil
		case phaseDue:
			g.cacheLookup(true)
			g.refreshUserAhead(key)
			return tok, nil
		}
	} else if errors.Is(err, tokenstore.ErrExpired) && g.u.durable == nil {
		// The cache was the source and has just dropped the set.
		g.forget(key, g.logger().With(zap.String("subject_key", key)), "the refresh token ran out")
		return nil, g.userError(CodeReauthorizationRequired, "the refresh token ran out: connect again")
	} else if !errors.Is(err, tokenstore.ErrNotFound) {
		g.logger().Warn("token cache read failed", zap.Error(err))
	}
	g.cacheLookup(false)
	return g.awaitUser(ctx, key)
}

func (g *Gate) cacheLookup(hit bool) {
	if o := g.cfg.Observer; o != nil {
		o.CacheLookup(hit)
	}
}

// userPhase places tok at now: fresh, due for a refresh, or expired. The
// refresh point has a jitter drawn from the token's version, so it is
// stable for one token and spread across subjects.
func (g *Gate) userPhase(tok *tokenstore.Token, now time.Time) int32 {
	life := max(tok.Lifetime(), 0) // a damaged stored record may claim less
	if !now.Before(tok.Expiry.Add(-min(g.cfg.ExpiryLeeway, life/10))) {
		return phaseExpired
	}
	window := time.Duration(float64(life) * g.cfg.RefreshWindow)
	jitter := time.Duration(tok.Version % uint64(window/4+1))
	if !now.Before(tok.Expiry.Add(-window - jitter)) {
		return phaseDue
	}
	return phaseFresh
}

// refreshUserAhead starts one background refresh of a subject's token that
// is still valid.
func (g *Gate) refreshUserAhead(key string) {
	if f, ok := g.u.failing.Load(key); ok && g.clock.Now().UnixNano() < f.(*slot).retryAt.Load() {
		return
	}
	if _, running := g.u.ahead.LoadOrStore(key, struct{}{}); running {
		return
	}
	started := g.background(func() {
		defer g.u.ahead.Delete(key)
		<-g.flight.DoChan(key, func() (any, error) { return g.refreshUser(key) })
	})
	if !started {
		g.u.ahead.Delete(key)
	}
}

// awaitUser waits for the shared refresh of key, or for ctx.
func (g *Gate) awaitUser(ctx context.Context, key string) (*tokenstore.Token, error) {
	if f, ok := g.u.failing.Load(key); ok {
		if now := g.clock.Now(); now.UnixNano() < f.(*slot).retryAt.Load() {
			return nil, f.(*slot).unavailable(now, nil)
		}
	}
	ch := g.flight.DoChan(key, func() (any, error) { return g.refreshUser(key) })
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		if tok, ok := r.Val.(*tokenstore.Token); ok && tok != nil {
			return tok, nil
		}
		// Joined a Disconnect of this subject.
		return nil, g.userError(CodeNotConnected, "no TaskNation account is connected for this user")
	case <-ctx.Done():
		return nil, &UnavailableError{RetryAfter: time.Second, Err: fmt.Errorf("%w: %w", errClientGone, ctx.Err())}
	}
}

// refreshUser runs inside the singleflight of key: it loads the subject's
// set from the source of truth and, when its access token is due,
// redeems the refresh token, persisting the new set before anyone uses
// it. It returns a usable *tokenstore.Token or a *UserError or
// *UnavailableError.
func (g *Gate) refreshUser(key string) (val any, err error) {
	defer func() {
		if p := recover(); p != nil {
			g.logger().Error("token refresh panicked", zap.String("panic", fmt.Sprintf("%T", p)), zap.Stack("stack"))
			val, err = nil, &UnavailableError{RetryAfter: time.Second, Err: errors.New("middleware: token refresh panicked")}
		}
	}()
	log := g.logger().With(zap.String("subject_key", key))
	ctx := g.ctx
	if l, ok := g.u.durable.(tokenstore.Locker); ok {
		lctx, cancel := context.WithTimeout(ctx, g.cfg.RequestTimeout)
		unlock, err := l.Lock(lctx, key)
		cancel()
		switch {
		case err == nil:
			defer unlock()
		case !errors.Is(err, tokenstore.ErrLockUnsupported):
			// Backed off per subject, like a store that cannot be read.
			f := g.failingSlot(key)
			f.backOff(g, g.clock.Now(), &storeError{fmt.Errorf("lock: %w", err)}, "token store lock failed")
			return nil, f.unavailable(g.clock.Now(), nil)
		}
	}
	// Another process sharing the store, or the flight that just ended,
	// may have refreshed already: the store is read under the lock.
	cur, err := g.u.source().Get(ctx, key)
	if errors.Is(err, tokenstore.ErrExpired) {
		_ = g.u.l1.Delete(ctx, key)
		g.forget(key, log, "the refresh token ran out")
		return nil, g.userError(CodeReauthorizationRequired, "the refresh token ran out: connect again")
	}
	if errors.Is(err, tokenstore.ErrNotFound) {
		_ = g.u.l1.Delete(ctx, key)
		return nil, g.userError(CodeNotConnected, "no TaskNation account is connected for this user")
	}
	if err != nil {
		// A store that cannot be read (down, or a wrong encryption key)
		// is backed off per subject like a failing endpoint, so that a
		// bad key does not turn every request into a store read and an
		// error line.
		f := g.failingSlot(key)
		f.backOff(g, g.clock.Now(), &storeError{err}, "token store read failed")
		return nil, f.unavailable(g.clock.Now(), nil)
	}
	if g.u.durable != nil {
		// A set newer than the store's is in memory only when its write
		// failed after a rotation: its refresh token is the live one.
		if mem, merr := g.u.l1.Get(ctx, key); merr == nil && mem.ObtainedAt.After(cur.ObtainedAt) {
			if err := g.persist(ctx, key, mem); err != nil {
				log.Error("token store write failed again; the live token set is held in memory only", zap.Error(err))
			}
			cur = mem
		}
	}
	now := g.clock.Now()
	phase := g.userPhase(cur, now)
	if g.u.isRevoked(key, cur.Version) {
		phase = phaseExpired // the API rejected it: refresh, however fresh it looks
	}
	if phase == phaseFresh {
		g.cache(key, cur, log)
		return cur, nil
	}
	// stillValid is what to answer when no refresh can run: the current
	// set while its access token is valid, else nothing.
	stillValid := func() *tokenstore.Token {
		if phase == phaseDue {
			g.cache(key, cur, log)
			return cur
		}
		return nil
	}
	if cur.RefreshToken == "" {
		if v := stillValid(); v != nil {
			return v, nil
		}
		g.forget(key, log, "the access token expired and there is no refresh token")
		return nil, g.userError(CodeReauthorizationRequired, "the access token expired and there is no refresh token: connect again")
	}
	if !cur.RefreshExpiry.IsZero() {
		left := cur.RefreshExpiry.Sub(now)
		if left <= 0 {
			g.forget(key, log, "the refresh token ran out")
			return nil, g.userError(CodeReauthorizationRequired, "the refresh token ran out: connect again")
		}
		if left < g.cfg.RefreshTokenWarning {
			log.Warn("refresh token runs out soon: the user must connect again before then",
				zap.Time("refresh_expiry", cur.RefreshExpiry), zap.Duration("left", left.Round(time.Minute)))
			if o, ok := g.cfg.Observer.(UserObserver); ok {
				o.RefreshTokenExpiring()
			}
		}
	}
	if f, ok := g.u.failing.Load(key); ok && now.UnixNano() < f.(*slot).retryAt.Load() {
		if v := stillValid(); v != nil {
			return v, nil
		}
		return nil, f.(*slot).unavailable(now, nil)
	}
	// The backoff state is made only for a subject whose refresh fails:
	// a million healthy users cost nothing here.
	f := g.failingSlot

	next, err := g.redeem(ctx, cur.RefreshToken, log)
	if err != nil {
		var ee *EndpointError
		if errors.As(err, &ee) && ee.Kind == "rejected" && ee.Code == "invalid_grant" {
			g.forget(key, log, "the authorization server refused the refresh token (invalid_grant)")
			return nil, g.userError(CodeReauthorizationRequired, "TaskNation refused the refresh token: connect again")
		}
		fs := f(key)
		fs.failed(g, g.clock.Now(), err)
		if v := stillValid(); v != nil {
			return v, nil
		}
		return nil, fs.unavailable(g.clock.Now(), err)
	}
	// Rotation does not extend the refresh token's life: it counts from
	// the authorization_code grant.
	next.RefreshExpiry = cur.RefreshExpiry
	err = g.persistRotated(ctx, key, cur.Version, next)
	if errors.Is(err, tokenstore.ErrConflict) {
		// Our lease ran out mid-refresh and another instance stored a
		// newer set meanwhile (the store's version fenced our write): its
		// set is the one every instance uses; ours, issued in the same
		// grace window, is dropped.
		if newer, gerr := g.u.durable.Get(ctx, key); gerr == nil {
			log.Warn("another instance refreshed this subject while our lease had lapsed; using its token set")
			g.cache(key, newer, log)
			g.u.unrevoke(key, cur.Version)
			return newer, nil
		}
		err = g.persist(ctx, key, next) // the newer set is gone again: ours is the live one
	}
	if err != nil {
		// The old refresh token is spent (or soon will be): losing the new
		// one would log the user out. Keep it in memory and serve it; the
		// next refresh writes again.
		log.Error("token store write failed after a rotation; the new token set is held in memory only", zap.Error(err))
	}
	g.cache(key, next, log)
	// Only now that the cache holds the new set: a replay that checked
	// the rejected version before this point reads the new set, or joins
	// this flight.
	g.u.unrevoke(key, cur.Version)
	if g.userPhase(next, g.clock.Now()) == phaseExpired {
		// Stored all the same: its refresh token is the live one. But its
		// access token is of no use, and asking again at once would only
		// hammer the endpoint.
		err := errExpiredOnArrival(next)
		fs := f(key)
		fs.failed(g, g.clock.Now(), err)
		return nil, fs.unavailable(g.clock.Now(), err)
	}
	g.u.failing.Delete(key)
	log.Info("user token refreshed", zap.Duration("lifetime", next.Lifetime()), zap.Uint64("version", next.Version))
	return next, nil
}

// redeem runs the refresh_token grant. A request that got no answer may
// have rotated the refresh token on the server, which then accepts the old
// one again for its grace period: such failures are retried with the same
// refresh token, with backoff, until GracePeriod after the first attempt.
func (g *Gate) redeem(ctx context.Context, refreshToken string, log *zap.Logger) (*tokenstore.Token, error) {
	first := g.clock.Now()
	wait := g.cfg.MinBackoff
	for attempt := 1; ; attempt++ {
		tok, err := g.x.refresh(ctx, refreshToken)
		var ee *EndpointError
		if err == nil || !errors.As(err, &ee) || !ee.noAnswer() {
			return tok, err
		}
		d := wait/2 + time.Duration(rand.Int64N(int64(wait/2)+1))
		// The retry must reach the server inside its grace window, which
		// opened no earlier than the first attempt.
		if g.clock.Now().Add(d+g.cfg.RequestTimeout/4).Sub(first) >= g.cfg.GracePeriod {
			return nil, err
		}
		log.Warn("refresh got no answer; retrying with the same refresh token inside the grace period",
			zap.Error(err), zap.Int("attempt", attempt), zap.Duration("retry_in", d))
		fired := make(chan struct{})
		t := g.clock.AfterFunc(d, func() { close(fired) })
		select {
		case <-fired:
		case <-ctx.Done():
			t.Stop()
			return nil, err
		}
		wait = min(2*wait, g.cfg.MaxBackoff)
	}
}

// persist writes a new token set to the durable store, retrying a failed
// write twice.
func (g *Gate) persist(ctx context.Context, key string, tok *tokenstore.Token) error {
	if g.u.durable == nil {
		return nil
	}
	var err error
	for range 3 {
		if err = g.u.durable.Set(ctx, key, tok); err == nil {
			return nil
		}
	}
	return err
}

// persistRotated writes the set a refresh of the stored version old
// produced: with a tokenstore.CASStore only if the store still holds that
// version, so that an instance whose lease lapsed mid-refresh cannot
// overwrite a newer set (the error then wraps tokenstore.ErrConflict).
func (g *Gate) persistRotated(ctx context.Context, key string, old uint64, tok *tokenstore.Token) error {
	cas, ok := g.u.durable.(tokenstore.CASStore)
	if !ok {
		return g.persist(ctx, key, tok)
	}
	var err error
	for range 3 {
		err = cas.CompareAndSet(ctx, key, old, tok)
		if errors.Is(err, errors.ErrUnsupported) { // Sealed over a store without compare-and-set
			return g.persist(ctx, key, tok)
		}
		if err == nil || errors.Is(err, tokenstore.ErrConflict) {
			return err
		}
	}
	return err
}

// cache puts tok in the in-memory layer (which, without a durable store,
// is the only one).
func (g *Gate) cache(key string, tok *tokenstore.Token, log *zap.Logger) {
	if err := g.u.l1.Set(g.ctx, key, tok); err != nil {
		log.Error("token cache write failed", zap.Error(err))
	}
}

// forget deletes a subject's tokens everywhere, after the authorization
// server refused them or they ran out.
func (g *Gate) forget(key string, log *zap.Logger, why string) {
	g.deleteUser(key, log)
	g.u.failing.Delete(key)
	g.u.unrevoke(key, 0)
	log.Warn("user tokens deleted; the user must connect again", zap.String("reason", why))
	if o, ok := g.cfg.Observer.(UserObserver); ok {
		o.Reauthorization()
	}
}

func (g *Gate) deleteUser(key string, log *zap.Logger) {
	if g.u.durable != nil {
		if err := g.u.durable.Delete(g.ctx, key); err != nil {
			log.Error("token store delete failed", zap.Error(err))
		}
	}
	_ = g.u.l1.Delete(g.ctx, key)
}

// failingSlot returns the backoff state of key, creating it.
func (g *Gate) failingSlot(key string) *slot {
	if f, ok := g.u.failing.Load(key); ok {
		return f.(*slot)
	}
	f, _ := g.u.failing.LoadOrStore(key, &slot{key: key})
	return f.(*slot)
}

func (g *Gate) userError(code, desc string) *UserError {
	return &UserError{Code: code, Description: desc, ConnectURL: g.u.connectURL}
}

// storeError is a durable store that could not be read: a client sees
// 503, the log the cause.
type storeError struct{ err error }

func (e *storeError) Error() string { return "middleware: token store: " + e.err.Error() }
func (e *storeError) Unwrap() error { return e.err }

// Disconnect deletes subject's tokens from every layer. A refresh of the
// subject in flight in this process ends first, so it cannot write them
// back; with a Locker store the delete holds the subject's lock.
func (g *Gate) Disconnect(ctx context.Context, subject string) error {
	if g.u == nil {
		return errNotUserGate
	}
	if subject == "" {
		return &UserError{Code: CodeUnauthenticated, Description: "the request has no authenticated user"}
	}
	key := g.u.userKey(subject)
	err := g.exclusive(ctx, key, func() (any, error) {
		if l, ok := g.u.durable.(tokenstore.Locker); ok {
			lctx, cancel := context.WithTimeout(g.ctx, g.cfg.RequestTimeout)
			unlock, err := l.Lock(lctx, key)
			cancel()
			if err == nil {
				defer unlock()
			}
		}
		var err error
		if g.u.durable != nil {
			err = g.u.durable.Delete(g.ctx, key)
		}
		_ = g.u.l1.Delete(g.ctx, key)
		g.u.failing.Delete(key)
		g.u.unrevoke(key, 0)
		return nil, err
	})
	if err != nil {
		return fmt.Errorf("middleware: disconnect: %w", err)
	}
	return nil
}

// exclusive runs fn inside the singleflight of key, so that it never
// overlaps a refresh of key in this process: when it joins a flight that
// was running, it waits for that one to end and tries again. Callers that
// join fn's flight get what fn returns (a *tokenstore.Token, or nil for
// "no tokens").
func (g *Gate) exclusive(ctx context.Context, key string, fn func() (any, error)) error {
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
