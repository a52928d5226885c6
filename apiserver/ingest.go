package apiserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/utils/lru"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/apiserver/frontdoor"
	"github.com/taskops/workflowtask-operator/pkg/progress/ingest"
)

// Result codes of the ingest path beside the endpoint's.
const (
	CodeNoPermission = 403 // the token's pod is not a running pod of this task
	CodeConflict     = 409 // the task was replaced by one of the same name
)

// Messages of the ingest path.
const (
	MsgNoPermission = "Not a writer of this task"
	MsgConflict     = "The task was replaced"
	MsgNotLeader    = "Not the writing replica, please retry later"
	// MsgInvalidProgress: a push or change the wire's bounds refuse.
	MsgInvalidProgress = "Invalid progress"
)

// allowIngest are the methods of the ingest path: PUT a writer's whole state, PATCH one entry.
var allowIngest = []string{http.MethodPut + ", " + http.MethodPatch}

// The user extras kube-apiserver's TokenReview gives a pod-bound service-account token.
const (
	extraPodName = "authentication.kubernetes.io/pod-name"
	extraPodUID  = "authentication.kubernetes.io/pod-uid"
)

// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch

// ingestHandler serves PUT /ingest/v1alpha1/namespaces/{ns}/workflowtasks/{name}/progress: a pod
// of the task pushes its whole state, with a projected token of its runner ServiceAccount for
// the ingest audience. The token must be bound to a pod that is a running pod of the task's Job;
// each pod may push pushesPerSecond (burst pushBurst); the values are kept (liveStore), shown at
// once, and written to the status by the leader's flusher.
type ingestHandler struct {
	authn requestAuthenticator
	// cached reads task pods and Jobs from the manager's cache; uncached past it (a pod the
	// cache does not have yet).
	cached, uncached client.Reader
	tasks            *taskIndex
	live             *liveStore
	hub              *changeHub
	pushes           *frontdoor.Budget // per pod UID
	// refused remembers pods found not to be writers of a task, for the cache TTL.
	refused *expiringSet
	// leading: this replica writes the status; others refuse pushes (the Service routes to
	// the leader).
	leading *atomic.Bool
	// pendingBody answers a push whose values wait for the next write: re-send after the
	// flush interval.
	pendingBody []byte
	debug       bool
}

// Per-pod push budget: the reporter pushes at most once a second (and at Close).
const (
	pushesPerSecond = 2
	pushBurst       = 10
	maxPushers      = 100000
	// maxWritersPerTask bounds the writers whose state one task holds, maxWritersPerPod those
	// of one of its pods (a reporter, a file sidecar, one-entry commands' types).
	maxWritersPerTask = 1024
	maxWritersPerPod  = 64
)

func (h *ingestHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	cid := correlationID(r)
	w.Header()[CorrelationIDHeader] = []string{cid}
	ns, name, ok := ingest.ParsePath(r.URL.Path)
	switch {
	case !ok:
		h.authn.Refused(r)
		writeError(w, CodeNotFound, MsgNotFound, cid, nil, h.debug)
		return
	case r.Method != http.MethodPut && r.Method != http.MethodPatch:
		h.authn.Refused(r)
		w.Header()["Allow"] = allowIngest
		writeError(w, CodeMethod, MsgMethod, cid, nil, h.debug)
		return
	}
	u, err := h.authn.Authenticate(w, r)
	switch {
	case errors.Is(err, frontdoor.ErrLoginBudget), errors.Is(err, frontdoor.ErrIdentityBudget), errors.Is(err, frontdoor.ErrBusy):
		w.Header()["Retry-After"] = retryAfter1
		writeError(w, CodeTooMany, MsgTooMany, cid, nil, h.debug)
		return
	case err != nil:
		writeError(w, CodeLoginRequired, MsgLoginRequired, cid, nil, h.debug)
		return
	}
	code, msg, pending, err := h.push(w, r, u, types.NamespacedName{Namespace: ns, Name: name})
	switch code {
	case CodeSuccess:
		if pending {
			writeBody(w, h.pendingBody)
		} else {
			writeBody(w, writtenBody)
		}
	case CodeTooMany:
		w.Header()["Retry-After"] = retryAfter1
		if msg == MsgNotLeader {
			// Through the ingest Service again: the pod may carry a stale leader label.
			w.Header()["Connection"] = []string{"close"}
		}
		writeError(w, code, msg, cid, err, h.debug)
	case CodeInternal:
		writeError(w, code, MsgInternal, cid, err, h.debug)
	default:
		writeError(w, code, msg, cid, err, h.debug)
	}
}

