package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/daydreamlive/scopectl/internal/deploy"
	"github.com/daydreamlive/scopectl/internal/gpu"
	"github.com/daydreamlive/scopectl/internal/guard"
	"github.com/daydreamlive/scopectl/internal/ledger"
	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/provider/runpod"
	"github.com/daydreamlive/scopectl/internal/provider/sshhost"
	"github.com/daydreamlive/scopectl/internal/secret"
	"github.com/daydreamlive/scopectl/internal/watch"
)

// guardCmd is `scopectl guard`, hidden: it runs on the pod (or SSH host) itself, the
// same static binary the agent uses, and stops its pod past the pod's limits. See
// package guard.
func (a *app) guardCmd() *cobra.Command {
	var dir, scopeURL, container, jobsGlob string
	var every time.Duration
	var minUtil int
	var noGPU, noProcs bool
	cmd := &cobra.Command{
		Use:    "guard [--container NAME]",
		Hidden: true,
		Short:  "Run on a pod: stop it when idle past its idle limit, past its max hours, or when its training job ended",
		Long: "On a RunPod pod it reads the pod's limits (" + provider.EnvIdleStop + ", " + provider.EnvMaxHours + ", " +
			provider.EnvStopOnJobEnd + ")\nand stops the pod through RunPod's API with the pod-scoped key RunPod puts into every pod\n" +
			"(RUNPOD_POD_ID, RUNPOD_API_KEY). With --container it runs on an SSH host and `docker stop`s that\ncontainer. " +
			"Limits given as flags (--idle-stop, --max-hours, --stop-on-job-end) replace the pod's.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			lim, err := guard.LimitsFromEnviron()
			fl := cmd.Flags()
			if fl.Changed("idle-stop") || fl.Changed("max-hours") || fl.Changed("stop-on-job-end") {
				lim.IdleStop, _ = fl.GetDuration("idle-stop")
				lim.MaxHours, _ = fl.GetFloat64("max-hours")
				lim.StopOnJobEnd, _ = fl.GetBool("stop-on-job-end")
				err = nil
			}
			if err != nil {
				return err
			}
			logf := func(format string, args ...any) {
				fmt.Fprintf(a.stderr, "%s %s\n", time.Now().UTC().Format(time.RFC3339), secret.Default.Redact(fmt.Sprintf(format, args...)))
			}
			g := &guard.Guard{Limits: lim, Dir: dir, Every: every, Log: logf,
				Jobs: &guard.Jobs{Glob: jobsGlob, Procs: !noProcs}}
			g.Probes = []watch.Probe{watch.ScopeProbe{URL: func(provider.Pod) string { return scopeURL }}}
			if !noGPU {
				g.Probes = append(g.Probes, watch.GPUProbe{Source: func(context.Context, provider.Pod) (gpu.Source, error) { return gpu.SMI{}, nil }, MinUtil: minUtil})
			}
			if container != "" {
				ds := guard.DockerStopper{Container: container}
				g.Stopper, g.Target = ds, "container "+container
				if t, err := ds.StartedAt(ctx); err == nil {
					g.Started = t
				}
			} else {
				podID, key := guard.PodEnv(runpod.EnvPodID), guard.PodEnv(runpod.EnvAPIKey)
				if podID == "" || key == "" {
					return errors.New("guard: no RUNPOD_POD_ID or RUNPOD_API_KEY on this machine: not a RunPod pod (use --container on an SSH host)")
				}
				secret.Default.Add(secret.New(key))
				opts := runpod.OptionsFromEnv(guard.PodEnv)
				opts.APIKey, opts.Redactor = secret.New(key), secret.Default
				c, err := runpod.New(opts)
				if err != nil {
					return err
				}
				g.Stopper, g.Target = guard.RunPodStopper{Client: c, PodID: podID}, podID
				started, _, note, err := guard.PodStart(ctx, c, podID, time.Now())
				switch {
				case err != nil:
					logf("guard: cannot read the pod's start (%v): max-hours counts from now", err)
				default:
					g.Started = started
					if note != "" {
						logf("guard: %s", note)
					}
				}
			}
			release, err := guard.Lock(cmpDir(dir))
			if err != nil {
				return err
			}
			defer release()
			err = g.Run(ctx)
			if ctx.Err() != nil {
				return nil
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", guard.DefaultDir, "where the guard keeps its lock, state.json, stop.json and stops.jsonl")
	f.StringVar(&scopeURL, "scope-url", fmt.Sprintf("http://127.0.0.1:%d", deploy.ContainerPort), "Scope's HTTP API on this machine")
	f.StringVar(&container, "container", "", "on an SSH host: the Scope container to docker stop")
	f.StringVar(&jobsGlob, "jobs", guard.DefaultJobsGlob, "training job state files")
	f.DurationVar(&every, "every", guard.DefaultEvery, "how often to check")
	f.IntVar(&minUtil, "min-gpu-util", 5, "GPU utilisation (%) that counts as busy")
	f.BoolVar(&noGPU, "no-gpu", false, "do not read nvidia-smi")
	f.BoolVar(&noProcs, "no-procs", false, "do not look for `scopectl train supervise` processes")
	f.Duration("idle-stop", 0, "replace the pod's idle limit")
	f.Float64("max-hours", 0, "replace the pod's max hours")
	f.Bool("stop-on-job-end", false, "replace the pod's stop-on-job-end")
	return cmd
}

func cmpDir(d string) string {
	if strings.TrimSpace(d) == "" {
		return guard.DefaultDir
	}
	return d
}

// podGuardCmd is `scopectl pod guard ID`: copy this scopectl onto the pod (or SSH host)
// and start the guard there.
func (a *app) podGuardCmd() *cobra.Command {
	var rf remoteFlags
	var binary string
	var o guardOverrides
	cmd := &cobra.Command{
		Use:   "guard ID [--idle-stop D] [--max-hours H]",
		Short: "Start the guard on a pod (or SSH host): it stops the pod itself past its limits, laptop closed or not",
		Long: "Copies this scopectl (static linux/amd64) to " + DefaultAgentBinDir + " on the pod over SSH and starts\n" +
			"`scopectl guard` there (one per pod: a second start replaces nothing). On RunPod it stops the pod\n" +
			"with the pod-scoped RUNPOD_API_KEY RunPod puts into every pod; your own key never goes there.\n" +
			"It reads the stops an earlier guard made into the cost ledger.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, p, err := a.podWithClient(ctx, args[0], rf)
			if err != nil {
				return err
			}
			o.idleSet, o.maxSet = cmd.Flags().Changed("idle-stop"), cmd.Flags().Changed("max-hours")
			info, err := a.installGuardWith(ctx, c, p, rf, binary, o)
			if err != nil {
				return err
			}
			return a.out(info, func(w io.Writer) {
				fmt.Fprintf(w, "guard running on %s (pid %v): %s\n", p.ID, info["pid"], info["limits"])
			})
		},
	}
	cmd.Flags().StringVar(&binary, "binary", "", "scopectl binary to copy (default: this one, if linux/amd64)")
	cmd.Flags().DurationVar(&o.idle, "idle-stop", 0, "on an SSH host: the idle limit (default: the host's record)")
	cmd.Flags().Float64Var(&o.maxHours, "max-hours", 0, "on an SSH host: the max hours (default: the host's record)")
	cmd.Flags().BoolVar(&o.noGPU, "no-gpu", false, "the guard ignores nvidia-smi (Scope and training jobs decide alone)")
	rf.add(cmd)
	return cmd
}

// guardOverrides are pod guard's flags.
type guardOverrides struct {
	idle            time.Duration
	maxHours        float64
	idleSet, maxSet bool
	noGPU           bool
}

// guardEvery is how often a guard with these limits checks: every 30 s, more often
// for limits under a minute and a half.
func guardEvery(l provider.Limits) time.Duration {
	if l.IdleStop > 0 && l.IdleStop < 90*time.Second {
		return max(l.IdleStop/3, 200*time.Millisecond)
	}
	return guard.DefaultEvery
}

// installGuard copies scopectl onto pod p and starts its guard. On an SSH host the
// guard runs on the host itself and docker-stops the Scope container.
func (a *app) installGuard(ctx context.Context, c provider.Provider, p *provider.Pod, rf remoteFlags, binary string) (map[string]any, error) {
	return a.installGuardWith(ctx, c, p, rf, binary, guardOverrides{})
}

func (a *app) installGuardWith(ctx context.Context, c provider.Provider, p *provider.Pod, rf remoteFlags, binary string, o guardOverrides) (map[string]any, error) {
	if binary == "" {
		if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
			return nil, fmt.Errorf("guard not installed: this scopectl is %s/%s, the pod needs linux/amd64 (--binary)", runtime.GOOS, runtime.GOARCH)
		}
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		binary = exe
	}
	bin, err := os.ReadFile(binary)
	if err != nil {
		return nil, err
	}
	_, isHost := c.(*sshhost.Provider)
	lim := limitsOf(*p, nil)
	dir, extra, container := DefaultAgentBinDir, "", ""
	if isHost {
		rec, _, err := a.sshHost(ctx, p.ID)
		if err != nil {
			return nil, err
		}
		if lim == nil {
			lim = &provider.Limits{IdleStop: rec.IdleStop, MaxHours: rec.MaxHours}
		}
		if o.idleSet {
			lim.IdleStop = o.idle
		}
		if o.maxSet {
			lim.MaxHours = o.maxHours
		}
		container = rec.Container
		if container == "" {
			container = "daydream-scope"
		}
		dir = "" // $HOME/.scopectl, read below
		extra = fmt.Sprintf(" --container %s --idle-stop %s --max-hours %g", shq(container), lim.IdleStop, lim.MaxHours)
		if port, ok := p.Ports["8000/http"]; ok {
			extra += fmt.Sprintf(" --scope-url http://127.0.0.1:%d", port)
		}
	} else if lim == nil {
		return nil, fmt.Errorf("guard not installed: pod %s carries no limits (%s): not created by this scopectl; `scopectl pod watch` can still stop it if it is recorded", p.ID, provider.EnvIdleStop)
	}
	u, ok := p.SSHURL()
	if !ok {
		return nil, fmt.Errorf("guard not installed: pod %s has no public SSH port; `scopectl pod watch` enforces its limits", p.ID)
	}
	if !isHost && rf.knownHosts == "" {
		rf.knownHosts = filepath.Join(a.cfg.DataDir, "known_hosts.d", p.ID)
		rf.acceptNewHostKey = true
	}
	if o.noGPU {
		extra += " --no-gpu"
	}
	extra += " --every " + guardEvery(*lim).String()
	if dir == "" {
		// An SSH host: the guard lives in the login's home.
		_, hrun, err := a.openRunner(ctx, u, rf)
		if err != nil {
			return nil, fmt.Errorf("guard not installed: %w; `scopectl pod watch` enforces the limits", err)
		}
		out, code, err := hrun.Run(ctx, `mkdir -p "$HOME/.scopectl" && chmod 700 "$HOME/.scopectl" && echo "$HOME"`)
		home := strings.TrimSpace(lastLine(out))
		if err != nil || code != 0 || !strings.HasPrefix(home, "/") || strings.ContainsAny(home, "'\"$`\\") {
			return nil, fmt.Errorf("guard not installed: cannot read the login's home on %s (exit %d, %v)", p.ID, code, err)
		}
		dir = home + "/.scopectl"
		extra += " --dir " + shq(dir+"/guard-"+container)
	}
	r, run, err := a.openRunner(ctx, strings.TrimSuffix(u, "/")+dir, rf)
	if err != nil {
		return nil, fmt.Errorf("guard not installed: %w; `scopectl pod watch` enforces the limits", err)
	}
	defer r.Close()
	sh := func(script string) (string, int, error) { return run.Run(ctx, script) }
	if !isHost {
		// The pod-scoped key RunPod gives every pod: without it the guard cannot stop the pod.
		if _, code, err := sh(`test -n "$RUNPOD_API_KEY" || tr '\0' '\n' < /proc/1/environ 2>/dev/null | grep -q '^RUNPOD_API_KEY=.'`); err != nil || code != 0 {
			return nil, fmt.Errorf("guard not installed: pod %s has no RUNPOD_API_KEY (RunPod's pod-scoped key) to stop itself with; `scopectl pod watch` enforces its limits", p.ID)
		}
	}
	absDir := dir
	gdir := absDir + "/guard"
	if isHost {
		gdir = absDir + "/guard-" + container
	}
	// The stops an earlier guard made, into the ledger.
	if out, code, err := sh("cat " + gdir + "/stops.jsonl 2>/dev/null"); err == nil && code == 0 {
		a.ingestGuardStops(ctx, c, p, out)
	}
	if err := putBytes(ctx, r, "scopectl", bin, nil); err != nil {
		return nil, fmt.Errorf("guard not installed: copying scopectl: %w", err)
	}
	exe := absDir + "/scopectl"
	start := "chmod 700 " + exe + " && mkdir -p " + gdir + " && " +
		"if [ -f " + gdir + "/guard.lock ] && kill -0 $(cat " + gdir + "/guard.lock) 2>/dev/null; then cat " + gdir + "/guard.lock; exit 0; fi; " +
		"nohup " + exe + " guard" + extra + " >> " + absDir + "/guard.log 2>&1 < /dev/null & sleep 1; " +
		"kill -0 $! && echo $!"
	out, code, err := sh(start)
	if err != nil || code != 0 {
		tail, _, _ := sh("tail -n 3 " + absDir + "/guard.log")
		return nil, fmt.Errorf("guard not installed: it did not start (exit %d, %v): %s", code, err, strings.Join(strings.Fields(tail), " "))
	}
	info := map[string]any{"pod": p.ID, "limits": limitsText(lim), "log": absDir + "/guard.log"}
	if pid, err := strconv.Atoi(strings.TrimSpace(lastLine(out))); err == nil {
		info["pid"] = pid
	}
	return info, nil
}

