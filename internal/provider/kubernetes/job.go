package kubernetes

import (
	"context"
	"fmt"
	"maps"
	"slices"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	batchac "k8s.io/client-go/applyconfigurations/batch/v1"
	coreac "k8s.io/client-go/applyconfigurations/core/v1"

	"github.com/daydreamlive/scopectl/internal/secret"
)

// Where a training Job's claims are mounted.
const (
	JobDatasetDir = "/workspace/dataset"
	JobOutputDir  = "/workspace/output"
)

// TrainJobSpec is one training run as a Kubernetes Job: the trainer's image and
// command, one GPU set, the dataset and the output on claims of their own (they outlive
// the Job: checkpoints are collected from the output claim afterwards). The Job never
// retries (backoffLimit 0): a failed run is looked at, then resumed on purpose.
type TrainJobSpec struct {
	Name         string   // the Job's name (a run id), lowercase DNS label
	Image        string   // the ai-toolkit image
	Command      []string // the trainer (e.g. the scopectl supervisor in the image)
	GPUResource  string   // default nvidia.com/gpu
	GPUCount     int64    // default 1
	DatasetClaim string   // default NAME-dataset; created at DatasetSize when missing
	OutputClaim  string   // default NAME-output; created at OutputSize when missing
	DatasetSize  string   // default 20Gi
	OutputSize   string   // default 50Gi
	StorageClass string
	NodeSelector map[string]string
	Tolerations  []corev1.Toleration
	Env          map[string]string
	SecretEnv    map[string]secret.Secret // HF_TOKEN …: in the Secret NAME-secrets, never in the Job
}

func (s TrainJobSpec) normalize() (TrainJobSpec, error) {
	if len(s.Name) > 50 || !dnsLabel.MatchString(s.Name) {
		return s, fmt.Errorf("kubernetes: job name %q: want lowercase letters, digits and '-', at most 50 characters", s.Name)
	}
	if s.Image == "" || len(s.Command) == 0 {
		return s, fmt.Errorf("kubernetes: job %s: an image and a command are needed", s.Name)
	}
	if s.GPUResource == "" {
		s.GPUResource = DefaultGPUResource
	}
	if s.GPUCount == 0 {
		s.GPUCount = 1
	}
	if s.DatasetClaim == "" {
		s.DatasetClaim = s.Name + "-dataset"
	}
	if s.OutputClaim == "" {
		s.OutputClaim = s.Name + "-output"
	}
	if s.DatasetSize == "" {
		s.DatasetSize = "20Gi"
	}
	if s.OutputSize == "" {
		s.OutputSize = "50Gi"
	}
	for _, q := range []string{s.DatasetSize, s.OutputSize} {
		if _, err := resource.ParseQuantity(q); err != nil {
			return s, fmt.Errorf("kubernetes: job %s: size %q: want a quantity such as 50Gi", s.Name, q)
		}
	}
	return s, nil
}

// JobObjects is what ApplyJob applies: the claims, the Secret (with secret env) and the Job.
type JobObjects struct {
	Claims []*coreac.PersistentVolumeClaimApplyConfiguration
	Secret *coreac.SecretApplyConfiguration
	Job    *batchac.JobApplyConfiguration
}

