package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/daydreamlive/scopectl/internal/deploy"
	"github.com/daydreamlive/scopectl/internal/httpx"
	"github.com/daydreamlive/scopectl/internal/library"
	"github.com/daydreamlive/scopectl/internal/lorasync"
	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/remote/ssh"
	"github.com/daydreamlive/scopectl/internal/scope"
	"github.com/daydreamlive/scopectl/internal/secret"
)

// deployFlags are deploy's flags; the RunPod ones are in deploy_runpod.go.
type deployFlags struct {
	s        deploy.Spec
	host     string
	pipeline string
	envs     []string
	loras    []string
	dryRun   bool
	wait     time.Duration
	rf       remoteFlags
	rp       runpodDeployFlags
	kube     kubeDeployFlags // --provider kubernetes (kube.go)
}

func (a *app) deployCmd() *cobra.Command {
	var o deployFlags
	cmd := &cobra.Command{
		Use:   "deploy (--host ssh://user@host:port | --pod ID | --new --gpu TYPE | --provider kubernetes [--replicas N] [--gpu nvidia.com/gpu=1]) [--image …] [--lora NAME[:SCALE]…] [--pipeline ID]",
		Short: "Run Daydream Scope on a RunPod pod or an SSH host with Docker, idempotently; sync LoRAs; load a pipeline",
		Long: "Plans, then applies, then syncs the chosen LoRAs into Scope's LoRA dir, waits for Scope's\n" +
			"/health and, with --pipeline, loads it with the LoRAs and scales. --dry-run prints the plan only.\n\n" +
			"--host: pulls the image, creates the daydream-scope container (restart policy, port, /workspace\n" +
			"volume, Scope's directory variables, HF_TOKEN through an env file fed on stdin), and replaces\n" +
			"it only when the image or a setting changed.\n\n" +
			"--new / --pod: the RunPod pod runs the Scope image itself, with ports 8000/http and 22/tcp,\n" +
			"Scope's directories on the volume at /workspace and HF_TOKEN as a secret variable. --new creates\n" +
			"the pod (as `pod create` does) and terminates it again if the deploy fails, unless --keep;\n" +
			"--pod updates an existing pod only where its image, environment or ports differ (which\n" +
			"restarts it) and starts it when it is stopped. LoRAs go over direct SSH; Scope is reached\n" +
			"through RunPod's HTTP proxy (https://{pod}-8000.proxy.runpod.net, $" + "SCOPECTL_RUNPOD_PROXY_URL).\n\n" +
			"--pod naming an SSH host (pod create --provider ssh) deploys there as --host does.\n\n" +
			"--provider kubernetes (or --host k8s://CONTEXT/NAMESPACE[/NAME]): Scope as a StatefulSet\n" +
			"(one --gpu set per replica, a volume per replica, a headless Service, HF_TOKEN and the agent\n" +
			"token in a Secret, the scopectl agent as a sidecar) by server-side apply under the field\n" +
			"manager scopectl, then a watch until every replica is ready. --dry-run -o yaml prints it.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.kube.selected(o.host) {
				return a.deployKube(cmd, &o)
			}
			if o.rp.pod != "" && !o.rp.isNew {
				if done, err := a.deploySSHHost(cmd, &o); done {
					return err
				}
			}
			if o.rp.pod != "" || o.rp.isNew {
				if o.host != "" {
					return usageError("--host deploys to a Docker host, --pod/--new to a RunPod pod: pick one")
				}
				return a.deployRunPod(cmd, &o)
			}
			return a.deployHost(cmd, &o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.host, "host", "", "SSH host with Docker: ssh://user@host:port")
	f.StringVar(&o.s.Image, "image", "", "Scope image (default daydreamlive/scope:main)")
	f.StringVar(&o.s.Name, "name", "", "container name (default daydream-scope); with --new, the pod's name (default scopectl)")
	f.IntVar(&o.s.Port, "port", 0, "host port for Scope (default 8000)")
	f.BoolVar(&o.s.GPUs, "gpus", true, "pass --gpus all to docker")
	f.StringVar(&o.s.Volume, "volume", "", "host folder mounted at /workspace (default /workspace)")
	f.StringVar(&o.s.LoRADir, "scope-lora-dir", "", "Scope's LoRA dir in the container (default /workspace/models/lora)")
	f.StringVar(&o.s.Pull, "pull", "", "image pull policy: always (default), missing, never")
	f.StringSliceVar(&o.envs, "env", nil, "extra container environment KEY=VALUE (secrets come from scopectl's config, never flags)")
	f.StringSliceVar(&o.loras, "lora", nil, "library LoRAs to sync and load, NAME[:SCALE]")
	f.StringVar(&o.pipeline, "pipeline", "", "Scope pipeline to load (e.g. longlive, krea-realtime-video)")
	f.BoolVar(&o.dryRun, "dry-run", false, "print the plan, change nothing")
	f.DurationVar(&o.wait, "wait", 10*time.Minute, "how long to wait for the pod, for health and for the pipeline to load (each)")
	o.rf.add(cmd)
	o.rp.add(cmd)
	o.kube.add(cmd)
	return cmd
}

