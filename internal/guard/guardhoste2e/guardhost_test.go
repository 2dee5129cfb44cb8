// Package guardhoste2e tests the guard on an SSH host with Docker as `pod create
// --provider ssh` installs it and deploy labels the Scope container with its limits.
package guardhoste2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/deploy"
	"github.com/daydreamlive/scopectl/internal/deploy/deploytest"
	"github.com/daydreamlive/scopectl/internal/docker"
	"github.com/daydreamlive/scopectl/internal/guard"
	"github.com/daydreamlive/scopectl/internal/guard/guardtest"
	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/remote"
	_ "github.com/daydreamlive/scopectl/internal/remote/ssh"
	"github.com/daydreamlive/scopectl/internal/testkit"
)

func TestMain(m *testing.M) { testkit.Main(m) }

// TestHostGuard: `pod create --provider ssh`'s guard install on an SSH host with
// Docker: before anything is deployed it waits; deploy puts the limits on the Scope
// container as labels and the guard, reading them, docker-stops the idle container
// within its limit + 60 s; started again by someone, it is stopped again; a second
// install keeps the running guard; after a reboot (the guard gone, a live pid left in
// its lock) a new one starts.
func TestHostGuard(t *testing.T) {
	deploytest.RequireDocker(t)
	reg := deploytest.StartRegistry(t)
	img := reg.Push(deploytest.Image{})
	lap := guardtest.NewLaptop(t)
	hostHome := t.TempDir()
	kh := lap.MachineHome(t, hostHome)
	sshPort := testkit.StartSSHD(t, hostHome, "SetEnv PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n")
	name := "scopectl-guard-e2e-" + deploytest.RandHex(5)
	deploytest.RemoveContainerAtEnd(t, name)
	scopePort := deploytest.FreePort(t)
	gdir := filepath.Join(hostHome, ".scopectl", "guard-"+name)
	t.Cleanup(func() { guardtest.KillGuard(gdir) })
	bin, err := os.ReadFile(testkit.Scopectl(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	open := func(ctx context.Context, u string) (remote.Remote, remote.Runner, error) {
		r, err := remote.Open(ctx, u, remote.Env{KnownHosts: kh})
		if err != nil {
			return nil, nil, err
		}
		return r, r.(remote.Runner), nil
	}
	host := &provider.Pod{ID: "ssh-guarde2e", PublicIP: "127.0.0.1", SSHUser: testkit.User(), Status: provider.StatusRunning,
		Ports: map[string]int{"22/tcp": sshPort, "8000/http": scopePort}}
	install := func() *guard.Installed {
		t.Helper()
		gi, err := guard.Install(ctx, guard.InstallInput{Pod: host, Host: true, Container: name, Binary: func() ([]byte, error) { return bin, nil }, NoGPU: true,
			Args: []string{"--no-procs", "--every", "500ms"}, Open: open})
		if err != nil {
			t.Fatal(err)
		}
		return gi
	}
	log := func() string {
		b, _ := os.ReadFile(filepath.Join(hostHome, ".scopectl", "guard.log"))
		return string(b)
	}
	waitFor := func(what string, within time.Duration, ok func() bool) time.Duration {
		t.Helper()
		start := time.Now()
		for !ok() {
			if time.Since(start) > within {
				t.Fatalf("%s: not within %s; guard log:\n%s", what, within, log())
			}
			time.Sleep(100 * time.Millisecond)
		}
		return time.Since(start)
	}
	running := func() bool {
		out, _ := deploytest.Docker(ctx, "container", "inspect", "--format", "{{.State.Running}}", name)
		return strings.TrimSpace(out) == "true"
	}

	// Added, nothing deployed yet: the guard waits for the container.
	gi := install()
	waitFor("a guard waiting for its container", 20*time.Second, func() bool {
		b, _ := os.ReadFile(filepath.Join(gdir, "state.json"))
		return strings.Contains(string(b), "not running")
	})

	// deploy puts the limits on the container; the guard reads them there.
	const limit = 3 * time.Second
	r, run, err := open(ctx, fmt.Sprintf("ssh://%s@127.0.0.1:%d/", testkit.User(), sshPort))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := deploy.Apply(ctx, run, deploy.Spec{Image: img, Name: name, Port: scopePort, Volume: t.TempDir(),
		Labels: provider.Limits{IdleStop: limit}.Labels()}, false); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	ct, err := docker.Inspect(ctx, run, name)
	if l, ok := provider.LimitsFromEnv(provider.LimitsEnvFromLabels(ct.Labels)); err != nil || !ok || l.IdleStop != limit {
		t.Fatalf("the container's limits: %+v %v %v", ct, l, err)
	}
	took := waitFor("the idle container stopped", limit+60*time.Second, func() bool { return !running() })
	ran := func() time.Duration {
		out, _ := deploytest.Docker(ctx, "container", "inspect", "--format", "{{.State.StartedAt}} {{.State.FinishedAt}}", name)
		f := strings.Fields(out)
		if len(f) != 2 {
			return 0
		}
		a, _ := time.Parse(time.RFC3339Nano, f[0])
		b, _ := time.Parse(time.RFC3339Nano, f[1])
		return b.Sub(a)
	}
	t.Logf("SSH host: idle limit %s (a label): the container ran %.1fs (%.1fs past the limit, docker stop's own wait included); seen stopped %.1fs after deploy returned",
		limit, ran().Seconds(), (ran() - limit).Seconds(), time.Since(t0).Seconds())
	if ran() < limit {
		t.Errorf("stopped after %s, before its idle limit %s", ran(), limit)
	}
	_ = took
	waitFor("stop.json: the stop accepted", 30*time.Second, func() bool {
		b, _ := os.ReadFile(filepath.Join(gdir, "stop.json"))
		s, err := guard.ReadStop(b)
		return err == nil && s != nil && s.Accepted && s.Kind == guard.KindIdle
	})

	// Started again (pod start): the same guard stops it again, its limit counted anew.
	if out, err := deploytest.Docker(ctx, "start", name); err != nil {
		t.Fatalf("docker start: %v %s", err, out)
	}
	took = waitFor("the restarted container stopped again", limit+60*time.Second, func() bool { return !running() })
	t.Logf("SSH host: started again, ran %.1fs (seen stopped %.1fs after docker start)", ran().Seconds(), took.Seconds())
	if ran() < limit {
		t.Errorf("restarted container stopped after %s, before its idle limit %s", ran(), limit)
	}

	// A second install keeps the guard that runs.
	if again := install(); !again.Already || again.PID != gi.PID {
		t.Fatalf("second install: %+v, first %+v", again, gi)
	}
	// A reboot: the guard is gone, and its lock names a pid that lives (this test's).
	guardtest.KillGuard(gdir)
	os.WriteFile(filepath.Join(gdir, "guard.lock"), []byte(fmt.Sprintf("%d\n", os.Getpid())), 0o600)
	if after := install(); after.Already || after.PID == gi.PID || after.PID == os.Getpid() {
		t.Fatalf("install after a reboot: %+v", after)
	}
}
