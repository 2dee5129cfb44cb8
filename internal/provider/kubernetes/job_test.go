package kubernetes_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/provider/kubernetes"
	"github.com/daydreamlive/scopectl/internal/secret"
)

const agentTok = "agentTOKENneverPRINTED0123456789abcdef"

func jobSpec() kubernetes.TrainJobSpec {
	tol, _ := kubernetes.ParseToleration("nvidia.com/gpu:NoSchedule")
	return kubernetes.TrainJobSpec{Name: "wan-1", Image: "ostris/aitoolkit:0.7.5", AgentImage: "example.com/scopectl:1",
		GPUCount: 2, NodeSelector: map[string]string{"gpu": "h100"}, Tolerations: []corev1.Toleration{tol},
		Env:       map[string]string{"PYTHONUNBUFFERED": "1"},
		SecretEnv: map[string]secret.Secret{"HF_TOKEN": secret.New(hfToken)}}
}

// The Job spec, offline: no retry, the GPU limit, the workspace claim, secrets by
// reference only, scopectl from the agent image, the agent as a native sidecar.
func TestTrainJobManifests(t *testing.T) {
	s := jobSpec()
	s.SecretEnv[kubernetes.SecretAgentToken] = secret.New(agentTok)
	o, err := s.BuildJob("studio")
	if err != nil {
		t.Fatal(err)
	}
	j := o.Job.Spec
	if *j.BackoffLimit != 0 || *j.Template.Spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Fatalf("backoffLimit %d, restartPolicy %s", *j.BackoffLimit, *j.Template.Spec.RestartPolicy)
	}
	pod := j.Template.Spec
	if len(pod.Containers) != 1 || *pod.Containers[0].Name != "train" || *pod.Containers[0].Image != "ostris/aitoolkit:0.7.5" {
		t.Fatalf("containers %+v", pod.Containers)
	}
	tr := pod.Containers[0]
	if q := (*tr.Resources.Limits)["nvidia.com/gpu"]; q.String() != "2" {
		t.Fatalf("GPU limit %s", q.String())
	}
	if got := strings.Join(tr.Command, " "); got != "/opt/scopectl/scopectl train kube-hold --workspace /workspace --name wan-1 --linger 30m0s" {
		t.Fatalf("train command %q", got)
	}
	if len(pod.InitContainers) != 2 || *pod.InitContainers[0].Name != "scopectl-bin" || *pod.InitContainers[1].Name != "agent" ||
		*pod.InitContainers[1].RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Fatalf("init containers %+v", pod.InitContainers)
	}
	if *pod.Volumes[0].PersistentVolumeClaim.ClaimName != "wan-1-workspace" || pod.Volumes[1].EmptyDir == nil {
		t.Fatalf("volumes %+v", pod.Volumes)
	}
	if *o.Claim.Name != "wan-1-workspace" || (*o.Claim.Spec.Resources.Requests)["storage"] != resourceQ(t, "100Gi") {
		t.Fatalf("claim %+v", o.Claim.Spec)
	}
	envs := map[string]string{}
	for _, e := range tr.Env {
		if e.ValueFrom != nil {
			envs[*e.Name] = "secret:" + *e.ValueFrom.SecretKeyRef.Name + "/" + *e.ValueFrom.SecretKeyRef.Key
		} else {
			envs[*e.Name] = *e.Value
		}
	}
	if envs["HF_TOKEN"] != "secret:wan-1-secrets/HF_TOKEN" || envs["PYTHONUNBUFFERED"] != "1" || envs[kubernetes.SecretAgentToken] != "" {
		t.Fatalf("train env %v", envs)
	}
	if ae := pod.InitContainers[1].Env; len(ae) != 1 || *ae[0].ValueFrom.SecretKeyRef.Key != kubernetes.SecretAgentToken {
		t.Fatalf("agent env %+v", ae)
	}
	if pod.NodeSelector["gpu"] != "h100" || len(pod.Tolerations) != 1 {
		t.Fatalf("placement %+v %+v", pod.NodeSelector, pod.Tolerations)
	}
	y, err := o.YAML()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(y), hfToken) || strings.Contains(string(y), agentTok) || strings.Contains(string(y), "kind: Secret") ||
		!strings.Contains(string(y), "# Secret studio/wan-1-secrets (keys HF_TOKEN, SCOPECTL_AGENT_TOKEN)") ||
		!strings.Contains(string(y), "kind: Job") || !strings.Contains(string(y), "kind: PersistentVolumeClaim") || !strings.Contains(string(y), "backoffLimit: 0") {
		t.Fatalf("yaml:\n%s", y)
	}
	for _, bad := range []func(*kubernetes.TrainJobSpec){
		func(s *kubernetes.TrainJobSpec) { s.Name = "Wan_1" },
		func(s *kubernetes.TrainJobSpec) { s.Image = "" },
		func(s *kubernetes.TrainJobSpec) { s.GPUResource = "gpu" },
		func(s *kubernetes.TrainJobSpec) { s.VolumeSize = "lots" },
		func(s *kubernetes.TrainJobSpec) { s.Env = map[string]string{"HF_TOKEN": "x"} },
		func(s *kubernetes.TrainJobSpec) { s.ImagePullPolicy = "Sometimes" },
	} {
		s := jobSpec()
		bad(&s)
		_, err := s.Normalize()
		if err == nil || strings.Contains(err.Error(), "\n") || strings.Contains(err.Error(), hfToken) {
			t.Errorf("%+v: %v", s.Name, err)
		}
	}
}

