package kubernetes

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/daydreamlive/scopectl/internal/secret"
)

// ApplyOptions change how Apply applies.
type ApplyOptions struct {
	// Force takes over fields another field manager owns (--force-conflicts);
	// without it such a field is an ErrConflict naming field and manager.
	Force bool
	// ServerDryRun sends everything with dryRun=All: the API server validates and
	// admits it but stores nothing.
	ServerDryRun bool
}

// Applied is what one apply did to one object.
type Applied struct {
	Kind            string `json:"kind"`
	Name            string `json:"name"`
	Action          string `json:"action"` // created | configured | unchanged
	ResourceVersion string `json:"resource_version"`
}

// Action values of Applied.
const (
	ActionCreated    = "created"
	ActionConfigured = "configured"
	ActionUnchanged  = "unchanged"
)

// Prepare normalizes s and, when the agent sidecar runs and s has no agent token, takes
// the one the deployment's Secret already holds (so a second deploy changes nothing),
// or makes a new one.
func (c *Client) Prepare(ctx context.Context, s ScopeSpec) (ScopeSpec, error) {
	s, err := s.Normalize()
	if err != nil {
		return s, err
	}
	if s.AgentImage == "-" {
		return s, nil
	}
	s.SecretEnv, err = c.withAgentToken(ctx, s.SecretName(), s.SecretEnv)
	return s, err
}

// withAgentToken returns a copy of env holding the agent token: the one the Secret
// named already holds (so that applying again changes nothing), or a new random one.
func (c *Client) withAgentToken(ctx context.Context, secretName string, env map[string]secret.Secret) (map[string]secret.Secret, error) {
	if _, ok := env[SecretAgentToken]; ok {
		return env, nil
	}
	out := maps.Clone(env)
	if out == nil {
		out = map[string]secret.Secret{}
	}
	sec, err := c.CS.CoreV1().Secrets(c.Namespace).Get(ctx, secretName, metav1.GetOptions{})
	switch {
	case err == nil && len(sec.Data[SecretAgentToken]) > 0:
		out[SecretAgentToken] = secret.New(string(sec.Data[SecretAgentToken]))
	case err == nil || apierrors.IsNotFound(err):
		var b [32]byte
		if _, err := rand.Read(b[:]); err != nil {
			return env, err
		}
		out[SecretAgentToken] = secret.New(hex.EncodeToString(b[:]))
	default:
		return env, c.explain(err, "read secret "+secretName)
	}
	return out, nil
}

// Apply applies s with server-side apply under FieldManager: the Secret, the Service,
// then the StatefulSet. s should come from Prepare (else a fresh agent token is made
// on every apply and the replicas roll each time).
func (c *Client) Apply(ctx context.Context, s ScopeSpec, opt ApplyOptions) ([]Applied, error) {
	s, err := c.Prepare(ctx, s)
	if err != nil {
		return nil, err
	}
	o := s.Build(c.Namespace)
	ao := metav1.ApplyOptions{FieldManager: FieldManager, Force: opt.Force}
	if opt.ServerDryRun {
		ao.DryRun = []string{metav1.DryRunAll}
	}
	var out []Applied
	dry := opt.ServerDryRun
	if o.Secret != nil {
		secrets := c.CS.CoreV1().Secrets(c.Namespace)
		cur, _ := secrets.Get(ctx, s.SecretName(), metav1.GetOptions{})
		got, err := secrets.Apply(ctx, o.Secret, ao)
		if err != nil {
			return out, c.explain(err, "apply secret "+s.SecretName())
		}
		out = append(out, applied("Secret", cur, got, dry))
	}
	if o.ServiceAccount != nil {
		sas := c.CS.CoreV1().ServiceAccounts(c.Namespace)
		curSA, _ := sas.Get(ctx, *o.ServiceAccount.Name, metav1.GetOptions{})
		sa, err := sas.Apply(ctx, o.ServiceAccount, ao)
		if err != nil {
			return out, c.explain(err, "apply serviceaccount "+*o.ServiceAccount.Name)
		}
		out = append(out, applied("ServiceAccount", curSA, sa, dry))
		roles := c.CS.RbacV1().Roles(c.Namespace)
		curRole, _ := roles.Get(ctx, *o.Role.Name, metav1.GetOptions{})
		role, err := roles.Apply(ctx, o.Role, ao)
		if err != nil {
			return out, c.explain(err, "apply role "+*o.Role.Name)
		}
		out = append(out, applied("Role", curRole, role, dry))
		rbs := c.CS.RbacV1().RoleBindings(c.Namespace)
		curRB, _ := rbs.Get(ctx, *o.RoleBinding.Name, metav1.GetOptions{})
		rb, err := rbs.Apply(ctx, o.RoleBinding, ao)
		if err != nil {
			return out, c.explain(err, "apply rolebinding "+*o.RoleBinding.Name)
		}
		out = append(out, applied("RoleBinding", curRB, rb, dry))
	}
	services := c.CS.CoreV1().Services(c.Namespace)
	curSvc, _ := services.Get(ctx, s.Name, metav1.GetOptions{})
	svc, err := services.Apply(ctx, o.Service, ao)
	if err != nil {
		return out, c.explain(err, "apply service "+s.Name)
	}
	out = append(out, applied("Service", curSvc, svc, dry))
	sets := c.CS.AppsV1().StatefulSets(c.Namespace)
	curSts, _ := sets.Get(ctx, s.Name, metav1.GetOptions{})
	if anno := lifeAnnotations(curSts, s.Replicas, time.Now()); len(anno) > 0 {
		o.StatefulSet.WithAnnotations(anno)
	}
	sts, err := sets.Apply(ctx, o.StatefulSet, ao)
	if err != nil {
		return out, c.explain(err, "apply statefulset "+s.Name)
	}
	out = append(out, applied("StatefulSet", curSts, sts, dry))
	return out, nil
}

