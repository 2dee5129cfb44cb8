package kubernetes

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	appsac "k8s.io/client-go/applyconfigurations/apps/v1"
	coreac "k8s.io/client-go/applyconfigurations/core/v1"
	metaac "k8s.io/client-go/applyconfigurations/meta/v1"
	rbacac "k8s.io/client-go/applyconfigurations/rbac/v1"
	"sigs.k8s.io/yaml"

	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/secret"
)

// Defaults of a ScopeSpec.
const (
	DefaultName        = "scope"
	DefaultImage       = "daydreamlive/scope:main"
	DefaultAgentImage  = "ghcr.io/daydreamlive/scopectl:latest"
	DefaultGPUResource = "nvidia.com/gpu"
	DefaultVolumeSize  = "50Gi"
	DefaultLoRADir     = "/workspace/models/lora"
	// Workspace is where each replica's volume is mounted, in Scope's container and the agent's.
	Workspace = "/workspace"
	// ScopePort is Scope's port in its container; AgentPort the agent sidecar's.
	ScopePort = 8000
	AgentPort = 8765
)

// Labels and annotations scopectl puts on what it applies.
const (
	LabelName      = "app.kubernetes.io/name"
	LabelInstance  = "app.kubernetes.io/instance"
	LabelManagedBy = "app.kubernetes.io/managed-by"
	LabelComponent = "app.kubernetes.io/component"
	// AnnoSecretHash on the pod template: a hash of the Secret's content, so that a
	// changed token rolls the replicas (the value tells nothing about the secrets).
	AnnoSecretHash = "scopectl.daydream.live/secret-hash"
	// AnnoStoppedReplicas on a StatefulSet scaled to zero by Stop: the count Start restores.
	AnnoStoppedReplicas = "scopectl.daydream.live/stopped-replicas"
	// AnnoTag carries the scopectl request id (provider.Pod.Tag).
	AnnoTag = "scopectl.daydream.live/request-id"
	// AnnoStoppedBy, AnnoStopReason and AnnoStoppedAt on a StatefulSet record its last
	// stop by the on-pod guard (GuardStop): pod get shows them.
	AnnoStoppedBy  = "scopectl.daydream.live/stopped-by"
	AnnoStopReason = "scopectl.daydream.live/stop-reason"
	AnnoStoppedAt  = "scopectl.daydream.live/stopped-at"
	// AnnoStartedAt on a StatefulSet: when scopectl last started it (a deploy that
	// created it or scaled it up from zero, pod start), RFC 3339; provider.Pod.StartedAt,
	// where the cost ledger's run begins.
	AnnoStartedAt = "scopectl.daydream.live/started-at"
)

// The guard container (a second container from the agent's image: `scopectl guard
// --statefulset NAME`) and where it keeps its files (on the replica's volume).
const (
	GuardContainer = "guard"
	GuardDir       = Workspace + "/.scopectl/guard"
	// EnvPodNamespace and EnvPodName reach the guard through the downward API.
	EnvPodNamespace = "SCOPECTL_POD_NAMESPACE"
	EnvPodName      = "SCOPECTL_POD_NAME"
)

// Secret keys.
const (
	SecretHFToken    = "HF_TOKEN"
	SecretAgentToken = "SCOPECTL_AGENT_TOKEN"
)

// ScopeSpec is a Scope deployment on Kubernetes.
type ScopeSpec struct {
	Name         string // StatefulSet, Service and Secret prefix; default "scope"
	Replicas     int32  // default 1; 0 deploys it stopped
	Image        string // Scope's image, default daydreamlive/scope:main
	AgentImage   string // the scopectl image for the agent sidecar ("" = DefaultAgentImage; "-" = no sidecar)
	GPUResource  string // extended resource per replica, default nvidia.com/gpu
	GPUCount     int64  // per replica, default 1
	NodeSelector map[string]string
	Tolerations  []corev1.Toleration
	HostNetwork  bool   // pods on the node's network (tests on one node use loopback)
	StorageClass string // "" = the cluster's default class
	VolumeSize   string // per replica, default 50Gi
	LoRADir      string // Scope's LoRA dir on the volume, default /workspace/models/lora
	// Env is Scope's plain environment (the same as on a RunPod pod: deploy.PodSpec.PodEnv).
	Env map[string]string
	// SecretEnv (HF_TOKEN, the agent token) goes into the Secret NAME-secrets and reaches
	// the containers through secretKeyRef: never into a manifest.
	SecretEnv       map[string]secret.Secret
	ImagePullPolicy corev1.PullPolicy // "" = the cluster's default for the tag
	Tag             string            // scopectl request id, an annotation
	// Limits are the replicas' idle stop and max hours: in the containers' env (the same
	// names as on a RunPod pod, provider.EnvIdleStop …), enforced by the guard container,
	// which runs beside the agent sidecar and scales the StatefulSet to zero.
	Limits provider.Limits
}

