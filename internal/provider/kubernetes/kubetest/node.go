package kubetest

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/daydreamlive/scopectl/internal/deploy/deploytest"
	"github.com/daydreamlive/scopectl/internal/testkit"
)

// NodeName is the single node's name (the kubelet runs with --hostname-override, and
// the API server reaches it by that name: kubelet refuses a loopback node IP).
const NodeName = "localhost"

// NodeOptions shape a single-node cluster.
type NodeOptions struct {
	// GPUs is the node's nvidia.com/gpu capacity, written into its status as a device
	// plugin would report it (default 1).
	GPUs int64
	// PVs is how many hostPath PersistentVolumes (10Gi, in the default StorageClass
	// lab-local, bound when a claim's pod is scheduled) wait for claims (default 4).
	PVs int
}

// Node is a whole cluster on this machine with one real node: its own etcd and
// kube-apiserver (envtest), the real kube-scheduler and kube-controller-manager, a
// containerd of its own (Debian's, its CRI plugin on) and a real kubelet, which pull
// images from a docker-registry the test pushes FROM-scratch images to. Pods run for
// real (runc), with exec, logs and port-forward through the API server.
//
// The API server serves on 127.X.Y.1:443, which is also the ClusterIP of the
// "kubernetes" Service (the service range is 127.X.Y.0/24): a hostNetwork pod's
// in-cluster client reaches it with no kube-proxy. Tests use hostNetwork pods only and
// never send traffic to a pod IP (bridge networking on a shared machine is not worth its
// teardown hazards).
type Node struct {
	Config *rest.Config // cluster admin
	CS     kubernetes.Interface
	Reg    *deploytest.Registry
	Dir    string        // everything the node writes
	Up     time.Duration // from nothing to the node Ready with its GPUs
	PVDir  string        // the hostPath volumes' folder

	env   *envtest.Environment
	procs []*nodeProc
	kc    string // the admin kubeconfig
}

type nodeProc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// NodeAssets says what the node needs that is missing ("" when nothing is).
func NodeAssets() string {
	dir, ok := Assets()
	if !ok {
		return fmt.Sprintf("no kube-apiserver and etcd in %s (tools/k8s-lab/build.sh node)", dir)
	}
	for _, b := range []string{"kube-scheduler", "kube-controller-manager", "kubelet"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return fmt.Sprintf("no %s in %s (build it once: tools/k8s-lab/build.sh node)", b, dir)
		}
	}
	for _, p := range []string{"containerd", "containerd-shim-runc-v2", "runc"} {
		if _, err := exec.LookPath(p); err != nil {
			return p + " is not installed (Debian: containerd, runc)"
		}
	}
	if _, err := os.Stat("/usr/lib/cni/loopback"); err != nil {
		return "no CNI plugins in /usr/lib/cni (Debian: containernetworking-plugins)"
	}
	if os.Geteuid() != 0 {
		return "the kubelet and containerd need root"
	}
	return ""
}