// lifeAnnotations are the annotations of a StatefulSet's life that a deploy keeps (the
// cost ledger reads them): when it last started — now, when this apply starts it (a new
// StatefulSet, or one at zero given replicas), else the start it has — and the guard's
// last stop. cur is the StatefulSet as it is (empty when there is none).
func lifeAnnotations(cur *appsv1.StatefulSet, replicas int32, now time.Time) map[string]string {
	m := map[string]string{}
	exists := cur != nil && cur.ResourceVersion != ""
	if exists {
		for _, k := range []string{AnnoStoppedBy, AnnoStopReason, AnnoStoppedAt} {
			if v := cur.Annotations[k]; v != "" {
				m[k] = v
			}
		}
	}
	running := exists && (cur.Spec.Replicas == nil || *cur.Spec.Replicas > 0)
	switch {
	case replicas > 0 && running:
		if v := cur.Annotations[AnnoStartedAt]; v != "" {
			m[AnnoStartedAt] = v
		}
	case replicas > 0:
		m[AnnoStartedAt] = now.UTC().Format(time.RFC3339)
	}
	return m
}

// applied says what an apply did to one object: created (before is nil, or Get found
// nothing), unchanged (the same resourceVersion; in a server-side dry run, which stores
// nothing, the same object but for its bookkeeping), or configured.
func applied[T interface {
	metav1.Object
	runtime.Object
}](kind string, before, after T, dry bool) Applied {
	a := Applied{Kind: kind, Name: after.GetName(), ResourceVersion: after.GetResourceVersion()}
	switch {
	case reflect.ValueOf(before).IsNil() || before.GetResourceVersion() == "":
		a.Action = ActionCreated
	case before.GetResourceVersion() == after.GetResourceVersion() && (!dry || sameObject(before, after)):
		a.Action = ActionUnchanged
	default:
		a.Action = ActionConfigured
	}
	return a
}

// sameObject compares two versions of an object without resourceVersion, generation and
// managed fields.
func sameObject(a, b runtime.Object) bool {
	strip := func(o runtime.Object) string {
		o = o.DeepCopyObject()
		m := o.(metav1.Object)
		m.SetResourceVersion("")
		m.SetGeneration(0)
		m.SetManagedFields(nil)
		j, _ := json.Marshal(o)
		return string(j)
	}
	return strip(a) == strip(b)
}

// AgentToken is the agent sidecar's token of deployment name, from its Secret.
func (c *Client) AgentToken(ctx context.Context, name string) (secret.Secret, error) {
	s := ScopeSpec{Name: name}
	sec, err := c.CS.CoreV1().Secrets(c.Namespace).Get(ctx, s.SecretName(), metav1.GetOptions{})
	if err != nil {
		return secret.Secret{}, c.explain(err, "read secret "+s.SecretName())
	}
	v := sec.Data[SecretAgentToken]
	if len(v) == 0 {
		return secret.Secret{}, fmt.Errorf("kubernetes: secret %s has no %s (deployed with --agent-image -?)", s.SecretName(), SecretAgentToken)
	}
	return secret.New(string(v)), nil
}
