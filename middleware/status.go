package middleware

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/tasknation/tokengate/tokenstore"
)

// Connection states of a subject (ConnectionStatus.State).
const (
	// StateConnected: the subject's token set is stored.
	StateConnected = "connected"
	// StateReauthorizationRequired: the subject's tokens were deleted
	// because the refresh token was refused or ran out; the user must
	// connect again.
	StateReauthorizationRequired = "reauthorization_required"
	// StateNotConnected: no token set is stored for the subject (never
	// connected, or disconnected).
	StateNotConnected = "not_connected"
)

// ConnectionStatus is what a front end needs to show a user: whether
// their account is connected, until when, and where to connect. It never
// holds a token. Its JSON is the answer of the status path:
//
//	{"connected":true,"state":"connected","scopes":["offline_access"],
//	 "connected_at":"2026-12-01T10:00:00Z",
//	 "refresh_token_expires_at":"2027-05-30T10:00:00Z",
//	 "connect_url":"https://gw.example.com/oauth2/connect"}
//
// with null times when unknown or not connected.
type ConnectionStatus struct {
	// Connected is State == StateConnected.
	Connected bool
	// State is StateConnected, StateReauthorizationRequired or
	// StateNotConnected.
	State string
	// Scopes are the scopes granted; empty when not connected.
	Scopes []string
	// ConnectedAt is when the user connected (rotations keep it); zero
	// when not connected, or for a set stored before tokengate recorded it.
	ConnectedAt time.Time
	// RefreshTokenExpiresAt is when the refresh token runs out and the
	// user must connect again; zero when not connected or unknown.
	RefreshTokenExpiresAt time.Time
	// ConnectURL is the public URL that connects (or reconnects) the
	// account.
	ConnectURL string
}

// MarshalJSON writes the status path's JSON, with the field names
// and null for unknown times.
func (s ConnectionStatus) MarshalJSON() ([]byte, error) {
	at := func(t time.Time) *time.Time {
		if t.IsZero() {
			return nil
		}
		t = t.UTC()
		return &t
	}
	scopes := s.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	return json.Marshal(struct {
		Connected             bool       `json:"connected"`
		State                 string     `json:"state"`
		Scopes                []string   `json:"scopes"`
		ConnectedAt           *time.Time `json:"connected_at"`
		RefreshTokenExpiresAt *time.Time `json:"refresh_token_expires_at"`
		ConnectURL            string     `json:"connect_url"`
	}{s.Connected, s.State, scopes, at(s.ConnectedAt), at(s.RefreshTokenExpiresAt), s.ConnectURL})
}

// ConnectionStatus returns the connection status of subject, read from the
// store (the source of truth, shared by a fleet). The error is a
// *UserError (unauthenticated) for an empty subject, or a store failure.
//
// A set found to have run out is deleted, and reported to the
// LifecycleObserver as reauthorization_required, as a request would.
func (g *Gate) ConnectionStatus(ctx context.Context, subject string) (ConnectionStatus, error) {
	if g.users == nil {
		return ConnectionStatus{}, errNotUserGate
	}
	u := g.users
	key, err := u.key(subject)
	if err != nil {
		return ConnectionStatus{}, err
	}
	st := ConnectionStatus{State: StateNotConnected, ConnectURL: u.connectURL}
	tok := u.pending(key)
	if tok == nil {
		tok, err = u.truth().Get(ctx, key)
	}
	switch {
	case err == nil:
		st.Connected, st.State = true, StateConnected
		st.Scopes = tok.Scopes
		st.ConnectedAt = tok.ConnectedAt
		st.RefreshTokenExpiresAt = tok.RefreshExpiry
	case errors.Is(err, tokenstore.ErrExpired):
		u.forget(key, subject, g.logger().With(zap.String("subject_key", key)), "the refresh token ran out")
		st.State = StateReauthorizationRequired
	case errors.Is(err, tokenstore.ErrNotFound):
		if u.mustReauthorize(ctx, key) {
			st.State = StateReauthorizationRequired
		}
	default:
		return ConnectionStatus{}, fmt.Errorf("middleware: connection status: %w", err)
	}
	return st, nil
}

// serveStatus answers the status path: JSON whatever the client accepts,
// for front ends.
func (g *Gate) serveStatus(w http.ResponseWriter, r *http.Request, subject string) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeJSONError(w, http.StatusMethodNotAllowed, errorBody{Error: "method_not_allowed", Description: "use GET for the connection status"})
		return
	}
	if subject == "" {
		writeJSONError(w, http.StatusUnauthorized, errorBody{Error: CodeUnauthenticated, Description: "log in to see the TaskNation connection", ConnectURL: g.users.connectURL})
		return
	}
	st, err := g.ConnectionStatus(r.Context(), subject)
	if err != nil {
		g.logger().Error("connection status: token store read failed", zap.Error(err))
		w.Header().Set("Retry-After", "1")
		writeJSONError(w, http.StatusServiceUnavailable, errorBody{Error: "store_unavailable", Description: "the connection status could not be read"})
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_ = json.NewEncoder(w).Encode(st)
	}
}

// The reauthorization mark is a record in the store, beside the subject's
// set, left when the set is deleted after a refusal or its running out,
// so that every instance sharing the store answers reauthorization_required
// (not not_connected) to the subject's requests and status until the user
// connects again or disconnects, or reauthMarkLifetime passes. It is
// shaped as a token set so that any Store keeps it, and holds no
// credential.
const reauthMarkLifetime = 30 * 24 * time.Hour

func reauthMarkKey(key string) string { return "reauth:" + strings.TrimPrefix(key, "user:") }

func (u *userSource) markReauthorization(key string, log *zap.Logger) {
	ctx, cancel := u.g.writeContext()
	defer cancel()
	now := u.g.clock.Now()
	mark := &tokenstore.Token{AccessToken: "-", TokenType: "tokengate-reauthorization-mark",
		Expiry: now.Add(reauthMarkLifetime), ObtainedAt: now}
	if err := u.truth().Set(ctx, reauthMarkKey(key), mark); err != nil {
		log.Warn("token store: the reauthorization mark could not be written; other instances will answer not_connected", zap.Error(err))
	}
}

// mustReauthorize reports whether key carries the reauthorization mark.
func (u *userSource) mustReauthorize(ctx context.Context, key string) bool {
	_, err := u.truth().Get(ctx, reauthMarkKey(key))
	return err == nil
}

func (u *userSource) clearReauthorization(ctx context.Context, key string, log *zap.Logger) {
	if err := u.truth().Delete(ctx, reauthMarkKey(key)); err != nil {
		log.Warn("token store: the reauthorization mark could not be deleted", zap.Error(err))
	}
}

// lifecycle reports a lifecycle event of a subject to Config.Lifecycle.
func (g *Gate) lifecycle(kind LifecycleKind, key, subject string, refreshExpiry time.Time) {
	if o := g.cfg.Lifecycle; o != nil {
		o.UserEvent(LifecycleEvent{Kind: kind, SubjectKey: key, Subject: subject, At: g.clock.Now(), RefreshTokenExpiresAt: refreshExpiry})
	}
}