// StartNode starts a single-node cluster for t and stops it, with everything it ran
// and mounted, when t ends. Without its binaries or root the test skips (fails under
// CI=true, where .ci/run provides them).
func StartNode(t *testing.T, opt NodeOptions) *Node {
	t.Helper()
	missing := NodeAssets()
	testkit.Need(t, missing == "", missing)
	if opt.GPUs == 0 {
		opt.GPUs = 1
	}
	if opt.PVs == 0 {
		opt.PVs = 4
	}
	t0 := time.Now()
	reg := deploytest.StartRegistry(t)
	// A short path: containerd's socket path must fit in sun_path.
	dir, err := os.MkdirTemp("", "sk8s-")
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{Reg: reg, Dir: dir, PVDir: filepath.Join(dir, "pv")}
	t.Cleanup(func() { n.stop(t) })
	for _, d := range []string{"logs", "pki", "kubelet", "ctrd", "cni/net.d", "pv"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	pause := n.pushPause(t)

	// The control plane, serving where the kubernetes Service's ClusterIP is.
	var r [2]byte
	_, _ = rand.Read(r[:])
	v := binary.BigEndian.Uint16(r[:])
	svcNet := fmt.Sprintf("127.%d.%d", 100+int(v>>8)%150, int(v&0xff))
	assets, _ := Assets()
	e := &envtest.Environment{BinaryAssetsDirectory: assets, ControlPlaneStartTimeout: 2 * time.Minute, ControlPlaneStopTimeout: 30 * time.Second}
	api := e.ControlPlane.GetAPIServer()
	api.CertDir = filepath.Join(dir, "pki")
	api.SecureServing.Address, api.SecureServing.Port = svcNet+".1", "443"
	args := api.Configure().
		Set("service-cluster-ip-range", svcNet+".0/24").
		Set("advertise-address", svcNet+".1").
		Set("kubelet-preferred-address-types", "Hostname").
		// The kubernetes Service's endpoint would be a loopback address, which
		// Endpoints refuse; clients here use the ClusterIP, where the server is.
		Set("endpoint-reconciler-type", "none")
	// envtest turns the ServiceAccount admission plugin off (nothing makes the default
	// account there); here the controller manager does, and pods get their tokens.
	args.Disable("disable-admission-plugins")
	cfg, err := e.Start()
	if err != nil {
		t.Fatalf("starting kube-apiserver + etcd on %s.1:443: %v", svcNet, err)
	}
	n.env, n.Config, n.CS = e, cfg, kubernetes.NewForConfigOrDie(cfg)
	n.kc = Kubeconfig(t, dir, cfg, "admin", "default")
	caFile := filepath.Join(dir, "pki", "serving-ca.crt")
	if err := os.WriteFile(caFile, cfg.CAData, 0o644); err != nil {
		t.Fatal(err)
	}

	n.start(t, "kube-scheduler", filepath.Join(assets, "kube-scheduler"), "--kubeconfig="+n.kc, "--leader-elect=false", "--secure-port=0")
	n.start(t, "kube-controller-manager", filepath.Join(assets, "kube-controller-manager"), "--kubeconfig="+n.kc,
		"--leader-elect=false", "--secure-port=0", "--use-service-account-credentials=false",
		"--root-ca-file="+caFile, // kube-root-ca.crt in every namespace: what in-cluster clients trust
		"--service-account-private-key-file="+filepath.Join(dir, "pki", "sa-signer.key"),
		"--controllers=statefulset-controller,job-controller,garbage-collector-controller,pod-garbage-collector-controller,"+
			"serviceaccount-controller,serviceaccount-token-controller,root-ca-certificate-publisher-controller,namespace-controller,"+
			"node-lifecycle-controller,persistentvolume-binder-controller,persistentvolume-attach-detach-controller,"+
			"persistentvolumeclaim-protection-controller,persistentvolume-protection-controller",
		"--pvclaimbinder-sync-period=1s", "--node-monitor-period=1s")

	// containerd with its CRI plugin, pulling over plain HTTP from the test's registry.
	hosts := filepath.Join(dir, "certs.d", reg.Addr)
	if err := os.MkdirAll(hosts, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(hosts, "hosts.toml"), fmt.Sprintf("server = \"http://%s\"\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", reg.Addr, reg.Addr))
	ctrd := filepath.Join(dir, "ctrd")
	sock := filepath.Join(ctrd, "containerd.sock")
	writeFile(t, filepath.Join(dir, "containerd.toml"), fmt.Sprintf(`version = 2
root = %q
state = %q
[grpc]
  address = %q
[ttrpc]
  address = %q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = %q
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
`, filepath.Join(ctrd, "root"), filepath.Join(ctrd, "state"), sock, sock+".ttrpc", pause,
		filepath.Join(dir, "certs.d"), filepath.Join(dir, "cni", "net.d")))
	// The runtime's network is ready once a CNI config is there; the pods here use the
	// host's network, so the bridge is never made.
	writeFile(t, filepath.Join(dir, "cni", "net.d", "10-lab.conflist"), `{"cniVersion": "0.4.0", "name": "sk8s",
 "plugins": [{"type": "bridge", "bridge": "sk8s0", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.245.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
`)
	n.start(t, "containerd", "containerd", "--config", filepath.Join(dir, "containerd.toml"))
	n.waitFor(t, "containerd's socket", 30*time.Second, func() error {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
		}
		return err
	})

	// The kubelet.
	kl := filepath.Join(dir, "kubelet")
	writeFile(t, filepath.Join(dir, "kubelet.yaml"), fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
address: 127.0.0.1
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %d
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://%s
failSwapOn: false
failCgroupV1: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {"nodefs.available": "1%%", "imagefs.available": "1%%", "memory.available": "100Mi"}
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
serializeImagePulls: false
nodeStatusUpdateFrequency: 2s
syncFrequency: 5s
fileCheckFrequency: 5s
podLogsDir: %s
`, deploytest.FreePort(t), deploytest.FreePort(t), sock, filepath.Join(dir, "pod-logs")))
	n.start(t, "kubelet", filepath.Join(assets, "kubelet"), "--config="+filepath.Join(dir, "kubelet.yaml"),
		"--kubeconfig="+n.kc, "--hostname-override="+NodeName, "--root-dir="+kl, "--cert-dir="+filepath.Join(kl, "pki"), "--v=1")

	// Ready, untainted, with its GPUs and volumes.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n.waitFor(t, "node "+NodeName+" Ready and untainted", 2*time.Minute, func() error {
		no, err := n.CS.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range no.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status != corev1.ConditionTrue {
				return fmt.Errorf("Ready %s: %s", c.Status, c.Message)
			}
		}
		if len(no.Spec.Taints) > 0 {
			return fmt.Errorf("taints %v", no.Spec.Taints)
		}
		return nil
	})
	n.SetGPUs(t, opt.GPUs)
	LocalStorageClass(t, n.CS, StorageClass, true)
	for i := range opt.PVs {
		n.AddPV(t, fmt.Sprintf("lab-pv%d", i), "10Gi")
	}
	n.waitFor(t, "the default ServiceAccount", time.Minute, func() error {
		_, err := n.CS.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err
	})
	n.Up = time.Since(t0)
	t.Logf("single node up in %v (API server %s, registry %s)", n.Up.Round(10*time.Millisecond), cfg.Host, reg.Addr)
	return n
}

// SetGPUs writes the node's nvidia.com/gpu capacity and allocatable, as a device
// plugin's registration would.
func (n *Node) SetGPUs(t testing.TB, gpus int64) {
	t.Helper()
	q := resource.NewQuantity(gpus, resource.DecimalSI).String()
	p := fmt.Sprintf(`{"status":{"capacity":{"nvidia.com/gpu":%q},"allocatable":{"nvidia.com/gpu":%q}}}`, q, q)
	if _, err := n.CS.CoreV1().Nodes().PatchStatus(context.Background(), NodeName, []byte(p)); err != nil {
		t.Fatalf("node GPUs: %v", err)
	}
}

// StorageClass is the node's default storage class: its hostPath volumes, bound when
// a claim's pod is scheduled (see LocalStorageClass).
const StorageClass = "lab-local"

// AddPV adds a hostPath PersistentVolume of size in StorageClass under the node's
// folder.
func (n *Node) AddPV(t testing.TB, name, size string) {
	t.Helper()
	HostPathPV(t, n.CS, name, size, filepath.Join(n.PVDir, name), StorageClass)
}

// Namespace creates a fresh namespace and waits for its default ServiceAccount.
func (n *Node) Namespace(t testing.TB, name string) string {
	t.Helper()
	ctx := context.Background()
	if _, err := n.CS.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	n.waitFor(t, "the default ServiceAccount of "+name, time.Minute, func() error {
		_, err := n.CS.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err
	})
	return name
}

// Logs returns the last lines of a node process's log (kubelet, containerd,
// kube-scheduler, kube-controller-manager), for failure messages.
func (n *Node) Logs(name string, lines int) string {
	for _, p := range n.procs {
		if p.name == name {
			return tail(p.log, lines)
		}
	}
	return ""
}

// Image builds a FROM-scratch image from files (name in the image → local path, mode
// kept; a value "->TARGET" makes a symlink) and the Dockerfile lines after the COPY,
// pushes it to the node's registry as repo:tag and returns its reference.
func (n *Node) Image(t testing.TB, repo string, files map[string]string, extra string) string {
	t.Helper()
	ctxDir := t.TempDir()
	root := filepath.Join(ctxDir, "root")
	for _, name := range slices.Sorted(maps.Keys(files)) {
		dst := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		src := files[name]
		if target, ok := strings.CutPrefix(src, "->"); ok {
			if err := os.Symlink(target, dst); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if src == "" { // a folder
			if err := os.MkdirAll(dst, 0o777); err != nil {
				t.Fatal(err)
			}
			continue
		}
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := os.Stat(src)
		if err := os.WriteFile(dst, data, st.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(ctxDir, "Dockerfile"), "FROM scratch\nCOPY root/ /\n"+extra)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	ref := n.Reg.Addr + "/" + repo + ":" + deploytest.RandHex(6)
	if out, err := deploytest.Docker(ctx, "build", "--quiet", "--tag", ref, ctxDir); err != nil {
		t.Fatalf("docker build %s: %v\n%s", repo, err, out)
	}
	defer deploytest.Docker(context.Background(), "image", "rm", "--force", ref)
	if out, err := deploytest.Docker(ctx, "push", "--quiet", ref); err != nil {
		t.Fatalf("docker push %s: %v\n%s", ref, err, out)
	}
	return ref
}

// pushPause pushes the sandbox image (kubetest/pause, static).
func (n *Node) pushPause(t *testing.T) string {
	bin := testkit.GoBuild(t, testkit.Build{Pkg: "./internal/provider/kubernetes/kubetest/pause", Static: true})
	return n.Image(t, "pause", map[string]string{"pause": bin}, "ENTRYPOINT [\"/pause\"]\n")
}

func (n *Node) start(t *testing.T, name, bin string, args ...string) {
	t.Helper()
	logPath := filepath.Join(n.Dir, "logs", name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	testkit.KillWithParent(cmd)
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("starting %s: %v", name, err)
	}
	p := &nodeProc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(p.done) }()
	n.procs = append(n.procs, p)
}

// waitFor polls check until it succeeds, a node process exits, or timeout.
func (n *Node) waitFor(t testing.TB, what string, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = check(); err == nil {
			return
		}
		for _, p := range n.procs {
			select {
			case <-p.done:
				t.Fatalf("waiting for %s: %s exited:\n%s", what, p.name, tail(p.log, 30))
			default:
			}
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			for _, p := range n.procs {
				fmt.Fprintf(&b, "--- %s:\n%s\n", p.name, tail(p.log, 15))
			}
			t.Fatalf("waiting for %s: %v after %v\n%s", what, err, timeout, b.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// stop ends everything the node ran: the kubelet, the pods' processes and their
// shims, containerd, the controllers and the control plane; then unmounts what the
// kubelet and containerd mounted under the node's folder and removes it.
func (n *Node) stop(t testing.TB) {
	if t.Failed() {
		for _, p := range n.procs {
			t.Logf("--- %s (last lines):\n%s", p.name, tail(p.log, 25))
		}
		if n.CS != nil {
			t.Logf("--- the cluster:\n%s", n.Describe())
		}
	}
	kill := func(name string) {
		for _, p := range n.procs {
			if p.name == name {
				_ = p.cmd.Process.Signal(syscall.SIGTERM)
				select {
				case <-p.done:
				case <-time.After(10 * time.Second):
					_ = p.cmd.Process.Kill()
					<-p.done
				}
			}
		}
	}
	kill("kubelet")
	// The containers' processes are the shims' descendants; the shims carry the
	// node's containerd socket in their arguments.
	sock := filepath.Join(n.Dir, "ctrd", "containerd.sock")
	shims := pidsWith(func(cmdline string) bool {
		return strings.Contains(cmdline, "containerd-shim") && strings.Contains(cmdline, sock)
	})
	for _, s := range shims {
		for _, d := range descendants(s) {
			_ = syscall.Kill(d, syscall.SIGKILL)
		}
	}
	for _, s := range shims {
		_ = syscall.Kill(s, syscall.SIGKILL)
	}
	kill("containerd")
	kill("kube-controller-manager")
	kill("kube-scheduler")
	if n.env != nil {
		_ = n.env.Stop()
	}
	// Mounts under the folder, deepest first (the kubelet's tmpfs secrets, containerd's
	// overlays and sandbox shm).
	for range 3 {
		ms := mountsUnder(n.Dir)
		if len(ms) == 0 {
			break
		}
		for _, m := range ms {
			_ = syscall.Unmount(m, syscall.MNT_DETACH)
		}
	}
	removeCgroups()
	if err := os.RemoveAll(n.Dir); err != nil {
		t.Logf("removing %s: %v", n.Dir, err)
	}
}

// eachProc calls fn with each process's pid and its file /proc/PID/name.
func eachProc(name string, fn func(pid int, data []byte)) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if b, err := os.ReadFile(filepath.Join("/proc", e.Name(), name)); err == nil {
			fn(pid, b)
		}
	}
}

// pidsWith lists the processes whose command line matches.
func pidsWith(match func(string) bool) []int {
	var out []int
	eachProc("cmdline", func(pid int, b []byte) {
		if match(strings.ReplaceAll(string(b), "\x00", " ")) {
			out = append(out, pid)
		}
	})
	return out
}

// descendants lists pid's descendants (not pid), from /proc's parent links.
func descendants(pid int) []int {
	children := map[int][]int{}
	eachProc("stat", func(p int, b []byte) {
		// pid (comm) state ppid …: comm may hold spaces and parentheses.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			return
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 {
			return
		}
		pp, _ := strconv.Atoi(f[1])
		children[pp] = append(children[pp], p)
	})
	var out []int
	queue := []int{pid}
	for len(queue) > 0 && len(out) < 10000 {
		c := children[queue[0]]
		queue = queue[1:]
		out = append(out, c...)
		queue = append(queue, c...)
	}
	return out
}

// mountsUnder lists the mount points under dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 5 {
			continue
		}
		mp := unescapeMount(fs[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space …).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// removeCgroups removes the empty cgroups the kubelet made (kubepods…) in every
// hierarchy, leaves first; a cgroup still in use stays.
func removeCgroups() {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/kubepods")
	if u, err := os.Stat("/sys/fs/cgroup/kubepods"); err == nil && u.IsDir() {
		roots = append(roots, "/sys/fs/cgroup/kubepods")
	}
	for _, r := range roots {
		var dirs []string
		_ = filepath.WalkDir(r, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			_ = syscall.Rmdir(dirs[i])
		}
	}
}

func tail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}

func writeFile(t testing.TB, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Describe lists the cluster's pods, claims and volumes, one line each, for failure
// messages.
func (n *Node) Describe() string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var b strings.Builder
	if l, err := n.CS.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); err == nil {
		for _, p := range l.Items {
			var cs []string
			for _, c := range p.Status.ContainerStatuses {
				st := "waiting"
				switch {
				case c.State.Running != nil:
					st = "running"
				case c.State.Terminated != nil:
					st = "terminated " + c.State.Terminated.Reason
				case c.State.Waiting != nil:
					st = "waiting " + c.State.Waiting.Reason
				}
				cs = append(cs, c.Name+"="+st)
			}
			fmt.Fprintf(&b, "pod %s/%s node=%q phase=%s deleting=%v %s\n", p.Namespace, p.Name, p.Spec.NodeName, p.Status.Phase, p.DeletionTimestamp != nil, strings.Join(cs, " "))
		}
	}
	if l, err := n.CS.CoreV1().PersistentVolumeClaims("").List(ctx, metav1.ListOptions{}); err == nil {
		for _, c := range l.Items {
			fmt.Fprintf(&b, "pvc %s/%s %s volume=%q request=%s\n", c.Namespace, c.Name, c.Status.Phase, c.Spec.VolumeName, c.Spec.Resources.Requests.Storage())
		}
	}
	if l, err := n.CS.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{}); err == nil {
		for _, v := range l.Items {
			claim := ""
			if v.Spec.ClaimRef != nil {
				claim = v.Spec.ClaimRef.Namespace + "/" + v.Spec.ClaimRef.Name
			}
			fmt.Fprintf(&b, "pv %s %s claim=%q\n", v.Name, v.Status.Phase, claim)
		}
	}
	if l, err := n.CS.CoreV1().Events("").List(ctx, metav1.ListOptions{}); err == nil {
		for _, e := range l.Items {
			if e.Type != corev1.EventTypeNormal {
				fmt.Fprintf(&b, "event %s %s %s/%s %s ×%d: %s\n", e.LastTimestamp.Format("15:04:05"), e.Type, e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, e.Count, e.Message)
			}
		}
	}
	return b.String()
}

// PodEvents returns the events of pod, one line each, for failure messages.
func (n *Node) PodEvents(ns, pod string) string {
	l, err := n.CS.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + pod})
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, e := range l.Items {
		fmt.Fprintf(&b, "%s %s: %s\n", e.Type, e.Reason, e.Message)
	}
	return b.String()
}

// LocalStorageClass creates a StorageClass for pre-made volumes that binds a claim
// when its pod is scheduled (no provisioner, WaitForFirstConsumer), as local-volume
// clusters do: the scheduler then places a pod on its GPUs and a free volume together,
// instead of first waiting for an immediate binding it may not hear of at once. With
// dflt it is the cluster's default class.
func LocalStorageClass(t testing.TB, cs kubernetes.Interface, name string, dflt bool) {
	t.Helper()
	mode := storagev1.VolumeBindingWaitForFirstConsumer
	sc := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Provisioner: "kubernetes.io/no-provisioner", VolumeBindingMode: &mode}
	if dflt {
		sc.Annotations = map[string]string{"storageclass.kubernetes.io/is-default-class": "true"}
	}
	if _, err := cs.StorageV1().StorageClasses().Create(context.Background(), sc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// HostPathPV creates a hostPath PersistentVolume of size at dir in storage class
// class ("" for none), kept (Retain) when its claim goes.
func HostPathPV(t testing.TB, cs kubernetes.Interface, name, size, dir, class string) {
	t.Helper()
	hp := corev1.HostPathDirectoryOrCreate
	pv := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeSpec{Capacity: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)},
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			StorageClassName:       class,
			PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: dir, Type: &hp}}}}
	if _, err := cs.CoreV1().PersistentVolumes().Create(context.Background(), pv, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}
