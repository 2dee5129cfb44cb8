package kubernetes

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	batchac "k8s.io/client-go/applyconfigurations/batch/v1"
	coreac "k8s.io/client-go/applyconfigurations/core/v1"

	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/secret"
)

// Defaults of a TrainJobSpec.
const (
	// JobWorkspace is where the workspace claim is mounted in the trainer's container
	// and the agent sidecar's: datasets, the job folders, outputs and the HF cache.
	JobWorkspace = "/workspace"
	// JobBinDir holds the scopectl binary the init container copies out of the agent
	// image, so that the ai-toolkit image needs nothing of scopectl's.
	JobBinDir = "/opt/scopectl"
	// DefaultJobVolume is the workspace claim's size.
	DefaultJobVolume = "100Gi"
	// DefaultLinger is how long the pod stays up after the last job on it ended when
	// nobody releases it (the laptop collects the final checkpoint, then releases it).
	DefaultLinger = 30 * time.Minute
)

// TrainJobSpec is one training machine as a Kubernetes Job: a pod of the ai-toolkit
// image whose main process (scopectl's holder, from the agent image through an init
// container) keeps it up while `train supervise` runs ai-toolkit in it, and scopectl's
// agent as a sidecar on the same workspace claim, reached by port-forward. The laptop
// drives it exactly as it drives an SSH machine: files through the agent, commands
// through exec. The Job never retries (backoffLimit 0): a failed run is looked at,
// then resumed on purpose. The claim outlives the Job.
type TrainJobSpec struct {
	Name            string // the Job's name, lowercase DNS label
	Image           string // the ai-toolkit image (default ostris/aitoolkit at the pinned version: the caller's)
	AgentImage      string // the scopectl image (default DefaultAgentImage)
	GPUResource     string // default nvidia.com/gpu
	GPUCount        int64  // default 1
	Claim           string // the workspace claim, default NAME-workspace; created when missing
	VolumeSize      string // default 100Gi
	StorageClass    string
	NodeSelector    map[string]string
	Tolerations     []corev1.Toleration
	HostNetwork     bool
	ImagePullPolicy corev1.PullPolicy
	Linger          time.Duration // default DefaultLinger
	Env             map[string]string
	// SecretEnv (HF_TOKEN, the agent token) goes into the Secret NAME-secrets and
	// reaches the containers through secretKeyRef: never into a manifest.
	SecretEnv map[string]secret.Secret
	Tag       string // scopectl request id, an annotation
}

// SecretName is the Secret holding s's secret environment.
func (s TrainJobSpec) SecretName() string { return s.Name + "-secrets" }

// Normalize fills defaults and checks s.
func (s TrainJobSpec) Normalize() (TrainJobSpec, error) {
	if len(s.Name) > 50 || !dnsLabel.MatchString(s.Name) {
		return s, fmt.Errorf("kubernetes: job name %q: want lowercase letters, digits and '-', at most 50 characters", s.Name)
	}
	if s.Image == "" {
		return s, fmt.Errorf("kubernetes: job %s: no trainer image", s.Name)
	}
	if s.AgentImage == "" {
		s.AgentImage = DefaultAgentImage
	}
	if s.GPUResource == "" {
		s.GPUResource = DefaultGPUResource
	}
	if errs := validation.IsQualifiedName(s.GPUResource); len(errs) > 0 || !strings.Contains(s.GPUResource, "/") {
		return s, fmt.Errorf("kubernetes: GPU resource %q: want an extended resource name such as nvidia.com/gpu", s.GPUResource)
	}
	if s.GPUCount < 0 {
		return s, fmt.Errorf("kubernetes: GPU count %d: must be 0 or more", s.GPUCount)
	}
	if s.GPUCount == 0 {
		s.GPUCount = 1
	}
	if s.Claim == "" {
		s.Claim = s.Name + "-workspace"
	}
	if s.VolumeSize == "" {
		s.VolumeSize = DefaultJobVolume
	}
	if _, err := resource.ParseQuantity(s.VolumeSize); err != nil {
		return s, fmt.Errorf("kubernetes: job %s: volume size %q: want a quantity such as 100Gi", s.Name, s.VolumeSize)
	}
	if s.Linger <= 0 {
		s.Linger = DefaultLinger
	}
	for k := range s.Env {
		if _, ok := s.SecretEnv[k]; ok {
			return s, fmt.Errorf("kubernetes: env %s is set both plainly and as a secret", k)
		}
	}
	switch s.ImagePullPolicy {
	case "", corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		return s, fmt.Errorf("kubernetes: image pull policy %q: want Always, IfNotPresent or Never", s.ImagePullPolicy)
	}
	return s, nil
}

