package cli

import (
	"context"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/daydreamlive/scopectl/internal/deploy"
	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/provider/runpod"
	"github.com/daydreamlive/scopectl/internal/store"
)

// runpodDeployFlags are deploy's flags for RunPod pods (--pod, --new).
type runpodDeployFlags struct {
	pod      string
	isNew    bool
	keep     bool
	create   provider.CreateSpec // GPU, cloud, sizes, network volume, price limit
	idle     time.Duration
	maxHours float64
	sshKey   string
	budget   budgetFlags
}

// newOnlyFlags only mean something when deploy creates the pod.
var newOnlyFlags = []string{"gpu", "gpu-count", "cloud", "volume-gb", "container-disk-gb", "network-volume", "max-price", "idle-stop", "max-hours", "ssh-key", "keep", "budget", "strict"}

func (f *runpodDeployFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.pod, "pod", "", "RunPod pod to run Scope on (pod id, or scopectl's request id)")
	fl.BoolVar(&f.isNew, "new", false, "create a RunPod pod that runs Scope (needs --gpu)")
	fl.BoolVar(&f.keep, "keep", false, "with --new: keep the pod when the deploy fails (by default scopectl terminates it)")
	fl.StringVar(&f.create.GPUType, "gpu", "", "with --new: GPU type id, e.g. \"NVIDIA RTX A6000\" (see `scopectl pod gpus`)")
	fl.IntVar(&f.create.GPUCount, "gpu-count", 1, "with --new: number of GPUs")
	fl.StringVar(&f.create.Cloud, "cloud", "secure", "with --new: secure or community")
	fl.IntVar(&f.create.VolumeGB, "volume-gb", 50, "with --new: pod volume at /workspace, GB (models and LoRAs live there)")
	fl.IntVar(&f.create.ContainerDiskGB, "container-disk-gb", 30, "with --new: container disk, GB (wiped on every restart)")
	fl.StringVar(&f.create.NetworkVolumeID, "network-volume", "", "with --new: network volume id to mount at /workspace instead of a pod volume")
	fl.Float64Var(&f.create.MaxPrice, "max-price", 0, "with --new: refuse GPUs above this $/h for the pod (0: no limit)")
	fl.DurationVar(&f.idle, "idle-stop", DefaultIdleStop, "with --new or --host: stop the pod (the host's Scope container) after this long idle (0 disables; see `pod guard`)")
	fl.Float64Var(&f.maxHours, "max-hours", 0, "with --new or --host: stop the pod (the host's Scope container) after this many hours (0: no limit)")
	fl.StringVar(&f.sshKey, "ssh-key", "", "with --new: public key to inject (default ~/.ssh/id_ed25519.pub)")
	f.budget.add(cmd)
}

func (f *runpodDeployFlags) refuseWithoutRunPod(cmd *cobra.Command, except ...string) error {
	for _, n := range newOnlyFlags {
		if cmd.Flags().Changed(n) && !slices.Contains(except, n) {
			return usageError("--%s is for --new (a RunPod pod deploy creates)", n)
		}
	}
	return nil
}

// deployRunPod runs Scope on a RunPod pod: an existing one (--pod) made to match, or
// a new one (--new) (deploy.Deployer.Deploy). Then LoRAs over direct SSH, health and
// the pipeline through RunPod's proxy.
func (a *app) deployRunPod(cmd *cobra.Command, o *deployFlags) error {
	ctx := cmd.Context()
	rp := &o.rp
	for _, n := range hostOnlyFlags {
		if cmd.Flags().Changed(n) {
			return usageError("--%s is for --host: a RunPod pod runs the image itself, with its volume at /workspace and Scope behind RunPod's proxy", n)
		}
	}
	switch {
	case rp.pod != "" && rp.isNew:
		return usageError("--pod deploys to an existing pod, --new creates one: pick one")
	case rp.isNew && rp.create.GPUType == "":
		return usageError("--new needs --gpu TYPE (see `scopectl pod gpus`)")
	case !rp.isNew:
		if err := rp.refuseWithoutRunPod(cmd); err != nil {
			return err
		}
		if cmd.Flags().Changed("name") {
			return usageError("--name is the container's (--host) or a new pod's (--new); an existing pod keeps its name")
		}
	}
	in, err := o.input()
	if err != nil {
		return err
	}
	in.VolumeGBSet = cmd.Flags().Changed("volume-gb")
	d, err := a.deployer(o.rf, true)
	if err != nil {
		return err
	}
	if c, ok := d.RunPod.(*runpod.Client); ok {
		a.podHooks(d, c, rp.budget, o.rf)
		if o.noGuard {
			d.InstallGuard = nil
		}
	}
	res, err := d.Deploy(ctx, in)
	if err != nil {
		return deployError(err)
	}
	if o.dryRun {
		return a.out(res, func(w io.Writer) { printSteps(w, res.Steps, true) })
	}
	return a.out(res, func(w io.Writer) {
		printSteps(w, res.Steps, false)
		printScopeUp(w, res, o.pipeline, res.LoRAs)
		fmt.Fprintf(w, "open %s\n", res.URL)
	})
}

// podHooks gives d what creating a RunPod pod takes on this machine: the create with
// its record, the budget gate, the guard.
func (a *app) podHooks(d *deploy.Deployer, c *runpod.Client, budget budgetFlags, rf remoteFlags) {
	d.CreatePod = func(ctx context.Context, cs provider.CreateSpec, in deploy.DeployInput) (*provider.Pod, *store.Pod, error) {
		return a.createPod(ctx, c, cs, in.IdleStop, in.MaxHours, in.SSHKey)
	}
	d.BudgetGate = func(ctx context.Context, cs provider.CreateSpec, in deploy.DeployInput) error {
		return a.budgetGate(ctx, c, budget, cs, in.MaxHours)
	}
	d.InstallGuard = func(ctx context.Context, p *provider.Pod) (*deploy.GuardInfo, error) {
		return a.installGuard(ctx, c, p, rf, "")
	}
}

// cleanupUnknownCreate: a create that may have made a pod (no answer, retries spent)
// leaves it running unless scopectl finds it by its request id and terminates it
// (deploy.Deployer.CleanupUnknownCreate).
func (a *app) cleanupUnknownCreate(ctx context.Context, c *runpod.Client, rec *store.Pod, keep bool, err error) error {
	d := &deploy.Deployer{RunPod: c}
	if ps, perr := a.podStore(); perr == nil {
		d.Pods = ps
	}
	return d.CleanupUnknownCreate(ctx, rec, keep, err)
}
