// Package kubernetes runs Daydream Scope on any Kubernetes cluster the user's kubeconfig
// reaches, through client-go (no kubectl): Scope as a StatefulSet with one GPU per replica,
// a volume claim per replica for models and LoRAs, a headless Service, HF_TOKEN and the
// agent token from a Secret scopectl writes, and scopectl's agent as a sidecar.
//
// Everything is applied with server-side apply under the field manager "scopectl": a
// second apply of the same spec changes nothing (no new resourceVersion), a changed
// flag changes only the field it sets, and a field another manager owns is a one-line
// conflict unless Force takes it over. Errors are one line each: no kubeconfig, an
// unreachable API server, a missing namespace, RBAC, Pending pods with the scheduler's
// reason, images that cannot be pulled.
//
// A "pod" in scopectl's sense (provider.Pod) is one deployment here: a StatefulSet named
// by its id, with all its replicas. Stop scales it to zero (the volumes stay), Start
// scales it back to the count it had, Terminate deletes it with its Service, Secret and
// volume claims.
package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/daydreamlive/scopectl/internal/provider"
)

// Name is the provider's name (--provider kubernetes, store records).
const Name = "kubernetes"

// FieldManager is the server-side apply field manager of everything scopectl applies.
const FieldManager = "scopectl"

// Errors, wrapped with the details; test with errors.Is.
var (
	// ErrNoKubeconfig: no kubeconfig file (KUBECONFIG, ~/.kube/config) or no context in it.
	ErrNoKubeconfig = errors.New("no kubeconfig")
	// ErrUnreachable: the API server did not answer.
	ErrUnreachable = errors.New("API server unreachable")
	// ErrNoNamespace: the namespace does not exist.
	ErrNoNamespace = errors.New("namespace does not exist")
	// ErrForbidden: RBAC refused the request.
	ErrForbidden = errors.New("forbidden")
	// ErrConflict: server-side apply found fields another field manager owns.
	ErrConflict = errors.New("field conflict")
	// ErrNotReady: the replicas did not become ready (Pending with the scheduler's
	// reason, an image that cannot be pulled, a crash loop, a timeout).
	ErrNotReady = errors.New("not ready")
)

// Target is where scopectl talks to: a kubeconfig context and a namespace.
type Target struct {
	// Kubeconfig is a kubeconfig file, or a list of them merged as KUBECONFIG's are
	// (KubeconfigInUse); "" = $KUBECONFIG, else ~/.kube/config.
	Kubeconfig string
	Context    string // "" = the kubeconfig's current context
	Namespace  string // "" = the context's namespace, else "default"
}

// ParseTarget reads k8s://CONTEXT/NAMESPACE[/NAME]: either part may be empty
// (k8s:///scope is the current context's "scope" namespace). name is the third part.
func ParseTarget(s string) (t Target, name string, err error) {
	rest, ok := strings.CutPrefix(s, "k8s://")
	if !ok {
		return t, "", fmt.Errorf("kubernetes: %q: expected k8s://CONTEXT/NAMESPACE[/NAME]", s)
	}
	parts := strings.Split(rest, "/")
	if len(parts) > 3 {
		return t, "", fmt.Errorf("kubernetes: %q: expected k8s://CONTEXT/NAMESPACE[/NAME]", s)
	}
	t.Context = parts[0]
	if len(parts) > 1 {
		t.Namespace = parts[1]
	}
	if len(parts) > 2 {
		name = parts[2]
	}
	return t, name, nil
}

// KubeconfigInUse is the kubeconfig a command reaches the cluster with, to record with
// what it starts there (a training job) so that later commands reach the same cluster
// from a shell without the same KUBECONFIG: explicit (--kubeconfig) made absolute, else
// $KUBECONFIG's files made absolute (a list stays a list), else "" (~/.kube/config, the
// default anywhere). Only paths: a kubeconfig's content is never read here.
func KubeconfigInUse(explicit string) string {
	if explicit != "" {
		if abs, err := filepath.Abs(explicit); err == nil {
			return abs
		}
		return explicit
	}
	var out []string
	for _, p := range filepath.SplitList(os.Getenv(clientcmd.RecommendedConfigPathEnvVar)) {
		if p == "" {
			continue
		}
		if abs, err := filepath.Abs(p); err == nil {
			p = abs
		}
		out = append(out, p)
	}
	return strings.Join(out, string(filepath.ListSeparator))
}

