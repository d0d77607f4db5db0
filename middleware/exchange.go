package middleware

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/tasknation/tokengate/tokenstore"
)

// maxBody caps what is read of a token-endpoint answer (RFC 6749 bodies
// are a few hundred bytes).
const maxBody = 1 << 20

// maxLifetime is the longest expires_in taken at face value.
const maxLifetime = 365 * 24 * time.Hour

// Errors for answers that are not a token, found before x/oauth2 parses.
var (
	errBodyTooLarge = errors.New("response body exceeds 1 MiB")
	errEmptyBody    = errors.New("empty response body")
	errHTMLBody     = errors.New("response is an HTML page, not a token")
)

// redirectError is a 3xx answer of the token endpoint, refused by
// limitTransport before any client could follow it.
type redirectError struct {
	status   int
	location string // the Location header, as sent
}

func (e *redirectError) Error() string {
	return "token endpoint answered HTTP " + strconv.Itoa(e.status) + ", a redirect"
}

// limitTransport reads the whole token-endpoint answer itself, so that an
// oversized, empty or HTML answer is named as such instead of surfacing as
// a JSON syntax error (x/oauth2 silently truncates at 1 MiB). It refuses
// redirects: an http.Client that followed a 307 or 308 would post the
// client secret, the code or the refresh token again to wherever the
// answer points, plain http included.
type limitTransport struct{ base http.RoundTripper }

