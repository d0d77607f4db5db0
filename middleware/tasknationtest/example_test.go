package tasknationtest_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"

	"github.com/tasknation/tokengate/middleware/tasknationtest"
)

func ExampleNewServer() {
	srv := tasknationtest.NewServer(tasknationtest.Options{})
	defer srv.Close()

	// A client_credentials token request, credentials in the form body
	// as TaskNation wants them.
	resp, err := http.PostForm(srv.TokenURL(), url.Values{
		"grant_type":    {"client_credentials"},
		"client_id":     {tasknationtest.DefaultClientID},
		"client_secret": {tasknationtest.DefaultClientSecret},
		"scope":         {"demand::categories"},
	})
	if err != nil {
		panic(err)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		Scope       string `json:"scope"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	fmt.Println("token:", resp.StatusCode, tok.TokenType, tok.Scope)

	// The fake API under srv.APIURL() ("<URL>/api") checks the token and
	// the scope of each route.
	call := func(path string) {
		req, _ := http.NewRequest(http.MethodGet, srv.APIURL()+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			panic(err)
		}
		resp.Body.Close()
		fmt.Println(path+":", resp.StatusCode)
	}
	call("/v1/categories")
	call("/v1/leads") // needs supply::leads
	fmt.Println("token requests:", srv.TokenRequests(tasknationtest.GrantClientCredentials))
	// Output:
	// token: 200 bearer demand::categories
	// /v1/categories: 200
	// /v1/leads: 403
	// token requests: 1
}
