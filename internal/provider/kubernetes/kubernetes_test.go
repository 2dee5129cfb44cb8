package kubernetes_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	appsac "k8s.io/client-go/applyconfigurations/apps/v1"

	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/provider/kubernetes"
	"github.com/daydreamlive/scopectl/internal/provider/kubernetes/kubetest"
	"github.com/daydreamlive/scopectl/internal/secret"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

const hfToken = "hf_TESTtokenNEVERprinted0123456789"

func spec() kubernetes.ScopeSpec {
	tol, _ := kubernetes.ParseToleration("nvidia.com/gpu:NoSchedule")
	return kubernetes.ScopeSpec{
		Name: "scope", Replicas: 2, Image: "example.com/scope:1", AgentImage: "example.com/scopectl:1",
		GPUCount: 1, NodeSelector: map[string]string{"gpu": "h100"}, Tolerations: []corev1.Toleration{tol},
		Env: map[string]string{
			"DAYDREAM_SCOPE_MODELS_DIR": "/workspace/models", "DAYDREAM_SCOPE_LOGS_DIR": "/workspace/logs",
			"DAYDREAM_SCOPE_LORA_DIR": "/workspace/models/lora", "SCOPE_LORA_DIR": "/workspace/models/lora",
		},
		SecretEnv: map[string]secret.Secret{"HF_TOKEN": secret.New(hfToken)},
	}
}

func TestManifests(t *testing.T) {
	s, err := spec().Normalize()
	if err != nil {
		t.Fatal(err)
	}
	o := s.Build("studio")
	sts := o.StatefulSet
	if *sts.Spec.Replicas != 2 || *sts.Spec.ServiceName != "scope" || *sts.Namespace != "studio" {
		t.Fatalf("statefulset spec: %+v", sts.Spec)
	}
	pod := sts.Spec.Template.Spec
	if len(pod.Containers) != 3 || *pod.Containers[0].Name != "scope" || *pod.Containers[1].Name != "agent" || *pod.Containers[2].Name != "guard" {
		t.Fatalf("containers: %d", len(pod.Containers))
	}
	scope := pod.Containers[0]
	if q := (*scope.Resources.Limits)["nvidia.com/gpu"]; q.String() != "1" {
		t.Fatalf("GPU limit %v", q.String())
	}
	if pod.NodeSelector["gpu"] != "h100" || len(pod.Tolerations) != 1 || *pod.Tolerations[0].Key != "nvidia.com/gpu" ||
		*pod.Tolerations[0].Operator != corev1.TolerationOpExists || *pod.Tolerations[0].Effect != corev1.TaintEffectNoSchedule {
		t.Fatalf("scheduling: %v %+v", pod.NodeSelector, pod.Tolerations)
	}
	env := map[string]string{}
	for _, e := range scope.Env {
		if e.ValueFrom != nil {
			env[*e.Name] = "secret:" + *e.ValueFrom.SecretKeyRef.Name + "/" + *e.ValueFrom.SecretKeyRef.Key
		} else {
			env[*e.Name] = *e.Value
		}
	}
	if env["HF_TOKEN"] != "secret:scope-secrets/HF_TOKEN" || env["SCOPE_LORA_DIR"] != "/workspace/models/lora" ||
		env[provider.EnvIdleStop] != "0" || env[provider.EnvMaxHours] != "0" || len(env) != 7 { // the limits: none here
		t.Fatalf("env %v", env)
	}
	agent := pod.Containers[1]
	if strings.Join(agent.Command, " ") != "scopectl agent --dir /workspace/models/lora --listen :8765" || *agent.Image != "example.com/scopectl:1" {
		t.Fatalf("agent %v %s", agent.Command, *agent.Image)
	}
	if len(sts.Spec.VolumeClaimTemplates) != 1 {
		t.Fatal("no volume claim template")
	}
	if q := (*sts.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests)[corev1.ResourceStorage]; q.String() != "50Gi" {
		t.Fatalf("volume %s", q.String())
	}
	y, err := o.YAML()
	if err != nil {
		t.Fatal(err)
	}
	text := string(y)
	if strings.Contains(text, hfToken) || strings.Contains(text, "kind: Secret") || !strings.Contains(text, "# Secret studio/scope-secrets (keys HF_TOKEN)") {
		t.Fatalf("the printed manifests hold a secret or miss the note:\n%s", text)
	}
	for _, want := range []string{"kind: StatefulSet", "kind: Service", "nvidia.com/gpu: \"1\"", "secretKeyRef:", "clusterIP: None"} {
		if !strings.Contains(text, want) {
			t.Errorf("YAML lacks %q:\n%s", want, text)
		}
	}
	// hostNetwork for single-node tests.
	s.HostNetwork = true
	if p := s.Build("x").StatefulSet.Spec.Template.Spec; p.HostNetwork == nil || !*p.HostNetwork || *p.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Fatal("hostNetwork not set")
	}
}