func (t limitTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := t.base
	if base == nil {
		base = http.DefaultTransport
	}
	resp, err := base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 == 3 {
		// Drain a little so that the connection can be reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		resp.Body.Close()
		return nil, &redirectError{status: resp.StatusCode, location: resp.Header.Get("Location")}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("reading response: %w", err)
	}
	if len(body) > maxBody {
		return nil, errBodyTooLarge
	}
	if resp.StatusCode/100 == 2 {
		trimmed := bytes.TrimSpace(body)
		if len(trimmed) == 0 {
			return nil, errEmptyBody
		}
		ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
		if ct == "text/html" || trimmed[0] == '<' {
			return nil, errHTMLBody
		}
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	return resp, nil
}

// exchanger performs the token requests of one client.
type exchanger struct {
	cc      clientcredentials.Config
	oc      oauth2.Config // the authorization_code and refresh_token grants
	client  *http.Client
	timeout time.Duration
	// revocationURL is the RFC 7009 endpoint ("" for none), called with
	// revokeClient.
	revocationURL string
	revokeClient  *http.Client
	// auth is the client authentication of revocation requests (token
	// requests get theirs from x/oauth2 and formTransport).
	auth clientAuth
	// transport is the transport newExchanger made (client certificate,
	// root CAs), nil when it uses the caller's: closed with the Gate.
	transport *http.Transport
	now       func() time.Time
	obs       Observer
}

func newExchanger(c Config) *exchanger {
	// A copy: the caller's client is left as it is. limitTransport refuses
	// 3xx answers, so no redirect is followed.
	hc := *c.HTTPClient
	base := c.HTTPClient.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	var rt http.RoundTripper = base
	if len(c.TokenParams) > 0 || c.assertion != nil {
		tu, _ := url.Parse(c.TokenURL) // checked by withDefaults
		rt = formTransport{base: base, tokenURL: tu, params: c.TokenParams, assertion: c.assertion}
	}
	hc.Transport = limitTransport{base: rt}
	return &exchanger{
		cc: clientcredentials.Config{
			ClientID:     c.ClientID,
			ClientSecret: c.ClientSecret,
			TokenURL:     c.TokenURL,
			Scopes:       c.Scopes,
			AuthStyle:    c.AuthStyle,
		},
		oc: oauth2.Config{
			ClientID:     c.ClientID,
			ClientSecret: c.ClientSecret,
			Endpoint:     oauth2.Endpoint{AuthURL: c.AuthURL, TokenURL: c.TokenURL, AuthStyle: c.AuthStyle},
			RedirectURL:  c.RedirectURI,
			Scopes:       c.Scopes,
		},
		client:        &hc,
		timeout:       c.RequestTimeout,
		revocationURL: c.RevocationURL,
		// A 200 of a revocation endpoint has an empty body, which
		// limitTransport refuses: this client only refuses redirects.
		revokeClient: &http.Client{
			Transport:     c.HTTPClient.Transport,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		auth:      clientAuth{id: c.ClientID, secret: c.ClientSecret, style: c.AuthStyle, assertion: c.assertion},
		transport: c.ownTransport,
		now:       c.Clock.Now,
		obs:       c.Observer,
	}
}

// close releases the connections of a transport the exchanger owns.
func (x *exchanger) close() {
	if x.transport != nil {
		x.transport.CloseIdleConnections()
	}
}

// clientCredentials asks for an application token. ctx should be detached
// from any one caller; the exchanger adds its own timeout.
func (x *exchanger) clientCredentials(ctx context.Context) (*tokenstore.Token, error) {
	return x.do(ctx, "client_credentials", nil, x.cc.Token)
}

// exchange trades an authorization code (and its PKCE verifier, "" for
// none) for a token set.
func (x *exchanger) exchange(ctx context.Context, code, verifier string) (*tokenstore.Token, error) {
	var opts []oauth2.AuthCodeOption
	if verifier != "" {
		opts = append(opts, oauth2.VerifierOption(verifier))
	}
	return x.do(ctx, "authorization_code", []string{code, verifier}, func(ctx context.Context) (*oauth2.Token, error) {
		return x.oc.Exchange(ctx, code, opts...)
	})
}

// refresh redeems a refresh token. The answer's refresh token replaces it
// (rotation); a server that sends none leaves the old one in the set.
func (x *exchanger) refresh(ctx context.Context, refreshToken string) (*tokenstore.Token, error) {
	return x.do(ctx, "refresh_token", []string{refreshToken}, func(ctx context.Context) (*oauth2.Token, error) {
		return x.oc.TokenSource(ctx, &oauth2.Token{RefreshToken: refreshToken}).Token()
	})
}

// do runs one token request of grant with the exchanger's timeout and HTTP
// client, and validates the answer. sent are the request's credentials
// besides the client secret (a code, a refresh token), kept out of the
// error should the server quote them.
func (x *exchanger) do(ctx context.Context, grant string, sent []string, get func(context.Context) (*oauth2.Token, error)) (*tokenstore.Token, error) {
	ctx, cancel := context.WithTimeout(ctx, x.timeout)
	defer cancel()
	ctx = context.WithValue(ctx, oauth2.HTTPClient, x.client)
	at := x.now()
	tok, err := get(ctx)
	if err == nil {
		var t *tokenstore.Token
		if t, err = x.validate(grant, tok, at, x.cc.Scopes); err == nil {
			x.observe(grant, "success", at)
			return t, nil
		}
	} else {
		err = x.classify(grant, ctx, err, sent)
	}
	var ee *EndpointError
	if errors.As(err, &ee) {
		x.observe(grant, string(ee.Kind), at)
	}
	return nil, err
}

func (x *exchanger) observe(grant, outcome string, sent time.Time) {
	if x.obs != nil {
		x.obs.TokenRequest(grant, outcome, x.now().Sub(sent))
	}
}

// validate turns an x/oauth2 token into ours, rejecting answers that parse
// but are not usable. The expiry counts from when the request was sent, so
// time spent on the wire shortens the token rather than lengthens it.
func (x *exchanger) validate(grant string, tok *oauth2.Token, sent time.Time, requested []string) (*tokenstore.Token, error) {
	bad := func(format string, args ...any) error {
		return &EndpointError{Grant: grant, Kind: KindInvalidResponse, Status: http.StatusOK, Err: fmt.Errorf(format, args...)}
	}
	if tok.AccessToken == "" {
		return nil, bad("no access_token in the answer")
	}
	if tok.TokenType == "" {
		return nil, bad("no token_type in the answer")
	}
	if !strings.EqualFold(tok.TokenType, "bearer") {
		return nil, bad("token_type %q is not Bearer", truncate(tok.TokenType, 20))
	}
	secs, err := expiresIn(tok.Extra("expires_in"))
	if err != nil {
		return nil, bad("%v", err)
	}
	// Checked in seconds, before the conversion: a Duration overflows
	// past 292 years, and a float64 conversion out of range is anything.
	switch {
	case math.IsNaN(secs):
		return nil, bad("expires_in is not a number")
	case secs <= 0:
		return nil, bad("expires_in %v is not positive", secs)
	case secs > maxLifetime.Seconds():
		return nil, bad("expires_in %v is more than a year", secs)
	case secs < 1: // expired on arrival
		return nil, bad("expires_in %v is less than a second", secs)
	}
	lifetime := time.Duration(secs * float64(time.Second))
	scopes := requested
	if s, ok := tok.Extra("scope").(string); ok && s != "" {
		scopes = strings.Fields(s)
	}
	return &tokenstore.Token{
		AccessToken:  tok.AccessToken,
		TokenType:    "Bearer",
		RefreshToken: tok.RefreshToken,
		Expiry:       sent.Add(lifetime),
		Scopes:       scopes,
		ObtainedAt:   sent,
		Version:      newLineage(), // never 0, which means "no token"
	}, nil
}

func expiresIn(v any) (float64, error) {
	switch v := v.(type) {
	case nil:
		return 0, errors.New("no expires_in in the answer")
	case float64:
		return v, nil
	case int64: // form-encoded answers: Token.Extra parses whole numbers
		return float64(v), nil
	case string: // form-encoded answers that Token.Extra did not parse
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return 0, fmt.Errorf("expires_in %q is not a number", truncate(v, 20))
		}
		return f, nil
	default:
		return 0, fmt.Errorf("expires_in is a %T, not a number", v)
	}
}

// classify turns what x/oauth2 and net/http return into an EndpointError
// whose text carries no response body, no URL and no credential. sent are
// the request's credentials besides the client secret.
func (x *exchanger) classify(grant string, ctx context.Context, err error, sent []string) error {
	e := &EndpointError{Grant: grant}
	secrets := append([]string{x.cc.ClientSecret}, sent...)
	var re *oauth2.RetrieveError
	var rd *redirectError
	var ue *url.Error
	switch {
	case errors.As(err, &rd):
		e.Kind = KindRedirect
		e.Status = rd.status
		e.location = origin(rd.location, secrets)
	case errors.As(err, &re):
		e.Status = re.Response.StatusCode
		e.Code = truncate(scrubWord(re.ErrorCode, secrets), 64)
		e.Description = scrub(re.ErrorDescription, maxDescription, secrets)
		switch {
		case e.Code != "" && e.Status < 500 && e.Status != http.StatusTooManyRequests:
			e.Kind = KindRejected
		default: // a server error or throttling, whatever its body says
			e.Kind = KindStatus
		}
		if e.Status == http.StatusTooManyRequests || e.Status >= 500 {
			e.RetryAfter = retryAfter(re.Response.Header.Get("Retry-After"), x.now())
		}
	case bodyError(err) != nil:
		e.Kind = KindInvalidResponse
		e.Err = bodyError(err)
	case ctx.Err() != nil && errors.Is(err, context.DeadlineExceeded):
		e.Kind = KindTimeout
	case errors.Is(err, context.Canceled):
		e.Kind = KindNetwork
		e.Err = context.Canceled
	case errors.As(err, &ue):
		e.Kind = KindNetwork
		e.Err = ue.Err
	case strings.HasPrefix(err.Error(), "oauth2: cannot parse"), strings.HasPrefix(err.Error(), "oauth2: server response missing"):
		// x/oauth2's own parse errors. Their detail may quote a value of
		// the body (encoding/json and strconv quote the literal they could
		// not read): keep the words, not the value.
		e.Kind = KindInvalidResponse
		e.Err = errors.New(elideQuoted(strings.TrimPrefix(err.Error(), "oauth2: ")))
	default:
		e.Kind = KindNetwork
		e.Err = err
	}
	return e
}

// maxDescription caps the error_description kept from the server.
const maxDescription = 100

// minTokenRun is the length from which a run of token characters is taken
// for a token (or a secret) and not repeated from the server's text.
const minTokenRun = 16

// scrub makes server text safe for a log line or an error: each of secrets
// (6 bytes or longer) the text quotes and each run of minTokenRun or more
// token characters ([A-Za-z0-9._~+/=-]) becomes "…", other bytes outside
// printable ASCII become a space, and the result is cut at limit bytes
// (0: no limit) with "…". Runs are found in the whole text, so that the
// cut never leaves the start of a long token.
func scrub(s string, limit int, secrets []string) string {
	const mark = "\x00" // stands for a removed secret until the scan below
	s = strings.ReplaceAll(s, mark, " ")
	for _, v := range secrets {
		if len(v) < 6 {
			continue
		}
		s = strings.ReplaceAll(s, v, mark)
		if q := url.QueryEscape(v); q != v {
			s = strings.ReplaceAll(s, q, mark)
		}
	}
	var b strings.Builder
	write := func(piece string) bool {
		if limit > 0 && b.Len()+len(piece) > limit {
			if piece != "…" {
				b.WriteString(piece[:max(limit-b.Len(), 0)])
			}
			b.WriteString("…")
			return false
		}
		b.WriteString(piece)
		return true
	}
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == 0:
			if !write("…") {
				return b.String()
			}
			i++
		case tokenChar(c):
			j := i + 1
			for j < len(s) && tokenChar(s[j]) {
				j++
			}
			piece := s[i:j]
			if j-i >= minTokenRun {
				piece = "…"
			}
			if !write(piece) {
				return b.String()
			}
			i = j
		case c >= 0x20 && c < 0x7f:
			if !write(s[i : i+1]) {
				return b.String()
			}
			i++
		default: // a control byte or a byte of a multi-byte character
			if !strings.HasSuffix(b.String(), " ") && !write(" ") {
				return b.String()
			}
			i++
		}
	}
	return b.String()
}