// JobSelector is the label selector of the pods of Job name.
func JobSelector(name string) string { return "batch.kubernetes.io/job-name=" + name }

// JobObjects is what ApplyJob applies, in order: the claim, the Secret (with secret
// env) and the Job.
type JobObjects struct {
	Claim  *coreac.PersistentVolumeClaimApplyConfiguration
	Secret *coreac.SecretApplyConfiguration
	Job    *batchac.JobApplyConfiguration
}

// BuildJob returns the apply configurations of s in namespace ns (s normalized here).
func (s TrainJobSpec) BuildJob(ns string) (JobObjects, error) {
	s, err := s.Normalize()
	if err != nil {
		return JobObjects{}, err
	}
	lbl := map[string]string{LabelName: "scope-train", LabelInstance: s.Name, LabelManagedBy: FieldManager}
	var o JobObjects
	spec := coreac.PersistentVolumeClaimSpec().WithAccessModes(corev1.ReadWriteOnce).
		WithResources(coreac.VolumeResourceRequirements().WithRequests(corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(s.VolumeSize)}))
	if s.StorageClass != "" {
		spec.WithStorageClassName(s.StorageClass)
	}
	o.Claim = coreac.PersistentVolumeClaim(s.Claim, ns).WithLabels(lbl).WithSpec(spec)
	keys := slices.Sorted(maps.Keys(s.SecretEnv))
	var env []*coreac.EnvVarApplyConfiguration
	for _, k := range slices.Sorted(maps.Keys(s.Env)) {
		env = append(env, coreac.EnvVar().WithName(k).WithValue(s.Env[k]))
	}
	if len(keys) > 0 {
		data := map[string][]byte{}
		for _, k := range keys {
			data[k] = []byte(s.SecretEnv[k].Reveal())
			if k != SecretAgentToken {
				env = append(env, secretEnv(k, s.SecretName()))
			}
		}
		o.Secret = coreac.Secret(s.SecretName(), ns).WithLabels(lbl).WithType(corev1.SecretTypeOpaque).WithData(data)
	}
	ws := coreac.VolumeMount().WithName("workspace").WithMountPath(JobWorkspace)
	bin := JobBinDir + "/scopectl"
	// The scopectl binary, copied out of the agent image for the trainer's container.
	initBin := coreac.Container().WithName("scopectl-bin").WithImage(s.AgentImage).
		WithCommand("scopectl", "train", "kube-init", "--to", bin, "--workspace", JobWorkspace).
		WithVolumeMounts(coreac.VolumeMount().WithName("scopectl").WithMountPath(JobBinDir), ws)
	// The agent: a native sidecar (an init container that keeps running), so that it
	// is up before the trainer and ends with it.
	agent := coreac.Container().WithName("agent").WithImage(s.AgentImage).
		WithRestartPolicy(corev1.ContainerRestartPolicyAlways).
		WithCommand("scopectl", "train", "kube-agent", "--root", JobWorkspace, "--listen", ":"+strconv.Itoa(AgentPort)).
		WithPorts(coreac.ContainerPort().WithName("agent").WithContainerPort(AgentPort).WithProtocol(corev1.ProtocolTCP)).
		WithReadinessProbe(coreac.Probe().WithHTTPGet(coreac.HTTPGetAction().WithPath("/v1/health").WithPort(intstr.FromString("agent"))).
			WithPeriodSeconds(2).WithFailureThreshold(3)).
		WithVolumeMounts(ws)
	if _, ok := s.SecretEnv[SecretAgentToken]; ok {
		agent.WithEnv(secretEnv(SecretAgentToken, s.SecretName()))
	}
	trainer := coreac.Container().WithName("train").WithImage(s.Image).
		WithCommand(bin, "train", "kube-hold", "--workspace", JobWorkspace, "--name", s.Name, "--linger", s.Linger.String()).
		WithEnv(env...).
		WithResources(coreac.ResourceRequirements().WithLimits(corev1.ResourceList{
			corev1.ResourceName(s.GPUResource): *resource.NewQuantity(s.GPUCount, resource.DecimalSI)})).
		WithVolumeMounts(ws, coreac.VolumeMount().WithName("scopectl").WithMountPath(JobBinDir).WithReadOnly(true))
	if s.ImagePullPolicy != "" {
		for _, c := range []*coreac.ContainerApplyConfiguration{initBin, agent, trainer} {
			c.WithImagePullPolicy(s.ImagePullPolicy)
		}
	}
	pod := coreac.PodSpec().WithRestartPolicy(corev1.RestartPolicyNever).
		WithInitContainers(initBin, agent).WithContainers(trainer).
		WithVolumes(
			coreac.Volume().WithName("workspace").WithPersistentVolumeClaim(coreac.PersistentVolumeClaimVolumeSource().WithClaimName(s.Claim)),
			coreac.Volume().WithName("scopectl").WithEmptyDir(coreac.EmptyDirVolumeSource()))
	place(pod, s.NodeSelector, s.Tolerations)
	if s.HostNetwork {
		pod.WithHostNetwork(true).WithDNSPolicy(corev1.DNSClusterFirstWithHostNet)
	}
	tmpl := coreac.PodTemplateSpec().WithLabels(lbl).WithSpec(pod)
	if len(keys) > 0 {
		tmpl.WithAnnotations(map[string]string{AnnoSecretHash: secretHash(s.SecretEnv)})
	}
	o.Job = batchac.Job(s.Name, ns).WithLabels(lbl).WithSpec(batchac.JobSpec().
		WithBackoffLimit(0).
		WithTemplate(tmpl))
	if s.Tag != "" {
		o.Job.WithAnnotations(map[string]string{AnnoTag: s.Tag})
	}
	return o, nil
}

