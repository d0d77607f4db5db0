// Package tasknationtest runs a fake TaskNation OAuth 2.0 authorization server
// and API on loopback, in the manner of net/http/httptest. It is used by the
// tokengate tests, by users' own tests and by the demo.
//
// The fake follows the TaskNation authentication reference and the habits of
// real authorization servers that clients trip over:
//
//   - POST /oauth2/token takes client_id and client_secret in the form body
//     only (HTTP Basic is refused with 401 invalid_client unless
//     Options.AcceptBasicAuth is set) and serves the client_credentials,
//     authorization_code and refresh_token grants.
//   - A client registered with Client.AuthMethods authenticates the ways
//     a generic server allows instead: client_secret_basic,
//     private_key_jwt (RFC 7523: the assertion's signature against
//     Client.PublicKey, its algorithm, kid, iss = sub = client ID, aud the
//     token endpoint or the issuer, exp, and a jti used once) or
//     tls_client_auth (RFC 8705, with Options.TLS: the TLS certificate the
//     client presented, bound by its SHA-256 to Client.Certificate).
//     Failures are 401 invalid_client with WWW-Authenticate, more than
//     one method 400 invalid_request (RFC 6749 §2.3, §5.2).
//   - resource (RFC 8707) and audience may repeat; Client.Resources makes
//     a resource required (400 invalid_target otherwise), and
//     LastTokenRequest shows the parameters a client sent.
//   - token_type is "bearer" in lower case; expires_in is rounded down when
//     the answer is written; a client_credentials request without a scope
//     gets a token with no scope; only an authorization_code grant that
//     includes offline_access yields a refresh token.
//   - Refresh tokens rotate: every refresh revokes the old access token and
//     marks the old refresh token rotated. Reusing it within the grace period
//     (60 s by default) returns a fresh pair and the successor keeps working;
//     reusing it later is invalid_grant and revokes the whole token family.
//   - Authorization codes are single use even when the exchange fails, and a
//     reused code revokes the tokens of its first exchange. PKCE supports S256.
//   - GET /oauth2/auth auto-approves (or shows a consent page when
//     Options.ConsentPage is set) and reports errors to the redirect URI
//     with error= and state=, except for an unknown client or an
//     unregistered redirect URI, which get a 400 page.
//   - /api/... is a fake resource server that checks bearer tokens and the
//     scope each route needs.
//   - POST /oauth2/introspect (RFC 7662),
//     GET /.well-known/oauth-authorization-server (RFC 8414) and
//     GET /.well-known/openid-configuration are served too;
//     POST /oauth2/revoke (RFC 7009) only with Options.RevocationEndpoint,
//     as TaskNation documents none (RevocationRequests,
//     RevokedRefreshTokens and FailRevocations observe and break it).
//
// Fault knobs (InjectFault, SetLatency, SetTokenResponder), request counters
// and an injectable clock (Options.Now) let tests drive retries, grace windows
// and expiry without sleeping. Besides errors, dropped connections and lost
// answers, a Fault can answer with a redirect (FaultRedirect, to see that a
// client does not post its credentials again elsewhere), with an RFC 6749
// error whose error_description quotes the credentials received
// (FaultReject with EchoCredentials, to see that a client keeps them out of
// its logs), and with a Retry-After header (Fault.RetryAfter).
//
// StaleRefreshReuses counts rotated refresh tokens presented after the
// grace period (the oracle for "the client never reused a rotated refresh
// token too late") and GraceRefreshReuses those accepted within it;
// OnTokenAnswer calls a hook once per token request, after its answer was
// flushed or its connection dropped, for example to kill a client process
// right after a rotation.
//
// The server never logs tokens or secrets.
//
// Usage:
//
//	srv := tasknationtest.NewServer(tasknationtest.Options{})
//	defer srv.Close()
//	srv.AddRedirectURI(tasknationtest.DefaultClientID, "http://127.0.0.1:8080/oauth2/callback")
//
//	// Point the code under test at srv.TokenURL(), srv.AuthURL() and
//	// srv.APIURL(), with client ID DefaultClientID and secret
//	// DefaultClientSecret sent in the form body.
//
//	// Make the next refresh succeed on the server but lose its answer:
//	srv.InjectFault(tasknationtest.Fault{
//		Kind:  tasknationtest.FaultLostAfterRotation,
//		Grant: tasknationtest.GrantRefreshToken,
//		Count: 1,
//	})
//	// ... exercise the client, then check what the server saw:
//	if n := srv.TokenRequests(tasknationtest.GrantRefreshToken); n != 2 {
//		t.Errorf("refresh requests = %d, want 2", n)
//	}
//
// See also: middleware (the Gate to test against it), tokenstore and
// caddymodule; go run ./cmd/tasknation-fake runs it from the command line.
package tasknationtest
