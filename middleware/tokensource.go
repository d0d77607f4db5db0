package middleware

import (
	"context"

	"golang.org/x/oauth2"

	"github.com/tasknation/tokengate/tokenstore"
)

// TokenSource returns the Gate's application token as an
// oauth2.TokenSource, for SDKs built on oauth2.NewClient: they get the
// Gate's refresh engine (one token request per refresh whatever the
// concurrency, refresh ahead of expiry, backoff shared by all callers)
// instead of x/oauth2's own. Each Token call is Gate.Token on ctx, which
// the source keeps (as x/oauth2's clientcredentials does): give it a
// context that lives as long as the client, not a request's. Errors are
// Gate.Token's, unwrapped (an *UnavailableError when no token could be
// had).
//
// The *oauth2.Token has AccessToken, TokenType "Bearer" and Expiry, and
// never a refresh token: with one, x/oauth2 would redeem it itself, behind
// the Gate's back, which with a rotating server logs the user out.
//
// oauth2.NewClient wraps the source in oauth2.ReuseTokenSource, which
// keeps handing out a token until 10 s before its Expiry without asking
// the Gate; then a token the Gate has replaced (Invalidate, a refresh
// ahead that revoked it at the server) is still sent until then, and an
// x/oauth2 client never replays a request after a 401. A client of
// &oauth2.Transport{Source: g.TokenSource(ctx)} asks the Gate on every
// request (the hot path: two atomic loads) and so sends the new token on
// the next request after an Invalidate; Gate.Transport also replays the
// request once after a 401 that refuses the token.
func (g *Gate) TokenSource(ctx context.Context) oauth2.TokenSource {
	return &oauth2Source{ctx: ctx, get: func(ctx context.Context) (tokenstore.Token, error) { return g.Token(ctx) }}
}

// UserTokenSource is TokenSource for the token set of subject
// (authorization_code grant): each Token call is Gate.UserToken(ctx,
// subject). subject must come from a trusted source, as for
// AuthorizeSubject. Errors are UserToken's: a *UserError when the subject
// must connect (again), an *UnavailableError when no token could be had.
func (g *Gate) UserTokenSource(ctx context.Context, subject string) oauth2.TokenSource {
	return &oauth2Source{ctx: ctx, get: func(ctx context.Context) (tokenstore.Token, error) { return g.UserToken(ctx, subject) }}
}

type oauth2Source struct {
	ctx context.Context
	get func(context.Context) (tokenstore.Token, error)
}

// Token returns a valid access token, a new *oauth2.Token on every call
// (x/oauth2 sets fields on the one it is given).
func (s *oauth2Source) Token() (*oauth2.Token, error) {
	tok, err := s.get(s.ctx)
	if err != nil {
		return nil, err
	}
	return &oauth2.Token{
		AccessToken: tok.AccessToken,
		// The Gate accepts only Bearer tokens (in any case, as servers
		// send them); SetAuthHeader writes Type() as given.
		TokenType: "Bearer",
		Expiry:    tok.Expiry,
	}, nil
}