// String is the target as k8s://CONTEXT/NAMESPACE.
func (t Target) String() string { return "k8s://" + t.Context + "/" + t.Namespace }

// Client talks to one namespace of one cluster.
type Client struct {
	CS        kubernetes.Interface
	Namespace string
	Context   string // the kubeconfig context, for messages
	Host      string // the API server URL, for messages
	cfg       *rest.Config
}

// New loads the kubeconfig (KUBECONFIG and its merge rules, or t.Kubeconfig) and
// returns a client for t's context and namespace. It does not contact the API server.
func New(t Target) (*Client, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if paths := filepath.SplitList(t.Kubeconfig); len(paths) > 1 {
		rules.Precedence = paths // a recorded KUBECONFIG list: merged as client-go merges it
	} else if t.Kubeconfig != "" {
		rules.ExplicitPath = t.Kubeconfig
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: t.Context})
	raw, err := cc.RawConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes: reading kubeconfig: %w", oneLine(err))
	}
	if len(raw.Contexts) == 0 {
		where := os.Getenv("KUBECONFIG")
		if t.Kubeconfig != "" {
			where = t.Kubeconfig
		}
		if where == "" {
			where = clientcmd.RecommendedHomeFile
		}
		return nil, fmt.Errorf("kubernetes: %w: %s has no contexts (set KUBECONFIG or --kubeconfig to your cluster's kubeconfig)", ErrNoKubeconfig, where)
	}
	ctxName := t.Context
	if ctxName == "" {
		ctxName = raw.CurrentContext
	}
	if _, ok := raw.Contexts[ctxName]; !ok {
		if ctxName == "" {
			return nil, fmt.Errorf("kubernetes: %w: the kubeconfig has no current context; pass --context (one of %s)", ErrNoKubeconfig, contextNames(raw.Contexts))
		}
		return nil, fmt.Errorf("kubernetes: %w: context %q is not in the kubeconfig (it has %s)", ErrNoKubeconfig, ctxName, contextNames(raw.Contexts))
	}
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes: kubeconfig context %q: %w", ctxName, oneLine(err))
	}
	ns := t.Namespace
	if ns == "" {
		if ns, _, err = cc.Namespace(); err != nil || ns == "" {
			ns = "default"
		}
	}
	c, err := NewForConfig(cfg, ns)
	if err != nil {
		return nil, err
	}
	c.Context = ctxName
	return c, nil
}

// NewForConfig returns a client for a rest.Config (tests: envtest's).
func NewForConfig(cfg *rest.Config, namespace string) (*Client, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "scopectl"
	if cfg.QPS == 0 {
		// client-go's default (5/s, burst 10) throttles a deploy's handful of requests;
		// kubectl uses 50/300.
		cfg.QPS, cfg.Burst = 50, 300
	}
	if cfg.WarningHandler == nil {
		cfg.WarningHandler = rest.NoWarnings{}
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: %w", err)
	}
	if namespace == "" {
		namespace = "default"
	}
	return &Client{CS: cs, Namespace: namespace, Host: cfg.Host, cfg: cfg}, nil
}

// Name is the provider name.
func (c *Client) Name() string { return Name }

// Target is where c points.
func (c *Client) Target() Target { return Target{Context: c.Context, Namespace: c.Namespace} }