func TestParseFlags(t *testing.T) {
	for in, want := range map[string]string{"": "nvidia.com/gpu=1", "nvidia.com/gpu=2": "nvidia.com/gpu=2", "3": "nvidia.com/gpu=3", "amd.com/gpu": "amd.com/gpu=1"} {
		n, c, err := kubernetes.ParseGPU(in)
		if err != nil || n+"="+itoa(c) != want {
			t.Errorf("ParseGPU(%q) = %s %d %v, want %s", in, n, c, err, want)
		}
	}
	if _, _, err := kubernetes.ParseGPU("nvidia.com/gpu=x"); err == nil {
		t.Error("bad count accepted")
	}
	tol, err := kubernetes.ParseToleration("dedicated=gpu:NoExecute")
	if err != nil || tol.Key != "dedicated" || tol.Value != "gpu" || tol.Operator != corev1.TolerationOpEqual || tol.Effect != corev1.TaintEffectNoExecute {
		t.Errorf("toleration %+v %v", tol, err)
	}
	if _, err := kubernetes.ParseToleration("a:Sometimes"); err == nil {
		t.Error("bad effect accepted")
	}
	tg, name, err := kubernetes.ParseTarget("k8s://lab/studio/scope")
	if err != nil || tg.Context != "lab" || tg.Namespace != "studio" || name != "scope" {
		t.Errorf("target %+v %q %v", tg, name, err)
	}
	if _, err := (kubernetes.ScopeSpec{Name: "Bad_Name"}).Normalize(); err == nil {
		t.Error("bad name accepted")
	}
}

func itoa(n int64) string { return resource.NewQuantity(n, resource.DecimalSI).String() }

func TestNoKubeconfigAndUnreachable(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("KUBECONFIG", filepath.Join(dir, "missing"))
	t.Setenv("HOME", dir)
	_, err := kubernetes.New(kubernetes.Target{})
	if !errors.Is(err, kubernetes.ErrNoKubeconfig) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("no kubeconfig: %v", err)
	}
	t.Logf("no kubeconfig: %v", err)
	kc := filepath.Join(dir, "kc")
	os.WriteFile(kc, []byte("apiVersion: v1\nkind: Config\ncurrent-context: dead\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: x\ncontexts:\n- name: dead\n  context:\n    cluster: c\n    user: u\n"), 0o600)
	if _, err := kubernetes.New(kubernetes.Target{Kubeconfig: kc, Context: "other"}); !errors.Is(err, kubernetes.ErrNoKubeconfig) || !strings.Contains(err.Error(), "dead") {
		t.Fatalf("unknown context: %v", err)
	}
	c, err := kubernetes.New(kubernetes.Target{Kubeconfig: kc})
	if err != nil {
		t.Fatal(err)
	}
	if c.Namespace != "default" || c.Context != "dead" {
		t.Fatalf("client %+v", c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = c.List(ctx)
	if !errors.Is(err, kubernetes.ErrUnreachable) || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("unreachable: %v", err)
	}
	t.Logf("unreachable: %v", err)
}

// client returns a kubernetes.Client on a fresh namespace of the shared control plane,
// through a kubeconfig file as a user's would be.
func client(t *testing.T) (*kubetest.Env, *kubernetes.Client) {
	e := kubetest.Start(t)
	ns := e.Namespace(t)
	kc := kubetest.Kubeconfig(t, t.TempDir(), e.Config, "lab", ns)
	c, err := kubernetes.New(kubernetes.Target{Kubeconfig: kc})
	if err != nil {
		t.Fatal(err)
	}
	if c.Namespace != ns || c.Context != "lab" {
		t.Fatalf("client on %s/%s", c.Context, c.Namespace)
	}
	return e, c
}

