package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sort"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	appsac "k8s.io/client-go/applyconfigurations/apps/v1"

	"github.com/daydreamlive/scopectl/internal/provider"
)

// Client is a provider.Provider: a pod is a Scope StatefulSet, its id the StatefulSet's name.
var _ provider.Provider = (*Client)(nil)

// managedSelector picks what scopectl applied.
const managedSelector = LabelManagedBy + "=" + FieldManager + "," + LabelName + "=scope"

// List returns scopectl's Scope deployments in the namespace.
func (c *Client) List(ctx context.Context) ([]provider.Pod, error) {
	ds, err := c.Deployments(ctx, "")
	if err != nil {
		return nil, err
	}
	out := make([]provider.Pod, len(ds))
	for i, d := range ds {
		out[i] = d.Pod
	}
	return out, nil
}

// Deployment is a Scope deployment with the guard's last stop recorded on its
// StatefulSet (nil: none), for the cost ledger.
type Deployment struct {
	provider.Pod
	GuardStop *Stop
}

// Stop is a stop recorded on a StatefulSet: by whom, why, when.
type Stop struct {
	By     string    `json:"by"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// Deployments lists scopectl's Scope deployments in the namespace (name ""), or reads
// deployment name (provider.ErrNotFound), each with the guard's last stop.
func (c *Client) Deployments(ctx context.Context, name string) ([]Deployment, error) {
	var items []appsv1.StatefulSet
	if name != "" {
		sts, err := c.CS.AppsV1().StatefulSets(c.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, c.explain(err, "get statefulset "+name)
		}
		items = []appsv1.StatefulSet{*sts}
	} else {
		l, err := c.CS.AppsV1().StatefulSets(c.Namespace).List(ctx, metav1.ListOptions{LabelSelector: managedSelector})
		if err != nil {
			return nil, c.explain(err, "list statefulsets")
		}
		items = l.Items
	}
	out := make([]Deployment, 0, len(items))
	for i := range items {
		d := Deployment{Pod: c.podOf(&items[i])}
		if by, why, at := LastStop(items[i].Annotations); by != "" && !at.IsZero() {
			d.GuardStop = &Stop{By: by, Reason: why, At: at}
		}
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Get returns the deployment name. provider.ErrNotFound.
func (c *Client) Get(ctx context.Context, name string) (*provider.Pod, error) {
	sts, err := c.CS.AppsV1().StatefulSets(c.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, c.explain(err, "get statefulset "+name)
	}
	p := c.podOf(sts)
	return &p, nil
}

// podOf maps a StatefulSet to a provider.Pod: RUNNING while it wants replicas (Detail
// says how many are ready), EXITED when scaled to zero.
func (c *Client) podOf(sts *appsv1.StatefulSet) provider.Pod {
	want := int32(1)
	if sts.Spec.Replicas != nil {
		want = *sts.Spec.Replicas
	}
	p := provider.Pod{ID: sts.Name, Name: sts.Name, Status: provider.StatusRunning,
		CreatedAt: sts.CreationTimestamp.Time, Tag: sts.Annotations[AnnoTag]}
	if at, err := time.Parse(time.RFC3339, sts.Annotations[AnnoStartedAt]); err == nil {
		p.StartedAt = at // when scopectl last started it; unknown otherwise
	}
	if want == 0 {
		p.Status = provider.StatusExited
	}
	if sts.DeletionTimestamp != nil {
		p.Status = provider.StatusTerminated
	}
	p.Detail = fmt.Sprintf("%d/%d replicas ready in %s", sts.Status.ReadyReplicas, want, c.Target())
	if by, why, at := LastStop(sts.Annotations); by != "" {
		p.Detail += fmt.Sprintf("; last stop %s by %s: %s", at.Local().Format(time.DateTime), by, why)
	}
	for _, ct := range sts.Spec.Template.Spec.Containers {
		if ct.Name != "scope" {
			continue
		}
		p.Image = ct.Image
		p.Env = map[string]string{}
		for _, e := range ct.Env {
			if e.ValueFrom != nil {
				p.Env[e.Name] = provider.SecretValue
			} else {
				p.Env[e.Name] = e.Value
			}
		}
		p.Env = provider.MaskEnv(p.Env, nil, nil)
		for name, q := range ct.Resources.Limits {
			if name == corev1.ResourceCPU || name == corev1.ResourceMemory {
				continue
			}
			p.GPUType = string(name)
			p.GPUCount = int(q.Value()) * int(want)
		}
	}
	for _, t := range sts.Spec.VolumeClaimTemplates {
		if q, ok := t.Spec.Resources.Requests[corev1.ResourceStorage]; ok {
			p.VolumeGB = int(q.Value() / (1 << 30))
		}
	}
	return p
}

// Replicas returns the pods of deployment name as replicas (status shows each).
func (c *Client) Replicas(ctx context.Context, name string) ([]Replica, error) {
	pl, err := c.CS.CoreV1().Pods(c.Namespace).List(ctx, metav1.ListOptions{LabelSelector: ScopeSpec{Name: name}.Selector()})
	if err != nil {
		return nil, c.explain(err, "list pods of "+name)
	}
	sort.Slice(pl.Items, func(i, j int) bool { return pl.Items[i].Name < pl.Items[j].Name })
	out := make([]Replica, 0, len(pl.Items))
	for i := range pl.Items {
		r := replicaOf(&pl.Items[i])
		if !r.Ready && r.Phase == string(corev1.PodPending) && !r.Fatal {
			if why := c.schedulerReason(ctx, r.Name); why != "" {
				r.Reason = why
			}
		}
		out = append(out, r)
	}
	return out, nil
}

// scale sets the replicas scopectl's apply owns, keeping every other field scopectl
// owns as it is (ExtractStatefulSet reads back exactly scopectl's fields; applying less
// would give the others up). stopped is the count to remember for Start, or -1 to forget it.
func (c *Client) scale(ctx context.Context, name string, replicas int32, stopped int32, force bool, extra ...map[string]string) error {
	sets := c.CS.AppsV1().StatefulSets(c.Namespace)
	sts, err := sets.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return c.explain(err, "get statefulset "+name)
	}
	ac, err := appsac.ExtractStatefulSet(sts, FieldManager)
	if err != nil {
		return fmt.Errorf("kubernetes: statefulset %s: %w", name, err)
	}
	if ac.Spec == nil || ac.Spec.Template == nil {
		return fmt.Errorf("kubernetes: statefulset %s was not deployed by scopectl (no fields of field manager %q)", name, FieldManager)
	}
	ac.Spec.WithReplicas(replicas)
	anno := map[string]string{}
	for k, v := range ac.Annotations {
		anno[k] = v
	}
	delete(anno, AnnoStoppedReplicas)
	for _, m := range extra {
		maps.Copy(anno, m)
	}
	if stopped >= 0 {
		anno[AnnoStoppedReplicas] = strconv.Itoa(int(stopped))
	}
	ac.Annotations = nil
	if len(anno) > 0 {
		ac.WithAnnotations(anno)
	}
	if _, err := sets.Apply(ctx, ac, metav1.ApplyOptions{FieldManager: FieldManager, Force: force}); err != nil {
		return c.explain(err, "scale statefulset "+name)
	}
	return nil
}

// replicas is the StatefulSet's spec.replicas (1 when unset, as Kubernetes defaults it).
func (c *Client) replicas(ctx context.Context, name string) (int32, error) {
	sts, err := c.CS.AppsV1().StatefulSets(c.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return 0, c.explain(err, "get statefulset "+name)
	}
	if sts.Spec.Replicas != nil {
		return *sts.Spec.Replicas, nil
	}
	return 1, nil
}

// Stop scales the deployment to zero: GPUs are released, the volumes stay.
func (c *Client) Stop(ctx context.Context, name string) error {
	cur, err := c.replicas(ctx, name)
	if err != nil {
		return err
	}
	if cur == 0 {
		return nil
	}
	return c.scale(ctx, name, 0, cur, false)
}

// GuardStop is the on-pod guard's stop of deployment name: it scales it to zero as Stop
// does (Start restores the replicas) and records by whom, why and when in annotations
// (AnnoStoppedBy, AnnoStopReason, AnnoStoppedAt), which pod get shows as the last stop.
// It needs only get and patch of that StatefulSet (the guard's Role). It takes over
// spec.replicas if another manager (kubectl scale) holds it: the guard must be able to stop.
func (c *Client) GuardStop(ctx context.Context, name, by, reason string, at time.Time) error {
	cur, err := c.replicas(ctx, name)
	if err != nil {
		return err
	}
	if cur == 0 {
		return nil // stopped already (pod stop, or another replica's guard)
	}
	if len(reason) > 1000 {
		reason = reason[:1000]
	}
	return c.scale(ctx, name, 0, cur, true, map[string]string{
		AnnoStoppedBy: by, AnnoStopReason: reason, AnnoStoppedAt: at.UTC().Format(time.RFC3339)})
}

// LastStop reads the guard's last stop from a StatefulSet's annotations ("" when none).
func LastStop(anno map[string]string) (by, reason string, at time.Time) {
	by, reason = anno[AnnoStoppedBy], anno[AnnoStopReason]
	at, _ = time.Parse(time.RFC3339, anno[AnnoStoppedAt])
	return by, reason, at
}

// Start scales a stopped deployment back to the replicas it had (1 if unknown).
func (c *Client) Start(ctx context.Context, name string) error {
	sts, err := c.CS.AppsV1().StatefulSets(c.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return c.explain(err, "get statefulset "+name)
	}
	if sts.Spec.Replicas != nil && *sts.Spec.Replicas > 0 {
		return nil
	}
	n := int32(1)
	if v, err := strconv.Atoi(sts.Annotations[AnnoStoppedReplicas]); err == nil && v > 0 {
		n = int32(v)
	}
	return c.scale(ctx, name, n, -1, false, map[string]string{AnnoStartedAt: time.Now().UTC().Format(time.RFC3339)})
}

// Terminate deletes the deployment: its StatefulSet (and so its pods), Service, Secret
// and volume claims (models and LoRAs on them are gone). A training Job's name deletes
// the Job, its Secret and its workspace claim (checkpoints not yet collected go too).
func (c *Client) Terminate(ctx context.Context, name string) error {
	bg := metav1.DeletePropagationBackground
	err := c.CS.AppsV1().StatefulSets(c.Namespace).Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: &bg})
	if apierrors.IsNotFound(err) {
		// A training Job of train run: it, its Secret and its workspace claim.
		if j, jerr := c.CS.BatchV1().Jobs(c.Namespace).Get(ctx, name, metav1.GetOptions{}); jerr == nil && j.Labels[LabelName] == "scope-train" {
			return c.DeleteJob(ctx, name, true)
		}
	}
	if err != nil {
		return c.explain(err, "delete statefulset "+name)
	}
	s := ScopeSpec{Name: name}
	for _, del := range []struct {
		what string
		fn   func() error
	}{
		{"service " + name, func() error {
			return c.CS.CoreV1().Services(c.Namespace).Delete(ctx, name, metav1.DeleteOptions{})
		}},
		{"secret " + s.SecretName(), func() error {
			return c.CS.CoreV1().Secrets(c.Namespace).Delete(ctx, s.SecretName(), metav1.DeleteOptions{})
		}},
		{"rolebinding " + s.GuardAccount(), func() error {
			return c.CS.RbacV1().RoleBindings(c.Namespace).Delete(ctx, s.GuardAccount(), metav1.DeleteOptions{})
		}},
		{"role " + s.GuardAccount(), func() error {
			return c.CS.RbacV1().Roles(c.Namespace).Delete(ctx, s.GuardAccount(), metav1.DeleteOptions{})
		}},
		{"serviceaccount " + s.GuardAccount(), func() error {
			return c.CS.CoreV1().ServiceAccounts(c.Namespace).Delete(ctx, s.GuardAccount(), metav1.DeleteOptions{})
		}},
		{"volume claims of " + name, func() error {
			return c.CS.CoreV1().PersistentVolumeClaims(c.Namespace).DeleteCollection(ctx, metav1.DeleteOptions{},
				metav1.ListOptions{LabelSelector: s.Selector() + "," + LabelManagedBy + "=" + FieldManager})
		}},
	} {
		if err := del.fn(); err != nil && !apierrors.IsNotFound(err) {
			return c.explain(err, "delete "+del.what)
		}
	}
	return nil
}

// Create deploys a one-replica Scope from a provider.CreateSpec (image, env, GPU
// count); deploy --provider kubernetes says much more.
func (c *Client) Create(ctx context.Context, spec provider.CreateSpec) (*provider.Pod, error) {
	name := spec.Name
	if name == "" {
		name = DefaultName
	}
	s := ScopeSpec{Name: name, Replicas: 1, Image: spec.Image, GPUCount: int64(max(spec.GPUCount, 1)),
		Env: spec.Env, SecretEnv: spec.SecretEnv, Tag: spec.RequestID}
	if spec.VolumeGB > 0 {
		s.VolumeSize = strconv.Itoa(spec.VolumeGB) + "Gi"
	}
	if _, err := c.Apply(ctx, s, ApplyOptions{}); err != nil {
		return nil, err
	}
	return c.Get(ctx, name)
}

// Update is not how a Kubernetes deployment changes: deploy --provider kubernetes
// applies the whole spec, and server-side apply changes only what differs.
func (c *Client) Update(ctx context.Context, id string, spec provider.UpdateSpec, dryRun bool) ([]provider.Change, error) {
	return nil, errors.New("kubernetes: run deploy --provider kubernetes again with the new settings: server-side apply changes only what differs")
}

// GPUTypes lists the extended resources the nodes offer (nvidia.com/gpu …) with the
// count allocatable across the cluster; no prices (the cluster is yours).
func (c *Client) GPUTypes(ctx context.Context) ([]provider.GPUType, error) {
	nodes, err := c.CS.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, c.explain(err, "list nodes")
	}
	count := map[string]int64{}
	for _, n := range nodes.Items {
		for name, q := range n.Status.Allocatable {
			if isGPUResource(string(name)) {
				count[string(name)] += q.Value()
			}
		}
	}
	var out []provider.GPUType
	for name, n := range count {
		out = append(out, provider.GPUType{ID: name, Name: fmt.Sprintf("%s (%d allocatable)", name, n), Available: n > 0})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func isGPUResource(name string) bool {
	switch name {
	case "nvidia.com/gpu", "amd.com/gpu", "gpu.intel.com/i915", "gpu.intel.com/xe":
		return true
	}
	return len(name) > 4 && name[len(name)-4:] == "/gpu"
}