// YAML renders the manifests for --dry-run -o yaml. The Secret is never printed: a
// comment names it and its keys instead.
func (o JobObjects) YAML() ([]byte, error) {
	return manifestYAML(o.Secret, o.Claim, o.Job)
}

// PrepareJob normalizes s and gives it the agent token the Job's Secret already holds
// (so that applying again changes nothing), or a new one.
func (c *Client) PrepareJob(ctx context.Context, s TrainJobSpec) (TrainJobSpec, error) {
	s, err := s.Normalize()
	if err != nil {
		return s, err
	}
	s.SecretEnv, err = c.withAgentToken(ctx, s.SecretName(), s.SecretEnv)
	return s, err
}

// ApplyJob applies s's claim, Secret and Job with server-side apply (s through
// PrepareJob first, for the agent token).
func (c *Client) ApplyJob(ctx context.Context, s TrainJobSpec, opt ApplyOptions) ([]Applied, error) {
	s, err := c.PrepareJob(ctx, s)
	if err != nil {
		return nil, err
	}
	o, err := s.BuildJob(c.Namespace)
	if err != nil {
		return nil, err
	}
	ao := metav1.ApplyOptions{FieldManager: FieldManager, Force: opt.Force}
	if opt.ServerDryRun {
		ao.DryRun = []string{metav1.DryRunAll}
	}
	var out []Applied
	dry := opt.ServerDryRun
	pvcs := c.CS.CoreV1().PersistentVolumeClaims(c.Namespace)
	cl := o.Claim
	cur, _ := pvcs.Get(ctx, *cl.Name, metav1.GetOptions{})
	got, err := pvcs.Apply(ctx, cl, ao)
	if err == nil && cur.ResourceVersion == "" && !dry {
		// kube-apiserver 1.34 rewrites a just-created claim on its first apply even
		// when nothing differs (a new resourceVersion, the same object); settle it
		// now so that the next run's apply is a true no-op.
		got, err = pvcs.Apply(ctx, cl, ao)
	}
	if err != nil {
		return out, c.explain(err, "apply volume claim "+*cl.Name)
	}
	out = append(out, applied("PersistentVolumeClaim", cur, got, dry))
	if o.Secret != nil {
		secrets := c.CS.CoreV1().Secrets(c.Namespace)
		cur, _ := secrets.Get(ctx, *o.Secret.Name, metav1.GetOptions{})
		got, err := secrets.Apply(ctx, o.Secret, ao)
		if err != nil {
			return out, c.explain(err, "apply secret "+*o.Secret.Name)
		}
		out = append(out, applied("Secret", cur, got, dry))
	}
	jobs := c.CS.BatchV1().Jobs(c.Namespace)
	curJob, _ := jobs.Get(ctx, s.Name, metav1.GetOptions{})
	gotJob, err := jobs.Apply(ctx, o.Job, ao)
	if err != nil {
		return out, c.explain(err, "apply job "+s.Name)
	}
	out = append(out, applied("Job", curJob, gotJob, dry))
	return out, nil
}

