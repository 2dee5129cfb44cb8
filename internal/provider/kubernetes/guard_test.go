package kubernetes_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/daydreamlive/scopectl/internal/guard"
	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/provider/kubernetes"
	"github.com/daydreamlive/scopectl/internal/provider/kubernetes/kubetest"
	"github.com/daydreamlive/scopectl/internal/watch"
)

// TestKubeGuardManifests: the guard container runs beside the agent with the limits in
// its env, and its Role is the least it needs: get and patch of this one StatefulSet.
func TestKubeGuardManifests(t *testing.T) {
	s := spec()
	s.Limits = provider.Limits{IdleStop: 20 * time.Minute, MaxHours: 4}
	s, err := s.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	o := s.Build("studio")
	pod := o.StatefulSet.Spec.Template.Spec
	if len(pod.Containers) != 3 || *pod.Containers[2].Name != kubernetes.GuardContainer || *pod.ServiceAccountName != "scope-guard" {
		t.Fatalf("containers %d, service account %v", len(pod.Containers), pod.ServiceAccountName)
	}
	g := pod.Containers[2]
	if strings.Join(g.Command, " ") != "scopectl guard --statefulset scope --dir /workspace/.scopectl/guard --scope-url http://127.0.0.1:8000" || *g.Image != s.AgentImage {
		t.Fatalf("guard %v %s", g.Command, *g.Image)
	}
	env := map[string]string{}
	for _, e := range g.Env {
		switch {
		case e.Value != nil:
			env[*e.Name] = *e.Value
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil:
			env[*e.Name] = "field:" + *e.ValueFrom.FieldRef.FieldPath
		default:
			t.Fatalf("guard env %s from a secret", *e.Name)
		}
	}
	if env[provider.EnvIdleStop] != "20m0s" || env[provider.EnvMaxHours] != "4" || env[kubernetes.EnvPodNamespace] != "field:metadata.namespace" {
		t.Fatalf("guard env %v", env)
	}
	if l, ok := provider.LimitsFromEnv(env); !ok || l.IdleStop != 20*time.Minute || l.MaxHours != 4 {
		t.Fatalf("limits from the guard's env: %+v %v", l, ok)
	}
	if len(o.Role.Rules) != 1 {
		t.Fatalf("rules %+v", o.Role.Rules)
	}
	r := o.Role.Rules[0]
	if !slices.Equal(r.APIGroups, []string{"apps"}) || !slices.Equal(r.Resources, []string{"statefulsets", "statefulsets/scale"}) ||
		!slices.Equal(r.ResourceNames, []string{"scope"}) || !slices.Equal(r.Verbs, []string{"get", "patch"}) {
		t.Fatalf("rule %+v", r)
	}
	sub := o.RoleBinding.Subjects[0]
	if *sub.Kind != "ServiceAccount" || *sub.Name != "scope-guard" || *sub.Namespace != "studio" || *o.RoleBinding.RoleRef.Name != "scope-guard" {
		t.Fatalf("binding %+v", o.RoleBinding)
	}
	y, err := o.YAML()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"kind: ServiceAccount", "kind: Role\n", "kind: RoleBinding", "resourceNames:", "serviceAccountName: scope-guard"} {
		if !strings.Contains(string(y), want) {
			t.Errorf("YAML lacks %q", want)
		}
	}
	// Limits given as env (a provider.CreateSpec's) are the guard's; a bad one is named.
	fromEnv := spec()
	fromEnv.Env[provider.EnvIdleStop] = "45m"
	if n, err := fromEnv.Normalize(); err != nil || n.Limits.IdleStop != 45*time.Minute {
		t.Fatalf("limits from env: %+v %v", n.Limits, err)
	}
	fromEnv.Env[provider.EnvIdleStop] = "soon"
	if _, err := fromEnv.Normalize(); err == nil || !strings.Contains(err.Error(), provider.EnvIdleStop+`="soon" is not a duration`) {
		t.Fatalf("bad limit: %v", err)
	}
	// Without the agent sidecar there is no guard and no RBAC.
	s.AgentImage = "-"
	if o := s.Build("studio"); o.Role != nil || len(o.StatefulSet.Spec.Template.Spec.Containers) != 1 {
		t.Fatal("guard without the sidecar")
	}
}