// push checks that u may write task key, reads the body (a Push, or with PATCH a Change) and
// keeps it; pending says the writer's values are not in the status yet. Every push of a pod,
// refused or not, spends the pod's budget; a token bound to no pod spends its address's.
func (h *ingestHandler) push(w http.ResponseWriter, r *http.Request, u user.Info, key types.NamespacedName) (code int, msg string, pending bool, err error) {
	pod, podUID := single(u.GetExtra()[extraPodName]), single(u.GetExtra()[extraPodUID])
	if pod == "" || podUID == "" {
		h.authn.Refused(r)
		return CodeNoPermission, MsgNoPermission, false, errors.New("a token not bound to a pod")
	}
	if !h.pushes.Take(w, r, podUID) {
		return CodeTooMany, MsgTooMany, false, nil
	}
	if u.GetName() != "system:serviceaccount:"+key.Namespace+":"+key.Name+"-runner" {
		return CodeNoPermission, MsgNoPermission, false, errors.New("not the task's runner")
	}
	if !h.leading.Load() {
		return CodeTooMany, MsgNotLeader, false, nil
	}
	var (
		p      ingest.Push
		change ingest.Change
		uid    *types.UID
		body   any
		valid  func() error
	)
	if r.Method == http.MethodPatch {
		body, uid, valid = &change, &change.TaskUID, change.Validate
	} else {
		body, uid, valid = &p, &p.TaskUID, p.Validate
	}
	if err := decodeStrict(r.Body, body); err != nil {
		return CodeParamErr, MsgInvalidProgress, false, err
	}
	if err := valid(); err != nil {
		return CodeParamErr, MsgInvalidProgress, false, err
	}
	it := h.tasks.ByName(key.Namespace, key.Name)
	switch {
	case it == nil:
		return CodeNoPermission, MsgNoPermission, false, errors.New("no such task")
	case it.task.UID != *uid:
		return CodeConflict, MsgConflict, false, fmt.Errorf("task %s is %s, not %s", key, it.task.UID, *uid)
	}
	if ok, err := h.isWriter(r.Context(), it.task, pod, types.UID(podUID)); err != nil {
		return CodeInternal, MsgInternal, false, err
	} else if !ok {
		return CodeNoPermission, MsgNoPermission, false, errors.New("the token's pod is not a running pod of the task's Job")
	}
	var ok bool
	if r.Method == http.MethodPatch {
		ok, pending = h.live.change(it.task.UID, key, writerKey{pod, change.Type}, change, it.task.Status.Progress, time.Now())
	} else {
		ok, pending = h.live.put(it.task.UID, key, writerKey{pod, p.Writer}, p.Entries, p.Final, time.Now())
	}
	if !ok {
		return CodeTooMany, MsgTooMany, false, errors.New("too many writers for this task or pod")
	}
	if h.tasks.refresh(key, it.task.UID) {
		h.hub.taskChanged(it.task)
	}
	return CodeSuccess, "", pending, nil
}

// decodeStrict reads exactly one JSON value of at most ingest.MaxBodyBytes into v, refusing
// unknown fields.
func decodeStrict(body io.Reader, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, io.NopCloser(body), ingest.MaxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("more than one JSON value")
	}
	return nil
}