// deploySSHHost deploys to --pod when it names an SSH host scopectl records (pod create
// --provider ssh): as --host does, to its address, with the container it records (--name
// names another, which the host then records). done is false for any other pod.
func (a *app) deploySSHHost(cmd *cobra.Command, o *deployFlags) (done bool, err error) {
	rec, ok, err := a.sshHost(cmd.Context(), o.rp.pod)
	if err != nil || !ok {
		return err != nil, err
	}
	if o.host != "" {
		return true, usageError("--pod %s is an SSH host already (%s): drop --host", o.rp.pod, remote.Redact(rec.Address))
	}
	o.host, o.rp.pod = rec.Address+"/", ""
	if o.s.Name == "" {
		o.s.Name = rec.Container
	}
	if name := cmp.Or(o.s.Name, deploy.DefaultName); name != rec.Container && !o.dryRun {
		ps, err := a.podStore()
		if err != nil {
			return true, err
		}
		rec.Container = name
		if err := ps.PutPod(cmd.Context(), rec); err != nil {
			return true, err
		}
	}
	return true, a.deployHost(cmd, o)
}

// hostOnlyFlags only mean something to a Docker host.
var hostOnlyFlags = []string{"port", "gpus", "volume", "pull"}

func (a *app) deployHost(cmd *cobra.Command, o *deployFlags) error {
	ctx := cmd.Context()
	if o.host == "" {
		return usageError("deploy needs a target: --host ssh://user@host:port (Docker), --pod ID or --new --gpu TYPE (RunPod)")
	}
	if err := o.rp.refuseWithoutRunPod(cmd); err != nil {
		return err
	}
	u, err := url.Parse(o.host)
	if err != nil || (u.Scheme != "ssh" && u.Scheme != "ssh+pty") {
		return usageError("--host %s: expected ssh:// or ssh+pty://", remote.Redact(o.host))
	}
	s := o.s
	if s.Env, err = parseEnv(o.envs); err != nil {
		return err
	}
	if a.cfg.HFToken.IsSet() {
		s.SecretEnv = map[string]secret.Secret{"HF_TOKEN": a.cfg.HFToken}
	}
	ns, err := deploy.Normalize(s)
	if err != nil {
		return err
	}
	var wanted []wantedLoRA
	if len(o.loras) > 0 {
		if wanted, err = a.prepareLoRAs(ctx, o.loras, o.pipeline, ns.LoRADir); err != nil {
			return err
		}
	}
	r, run, err := a.openRunner(ctx, o.host, o.rf)
	if err != nil {
		return err
	}
	defer r.Close()
	steps, err := deploy.Apply(ctx, run, s, o.dryRun)
	res := map[string]any{"host": r.String(), "steps": steps, "dry_run": o.dryRun}
	if err != nil || o.dryRun {
		a.out(res, func(w io.Writer) { printSteps(w, steps, o.dryRun) })
		return err
	}
	// LoRAs go to the host folder mounted at /workspace.
	if len(wanted) > 0 {
		lu := *u
		lu.Path = path.Join(ns.Volume, strings.TrimPrefix(ns.LoRADir, "/workspace"))
		sres, err := a.syncLoRAs(ctx, lu.String(), wanted, o.pipeline, o.rf, 0)
		if err != nil {
			return err
		}
		res["sync"] = sres
	}
	sc := &scope.Client{Base: fmt.Sprintf("http://%s:%d", u.Hostname(), ns.Port)}
	if err := a.scopeUp(ctx, sc, o.wait, o.pipeline, wanted, res); err != nil {
		return err
	}
	return a.out(res, func(w io.Writer) {
		printSteps(w, steps, false)
		printScopeUp(w, res, o.pipeline, len(wanted))
	})
}

func parseEnv(envs []string) (map[string]string, error) {
	env := map[string]string{}
	for _, kv := range envs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, usageError("--env %q: expected KEY=VALUE", kv)
		}
		env[k] = v
	}
	return env, nil
}

