module github.com/tasknation/tokengate

go 1.26.0

require (
	github.com/allegro/bigcache/v3 v3.1.0
	go.uber.org/zap v1.28.0
	golang.org/x/oauth2 v0.38.0
	golang.org/x/sync v0.25.0
)

require go.uber.org/multierr v1.10.0 // indirect
