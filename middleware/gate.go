// Package middleware gets OAuth 2.0 access tokens, keeps them fresh and
// injects them into HTTP requests, as a net/http middleware (Gate.Wrap) or
// an outbound RoundTripper (Gate.Transport).
//
// One engine serves both grants: a token source (the application token of
// client_credentials, or the token sets of subjects of authorization_code)
// behind one request path (credential, setBearer, next with one replay
// after a 401 that refuses the token). The hot path, a cached application
// token outside its refresh window, takes no lock, reads no clock and does
// no I/O: two atomic loads. A token inside its refresh window is refreshed
// once, in the background, while requests keep using it. Without a valid
// token, callers share one token request per key (singleflight) run on the
// Gate's own context, so a caller that goes away does not fail the
// others; with a shared store, one per fleet (the store's lock, then a
// re-read). Every write of a new set to a shared store is a compare-and-set
// on the version (a generation) it replaces. Failed token requests back
// off for all callers together (see Config.MinBackoff).
//
// See also: tokenstore (token stores), middleware/tasknationtest (a fake
// TaskNation server for tests) and caddymodule (the same as a Caddy module).
package middleware

import (
	"context"
	"errors"
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
	endpoint *exchanger
	ownStore *tokenstore.MemoryStore // the default store of client_credentials, closed with the Gate

	// src is where tokens come from: app or users, whichever the grant
	// uses (the other is nil).
	src   tokenSource
	app   *appSource
	users *userSource

	flight   singleflight.Group // one renewal per key at a time
	ahead    sync.Map           // key → struct{}: a background refresh runs
	backoffs *backoffs          // keys whose last attempt failed

	ctx      context.Context // the Gate's lifetime; token requests run on it
	cancel   context.CancelFunc
	closing  chan struct{} // closed when Close starts
	mu       sync.Mutex    // guards closed, bg.Add and inflight.Add
	closed   bool
	bg       sync.WaitGroup // background refreshes
	inflight sync.WaitGroup // renewals, in the background or not
}

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
	g := &Gate{cfg: c, clock: c.Clock, endpoint: newExchanger(c), closing: make(chan struct{})}
	g.log.Store(c.Logger)
	g.backoffs = newBackoffs(c.Clock, c.MaxBackoff)
	if c.Grant == GrantAuthorizationCode {
		if g.users, err = newUserSource(g); err != nil {
			return nil, err
		}
		g.src = g.users
	} else {
		store := c.Store
		if store == nil {
			m, err := tokenstore.NewMemoryStore(tokenstore.MemoryConfig{Now: c.Clock.Now})
			if err != nil {
				return nil, err
			}
			store, g.ownStore = m, m
		}
		g.app = newAppSource(g, store)
		g.src = g.app
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

// Token returns a valid application token, fetching one if needed. It
// blocks only when no valid token is held, and then no longer than ctx
// allows. The error is an *UnavailableError when no token could be had.
//
// A Gate of the authorization_code grant has no application token: use
// UserToken.
func (g *Gate) Token(ctx context.Context) (tokenstore.Token, error) {
	if g.app == nil {
		return tokenstore.Token{}, errors.New("middleware: the Gate's grant is authorization_code: use UserToken")
	}
	h, err := g.credential(ctx, "")
	if err != nil {
		return tokenstore.Token{}, err
	}
	return *h.tok, nil
}

// Close stops background refreshes and releases the Gate's own store.
// Requests after Close fail.
//
// A refresh in flight is let finish for up to RequestTimeout before the
// Gate's context is cancelled, and the store write of a rotated set runs
// on a context of its own, so that a Caddy reload that replaces this Gate
// mid-rotation does not lose the new refresh token.
func (g *Gate) Close() error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil
	}
	g.closed = true
	g.mu.Unlock()
	close(g.closing)
	done := make(chan struct{})
	go func() {
		g.inflight.Wait()
		close(done)
	}()
	t := time.NewTimer(g.cfg.RequestTimeout)
	select {
	case <-done:
	case <-t.C:
	}
	t.Stop()
	g.cancel()
	<-done
	g.bg.Wait()
	err := g.src.close()
	g.endpoint.close()
	if g.ownStore != nil {
		err = errors.Join(err, g.ownStore.Close())
	}
	return err
}
