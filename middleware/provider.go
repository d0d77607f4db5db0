package middleware

import (
	"fmt"
	"slices"
	"strings"

	"golang.org/x/oauth2"
)

// Provider is a preset for an authorization server: its endpoints, how it
// takes client credentials, and (optionally) its scope catalog.
type Provider struct {
	// Name appears in errors and logs.
	Name string
	// TokenURL and AuthURL are the server's endpoints.
	TokenURL, AuthURL string
	// AuthStyle says where client_id and client_secret go. tokengate never
	// auto-detects: a probe sends the secret twice, once the wrong way.
	AuthStyle oauth2.AuthStyle
	// Scopes maps each scope the server knows to its partner type
	// ("supply", "demand" or "both"). Nil accepts any scope.
	Scopes map[string]string
}

// TaskNation is the TaskNation preset: its endpoints, client credentials in
// the form body, and the scope catalog of its authentication reference.
var TaskNation = Provider{
	Name:      "tasknation",
	TokenURL:  "https://auth.tasknation.com/oauth2/token",
	AuthURL:   "https://auth.tasknation.com/oauth2/auth",
	AuthStyle: oauth2.AuthStyleInParams,
	Scopes: map[string]string{
		"supply::businesses": "supply",
		"supply::leads":      "supply",
		"supply::messages":   "supply",
		"supply::reviews":    "supply",
		"demand::requests":   "demand",
		"demand::categories": "demand",
		"demand::search":     "demand",
		"offline_access":     "both",
	},
}

// Generic is any RFC 6749 server: endpoints come from the Config, client
// credentials go in an HTTP Basic header (the method RFC 6749 requires
// servers to support), and any scope is accepted.
var Generic = Provider{
	Name:      "generic",
	AuthStyle: oauth2.AuthStyleInHeader,
}

// checkScopes rejects scopes outside the catalog and reports whether the
// list mixes partner types (a client is either Supply or Demand).
func (p *Provider) checkScopes(scopes []string) (mixed bool, err error) {
	if p.Scopes == nil {
		return false, nil
	}
	types := map[string]bool{}
	for _, s := range scopes {
		t, ok := p.Scopes[s]
		if !ok {
			valid := make([]string, 0, len(p.Scopes))
			for k := range p.Scopes {
				valid = append(valid, k)
			}
			slices.Sort(valid)
			return false, &ConfigError{Field: "scopes", Value: s, Reason: fmt.Sprintf("unknown %s scope; valid scopes: %s", p.Name, strings.Join(valid, ", "))}
		}
		if t != "both" {
			types[t] = true
		}
	}
	return len(types) > 1, nil
}
