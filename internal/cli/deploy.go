package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/daydreamlive/scopectl/internal/deploy"
	"github.com/daydreamlive/scopectl/internal/lorasync"
	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/scope"
	"github.com/daydreamlive/scopectl/internal/store"
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
	noGuard  bool
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
	f.BoolVar(&o.noGuard, "no-guard", false, "do not start the guard on the pod or SSH host (`pod watch` or `serve` then enforce its limits)")
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
	if err := a.deployHost(cmd, o); err != nil || o.dryRun || o.noGuard {
		return true, err
	}
	// The guard on the host enforces the limits deploy just put on the container (one
	// already running is kept); one line when it cannot start.
	if c, err := a.sshHosts(o.rf); err == nil {
		if p, err := c.Get(cmd.Context(), rec.ID); err == nil {
			a.startGuard(cmd.Context(), c, p, o.rf, guardFlags{}, true)
		}
	}
	return true, nil
}

// hostOnlyFlags only mean something to a Docker host.
var hostOnlyFlags = []string{"port", "gpus", "volume", "pull"}

func (a *app) deployHost(cmd *cobra.Command, o *deployFlags) error {
	if o.host == "" {
		return usageError("deploy needs a target: --host ssh://user@host:port (Docker), --pod ID or --new --gpu TYPE (RunPod)")
	}
	// A host's limits go onto its Scope container as labels (the guard there reads them).
	if err := o.rp.refuseWithoutRunPod(cmd, "idle-stop", "max-hours"); err != nil {
		return err
	}
	in, err := o.input()
	if err != nil {
		return err
	}
	d, err := a.deployer(o.rf, false)
	if err != nil {
		return err
	}
	res, err := d.Deploy(cmd.Context(), in)
	if err != nil {
		if res != nil { // the plan so far, as it stands
			a.out(res, func(w io.Writer) { printSteps(w, res.Steps, o.dryRun) })
		}
		return deployError(err)
	}
	if o.dryRun {
		return a.out(res, func(w io.Writer) { printSteps(w, res.Steps, true) })
	}
	return a.out(res, func(w io.Writer) {
		printSteps(w, res.Steps, false)
		printScopeUp(w, res, o.pipeline, res.LoRAs)
	})
}

// input is the deploy the flags ask for.
func (o *deployFlags) input() (deploy.DeployInput, error) {
	env, err := parseEnv(o.envs)
	if err != nil {
		return deploy.DeployInput{}, err
	}
	return deploy.DeployInput{Host: o.host, Pod: o.rp.pod, New: o.rp.isNew, Spec: o.s, Env: env, LoRAs: o.loras,
		Pipeline: o.pipeline, DryRun: o.dryRun, Wait: o.wait, Create: o.rp.create, IdleStop: o.rp.idle,
		MaxHours: o.rp.maxHours, SSHKey: o.rp.sshKey, Keep: o.rp.keep, KnownHosts: o.rf.knownHosts}, nil
}

// deployer is the deploy core with this command's remotes, records and reporters;
// withRunPod opens the RunPod client too.
func (a *app) deployer(rf remoteFlags, withRunPod bool) (*deploy.Deployer, error) {
	lib, err := a.library()
	if err != nil {
		return nil, err
	}
	d := &deploy.Deployer{Lib: lib, DataDir: a.cfg.DataDir, HFToken: a.cfg.HFToken, Progress: a.progress(), Reporter: a.reporter(), Warn: a.warn,
		OpenRemote: func(ctx context.Context, target, knownHosts string) (remote.Remote, error) {
			f := rf
			if knownHosts != "" {
				f.knownHosts, f.acceptNewHostKey = knownHosts, true
			}
			return a.openRemote(ctx, target, f)
		}}
	if ps, ok := lib.Store.(store.PodStore); ok {
		d.Pods = ps
	}
	if withRunPod {
		if c, err := a.runpod(); err != nil {
			d.RunPodErr = err
		} else {
			d.RunPod = c
		}
	}
	return d, nil
}

// deployError gives the core's errors their exit status.
func deployError(err error) error {
	var ie *deploy.InputError
	var re *deploy.RefusedError
	var le *deploy.LookupError
	switch {
	case errors.As(err, &ie):
		return withCode(ExitUsage, err)
	case errors.As(err, &re):
		return withCode(ExitRefused, err)
	case errors.As(err, &le):
		return notFound(le.Err)
	}
	return err
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
type wantedLoRA = deploy.WantedLoRA

// prepareLoRAs parses NAME[:SCALE] flags and checks, before anything is deployed,
// that each names a library LoRA that passes the base-model gate for pipeline
// (deploy.Deployer.PrepareLoRAs).
func (a *app) prepareLoRAs(ctx context.Context, flags []string, pipeline, loraDir string) ([]wantedLoRA, error) {
	d, err := a.deployer(remoteFlags{}, false)
	if err != nil {
		return nil, err
	}
	out, err := d.PrepareLoRAs(ctx, flags, pipeline, loraDir)
	return out, deployError(err)
}

// syncLoRAs sends the wanted LoRAs to target (a folder URL) with the transfer engine,
// trying a target that cannot be reached yet until retryFor has passed
// (deploy.Deployer.SyncLoRAs).
func (a *app) syncLoRAs(ctx context.Context, target string, wanted []wantedLoRA, pipeline string, rf remoteFlags, retryFor time.Duration) (*lorasync.Result, error) {
	d, err := a.deployer(rf, false)
	if err != nil {
		return nil, err
	}
	return d.SyncLoRAs(ctx, target, "", wanted, pipeline, retryFor)
}

// scopeUp waits for Scope's health and, with a pipeline, loads it with the LoRAs and
// waits until it is loaded; it fills res["health"], res["url"] and res["pipeline"].
func (a *app) scopeUp(ctx context.Context, sc *scope.Client, wait time.Duration, pipeline string, wanted []wantedLoRA, res map[string]any) error {
	var r deploy.DeployResult
	err := (&deploy.Deployer{}).ScopeUp(ctx, sc, wait, pipeline, wanted, &r)
	if r.Health != nil {
		res["health"], res["url"] = r.Health, r.URL
	}
	if r.Pipeline != nil {
		res["pipeline"] = r.Pipeline
	}
	return err
}

func printScopeUp(w io.Writer, res *deploy.DeployResult, pipeline string, nLoRAs int) {
	if h := res.Health; h != nil {
		fmt.Fprintf(w, "Scope %s is healthy at %s\n", h.Version, res.URL)
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