// ackBody is the success envelope of a push with its ingest.Ack.
func ackBody(a ingest.Ack) []byte {
	b, _ := json.Marshal(struct {
		Data ingest.Ack `json:"data"`
		Code int        `json:"code"`
		Msg  string     `json:"msg"`
	}{Data: a})
	return b
}

// writtenBody answers a push whose values are in the status already (a re-send).
var writtenBody = ackBody(ingest.Ack{})

func single(v []string) string {
	if len(v) != 1 {
		return ""
	}
	return v[0]
}

// isWriter reports whether pod (with podUID) is a running pod of task's Job: the Job the task
// controls, the pod's controller that Job, the pod not finished. A pod being deleted is still
// running until its grace period ends — a canceled task's pod gets SIGTERM, and its last values
// (the reporter's Close, the progress sidecar's final write) come then; once its containers have
// ended (phase Succeeded or Failed) or it is gone, it is not a writer. It reads the manager's
// cache (task pods and Jobs, by label: no API call per push, and a pod's end refuses its token
// at once); a pod the cache does not have yet (it just started) is read once past the cache, and
// a refusal is remembered for the cache TTL, so a token of a pod that is gone costs
// kube-apiserver at most one read per TTL.
func (h *ingestHandler) isWriter(ctx context.Context, task *workflowv1alpha1.WorkflowTask, pod string, podUID types.UID) (bool, error) {
	memo := string(task.UID) + "/" + string(podUID)
	if h.refused.has(memo) {
		return false, nil
	}
	ok, found, err := writerIn(ctx, h.cached, task, pod, podUID)
	if err == nil && !found {
		ok, _, err = writerIn(ctx, h.uncached, task, pod, podUID)
	}
	if err != nil {
		return false, err
	}
	if !ok {
		h.refused.add(memo)
	}
	return ok, nil
}

// writerIn is isWriter's check against one reader; found says the reader has the pod.
// Objects from the cache are read, not copied (read only, never changed: a push would otherwise
// copy a pod and a Job).
func writerIn(ctx context.Context, r client.Reader, task *workflowv1alpha1.WorkflowTask, pod string, podUID types.UID) (ok, found bool, err error) {
	p := &corev1.Pod{}
	switch err := r.Get(ctx, client.ObjectKey{Namespace: task.Namespace, Name: pod}, p, readOnly); {
	case apierrors.IsNotFound(err):
		return false, false, nil
	case err != nil:
		return false, false, fmt.Errorf("reading the token's pod: %w", err)
	}
	ref := metav1.GetControllerOf(p)
	if p.UID != podUID || ref == nil || !strings.EqualFold(ref.Kind, "Job") ||
		p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return false, true, nil
	}
	job := &batchv1.Job{}
	switch err := r.Get(ctx, client.ObjectKey{Namespace: task.Namespace, Name: task.Name}, job, readOnly); {
	case apierrors.IsNotFound(err):
		return false, true, nil
	case err != nil:
		return false, true, fmt.Errorf("reading the task's Job: %w", err)
	}
	jobRef := metav1.GetControllerOf(job)
	return jobRef != nil && jobRef.UID == task.UID && ref.UID == job.UID, true, nil
}

// readOnly reads a cached object without copying it.
var readOnly = &client.GetOptions{UnsafeDisableDeepCopy: ptr.To(true)}

// expiringSet remembers keys for ttl, at most maxKeys (the least recently added go first).
type expiringSet struct {
	ttl time.Duration
	mu  sync.Mutex
	lru *lru.Cache
}

func newExpiringSet(ttl time.Duration, maxKeys int) *expiringSet {
	return &expiringSet{ttl: ttl, lru: lru.New(maxKeys)}
}

func (s *expiringSet) add(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lru.Add(key, time.Now().Add(s.ttl))
}

func (s *expiringSet) has(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.lru.Get(key)
	return ok && time.Now().Before(v.(time.Time))
}
