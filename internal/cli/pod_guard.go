package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/daydreamlive/scopectl/internal/deploy"
	"github.com/daydreamlive/scopectl/internal/gpu"
	"github.com/daydreamlive/scopectl/internal/guard"
	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/provider/runpod"
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
