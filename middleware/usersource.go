package middleware

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/tasknation/tokengate/tokenstore"
)

// userSource is the user context (authorization_code): a token set per
// subject.
//
// Token sets live in two layers: cache, a bigcache store the Gate owns
// (the hot path: no lock beyond bigcache's shard, no I/O), and durable,
// the Config.Store that is the source of truth (nil: memory only, and the
// cache is the truth). Refreshes of one subject run one at a time in the
// process (singleflight on the subject's key) and, when durable is a
// tokenstore.Locker, one at a time across the processes sharing it.
//
// Every set carries a version that is a generation: a connect starts a
// new lineage at a random value, each rotation adds one. A rotated set is
// written with compare-and-set on the version it was made from, so a
// writer whose lease lapsed, or whose subject was disconnected meanwhile
// by another instance, cannot overwrite what is stored; and which of two
// sets is the newer is read from their generations, never from the wall
// clocks of the machines that obtained them.
type userSource struct {
	g          *Gate
	cache      *tokenstore.MemoryStore
	durable    tokenstore.Store
	states     pendingConnects
	connectURL string
	keyPrefix  string // hashed with the subject into its key
	secure     bool   // cookies get Secure (the redirect URI is https)

	rejected  sync.Map     // key → uint64: a version the API refused
	nRejected atomic.Int64 // entries in rejected: the hot path looks only when there are any
	// unpersisted holds, per key, a rotated set whose durable write
	// failed: its refresh token is the live one (the old one is spent),
	// so it is served from memory and written again on the next refresh.
	unpersisted sync.Map // key → *tokenstore.Token
	// hot is the tokens of the subjects served most recently, by subject,
	// in front of cache.
	hot *hotSet
}

