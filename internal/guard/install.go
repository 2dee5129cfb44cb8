package guard

// Installing the guard: `pod create`, `pod start`, `pod guard` and deploy copy the
// static scopectl onto the pod (or SSH host) over SSH and start `scopectl guard` there,
// in the background, detached from the SSH session. Starting is restart-safe: the
// guard takes its flock before anything else, and the start script waits until either
// the new process holds it or exits saying which guard already does, so a second start
// (a retried create, pod start on a pod whose guard survived) never runs two.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/daydreamlive/scopectl/internal/deploy"
	"github.com/daydreamlive/scopectl/internal/ledger"
	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/store"
)

// DefaultPodDir is where scopectl, the guard's log and its files go on a RunPod pod:
// the volume, which survives a stop (the container disk does not).
const DefaultPodDir = "/workspace/.scopectl"

// DefaultHostIdleStop is the idle limit a guard on an SSH host applies to a container
// that carries no limit labels (one deployed before they existed).
const DefaultHostIdleStop = 30 * time.Minute

// InstallInput is one guard install.
type InstallInput struct {
	// Pod is the pod as last read; with Provider and Wait, Install waits for it to run
	// with a public SSH port first (a pod just created or started).
	Pod      *provider.Pod
	Provider provider.Provider
	Wait     time.Duration
	// NeedSSH: the pod exposes 22/tcp, so waiting for it includes its public SSH port
	// (false: it is waited for until it runs, and then found without SSH at once).
	NeedSSH bool
	// Host: Pod is an SSH host; the guard runs on the host and docker-stops Container
	// (default deploy.DefaultName).
	Host      bool
	Container string
	// Limits are passed to the guard as flags when Override (they replace what the pod
	// carries); otherwise the guard reads the pod's own (its env on RunPod, its
	// container's labels on an SSH host).
	Limits   provider.Limits
	Override bool
	NoGPU    bool
	// Dir is the folder for scopectl, guard.log and the guard's files on a pod
	// (default DefaultPodDir); an SSH host's is always $HOME/.scopectl.
	Dir string
	// Args are more `scopectl guard` flags (--scope-url, --no-procs, --min-gpu-util).
	Args []string
	// Binary gives the static linux/amd64 scopectl to copy there; it is asked for only
	// once the pod is reachable (what is missing there is said first).
	Binary func() ([]byte, error)
	// Open opens url (ssh://user@host:port/folder) as a remote that runs commands. A
	// RunPod pod's host key is the caller's business (trust on first use per pod).
	Open func(ctx context.Context, url string) (remote.Remote, remote.Runner, error)
	// Ledger, when set, gets the stops earlier guards made there (stops.jsonl), under
	// the provider name ProviderName.
	Ledger       store.LedgerStore
	ProviderName string
	Warn         func(string)
}

// Installed is a guard that runs on a pod (`pod guard --json`, deploy's "guard").
type Installed struct {
	Pod     string `json:"pod"`
	Limits  string `json:"limits"`
	PID     int    `json:"pid,omitempty"`
	Log     string `json:"log"`
	Already bool   `json:"already_running,omitempty"` // a guard was running: it was kept
	Stops   int    `json:"stops_read,omitempty"`      // earlier guard stops read into the ledger
}

// NotInstalledError says why no guard runs on a pod, in one line that names what is
// missing and the fallback.
type NotInstalledError struct {
	Pod     string
	Missing string
}

func (e *NotInstalledError) Error() string {
	return "guard not installed on " + e.Pod + ": " + e.Missing + "; `scopectl pod watch` (or `scopectl serve`) enforces its limits from this machine, `scopectl pod guard " + e.Pod + "` tries again"
}

func notInstalled(pod, format string, a ...any) error {
	return &NotInstalledError{Pod: pod, Missing: oneLine(fmt.Sprintf(format, a...))}
}