func actions(as []kubernetes.Applied) string {
	var s []string
	for _, a := range as {
		s = append(s, a.Kind+"="+a.Action)
	}
	return strings.Join(s, " ")
}

func TestApplyIdempotentAndOneFieldChanges(t *testing.T) {
	e, c := client(t)
	t.Logf("kube-apiserver + etcd up in %v", e.Up)
	ctx := context.Background()
	s := spec()
	// A server-side dry run is the plan: everything would be created, nothing is.
	plan, err := c.Apply(ctx, s, kubernetes.ApplyOptions{ServerDryRun: true})
	if err != nil || actions(plan) != "Secret=created ServiceAccount=created Role=created RoleBinding=created Service=created StatefulSet=created" {
		t.Fatalf("dry run: %s %v", actions(plan), err)
	}
	if l, _ := e.CS.AppsV1().StatefulSets(c.Namespace).List(ctx, metav1.ListOptions{}); len(l.Items) != 0 {
		t.Fatal("the dry run stored a StatefulSet")
	}
	t0 := time.Now()
	first, err := c.Apply(ctx, s, kubernetes.ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first apply (3 objects) in %v", time.Since(t0))
	if got := actions(first); got != "Secret=created ServiceAccount=created Role=created RoleBinding=created Service=created StatefulSet=created" {
		t.Fatalf("first apply: %s", got)
	}
	second, err := c.Apply(ctx, s, kubernetes.ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := actions(second); got != "Secret=unchanged ServiceAccount=unchanged Role=unchanged RoleBinding=unchanged Service=unchanged StatefulSet=unchanged" {
		t.Fatalf("second apply: %s", got)
	}
	for i := range first {
		if first[i].ResourceVersion != second[i].ResourceVersion {
			t.Fatalf("%s resourceVersion %s → %s", first[i].Kind, first[i].ResourceVersion, second[i].ResourceVersion)
		}
	}
	before, _ := e.CS.AppsV1().StatefulSets(c.Namespace).Get(ctx, "scope", metav1.GetOptions{})
	// The Secret holds the token and an agent token scopectl made, kept across applies.
	sec, err := e.CS.CoreV1().Secrets(c.Namespace).Get(ctx, "scope-secrets", metav1.GetOptions{})
	if err != nil || string(sec.Data["HF_TOKEN"]) != hfToken || len(sec.Data["SCOPECTL_AGENT_TOKEN"]) != 64 {
		t.Fatalf("secret: %v %v", err, sec.Data)
	}
	// No secret value anywhere in the StatefulSet.
	b, _ := json.Marshal(before)
	if strings.Contains(string(b), hfToken) || strings.Contains(string(b), string(sec.Data["SCOPECTL_AGENT_TOKEN"])) {
		t.Fatal("a secret value is in the StatefulSet")
	}
	if mf := before.ManagedFields; len(mf) != 1 || mf[0].Manager != "scopectl" || mf[0].Operation != metav1.ManagedFieldsOperationApply {
		t.Fatalf("managed fields %+v", mf)
	}
	// A changed flag changes that field only; the dry run says so first and stores nothing.
	s.Image = "example.com/scope:2"
	plan, err = c.Apply(ctx, s, kubernetes.ApplyOptions{ServerDryRun: true})
	if err != nil || actions(plan) != "Secret=unchanged ServiceAccount=unchanged Role=unchanged RoleBinding=unchanged Service=unchanged StatefulSet=configured" {
		t.Fatalf("dry run of a change: %s %v", actions(plan), err)
	}
	if now, _ := e.CS.AppsV1().StatefulSets(c.Namespace).Get(ctx, "scope", metav1.GetOptions{}); now.ResourceVersion != before.ResourceVersion {
		t.Fatal("the dry run changed the StatefulSet")
	}
	third, err := c.Apply(ctx, s, kubernetes.ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := actions(third); got != "Secret=unchanged ServiceAccount=unchanged Role=unchanged RoleBinding=unchanged Service=unchanged StatefulSet=configured" {
		t.Fatalf("image change: %s", got)
	}
	after, _ := e.CS.AppsV1().StatefulSets(c.Namespace).Get(ctx, "scope", metav1.GetOptions{})
	if after.Spec.Template.Spec.Containers[0].Image != "example.com/scope:2" {
		t.Fatal("image not changed")
	}
	after.Spec.Template.Spec.Containers[0].Image = before.Spec.Template.Spec.Containers[0].Image
	bj, _ := json.Marshal(before.Spec)
	aj, _ := json.Marshal(after.Spec)
	if string(bj) != string(aj) {
		t.Fatalf("more than the image changed:\n%s\n%s", bj, aj)
	}
	// What a StatefulSet cannot change is one line that says what to do.
	big := s
	big.VolumeSize = "100Gi"
	if _, err := c.Apply(ctx, big, kubernetes.ApplyOptions{}); err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "cannot change once created") {
		t.Fatalf("volume size change: %v", err)
	}
	// A changed token rolls the pods (the template's hash) but is never in it.
	s.SecretEnv = map[string]secret.Secret{"HF_TOKEN": secret.New(hfToken + "x")}
	fourth, err := c.Apply(ctx, s, kubernetes.ApplyOptions{})
	if err != nil || actions(fourth) != "Secret=configured ServiceAccount=unchanged Role=unchanged RoleBinding=unchanged Service=unchanged StatefulSet=configured" {
		t.Fatalf("token change: %s %v", actions(fourth), err)
	}
}

func TestConflictAndForce(t *testing.T) {
	e, c := client(t)
	ctx := context.Background()
	if _, err := c.Apply(ctx, spec(), kubernetes.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	// Someone scales it by hand with their own apply.
	other := appsac.StatefulSet("scope", c.Namespace).WithSpec(appsac.StatefulSetSpec().WithReplicas(5))
	if _, err := e.CS.AppsV1().StatefulSets(c.Namespace).Apply(ctx, other, metav1.ApplyOptions{FieldManager: "kubectl-edit", Force: true}); err != nil {
		t.Fatal(err)
	}
	_, err := c.Apply(ctx, spec(), kubernetes.ApplyOptions{})
	if !errors.Is(err, kubernetes.ErrConflict) || strings.Contains(err.Error(), "\n") ||
		!strings.Contains(err.Error(), `.spec.replicas (managed by "kubectl-edit")`) || !strings.Contains(err.Error(), "--force-conflicts") {
		t.Fatalf("conflict: %v", err)
	}
	t.Logf("conflict: %v", err)
	// The same spec as the other manager's value is no conflict: replicas 5 agrees.
	s := spec()
	s.Replicas = 5
	if _, err := c.Apply(ctx, s, kubernetes.ApplyOptions{}); err != nil {
		t.Fatalf("agreeing apply: %v", err)
	}
	if _, err := c.Apply(ctx, spec(), kubernetes.ApplyOptions{Force: true}); err != nil {
		t.Fatalf("forced: %v", err)
	}
	got, _ := e.CS.AppsV1().StatefulSets(c.Namespace).Get(ctx, "scope", metav1.GetOptions{})
	if *got.Spec.Replicas != 2 {
		t.Fatalf("replicas %d after force", *got.Spec.Replicas)
	}
}

// playController creates the pods of a StatefulSet as its controller would, and a
// kubelet's status for them: ready after delay each, or what status says.
func makePod(t *testing.T, e *kubetest.Env, ns, name string, status corev1.PodStatus) {
	t.Helper()
	ctx := context.Background()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns,
		Labels: map[string]string{kubernetes.LabelName: "scope", kubernetes.LabelInstance: "scope"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "scope", Image: "example.com/scope:1"}}}}
	got, err := e.CS.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got.Status = status
	if _, err := e.CS.CoreV1().Pods(ns).UpdateStatus(ctx, got, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func readyStatus() corev1.PodStatus {
	now := metav1.Now()
	return corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "127.0.0.1", Conditions: []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now}}}
}