// Phases of a JobState.
const (
	JobPending   = "pending"
	JobRunning   = "running"
	JobSucceeded = "succeeded"
	JobFailed    = "failed"
)

// JobState is a training Job's state from the Job's conditions and its pod's: pending
// (with the scheduler's or the kubelet's reason), running (Ready: the agent answers),
// succeeded or failed (with the reason Kubernetes gives).
type JobState struct {
	Name   string `json:"name"`
	Phase  string `json:"phase"` // pending | running | succeeded | failed
	Reason string `json:"reason,omitempty"`
	Pod    string `json:"pod,omitempty"`
	Ready  bool   `json:"ready"` // the pod runs and the agent sidecar answers
	Node   string `json:"node,omitempty"`
	// Fatal: pending in a way waiting will not cure (an image that cannot be pulled).
	Fatal bool `json:"-"`
}

// JobStatus reads the Job name's state, with its pod's.
func (c *Client) JobStatus(ctx context.Context, name string) (JobState, error) {
	j, err := c.CS.BatchV1().Jobs(c.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return JobState{}, c.explain(err, "get job "+name)
	}
	pl, err := c.CS.CoreV1().Pods(c.Namespace).List(ctx, metav1.ListOptions{LabelSelector: JobSelector(name)})
	if err != nil {
		return JobState{}, c.explain(err, "list pods of job "+name)
	}
	st := jobStateOf(j, pl.Items)
	if st.Phase == JobPending && st.Pod != "" && !st.Fatal && (st.Reason == "" || strings.HasPrefix(st.Reason, "unschedulable")) {
		if why := c.schedulerReason(ctx, st.Pod); why != "" {
			st.Reason = why
		}
	}
	return st, nil
}

// jobStateOf maps a Job and its pods to a JobState: the Job's terminal conditions
// first, then the newest live pod's phase, readiness and reasons.
func jobStateOf(j *batchv1.Job, pods []corev1.Pod) JobState {
	st := JobState{Name: j.Name, Phase: JobPending}
	for _, cond := range j.Status.Conditions {
		if cond.Status != corev1.ConditionTrue {
			continue
		}
		switch cond.Type {
		case batchv1.JobComplete:
			st.Phase = JobSucceeded
		case batchv1.JobFailed:
			st.Phase, st.Reason = JobFailed, oneLineText(cond.Reason+": "+cond.Message)
		}
	}
	var pod *corev1.Pod
	for i := range pods {
		p := &pods[i]
		if p.DeletionTimestamp != nil {
			continue
		}
		if pod == nil || p.CreationTimestamp.After(pod.CreationTimestamp.Time) {
			pod = p
		}
	}
	if pod == nil {
		if st.Phase == JobPending && j.Status.Active == 0 {
			st.Reason = "no pod yet (is the job controller running?)"
		}
		return st
	}
	r := replicaOf(pod)
	st.Pod, st.Node, st.Ready = pod.Name, pod.Spec.NodeName, r.Ready
	switch st.Phase {
	case JobSucceeded:
		return st
	case JobFailed:
		if r.Reason != "" {
			st.Reason += "; " + r.Reason
		}
		return st
	}
	switch pod.Status.Phase {
	case corev1.PodRunning:
		st.Phase = JobRunning
		if !r.Ready {
			st.Reason = cmpOr(r.Reason, "the agent sidecar is not ready yet")
		}
	case corev1.PodSucceeded:
		st.Phase = JobSucceeded
	case corev1.PodFailed:
		st.Phase, st.Reason = JobFailed, cmpOr(r.Reason, oneLineText(pod.Status.Reason+": "+pod.Status.Message))
	default:
		st.Reason, st.Fatal = r.Reason, r.Fatal
	}
	return st
}

