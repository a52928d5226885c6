package attack_test

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"math"
	"math/big"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/taskops/workflowtask-operator/apiserver"
	"github.com/taskops/workflowtask-operator/apiserver/frontdoor"
	"github.com/taskops/workflowtask-operator/internal/testenv"
	"github.com/taskops/workflowtask-operator/pkg/progress/ingest"
)

// door is one listener of the binary, as a legitimate caller and an attacker use it.
type door struct {
	name string
	// base is the listener's URL; path what attackers ask for.
	base, path string
	// victim is a legitimate request (path and header pairs), fresh: with a token the door has
	// never seen (else one it has).
	victim func(t *testing.T, fresh bool) (string, []string)
	// served: the victim got what it asked for; refused: an attacker was turned away.
	served, refused func(answer) bool
	// credentialsIgnored: the listener takes none (the probes): attackers are answered as
	// anyone is, and must cost no review.
	credentialsIgnored bool
	// method and body are what requests of the door send (default: GET, no body).
	method string
	body   []byte
}

// send sends a request of the door to url from client with header pairs.
func (d door) send(client *http.Client, url string, header ...string) answer {
	return sendRequest(client, cmp.Or(d.method, http.MethodGet), url, d.body, header...)
}

var (
	doorsOnce sync.Once
	doorsList []door
)

var (
	ingestDoorOnce sync.Once
	ingestDoorList door
)

// ingestDoor is the ingest path on the progress endpoint's listener, its victim a running pod of
// a task pushing its progress; attackers push to that task.
func ingestDoor(t *testing.T) door {
	ingestDoorOnce.Do(func() {
		owner := newSAUser(t, "users", "ingest-victim-owner")
		task := createTaskObject(t, "ingest-victim", owner)
		victim := runningPod(t, task, "ingest-victim-pod")
		ingestDoorList = door{
			name: "ingest", base: progressURL, path: ingest.Path(task.Namespace, task.Name),
			method: http.MethodPut, body: pushBody(task.UID, "upload", 666),
			victim: func(t *testing.T, fresh bool) (string, []string) {
				token := victim.token
				if fresh {
					token = victim.newToken(t, ingest.Audience)
				}
				return ingest.Path(task.Namespace, task.Name), bearer(token)
			},
			served: func(a answer) bool { return a.code() == apiserver.CodeSuccess },
			refused: func(a answer) bool {
				return a.code() == apiserver.CodeLoginRequired || a.code() == apiserver.CodeTooMany
			},
		}
	})
	return ingestDoorList
}

// allDoors are the doors and the ingest door.
func allDoors(t *testing.T) []door { return append(slices.Clip(doors(t)), ingestDoor(t)) }

// doors are the binary's listeners, with a victim each: the owner of a task on the progress
// endpoint, Prometheus on the metrics port, the kubelet on the probes.
func doors(t *testing.T) []door {
	doorsOnce.Do(func() {
		owner := newSAUser(t, "users", "victim-owner")
		ownerPath := createTask(t, "victim", owner)
		prometheus := newSAUser(t, "monitoring", "prometheus")
		bearer := func(u saUser, fresh bool) []string {
			token := u.token
			if fresh {
				token = u.freshToken(t)
			}
			return []string{"Authorization", "Bearer " + token}
		}
		doorsList = []door{{
			name: "progress", base: progressURL, path: "/workflow/progress/AAAAAAAAAA",
			victim: func(_ *testing.T, fresh bool) (string, []string) { return ownerPath, bearer(owner, fresh) },
			served: func(a answer) bool {
				return a.code() == apiserver.CodeSuccess && strings.Contains(string(a.body), `"upload"`)
			},
			refused: func(a answer) bool {
				return a.code() == apiserver.CodeLoginRequired || a.code() == apiserver.CodeTooMany
			},
		}, {
			name: "metrics", base: metricsURL, path: "/metrics",
			victim: func(_ *testing.T, fresh bool) (string, []string) { return "/metrics", bearer(prometheus, fresh) },
			served: func(a answer) bool {
				return a.status == http.StatusOK && strings.Contains(string(a.body), frontdoor.ConnectionsMetric)
			},
			refused: func(a answer) bool {
				return a.status == http.StatusUnauthorized || a.status == http.StatusTooManyRequests || a.status == http.StatusForbidden
			},
		}, {
			name: "probes", base: probesURL, path: "/readyz",
			victim:             func(*testing.T, bool) (string, []string) { return "/readyz", nil },
			served:             func(a answer) bool { return a.status == http.StatusOK },
			refused:            func(a answer) bool { return a.status == http.StatusOK },
			credentialsIgnored: true,
		}}
	})
	return doorsList
}

// carrier is a way a credential, or something posing as one, arrives.
type carrier struct {
	name   string
	header func(t *testing.T, i int) []string
	// budgeted: a token that cannot be checked here, reviewed within the address's budget of
	// failed logins; otherwise no review may be sent at all.
	budgeted bool
	// clientCert: the attacker presents a client certificate of a CA the cluster never had.
	clientCert bool
}