// Install copies scopectl onto the pod and starts its guard there, or finds the one
// already running. Every failure is a *NotInstalledError.
func Install(ctx context.Context, in InstallInput) (*Installed, error) {
	p := in.Pod
	if p == nil {
		return nil, errors.New("guard: no pod to install on")
	}
	if in.Provider != nil && in.Wait > 0 && !in.Host {
		got, err := deploy.WaitPod(ctx, in.Provider, p.ID, in.NeedSSH, in.Wait)
		if got != nil {
			p = got
		}
		if err != nil {
			return nil, notInstalled(p.ID, "%v", err)
		}
	}
	var lim *provider.Limits
	if in.Override {
		l := in.Limits
		lim = &l
	} else if l, ok := provider.LimitsFromEnv(p.Env); ok {
		lim = &l
	}
	if !in.Host && lim == nil {
		return nil, notInstalled(p.ID, "the pod carries no limits (%s): not created by scopectl", provider.EnvIdleStop)
	}
	u, ok := p.SSHURL()
	if !ok {
		return nil, notInstalled(p.ID, "no public SSH port (22/tcp) to reach it")
	}
	u = strings.TrimSuffix(u, "/")
	container := in.Container
	if container == "" {
		container = deploy.DefaultName
	}
	// Reach the machine, retrying a refused connection (sshd still starting) for Wait.
	open := func(url string) (remote.Remote, remote.Runner, error) {
		deadline := time.Now().Add(in.Wait)
		for n := 1; ; n++ {
			r, run, err := in.Open(ctx, url)
			if err == nil || !deploy.Retryable(err) || time.Now().After(deadline) || ctx.Err() != nil {
				return r, run, err
			}
			select {
			case <-ctx.Done():
				return nil, nil, ctx.Err()
			case <-time.After(min(time.Duration(n)*500*time.Millisecond, 5*time.Second)):
			}
		}
	}
	dir := DefaultPodDir
	if in.Dir != "" {
		dir = strings.TrimSuffix(in.Dir, "/")
	}
	if !strings.HasPrefix(dir, "/") || strings.ContainsAny(dir, "\n") {
		return nil, fmt.Errorf("guard: folder %q on the pod: want an absolute path", dir)
	}
	args := []string{"guard"}
	if !in.Host {
		args = append(args, "--dir", dir+"/guard", "--jobs", dir+"/jobs/*/state.json")
	} else {
		hr, hrun, err := open(u + "/")
		if err != nil {
			return nil, notInstalled(p.ID, "no SSH: %v", err)
		}
		out, code, err := hrun.Run(ctx, `mkdir -p "$HOME/.scopectl" && chmod 700 "$HOME/.scopectl" && echo "$HOME"`)
		hr.Close()
		home := strings.TrimSpace(lastLine(out))
		if err != nil || code != 0 || !strings.HasPrefix(home, "/") || strings.ContainsAny(home, "'\"$`\\\n") {
			return nil, notInstalled(p.ID, "cannot read the login's home (exit %d, %v)", code, err)
		}
		dir = home + "/.scopectl"
		args = append(args, "--container", container, "--dir", dir+"/guard-"+container)
		if port, ok := p.Ports[strconv.Itoa(deploy.ContainerPort)+"/http"]; ok {
			args = append(args, "--scope-url", fmt.Sprintf("http://127.0.0.1:%d", port))
		}
	}
	if in.Override {
		args = append(args, "--idle-stop", lim.IdleStop.String(), "--max-hours", strconv.FormatFloat(lim.MaxHours, 'f', -1, 64))
		if lim.StopOnJobEnd {
			args = append(args, "--stop-on-job-end")
		}
	}
	if in.NoGPU {
		args = append(args, "--no-gpu")
	}
	every := DefaultEvery
	if lim != nil {
		every = EveryFor(*lim)
	}
	args = append(append(args, "--every", every.String()), in.Args...) // Args last: they win

	r, run, err := open(u + dir)
	if err != nil {
		return nil, notInstalled(p.ID, "no SSH: %v", err)
	}
	defer r.Close()
	sh := func(script string) (string, int, error) { return run.Run(ctx, script) }
	if !in.Host {
		// The pod-scoped key RunPod gives every pod: without it the guard cannot stop the pod.
		if _, code, err := sh(`test -n "$RUNPOD_API_KEY" || tr '\0' '\n' < /proc/1/environ 2>/dev/null | grep -q '^RUNPOD_API_KEY=.'`); err != nil || code != 0 {
			return nil, notInstalled(p.ID, "no pod-scoped RUNPOD_API_KEY in the pod to stop itself with")
		}
	}
	gdir := dir + "/guard"
	if in.Host {
		gdir = dir + "/guard-" + container
	}
	res := &Installed{Pod: p.ID, Limits: "as the pod carries them", Log: dir + "/guard.log"}
	if lim != nil {
		res.Limits = lim.String()
	}
	if in.Host && !in.Override {
		res.Limits = "the container's labels (default idle " + DefaultHostIdleStop.String() + ")"
	}
	// The stops an earlier guard made, into the ledger.
	if in.Ledger != nil {
		if out, code, err := sh("cat " + shq(gdir+"/stops.jsonl") + " 2>/dev/null"); err == nil && code == 0 {
			res.Stops = recordStops(ctx, in, p, out)
		}
	}
	if in.Binary == nil {
		return nil, notInstalled(p.ID, "no scopectl binary to copy")
	}
	bin, err := in.Binary()
	if err != nil {
		return nil, notInstalled(p.ID, "%v", err)
	}
	sum := sha256.Sum256(bin)
	want := hex.EncodeToString(sum[:])
	// The same scopectl already there (on the volume, from the pod's last boot): kept.
	if h, ok := r.(remote.Hasher); !ok || !sameHash(ctx, h, want) {
		if _, err := r.Put(ctx, "scopectl", remote.Source{R: bytes.NewReader(bin), Size: int64(len(bin)), SHA256: want}, remote.PutOptions{}); err != nil {
			return nil, notInstalled(p.ID, "copying scopectl: %v", err)
		}
	}
	out, code, err := sh(StartScript(dir+"/scopectl", gdir, res.Log, args))
	line := strings.TrimSpace(lastLine(out))
	verb, pid, _ := strings.Cut(line, " ")
	n, perr := strconv.Atoi(pid)
	if err != nil || code != 0 || perr != nil || (verb != "started" && verb != "running") {
		return nil, notInstalled(p.ID, "it did not start (exit %d, %v): %s", code, err, out)
	}
	res.PID, res.Already = n, verb == "running"
	return res, nil
}

