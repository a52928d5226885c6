package frontdoor

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestParseJWT(t *testing.T) {
	good := b64(`{"alg":"RS256","kid":"k1"}`) + "." + b64(`{"iss":"https://issuer","sub":"system:serviceaccount:a:b","aud":"x","exp":2,"nbf":1}`) + ".c2ln"
	cases := map[string]bool{
		good:                                 true,
		b64(`{"alg":"RS256"}`) + ".e30.c2ln": true,
		b64(`{"alg":"RS256"}`) + "." + b64(`{"aud":7}`) + ".c2ln": true, // unreadable claims: unverifiable, not refused
		"":                                   false,
		"not-a-jwt":                          false,
		"a.b":                                false,
		"a.b.c.d":                            false,
		"e30.e30.":                           false, // no signature
		"e30.e30.c2ln":                       false, // header without alg
		"!!!.e30.c2ln":                       false,
		good + "=":                           false,
		good + " x":                          false,
		strings.Repeat("a", MaxTokenBytes+1): false,
	}
	for token, want := range cases {
		if got := parseJWT(token) != nil; got != want {
			t.Errorf("parseJWT(%.30q) ok = %t, want %t", token, got, want)
		}
	}
	tok := parseJWT(good)
	if diff := cmp.Diff([]string{"k1", "https://issuer", "system:serviceaccount:a:b", "x"},
		[]string{tok.header.KeyID, tok.claims.Issuer, tok.claims.Subject, strings.Join(tok.claims.Audience, ",")}); diff != "" {
		t.Errorf("claims (-want +got):\n%s", diff)
	}
	if tok := parseJWT(b64(`{"alg":"RS256"}`) + "." + b64(`{"aud":["a","b"]}`) + ".c2ln"); strings.Join(tok.claims.Audience, ",") != "a,b" {
		t.Errorf("aud list: %v", tok.claims.Audience)
	}
}

// Tokens come from the Authorization header only: a bearer token in a WebSocket subprotocol
// refuses the request (and the header is removed, so that no authenticator ever sees it);
// other schemes, empty and oversized tokens are refused.
func TestCredentialOf(t *testing.T) {
	cases := []struct {
		name    string
		header  http.Header
		want    credential
		noProto bool
	}{
		{"none", http.Header{}, credential{}, true},
		{"bearer", http.Header{"Authorization": {"Bearer abc"}}, credential{token: "abc"}, true},
		{"lower-case scheme", http.Header{"Authorization": {"bearer abc"}}, credential{token: "abc"}, true},
		{"basic", http.Header{"Authorization": {"Basic abc"}}, credential{refused: true}, true},
		{"empty bearer", http.Header{"Authorization": {"Bearer "}}, credential{refused: true}, true},
		{"oversized", http.Header{"Authorization": {"Bearer " + strings.Repeat("a", MaxTokenBytes+1)}}, credential{refused: true}, true},
		{"subprotocol token", http.Header{"Sec-Websocket-Protocol": {"x, base64url.bearer.authorization.k8s.io.YWJj"}}, credential{refused: true}, true},
		{"subprotocol token beside a bearer", http.Header{"Authorization": {"Bearer abc"}, "Sec-Websocket-Protocol": {"base64url.bearer.authorization.k8s.io.YWJj"}}, credential{refused: true}, true},
		{"another subprotocol", http.Header{"Authorization": {"Bearer abc"}, "Sec-Websocket-Protocol": {"chat"}}, credential{token: "abc"}, true},
	}
	for _, tc := range cases {
		r := &http.Request{Header: tc.header}
		if got := credentialOf(r); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
		if tc.noProto && r.Header.Get("Sec-WebSocket-Protocol") != "" {
			t.Errorf("%s: the subprotocol header is still there", tc.name)
		}
	}
}