// scrubWord makes a word the server chose and that is kept whole (an
// RFC 6749 error code, often longer than minTokenRun, such as
// "unsupported_grant_type"; a host name) safe to show: a secret it quotes
// becomes "…" and bytes outside printable ASCII become "?".
func scrubWord(s string, secrets []string) string {
	s = strings.ReplaceAll(s, "\x00", "?")
	for _, v := range secrets {
		if len(v) >= 6 {
			s = strings.ReplaceAll(s, v, "\x00")
		}
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r == 0:
			return '…'
		case r < 0x20 || r >= 0x7f:
			return '?'
		}
		return r
	}, s)
}

func tokenChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '.' || c == '_' || c == '~' || c == '+' || c == '/' || c == '=' || c == '-'
}

// origin returns the scheme and host an absolute Location points to, for
// an operator to see where the token endpoint moved: not its path or
// query, which may carry anything.
func origin(location string, secrets []string) string {
	u, err := url.Parse(location)
	if err != nil || u.Host == "" {
		return ""
	}
	return truncate(scrubWord(u.Scheme+"://"+u.Host, secrets), 100)
}

// maxRetryAfter caps the wait a Retry-After header can ask for.
const maxRetryAfter = time.Hour

// retryAfter parses a Retry-After value (RFC 9110 §10.2.3): delta-seconds
// or an HTTP-date, read against now. It returns 0 for no value, a value
// that does not parse or a date in the past, and at most maxRetryAfter.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if strings.Trim(v, "0123456789") == "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n > uint64(maxRetryAfter/time.Second) { // err: too many digits
			return maxRetryAfter
		}
		return time.Duration(n) * time.Second
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	return min(max(t.Sub(now), 0), maxRetryAfter)
}

// bodyError finds which of limitTransport's errors err wraps, if any.
func bodyError(err error) error {
	for _, s := range []error{errBodyTooLarge, errEmptyBody, errHTMLBody} {
		if errors.Is(err, s) {
			return s
		}
	}
	return nil
}

// elideQuoted replaces each double-quoted string in s longer than 20
// bytes with "…", and everything from a quote that does not close.
func elideQuoted(s string) string {
	var b strings.Builder
	for {
		i := strings.IndexByte(s, '"')
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i])
		q, err := strconv.QuotedPrefix(s[i:])
		if err != nil {
			b.WriteString(`"…`)
			return b.String()
		}
		s = s[i+len(q):]
		if len(q) > 22 {
			q = `"…"`
		}
		b.WriteString(q)
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