func setStsStatus(t *testing.T, e *kubetest.Env, ns string, ready int32) {
	t.Helper()
	ctx := context.Background()
	sts, err := e.CS.AppsV1().StatefulSets(ns).Get(ctx, "scope", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sts.Status = appsv1.StatefulSetStatus{ObservedGeneration: sts.Generation, Replicas: *sts.Spec.Replicas, ReadyReplicas: ready, AvailableReplicas: ready}
	if _, err := e.CS.AppsV1().StatefulSets(ns).UpdateStatus(ctx, sts, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestWaitReadyByWatch(t *testing.T) {
	e, c := client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t0 := time.Now()
	if _, err := c.Apply(ctx, spec(), kubernetes.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	// The controller and kubelets, played: replica 0 ready at once, replica 1 after 600 ms.
	go func() {
		time.Sleep(100 * time.Millisecond)
		makePod(t, e, c.Namespace, "scope-0", readyStatus())
		makePod(t, e, c.Namespace, "scope-1", corev1.PodStatus{Phase: corev1.PodPending})
		setStsStatus(t, e, c.Namespace, 1)
		time.Sleep(500 * time.Millisecond)
		p, _ := e.CS.CoreV1().Pods(c.Namespace).Get(ctx, "scope-1", metav1.GetOptions{})
		p.Status = readyStatus()
		e.CS.CoreV1().Pods(c.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{})
		setStsStatus(t, e, c.Namespace, 2)
	}()
	var seen []string
	reps, err := c.WaitReady(ctx, "scope", kubernetes.WaitOptions{Events: true, Progress: func(r kubernetes.Replica) {
		seen = append(seen, r.Name+":"+r.Phase)
	}})
	if err != nil {
		t.Fatal(err)
	}
	total := time.Since(t0)
	if len(reps) != 2 || !reps[0].Ready || !reps[1].Ready || reps[1].ReadyIn < 500*time.Millisecond || reps[1].ReadyIn > 5*time.Second {
		t.Fatalf("replicas %+v", reps)
	}
	t.Logf("apply to ready: %v (per replica: %s %v, %s %v; progress %v)", total, reps[0].Name, reps[0].ReadyIn, reps[1].Name, reps[1].ReadyIn, seen)
	// status shows each replica.
	all, err := c.Replicas(ctx, "scope")
	if err != nil || len(all) != 2 {
		t.Fatalf("replicas: %v %v", all, err)
	}
}

func TestPendingReasonFromEvents(t *testing.T) {
	e, c := client(t)
	ctx := context.Background()
	s := spec()
	s.Replicas = 1
	if _, err := c.Apply(ctx, s, kubernetes.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	makePod(t, e, c.Namespace, "scope-0", corev1.PodStatus{Phase: corev1.PodPending})
	now := metav1.Now()
	msg := "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
	_, err := e.CS.CoreV1().Events(c.Namespace).Create(ctx, &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Name: "scope-0.1", Namespace: c.Namespace},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Name: "scope-0", Namespace: c.Namespace},
		Reason:         "FailedScheduling", Message: msg, Type: corev1.EventTypeWarning,
		FirstTimestamp: now, LastTimestamp: now, Source: corev1.EventSource{Component: "default-scheduler"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err = c.WaitReady(wctx, "scope", kubernetes.WaitOptions{Events: true})
	if !errors.Is(err, kubernetes.ErrNotReady) || !strings.Contains(err.Error(), "scope-0: unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu.") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("pending: %v", err)
	}
	t.Logf("pending: %v", err)
}

func TestImagePullFailsAtOnce(t *testing.T) {
	e, c := client(t)
	ctx := context.Background()
	s := spec()
	s.Replicas = 1
	if _, err := c.Apply(ctx, s, kubernetes.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	makePod(t, e, c.Namespace, "scope-0", corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{{
		Name: "scope", Image: "example.com/scope:nope",
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ErrImagePull",
			Message: "rpc error: code = NotFound desc = failed to pull and unpack image \"example.com/scope:nope\": not found"}}}}})
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	t0 := time.Now()
	_, err := c.WaitReady(wctx, "scope", kubernetes.WaitOptions{Events: true})
	if !errors.Is(err, kubernetes.ErrNotReady) || !strings.Contains(err.Error(), "image example.com/scope:nope of container scope cannot be pulled") || time.Since(t0) > 5*time.Second {
		t.Fatalf("image pull: %v", err)
	}
	t.Logf("image pull: %v", err)
}

func TestForbiddenAndMissingNamespace(t *testing.T) {
	e, c := client(t)
	ctx := context.Background()
	nobody, err := kubernetes.NewForConfig(e.User(t, "intern"), c.Namespace)
	if err != nil {
		t.Fatal(err)
	}
	_, err = nobody.Apply(ctx, spec(), kubernetes.ApplyOptions{})
	if !errors.Is(err, kubernetes.ErrForbidden) || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), `User "intern" cannot`) {
		t.Fatalf("forbidden: %v", err)
	}
	t.Logf("forbidden: %v", err)
	if _, err := nobody.List(ctx); !errors.Is(err, kubernetes.ErrForbidden) {
		t.Fatalf("forbidden list: %v", err)
	}
	missing, err := kubernetes.NewForConfig(e.Config, "no-such-namespace")
	if err != nil {
		t.Fatal(err)
	}
	_, err = missing.Apply(ctx, spec(), kubernetes.ApplyOptions{})
	if !errors.Is(err, kubernetes.ErrNoNamespace) || !strings.Contains(err.Error(), `namespace "no-such-namespace"`) {
		t.Fatalf("missing namespace: %v", err)
	}
	t.Logf("missing namespace: %v", err)
}