// junkSeq makes every junk token of the suite unique (a refused token is remembered).
var junkSeq atomic.Int64

func carriers(t *testing.T) []carrier {
	valid := newSAUser(t, "users", "stolen")
	return []carrier{
		{name: "Authorization: unique junk JWTs (no issuer)", budgeted: true,
			header: func(*testing.T, int) []string {
				return []string{"Authorization", "Bearer " + junkJWT(int(junkSeq.Add(1)), 300)}
			}},
		{name: "Authorization: unique forged service-account tokens",
			header: func(t *testing.T, _ int) []string { return []string{"Authorization", "Bearer " + forgedToken(t)} }},
		{name: "Authorization: huge tokens",
			header: func(*testing.T, int) []string {
				return []string{"Authorization", "Bearer " + junkJWT(int(junkSeq.Add(1)), 20<<10)}
			}},
		{name: "Authorization: not a JWT",
			header: func(_ *testing.T, i int) []string {
				return []string{"Authorization", "Bearer x" + strings.Repeat("y", i%50)}
			}},
		{name: "Authorization: another scheme",
			header: func(_ *testing.T, i int) []string { return []string{"Authorization", "Basic " + junkJWT(i, 100)} }},
		{name: "WebSocket subprotocol: a valid token",
			header: func(_ *testing.T, _ int) []string { // with the second subprotocol k8s.io/apiserver asks for
				return []string{"Sec-WebSocket-Protocol", "base64url.bearer.authorization.k8s.io." + base64.RawURLEncoding.EncodeToString([]byte(valid.token)) + ", v4.channel.k8s.io",
					"Connection", "Upgrade", "Upgrade", "websocket"}
			}},
		{name: "front-proxy headers without the proxy's certificate",
			header: func(_ *testing.T, _ int) []string {
				return []string{"X-Remote-User", "system:admin", "X-Remote-Group", "system:masters"}
			}},
		{name: "client certificate of an unknown CA", clientCert: true,
			header: func(*testing.T, int) []string { return nil }},
		{name: "none", header: func(*testing.T, int) []string { return nil }},
	}
}

// Every listener (and the ingest path, attackers pushing to a task whose pod is the victim) ×
// every carrier: attackers are refused (on the probes: answered as anyone),
// at most the address's budget of failed logins reaches TokenReview (nothing at all for a
// carrier that can be judged here), and the victim is served from another address and from
// the attacker's own — with a token the door has never seen, after the attacker spent the
// address's budget. Then every goroutine of the attacks is gone.
func TestEveryDoorEveryCarrier(t *testing.T) {
	const n, workers = 24, 8
	baseline := runtime.NumGoroutine()
	for _, d := range allDoors(t) {
		for _, c := range carriers(t) {
			t.Run(d.name+"/"+c.name, func(t *testing.T) {
				attackerIP := freshAddress()
				attacker := clientFrom(attackerIP)
				if c.clientCert {
					attacker = certClient(t, attackerIP)
				}
				before, start := tokenReviews.Load(), time.Now()
				answers := floodRequests(attacker, cmp.Or(d.method, http.MethodGet), d.base+d.path, d.body, n, workers,
					func(i int) []string { return c.header(t, i) })
				reviews, elapsed := tokenReviews.Load()-before, time.Since(start)
				for i, a := range answers {
					if a.err != nil || !d.refused(a) {
						t.Fatalf("attacker request %d: HTTP %d %.200s (%v): not refused", i, a.status, a.body, a.err)
					}
				}
				allowed := int64(0)
				if c.budgeted && !d.credentialsIgnored {
					allowed = int64(opts.FailedLoginBurst) + int64(math.Ceil(elapsed.Seconds()*opts.FailedLoginsPerSecond)) + 2
				}
				if reviews > allowed {
					t.Errorf("%d TokenReviews for %d attacker requests in %s; at most %d allowed", reviews, n, elapsed.Round(time.Millisecond), allowed)
				}
				if c.budgeted && !d.credentialsIgnored && reviews < int64(opts.FailedLoginBurst) {
					t.Errorf("only %d TokenReviews: the attack did not spend the address's budget (%d)", reviews, opts.FailedLoginBurst)
				}
				path, header := d.victim(t, false)
				if a := d.send(clientFrom(freshAddress()), d.base+path, header...); !d.served(a) {
					t.Errorf("the victim on another address: HTTP %d %.200s (%v)", a.status, a.body, a.err)
				}
				path, header = d.victim(t, c.budgeted)
				if a := d.send(sameAddressClient(attackerIP), d.base+path, header...); !d.served(a) {
					t.Errorf("the victim on the attacker's own address (a new token: %t): HTTP %d %.200s (%v)", c.budgeted, a.status, a.body, a.err)
				}
			})
		}
	}
	closeIdle()
	settled(t, baseline, 20)
}

// sameAddressClient is a new client (its own connections) on ip; closeIdle closes them.
func sameAddressClient(ip net.IP) *http.Client {
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // self-signed test endpoint
		DialContext:     (&net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}}).DialContext,
	}}
	byAddress.Store(c, c)
	return c
}

