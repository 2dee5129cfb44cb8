package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/daydreamlive/scopectl/internal/deploy"
	"github.com/daydreamlive/scopectl/internal/gpu"
	"github.com/daydreamlive/scopectl/internal/guard"
	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/provider/kubernetes"
	"github.com/daydreamlive/scopectl/internal/provider/runpod"
	"github.com/daydreamlive/scopectl/internal/provider/sshhost"
	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/secret"
	"github.com/daydreamlive/scopectl/internal/watch"
)

// guardCmd is `scopectl guard`, hidden: it runs on the pod (or SSH host) itself, the
// same static binary the agent uses, and stops its pod past the pod's limits. See
// package guard.
func (a *app) guardCmd() *cobra.Command {
	var dir, scopeURL, container, jobsGlob, statefulSet string
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
			fl := cmd.Flags()
			override := fl.Changed("idle-stop") || fl.Changed("max-hours") || fl.Changed("stop-on-job-end")
			var lim provider.Limits
			var err error
			switch {
			case override:
				lim.IdleStop, _ = fl.GetDuration("idle-stop")
				lim.MaxHours, _ = fl.GetFloat64("max-hours")
				lim.StopOnJobEnd, _ = fl.GetBool("stop-on-job-end")
			case container != "":
				lim = provider.Limits{IdleStop: guard.DefaultHostIdleStop} // until the container's labels say otherwise
			default:
				if lim, err = guard.LimitsFromEnviron(); err != nil {
					return err
				}
			}
			var ks guard.KubernetesStopper
			if statefulSet != "" {
				// In a Kubernetes pod: its ServiceAccount's token, never the user's kubeconfig.
				if ks, err = guard.InClusterStopper(statefulSet); err != nil {
					return err
				}
			}
			var podID, key string
			if container == "" && statefulSet == "" {
				podID, key = guard.PodEnv(runpod.EnvPodID), guard.PodEnv(runpod.EnvAPIKey)
				if podID == "" || key == "" {
					return errors.New("guard: no RUNPOD_POD_ID or RUNPOD_API_KEY on this machine: not a RunPod pod (use --container on an SSH host)")
				}
				secret.Default.Add(secret.New(key))
			}
			// The lock first: a second guard exits at once, before it asks anything.
			release, err := guard.Lock(cmpDir(dir))
			if err != nil {
				return err
			}
			defer release()
			logf := func(format string, args ...any) {
				fmt.Fprintf(a.stderr, "%s %s\n", time.Now().UTC().Format(time.RFC3339), secret.Default.Redact(fmt.Sprintf(format, args...)))
			}
			g := &guard.Guard{Limits: lim, Dir: dir, Every: every, Log: logf,
				Jobs: &guard.Jobs{Glob: jobsGlob, Procs: !noProcs}}
			g.Probes = []watch.Probe{watch.ScopeProbe{URL: func(provider.Pod) string { return scopeURL }}}
			if statefulSet != "" {
				if _, err := exec.LookPath("nvidia-smi"); err != nil && !noGPU {
					noGPU = true // the guard's container has no GPU of its own: Scope's API decides
					logf("guard: no nvidia-smi in this container: GPU utilisation is not read")
				}
			}
			if !noGPU {
				g.Probes = append(g.Probes, watch.GPUProbe{Source: func(context.Context, provider.Pod) (gpu.Source, error) { return gpu.SMI{}, nil }, MinUtil: minUtil})
			}
			if statefulSet != "" {
				g.Stopper, g.Target = ks, statefulSet
				g.Probes = append(g.Probes, guard.ReplicaProbe{Stopper: ks, Self: os.Getenv(kubernetes.EnvPodName), Port: kubernetes.ScopePort})
			} else if container != "" {
				ds := guard.DockerStopper{Container: container}
				g.Stopper, g.Target = ds, "container "+container
				if !override {
					g.Refresh = ds.Limits
				}
				if t, err := ds.StartedAt(ctx); err == nil {
					g.Started = t
				}
			} else {
				opts := runpod.OptionsFromEnv(guard.PodEnv)
				opts.APIKey, opts.Redactor = secret.New(key), secret.Default
				c, err := runpod.New(opts)
				if err != nil {
					return err
				}
				g.Stopper, g.Target = guard.RunPodStopper{Client: c, PodID: podID}, podID
				began := time.Now()
				started, _, note, err := guard.PodStart(ctx, c, podID, began)
				switch {
				case err != nil:
					// The API is out of reach (its retries are spent): limits count from
					// this guard's start, not from after the retries.
					g.Started = began
					logf("guard: cannot read the pod's start (%v): max-hours counts from the guard's start", err)
				default:
					g.Started = started
					if note != "" {
						logf("guard: %s", note)
					}
				}
			}
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
	f.StringVar(&statefulSet, "statefulset", "", "in a Kubernetes pod: the Scope StatefulSet to scale to zero (in-cluster credentials)")
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
		Long: "Copies this scopectl (static linux/amd64) to " + guard.DefaultPodDir + " on the pod over SSH and starts\n" +
			"`scopectl guard` there (one per pod: a guard already running is kept). On RunPod it stops the pod\n" +
			"with the pod-scoped RUNPOD_API_KEY RunPod puts into every pod; your own key never goes there.\n" +
			"On an SSH host it reads the limits from the Scope container's labels (deploy sets them).\n" +
			"`pod create`, `pod start` and deploy start it too. It reads the stops an earlier guard made into\n" +
			"the cost ledger.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, p, err := a.podWithClient(ctx, args[0], rf)
			if err != nil {
				return err
			}
			o.idleSet, o.maxSet = cmd.Flags().Changed("idle-stop"), cmd.Flags().Changed("max-hours")
			info, err := a.installGuardWith(ctx, c, p, rf, binary, o, 0, false)
			if err != nil {
				return err
			}
			return a.out(info, func(w io.Writer) { printGuard(w, info) })
		},
	}
	cmd.Flags().StringVar(&binary, "binary", "", "scopectl binary to copy (default: this one, if linux/amd64)")
	cmd.Flags().DurationVar(&o.idle, "idle-stop", 0, "replace the pod's idle limit")
	cmd.Flags().Float64Var(&o.maxHours, "max-hours", 0, "replace the pod's max hours")
	cmd.Flags().BoolVar(&o.noGPU, "no-gpu", false, "the guard ignores nvidia-smi (Scope and training jobs decide alone)")
	rf.add(cmd)
	return cmd
}

