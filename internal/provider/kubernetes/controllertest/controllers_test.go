// Package controllertest runs the Kubernetes provider against a real kube-scheduler and
// kube-controller-manager as well as the API server (its own control plane: the
// controllers would act on the other tests' hand-made pods).
package controllertest_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/daydreamlive/scopectl/internal/provider/kubernetes"
	"github.com/daydreamlive/scopectl/internal/provider/kubernetes/kubetest"
	"github.com/daydreamlive/scopectl/internal/secret"
)

// gpuNode creates a node with gpus nvidia.com/gpu, as a device plugin would report them.
func gpuNode(t *testing.T, e *kubetest.Env, name string, gpus int64) {
	t.Helper()
	ctx := context.Background()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/hostname": name, "gpu": "h100"}}}
	got, err := e.CS.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The API server taints a new node not-ready until its lifecycle controller sees a
	// kubelet's heartbeat; this node is ready by fiat.
	got.Spec.Taints = nil
	if got, err = e.CS.CoreV1().Nodes().Update(ctx, got, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	setNodeGPUs(t, e, got, gpus)
}

func setNodeGPUs(t *testing.T, e *kubetest.Env, n *corev1.Node, gpus int64) {
	t.Helper()
	res := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("16"), corev1.ResourceMemory: resource.MustParse("64Gi"),
		corev1.ResourcePods: resource.MustParse("110"), "nvidia.com/gpu": *resource.NewQuantity(gpus, resource.DecimalSI)}
	n.Status.Capacity, n.Status.Allocatable = res, res
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
	if _, err := e.CS.CoreV1().Nodes().UpdateStatus(context.Background(), n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// hostPathPV is a volume of the lab's local class for a replica's claim: the scheduler
// binds it when it places the replica.
func hostPathPV(t *testing.T, e *kubetest.Env, name, size string) {
	t.Helper()
	kubetest.LocalStorageClass(t, e.CS, localClass, false)
	kubetest.HostPathPV(t, e.CS, name, size, "/tmp/"+name, localClass)
}

const localClass = "lab-local"

// kubelet plays the node's kubelet for the pods of sel: each pod the scheduler bound
// gets Running and Ready, and a pod being deleted goes at once.
func kubelet(ctx context.Context, t *testing.T, e *kubetest.Env, ns, sel string) {
	pods := e.CS.CoreV1().Pods(ns)
	for ctx.Err() == nil {
		l, err := pods.List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err == nil {
			for i := range l.Items {
				p := &l.Items[i]
				switch {
				case p.DeletionTimestamp != nil:
					zero := int64(0)
					pods.Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
				case p.Spec.NodeName != "" && p.Status.Phase != corev1.PodRunning:
					p.Status = readyStatus()
					pods.UpdateStatus(ctx, p, metav1.UpdateOptions{})
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRealControllersAndScheduler deploys Scope with two replicas onto a node with one
// GPU: the real StatefulSet controller makes the pods and their claims, the real
// scheduler places one and says why the other waits; a second GPU lets it through.
func TestRealControllersAndScheduler(t *testing.T) {
	e, c := client(t)
	e.StartControllers(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	node := fmt.Sprintf("gpu-%s", c.Namespace)
	gpuNode(t, e, node, 1)
	defer e.CS.CoreV1().Nodes().Delete(context.Background(), node, metav1.DeleteOptions{})
	for i := range 2 {
		hostPathPV(t, e, fmt.Sprintf("%s-pv%d", c.Namespace, i), "10Gi")
	}
	// The serviceaccount controller makes "default" first; pods need it.
	for {
		if _, err := e.CS.CoreV1().ServiceAccounts(c.Namespace).Get(ctx, "default", metav1.GetOptions{}); err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("no default service account")
		}
		time.Sleep(50 * time.Millisecond)
	}
	s := spec()
	s.VolumeSize, s.StorageClass = "10Gi", localClass
	s.NodeSelector = map[string]string{"gpu": "h100", "kubernetes.io/hostname": node}
	t0 := time.Now()
	if _, err := c.Apply(ctx, s, kubernetes.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	kctx, kstop := context.WithCancel(ctx)
	defer kstop()
	go kubelet(kctx, t, e, c.Namespace, s.Selector())

	// One GPU for two replicas: the scheduler's own words for the second.
	wctx, wcancel := context.WithTimeout(ctx, 8*time.Second)
	_, err := c.WaitReady(wctx, "scope", kubernetes.WaitOptions{Events: true})
	wcancel()
	if !errors.Is(err, kubernetes.ErrNotReady) || !strings.Contains(err.Error(), "Insufficient nvidia.com/gpu") || !strings.Contains(err.Error(), "1/2 ready") {
		t.Fatalf("one GPU for two replicas: %v", err)
	}
	t.Logf("real scheduler: %v", err)
	claims, _ := e.CS.CoreV1().PersistentVolumeClaims(c.Namespace).List(ctx, metav1.ListOptions{LabelSelector: s.Selector()})
	if len(claims.Items) != 2 {
		t.Fatalf("%d claims from the StatefulSet controller, want 2", len(claims.Items))
	}

	// A second GPU appears (a node scaled up): the waiting replica is placed.
	n, _ := e.CS.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	setNodeGPUs(t, e, n, 2)
	reps, err := c.WaitReady(ctx, "scope", kubernetes.WaitOptions{Events: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("apply to ready, real controller and scheduler (kubelet played): %v; per replica: %s %v, %s %v (the second waited for a GPU)",
		time.Since(t0).Round(time.Millisecond), reps[0].Name, reps[0].ReadyIn.Round(time.Millisecond), reps[1].Name, reps[1].ReadyIn.Round(time.Millisecond))
	for _, r := range reps {
		if r.Node != node {
			t.Fatalf("%s on %q", r.Name, r.Node)
		}
	}

	// Stop: the controller removes the pods; start: they come back.
	if err := c.Stop(ctx, "scope"); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "pods gone after stop", func() bool {
		l, _ := e.CS.CoreV1().Pods(c.Namespace).List(ctx, metav1.ListOptions{LabelSelector: s.Selector()})
		return len(l.Items) == 0
	})
	t1 := time.Now()
	if err := c.Start(ctx, "scope"); err != nil {
		t.Fatal(err)
	}
	if reps, err = c.WaitReady(ctx, "scope", kubernetes.WaitOptions{}); err != nil || len(reps) != 2 {
		t.Fatalf("after start: %v %v", reps, err)
	}
	t.Logf("start to ready: %v", time.Since(t1).Round(time.Millisecond))

	// rm: the garbage collector takes the pods; scopectl the claims.
	if err := c.Terminate(ctx, "scope"); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "pods and claims gone after rm", func() bool {
		l, _ := e.CS.CoreV1().Pods(c.Namespace).List(ctx, metav1.ListOptions{LabelSelector: s.Selector()})
		cl, _ := e.CS.CoreV1().PersistentVolumeClaims(c.Namespace).List(ctx, metav1.ListOptions{LabelSelector: s.Selector()})
		return len(l.Items) == 0 && len(cl.Items) == 0
	})

	// A fresh deploy with room for both: apply to ready, per replica.
	for i := range 2 {
		hostPathPV(t, e, fmt.Sprintf("%s-pv%d", c.Namespace, i+2), "10Gi")
	}
	t2 := time.Now()
	if _, err := c.Apply(ctx, s, kubernetes.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	applied := time.Since(t2)
	if reps, err = c.WaitReady(ctx, "scope", kubernetes.WaitOptions{Events: true}); err != nil {
		t.Fatal(err)
	}
	t.Logf("fresh deploy, 2 replicas: apply %v, apply to ready %v; per replica: %s %v, %s %v (claims bound, pods made and placed by the real binder, StatefulSet controller and scheduler)",
		applied.Round(time.Millisecond), time.Since(t2).Round(time.Millisecond), reps[0].Name, (applied + reps[0].ReadyIn).Round(time.Millisecond), reps[1].Name, (applied + reps[1].ReadyIn).Round(time.Millisecond))
}

// TestRealJobController runs a training Job through the real job controller: one pod,
// no retry after it fails.
func TestRealJobController(t *testing.T) {
	e, c := client(t)
	e.StartControllers(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	js := kubernetes.TrainJobSpec{Name: "run1", Image: "ostris/aitoolkit:1",
		SecretEnv: map[string]secret.Secret{"HF_TOKEN": secret.New(hfToken)}}
	waitFor(ctx, t, "default service account", func() bool {
		_, err := e.CS.CoreV1().ServiceAccounts(c.Namespace).Get(ctx, "default", metav1.GetOptions{})
		return err == nil
	})
	if _, err := c.ApplyJob(ctx, js, kubernetes.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	var pod corev1.Pod
	waitFor(ctx, t, "the job's pod", func() bool {
		l, _ := e.CS.CoreV1().Pods(c.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "batch.kubernetes.io/job-name=run1"})
		if len(l.Items) == 1 {
			pod = l.Items[0]
		}
		return len(l.Items) == 1
	})
	// The trainer fails (as a kubelet reports it): no second pod, the Job failed.
	pod.Status = corev1.PodStatus{Phase: corev1.PodFailed, ContainerStatuses: []corev1.ContainerStatus{{Name: "train", Image: "ostris/aitoolkit:1",
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error"}}}}}
	if _, err := e.CS.CoreV1().Pods(c.Namespace).UpdateStatus(ctx, &pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	var st kubernetes.JobState
	waitFor(ctx, t, "the job controller's verdict", func() bool {
		st, _ = c.JobStatus(ctx, "run1") // failed at once from the pod; then the Job's condition
		return st.Phase == "failed" && strings.Contains(st.Reason, "BackoffLimitExceeded")
	})
	l, _ := e.CS.CoreV1().Pods(c.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "batch.kubernetes.io/job-name=run1"})
	if len(l.Items) != 1 || !strings.Contains(st.Reason, "BackoffLimitExceeded") {
		t.Fatalf("%d pods, state %+v", len(l.Items), st)
	}
	t.Logf("job: %+v", st)
}

func waitFor(ctx context.Context, t *testing.T, what string, ok func() bool) {
	t.Helper()
	for !ok() {
		if ctx.Err() != nil {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestMain(m *testing.M) { kubetest.Main(m) }

const hfToken = "hf_TESTtokenNEVERprinted0123456789"

func spec() kubernetes.ScopeSpec {
	return kubernetes.ScopeSpec{
		Name: "scope", Replicas: 2, Image: "example.com/scope:1", AgentImage: "example.com/scopectl:1", GPUCount: 1,
		Env:       map[string]string{"SCOPE_LORA_DIR": "/workspace/models/lora"},
		SecretEnv: map[string]secret.Secret{"HF_TOKEN": secret.New(hfToken)},
	}
}

func client(t *testing.T) (*kubetest.Env, *kubernetes.Client) {
	e := kubetest.Start(t)
	c, err := kubernetes.NewForConfig(e.Config, e.Namespace(t))
	if err != nil {
		t.Fatal(err)
	}
	return e, c
}

func readyStatus() corev1.PodStatus {
	now := metav1.Now()
	return corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "127.0.0.1", Conditions: []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now}}}
}
