package cli_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/lora"
	"github.com/daydreamlive/scopectl/internal/lora/loratest"
	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/provider/runpod/runpodtest"
	"github.com/daydreamlive/scopectl/internal/testkit"
)

// runpodPods is a fake RunPod whose pods really run: each pod's container is the Scope
// stand-in (scopestub) with the pod's environment, its "/" a folder of this machine
// (root), and its port 22 a real sshd chrooted there, so that LoRAs reach
// /workspace/models/lora over real SSH and Scope loads them from there.
type runpodPods struct {
	srv  *runpodtest.Server
	root string // the containers' "/"
}

const (
	rpKey   = "rpa_" + "DEPLOYCANARYKEYDEPLOYCANARYKEY000001"
	rpHF    = "hf_" + "DEPLOYCANARYTOKENDEPLOYCANARY0001"
	gpu4090 = "NVIDIA GeForce RTX 4090"
)

// buildScopeStub builds Scope's stand-in (static, once per test process).
func buildScopeStub(t *testing.T) string {
	t.Helper()
	return testkit.GoBuild(t, testkit.Build{Pkg: "./internal/scope/scopestub", Static: true})
}

func newRunPodPods(t *testing.T, e *env, stub string) *runpodPods {
	t.Helper()
	testkit.NeedRoot(t, "sshd's ChrootDirectory (the pod's /)")
	// sshd accepts a chroot only when it and every folder above it is root's and
	// writable by nobody else: not under /tmp.
	root, err := os.MkdirTemp("/run", "scopectl-pod-")
	if err != nil {
		t.Skipf("no folder for the pod's /: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	sshPort := startSSHDWith(t, e.root, "ChrootDirectory "+root+"\nForceCommand internal-sftp\n")
	t.Setenv("SSH_AUTH_SOCK", "")
	var mu sync.Mutex
	rt := func(p runpodtest.PodView) (*runpodtest.Container, error) {
		c := &runpodtest.Container{PublicIP: "127.0.0.1", TCP: map[int]int{22: sshPort}, HTTP: map[int]string{}}
		if strings.HasSuffix(p.Image, ":broken") {
			return nil, errors.New("image pull failed")
		}
		if strings.HasSuffix(p.Image, ":nohealth") {
			return c, nil // the container runs, Scope never answers
		}
		port := podFreePort(t)
		cmd := exec.Command(stub, "--host", "127.0.0.1", "--port", fmt.Sprint(port), "--load-delay", "200ms", "--root", root)
		cmd.Env = []string{"HOME=" + root}
		for k, v := range p.Env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		c.HTTP[8000] = fmt.Sprintf("http://127.0.0.1:%d", port)
		c.Stop = func() {
			mu.Lock()
			defer mu.Unlock()
			cmd.Process.Kill()
			cmd.Wait()
		}
		return c, nil
	}
	srv := runpodtest.New(t, runpodtest.Options{APIKey: rpKey, BootDelay: 100 * time.Millisecond, Runtime: rt})
	t.Setenv("RUNPOD_API_URL", srv.RESTURL())
	t.Setenv("RUNPOD_GRAPHQL_URL", srv.GraphQLURL())
	t.Setenv("SCOPECTL_RUNPOD_PROXY_URL", srv.ProxyURL())
	t.Setenv("RUNPOD_API_KEY", rpKey)
	t.Setenv("HF_TOKEN", rpHF)
	return &runpodPods{srv: srv, root: root}
}

func podFreePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// runPodBin runs the built binary with a time limit and returns stdout, stderr, exit code.
func runPodBin(t *testing.T, bin string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{rpKey, rpHF, rpKey[len(rpKey)-10:], rpHF[len(rpHF)-10:]} {
		if strings.Contains(out.String()+errb.String(), s) {
			t.Fatalf("scopectl %v printed a secret:\n%s%s", args, out.String(), errb.String())
		}
	}
	return out.String(), errb.String(), code
}

func mustPodBin(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, errs, code := runPodBin(t, bin, args...)
	if code != 0 {
		t.Fatalf("scopectl %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

func deploySteps(t *testing.T, out string) []string {
	t.Helper()
	var acts []string
	for _, s := range decode[map[string]any](t, out)["steps"].([]any) {
		acts = append(acts, s.(map[string]any)["action"].(string))
	}
	return acts
}

// TestDeployRunPod: deploy --new with a LoRA and a pipeline, the same deploy again
// (nothing changes), a changed image (the pod is updated), a LoRA dir the pod would
// lose. Secrets never show.
func TestDeployRunPod(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries, runs sshd")
	}
	bin, stub := buildBinary(t), buildScopeStub(t)
	e := newEnv(t)
	rp := newRunPodPods(t, e, stub)
	e.mustRun("lora", "add", e.lora("style.safetensors", loratest.Spec{Base: lora.BaseT2V1_3B, Family: lora.Kohya, Alpha: 4, Rank: 8}))

	plan := mustPodBin(t, bin, "deploy", "--new", "--gpu", gpu4090, "--lora", "style:0.8", "--dry-run", "--json")
	if got := deploySteps(t, plan); len(got) != 1 || got[0] != "create" || rp.srv.Creates() != 0 {
		t.Fatalf("dry run: %s", plan)
	}

	out := mustPodBin(t, bin, "deploy", "--new", "--gpu", gpu4090, "--lora", "style:0.8", "--pipeline", "longlive", "--wait", "20s", "--json")
	res := decode[map[string]any](t, out)
	pods := rp.srv.Pods()
	if len(pods) != 1 || res["created"] != true {
		t.Fatalf("deploy --new: %d pods\n%s", len(pods), out)
	}
	pod := pods[0]
	if res["url"] != rp.srv.URL+"/proxy/"+pod.ID+"-8000" {
		t.Fatalf("url %v", res["url"])
	}
	if st := res["pipeline"].(map[string]any); st["status"] != "loaded" || len(st["loaded_loras"].([]any)) != 1 {
		t.Fatalf("pipeline: %v", st)
	}
	ll := res["pipeline"].(map[string]any)["loaded_loras"].([]any)[0].(map[string]any)
	if ll["path"] != "/workspace/models/lora/style.safetensors" || ll["scale"] != 0.8 {
		t.Fatalf("loaded LoRA %v", ll)
	}
	if _, err := os.Stat(filepath.Join(rp.root, "workspace", "models", "lora", "style.safetensors")); err != nil {
		t.Fatalf("LoRA not on the pod's volume: %v", err)
	}
	want := map[string]string{"DAYDREAM_SCOPE_MODELS_DIR": "/workspace/models", "DAYDREAM_SCOPE_LOGS_DIR": "/workspace/logs",
		"DAYDREAM_SCOPE_LORA_DIR": "/workspace/models/lora", "SCOPE_LORA_DIR": "/workspace/models/lora",
		"HF_TOKEN": rpHF, provider.EnvSecretNames: "HF_TOKEN"}
	for k, v := range want {
		if pod.Env[k] != v {
			t.Errorf("pod env %s = %q, want %q", k, pod.Env[k], v)
		}
	}
	if pod.Image != "daydreamlive/scope:main" || strings.Join(pod.Ports, ",") != "8000/http,22/tcp" || pod.Env["PUBLIC_KEY"] == "" || pod.Env["CUDA_VISIBLE_DEVICES"] != "0" {
		t.Fatalf("pod %+v", pod)
	}
	if env := res["pod"].(map[string]any)["env"].(map[string]any); env["HF_TOKEN"] != provider.SecretValue {
		t.Fatalf("pod env in --json: %v", env)
	}
	ls := decode[[]map[string]any](t, mustPodBin(t, bin, "pod", "ls", "--json"))
	if len(ls) != 1 || ls[0]["recorded"] != true {
		t.Fatalf("the pod is not recorded: %v", ls)
	}

	// Again: nothing changes, nothing is sent.
	again := mustPodBin(t, bin, "deploy", "--pod", pod.ID, "--lora", "style:0.8", "--pipeline", "longlive", "--wait", "20s", "--json")
	if got := deploySteps(t, again); len(got) != 1 || got[0] != "keep" || rp.srv.Updates() != 0 {
		t.Fatalf("second deploy changed something (%d updates): %s", rp.srv.Updates(), again)
	}
	if !strings.Contains(again, `"sent_bytes": 0`) {
		t.Fatalf("second deploy sent LoRA bytes: %s", again)
	}
	// deploy --new again finds the pod the first one made (same --name) instead of
	// paying for a second.
	again = mustPodBin(t, bin, "deploy", "--new", "--gpu", gpu4090, "--lora", "style:0.8", "--pipeline", "longlive", "--wait", "20s", "--json")
	if got := deploySteps(t, again); strings.Join(got, ",") != "reuse,keep" || len(rp.srv.Pods()) != 1 || rp.srv.Creates() != 1 || rp.srv.Updates() != 0 {
		t.Fatalf("deploy --new twice: %v, %d pods, %d creates\n%s", got, len(rp.srv.Pods()), rp.srv.Creates(), again)
	}
	// On another GPU type the same name is refused (exit 3), nothing created.
	if _, errs, code := runPodBin(t, bin, "deploy", "--new", "--gpu", "NVIDIA RTX A6000"); code != 3 || !strings.Contains(errs, "already runs Scope") || rp.srv.Creates() != 1 {
		t.Fatalf("deploy --new on another GPU: %d %q", code, errs)
	}

	// A new image: planned, then applied as one update (the pod restarts); then kept.
	dry := mustPodBin(t, bin, "deploy", "--pod", pod.ID, "--image", "daydreamlive/scope:v2", "--dry-run")
	if !strings.Contains(dry, "would update") || !strings.Contains(dry, "daydreamlive/scope:main → daydreamlive/scope:v2") || rp.srv.Updates() != 0 {
		t.Fatalf("dry run: %s", dry)
	}
	upd := mustPodBin(t, bin, "deploy", "--pod", pod.ID, "--image", "daydreamlive/scope:v2", "--wait", "20s")
	if !strings.Contains(upd, "update ") || !strings.Contains(upd, "is healthy at") || rp.srv.Updates() != 1 {
		t.Fatalf("image change: %s", upd)
	}
	if p := rp.srv.Pods()[0]; p.Image != "daydreamlive/scope:v2" || p.Env["HF_TOKEN"] != rpHF || p.Env["PUBLIC_KEY"] == "" {
		t.Fatalf("pod after the update: %+v", p)
	}
	if got := deploySteps(t, mustPodBin(t, bin, "deploy", "--pod", pod.ID, "--image", "daydreamlive/scope:v2", "--wait", "20s", "--json")); got[0] != "keep" || rp.srv.Updates() != 1 {
		t.Fatalf("after the update: %v", got)
	}
	// A stopped pod is started.
	mustPodBin(t, bin, "pod", "stop", pod.ID)
	if got := deploySteps(t, mustPodBin(t, bin, "deploy", "--pod", pod.ID, "--image", "daydreamlive/scope:v2", "--wait", "20s", "--json")); len(got) != 1 || got[0] != "start" {
		t.Fatalf("stopped pod: %v", got)
	}

	// Refused before anything happens.
	for _, tc := range []struct {
		args []string
		want string
		code int
	}{
		{[]string{"deploy", "--pod", pod.ID, "--scope-lora-dir", "/opt/lora"}, "lost", 2},
		{[]string{"deploy", "--new"}, "--gpu", 2},
		{[]string{"deploy", "--pod", pod.ID, "--gpu", gpu4090}, "--new", 2},
		{[]string{"deploy", "--pod", pod.ID, "--volume", "/x"}, "--host", 2},
		{[]string{"deploy", "--pod", "nosuchpod0000"}, "not found", 4},
	} {
		_, errs, code := runPodBin(t, bin, tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.want) || strings.Count(strings.TrimSpace(errs), "\n") > 0 {
			t.Errorf("%v: exit %d, %q", tc.args, code, errs)
		}
	}
	if n := len(rp.srv.Pods()); n != 1 || rp.srv.Updates() != 1 {
		t.Fatalf("a refused deploy changed pods: %d pods, %d updates", n, rp.srv.Updates())
	}
}

// TestDeployRunPodFaults: each fault is one line, and deploy --new leaves no pod
// behind unless --keep.
func TestDeployRunPodFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries, runs sshd")
	}
	bin, stub := buildBinary(t), buildScopeStub(t)
	e := newEnv(t)
	rp := newRunPodPods(t, e, stub)
	oneLine := func(what, errs string) {
		t.Helper()
		if strings.Count(strings.TrimSpace(errs), "\n") > 0 || strings.Contains(errs, "panic") {
			t.Errorf("%s: not one line: %q", what, errs)
		}
	}
	// No capacity (the fake has no RTX A6000 in stock): nothing created.
	_, errs, code := runPodBin(t, bin, "deploy", "--new", "--gpu", "NVIDIA RTX A6000", "--wait", "5s")
	if code == 0 || !strings.Contains(errs, "no capacity") || rp.srv.Creates() != 0 {
		t.Fatalf("no capacity: %d %q", code, errs)
	}
	oneLine("no capacity", errs)
	// Above --max-price: nothing created.
	_, errs, code = runPodBin(t, bin, "deploy", "--new", "--gpu", gpu4090, "--max-price", "0.2")
	if code == 0 || !strings.Contains(errs, "price above maximum") || rp.srv.Creates() != 0 {
		t.Fatalf("max price: %d %q", code, errs)
	}
	oneLine("max price", errs)
	// Wrong API key: refused, the key not printed.
	cmd := exec.Command(bin, "deploy", "--new", "--gpu", gpu4090)
	cmd.Env = append(os.Environ(), "RUNPOD_API_KEY=rpa_WRONGWRONGWRONGWRONGWRONGWRONG")
	b, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(b), "unauthorized") || strings.Contains(string(b), "WRONGWRONG") || rp.srv.Creates() != 0 {
		t.Fatalf("wrong key: %v %s", err, b)
	}
	oneLine("wrong key", string(b))
	// Scope never healthy: the new pod is terminated, and says so.
	start := time.Now()
	_, errs, code = runPodBin(t, bin, "deploy", "--new", "--gpu", gpu4090, "--image", "scope:nohealth", "--wait", "2s")
	if code == 0 || !strings.Contains(errs, "did not become healthy") || !strings.Contains(errs, "terminated") {
		t.Fatalf("health never green: %d %q", code, errs)
	}
	oneLine("health never green", errs)
	if len(rp.srv.Pods()) != 0 || rp.srv.Creates() != 1 || time.Since(start) > 30*time.Second {
		t.Fatalf("pods left: %+v (after %s)", rp.srv.Pods(), time.Since(start))
	}
	ls := decode[[]map[string]any](t, mustPodBin(t, bin, "pod", "ls", "--json"))
	if len(ls) != 0 {
		t.Fatalf("pod ls: %v", ls)
	}
	// The pod never becomes ready; with --keep it stays (and the error says how to remove it).
	_, errs, code = runPodBin(t, bin, "deploy", "--new", "--gpu", gpu4090, "--image", "scope:broken", "--wait", "1s", "--keep", "--json")
	v := decode[map[string]any](t, errs)
	msg, _ := v["error"].(string)
	if code == 0 || !strings.Contains(msg, "pod not ready") || !strings.Contains(msg, "kept") || len(rp.srv.Pods()) != 1 {
		t.Fatalf("never ready, --keep: %d %q", code, errs)
	}
	// Without --keep it is terminated.
	_, errs, code = runPodBin(t, bin, "deploy", "--new", "--name", "other", "--gpu", gpu4090, "--image", "scope:broken", "--wait", "1s")
	if code == 0 || !strings.Contains(errs, "pod not ready") || !strings.Contains(errs, "terminated") || len(rp.srv.Pods()) != 1 {
		t.Fatalf("never ready: %d %q (%d pods)", code, errs, len(rp.srv.Pods()))
	}
	oneLine("never ready", errs)
}