func printGuard(w io.Writer, g *guard.Installed) {
	if g.Already {
		fmt.Fprintf(w, "guard already running on %s (pid %d): kept\n", g.Pod, g.PID)
		return
	}
	fmt.Fprintf(w, "guard running on %s (pid %d): %s\n", g.Pod, g.PID, g.Limits)
}

// guardOverrides are pod guard's flags.
type guardOverrides struct {
	idle            time.Duration
	maxHours        float64
	idleSet, maxSet bool
	noGPU           bool
}

// installGuard copies scopectl onto pod p and starts its guard (guard.Install). On an
// SSH host the guard runs on the host itself and docker-stops the Scope container.
func (a *app) installGuard(ctx context.Context, c provider.Provider, p *provider.Pod, rf remoteFlags, binary string) (*deploy.GuardInfo, error) {
	info, err := a.installGuardWith(ctx, c, p, rf, binary, guardOverrides{}, 0, false)
	if err != nil {
		return nil, err
	}
	return &deploy.GuardInfo{Pod: info.Pod, Limits: info.Limits, Log: info.Log, PID: info.PID, Already: info.Already}, nil
}

// installGuardWith is guard.Install with this machine's SSH, binary and ledger; wait
// (>0) waits that long for the pod to run (with its public SSH port when needSSH).
func (a *app) installGuardWith(ctx context.Context, c provider.Provider, p *provider.Pod, rf remoteFlags, binary string, o guardOverrides, wait time.Duration, needSSH bool) (*guard.Installed, error) {
	in := guard.InstallInput{Pod: p, Provider: c, Wait: wait, NeedSSH: needSSH, NoGPU: o.noGPU, Warn: a.warn}
	in.Binary = func() ([]byte, error) {
		path := binary
		if path == "" {
			if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
				return nil, fmt.Errorf("this scopectl is %s/%s, the pod needs linux/amd64 (--binary)", runtime.GOOS, runtime.GOARCH)
			}
			exe, err := os.Executable()
			if err != nil {
				return nil, err
			}
			if strings.HasSuffix(exe, ".test") { // a Go test running the CLI in-process: never copied as scopectl
				return nil, errors.New("this process is a test binary, not scopectl (--binary)")
			}
			path = exe
		}
		return os.ReadFile(path)
	}
	if o.idleSet || o.maxSet {
		l := provider.Limits{}
		if cur := limitsOf(*p, nil); cur != nil {
			l = *cur
		}
		if o.idleSet {
			l.IdleStop = o.idle
		}
		if o.maxSet {
			l.MaxHours = o.maxHours
		}
		l.FromPod, l.Problem = false, ""
		in.Limits, in.Override = l, true
	}
	if _, isHost := c.(*sshhost.Provider); isHost {
		rec, _, err := a.sshHost(ctx, p.ID)
		if err != nil {
			return nil, err
		}
		in.Host, in.Container = true, rec.Container
	} else if rf.knownHosts == "" {
		// A pod's host keys are made when its container starts: trusted on first use, per pod.
		rf.knownHosts = filepath.Join(a.cfg.DataDir, "known_hosts.d", p.ID)
		rf.acceptNewHostKey = true
	}
	in.Open = func(ctx context.Context, u string) (remote.Remote, remote.Runner, error) {
		return a.openRunner(ctx, u, rf)
	}
	if ls, err := a.ledgerStore(); err == nil {
		in.Ledger = ls
		if n, ok := c.(interface{ Name() string }); ok {
			in.ProviderName = n.Name()
		}
	}
	return guard.Install(ctx, in)
}