func lastLine(s string) string {
	ls := strings.Split(strings.TrimSpace(s), "\n")
	return ls[len(ls)-1]
}

// ingestGuardStops records the stops a guard wrote (stops.jsonl) in the ledger.
func (a *app) ingestGuardStops(ctx context.Context, c provider.Provider, p *provider.Pod, jsonl string) {
	ls, err := a.ledgerStore()
	if err != nil {
		return
	}
	prov := ""
	if n, ok := c.(interface{ Name() string }); ok {
		prov = n.Name()
	}
	for _, ln := range strings.Split(jsonl, "\n") {
		s, err := guard.ReadStop([]byte(ln))
		if err != nil || s == nil || !s.Accepted {
			continue
		}
		run := &provider.Pod{ID: p.ID, Name: p.Name, GPUType: p.GPUType, CostPerHr: cmpFloat(s.CostPerHr, p.CostPerHr), StartedAt: s.Started, VolumeGB: p.VolumeGB}
		if err := ledger.Stopped(ctx, ls, prov, p.ID, s.At, ledger.EndGuard, s.Reason, time.Duration(s.IdleFor*float64(time.Second)), run); err != nil {
			a.warn("cost ledger: a guard stop of " + p.ID + " was not recorded: " + oneLineErr(err))
		}
	}
}

func cmpFloat(a, b float64) float64 {
	if a != 0 {
		return a
	}
	return b
}
