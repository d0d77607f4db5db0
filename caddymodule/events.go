package caddymodule

import (
	"errors"
	"sync"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"go.uber.org/zap"

	"github.com/tasknation/tokengate/middleware"
)

// Names of the Caddy events the handler emits: "oauth2_token." and the
// kind of the middleware's LifecycleEvent.
const (
	EventConnected               = "oauth2_token.connected"
	EventDisconnected            = "oauth2_token.disconnected"
	EventReauthorizationRequired = "oauth2_token.reauthorization_required"
	EventRefreshTokenExpiring    = "oauth2_token.refresh_token_expiring"
)

// eventQueue is how many events wait for the events app before new ones
// are dropped (with a warning): handlers run synchronously, and a slow one
// must not hold up requests.
const eventQueue = 1024

// eventRelay is the LifecycleObserver of a pooled Gate: it turns the
// Gate's lifecycle events into Caddy events, emitted through the events
// app of the newest config that uses the Gate, off the request path, in
// order, by one goroutine that stops with the Gate.
type eventRelay struct {
	to   atomic.Pointer[eventSink]
	q    chan middleware.LifecycleEvent
	stop chan struct{}
	done sync.WaitGroup
}

// eventSink is where one config's events go.
type eventSink struct {
	ctx            caddy.Context // the handler's: the events' origin
	app            *caddyevents.App
	includeSubject bool
	logger         *zap.Logger
}

// eventsApp is the config's events app; nil when the config has none
// (no handler is there to receive an event) or for a context without a
// config (a handler provisioned outside a running Caddy, as unit tests
// do).
func eventsApp(ctx caddy.Context) (app *caddyevents.App, err error) {
	a, err := ctx.AppIfConfigured("events")
	if errors.Is(err, caddy.ErrNotConfigured) {
		return nil, nil // no events app, no handler to emit to
	}
	if err != nil {
		return nil, err
	}
	return a.(*caddyevents.App), nil
}

func newEventRelay() *eventRelay {
	r := &eventRelay{q: make(chan middleware.LifecycleEvent, eventQueue), stop: make(chan struct{})}
	r.done.Add(1)
	go r.run()
	return r
}

// use sends the events from now on to sink's events app.
func (r *eventRelay) use(sink *eventSink) { r.to.Store(sink) }

// UserEvent queues ev; it never blocks.
func (r *eventRelay) UserEvent(ev middleware.LifecycleEvent) {
	select {
	case r.q <- ev:
	default:
		if s := r.to.Load(); s != nil {
			s.logger.Warn("event queue full: a lifecycle event is dropped (are event handlers slow?)",
				zap.String("event", "oauth2_token."+string(ev.Kind)), zap.String("subject_key", ev.SubjectKey))
		}
	}
}

func (r *eventRelay) run() {
	defer r.done.Done()
	for {
		select {
		case ev := <-r.q:
			r.emit(ev)
		case <-r.stop:
			// What was queued before the Gate closed still goes out.
			for {
				select {
				case ev := <-r.q:
					r.emit(ev)
				default:
					return
				}
			}
		}
	}
}

func (r *eventRelay) emit(ev middleware.LifecycleEvent) {
	s := r.to.Load()
	if s == nil || s.app == nil {
		return
	}
	data := map[string]any{"subject_key": ev.SubjectKey}
	if s.includeSubject && ev.Subject != "" {
		data["subject"] = ev.Subject
	}
	if !ev.RefreshTokenExpiresAt.IsZero() {
		data["refresh_token_expires_at"] = ev.RefreshTokenExpiresAt.UTC()
	}
	s.app.Emit(s.ctx, "oauth2_token."+string(ev.Kind), data)
}

// close stops the goroutine once the queued events are out.
func (r *eventRelay) close() {
	close(r.stop)
	r.done.Wait()
}

var _ middleware.LifecycleObserver = (*eventRelay)(nil)