// wantedLoRA is a --lora: the library entry, its file name in Scope's LoRA dir and the
// load request for it.
type wantedLoRA struct {
	Ref  string
	Load scope.LoRALoad
}

// prepareLoRAs parses NAME[:SCALE] flags and checks, before anything is deployed,
// that each names a library LoRA that passes the base-model gate for pipeline
// (converting it for Scope if needed: the sync that follows reuses that).
func (a *app) prepareLoRAs(ctx context.Context, flags []string, pipeline, loraDir string) ([]wantedLoRA, error) {
	lib, err := a.library()
	if err != nil {
		return nil, err
	}
	var out []wantedLoRA
	for _, l := range flags {
		name, scale := l, 1.0
		if n, sc, ok := strings.Cut(l, ":"); ok {
			if _, err := fmt.Sscanf(sc, "%g", &scale); err != nil {
				return nil, usageError("--lora %q: scale must be a number", l)
			}
			name = n
		}
		if scale < -10 || scale > 10 {
			return nil, usageError("--lora %q: Scope takes scales from -10 to 10", l)
		}
		pr, err := lib.Prepare(ctx, name, library.InstallOptions{Pipeline: pipeline})
		if err != nil {
			return nil, err
		}
		out = append(out, wantedLoRA{Ref: name, Load: scope.LoRALoad{Path: path.Join(loraDir, pr.File), Scale: scale}})
	}
	return out, nil
}

// syncLoRAs sends the wanted LoRAs to target (a folder URL) with the transfer engine.
// A target that cannot be reached yet (a pod's sshd still starting) is tried again
// until retryFor has passed; a refused host key is never retried.
func (a *app) syncLoRAs(ctx context.Context, target string, wanted []wantedLoRA, pipeline string, rf remoteFlags, retryFor time.Duration) (*lorasync.Result, error) {
	lib, err := a.library()
	if err != nil {
		return nil, err
	}
	names := make([]string, len(wanted))
	for i, w := range wanted {
		names[i] = w.Ref
	}
	deadline := time.Now().Add(retryFor)
	bo := httpx.Backoff{Min: 500 * time.Millisecond, Max: 5 * time.Second}
	var r remote.Remote
	for n := 1; ; n++ {
		r, err = a.openRemote(ctx, target, rf)
		if err == nil || errors.Is(err, ssh.ErrUnknownHostKey) || errors.Is(err, ssh.ErrHostKeyChanged) || !deployRetryable(err) {
			break
		}
		delay := bo.Delay(n, "")
		if time.Now().Add(delay).After(deadline) {
			break
		}
		a.reporter().Retry("connecting to "+target, n, 0, err.Error(), delay)
		if httpx.Sleep(ctx, delay) != nil {
			return nil, err
		}
	}
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return lorasync.Sync(ctx, lib, r, lorasync.Options{Names: names, Pipeline: pipeline, Progress: a.progress()})
}

// deployRetryable: a pod that just started refuses connections until its sshd is up, so a
// refused connection is worth waiting out here; otherwise the shared rules apply (a name
// that does not resolve, a TLS failure: at once).
func deployRetryable(err error) bool {
	if u := httpx.Unreachable("", err); u != nil {
		return u.Refused
	}
	return !httpx.Permanent(err)
}

// scopeUp waits for Scope's health and, with a pipeline, loads it with the LoRAs and
// waits until it is loaded; it fills res["health"], res["url"] and res["pipeline"].
func (a *app) scopeUp(ctx context.Context, sc *scope.Client, wait time.Duration, pipeline string, wanted []wantedLoRA, res map[string]any) error {
	h, err := sc.WaitHealthy(ctx, wait)
	if err != nil {
		return fmt.Errorf("Scope on %s did not become healthy: %w", sc.Base, err)
	}
	res["health"], res["url"] = h, sc.Base
	if pipeline == "" {
		return nil
	}
	loads := make([]scope.LoRALoad, len(wanted))
	for i, w := range wanted {
		loads[i] = w.Load
	}
	if err := sc.LoadPipeline(ctx, pipeline, loads, nil); err != nil {
		return err
	}
	st, err := sc.WaitLoaded(ctx, wait)
	if err != nil {
		return err
	}
	res["pipeline"] = st
	return nil
}

func printScopeUp(w io.Writer, res map[string]any, pipeline string, nLoRAs int) {
	h, _ := res["health"].(*scope.Health)
	if h != nil {
		fmt.Fprintf(w, "Scope %s is healthy at %s\n", h.Version, res["url"])
	}
	if pipeline != "" {
		fmt.Fprintf(w, "pipeline %s loaded with %s\n", pipeline, plural(nLoRAs, "LoRA"))
	}
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
