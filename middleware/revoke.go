package middleware

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"golang.org/x/oauth2"
)

// revoke asks the RFC 7009 revocation endpoint to revoke refreshToken
// (and, at servers that do so, the access tokens issued with it), with
// the client authentication of the token requests. ctx bounds it. The
// error never holds the token or the secret.
func (x *exchanger) revoke(ctx context.Context, refreshToken string) error {
	form := url.Values{"token": {refreshToken}, "token_type_hint": {"refresh_token"}}
	basic := x.oc.Endpoint.AuthStyle != oauth2.AuthStyleInParams
	if !basic {
		form.Set("client_id", x.oc.ClientID)
		form.Set("client_secret", x.oc.ClientSecret)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, x.revocationURL, strings.NewReader(form.Encode()))
	if err != nil {
		return fmt.Errorf("middleware: revocation request: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if basic {
		// RFC 6749 §2.3.1: form-encoded before Basic, as x/oauth2 does.
		req.SetBasicAuth(url.QueryEscape(x.oc.ClientID), url.QueryEscape(x.oc.ClientSecret))
	}
	resp, err := x.revokeClient.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("middleware: revocation endpoint did not answer in time")
		}
		return fmt.Errorf("middleware: revocation endpoint could not be reached: %s", scrub(err.Error(), 200, []string{refreshToken, x.oc.ClientSecret}))
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && isErrorCode(e.Error) && e.Error != "" {
		return fmt.Errorf("middleware: revocation endpoint answered HTTP %d with error %q", resp.StatusCode, e.Error)
	}
	return fmt.Errorf("middleware: revocation endpoint answered HTTP %d", resp.StatusCode)
}
