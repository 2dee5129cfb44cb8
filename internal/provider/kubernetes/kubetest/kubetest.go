// Package kubetest runs a real kube-apiserver and etcd for tests (controller-runtime's
// envtest), one per test binary, and hands each test a namespace of its own. The
// binaries come from $KUBEBUILDER_ASSETS, else from the cache tools/k8s-lab/build.sh
// fills; without them a test skips (fails under CI=true, where .ci/run builds them).
//
// Nothing reconciles there: no controller-manager, scheduler or kubelet. Tests write
// pod and StatefulSet status themselves to play those parts.
//
// It is imported by tests only, never by the product.
package kubetest

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	crlog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/daydreamlive/scopectl/internal/testkit"
)

// Version is the Kubernetes version tools/k8s-lab/build.sh builds.
const Version = "1.34.4"

// assetsDir is taken when the test binary starts: tests move HOME and XDG_CACHE_HOME.
var assetsDir = findAssets()

// Assets is the folder holding kube-apiserver and etcd, and whether both are there.
func Assets() (string, bool) {
	dir := assetsDir
	for _, b := range []string{"kube-apiserver", "etcd"} {
		if st, err := os.Stat(filepath.Join(dir, b)); err != nil || st.Mode()&0o111 == 0 {
			return dir, false
		}
	}
	return dir, true
}

func findAssets() string {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		cache := os.Getenv("SCOPECTL_K8S_CACHE")
		if cache == "" {
			base := os.Getenv("XDG_CACHE_HOME")
			if base == "" {
				home, _ := os.UserHomeDir()
				base = filepath.Join(home, ".cache")
			}
			cache = filepath.Join(base, "scopectl-k8s")
		}
		dir = filepath.Join(cache, "v"+Version)
	}
	return dir
}

// Env is a running control plane.
type Env struct {
	Config *rest.Config // cluster admin
	CS     kubernetes.Interface
	env    *envtest.Environment
	Up     time.Duration // how long the control plane took to start
}

var (
	once     sync.Once
	shared   *Env
	startErr error
	nsSeq    atomic.Int64
)

// Start returns the package's control plane, starting it on first use; Main stops it.
func Start(t testing.TB) *Env {
	t.Helper()
	dir, ok := Assets()
	testkit.Need(t, ok, fmt.Sprintf("no kube-apiserver and etcd in %s (build them once: KUBEBUILDER_ASSETS=$(tools/k8s-lab/build.sh), ~25 min cold on 2 cores)", dir))
	once.Do(func() {
		crlog.SetLogger(logr.Discard())
		t0 := time.Now()
		e := &envtest.Environment{BinaryAssetsDirectory: dir, ControlPlaneStartTimeout: 2 * time.Minute, ControlPlaneStopTimeout: 30 * time.Second}
		cfg, err := e.Start()
		if err != nil {
			startErr = err
			return
		}
		shared = &Env{Config: cfg, CS: kubernetes.NewForConfigOrDie(cfg), env: e, Up: time.Since(t0)}
	})
	if startErr != nil {
		t.Fatalf("starting kube-apiserver + etcd from %s: %v", dir, startErr)
	}
	return shared
}

// Main runs the tests, stops the control plane and removes testkit's built programs
// (use it in TestMain instead of testkit.Main).
func Main(m *testing.M) {
	code := m.Run()
	stopControllers()
	if shared != nil {
		_ = shared.env.Stop()
	}
	testkit.Cleanup()
	os.Exit(code)
}

// Namespace creates a fresh namespace for t.
func (e *Env) Namespace(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t%d-%s", nsSeq.Add(1), strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())))
	if len(name) > 60 {
		name = strings.TrimRight(name[:60], "-")
	}
	_, err := e.CS.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return name
}

