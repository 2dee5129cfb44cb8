package kubernetes

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
)

// Replica is one pod of a deployment as scopectl reports it.
type Replica struct {
	Name     string        `json:"name"`
	Phase    string        `json:"phase"` // Pending | Running | Succeeded | Failed | Unknown
	Ready    bool          `json:"ready"`
	Node     string        `json:"node,omitempty"`
	IP       string        `json:"ip,omitempty"`
	Restarts int32         `json:"restarts"`
	Reason   string        `json:"reason,omitempty"`   // why it is not ready, one line
	ReadyIn  time.Duration `json:"ready_in,omitempty"` // WaitReady: from its start to ready
	Fatal    bool          `json:"-"`                  // waiting will not cure it (an image that cannot be pulled)
}

// WaitOptions tune WaitReady.
type WaitOptions struct {
	// Progress is called with each replica whenever what scopectl knows of it changes.
	Progress func(Replica)
	// Events: read the scheduler's events for a Pending pod's reason (on by default
	// in the CLI; a Role without events rights then falls back to the pod's condition).
	Events bool
}

// WaitReady watches the StatefulSet name and its pods until every wanted replica is
// ready, the context ends (the error then names each replica that is not, with the
// scheduler's reason for a Pending one), or a replica fails in a way waiting cannot
// cure (an image that cannot be pulled, a crash loop): then at once. It returns the
// replicas, with the time each took from the start of the wait to ready.
func (c *Client) WaitReady(ctx context.Context, name string, opt WaitOptions) ([]Replica, error) {
	start := time.Now()
	sets := c.CS.AppsV1().StatefulSets(c.Namespace)
	pods := c.CS.CoreV1().Pods(c.Namespace)
	sel := ScopeSpec{Name: name}.Selector()
	readyAt := map[string]time.Duration{}
	last := map[string]Replica{}
	reasons := map[string]string{} // scheduler events, by pod
	var lastReps []Replica
	var lastSts *appsv1.StatefulSet
	timedOut := func() error {
		return fmt.Errorf("kubernetes: %s: %w after %s: %s", name, ErrNotReady, time.Since(start).Round(time.Second), notReadyText(lastReps, lastSts))
	}
	for {
		sts, err := sets.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			if ctx.Err() != nil && lastSts != nil {
				return lastReps, timedOut()
			}
			return nil, c.explain(err, "statefulset "+name)
		}
		pl, err := pods.List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err != nil {
			if ctx.Err() != nil && lastSts != nil {
				return lastReps, timedOut()
			}
			return nil, c.explain(err, "list pods of "+name)
		}
		reps, done := c.evaluate(ctx, sts, pl.Items, start, readyAt, reasons, opt.Events)
		for _, r := range reps {
			if last[r.Name] != r && opt.Progress != nil {
				opt.Progress(r)
			}
			last[r.Name] = r
			if r.Fatal {
				return reps, fmt.Errorf("kubernetes: %s: %w: %s", name, ErrNotReady, r.Reason)
			}
		}
		if done {
			return reps, nil
		}
		lastReps, lastSts = reps, sts
		// Watch both from what was just read; any event re-reads the whole picture.
		ws, err := sets.Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String(), ResourceVersion: sts.ResourceVersion})
		if err != nil {
			return reps, c.explain(err, "watch statefulset "+name)
		}
		wp, err := pods.Watch(ctx, metav1.ListOptions{LabelSelector: sel, ResourceVersion: pl.ResourceVersion})
		if err != nil {
			ws.Stop()
			return reps, c.explain(err, "watch pods of "+name)
		}
		tick := time.NewTimer(10 * time.Second) // events arrive on their own; re-read now and then
		var werr error
		select {
		case <-ctx.Done():
			werr = ctx.Err()
		case <-ws.ResultChan():
		case <-wp.ResultChan():
		case <-tick.C:
		}
		tick.Stop()
		ws.Stop()
		wp.Stop()
		if werr != nil {
			return reps, timedOut()
		}
	}
}

// notReadyText says which replicas are not ready and why, on one line.
func notReadyText(reps []Replica, sts *appsv1.StatefulSet) string {
	want := int32(1)
	if sts.Spec.Replicas != nil {
		want = *sts.Spec.Replicas
	}
	var parts []string
	ready := 0
	for _, r := range reps {
		if r.Ready {
			ready++
			continue
		}
		why := r.Reason
		if why == "" {
			why = r.Phase
		}
		parts = append(parts, r.Name+": "+why)
	}
	if missing := int(want) - len(reps); missing > 0 {
		parts = append(parts, fmt.Sprintf("%d replica(s) have no pod yet (is the StatefulSet controller running?)", missing))
	}
	return fmt.Sprintf("%d/%d ready; %s", ready, want, strings.Join(parts, "; "))
}

