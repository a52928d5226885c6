package frontdoor

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
)

// MaxTokenBytes bounds a bearer token; a longer one is refused without a review.
const MaxTokenBytes = 16 << 10

// webSocketBearerPrefix starts a bearer token sent as a WebSocket subprotocol, which
// k8s.io/apiserver's authenticator would accept. No listener serves WebSockets: tokens come from
// the Authorization header only.
const webSocketBearerPrefix = "base64url.bearer.authorization.k8s.io."

// webSocketProtocolHeader is Sec-WebSocket-Protocol as net/http keys it.
const webSocketProtocolHeader = "Sec-Websocket-Protocol"

// bearerToken is a JWT-shaped bearer token with the parts the door reads before any review.
type bearerToken struct {
	raw    string
	header struct {
		Algorithm string `json:"alg"`
		KeyID     string `json:"kid"`
	}
	claims struct {
		Issuer    string   `json:"iss"`
		Subject   string   `json:"sub"`
		Audience  audience `json:"aud"`
		Expiry    int64    `json:"exp"`
		NotBefore int64    `json:"nbf"`
		// Kubernetes is the service-account token's binding: the pod it was minted for.
		Kubernetes struct {
			Pod struct {
				UID string `json:"uid"`
			} `json:"pod"`
		} `json:"kubernetes.io"`
	}
}

// budgetKey is whom a verified token's new-token budget belongs to: its subject, and the pod
// it is bound to, if any — each pod gets its own token (a Job's hundred pods start at once), and
// a user minting tokens for one pod is still held to one budget.
func (t *bearerToken) budgetKey() string {
	if pod := t.claims.Kubernetes.Pod.UID; pod != "" {
		return t.claims.Subject + "/pod/" + pod
	}
	return t.claims.Subject
}

// audience is a JWT's aud: one string or a list.
type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = audience{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*a = many
	return nil
}

// credential is what a request carries: a bearer token from the Authorization header (raw,
// not yet parsed), nothing, or something refused before any parsing.
type credential struct {
	token   string
	refused bool
}

// credentialOf reads the request's bearer token from the Authorization header, the only
// carrier the door takes. A token in a WebSocket subprotocol, a scheme other than Bearer, an
// empty or oversized token: refused. The subprotocol header is removed either way, so that
// k8s.io/apiserver's authenticator never sees one.
func credentialOf(r *http.Request) credential {
	refused := false
	if protocols := r.Header[webSocketProtocolHeader]; len(protocols) > 0 {
		for _, p := range protocols {
			if strings.Contains(p, webSocketBearerPrefix) {
				refused = true
			}
		}
		delete(r.Header, webSocketProtocolHeader)
	}
	auth := r.Header.Get("Authorization")
	if refused || auth == "" {
		return credential{refused: refused}
	}
	scheme, token, _ := strings.Cut(auth, " ")
	token = strings.TrimSpace(token)
	if !strings.EqualFold(scheme, "Bearer") || token == "" || len(token) > MaxTokenBytes {
		return credential{refused: true}
	}
	return credential{token: token}
}

// parseJWT reads a JWT's header and claims without checking its signature: three base64url
// segments, the first a JSON object naming an algorithm, the second a JSON object (of which the
// registered claims are read). nil: not JWT-shaped.
func parseJWT(raw string) *bearerToken {
	if len(raw) == 0 || len(raw) > MaxTokenBytes {
		return nil
	}
	head, rest, ok := strings.Cut(raw, ".")
	payload, sig, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 || payload == "" || sig == "" || strings.Contains(sig, ".") {
		return nil
	}
	for _, part := range []string{head, payload, sig} {
		if !isBase64URL(part) {
			return nil
		}
	}
	t := &bearerToken{raw: raw}
	if b, err := base64.RawURLEncoding.DecodeString(head); err != nil || json.Unmarshal(b, &t.header) != nil || t.header.Algorithm == "" {
		return nil
	}
	b, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return nil
	}
	if json.Unmarshal(b, &t.claims) != nil {
		t.claims = bearerToken{}.claims // claims we cannot read: the token is only unverifiable
	}
	return t
}

func isBase64URL(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
