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
)

// revoke asks the RFC 7009 revocation endpoint to revoke refreshToken
// (and, at servers that do so, the access tokens issued with it), with
// the client authentication of the token requests (a secret in a Basic
// header or the form body, a client assertion, or the TLS certificate of
// the transport). ctx bounds it. The
// error never holds the token or the secret.
func (x *exchanger) revoke(ctx context.Context, refreshToken string) error {
	form := url.Values{"token": {refreshToken}, "token_type_hint": {"refresh_token"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, x.revocationURL, nil)
	if err != nil {
		return fmt.Errorf("middleware: revocation request: %w", err)
	}
	if err := x.auth.apply(req, form); err != nil {
		return err
	}
	enc := form.Encode()
	req.Body = io.NopCloser(strings.NewReader(enc))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(enc)), nil }
	req.ContentLength = int64(len(enc))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
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
