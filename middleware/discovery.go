package middleware

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/oauth2"
)

// maxMetadata caps what is read of a metadata document.
const maxMetadata = 1 << 20

// DefaultDiscoveryTTL is how long a DiscoveryCache keeps a document.
const DefaultDiscoveryTTL = time.Hour

// Metadata is what discovery found about an authorization server: the
// fields of RFC 8414 §2 tokengate uses.
type Metadata struct {
	// Issuer is the issuer identifier, equal to the one asked for.
	Issuer string `json:"issuer"`
	// TokenURL is the token endpoint.
	TokenURL string `json:"token_endpoint"`
	// AuthURL is the authorization endpoint ("" when the server has
	// none).
	AuthURL string `json:"authorization_endpoint,omitempty"`
	// RevocationURL is the RFC 7009 revocation endpoint ("" for none).
	RevocationURL string `json:"revocation_endpoint,omitempty"`
	// TokenEndpointAuthMethods are the client authentication methods the
	// token endpoint accepts (client_secret_basic, private_key_jwt, ...),
	// as the server lists them.
	TokenEndpointAuthMethods []string `json:"token_endpoint_auth_methods_supported,omitempty"`
}

// Discover fetches the metadata of the authorization server issuer: the
// RFC 8414 document (/.well-known/oauth-authorization-server, inserted
// before the issuer's path as §3.1 says), and when that answers with an
// HTTP error, the OpenID Connect one (issuer + /.well-known/openid-configuration).
// The document's issuer must equal issuer (RFC 8414 §3.3) and its
// endpoints must be https (http only on loopback hosts). Redirects are
// never followed and a body is read up to 1 MiB. ctx bounds the whole of
// it. client nil: a client on http.DefaultTransport.
//
// Errors are *ConfigError of the field issuer.
func Discover(ctx context.Context, issuer string, client *http.Client) (*Metadata, error) {
	iu, err := issuerURL(issuer)
	if err != nil {
		return nil, err
	}
	if client == nil {
		client = &http.Client{}
	}
	hc := *client
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	fail := func(reason string, err error) error {
		return &ConfigError{Field: "issuer", Value: issuer, Reason: reason, Err: err}
	}
	path := strings.TrimSuffix(iu.Path, "/")
	docs := []string{
		iu.Scheme + "://" + iu.Host + "/.well-known/oauth-authorization-server" + path,
		iu.Scheme + "://" + iu.Host + path + "/.well-known/openid-configuration",
	}
	var statuses []string
	for _, doc := range docs {
		raw, status, err := fetchMetadata(ctx, &hc, doc)
		if err != nil {
			return nil, fail("discovery failed", err)
		}
		if status != http.StatusOK {
			statuses = append(statuses, fmt.Sprintf("%s answered HTTP %d", doc, status))
			continue
		}
		m, err := parseMetadata(raw, issuer)
		if err != nil {
			return nil, fail("bad metadata at "+doc, err)
		}
		return m, nil
	}
	return nil, fail("no metadata", errors.New(strings.Join(statuses, "; ")))
}

// issuerURL checks an issuer identifier (RFC 8414 §2: https, no query
// or fragment; http on loopback hosts for tests).
func issuerURL(issuer string) (*url.URL, error) {
	if err := checkEndpoint("issuer", issuer); err != nil {
		return nil, err
	}
	u, _ := url.Parse(issuer)
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, &ConfigError{Field: "issuer", Value: shownURL(issuer, u), Reason: "must have no query, fragment or user info (RFC 8414 §2)"}
	}
	return u, nil
}

// fetchMetadata GETs one document: its body when the answer is 200, its
// status otherwise; a redirect is an error.
func fetchMetadata(ctx context.Context, hc *http.Client, doc string) ([]byte, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, doc, nil)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the rest repeats the URL
		}
		if ctx.Err() != nil {
			return nil, 0, fmt.Errorf("%s did not answer in time", doc)
		}
		return nil, 0, fmt.Errorf("%s could not be reached: %s", doc, scrub(err.Error(), 200, nil))
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 == 3 {
		return nil, 0, fmt.Errorf("%s answered HTTP %d, a redirect, which discovery does not follow", doc, resp.StatusCode)
	}
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		return nil, resp.StatusCode, nil
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxMetadata+1))
	if err != nil {
		return nil, 0, fmt.Errorf("reading %s: %w", doc, err)
	}
	if len(raw) > maxMetadata {
		return nil, 0, fmt.Errorf("%s is over 1 MiB", doc)
	}
	return raw, http.StatusOK, nil
}