// User returns a rest.Config for a user with no rights at all (RBAC refuses everything
// unless a RoleBinding grants it); groups may be nil.
func (e *Env) User(t testing.TB, name string, groups ...string) *rest.Config {
	t.Helper()
	u, err := e.env.AddUser(envtest.User{Name: name, Groups: groups}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return u.Config()
}

// Kubeconfig writes a kubeconfig for cfg (context ctxName, namespace ns) to a file in
// dir and returns its path, so that tests can go through the kubeconfig loading path.
func Kubeconfig(t testing.TB, dir string, cfg *rest.Config, ctxName, ns string) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Config\ncurrent-context: %s\nclusters:\n- name: c\n  cluster:\n    server: %s\n", ctxName, cfg.Host)
	if len(cfg.CAData) > 0 {
		fmt.Fprintf(&b, "    certificate-authority-data: %s\n", b64(cfg.CAData))
	}
	fmt.Fprintf(&b, "users:\n- name: u\n  user:\n")
	if len(cfg.CertData) > 0 {
		fmt.Fprintf(&b, "    client-certificate-data: %s\n    client-key-data: %s\n", b64(cfg.CertData), b64(cfg.KeyData))
	}
	if cfg.BearerToken != "" {
		fmt.Fprintf(&b, "    token: %s\n", cfg.BearerToken)
	}
	fmt.Fprintf(&b, "contexts:\n- name: %s\n  context:\n    cluster: c\n    user: u\n    namespace: %s\n", ctxName, ns)
	p := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// Controllers are a real kube-scheduler and kube-controller-manager running against
// the control plane (tools/k8s-lab/build.sh all builds them): StatefulSets and Jobs get
// real pods and claims, the scheduler places them on nodes the test creates, and the
// garbage collector deletes what an owner leaves. No kubelet: tests still write pod
// status (Ready, Failed) and delete pods bound to a node with grace 0, as a kubelet would.
type Controllers struct {
	procs []*exec.Cmd
	Logs  *strings.Builder
}

var (
	ctlOnce sync.Once
	ctl     *Controllers
	ctlErr  error
)

// StartControllers starts the scheduler and the controller manager once per test
// binary; Main stops them.
func (e *Env) StartControllers(t testing.TB) *Controllers {
	t.Helper()
	dir, _ := Assets()
	for _, b := range []string{"kube-scheduler", "kube-controller-manager"} {
		_, err := os.Stat(filepath.Join(dir, b))
		testkit.Need(t, err == nil, fmt.Sprintf("no %s in %s (build it once: tools/k8s-lab/build.sh all)", b, dir))
	}
	ctlOnce.Do(func() {
		kdir, err := os.MkdirTemp("", "scopectl-kubetest-")
		if err != nil {
			ctlErr = err
			return
		}
		ctlDir = kdir
		kc := Kubeconfig(t, kdir, e.Config, "admin", "default")
		c := &Controllers{Logs: &strings.Builder{}}
		args := map[string][]string{
			"kube-scheduler": {"--kubeconfig=" + kc, "--leader-elect=false", "--secure-port=0"},
			"kube-controller-manager": {"--kubeconfig=" + kc, "--leader-elect=false", "--secure-port=0",
				"--controllers=statefulset-controller,job-controller,garbage-collector-controller,serviceaccount-controller," +
					"persistentvolume-binder-controller,persistentvolumeclaim-protection-controller,persistentvolume-protection-controller",
				"--concurrent-statefulset-syncs=2", "--pvclaimbinder-sync-period=1s"},
		}
		for _, b := range []string{"kube-scheduler", "kube-controller-manager"} {
			cmd := exec.Command(filepath.Join(dir, b), args[b]...)
			cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
			testkit.KillWithParent(cmd)
			if err := cmd.Start(); err != nil {
				ctlErr = err
				return
			}
			c.procs = append(c.procs, cmd)
		}
		ctl = c
	})
	if ctlErr != nil {
		t.Fatalf("starting kube-scheduler and kube-controller-manager: %v", ctlErr)
	}
	return ctl
}

var ctlDir string

func stopControllers() {
	if ctl != nil {
		for _, p := range ctl.procs {
			_ = p.Process.Kill()
			_, _ = p.Process.Wait()
		}
	}
	if ctlDir != "" {
		os.RemoveAll(ctlDir)
	}
}

// JobPod plays the job controller: it creates the pod of Job name from its template
// (the labels the controller sets, owned by the Job) and gives it status, as a kubelet
// would. It returns the pod's name.
func (e *Env) JobPod(t testing.TB, ns, name string, status corev1.PodStatus) string {
	t.Helper()
	ctx := context.Background()
	j, err := e.CS.BatchV1().Jobs(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lbl := map[string]string{"batch.kubernetes.io/job-name": name, "job-name": name, "batch.kubernetes.io/controller-uid": string(j.UID)}
	for k, v := range j.Spec.Template.Labels {
		lbl[k] = v
	}
	ctrl := true
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: name + "-", Namespace: ns, Labels: lbl,
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "Job", Name: name, UID: j.UID, Controller: &ctrl}}},
		Spec: *j.Spec.Template.Spec.DeepCopy()}
	got, err := e.CS.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e.PodStatus(t, ns, got.Name, status)
	return got.Name
}

// PodStatus sets pod's status, as a kubelet would.
func (e *Env) PodStatus(t testing.TB, ns, pod string, status corev1.PodStatus) {
	t.Helper()
	ctx := context.Background()
	got, err := e.CS.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got.Status = status
	if _, err := e.CS.CoreV1().Pods(ns).UpdateStatus(ctx, got, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}
