// Command caddy is Caddy with the standard modules and tokengate's
// oauth2_token handler: the same binary `make caddy` builds with xcaddy,
// as a plain Go main for `go run ./examples/caddy run --config Caddyfile`.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/tasknation/tokengate/caddymodule"
)

func main() {
	caddycmd.Main()
}