func contextNames[V any](m map[string]V) string {
	var names []string
	for k := range m {
		names = append(names, k)
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// oneLine keeps the first line of an error.
func oneLine(err error) error {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return errors.New(strings.TrimSpace(s[:i]))
	}
	return err
}

// explain turns a client-go error into one line that says what to do, wrapping the
// matching sentinel. what names the operation ("apply statefulset scope").
func (c *Client) explain(err error, what string) error {
	if err == nil {
		return nil
	}
	var ue *url.Error
	var ne net.Error
	var st apierrors.APIStatus
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("kubernetes: %s: %w", what, err)
	case apierrors.IsForbidden(err):
		return fmt.Errorf("kubernetes: %s: %w by RBAC: %s (ask the cluster admin for a Role with these rights in namespace %s)", what, ErrForbidden, statusMessage(err), c.Namespace)
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("kubernetes: %s: %w: the API server at %s does not accept the kubeconfig's credentials (expired token?)", what, provider.ErrUnauthorized, c.Host)
	case apierrors.IsConflict(err) && isApplyConflict(err):
		return fmt.Errorf("kubernetes: %s: %w: %s; --force-conflicts takes these fields over", what, ErrConflict, conflictText(err))
	case apierrors.IsNotFound(err) && notFoundKind(err) == "namespaces":
		return fmt.Errorf("kubernetes: %s: %w: namespace %q (create it, or pass --namespace)", what, ErrNoNamespace, c.Namespace)
	case apierrors.IsNotFound(err):
		return fmt.Errorf("kubernetes: %s: %w: %s", what, provider.ErrNotFound, statusMessage(err))
	case apierrors.IsInvalid(err) && strings.Contains(statusMessage(err), "updates to statefulset spec for fields other than"):
		return fmt.Errorf("kubernetes: %s: a StatefulSet's volume claims, selector and service name cannot change once created (--volume-size, --storage-class): keep the old values, or pod rm it (its volumes go too) and deploy again", what)
	case apierrors.IsInvalid(err) && strings.HasPrefix(what, "apply job ") && strings.Contains(statusMessage(err), "field is immutable"):
		return fmt.Errorf("kubernetes: %s: a Job's pod template (image, GPU, env, volumes) cannot change once created: delete the Job (its workspace claim stays) or run under another name", what)
	case errors.As(err, &st):
		return fmt.Errorf("kubernetes: %s: %s", what, statusMessage(err))
	case errors.As(err, &ue), errors.As(err, &ne):
		return fmt.Errorf("kubernetes: %s: %w: %s (context %q): %s", what, ErrUnreachable, c.Host, c.Context, rootCause(err))
	}
	return fmt.Errorf("kubernetes: %s: %w", what, oneLine(err))
}

func rootCause(err error) string {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err.Error()
	}
	return oneLine(err).Error()
}

func statusMessage(err error) string {
	var st apierrors.APIStatus
	if errors.As(err, &st) {
		return oneLine(errors.New(st.Status().Message)).Error()
	}
	return oneLine(err).Error()
}

func notFoundKind(err error) string {
	var st apierrors.APIStatus
	if errors.As(err, &st) && st.Status().Details != nil {
		return st.Status().Details.Kind
	}
	return ""
}

func isApplyConflict(err error) bool {
	var st apierrors.APIStatus
	if !errors.As(err, &st) || st.Status().Details == nil {
		return false
	}
	for _, c := range st.Status().Details.Causes {
		if c.Type == metav1.CauseTypeFieldManagerConflict {
			return true
		}
	}
	return false
}

// conflictText lists each conflicting field with its manager on one line:
// `.spec.replicas (managed by "kubectl-edit")`.
func conflictText(err error) string {
	var st apierrors.APIStatus
	errors.As(err, &st)
	var parts []string
	for _, c := range st.Status().Details.Causes {
		if c.Type != metav1.CauseTypeFieldManagerConflict {
			continue
		}
		mgr := c.Message
		if i := strings.IndexByte(mgr, '"'); i >= 0 {
			if j := strings.IndexByte(mgr[i+1:], '"'); j >= 0 {
				mgr = mgr[i+1 : i+1+j]
			}
		}
		parts = append(parts, fmt.Sprintf("%s (managed by %q)", c.Field, mgr))
	}
	return fmt.Sprintf("%d field(s) owned by another manager: %s", len(parts), strings.Join(parts, ", "))
}