func TestStopStartRm(t *testing.T) {
	e, c := client(t)
	ctx := context.Background()
	s := spec()
	s.Replicas = 3
	if _, err := c.Apply(ctx, s, kubernetes.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	pods, err := c.List(ctx)
	if err != nil || len(pods) != 1 || pods[0].ID != "scope" || pods[0].Status != provider.StatusRunning || pods[0].GPUCount != 3 || pods[0].GPUType != "nvidia.com/gpu" {
		t.Fatalf("list %+v %v", pods, err)
	}
	if pods[0].Env["HF_TOKEN"] != provider.SecretValue {
		t.Fatalf("env %v", pods[0].Env)
	}
	if err := c.Stop(ctx, "scope"); err != nil {
		t.Fatal(err)
	}
	p, err := c.Get(ctx, "scope")
	if err != nil || p.Status != provider.StatusExited {
		t.Fatalf("after stop %+v %v", p, err)
	}
	got, _ := e.CS.AppsV1().StatefulSets(c.Namespace).Get(ctx, "scope", metav1.GetOptions{})
	if got.Spec.Template.Spec.Containers[0].Image != s.Image || len(got.ManagedFields) != 1 {
		t.Fatalf("stop changed more than replicas: %+v", got.ManagedFields)
	}
	if err := c.Start(ctx, "scope"); err != nil {
		t.Fatal(err)
	}
	got, _ = e.CS.AppsV1().StatefulSets(c.Namespace).Get(ctx, "scope", metav1.GetOptions{})
	if *got.Spec.Replicas != 3 {
		t.Fatalf("start: replicas %d", *got.Spec.Replicas)
	}
	// A deploy after stop/start changes nothing: the same fields, the same manager.
	if as, err := c.Apply(ctx, s, kubernetes.ApplyOptions{}); err != nil || actions(as) != "Secret=unchanged ServiceAccount=unchanged Role=unchanged RoleBinding=unchanged Service=unchanged StatefulSet=unchanged" {
		t.Fatalf("apply after start: %s %v", actions(as), err)
	}
	// The controller's volume claim for replica 0, then rm deletes everything.
	pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "workspace-scope-0", Namespace: c.Namespace,
		Labels: map[string]string{kubernetes.LabelName: "scope", kubernetes.LabelInstance: "scope", kubernetes.LabelManagedBy: "scopectl"}},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}}
	if _, err := e.CS.CoreV1().PersistentVolumeClaims(c.Namespace).Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.Terminate(ctx, "scope"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.CS.CoreV1().Services(c.Namespace).Get(ctx, "scope", metav1.GetOptions{}); err == nil {
		t.Fatal("service left")
	}
	if _, err := e.CS.CoreV1().Secrets(c.Namespace).Get(ctx, "scope-secrets", metav1.GetOptions{}); err == nil {
		t.Fatal("secret left")
	}
	// Without a garbage collector the claim keeps a finalizer (pvc-protection) only when
	// the controller adds it; here it is gone or terminating.
	if got, err := e.CS.CoreV1().PersistentVolumeClaims(c.Namespace).Get(ctx, "workspace-scope-0", metav1.GetOptions{}); err == nil && got.DeletionTimestamp == nil {
		t.Fatal("volume claim left")
	}
	if _, err := c.Get(ctx, "nope"); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("get missing: %v", err)
	}
}

func TestPortForwardToUnscheduledPod(t *testing.T) {
	e, c := client(t)
	makePod(t, e, c.Namespace, "scope-0", corev1.PodStatus{Phase: corev1.PodPending})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, _, err := c.PortForward(ctx, "scope-0", kubernetes.AgentPort)
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "port-forward to scope-0:8765") {
		t.Fatalf("port-forward: %v", err)
	}
	t.Logf("port-forward: %v", err)
}