// parseMetadata reads a metadata document and checks it against issuer.
// Errors quote no value of the document but its endpoints' (URLs shown
// without a password).
func parseMetadata(raw []byte, issuer string) (*Metadata, error) {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, errors.New("not a JSON object")
	}
	var m Metadata
	if err := json.Unmarshal(trimmed, &m); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, fmt.Errorf("%s is not a %s", te.Field, te.Type)
		}
		return nil, errors.New("not valid JSON")
	}
	if m.Issuer != issuer {
		return nil, fmt.Errorf("its issuer %q is not the configured one (RFC 8414 §3.3)", truncate(scrubWord(m.Issuer, nil), 100))
	}
	for _, e := range []struct {
		field, v string
		required bool
	}{
		{"token_endpoint", m.TokenURL, true},
		{"authorization_endpoint", m.AuthURL, false},
		{"revocation_endpoint", m.RevocationURL, false},
	} {
		if e.v == "" && !e.required {
			continue
		}
		if err := checkEndpoint(e.field, e.v); err != nil {
			var ce *ConfigError
			switch {
			case errors.As(err, &ce) && ce.Value != "":
				return nil, fmt.Errorf("%s %q: %s", e.field, ce.Value, ce.Reason)
			case errors.As(err, &ce) && ce.Err == nil:
				return nil, fmt.Errorf("%s %s", e.field, ce.Reason)
			}
			return nil, fmt.Errorf("%s is not a URL", e.field)
		}
	}
	return &m, nil
}

// DiscoveryCache keeps the metadata Discover fetched, per issuer, so that
// a process that builds Gates again and again (a Caddy reload) asks once
// per TTL. Only successes are kept. The zero value is ready to use; it is
// safe for concurrent use.
type DiscoveryCache struct {
	// TTL is how long a document is kept. Default: 1h.
	TTL time.Duration
	// Now is the time source. Default: time.Now.
	Now func() time.Time

	mu sync.Mutex
	m  map[string]cachedMetadata
}

type cachedMetadata struct {
	m  Metadata
	at time.Time
}

// Discover returns the cached metadata of issuer, or runs Discover.
// Callers racing on one issuer may each fetch it.
func (c *DiscoveryCache) Discover(ctx context.Context, issuer string, client *http.Client) (*Metadata, error) {
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	ttl := c.TTL
	if ttl == 0 {
		ttl = DefaultDiscoveryTTL
	}
	c.mu.Lock()
	e, ok := c.m[issuer]
	c.mu.Unlock()
	if ok && now().Sub(e.at) < ttl {
		m := e.m
		return &m, nil
	}
	m, err := Discover(ctx, issuer, client)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.m == nil {
		c.m = map[string]cachedMetadata{}
	}
	c.m[issuer] = cachedMetadata{m: *m, at: now()}
	c.mu.Unlock()
	return m, nil
}

// Discover fills TokenURL, AuthURL and RevocationURL, those that are
// empty (an explicit URL wins), from the metadata of c.Issuer, fetched
// with c's HTTP client (its RootCAs and ClientCertificate included)
// within c's RequestTimeout. cache keeps the metadata across calls; nil
// fetches it each time. Without an Issuer it does nothing. Run it before
// New: New itself does no network I/O.
//
// RevocationURL is filled only for the authorization_code grant, the one
// that revokes.
func (c *Config) Discover(ctx context.Context, cache *DiscoveryCache) error {
	if c.Issuer == "" {
		return nil
	}
	if err := c.checkProviderOptions(); err != nil {
		return err
	}
	client := c.HTTPClient
	if client == nil {
		client = &http.Client{}
	}
	if c.ClientCertificate != nil || c.RootCAs != nil {
		t, err := tlsTransport(client.Transport, c.ClientCertificate, c.RootCAs)
		if err != nil {
			return err
		}
		defer t.CloseIdleConnections()
		hc := *client
		hc.Transport = t
		client = &hc
	}
	timeout := c.RequestTimeout
	if timeout <= 0 {
		timeout = DefaultRequestTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var m *Metadata
	var err error
	if cache != nil {
		m, err = cache.Discover(ctx, c.Issuer, client)
	} else {
		m, err = Discover(ctx, c.Issuer, client)
	}
	if err != nil {
		return err
	}
	if c.TokenURL == "" {
		c.TokenURL = m.TokenURL
	}
	if c.Grant == GrantAuthorizationCode {
		if c.AuthURL == "" {
			c.AuthURL = m.AuthURL
		}
		if c.RevocationURL == "" {
			c.RevocationURL = m.RevocationURL
		}
	}
	if method := c.clientAuthMethod(); !slices.Contains(m.authMethods(), method) && c.Logger != nil {
		// Metadata is often incomplete: a warning, not an error. The
		// token endpoint's answer is what counts.
		c.Logger.Warn("the authorization server's metadata does not list the configured client authentication method",
			zap.String("issuer", c.Issuer), zap.String("method", method), zap.Strings("supported", m.authMethods()))
	}
	return nil
}

// authMethods are the token endpoint's client authentication methods:
// those listed, or RFC 8414's default when none are.
func (m *Metadata) authMethods() []string {
	if len(m.TokenEndpointAuthMethods) == 0 {
		return []string{"client_secret_basic"}
	}
	return m.TokenEndpointAuthMethods
}

// clientAuthMethod is the RFC 8414 name of the client authentication
// method c uses at the token endpoint.
func (c *Config) clientAuthMethod() string {
	switch {
	case c.PrivateKeyJWT != nil:
		return "private_key_jwt"
	case c.ClientCertificate != nil:
		return "tls_client_auth"
	}
	style := c.AuthStyle
	if style == oauth2.AuthStyleAutoDetect {
		style = c.Provider.AuthStyle
	}
	if style == oauth2.AuthStyleInParams {
		return "client_secret_post"
	}
	return "client_secret_basic"
}
