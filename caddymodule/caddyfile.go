package caddymodule

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/tasknation/tokengate/middleware"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("oauth2_token", parseCaddyfile)
	// Right after the authentication directives (which set what a user
	// grant reads), so before handle, route and reverse_proxy: no `order`
	// line is needed, and a site-level oauth2_token also covers the
	// reverse_proxy inside a `handle` block.
	httpcaddyfile.RegisterDirectiveOrder("oauth2_token", httpcaddyfile.After, "forward_auth")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	oauth2_token [<matcher>] {
//	    provider        tasknation|generic
//	    token_url       <url>
//	    client_id       <id>
//	    client_secret   <secret>
//	    scopes          <scope...>
//	    grant           client_credentials
//	    store           memory
//	    request_timeout <duration>
//	    refresh_window  <fraction>
//	    backoff         <min> <max>
//	}
//
// client_id and client_secret are required. Each subdirective may appear
// once. Values are checked here as far as they can be without resolving
// placeholders, so that `caddy adapt` reports mistakes.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := map[string]bool{}
	for d.NextBlock(0) {
		sub := d.Val()
		if seen[sub] {
			return d.Errf("oauth2_token: duplicate subdirective %q", sub)
		}
		seen[sub] = true
		one := func(dst *string) error {
			if !d.NextArg() {
				return d.ArgErr()
			}
			*dst = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
			return nil
		}
		var err error
		switch sub {
		case "provider":
			if err = one(&h.Provider); err == nil && h.Provider != "tasknation" && h.Provider != "generic" {
				return d.Errf("oauth2_token: provider: unknown provider %q (want tasknation or generic)", h.Provider)
			}
		case "token_url":
			err = one(&h.TokenURL)
		case "client_id":
			err = one(&h.ClientID)
		case "client_secret":
			err = one(&h.ClientSecret)
		case "grant":
			if err = one(&h.Grant); err == nil {
				if _, err = h.config(nil); err != nil {
					return d.Err(err.Error())
				}
			}
		case "store":
			if err = one(&h.Store); err == nil {
				if _, err = h.config(nil); err != nil {
					return d.Err(err.Error())
				}
			}
		case "scopes":
			h.Scopes = d.RemainingArgs()
			if len(h.Scopes) == 0 {
				return d.ArgErr()
			}
		case "request_timeout":
			var s string
			if err = one(&s); err == nil {
				var dur caddy.Duration
				if err = dur.UnmarshalJSON([]byte(strconv.Quote(s))); err != nil || dur <= 0 {
					return d.Errf("oauth2_token: request_timeout: %q is not a positive duration", s)
				}
				h.RequestTimeout = dur
			}
		case "refresh_window":
			var s string
			if err = one(&s); err == nil {
				if h.RefreshWindow, err = strconv.ParseFloat(s, 64); err != nil || h.RefreshWindow <= 0 || h.RefreshWindow >= 1 {
					return d.Errf("oauth2_token: refresh_window: %q is not a fraction between 0 and 1", s)
				}
			}
		case "backoff":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return d.ArgErr()
			}
			for i, dst := range []*caddy.Duration{&h.MinBackoff, &h.MaxBackoff} {
				if err := dst.UnmarshalJSON([]byte(strconv.Quote(args[i]))); err != nil || *dst <= 0 {
					return d.Errf("oauth2_token: backoff: %q is not a positive duration", args[i])
				}
			}
		default:
			return d.Errf("oauth2_token: unrecognized subdirective %q", sub)
		}
		if err != nil {
			return err
		}
	}
	if err := h.check(); err != nil {
		return d.Err(err.Error())
	}
	return nil
}

// check validates what can be validated before placeholders are resolved.
func (h *Handler) check() error {
	c, err := h.config(nil)
	if err != nil {
		return err
	}
	// Stand-ins for values that are placeholders until load time.
	if c.ClientID == "" {
		return fmt.Errorf("oauth2_token: client_id is required")
	}
	if c.ClientSecret == "" {
		return fmt.Errorf("oauth2_token: client_secret is required")
	}
	if strings.Contains(c.TokenURL, "{") {
		c.TokenURL = ""
		if c.Provider.TokenURL == "" {
			c.TokenURL = "https://placeholder.invalid/token"
		}
	}
	return validate(c)
}

// validate runs the middleware's checks, with this module's prefix.
func validate(c middleware.Config) error {
	if err := c.Validate(); err != nil {
		return errors.New("oauth2_token: " + strings.TrimPrefix(err.Error(), "middleware: "))
	}
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
