package cli

import (
	"fmt"
	"io"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/daydreamlive/scopectl/internal/deploy"
	"github.com/daydreamlive/scopectl/internal/lorasync"
	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/scope"
	"github.com/daydreamlive/scopectl/internal/secret"
)

func (a *app) deployCmd() *cobra.Command {
	var s deploy.Spec
	var host, pipeline string
	var envs, loras []string
	var dryRun bool
	var wait time.Duration
	var rf remoteFlags
	cmd := &cobra.Command{
		Use:   "deploy --host ssh://user@host:port [--image …] [--lora NAME[:SCALE]…] [--pipeline ID]",
		Short: "Run Daydream Scope on an SSH host with Docker, idempotently; sync LoRAs; load a pipeline",
		Long: "Plans, then applies: pulls the image, creates the daydream-scope container (restart policy,\n" +
			"port, /workspace volume, Scope's directory variables, HF_TOKEN through an env file fed on\n" +
			"stdin), and replaces it only when the image or a setting changed. Then syncs the chosen\n" +
			"LoRAs into <volume>/models/lora, waits for Scope's /health and, with --pipeline, loads it\n" +
			"with the LoRAs and scales. --dry-run prints the plan only.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if host == "" {
				return usageError("--host ssh://user@host:port is required (RunPod pods run the Scope image themselves: see `pod create`)")
			}
			u, err := url.Parse(host)
			if err != nil || (u.Scheme != "ssh" && u.Scheme != "ssh+pty") {
				return usageError("--host %s: expected ssh:// or ssh+pty://", remote.Redact(host))
			}
			s.Env = map[string]string{}
			for _, kv := range envs {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					return usageError("--env %q: expected KEY=VALUE", kv)
				}
				s.Env[k] = v
			}
			if a.cfg.HFToken.IsSet() {
				s.SecretEnv = map[string]secret.Secret{"HF_TOKEN": a.cfg.HFToken}
			}
			r, err := a.openRemote(ctx, host, rf)
			if err != nil {
				return err
			}
			defer r.Close()
			run, ok := r.(remote.Runner)
			if !ok {
				return fmt.Errorf("%s cannot run commands", r)
			}
			steps, err := deploy.Apply(ctx, run, s, dryRun)
			res := map[string]any{"host": r.String(), "steps": steps, "dry_run": dryRun}
			if err != nil || dryRun {
				a.out(res, func(w io.Writer) { printSteps(w, steps, dryRun) })
				return err
			}
			ns, _ := deploy.Normalize(s)
			// LoRAs go to the host folder mounted at /workspace.
			var loads []scope.LoRALoad
			if len(loras) > 0 {
				lib, err := a.library()
				if err != nil {
					return err
				}
				var names []string
				for _, l := range loras {
					name, scale := l, 1.0
					if n, sc, ok := strings.Cut(l, ":"); ok {
						if _, err := fmt.Sscanf(sc, "%g", &scale); err != nil {
							return usageError("--lora %q: scale must be a number", l)
						}
						name = n
					}
					names = append(names, name)
					loads = append(loads, scope.LoRALoad{Path: path.Join(ns.LoRADir, name+".safetensors"), Scale: scale})
				}
				hostLoRA := path.Join(ns.Volume, strings.TrimPrefix(ns.LoRADir, "/workspace"))
				lu := *u
				lu.Path = hostLoRA
				target, err := a.openRemote(ctx, lu.String(), rf)
				if err != nil {
					return err
				}
				sres, err := lorasync.Sync(ctx, lib, target, lorasync.Options{Names: names, Pipeline: pipeline, Progress: a.progress()})
				target.Close()
				if err != nil {
					return err
				}
				res["sync"] = sres
			}
			sc := &scope.Client{Base: fmt.Sprintf("http://%s:%d", u.Hostname(), ns.Port)}
			h, err := sc.WaitHealthy(ctx, wait)
			if err != nil {
				return fmt.Errorf("Scope on %s did not become healthy: %w", sc.Base, err)
			}
			res["health"], res["url"] = h, sc.Base
			if pipeline != "" {
				if err := sc.LoadPipeline(ctx, pipeline, loads, nil); err != nil {
					return err
				}
				st, err := sc.WaitLoaded(ctx, wait)
				if err != nil {
					return err
				}
				res["pipeline"] = st
			}
			return a.out(res, func(w io.Writer) {
				printSteps(w, steps, false)
				fmt.Fprintf(w, "Scope %s is healthy at %s\n", h.Version, sc.Base)
				if pipeline != "" {
					fmt.Fprintf(w, "pipeline %s loaded with %d LoRAs\n", pipeline, len(loads))
				}
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&host, "host", "", "SSH host with Docker: ssh://user@host:port")
	f.StringVar(&s.Image, "image", "", "Scope image (default daydreamlive/scope:main)")
	f.StringVar(&s.Name, "name", "", "container name (default daydream-scope)")
	f.IntVar(&s.Port, "port", 0, "host port for Scope (default 8000)")
	f.BoolVar(&s.GPUs, "gpus", true, "pass --gpus all to docker")
	f.StringVar(&s.Volume, "volume", "", "host folder mounted at /workspace (default /workspace)")
	f.StringVar(&s.LoRADir, "scope-lora-dir", "", "Scope's LoRA dir in the container (default /workspace/models/lora)")
	f.StringVar(&s.Pull, "pull", "", "image pull policy: always (default), missing, never")
	f.StringSliceVar(&envs, "env", nil, "extra container environment KEY=VALUE (secrets come from scopectl's config, never flags)")
	f.StringSliceVar(&loras, "lora", nil, "library LoRAs to sync and load, NAME[:SCALE]")
	f.StringVar(&pipeline, "pipeline", "", "Scope pipeline to load (e.g. longlive, krea-realtime-video)")
	f.BoolVar(&dryRun, "dry-run", false, "print the plan, change nothing")
	f.DurationVar(&wait, "wait", 10*time.Minute, "how long to wait for health and for the pipeline to load")
	rf.add(cmd)
	return cmd
}

func printSteps(w io.Writer, steps []deploy.Step, dry bool) {
	for _, st := range steps {
		verb := st.Action
		if dry {
			verb = "would " + verb
		}
		fmt.Fprintf(w, "%-12s %s\n", verb, st.Reason)
	}
}