// guardFlags are --no-guard and --guard-wait (pod create, pod start).
type guardFlags struct {
	off  bool
	wait time.Duration
}

func (g *guardFlags) add(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&g.off, "no-guard", false, "do not start the guard on the pod (`scopectl pod watch` or `serve` then enforce its limits)")
	cmd.Flags().DurationVar(&g.wait, "guard-wait", 10*time.Minute, "how long to wait for the pod to run before starting its guard")
}

// startGuard starts the guard on pod p after a create or start (unless --no-guard)
// and says in one line when it could not: the pod is there all the same.
func (a *app) startGuard(ctx context.Context, c provider.Provider, p *provider.Pod, rf remoteFlags, gf guardFlags, needSSH bool) (*guard.Installed, string) {
	_, isHost := c.(*sshhost.Provider)
	if _, isRunPod := c.(*runpod.Client); !isHost && !isRunPod {
		return nil, "" // Kubernetes: its controllers own the pods
	}
	if gf.off {
		a.warn(fmt.Sprintf("pod %s: no guard (--no-guard): `scopectl pod watch` or `scopectl serve` enforce its limits from this machine", p.ID))
		return nil, ""
	}
	if !isHost && p.Status != provider.StatusRunning {
		a.warn(fmt.Sprintf("pod %s: waiting up to %s for it to run, to start its guard (--no-guard skips)", p.ID, gf.wait))
	}
	info, err := a.installGuardWith(ctx, c, p, rf, "", guardOverrides{}, gf.wait, needSSH)
	if err != nil {
		msg := oneLineErr(err)
		a.warn(msg)
		return nil, msg
	}
	return info, ""
}
