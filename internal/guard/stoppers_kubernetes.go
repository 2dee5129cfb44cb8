package guard

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/provider/kubernetes"
	"github.com/daydreamlive/scopectl/internal/store"
	"github.com/daydreamlive/scopectl/internal/watch"
)

// ReasonStopper is a Stopper that records the stop (why, when, by whom) on the target
// itself when it stops it; the guard calls StopFor instead of Stop.
type ReasonStopper interface {
	StopFor(ctx context.Context, s Stop) error
}

// KubernetesStopper scales the one Scope StatefulSet the guard runs in to zero, with
// the pod's own ServiceAccount (in-cluster credentials; the user's kubeconfig never
// reaches the pod), and annotates it with the stop (kubernetes.AnnoStoppedBy …) for
// pod get and status. Its Role allows get and patch of that StatefulSet only.
type KubernetesStopper struct {
	Client      *kubernetes.Client
	StatefulSet string
}

// Stop implements Stopper.
func (s KubernetesStopper) Stop(ctx context.Context) error {
	return s.StopFor(ctx, Stop{By: "guard", Reason: "stopped by the guard", At: time.Now()})
}

// StopFor implements ReasonStopper.
func (s KubernetesStopper) StopFor(ctx context.Context, st Stop) error {
	by := st.By
	if by == "" {
		by = "guard"
	}
	if st.Kind != "" {
		by += " (" + st.Kind + ")"
	}
	return s.Client.GuardStop(ctx, s.StatefulSet, by, st.Reason, st.At)
}

func (s KubernetesStopper) String() string {
	return "statefulset " + s.StatefulSet + " in namespace " + s.Client.Namespace
}

// serviceAccountNamespace is where Kubernetes mounts the pod's namespace.
const serviceAccountNamespace = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// InClusterStopper builds the stopper of StatefulSet name from the pod's in-cluster
// credentials (its ServiceAccount token) and namespace (the downward API's
// kubernetes.EnvPodNamespace, else the ServiceAccount's mounted namespace).
func InClusterStopper(name string) (KubernetesStopper, error) {
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return KubernetesStopper{}, fmt.Errorf("guard: no in-cluster credentials (%v): not a Kubernetes pod with a ServiceAccount", err)
	}
	ns := os.Getenv(kubernetes.EnvPodNamespace)
	if ns == "" {
		b, err := os.ReadFile(serviceAccountNamespace)
		if err != nil {
			return KubernetesStopper{}, errors.New("guard: the pod's namespace is unknown (no " + kubernetes.EnvPodNamespace + ", no " + serviceAccountNamespace + ")")
		}
		ns = strings.TrimSpace(string(b))
	}
	c, err := kubernetes.NewForConfig(cfg, ns)
	if err != nil {
		return KubernetesStopper{}, err
	}
	return KubernetesStopper{Client: c, StatefulSet: name}, nil
}

// ReplicaProbe reads the activity of the StatefulSet's other replicas (Scope's API on
// each, through the headless Service's per-replica name), so that one replica's guard
// does not scale the set to zero while another replica serves a session. Self is this
// replica's pod name (its own Scope is probed on localhost). With one replica it says
// nothing.
type ReplicaProbe struct {
	Stopper KubernetesStopper
	Self    string
	Port    int
	// URL, for tests: the base URL of replica pod (default http://POD.NAME.NS.svc:PORT).
	URL func(pod string) string
}

// Name is the probe's name in reasons.
func (ReplicaProbe) Name() string { return "replicas" }

// Busy implements watch.Probe.
func (r ReplicaProbe) Busy(ctx context.Context, _ store.Pod, _ provider.Pod) (bool, string, error) {
	c := r.Stopper.Client
	sts, err := c.CS.AppsV1().StatefulSets(c.Namespace).Get(ctx, r.Stopper.StatefulSet, metav1.GetOptions{})
	if err != nil {
		return false, "", err
	}
	n := int32(1)
	if sts.Spec.Replicas != nil {
		n = *sts.Spec.Replicas
	}
	var failed []string
	for i := range n {
		pod := r.Stopper.StatefulSet + "-" + strconv.Itoa(int(i))
		if pod == r.Self {
			continue
		}
		url := fmt.Sprintf("http://%s.%s.%s.svc:%d", pod, r.Stopper.StatefulSet, c.Namespace, r.Port)
		if r.URL != nil {
			url = r.URL(pod)
		}
		busy, why, err := watch.ScopeProbe{URL: func(provider.Pod) string { return url }}.Busy(ctx, store.Pod{}, provider.Pod{ID: pod})
		if busy {
			return true, pod + ": " + why, nil
		}
		if err != nil {
			failed = append(failed, pod+": "+oneLine(err.Error()))
		}
	}
	if len(failed) > 0 {
		// A replica that cannot be read (Pending, starting, its name not yet in DNS)
		// serves no session: the guard counts activity unknown only when every probe fails.
		return false, strings.Join(failed, "; "), errors.New(strings.Join(failed, "; "))
	}
	return false, "", nil
}