// WaitJobRunning watches Job name's pod until it runs with its agent ready, the Job
// ends, a reason waiting cannot cure appears (an image that cannot be pulled), or ctx
// ends (the error then says why it is still pending, with the scheduler's reason).
func (c *Client) WaitJobRunning(ctx context.Context, name string, progress func(JobState)) (JobState, error) {
	var last JobState
	for {
		st, err := c.JobStatus(ctx, name)
		if err != nil {
			if ctx.Err() != nil && last.Name != "" {
				return last, fmt.Errorf("kubernetes: job %s: %w: %s", name, ErrNotReady, cmpOr(last.Reason, last.Phase))
			}
			return st, err
		}
		if st != last && progress != nil {
			progress(st)
		}
		last = st
		switch {
		case st.Phase == JobRunning && st.Ready:
			return st, nil
		case st.Phase == JobSucceeded || st.Phase == JobFailed:
			return st, fmt.Errorf("kubernetes: job %s ended (%s) before it ran: %s", name, st.Phase, cmpOr(st.Reason, "no reason given"))
		case st.Fatal:
			return st, fmt.Errorf("kubernetes: job %s: %w: %s", name, ErrNotReady, st.Reason)
		}
		w, err := c.CS.CoreV1().Pods(c.Namespace).Watch(ctx, metav1.ListOptions{LabelSelector: JobSelector(name)})
		if err != nil {
			if ctx.Err() != nil {
				return st, fmt.Errorf("kubernetes: job %s: %w: %s", name, ErrNotReady, cmpOr(st.Reason, st.Phase))
			}
			return st, c.explain(err, "watch pods of job "+name)
		}
		tick := time.NewTimer(5 * time.Second) // events and job status arrive on their own; re-read now and then
		select {
		case <-ctx.Done():
		case <-w.ResultChan():
		case <-tick.C:
		}
		tick.Stop()
		w.Stop()
		if ctx.Err() != nil {
			return st, fmt.Errorf("kubernetes: job %s: %w: %s", name, ErrNotReady, cmpOr(st.Reason, st.Phase))
		}
	}
}

// JobPod is the name of Job name's live pod. provider.ErrNotFound when it has none.
func (c *Client) JobPod(ctx context.Context, name string) (string, error) {
	pl, err := c.CS.CoreV1().Pods(c.Namespace).List(ctx, metav1.ListOptions{LabelSelector: JobSelector(name)})
	if err != nil {
		return "", c.explain(err, "list pods of job "+name)
	}
	best := ""
	var at time.Time
	for _, p := range pl.Items {
		if p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		if best == "" || p.CreationTimestamp.After(at) {
			best, at = p.Name, p.CreationTimestamp.Time
		}
	}
	if best == "" {
		return "", fmt.Errorf("kubernetes: job %s: %w: it has no running pod (it ended, or was deleted)", name, provider.ErrNotFound)
	}
	return best, nil
}