// saClient is a client acting as the guard's ServiceAccount: the admin impersonating
// system:serviceaccount:NS:NAME, which RBAC judges exactly as the pod's token.
func saClient(t *testing.T, e *kubetest.Env, ns, name string) *kubernetes.Client {
	t.Helper()
	cfg := rest.CopyConfig(e.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + ns + ":" + name,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}}
	c, err := kubernetes.NewForConfig(cfg, ns)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestKubeGuardStopperRBAC: with its ServiceAccount's rights, the guard scales its own
// StatefulSet to zero and records why; another StatefulSet is refused by RBAC; pod get
// shows the stop, and pod start and a second deploy work as after pod stop.
func TestKubeGuardStopperRBAC(t *testing.T) {
	e, c := client(t)
	ctx := context.Background()
	s := spec()
	s.Limits = provider.Limits{IdleStop: time.Minute}
	if as, err := c.Apply(ctx, s, kubernetes.ApplyOptions{}); err != nil || !strings.Contains(actions(as), "ServiceAccount=created Role=created RoleBinding=created") {
		t.Fatalf("apply: %s %v", actions(as), err)
	}
	other := spec()
	other.Name = "other"
	if _, err := c.Apply(ctx, other, kubernetes.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	sa := saClient(t, e, c.Namespace, "scope-guard")
	at := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	st := guard.Stop{By: "guard", Kind: guard.KindIdle, Reason: "idle 1m0s (idle-stop 1m0s)", At: at}
	if err := (guard.KubernetesStopper{Client: sa, StatefulSet: "other"}).StopFor(ctx, st); err == nil || !strings.Contains(err.Error(), "forbidden") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("stop of another statefulset: %v", err)
	}
	if got, _ := c.Get(ctx, "other"); got.Status != provider.StatusRunning {
		t.Fatalf("other: %+v", got)
	}
	if _, err := sa.List(ctx); err == nil {
		t.Fatal("the guard's account may list statefulsets")
	}
	// The pod's own credentials: a token the API server issues for the ServiceAccount
	// (TokenRequest), as the kubelet mounts it into the guard's container.
	if tok, err := e.CS.CoreV1().ServiceAccounts(c.Namespace).CreateToken(ctx, "scope-guard",
		&authv1.TokenRequest{Spec: authv1.TokenRequestSpec{Audiences: nil}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("TokenRequest: %v", err)
	} else {
		cfg := &rest.Config{Host: e.Config.Host, BearerToken: tok.Status.Token, TLSClientConfig: rest.TLSClientConfig{CAData: e.Config.CAData}}
		if sa, err = kubernetes.NewForConfig(cfg, c.Namespace); err != nil {
			t.Fatal(err)
		}
		if err := (guard.KubernetesStopper{Client: sa, StatefulSet: "other"}).StopFor(ctx, st); err == nil || !strings.Contains(err.Error(), "forbidden") {
			t.Fatalf("stop of another statefulset with the token: %v", err)
		}
		t.Log("the guard stops with a ServiceAccount token from TokenRequest")
	}
	t0 := time.Now()
	if err := (guard.KubernetesStopper{Client: sa, StatefulSet: "scope"}).StopFor(ctx, st); err != nil {
		t.Fatal(err)
	}
	t.Logf("guard stop (get + apply as the ServiceAccount) took %v", time.Since(t0).Round(time.Millisecond))
	sts, err := e.CS.AppsV1().StatefulSets(c.Namespace).Get(ctx, "scope", metav1.GetOptions{})
	if err != nil || *sts.Spec.Replicas != 0 || sts.Annotations[kubernetes.AnnoStoppedReplicas] != "2" ||
		sts.Annotations[kubernetes.AnnoStoppedBy] != "guard (idle)" || sts.Annotations[kubernetes.AnnoStopReason] != st.Reason ||
		sts.Annotations[kubernetes.AnnoStoppedAt] != "2026-12-02T10:00:00Z" {
		t.Fatalf("after the guard's stop: %v %v", sts.Annotations, err)
	}
	p, err := c.Get(ctx, "scope")
	if err != nil || p.Status != provider.StatusExited || !strings.Contains(p.Detail, "last stop") || !strings.Contains(p.Detail, "by guard (idle): "+st.Reason) {
		t.Fatalf("pod get: %+v %v", p, err)
	}
	if l := p.Env[provider.EnvIdleStop]; l != "1m0s" {
		t.Fatalf("limits in the pod's env: %v", p.Env)
	}
	// A second stop of a stopped set changes nothing.
	if err := (guard.KubernetesStopper{Client: sa, StatefulSet: "scope"}).StopFor(ctx, st); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx, "scope"); err != nil {
		t.Fatal(err)
	}
	if p, _ := c.Get(ctx, "scope"); p.Status != provider.StatusRunning || p.GPUCount != 2 {
		t.Fatalf("start after the guard's stop: %+v", p)
	}
	if _, err := c.Apply(ctx, s, kubernetes.ApplyOptions{}); err != nil {
		t.Fatalf("deploy after the guard's stop: %v", err)
	}
	if err := c.Terminate(ctx, "scope"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.CS.RbacV1().Roles(c.Namespace).Get(ctx, "scope-guard", metav1.GetOptions{}); err == nil {
		t.Fatal("role left after rm")
	}
}

// fakeScope is Scope's API as the guard reads it: a loaded pipeline, with or without a session.
func fakeScope(t *testing.T, busy *atomic.Bool) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/api/v1/pipeline/status":
			w.Write([]byte(`{"status":"loaded","pipeline_id":"longlive"}`))
		case "/api/v1/session/metrics":
			if busy.Load() {
				w.Write([]byte(`{"sessions":{"s1":{"fps":24}}}`))
			} else {
				w.Write([]byte(`{"sessions":{}}`))
			}
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestKubeGuardIdleScalesToZero: the guard, with the ServiceAccount's rights and a
// Scope that serves no session, scales the StatefulSet to zero past a short idle
// limit; with a session, on its own replica or another one, it does not.
func TestKubeGuardIdleScalesToZero(t *testing.T) {
	e, c := client(t)
	ctx := context.Background()
	s := spec() // two replicas
	if _, err := c.Apply(ctx, s, kubernetes.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	ks := guard.KubernetesStopper{Client: saClient(t, e, c.Namespace, "scope-guard"), StatefulSet: "scope"}
	run := func(busy, otherBusy bool, limit, for_ time.Duration) (stopped bool, after time.Duration) {
		var b, ob atomic.Bool
		b.Store(busy)
		ob.Store(otherBusy)
		url, other := fakeScope(t, &b), fakeScope(t, &ob)
		g := &guard.Guard{Target: "scope", Limits: provider.Limits{IdleStop: limit}, Stopper: ks, Dir: t.TempDir(),
			Probes: []watch.Probe{watch.ScopeProbe{URL: func(provider.Pod) string { return url }},
				guard.ReplicaProbe{Stopper: ks, Self: "scope-0", Port: kubernetes.ScopePort, URL: func(pod string) string {
					if pod != "scope-1" {
						t.Errorf("probed replica %s", pod)
					}
					return other
				}}},
			Every: 100 * time.Millisecond, Log: t.Logf}
		t0 := time.Now()
		for time.Since(t0) < for_ {
			if v := g.Check(ctx); strings.HasPrefix(v, "stopped:") {
				return true, time.Since(t0)
			}
			time.Sleep(100 * time.Millisecond)
		}
		return false, time.Since(t0)
	}
	if stopped, _ := run(true, false, 300*time.Millisecond, 1500*time.Millisecond); stopped {
		t.Fatal("a busy Scope was stopped")
	}
	if stopped, _ := run(false, true, 300*time.Millisecond, 1500*time.Millisecond); stopped {
		t.Fatal("stopped while another replica serves a session")
	}
	if p, _ := c.Get(ctx, "scope"); p.Status != provider.StatusRunning {
		t.Fatalf("busy: %+v", p)
	}
	stopped, after := run(false, false, 500*time.Millisecond, 10*time.Second)
	if !stopped {
		t.Fatal("an idle Scope was not stopped within 10 s")
	}
	t.Logf("idle limit 500ms: scaled to zero %v after the guard started", after.Round(time.Millisecond))
	p, err := c.Get(ctx, "scope")
	if err != nil || p.Status != provider.StatusExited || !strings.Contains(p.Detail, "by guard (idle): idle") {
		t.Fatalf("after the idle stop: %+v %v", p, err)
	}
}
