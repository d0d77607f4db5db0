package testkit

import (
	"encoding/json"
	"slices"
)

// Server is one HTTP server of an adapted Caddy config: where it listens
// and the handlers of its top-level routes, in the order they run.
type Server struct {
	Listen   []string
	Handlers []string
}

// Servers reads the HTTP servers of a Caddy JSON config (as the Caddyfile
// adapter writes it), sorted by name (srv0, srv1, …).
func Servers(config []byte) ([]Server, error) {
	var doc struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Listen []string `json:"listen"`
					Routes []struct {
						Handle []struct {
							Handler string `json:"handler"`
						} `json:"handle"`
					} `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(config, &doc); err != nil {
		return nil, err
	}
	names := make([]string, 0, len(doc.Apps.HTTP.Servers))
	for name := range doc.Apps.HTTP.Servers {
		names = append(names, name)
	}
	slices.Sort(names)
	out := make([]Server, 0, len(names))
	for _, name := range names {
		srv := doc.Apps.HTTP.Servers[name]
		s := Server{Listen: srv.Listen}
		for _, r := range srv.Routes {
			for _, h := range r.Handle {
				s.Handlers = append(s.Handlers, h.Handler)
			}
		}
		out = append(out, s)
	}
	return out, nil
}