// Guarded says whether s runs the guard: it comes with the agent sidecar (same image).
func (s ScopeSpec) Guarded() bool { return s.AgentImage != "-" }

// GuardAccount names the ServiceAccount, Role and RoleBinding of s's guard: it may get
// and patch s's StatefulSet (and its scale), that one object only.
func (s ScopeSpec) GuardAccount() string { return s.Name + "-guard" }

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// Normalize fills defaults and checks s. Errors never contain secret values.
func (s ScopeSpec) Normalize() (ScopeSpec, error) {
	if s.Name == "" {
		s.Name = DefaultName
	}
	if len(s.Name) > 50 || !dnsLabel.MatchString(s.Name) {
		return s, fmt.Errorf("kubernetes: name %q: want lowercase letters, digits and '-', at most 50 characters", s.Name)
	}
	if s.Replicas < 0 {
		return s, fmt.Errorf("kubernetes: --replicas %d: must be 0 or more", s.Replicas)
	}
	if s.Image == "" {
		s.Image = DefaultImage
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
	if s.VolumeSize == "" {
		s.VolumeSize = DefaultVolumeSize
	}
	if _, err := resource.ParseQuantity(s.VolumeSize); err != nil {
		return s, fmt.Errorf("kubernetes: volume size %q: want a quantity such as 50Gi", s.VolumeSize)
	}
	if s.LoRADir == "" {
		s.LoRADir = DefaultLoRADir
	}
	if !strings.HasPrefix(s.LoRADir, Workspace+"/") {
		return s, fmt.Errorf("kubernetes: LoRA dir %q is not under %s, the replica's volume", s.LoRADir, Workspace)
	}
	for k := range s.Env {
		if _, ok := s.SecretEnv[k]; ok {
			return s, fmt.Errorf("kubernetes: env %s is set both plainly and as a secret", k)
		}
	}
	if s.Limits == (provider.Limits{}) {
		// Limits given as env (a provider.CreateSpec's, as on RunPod) are the guard's too.
		if l, ok := provider.LimitsFromEnv(s.Env); ok {
			if l.Problem != "" {
				return s, fmt.Errorf("kubernetes: env %s", l.Problem)
			}
			l.FromPod = false
			s.Limits = l
		}
	}
	switch s.ImagePullPolicy {
	case "", corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		return s, fmt.Errorf("kubernetes: image pull policy %q: want Always, IfNotPresent or Never", s.ImagePullPolicy)
	}
	return s, nil
}

// SecretName is the Secret holding s's secret environment.
func (s ScopeSpec) SecretName() string { return s.Name + "-secrets" }

func (s ScopeSpec) labels() map[string]string {
	return map[string]string{LabelName: "scope", LabelInstance: s.Name, LabelManagedBy: FieldManager}
}

// Selector is the label selector of s's pods.
func (s ScopeSpec) Selector() string { return LabelName + "=scope," + LabelInstance + "=" + s.Name }

// Objects is what Apply applies, in order (s normalized): the Secret (only when s has
// secret env), the guard's ServiceAccount, Role and RoleBinding (only with the guard),
// the Service, the StatefulSet.
type Objects struct {
	Secret         *coreac.SecretApplyConfiguration // nil without secret env
	ServiceAccount *coreac.ServiceAccountApplyConfiguration
	Role           *rbacac.RoleApplyConfiguration
	RoleBinding    *rbacac.RoleBindingApplyConfiguration
	Service        *coreac.ServiceApplyConfiguration
	StatefulSet    *appsac.StatefulSetApplyConfiguration
}

// Build returns the apply configurations of s in namespace ns. s must be normalized.
// Only the fields scopectl sets are in them, so server-side apply owns only those.
func (s ScopeSpec) Build(ns string) Objects {
	var o Objects
	lbl := s.labels()
	secretKeys := slices.Sorted(maps.Keys(s.SecretEnv))
	if len(secretKeys) > 0 {
		data := map[string][]byte{}
		for _, k := range secretKeys {
			data[k] = []byte(s.SecretEnv[k].Reveal())
		}
		o.Secret = coreac.Secret(s.SecretName(), ns).WithLabels(lbl).WithType(corev1.SecretTypeOpaque).WithData(data)
	}
	o.Service = coreac.Service(s.Name, ns).WithLabels(lbl).WithSpec(coreac.ServiceSpec().
		WithClusterIP(corev1.ClusterIPNone). // headless: one DNS name per replica (scope-0.scope…)
		WithSelector(map[string]string{LabelName: "scope", LabelInstance: s.Name}).
		WithPublishNotReadyAddresses(true).
		WithPorts(
			coreac.ServicePort().WithName("scope").WithPort(ScopePort).WithTargetPort(intstr.FromString("scope")),
			coreac.ServicePort().WithName("agent").WithPort(AgentPort).WithTargetPort(intstr.FromString("agent")),
		))

	plain := maps.Clone(s.Env)
	var limitEnv []*coreac.EnvVarApplyConfiguration
	if s.Guarded() {
		if plain == nil {
			plain = map[string]string{}
		}
		le := s.Limits.Env()
		for _, k := range slices.Sorted(maps.Keys(le)) {
			plain[k] = le[k] // the limits travel with the pod: pod ls reads them from Scope's env
			limitEnv = append(limitEnv, coreac.EnvVar().WithName(k).WithValue(le[k]))
		}
		o.ServiceAccount, o.Role, o.RoleBinding = s.guardRBAC(ns, lbl)
	}
	env := make([]*coreac.EnvVarApplyConfiguration, 0, len(plain)+len(secretKeys))
	for _, k := range slices.Sorted(maps.Keys(plain)) {
		env = append(env, coreac.EnvVar().WithName(k).WithValue(plain[k]))
	}
	for _, k := range secretKeys {
		if k == SecretAgentToken {
			continue // the agent's, not Scope's
		}
		env = append(env, secretEnv(k, s.SecretName()))
	}
	mount := coreac.VolumeMount().WithName("workspace").WithMountPath(Workspace)
	scope := coreac.Container().WithName("scope").WithImage(s.Image).
		WithPorts(coreac.ContainerPort().WithName("scope").WithContainerPort(ScopePort).WithProtocol(corev1.ProtocolTCP)).
		WithEnv(env...).
		WithVolumeMounts(mount).
		WithReadinessProbe(coreac.Probe().WithHTTPGet(coreac.HTTPGetAction().WithPath("/health").WithPort(intstr.FromString("scope"))).
			WithPeriodSeconds(5).WithFailureThreshold(3))
	if s.GPUCount > 0 {
		scope.WithResources(coreac.ResourceRequirements().WithLimits(corev1.ResourceList{
			corev1.ResourceName(s.GPUResource): *resource.NewQuantity(s.GPUCount, resource.DecimalSI),
		}))
	}
	if s.ImagePullPolicy != "" {
		scope.WithImagePullPolicy(s.ImagePullPolicy)
	}
	pod := coreac.PodSpec().WithContainers(scope)
	if s.AgentImage != "-" {
		agent := coreac.Container().WithName("agent").WithImage(s.AgentImage).
			WithCommand("scopectl", "agent", "--dir", s.LoRADir, "--listen", ":"+strconv.Itoa(AgentPort)).
			WithPorts(coreac.ContainerPort().WithName("agent").WithContainerPort(AgentPort).WithProtocol(corev1.ProtocolTCP)).
			WithVolumeMounts(mount)
		if _, ok := s.SecretEnv[SecretAgentToken]; ok {
			agent.WithEnv(secretEnv(SecretAgentToken, s.SecretName()))
		}
		if s.ImagePullPolicy != "" {
			agent.WithImagePullPolicy(s.ImagePullPolicy)
		}
		pod.WithContainers(agent)
		fieldEnv := func(name, path string) *coreac.EnvVarApplyConfiguration {
			return coreac.EnvVar().WithName(name).WithValueFrom(coreac.EnvVarSource().WithFieldRef(coreac.ObjectFieldSelector().WithFieldPath(path)))
		}
		g := coreac.Container().WithName(GuardContainer).WithImage(s.AgentImage).
			WithCommand("scopectl", "guard", "--statefulset", s.Name, "--dir", GuardDir,
				"--scope-url", "http://127.0.0.1:"+strconv.Itoa(ScopePort)).
			WithEnv(append(limitEnv, fieldEnv(EnvPodNamespace, "metadata.namespace"), fieldEnv(EnvPodName, "metadata.name"))...).
			WithVolumeMounts(mount)
		if s.ImagePullPolicy != "" {
			g.WithImagePullPolicy(s.ImagePullPolicy)
		}
		pod.WithContainers(g).WithServiceAccountName(s.GuardAccount())
	}
	place(pod, s.NodeSelector, s.Tolerations)
	if s.HostNetwork {
		pod.WithHostNetwork(true).WithDNSPolicy(corev1.DNSClusterFirstWithHostNet)
	}
	tmpl := coreac.PodTemplateSpec().WithLabels(lbl).WithSpec(pod)
	if len(secretKeys) > 0 {
		tmpl.WithAnnotations(map[string]string{AnnoSecretHash: secretHash(s.SecretEnv)})
	}
	pvcSpec := coreac.PersistentVolumeClaimSpec().
		WithAccessModes(corev1.ReadWriteOnce).
		WithResources(coreac.VolumeResourceRequirements().WithRequests(corev1.ResourceList{
			corev1.ResourceStorage: resource.MustParse(s.VolumeSize),
		}))
	if s.StorageClass != "" {
		pvcSpec.WithStorageClassName(s.StorageClass)
	}
	sts := appsac.StatefulSet(s.Name, ns).WithLabels(lbl).
		WithSpec(appsac.StatefulSetSpec().
			WithReplicas(s.Replicas).
			WithServiceName(s.Name).
			WithPodManagementPolicy(appsv1.ParallelPodManagement). // replicas start side by side
			WithSelector(metaac.LabelSelector().WithMatchLabels(map[string]string{LabelName: "scope", LabelInstance: s.Name})).
			WithTemplate(tmpl).
			WithVolumeClaimTemplates((&coreac.PersistentVolumeClaimApplyConfiguration{}).WithName("workspace").WithLabels(lbl).WithSpec(pvcSpec)))
	if s.Tag != "" {
		sts.WithAnnotations(map[string]string{AnnoTag: s.Tag})
	}
	o.StatefulSet = sts
	return o
}

func secretEnv(key, secretName string) *coreac.EnvVarApplyConfiguration {
	return coreac.EnvVar().WithName(key).WithValueFrom(coreac.EnvVarSource().WithSecretKeyRef(
		coreac.SecretKeySelector().WithName(secretName).WithKey(key)))
}

func secretHash(env map[string]secret.Secret) string {
	h := sha256.New()
	h.Write([]byte("scopectl-k8s-secret-v1\x00"))
	for _, k := range slices.Sorted(maps.Keys(env)) {
		h.Write([]byte(k + "\x00" + env[k].Reveal() + "\x00"))
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// guardRBAC is the least the guard needs: get and patch of s's StatefulSet and of its
// scale subresource, named by resourceNames (no other StatefulSet, nothing else).
func (s ScopeSpec) guardRBAC(ns string, lbl map[string]string) (*coreac.ServiceAccountApplyConfiguration, *rbacac.RoleApplyConfiguration, *rbacac.RoleBindingApplyConfiguration) {
	n := s.GuardAccount()
	sa := coreac.ServiceAccount(n, ns).WithLabels(lbl)
	role := rbacac.Role(n, ns).WithLabels(lbl).WithRules(
		rbacac.PolicyRule().WithAPIGroups("apps").WithResources("statefulsets", "statefulsets/scale").
			WithResourceNames(s.Name).WithVerbs("get", "patch"))
	rb := rbacac.RoleBinding(n, ns).WithLabels(lbl).
		WithRoleRef(rbacac.RoleRef().WithAPIGroup("rbac.authorization.k8s.io").WithKind("Role").WithName(n)).
		WithSubjects(rbacac.Subject().WithKind("ServiceAccount").WithName(n).WithNamespace(ns))
	return sa, role, rb
}

// YAML renders the manifests as a multi-document YAML stream for --dry-run -o yaml.
// The Secret is never printed: a comment names it and its keys instead.
func (o Objects) YAML() ([]byte, error) {
	objs := []any{}
	if o.ServiceAccount != nil {
		objs = append(objs, o.ServiceAccount, o.Role, o.RoleBinding)
	}
	return manifestYAML(o.Secret, append(objs, o.Service, o.StatefulSet)...)
}

// manifestYAML prints objs as a YAML stream, with a comment naming the Secret's keys
// in place of the Secret itself: its values are never printed.
func manifestYAML(sec *coreac.SecretApplyConfiguration, objs ...any) ([]byte, error) {
	var b bytes.Buffer
	if sec != nil {
		keys := slices.Sorted(maps.Keys(sec.Data))
		fmt.Fprintf(&b, "# Secret %s/%s (keys %s) is applied too; its values are never printed\n",
			*sec.Namespace, *sec.Name, strings.Join(keys, ", "))
	}
	for i, obj := range objs {
		if i > 0 {
			b.WriteString("---\n")
		}
		y, err := yaml.Marshal(obj)
		if err != nil {
			return nil, err
		}
		b.Write(y)
	}
	return b.Bytes(), nil
}

// ParseGPU reads --gpu RESOURCE=COUNT (nvidia.com/gpu=1); a bare number is a count of
// nvidia.com/gpu, a bare resource name one of it.
func ParseGPU(v string) (string, int64, error) {
	if v == "" {
		return DefaultGPUResource, 1, nil
	}
	name, count, ok := strings.Cut(v, "=")
	if !ok {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			return DefaultGPUResource, n, nil
		}
		count = "1"
	}
	if name == "" {
		name = DefaultGPUResource
	}
	n, err := strconv.ParseInt(count, 10, 64)
	if err != nil || n < 0 {
		return "", 0, fmt.Errorf("kubernetes: --gpu %q: want RESOURCE=COUNT, e.g. nvidia.com/gpu=1", v)
	}
	return name, n, nil
}

// ParseToleration reads KEY[=VALUE][:EFFECT] (no value: operator Exists; no effect:
// every effect), or "*" to tolerate every taint.
func ParseToleration(v string) (corev1.Toleration, error) {
	var t corev1.Toleration
	if v == "*" {
		t.Operator = corev1.TolerationOpExists
		return t, nil
	}
	kv, eff, _ := strings.Cut(v, ":")
	k, val, hasVal := strings.Cut(kv, "=")
	if k == "" {
		return t, fmt.Errorf("kubernetes: --toleration %q: want KEY[=VALUE][:EFFECT]", v)
	}
	t.Key = k
	if hasVal {
		t.Operator, t.Value = corev1.TolerationOpEqual, val
	} else {
		t.Operator = corev1.TolerationOpExists
	}
	switch corev1.TaintEffect(eff) {
	case "", corev1.TaintEffectNoSchedule, corev1.TaintEffectPreferNoSchedule, corev1.TaintEffectNoExecute:
		t.Effect = corev1.TaintEffect(eff)
	default:
		return t, fmt.Errorf("kubernetes: --toleration %q: effect must be NoSchedule, PreferNoSchedule or NoExecute", v)
	}
	return t, nil
}

// place puts a pod on the nodes chosen by selector and tolerations (GPU nodes are often
// labelled and tainted), the same for Scope's StatefulSet and a training Job.
func place(pod *coreac.PodSpecApplyConfiguration, selector map[string]string, tolerations []corev1.Toleration) {
	if len(selector) > 0 {
		pod.WithNodeSelector(selector)
	}
	for _, t := range tolerations {
		tc := coreac.Toleration().WithOperator(t.Operator)
		if t.Key != "" {
			tc.WithKey(t.Key)
		}
		if t.Value != "" {
			tc.WithValue(t.Value)
		}
		if t.Effect != "" {
			tc.WithEffect(t.Effect)
		}
		pod.WithTolerations(tc)
	}
}
