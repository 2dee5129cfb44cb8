// Package deploytest gives deploy tests what a real deployment has: a Docker registry
// (Debian's docker-registry, run as this test's own process on 127.0.0.1) and a Scope
// stand-in image (a FROM-scratch image of internal/scope/scopestub) pushed to it, so that
// deploys pull for real. Docker allows plain-HTTP registries on 127.0.0.0/8 without any
// daemon configuration.
//
// Outside CI, tests skip (with the reason) when the Docker engine is not usable or
// docker-registry is not installed; under CI=true either is a failure, since .ci/run
// provides them.
package deploytest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/testkit"
)

// RegistryBin is where Debian's docker-registry package installs the registry.
const RegistryBin = "/usr/bin/docker-registry"

// Docker runs the docker CLI and returns its combined output.
func Docker(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	return string(out), err
}

// RequireDocker needs the docker CLI and a usable engine (testkit.Need: skip outside CI,
// fail under CI).
func RequireDocker(t testing.TB) {
	t.Helper()
	_, err := exec.LookPath("docker")
	testkit.Need(t, err == nil, fmt.Sprint("docker is not installed: ", err))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := Docker(ctx, "info", "--format", "{{.ServerVersion}}")
	testkit.Need(t, err == nil, fmt.Sprintf("the docker engine is not usable: %v %s", err, strings.TrimSpace(out)))
}

// RandHex returns n random bytes in hex, for unique names.
func RandHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// FreePort returns a TCP port free on 127.0.0.1 just now.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Registry is a docker-registry process serving 127.0.0.1:Port from its own storage dir,
// killed when the test ends.
type Registry struct {
	Addr string // 127.0.0.1:PORT, the registry part of image references
	t    testing.TB
	stub string   // the scopestub binary, built on first use
	ids  []string // images built, removed again when the test ends
}

// StartRegistry requires Docker (see RequireDocker), then starts a registry.
func StartRegistry(t testing.TB) *Registry {
	t.Helper()
	RequireDocker(t)
	testkit.NeedFile(t, RegistryBin, "docker-registry")
	dir := t.TempDir()
	port := FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`, filepath.Join(dir, "storage"), addr)
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(RegistryBin, "serve", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	testkit.KillWithParent(cmd) // never outlives a test binary killed at go test's timeout
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	r := &Registry{Addr: addr, t: t}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		logf.Close()
		// Registered before any container a test makes, this runs after they are removed:
		// images a container still used could not be removed earlier.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, id := range r.ids {
			Docker(ctx, "image", "rm", "--force", id)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-exited:
			exited <- err
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("docker-registry exited: %v\n%s", err, log)
		default:
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("docker-registry did not answer on %s: %v\n%s", addr, err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return r
}

// Image is a Scope stand-in image to push.
type Image struct {
	Repo    string   // repository under the registry, default "scopestub"
	Tag     string   // default a random tag
	Variant string   // anything: a different Variant gives a different image (digest) under the same tag
	Args    []string // extra scopestub arguments, e.g. "--load-delay", "300ms"
}

// Push builds the stand-in image, pushes it as Addr/Repo:Tag and removes every local copy,
// so the next deploy has to pull it. It returns the reference. The images are removed from
// the local engine when the test ends.
func (r *Registry) Push(img Image) string {
	t := r.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if img.Repo == "" {
		img.Repo = "scopestub"
	}
	if img.Tag == "" {
		img.Tag = RandHex(6)
	}
	dir := t.TempDir()
	if r.stub == "" {
		r.stub = testkit.GoBuild(t, testkit.Build{Pkg: "./internal/scope/scopestub", Static: true})
	}
	stub, err := os.ReadFile(r.stub)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "scopestub"), stub, 0o755); err != nil {
		t.Fatal(err)
	}
	entry := []string{`"/scopestub"`, `"--host"`, `"0.0.0.0"`, `"--port"`, `"8000"`}
	for _, a := range img.Args {
		entry = append(entry, fmt.Sprintf("%q", a))
	}
	df := "FROM scratch\nCOPY scopestub /scopestub\n"
	if img.Variant != "" {
		df += fmt.Sprintf("LABEL scopectl.test.variant=%q\n", img.Variant)
	}
	df += "ENTRYPOINT [" + strings.Join(entry, ",") + "]\n"
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
		t.Fatal(err)
	}
	ref := r.Addr + "/" + img.Repo + ":" + img.Tag
	out, err := Docker(ctx, "build", "--quiet", "--tag", ref, dir)
	if err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	id := "" // the last line: the legacy builder may print a deprecation notice first
	if f := strings.Fields(out); len(f) > 0 && strings.HasPrefix(f[len(f)-1], "sha256:") {
		id = f[len(f)-1]
		r.ids = append(r.ids, id)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		Docker(ctx, "image", "rm", "--force", ref)
		if id != "" {
			Docker(ctx, "image", "rm", "--force", id)
		}
	})
	if out, err := Docker(ctx, "push", "--quiet", ref); err != nil {
		t.Fatalf("docker push %s: %v\n%s", ref, err, out)
	}
	r.RemoveLocal(ref)
	return ref
}

// RemoveLocal removes ref from the local engine (not from the registry), so the next
// deploy pulls it. A missing image is not an error.
func (r *Registry) RemoveLocal(ref string) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := Docker(ctx, "image", "rm", "--force", ref); err != nil && !strings.Contains(strings.ToLower(out), "no such image") {
		r.t.Fatalf("docker image rm %s: %v\n%s", ref, err, out)
	}
}

// ContainerExists reports whether a container named name exists on the local engine.
func ContainerExists(t testing.TB, name string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := Docker(ctx, "container", "inspect", "--format", "{{.Name}}", name)
	if err == nil {
		return true
	}
	if strings.Contains(strings.ToLower(out), "no such") {
		return false
	}
	t.Fatalf("docker container inspect %s: %v %s", name, err, out)
	return false
}

// RemoveContainerAtEnd removes the container name when the test ends.
func RemoveContainerAtEnd(t testing.TB, name string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		Docker(ctx, "rm", "--force", name)
	})
}

// KillAndWait kills the container and waits until Docker reports it stopped.
func KillAndWait(t testing.TB, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := Docker(ctx, "kill", name); err != nil {
		t.Fatalf("docker kill %s: %v %s", name, err, out)
	}
	for {
		out, _ := Docker(ctx, "inspect", "--format", "{{.State.Running}}", name)
		if strings.TrimSpace(out) == "false" {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("container %s still running after docker kill: %s", name, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
