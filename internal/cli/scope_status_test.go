package cli_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/gpu"
	"github.com/daydreamlive/scopectl/internal/lora"
	"github.com/daydreamlive/scopectl/internal/lora/loratest"
	"github.com/daydreamlive/scopectl/internal/testkit"
)

// startScopeStub builds and runs the Scope stand-in on 127.0.0.1 with its LoRA dir at
// e.scopeDir and returns its URL once it answers.
func startScopeStub(t *testing.T, e *env) string {
	t.Helper()
	stub := testkit.GoBuild(t, testkit.Build{Pkg: "./internal/scope/scopestub", Static: true})
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command(stub, "--host", "127.0.0.1", "--port", itoa(port))
	cmd.Env = append(os.Environ(), "DAYDREAM_SCOPE_LORA_DIR="+e.scopeDir)
	stderr, _ := cmd.StderrPipe()
	testkit.KillWithParent(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	go bufio.NewReader(stderr).WriteTo(discard{})
	url := "http://127.0.0.1:" + itoa(port)
	for i := 0; ; i++ {
		resp, err := http.Get(url + "/health")
		if err == nil {
			resp.Body.Close()
			return url
		}
		if i > 100 {
			t.Fatal("stub never answered")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// fakeNvidiaSMI writes an nvidia-smi that prints real output recorded on an H100 for
// exactly the arguments scopectl passes (gpu.QueryArgs), and fails on any others. It
// returns the directory to put first on PATH.
func fakeNvidiaSMI(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	rec := filepath.Join(moduleRoot, "internal", "gpu", "testdata", "h100-busy-query-noheader-nounits.csv")
	script := "#!/bin/sh\n[ \"$*\" = '" + strings.Join(gpu.QueryArgs(), " ") + "' ] || { echo \"fake nvidia-smi: unexpected arguments: $*\"; exit 2; }\nexec cat '" + rec + "'\n"
	if err := os.WriteFile(filepath.Join(dir, "nvidia-smi"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// sessionPath is the PATH sshd sessions get in the tests: dir first, then the usual.
func sessionPath(dir string) string {
	return dir + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
}

type statusJSON struct {
	Target string `json:"target"`
	Pod    *struct {
		ID        string  `json:"id"`
		Status    string  `json:"status"`
		CostPerHr float64 `json:"cost_per_hr"`
		UptimeS   float64 `json:"uptime_s"`
		CostSoFar float64 `json:"cost_so_far"`
		SSH       string  `json:"ssh"`
	} `json:"pod"`
	Container *struct {
		Name    string `json:"name"`
		Exists  bool   `json:"exists"`
		Managed bool   `json:"managed"`
		Status  string `json:"status"`
		Running bool   `json:"running"`
		Image   string `json:"image"`
	} `json:"container"`
	Scope   string `json:"scope"`
	Healthy bool   `json:"healthy"`
	Health  *struct {
		Status  string `json:"status"`
		Version string `json:"version"`
	} `json:"health"`
	Pipeline *struct {
		Status      string `json:"status"`
		PipelineID  string `json:"pipeline_id"`
		LoadedLoRAs []struct {
			Path  string  `json:"path"`
			Scale float64 `json:"scale"`
		} `json:"loaded_loras"`
	} `json:"pipeline"`
	Installed []struct {
		Name        string `json:"name"`
		InLibrary   bool   `json:"in_library"`
		LibraryName string `json:"library_name"`
	} `json:"installed"`
	GPUSource string `json:"gpu_source"`
	GPUs      []struct {
		Name           string `json:"name"`
		MemoryUsedMiB  int64  `json:"memory_used_mib"`
		MemoryTotalMiB int64  `json:"memory_total_mib"`
		UtilizationPct int    `json:"utilization_pct"`
		TemperatureC   int    `json:"temperature_c"`
	} `json:"gpus"`
	Errors []string `json:"errors"`
}

// checkRecordedGPU checks the GPU of the recorded busy-H100 output.
func checkRecordedGPU(t *testing.T, v statusJSON) {
	t.Helper()
	if len(v.GPUs) != 1 || v.GPUs[0].Name != "NVIDIA H100 80GB HBM3" || v.GPUs[0].MemoryUsedMiB != 21491 || v.GPUs[0].MemoryTotalMiB != 81559 ||
		v.GPUs[0].UtilizationPct != 100 || v.GPUs[0].TemperatureC != 67 || v.GPUSource != "nvidia-smi" {
		t.Fatalf("gpus: %+v (source %q, errors %v)", v.GPUs, v.GPUSource, v.Errors)
	}
}

// TestStatusAgainstScopeStub runs the Scope stand-in binary and reads it with
// `scopectl status` (no target: this machine, its GPU through a fake nvidia-smi on PATH)
// and `scopectl logs`; then an unreachable Scope is exit 1 with the reason listed.
func TestStatusAgainstScopeStub(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	e := newEnv(t)
	p := e.lora("a.safetensors", loratest.Spec{Base: lora.BaseT2V1_3B})
	e.mustRun("lora", "add", p)
	e.mustRun("lora", "install", "a")
	url := startScopeStub(t, e)
	t.Setenv("PATH", fakeNvidiaSMI(t)+string(os.PathListSeparator)+os.Getenv("PATH"))
	out := e.mustRun("status", "--scope", url, "--json")
	if !strings.Contains(out, "a.safetensors") || !strings.Contains(out, `"in_library": true`) {
		t.Fatalf("status: %s", out)
	}
	v := decode[statusJSON](t, out)
	if v.Target != "local" || !v.Healthy || v.Health.Version != "0.0.0-scopestub" || v.Pipeline == nil || v.Pipeline.Status != "not_loaded" || len(v.Errors) != 0 {
		t.Fatalf("status: %s", out)
	}
	checkRecordedGPU(t, v)
	text := e.mustRun("status", "--scope", url)
	for _, want := range []string{"health:", "healthy", "gpu 0:", "NVIDIA H100 80GB HBM3, 21491/81559 MiB, 100% util, 67°C", "yes (a)"} {
		if !strings.Contains(text, want) {
			t.Errorf("status text lacks %q:\n%s", want, text)
		}
	}
	if _, errs, code := e.run("logs", "--scope", url, "-n", "5000"); code != 2 {
		t.Fatalf("logs -n 5000: %d %s", code, errs)
	}
	e.mustRun("logs", "--scope", url, "-n", "10")

	// Scope unreachable: exit 1, the view still printed, the reason listed.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "http://" + l.Addr().String()
	l.Close()
	out, _, code := e.run("status", "--scope", dead, "--json")
	if code != 1 {
		t.Fatalf("status of an unreachable Scope: exit %d", code)
	}
	v = decode[statusJSON](t, out)
	if v.Healthy || v.Health != nil || len(v.Errors) == 0 || !strings.HasPrefix(v.Errors[0], "scope: "+dead) {
		t.Fatalf("status of an unreachable Scope: %s", out)
	}
	checkRecordedGPU(t, v)
}

// TestStatusSSHHostWithoutScope: an SSH host with no Scope container and no nvidia-smi —
// every part is listed under errors, nothing fails hard, exit 1 (Scope is not healthy).
func TestStatusSSHHostWithoutScope(t *testing.T) {
	e := newEnv(t)
	t.Setenv("SSH_AUTH_SOCK", "")
	port := startSSHDWith(t, e.root, "SetEnv PATH=/usr/sbin:/usr/bin:/sbin:/bin\n")
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "http://" + l.Addr().String()
	l.Close()
	out, _, code := e.run("status", fmt.Sprintf("ssh://"+testkit.User()+"@127.0.0.1:%d", port), "--name", "scopectl-no-such-container", "--scope", dead, "--json")
	if code != 1 {
		t.Fatalf("exit %d: %s", code, out)
	}
	v := decode[statusJSON](t, out)
	joined := strings.Join(v.Errors, "\n")
	for _, want := range []string{"container: ", "scope: " + dead, "gpu: nvidia-smi not found on ssh://" + testkit.User() + "@127.0.0.1:"} {
		if !strings.Contains(joined, want) {
			t.Errorf("errors lack %q: %v", want, v.Errors)
		}
	}
	if v.Healthy || len(v.GPUs) != 0 || v.GPUSource != "nvidia-smi" {
		t.Fatalf("%s", out)
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func itoa(n int) string { return strconv.Itoa(n) }