// JobAgentToken is the agent sidecar's token of Job name, from its Secret.
func (c *Client) JobAgentToken(ctx context.Context, name string) (secret.Secret, error) {
	s := TrainJobSpec{Name: name}
	sec, err := c.CS.CoreV1().Secrets(c.Namespace).Get(ctx, s.SecretName(), metav1.GetOptions{})
	if err != nil {
		return secret.Secret{}, c.explain(err, "read secret "+s.SecretName())
	}
	v := sec.Data[SecretAgentToken]
	if len(v) == 0 {
		return secret.Secret{}, fmt.Errorf("kubernetes: secret %s has no %s", s.SecretName(), SecretAgentToken)
	}
	return secret.New(string(v)), nil
}

// DeleteJob deletes the Job and its pods (background) and its Secret; the workspace
// claim stays unless claim is set (pod rm: datasets, checkpoints and outputs go too).
func (c *Client) DeleteJob(ctx context.Context, name string, claim bool) error {
	bg := metav1.DeletePropagationBackground
	if err := c.CS.BatchV1().Jobs(c.Namespace).Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: &bg}); err != nil {
		return c.explain(err, "delete job "+name)
	}
	s := TrainJobSpec{Name: name}
	if err := c.CS.CoreV1().Secrets(c.Namespace).Delete(ctx, s.SecretName(), metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return c.explain(err, "delete secret "+s.SecretName())
	}
	if claim {
		if err := c.CS.CoreV1().PersistentVolumeClaims(c.Namespace).Delete(ctx, name+"-workspace", metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return c.explain(err, "delete volume claim "+name+"-workspace")
		}
	}
	return nil
}

// JobSpecOf reads back the TrainJobSpec Job name was applied from (image, GPU, claim,
// placement, env, and the secret env its Secret still holds but the agent token), so
// that a job can continue on a new Job over the same workspace claim.
func (c *Client) JobSpecOf(ctx context.Context, name string) (TrainJobSpec, error) {
	j, err := c.CS.BatchV1().Jobs(c.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return TrainJobSpec{}, c.explain(err, "get job "+name)
	}
	pod := j.Spec.Template.Spec
	s := TrainJobSpec{Name: name, NodeSelector: pod.NodeSelector, Tolerations: pod.Tolerations, HostNetwork: pod.HostNetwork,
		Env: map[string]string{}, SecretEnv: map[string]secret.Secret{}, Tag: j.Annotations[AnnoTag]}
	for _, v := range pod.Volumes {
		if v.Name == "workspace" && v.PersistentVolumeClaim != nil {
			s.Claim = v.PersistentVolumeClaim.ClaimName
		}
	}
	for _, ct := range pod.InitContainers {
		if ct.Name == "agent" {
			s.AgentImage = ct.Image
		}
	}
	var secretKeys []string
	for _, ct := range pod.Containers {
		if ct.Name != TrainContainer {
			continue
		}
		s.Image, s.ImagePullPolicy = ct.Image, ct.ImagePullPolicy
		for res, q := range ct.Resources.Limits {
			if res != corev1.ResourceCPU && res != corev1.ResourceMemory {
				s.GPUResource, s.GPUCount = string(res), q.Value()
			}
		}
		for _, e := range ct.Env {
			switch {
			case e.ValueFrom == nil:
				s.Env[e.Name] = e.Value
			case e.ValueFrom.SecretKeyRef != nil:
				secretKeys = append(secretKeys, e.ValueFrom.SecretKeyRef.Key)
			}
		}
		for i, a := range ct.Command {
			if a == "--linger" && i+1 < len(ct.Command) {
				s.Linger, _ = time.ParseDuration(ct.Command[i+1])
			}
		}
	}
	if s.Image == "" || s.Claim == "" {
		return s, fmt.Errorf("kubernetes: job %s was not made by scopectl's train run (no train container or workspace claim)", name)
	}
	if len(secretKeys) > 0 {
		sec, err := c.CS.CoreV1().Secrets(c.Namespace).Get(ctx, s.SecretName(), metav1.GetOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return s, c.explain(err, "read secret "+s.SecretName())
		}
		for _, k := range secretKeys {
			if sec != nil && len(sec.Data[k]) > 0 {
				s.SecretEnv[k] = secret.New(string(sec.Data[k]))
			}
		}
	}
	return s, nil
}