// certClient presents a client certificate of a CA the cluster never had, from ip.
func certClient(t *testing.T, ip net.IP) *http.Client {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "system:admin", Organization: []string{"system:masters"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c := sameAddressClient(ip)
	c.Transport.(*http.Transport).TLSClientConfig.Certificates = []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}
	return c
}

// aggregatedServed reports whether the progress endpoint answers through the aggregation layer
// (kube-apiserver's own connections to it, from 127.0.0.1).
func aggregatedServed(t *testing.T, path string) error {
	t.Helper()
	body, err := kubernetes.NewForConfigOrDie(adminCfg).RESTClient().Get().
		AbsPath("/apis/progress.taskops.dev/v1alpha1/progress/" + strings.TrimPrefix(path, "/workflow/progress/")).
		Do(context.Background()).Raw()
	if err != nil {
		return err
	}
	if !strings.Contains(string(body), `"upload"`) {
		return errors.New("no progress in " + string(body))
	}
	return nil
}

// Junk from many addresses at once, each within its own budget, is bounded overall: the
// reviews of tokens that cannot be checked here stay within the global budget, while a victim
// with a new token the door verifies is served meanwhile.
func TestJunkFromManyAddressesIsBoundedOverall(t *testing.T) {
	const addrs, each = 100, 4
	d := doors(t)[0]
	before, start := tokenReviews.Load(), time.Now()
	var wg sync.WaitGroup
	for range addrs {
		client := sameAddressClient(freshAddress())
		wg.Go(func() {
			for range each {
				if a := send(client, d.base+d.path, "Authorization", "Bearer "+junkJWT(int(junkSeq.Add(1)), 300)); !d.refused(a) {
					t.Errorf("junk: HTTP %d %.100s (%v)", a.status, a.body, a.err)
				}
			}
		})
	}
	path, header := d.victim(t, true)
	if a := send(sameAddressClient(freshAddress()), d.base+path, header...); !d.served(a) {
		t.Errorf("the victim during the flood: HTTP %d %.200s (%v)", a.status, a.body, a.err)
	}
	wg.Wait()
	reviews, elapsed := tokenReviews.Load()-before, time.Since(start)
	rate := opts.UnverifiableReviewsPerSecond
	if allowed := int64(2*rate+elapsed.Seconds()*rate) + 2; reviews > allowed {
		t.Errorf("%d TokenReviews for %d junk tokens from %d addresses in %s; the overall budget allows %d",
			reviews, addrs*each, addrs, elapsed.Round(time.Millisecond), allowed)
	}
}

// A revoked token (bound to a Secret since deleted, as a leaked token is revoked) presented again
// and again — by whoever holds it, 24 times from an address of its own — is refused with at
// most one TokenReview, and spends its identity's budget of new tokens only for that review:
// the identity's new token is still reviewed and served.
func TestRevokedTokenCannotLockItsIdentityOut(t *testing.T) {
	const n = 24
	ctx := context.Background()
	owner := newSAUser(t, "users", "revoked-owner")
	path := createTask(t, "revoked", owner)
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "revoked-owner-binding", Namespace: "users"}}
	if err := k8sClient.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	leaked, err := testenv.BoundToken(ctx, adminCfg, "users", "revoked-owner", secret)
	if err != nil {
		t.Fatal(err)
	}
	thief := clientFrom(freshAddress())
	if a := send(thief, progressURL+path, "Authorization", "Bearer "+leaked); a.code() != apiserver.CodeSuccess {
		t.Fatalf("the token before it was revoked: HTTP %d %.200s (%v)", a.status, a.body, a.err)
	}
	if err := k8sClient.Delete(ctx, secret); err != nil {
		t.Fatal(err)
	}
	// Known to the door until its cache of the token expires; then reviewed, and refused.
	gomega.NewWithT(t).Eventually(func() int {
		return send(sameAddressClient(freshAddress()), progressURL+path, "Authorization", "Bearer "+leaked).code()
	}, 3*opts.AuthCacheTTL, time.Second).Should(gomega.Equal(apiserver.CodeLoginRequired), "the revoked token refused")
	before := tokenReviews.Load()
	answers := flood(thief, progressURL+path, n, 4, func(int) []string { return []string{"Authorization", "Bearer " + leaked} })
	reviews := tokenReviews.Load() - before
	for i, a := range answers {
		if a.code() != apiserver.CodeLoginRequired && a.code() != apiserver.CodeTooMany {
			t.Fatalf("the revoked token, request %d: HTTP %d %.200s (%v)", i, a.status, a.body, a.err)
		}
	}
	if reviews > 1 {
		t.Errorf("%d TokenReviews for a revoked token presented %d times; want at most 1", reviews, n)
	}
	if a := send(clientFrom(freshAddress()), progressURL+path, "Authorization", "Bearer "+owner.freshToken(t)); a.code() != apiserver.CodeSuccess {
		t.Errorf("the identity's new token after its revoked one was presented %d times: HTTP %d %.200s (%v)", n, a.status, a.body, a.err)
	}
}