func newUserSource(g *Gate) (*userSource, error) {
	c := g.cfg
	cache, err := tokenstore.NewMemoryStore(tokenstore.MemoryConfig{
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
	u := &userSource{
		g:          g,
		cache:      cache,
		durable:    c.Store,
		states:     newStateStore(c.MaxPendingStates, c.MaxPendingPerSubject),
		connectURL: origin + c.publicPrefix + c.ConnectPath,
		keyPrefix:  strings.Join([]string{"user", c.TokenURL, c.ClientID, ""}, "\x00"),
		secure:     ru.Scheme == "https",
	}
	if ps, ok := tokenstore.AsPendingStore(c.Store); ok {
		u.states = &sharedPending{ps: ps, ttl: c.StateLifetime, perSubject: c.MaxPendingPerSubject}
	}
	u.hot = newHotSet(u, hotBound(c.CacheSizeMB))
	return u, nil
}

// truth is where the truth about a subject's tokens is read.
func (u *userSource) truth() tokenstore.Store {
	if u.durable != nil {
		return u.durable
	}
	return u.cache
}

// key is the store and singleflight key of a subject: same endpoint,
// client and subject, same key. Hashed so that no store holds the subject
// or the client id in clear.
func (u *userSource) key(subject string) (string, error) {
	if subject == "" {
		return "", &UserError{Code: CodeUnauthenticated, Description: "the request has no authenticated user"}
	}
	return u.subjectKey(subject), nil
}

func (u *userSource) subjectKey(subject string) string {
	var buf [192]byte // on the stack for the usual subject: one allocation, the key
	h := sha256.Sum256(append(append(buf[:0], u.keyPrefix...), subject...))
	var key [len("user:") + 32]byte
	copy(key[:], "user:")
	hex.Encode(key[len("user:"):], h[:16])
	return string(key[:])
}

// ready is the subject's entry in the hot set.
func (u *userSource) ready(subject string) *held {
	if subject == "" {
		return nil
	}
	return u.hot.get(subject)
}

// cached reads key's set from the bigcache layer; a fresh one goes into
// the hot set for subject's next requests.
func (u *userSource) cached(subject, key string) (held, bool, error) {
	mark := u.hot.mark()
	tok, err := u.cache.Get(context.Background(), key)
	switch {
	case err == nil:
		if u.isRejected(key, tok.Version) {
			return held{}, false, nil
		}
		p := u.g.phaseAt(tok, u.g.clock.Now())
		if p == phaseExpired {
			return held{}, false, nil
		}
		h := newHeld(key, tok, p)
		if p == phaseFresh {
			u.hot.put(subject, h, mark)
		}
		return h, true, nil
	case errors.Is(err, tokenstore.ErrExpired) && u.durable == nil:
		// The cache was the truth and has just dropped the set.
		u.forget(key, subject, u.g.logger().With(zap.String("subject_key", key)), "the refresh token ran out")
		return held{}, false, u.userError(CodeReauthorizationRequired, "the refresh token ran out: connect again")
	case !errors.Is(err, tokenstore.ErrNotFound):
		u.g.logger().Warn("token cache read failed", zap.Error(err))
	}
	return held{}, false, nil
}

// renew runs inside the singleflight of key, in five steps: lock the
// subject across the fleet, load the live set, decide whether it must be
// refreshed, rotate the refresh token, persist the new set before anyone
// uses it.
func (u *userSource) renew(ctx context.Context, key, subject string) (held, error) {
	log := u.g.logger().With(zap.String("subject_key", key))
	unlock, err := u.lock(ctx, key)
	if err != nil {
		return held{}, err
	}
	defer unlock()
	cur, err := u.loadLive(ctx, key, subject, log)
	if err != nil {
		return held{}, err
	}
	now := u.g.clock.Now()
	use, err := u.decide(key, subject, cur, now, log)
	if use != nil || err != nil {
		return u.serve(key, use, log), err
	}
	next, err := u.rotate(ctx, key, subject, cur, now, log)
	switch {
	case next == nil && err == nil: // failed, but cur's access token is still valid
		return u.serve(key, cur, log), nil
	case next == nil:
		return held{}, err
	}
	return u.persist(ctx, key, cur, next, log)
}

// lock takes the subject's lock in the durable store, when it has locks,
// so that no other process refreshes the subject meanwhile. A lock that
// cannot be had is backed off per subject, like a store that cannot be
// read.
func (u *userSource) lock(ctx context.Context, key string) (func(), error) {
	if u.durable == nil {
		return func() {}, nil
	}
	unlock, err := u.g.lock(ctx, u.durable, key)
	if err != nil {
		b := u.g.failed(key, &storeError{fmt.Errorf("lock: %w", err)}, false, "token store lock failed")
		return nil, b.unavailable(u.g.clock.Now(), nil)
	}
	return unlock, nil
}

// loadLive reads the subject's set from the source of truth, under the
// lock: another process sharing the store, or the flight that just ended,
// may have refreshed already. A set of ours whose write failed is written
// again when it descends from the stored one; it is dropped when the
// store moved on without it (another instance rotated, or the subject was
// disconnected or connected again).
func (u *userSource) loadLive(ctx context.Context, key, subject string, log *zap.Logger) (*tokenstore.Token, error) {
	cur, err := u.truth().Get(ctx, key)
	pending := u.pending(key)
	switch {
	case errors.Is(err, tokenstore.ErrExpired):
		u.forget(key, subject, log, "the refresh token ran out")
		return nil, u.userError(CodeReauthorizationRequired, "the refresh token ran out: connect again")
	case errors.Is(err, tokenstore.ErrNotFound):
		// Disconnected, by this instance or another: a set of ours still
		// waiting to be written is that of a subject who left.
		u.uncache(ctx, key)
		u.unpersisted.Delete(key)
		u.g.backoffs.reset(key)
		if u.mustReauthorize(ctx, key) {
			// Another instance deleted the set after a refusal.
			return nil, u.userError(CodeReauthorizationRequired, "TaskNation no longer accepts this user's tokens: connect again")
		}
		return nil, u.userError(CodeNotConnected, "no TaskNation account is connected for this user")
	case err != nil && pending != nil:
		log.Warn("token store read failed; using the token set held in memory", zap.Error(err))
		return pending, nil
	case err != nil:
		// A store that cannot be read (down, or a wrong encryption key)
		// is backed off per subject like a failing endpoint, so that a
		// bad key does not turn every request into a store read and an
		// error line.
		b := u.g.failed(key, &storeError{err}, false, "token store read failed")
		return nil, b.unavailable(u.g.clock.Now(), nil)
	case pending == nil:
		return cur, nil
	case !descends(pending, cur):
		u.unpersisted.Delete(key)
		return cur, nil
	}
	switch err := u.g.writeFenced(u.durable, key, cur.Version, pending); {
	case err == nil:
		u.unpersisted.Delete(key)
		log.Info("the token set held in memory only is stored again")
	case errors.Is(err, tokenstore.ErrConflict):
		u.unpersisted.Delete(key)
		return u.loadLive(ctx, key, subject, log)
	default:
		log.Error("token store write failed again; the live token set is held in memory only", zap.Error(err))
	}
	return pending, nil
}

// descends reports whether set a is a later generation of b's lineage.
func descends(a, b *tokenstore.Token) bool {
	d := a.Version - b.Version
	return a.Version > b.Version && d < 1<<20
}

func (u *userSource) pending(key string) *tokenstore.Token {
	if v, ok := u.unpersisted.Load(key); ok {
		return v.(*tokenstore.Token)
	}
	return nil
}

// decide returns cur when it is to be used as it is; nil with a nil error
// when it must be refreshed.
func (u *userSource) decide(key, subject string, cur *tokenstore.Token, now time.Time, log *zap.Logger) (*tokenstore.Token, error) {
	phase := u.g.phaseAt(cur, now)
	if u.isRejected(key, cur.Version) {
		phase = phaseExpired // the API refused it: refresh, however fresh it looks
	}
	if phase == phaseFresh {
		return cur, nil
	}
	// stillValid is what to answer when no refresh can run: the current
	// set while its access token is valid, else err.
	stillValid := func(err error) (*tokenstore.Token, error) {
		if phase == phaseDue {
			return cur, nil
		}
		return nil, err
	}
	if cur.RefreshToken == "" {
		if phase != phaseDue {
			u.forget(key, subject, log, "the access token expired and there is no refresh token")
		}
		return stillValid(u.userError(CodeReauthorizationRequired, "the access token expired and there is no refresh token: connect again"))
	}
	if !cur.RefreshExpiry.IsZero() {
		left := cur.RefreshExpiry.Sub(now)
		if left <= 0 {
			u.forget(key, subject, log, "the refresh token ran out")
			return nil, u.userError(CodeReauthorizationRequired, "the refresh token ran out: connect again")
		}
		if left < u.g.cfg.RefreshTokenWarning {
			log.Warn("refresh token runs out soon: the user must connect again before then",
				zap.Time("refresh_expiry", cur.RefreshExpiry), zap.Duration("left", left.Round(time.Minute)))
			if o, ok := u.g.cfg.Observer.(UserObserver); ok {
				o.RefreshTokenExpiring()
			}
			u.g.lifecycle(EventRefreshTokenExpiring, key, subject, cur.RefreshExpiry)
		}
	}
	if b, blocked := u.g.backoffs.blocked(key, now); blocked {
		return stillValid(b.unavailable(now, nil))
	}
	return nil, nil
}

// serve caches tok and makes it a held; nil tok is the zero held.
func (u *userSource) serve(key string, tok *tokenstore.Token, log *zap.Logger) held {
	if tok == nil {
		return held{}
	}
	u.put(key, tok, log)
	return newHeld(key, tok, u.g.phaseAt(tok, u.g.clock.Now()))
}

// rotate redeems cur's refresh token. It returns the new set, or nil and
// what to answer: cur while its access token is valid, or the error.
func (u *userSource) rotate(ctx context.Context, key, subject string, cur *tokenstore.Token, now time.Time, log *zap.Logger) (*tokenstore.Token, error) {
	next, err := u.g.redeem(ctx, cur.RefreshToken, log)
	if err == nil {
		// Rotation does not extend the refresh token's life: it counts
		// from the authorization_code grant.
		next.RefreshExpiry = cur.RefreshExpiry
		next.ConnectedAt = cur.ConnectedAt
		next.Version = cur.Version + 1
		return next, nil
	}
	var ee *EndpointError
	if errors.As(err, &ee) && ee.Kind == KindRejected && ee.Code == "invalid_grant" {
		u.forget(key, subject, log, "the authorization server refused the refresh token (invalid_grant)")
		return nil, u.userError(CodeReauthorizationRequired, "TaskNation refused the refresh token: connect again")
	}
	holding := u.g.phaseAt(cur, now) == phaseDue && !u.isRejected(key, cur.Version)
	b := u.g.failed(key, err, holding, "token request failed")
	if holding {
		return nil, nil
	}
	return nil, b.unavailable(u.g.clock.Now(), err)
}

// persist writes next, made from cur, to the durable store before anyone
// uses it, fenced on cur's version, then caches it.
func (u *userSource) persist(ctx context.Context, key string, cur, next *tokenstore.Token, log *zap.Logger) (held, error) {
	if u.durable != nil {
		err := u.g.writeFenced(u.durable, key, cur.Version, next)
		switch {
		case errors.Is(err, tokenstore.ErrConflict):
			return u.fenced(ctx, key, cur, next, log)
		case err != nil:
			// The old refresh token is spent (or soon will be): losing
			// the new one would log the user out. Keep it in memory
			// and serve it; the next refresh writes it again.
			log.Error("token store write failed after a rotation; the new token set is held in memory only", zap.Error(err))
			u.unpersisted.Store(key, next)
		default:
			u.unpersisted.Delete(key)
		}
	}
	h := u.serve(key, next, log)
	// Only now that the cache holds the new set: a replay that checked
	// the refused version before this point reads the new set, or joins
	// this flight.
	u.unreject(key, cur.Version)
	if h.phase == phaseExpired {
		// Stored all the same: its refresh token is the live one. But its
		// access token is of no use, and asking again at once would only
		// hammer the endpoint.
		err := errExpiredOnArrival(next)
		b := u.g.failed(key, err, false, "token request failed")
		return held{}, b.unavailable(u.g.clock.Now(), err)
	}
	u.g.backoffs.reset(key)
	log.Info("user token refreshed", zap.Duration("lifetime", next.Lifetime()), zap.Uint64("version", next.Version))
	return h, nil
}

// fenced handles a rotated set the store refused: the stored set is no
// longer cur. Either another instance refreshed while our lease had
// lapsed (its set is the one every instance uses; ours, issued in the
// same grace window, is dropped), or the subject was disconnected
// meanwhile (and stays so).
//
// A third case: cur was a set of ours the store never got (its writes
// failed), and the store holds the set cur descends from: next is then
// written over it.
func (u *userSource) fenced(ctx context.Context, key string, cur, next *tokenstore.Token, log *zap.Logger) (held, error) {
	u.unreject(key, cur.Version)
	u.unpersisted.Delete(key)
	newer, err := u.durable.Get(ctx, key)
	if err == nil && descends(next, newer) && newer.Version != cur.Version {
		werr := u.g.writeFenced(u.durable, key, newer.Version, next)
		if werr != nil && !errors.Is(werr, tokenstore.ErrConflict) {
			log.Error("token store write failed after a rotation; the new token set is held in memory only", zap.Error(werr))
			u.unpersisted.Store(key, next)
		}
		if werr == nil || !errors.Is(werr, tokenstore.ErrConflict) {
			u.g.backoffs.reset(key)
			return u.serve(key, next, log), nil
		}
		newer, err = u.durable.Get(ctx, key)
	}
	switch {
	case err == nil:
		log.Warn("another instance refreshed this subject while our lease had lapsed; using its token set")
		u.g.backoffs.reset(key)
		return u.serve(key, newer, log), nil
	case errors.Is(err, tokenstore.ErrNotFound):
		log.Info("the subject was disconnected during the refresh; its new token set is dropped")
		u.uncache(ctx, key)
		u.g.backoffs.reset(key)
		return held{}, u.userError(CodeNotConnected, "no TaskNation account is connected for this user")
	default:
		b := u.g.failed(key, &storeError{err}, false, "token store read failed")
		u.uncache(ctx, key)
		return held{}, b.unavailable(u.g.clock.Now(), nil)
	}
}

// redeem runs the refresh_token grant. A request that got no answer may
// have rotated the refresh token on the server, which then accepts the old
// one again for its grace period: such failures are retried with the same
// refresh token, with backoff, until GracePeriod after the first attempt,
// unless the Gate is closing.
func (g *Gate) redeem(ctx context.Context, refreshToken string, log *zap.Logger) (*tokenstore.Token, error) {
	first := g.clock.Now()
	wait := g.cfg.MinBackoff
	for attempt := 1; ; attempt++ {
		tok, err := g.endpoint.refresh(ctx, refreshToken)
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
		case <-g.closing:
			t.Stop()
			return nil, err
		case <-ctx.Done():
			t.Stop()
			return nil, err
		}
		wait = min(2*wait, g.cfg.MaxBackoff)
	}
}

// put puts tok in the cache (which, without a durable store, is the only
// layer).
func (u *userSource) put(key string, tok *tokenstore.Token, log *zap.Logger) {
	if err := u.cache.Set(context.Background(), key, tok); err != nil {
		log.Error("token cache write failed", zap.Error(err))
	}
	u.hot.drop(key) // after the cache moved on: see hotSet.put
}

// uncache deletes key's set from memory.
func (u *userSource) uncache(ctx context.Context, key string) {
	_ = u.cache.Delete(ctx, key)
	u.hot.drop(key)
}

// forget deletes a subject's tokens everywhere, after the authorization
// server refused them or they ran out, and leaves the mark that says the
// user must connect again (see markReauthorization).
func (u *userSource) forget(key, subject string, log *zap.Logger, why string) {
	u.drop(key, log)
	u.markReauthorization(key, log)
	log.Warn("user tokens deleted; the user must connect again", zap.String("reason", why))
	if o, ok := u.g.cfg.Observer.(UserObserver); ok {
		o.Reauthorization()
	}
	u.g.lifecycle(EventReauthorizationRequired, key, subject, time.Time{})
}

// drop deletes a subject's tokens and every trace of them in memory.
func (u *userSource) drop(key string, log *zap.Logger) error {
	ctx, cancel := u.g.writeContext()
	defer cancel()
	var err error
	if u.durable != nil {
		if err = u.durable.Delete(ctx, key); err != nil {
			log.Error("token store delete failed", zap.Error(err))
		}
	}
	u.uncache(ctx, key)
	u.unpersisted.Delete(key)
	u.g.backoffs.reset(key)
	u.unreject(key, 0)
	return err
}

// reject marks version of key's set as refused by the API.
func (u *userSource) reject(key string, version uint64, now time.Time) bool {
	tok, err := u.cache.Get(context.Background(), key)
	if err != nil || tok.Version != version {
		// Moved past it already, or the cache let the set go (size): the
		// hot set must not go on serving it either.
		u.hot.drop(key)
		return true
	}
	if young(tok, now) {
		return false
	}
	if _, loaded := u.rejected.Swap(key, version); !loaded {
		u.nRejected.Add(1)
	}
	u.hot.drop(key)
	return true
}

// unreject forgets a refused version once key has moved past it (version
// 0: whatever it was).
func (u *userSource) unreject(key string, version uint64) {
	var gone bool
	if version == 0 {
		_, gone = u.rejected.LoadAndDelete(key)
	} else {
		gone = u.rejected.CompareAndDelete(key, version)
	}
	if gone {
		u.nRejected.Add(-1)
	}
}

// isRejected reports whether the API refused this version of key's set.
func (u *userSource) isRejected(key string, version uint64) bool {
	if u.nRejected.Load() == 0 {
		return false
	}
	v, ok := u.rejected.Load(key)
	return ok && v.(uint64) == version
}

func (u *userSource) userError(code, desc string) *UserError {
	return &UserError{Code: code, Description: desc, ConnectURL: u.connectURL}
}

func (u *userSource) close() error {
	u.hot.close()
	return u.cache.Close()
}

// store writes a new connect's set for key, in the flight of key so that
// no refresh of this process overlaps it.
func (u *userSource) store(ctx context.Context, key string, tok *tokenstore.Token) error {
	return u.g.serialized(ctx, key, func() (any, error) {
		wctx, cancel := u.g.writeContext()
		defer cancel()
		if u.durable != nil {
			var err error
			for range 3 {
				if err = u.durable.Set(wctx, key, tok); err == nil {
					break
				}
			}
			if err != nil {
				return nil, err
			}
		}
		u.clearReauthorization(wctx, key, u.g.logger().With(zap.String("subject_key", key)))
		u.unpersisted.Delete(key)
		u.g.backoffs.reset(key)
		u.unreject(key, 0)
		err := u.cache.Set(wctx, key, tok)
		u.hot.drop(key)
		if err != nil {
			return nil, err
		}
		return newHeld(key, tok, u.g.phaseAt(tok, u.g.clock.Now())), nil
	})
}

// ConnectURL is the absolute URL at which a person connects their
// TaskNation account (authorization_code grant); "" for client_credentials.
func (g *Gate) ConnectURL() string {
	if g.users == nil {
		return ""
	}
	return g.users.connectURL
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

// UserToken returns a valid access token of subject, refreshing it if
// needed. It blocks only when the subject holds no valid token, and no
// longer than ctx allows.
func (g *Gate) UserToken(ctx context.Context, subject string) (tokenstore.Token, error) {
	if g.users == nil {
		return tokenstore.Token{}, errNotUserGate
	}
	h, err := g.credential(ctx, subject)
	if err != nil {
		return tokenstore.Token{}, err
	}
	return *h.tok, nil
}

// Disconnect deletes subject's tokens from every layer. A refresh of the
// subject in flight in this process ends first, so it cannot write them
// back; one running in another process sharing the store finds them gone
// when it writes (its write is a compare-and-set on the version it
// refreshed) and drops its new set. With a Locker store the delete waits
// up to RequestTimeout for the subject's lock, and deletes without it
// after that.
//
// When a set was deleted, the LifecycleObserver gets a disconnected event
// and, with a RevocationURL, the refresh token is revoked there (RFC
// 7009) after the local delete: best effort, within RequestTimeout, even
// if ctx ends first; a failure is logged and does not fail the
// disconnect.
//
// When the store deleted the set but fewer replicas than it asks
// confirmed the delete (tokenstore.ErrNotReplicated), a failover could
// bring the set back: the rest of the disconnect happens (memory, event,
// revocation, which makes such a set useless), and the error, wrapping
// ErrNotReplicated, says to disconnect again, which waits again.
func (g *Gate) Disconnect(ctx context.Context, subject string) error {
	if g.users == nil {
		return errNotUserGate
	}
	u := g.users
	key, err := u.key(subject)
	if err != nil {
		return err
	}
	log := g.logger().With(zap.String("subject_key", key))
	var had bool
	var refreshToken string
	var unconfirmed error // the store deleted the set but its replicas did not confirm
	err = g.serialized(ctx, key, func() (any, error) {
		if u.durable != nil {
			unlock, err := g.lock(g.ctx, u.durable, key)
			if err == nil {
				defer unlock()
			} else {
				log.Warn("disconnect: the subject's lock could not be had; deleting without it (a refresh elsewhere is fenced)", zap.Error(err))
			}
		}
		had, refreshToken = u.held(ctx, key)
		if err := u.drop(key, log); errors.Is(err, tokenstore.ErrNotReplicated) {
			unconfirmed = err
		} else if err != nil {
			return nil, err
		}
		wctx, cancel := g.writeContext()
		defer cancel()
		u.clearReauthorization(wctx, key, log)
		return nil, nil
	})
	if err != nil {
		return fmt.Errorf("middleware: disconnect: %w", err)
	}
	if had {
		g.lifecycle(EventDisconnected, key, subject, time.Time{})
	}
	if refreshToken != "" && g.endpoint.revocationURL != "" {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.cfg.RequestTimeout)
		defer cancel()
		if err := g.endpoint.revoke(rctx, refreshToken); err != nil {
			log.Warn("disconnect: revoking the refresh token failed; it stays valid at the authorization server until it runs out", zap.Error(err))
		} else {
			log.Info("disconnect: refresh token revoked")
		}
	}
	if unconfirmed != nil {
		return fmt.Errorf("middleware: disconnect: %w", unconfirmed)
	}
	return nil
}

// held reports whether key has a set to delete, and its live refresh
// token when it can be read. A set that cannot be read (a store error, a
// wrong encryption key) counts as one.
func (u *userSource) held(ctx context.Context, key string) (bool, string) {
	if p := u.pending(key); p != nil {
		return true, p.RefreshToken
	}
	tok, err := u.truth().Get(ctx, key)
	switch {
	case err == nil:
		return true, tok.RefreshToken
	case errors.Is(err, tokenstore.ErrNotFound):
		return false, ""
	}
	return true, ""
}
