package cli_test

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/daydreamlive/scopectl/internal/guard"
	"github.com/daydreamlive/scopectl/internal/provider/kubernetes"
	"github.com/daydreamlive/scopectl/internal/provider/kubernetes/kubetest"
)

// TestKubernetesCLI drives deploy/pod/status --provider kubernetes against a real
// kube-apiserver through a kubeconfig file, as a user would.
func TestKubernetesCLI(t *testing.T) {
	e := newEnv(t)
	k := kubetest.Start(t)
	ns := k.Namespace(t)
	t.Setenv("KUBECONFIG", kubetest.Kubeconfig(t, e.root, k.Config, "lab", ns))
	t.Setenv("HF_TOKEN", "hf_CLIcanaryNEVERprinted123456")

	// --dry-run -o yaml prints the manifests, never the token, and applies nothing.
	y := e.mustRun("deploy", "--provider", "kubernetes", "--replicas", "2", "--gpu", "nvidia.com/gpu=1", "--idle-stop", "20m", "--max-hours", "3", "--dry-run", "-o", "yaml")
	for _, want := range []string{"kind: Role\n", "kind: RoleBinding", "serviceAccountName: scope-guard", "name: SCOPECTL_IDLE_STOP\n          value: 20m0s", "- --statefulset"} {
		if !strings.Contains(y, want) {
			t.Errorf("dry run lacks %q", want)
		}
	}
	if !strings.Contains(y, "kind: StatefulSet") || !strings.Contains(y, "namespace: "+ns) || strings.Contains(y, "hf_CLIcanary") {
		t.Fatalf("dry run:\n%s", y)
	}
	ctx := context.Background()
	if l, _ := k.CS.AppsV1().StatefulSets(ns).List(ctx, metav1.ListOptions{}); len(l.Items) != 0 {
		t.Fatal("dry run applied")
	}
	// --dry-run alone is the API server's plan.
	if out := e.mustRun("deploy", "--provider", "kubernetes", "--replicas", "2", "--dry-run"); !strings.Contains(out, "would create     StatefulSet/scope") {
		t.Fatalf("plan:\n%s", out)
	}
	out := e.mustRun("deploy", "--provider", "kubernetes", "--replicas", "2", "--wait", "0")
	if !strings.Contains(out, "created     StatefulSet/scope") {
		t.Fatalf("deploy:\n%s", out)
	}
	out = e.mustRun("deploy", "--provider", "kubernetes", "--replicas", "2", "--wait", "0")
	if strings.Count(out, "unchanged") != 6 { // Secret, the guard's ServiceAccount, Role, RoleBinding, Service, StatefulSet
		t.Fatalf("second deploy:\n%s", out)
	}
	if out := e.mustRun("deploy", "--provider", "kubernetes", "--replicas", "3", "--dry-run"); !strings.Contains(out, "would configure  StatefulSet/scope") || !strings.Contains(out, "would keep       Service/scope") {
		t.Fatalf("plan of a change:\n%s", out)
	}
	out = e.mustRun("pod", "ls", "--provider", "kubernetes")
	if !strings.Contains(out, "scope") || !strings.Contains(out, "RUNNING") || !strings.Contains(out, "2 × nvidia.com/gpu") ||
		!strings.Contains(out, "idle 30m") { // the limits the guard enforces, read from the pod

		t.Fatalf("pod ls:\n%s", out)
	}
	e.mustRun("pod", "stop", "--provider", "kubernetes", "scope")
	if out := e.mustRun("pod", "get", "k8s://lab/"+ns+"/scope"); !strings.Contains(out, "EXITED") {
		t.Fatalf("pod get after stop:\n%s", out)
	}
	e.mustRun("pod", "start", "k8s://lab/"+ns+"/scope")
	sts, err := k.CS.AppsV1().StatefulSets(ns).Get(ctx, "scope", metav1.GetOptions{})
	if err != nil || *sts.Spec.Replicas != 2 {
		t.Fatalf("after start: %v", err)
	}
	// The on-pod guard's stop (as its ServiceAccount would make it) is pod get's last stop.
	kc, err := kubernetes.NewForConfig(k.Config, ns)
	if err != nil {
		t.Fatal(err)
	}
	st := guard.Stop{By: "guard", Kind: guard.KindIdle, Reason: "idle 30m0s (idle-stop 30m0s)", At: time.Now()}
	if err := (guard.KubernetesStopper{Client: kc, StatefulSet: "scope"}).StopFor(ctx, st); err != nil {
		t.Fatal(err)
	}
	if out := e.mustRun("pod", "get", "k8s://lab/"+ns+"/scope"); !strings.Contains(out, "EXITED") || !strings.Contains(out, "by guard (idle): idle 30m0s (idle-stop 30m0s)") {
		t.Fatalf("pod get after the guard's stop:\n%s", out)
	}
	e.mustRun("pod", "start", "k8s://lab/"+ns+"/scope")
	// The guard outside a Kubernetes pod: one line.
	if _, errs, code := e.run("guard", "--statefulset", "scope", "--idle-stop", "1m", "--dir", t.TempDir()); code == 0 || !strings.Contains(errs, "no in-cluster credentials") || strings.Count(strings.TrimSpace(errs), "\n") > 0 {
		t.Fatalf("guard outside a cluster: %d %q", code, errs)
	}
	if out := e.mustRun("status", "k8s://lab/"+ns+"/scope"); !strings.Contains(out, "REPLICA") || !strings.Contains(out, "by guard (idle): idle 30m0s") {
		t.Fatalf("status:\n%s", out)
	}
	if _, errs, code := e.run("pod", "rm", "--provider", "kubernetes", "scope"); code == 0 || !strings.Contains(errs, "--yes") {
		t.Fatalf("rm without --yes: %d %s", code, errs)
	}
	e.mustRun("pod", "rm", "--provider", "kubernetes", "scope", "--yes")
	if _, err := k.CS.AppsV1().StatefulSets(ns).Get(ctx, "scope", metav1.GetOptions{}); err == nil {
		t.Fatal("rm left the StatefulSet")
	}
	// The GPUs the nodes offer.
	if out := e.mustRun("pod", "gpus", "--provider", "kubernetes"); !strings.Contains(out, "no node offers a GPU") {
		t.Fatalf("gpus without nodes:\n%s", out)
	}
	// Bad input: a namespace that does not exist is one line.
	_, errs, code := e.run("deploy", "--provider", "kubernetes", "-n", "nope", "--wait", "0")
	if code == 0 || !strings.Contains(errs, `namespace "nope"`) || strings.Count(strings.TrimSpace(errs), "\n") > 0 {
		t.Fatalf("missing namespace: %d %q", code, errs)
	}
}