// EveryFor is how often a guard with these limits checks: every 30 s, more often for
// idle limits under a minute and a half.
func EveryFor(l provider.Limits) time.Duration {
	if l.IdleStop > 0 && l.IdleStop < 90*time.Second {
		return max(l.IdleStop/3, 200*time.Millisecond)
	}
	return DefaultEvery
}

// StartScript starts `exe args…` in the background (its output appended to log) and
// prints "started PID" once the new guard holds gdir/guard.lock, or "running PID"
// when it exited because another guard holds it; anything else exits 1 with the
// log's last lines. The lock is the kernel's (flock), so a pid left in guard.lock by
// a guard that died with its pod (a restart) is never taken for a live one.
func StartScript(exe, gdir, log string, args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = shq(a)
	}
	return `exe=` + shq(exe) + `; g=` + shq(gdir) + `; log=` + shq(log) + `
chmod 700 "$exe" && mkdir -p "$g" || exit 1
nohup "$exe" ` + strings.Join(q, " ") + ` >> "$log" 2>&1 < /dev/null &
pid=$!
i=0
while [ $i -lt 150 ]; do
  if [ "$(cat "$g/guard.lock" 2>/dev/null)" = "$pid" ]; then echo "started $pid"; exit 0; fi
  kill -0 $pid 2>/dev/null || break
  sleep 0.1; i=$((i+1))
done
if kill -0 $pid 2>/dev/null; then echo "started $pid"; exit 0; fi
held=$(tail -n 20 "$log" | grep -o 'another guard is running (pid [0-9]*' | tail -n 1 | grep -o '[0-9]*$')
if [ -n "$held" ] && kill -0 "$held" 2>/dev/null; then echo "running $held"; exit 0; fi
tail -n 3 "$log"; exit 1
`
}

// recordStops writes the accepted stops of a stops.jsonl into the ledger; it returns
// how many it read.
func recordStops(ctx context.Context, in InstallInput, p *provider.Pod, jsonl string) int {
	n := 0
	for _, ln := range strings.Split(jsonl, "\n") {
		s, err := ReadStop([]byte(ln))
		if err != nil || s == nil || !s.Accepted {
			continue
		}
		cost := s.CostPerHr
		if cost == 0 {
			cost = p.CostPerHr
		}
		run := &provider.Pod{ID: p.ID, Name: p.Name, GPUType: p.GPUType, CostPerHr: cost, StartedAt: s.Started, VolumeGB: p.VolumeGB, NetworkVolumeID: p.NetworkVolumeID}
		if err := ledger.Stopped(ctx, in.Ledger, in.ProviderName, p.ID, s.At, ledger.EndGuard, s.Reason, time.Duration(s.IdleFor*float64(time.Second)), run); err != nil {
			if in.Warn != nil {
				in.Warn("cost ledger: a guard stop of " + p.ID + " was not recorded: " + oneLine(err.Error()))
			}
			continue
		}
		n++
	}
	return n
}

func sameHash(ctx context.Context, h remote.Hasher, want string) bool {
	got, err := h.Hash(ctx, "scopectl")
	return err == nil && got == want
}

func lastLine(s string) string {
	ls := strings.Split(strings.TrimSpace(s), "\n")
	return ls[len(ls)-1]
}

// shq single-quotes one shell argument.
func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