// Server-side apply against a real API server: created, then unchanged on a second
// apply (the agent token is kept from the Secret), a dry run stores nothing, a changed
// GPU count changes the Job alone; no secret value in any stored manifest but the Secret.
func TestTrainJobApply(t *testing.T) {
	e, c := client(t)
	ctx := context.Background()
	s := jobSpec()
	plan, err := c.ApplyJob(ctx, s, kubernetes.ApplyOptions{ServerDryRun: true})
	if err != nil || actions(plan) != "PersistentVolumeClaim=created Secret=created Job=created" {
		t.Fatalf("dry run: %s %v", actions(plan), err)
	}
	if l, _ := e.CS.BatchV1().Jobs(c.Namespace).List(ctx, metav1.ListOptions{}); len(l.Items) != 0 {
		t.Fatal("the dry run stored a Job")
	}
	t0 := time.Now()
	first, err := c.ApplyJob(ctx, s, kubernetes.ApplyOptions{})
	if err != nil || actions(first) != "PersistentVolumeClaim=created Secret=created Job=created" {
		t.Fatalf("apply: %s %v", actions(first), err)
	}
	t.Logf("first apply %v", time.Since(t0).Round(time.Millisecond))
	second, err := c.ApplyJob(ctx, s, kubernetes.ApplyOptions{})
	if err != nil || actions(second) != "PersistentVolumeClaim=unchanged Secret=unchanged Job=unchanged" {
		t.Fatalf("second apply: %s %v", actions(second), err)
	}
	sec, err := e.CS.CoreV1().Secrets(c.Namespace).Get(ctx, "wan-1-secrets", metav1.GetOptions{})
	if err != nil || string(sec.Data["HF_TOKEN"]) != hfToken || len(sec.Data[kubernetes.SecretAgentToken]) != 64 {
		t.Fatalf("secret: %v", err)
	}
	tok, err := c.JobAgentToken(ctx, "wan-1")
	if err != nil || tok.Reveal() != string(sec.Data[kubernetes.SecretAgentToken]) {
		t.Fatalf("agent token: %v", err)
	}
	j, err := e.CS.BatchV1().Jobs(c.Namespace).Get(ctx, "wan-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(j)
	if strings.Contains(string(b), hfToken) || strings.Contains(string(b), tok.Reveal()) {
		t.Fatal("a secret value is in the stored Job")
	}
	if *j.Spec.BackoffLimit != 0 || j.Spec.Template.Spec.InitContainers[1].RestartPolicy == nil {
		t.Fatalf("stored job: backoffLimit %d, sidecar %+v", *j.Spec.BackoffLimit, j.Spec.Template.Spec.InitContainers[1])
	}
	// Read back for a resume on a new Job over the same claim.
	back, err := c.JobSpecOf(ctx, "wan-1")
	if err != nil || back.Image != s.Image || back.AgentImage != s.AgentImage || back.GPUResource != "nvidia.com/gpu" || back.GPUCount != 2 ||
		back.Claim != "wan-1-workspace" || back.NodeSelector["gpu"] != "h100" || len(back.Tolerations) != 1 || back.Env["PYTHONUNBUFFERED"] != "1" ||
		back.SecretEnv["HF_TOKEN"].Reveal() != hfToken || back.SecretEnv[kubernetes.SecretAgentToken].IsSet() || back.Linger != 30*time.Minute {
		t.Fatalf("spec read back: %+v %v", back, err)
	}
	// The pod template of a Job cannot change once created: a changed GPU count is the
	// API server's one-line refusal, and nothing changes.
	s.GPUCount = 1
	_, err = c.ApplyJob(ctx, s, kubernetes.ApplyOptions{})
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "cannot change once created") || len(err.Error()) > 300 {
		t.Fatalf("changed GPU count: %v", err)
	}
	t.Logf("changed GPU count: %v", err)
	if err := c.DeleteJob(ctx, "wan-1", false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.CS.CoreV1().PersistentVolumeClaims(c.Namespace).Get(ctx, "wan-1-workspace", metav1.GetOptions{}); err != nil {
		t.Fatalf("the workspace claim went with the Job: %v", err)
	}
	if _, err := e.CS.CoreV1().Secrets(c.Namespace).Get(ctx, "wan-1-secrets", metav1.GetOptions{}); err == nil {
		t.Fatal("the Secret stayed")
	}
}

// Status from the Job's and its pod's conditions, as the job controller, the scheduler
// and a kubelet would write them.
func TestTrainJobStatus(t *testing.T) {
	e, c := client(t)
	ctx := context.Background()
	if _, err := c.ApplyJob(ctx, jobSpec(), kubernetes.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	check := func(what, phase, reason string, ready bool) kubernetes.JobState {
		t.Helper()
		st, err := c.JobStatus(ctx, "wan-1")
		if err != nil || st.Phase != phase || !strings.Contains(st.Reason, reason) || st.Ready != ready || strings.Contains(st.Reason, "\n") {
			t.Fatalf("%s: %+v %v", what, st, err)
		}
		return st
	}
	check("no pod", kubernetes.JobPending, "no pod yet", false)
	if _, err := c.JobPod(ctx, "wan-1"); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("job pod without one: %v", err)
	}
	now := metav1.Now()
	pod := e.JobPod(t, c.Namespace, "wan-1", corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: "Unschedulable", LastTransitionTime: now,
			Message: "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}}})
	check("unschedulable", kubernetes.JobPending, "unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu.", false)
	e.PodStatus(t, c.Namespace, pod, corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{{Name: "train", Image: "ostris/aitoolkit:0.7.5",
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: "Back-off pulling image"}}}}})
	st := check("image pull", kubernetes.JobPending, "image ostris/aitoolkit:0.7.5 of container train cannot be pulled", false)
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err := c.WaitJobRunning(wctx, "wan-1", nil)
	cancel()
	if err == nil || !errors.Is(err, kubernetes.ErrNotReady) || !strings.Contains(err.Error(), "cannot be pulled") || !st.Fatal {
		t.Fatalf("wait on an image that cannot be pulled: %v", err)
	}
	e.PodStatus(t, c.Namespace, pod, corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{
		{Type: corev1.PodReady, Status: corev1.ConditionFalse, LastTransitionTime: now}}})
	check("running, agent not ready", kubernetes.JobRunning, "agent sidecar is not ready", false)
	// The wait ends when the pod becomes ready (watched, not polled).
	go func() {
		time.Sleep(500 * time.Millisecond)
		e.PodStatus(t, c.Namespace, pod, readyStatus())
	}()
	t0 := time.Now()
	wctx, cancel = context.WithTimeout(ctx, 20*time.Second)
	st, err = c.WaitJobRunning(wctx, "wan-1", nil)
	cancel()
	if err != nil || !st.Ready || st.Pod != pod {
		t.Fatalf("wait: %+v %v", st, err)
	}
	t.Logf("ready seen %v after the wait began (set at 500ms)", time.Since(t0).Round(time.Millisecond))
	if p, err := c.JobPod(ctx, "wan-1"); err != nil || p != pod {
		t.Fatalf("job pod %q %v", p, err)
	}
	// The trainer's holder exits 1 (a failed run); the job controller's verdict.
	e.PodStatus(t, c.Namespace, pod, corev1.PodStatus{Phase: corev1.PodFailed, ContainerStatuses: []corev1.ContainerStatus{{Name: "train",
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error"}}}}})
	check("pod failed", kubernetes.JobFailed, "container train exited 1 (Error)", false)
	if _, err := c.JobPod(ctx, "wan-1"); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("job pod after it ended: %v", err)
	}
	j, _ := e.CS.BatchV1().Jobs(c.Namespace).Get(ctx, "wan-1", metav1.GetOptions{})
	j.Status = batchv1.JobStatus{StartTime: &now, Failed: 1, Conditions: []batchv1.JobCondition{
		{Type: batchv1.JobFailureTarget, Status: corev1.ConditionTrue, Reason: "BackoffLimitExceeded", Message: "Job has reached the specified backoff limit", LastTransitionTime: now},
		{Type: batchv1.JobFailed, Status: corev1.ConditionTrue, Reason: "BackoffLimitExceeded", Message: "Job has reached the specified backoff limit", LastTransitionTime: now}}}
	if _, err := e.CS.BatchV1().Jobs(c.Namespace).UpdateStatus(ctx, j, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	check("job failed", kubernetes.JobFailed, "BackoffLimitExceeded: Job has reached the specified backoff limit; container train exited 1", false)
	wctx, cancel = context.WithTimeout(ctx, 10*time.Second)
	_, err = c.WaitJobRunning(wctx, "wan-1", nil)
	cancel()
	if err == nil || !strings.Contains(err.Error(), "ended (failed) before it ran") {
		t.Fatalf("wait on a failed job: %v", err)
	}
	// A Job that completed: its pod succeeded (the holder exited 0), then the controller's verdict.
	s2 := jobSpec()
	s2.Name = "wan-2"
	if _, err := c.ApplyJob(ctx, s2, kubernetes.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	e.JobPod(t, c.Namespace, "wan-2", corev1.PodStatus{Phase: corev1.PodSucceeded})
	if st, err := c.JobStatus(ctx, "wan-2"); err != nil || st.Phase != kubernetes.JobSucceeded {
		t.Fatalf("pod succeeded: %+v %v", st, err)
	}
	j, _ = e.CS.BatchV1().Jobs(c.Namespace).Get(ctx, "wan-2", metav1.GetOptions{})
	end := metav1.Now()
	j.Status = batchv1.JobStatus{StartTime: &now, CompletionTime: &end, Succeeded: 1, Conditions: []batchv1.JobCondition{
		{Type: batchv1.JobSuccessCriteriaMet, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: batchv1.JobComplete, Status: corev1.ConditionTrue, LastTransitionTime: now}}}
	if _, err := e.CS.BatchV1().Jobs(c.Namespace).UpdateStatus(ctx, j, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if st, err := c.JobStatus(ctx, "wan-2"); err != nil || st.Phase != kubernetes.JobSucceeded || st.Reason != "" {
		t.Fatalf("job complete: %+v %v", st, err)
	}
	if _, err := c.JobStatus(ctx, "nope"); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("missing job: %v", err)
	}
	// pod rm of a training Job: the Job, its Secret and its claim.
	if err := c.Terminate(ctx, "wan-2"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.CS.BatchV1().Jobs(c.Namespace).Get(ctx, "wan-2", metav1.GetOptions{}); err == nil {
		if j, _ := e.CS.BatchV1().Jobs(c.Namespace).Get(ctx, "wan-2", metav1.GetOptions{}); j.DeletionTimestamp == nil {
			t.Fatal("the Job stayed")
		}
	}
	for _, get := range []func() error{
		func() error {
			_, err := e.CS.CoreV1().Secrets(c.Namespace).Get(ctx, "wan-2-secrets", metav1.GetOptions{})
			return err
		},
	} {
		if err := get(); err == nil {
			t.Fatal("the Secret stayed")
		}
	}
	if p, err := e.CS.CoreV1().PersistentVolumeClaims(c.Namespace).Get(ctx, "wan-2-workspace", metav1.GetOptions{}); err == nil && p.DeletionTimestamp == nil {
		t.Fatal("the claim stayed")
	}
	if err := c.Terminate(ctx, "nope"); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("rm of nothing: %v", err)
	}
}

func TestParseMachine(t *testing.T) {
	for _, tc := range []struct{ in, ctx, ns, job, dir string }{
		{"k8s://lab/studio/wan-1", "lab", "studio", "wan-1", ""},
		{"k8s:///studio/wan-1/workspace/.scopectl/jobs/x", "", "studio", "wan-1", "/workspace/.scopectl/jobs/x"},
		{"k8s://lab/studio/wan-1/workspace/../etc", "lab", "studio", "wan-1", "/etc"},
	} {
		tg, job, dir, err := kubernetes.ParseMachine(tc.in)
		if err != nil || tg.Context != tc.ctx || tg.Namespace != tc.ns || job != tc.job || dir != tc.dir {
			t.Errorf("%s: %+v %s %s %v", tc.in, tg, job, dir, err)
		}
	}
	for _, bad := range []string{"ssh://x/y/z", "k8s://lab/studio", "k8s://lab//job", "k8s://lab/ns/"} {
		if _, _, _, err := kubernetes.ParseMachine(bad); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
	if u := kubernetes.MachineURL(kubernetes.Target{Context: "lab", Namespace: "studio"}, "wan-1"); u != "k8s://lab/studio/wan-1" {
		t.Errorf("machine url %s", u)
	}
}

func resourceQ(t *testing.T, s string) resource.Quantity {
	t.Helper()
	return resource.MustParse(s)
}

func FuzzParseMachine(f *testing.F) {
	for _, s := range []string{"k8s://lab/studio/wan-1", "k8s:///ns/job/workspace/x", "k8s://a/b/c/../../..", "k8s://lab/studio", "ssh://x", "k8s://a/b/c//d/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tg, job, dir, err := kubernetes.ParseMachine(s)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		if job == "" || tg.Namespace == "" || strings.Contains(job, "/") || dir != "" && (!strings.HasPrefix(dir, "/") || strings.Contains(dir, "/../") || strings.HasSuffix(dir, "/..")) {
			t.Fatalf("%q: %+v %q %q", s, tg, job, dir)
		}
		tg2, job2, dir2, err := kubernetes.ParseMachine(kubernetes.MachineURL(tg, job) + dir)
		if err != nil || tg2 != tg || job2 != job || dir2 != dir {
			t.Fatalf("%q: round trip %+v %q %q %v", s, tg2, job2, dir2, err)
		}
	})
}

// Container logs and exec go through the API server, which asks the pod's kubelet: a
// pod on no node yet has an empty log, and exec into it is one line naming pod and
// container.
func TestLogsAndExecWithoutKubelet(t *testing.T) {
	e, c := client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := c.ApplyJob(ctx, jobSpec(), kubernetes.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := e.JobPod(t, c.Namespace, "wan-1", corev1.PodStatus{Phase: corev1.PodPending})
	var lines []string
	err := c.Logs(ctx, pod, kubernetes.LogOptions{Container: "train", Follow: true, Tail: 10}, func(l string) error { lines = append(lines, l); return nil })
	if err != nil || len(lines) != 0 {
		t.Fatalf("logs of a pod on no node: %q %v", lines, err)
	}
	code, err := c.Exec(ctx, pod, "train", []string{"true"}, nil, io.Discard, io.Discard)
	if err == nil || code != -1 || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "exec in "+pod+"/train") {
		t.Fatalf("exec: %d %v", code, err)
	}
	t.Logf("exec: %v", err)
}