// BuildJob returns the apply configurations of s in namespace ns.
func (s TrainJobSpec) BuildJob(ns string) (JobObjects, error) {
	s, err := s.normalize()
	if err != nil {
		return JobObjects{}, err
	}
	lbl := map[string]string{LabelName: "scope-train", LabelInstance: s.Name, LabelManagedBy: FieldManager}
	var o JobObjects
	for _, c := range []struct{ name, size string }{{s.DatasetClaim, s.DatasetSize}, {s.OutputClaim, s.OutputSize}} {
		spec := coreac.PersistentVolumeClaimSpec().WithAccessModes(corev1.ReadWriteOnce).
			WithResources(coreac.VolumeResourceRequirements().WithRequests(corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(c.size)}))
		if s.StorageClass != "" {
			spec.WithStorageClassName(s.StorageClass)
		}
		o.Claims = append(o.Claims, coreac.PersistentVolumeClaim(c.name, ns).WithLabels(lbl).WithSpec(spec))
	}
	secretName := s.Name + "-secrets"
	keys := slices.Sorted(maps.Keys(s.SecretEnv))
	var env []*coreac.EnvVarApplyConfiguration
	for _, k := range slices.Sorted(maps.Keys(s.Env)) {
		env = append(env, coreac.EnvVar().WithName(k).WithValue(s.Env[k]))
	}
	if len(keys) > 0 {
		data := map[string][]byte{}
		for _, k := range keys {
			data[k] = []byte(s.SecretEnv[k].Reveal())
			env = append(env, secretEnv(k, secretName))
		}
		o.Secret = coreac.Secret(secretName, ns).WithLabels(lbl).WithType(corev1.SecretTypeOpaque).WithData(data)
	}
	ct := coreac.Container().WithName("train").WithImage(s.Image).WithCommand(s.Command...).WithEnv(env...).
		WithResources(coreac.ResourceRequirements().WithLimits(corev1.ResourceList{
			corev1.ResourceName(s.GPUResource): *resource.NewQuantity(s.GPUCount, resource.DecimalSI)})).
		WithVolumeMounts(
			coreac.VolumeMount().WithName("dataset").WithMountPath(JobDatasetDir),
			coreac.VolumeMount().WithName("output").WithMountPath(JobOutputDir))
	pod := coreac.PodSpec().WithRestartPolicy(corev1.RestartPolicyNever).WithContainers(ct).WithVolumes(
		coreac.Volume().WithName("dataset").WithPersistentVolumeClaim(coreac.PersistentVolumeClaimVolumeSource().WithClaimName(s.DatasetClaim)),
		coreac.Volume().WithName("output").WithPersistentVolumeClaim(coreac.PersistentVolumeClaimVolumeSource().WithClaimName(s.OutputClaim)))
	place(pod, s.NodeSelector, s.Tolerations)
	o.Job = batchac.Job(s.Name, ns).WithLabels(lbl).WithSpec(batchac.JobSpec().
		WithBackoffLimit(0).
		WithTemplate(coreac.PodTemplateSpec().WithLabels(lbl).WithSpec(pod)))
	return o, nil
}

// ApplyJob applies s's claims, Secret and Job with server-side apply.
func (c *Client) ApplyJob(ctx context.Context, s TrainJobSpec, opt ApplyOptions) ([]Applied, error) {
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
	for _, cl := range o.Claims {
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
	}
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
	cur, _ := jobs.Get(ctx, s.Name, metav1.GetOptions{})
	got, err := jobs.Apply(ctx, o.Job, ao)
	if err != nil {
		return out, c.explain(err, "apply job "+s.Name)
	}
	out = append(out, applied("Job", cur, got, dry))
	return out, nil
}

// JobState is a training Job's state: running (or pending), succeeded or failed, with
// the reason Kubernetes gives for a failure.
type JobState struct {
	Name   string `json:"name"`
	Phase  string `json:"phase"` // pending | running | succeeded | failed
	Reason string `json:"reason,omitempty"`
}

// JobStatus reads the Job name's state.
func (c *Client) JobStatus(ctx context.Context, name string) (JobState, error) {
	j, err := c.CS.BatchV1().Jobs(c.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return JobState{}, c.explain(err, "get job "+name)
	}
	st := JobState{Name: name, Phase: "pending"}
	if j.Status.Active > 0 {
		st.Phase = "running"
	}
	for _, cond := range j.Status.Conditions {
		if cond.Status != corev1.ConditionTrue {
			continue
		}
		switch cond.Type {
		case batchv1.JobComplete:
			st.Phase = "succeeded"
		case batchv1.JobFailed:
			st.Phase, st.Reason = "failed", oneLineText(cond.Reason+": "+cond.Message)
		}
	}
	return st, nil
}

// DeleteJob deletes the Job and its pods (background); the claims stay for collection.
func (c *Client) DeleteJob(ctx context.Context, name string) error {
	bg := metav1.DeletePropagationBackground
	if err := c.CS.BatchV1().Jobs(c.Namespace).Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: &bg}); err != nil {
		return c.explain(err, "delete job "+name)
	}
	return nil
}