// evaluate turns the StatefulSet and its pods into replicas; done when all wanted are
// ready and the StatefulSet has caught up with its spec.
func (c *Client) evaluate(ctx context.Context, sts *appsv1.StatefulSet, pods []corev1.Pod, start time.Time, readyAt map[string]time.Duration, reasons map[string]string, events bool) ([]Replica, bool) {
	want := int32(1)
	if sts.Spec.Replicas != nil {
		want = *sts.Spec.Replicas
	}
	var reps []Replica
	ready := int32(0)
	sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })
	for i := range pods {
		p := &pods[i]
		if p.DeletionTimestamp != nil {
			continue
		}
		r := replicaOf(p)
		if r.Ready {
			ready++
			if _, ok := readyAt[r.Name]; !ok {
				readyAt[r.Name] = time.Since(start)
			}
			r.ReadyIn = readyAt[r.Name]
		} else if r.Phase == string(corev1.PodPending) && events && !strings.HasPrefix(r.Reason, "image") {
			if why := c.schedulerReason(ctx, p.Name); why != "" {
				reasons[p.Name] = why
			}
			if why := reasons[p.Name]; why != "" {
				r.Reason = why
			}
		}
		reps = append(reps, r)
	}
	done := ready >= want && int32(len(reps)) >= want &&
		sts.Status.ObservedGeneration >= sts.Generation && sts.Status.ReadyReplicas >= want
	return reps, done
}

// replicaOf reads one pod's state and, when it is not ready, the most telling reason.
func replicaOf(p *corev1.Pod) Replica {
	r := Replica{Name: p.Name, Phase: string(p.Status.Phase), Node: p.Spec.NodeName, IP: p.Status.PodIP}
	if r.Phase == "" {
		r.Phase = string(corev1.PodPending)
	}
	for _, cond := range p.Status.Conditions {
		switch {
		case cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue:
			r.Ready = true
		case cond.Type == corev1.PodScheduled && cond.Status == corev1.ConditionFalse && cond.Message != "":
			r.Reason = "unschedulable: " + oneLineText(cond.Message)
		}
	}
	statuses := slices.Concat(p.Status.InitContainerStatuses, p.Status.ContainerStatuses)
	for _, cs := range statuses {
		r.Restarts += cs.RestartCount
		w := cs.State.Waiting
		if w == nil {
			if t := cs.State.Terminated; t != nil && !r.Ready && r.Reason == "" {
				r.Reason = fmt.Sprintf("container %s exited %d (%s)", cs.Name, t.ExitCode, t.Reason)
			}
			continue
		}
		switch w.Reason {
		case "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull":
			r.Reason = fmt.Sprintf("image %s of container %s cannot be pulled: %s", cs.Image, cs.Name, oneLineText(cmpOr(w.Message, w.Reason)))
			r.Fatal = true
		case "CrashLoopBackOff", "CreateContainerConfigError", "CreateContainerError":
			r.Reason = fmt.Sprintf("container %s: %s: %s", cs.Name, w.Reason, oneLineText(w.Message))
			r.Fatal = true
		default:
			if r.Reason == "" && w.Reason != "" {
				r.Reason = "container " + cs.Name + ": " + w.Reason
			}
		}
	}
	return r
}

// schedulerReason is the message of the latest FailedScheduling event of pod, or "".
// A Role without events rights gets "" (the pod's condition says much the same).
func (c *Client) schedulerReason(ctx context.Context, pod string) string {
	sel := fields.AndSelectors(
		fields.OneTermEqualSelector("involvedObject.kind", "Pod"),
		fields.OneTermEqualSelector("involvedObject.name", pod),
	).String()
	evs, err := c.CS.CoreV1().Events(c.Namespace).List(ctx, metav1.ListOptions{FieldSelector: sel})
	if err != nil {
		return ""
	}
	var best *corev1.Event
	for i := range evs.Items {
		e := &evs.Items[i]
		if e.Reason != "FailedScheduling" {
			continue
		}
		if best == nil || eventTime(e).After(eventTime(best)) {
			best = e
		}
	}
	if best == nil {
		return ""
	}
	return "unschedulable: " + oneLineText(best.Message)
}

func eventTime(e *corev1.Event) time.Time {
	switch {
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	}
	return e.CreationTimestamp.Time
}

func oneLineText(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = strings.TrimSpace(s[:i])
	}
	return s
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
