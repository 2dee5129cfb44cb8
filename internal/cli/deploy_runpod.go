package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/daydreamlive/scopectl/internal/deploy"
	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/provider/runpod"
	"github.com/daydreamlive/scopectl/internal/scope"
	"github.com/daydreamlive/scopectl/internal/secret"
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
	fl.DurationVar(&f.idle, "idle-stop", DefaultIdleStop, "with --new: stop the pod after this long idle (0 disables; see `pod watch`)")
	fl.Float64Var(&f.maxHours, "max-hours", 0, "with --new: stop the pod after this many hours (0: no limit)")
	fl.StringVar(&f.sshKey, "ssh-key", "", "with --new: public key to inject (default ~/.ssh/id_ed25519.pub)")
	f.budget.add(cmd)
}

func (f *runpodDeployFlags) refuseWithoutRunPod(cmd *cobra.Command) error {
	for _, n := range newOnlyFlags {
		if cmd.Flags().Changed(n) {
			return usageError("--%s is for --new (a RunPod pod deploy creates)", n)
		}
	}
	return nil
}

// deployRunPod runs Scope on a RunPod pod: an existing one (--pod) made to match, or
// a new one (--new). Then LoRAs over direct SSH, health and the pipeline through
// RunPod's proxy.
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
	env, err := parseEnv(o.envs)
	if err != nil {
		return err
	}
	spec := deploy.PodSpec{Image: o.s.Image, LoRADir: o.s.LoRADir, Env: env}
	if rp.isNew {
		spec.GPUs = max(rp.create.GPUCount, 1)
	}
	if a.cfg.HFToken.IsSet() {
		spec.SecretEnv = map[string]secret.Secret{"HF_TOKEN": a.cfg.HFToken}
	}
	ns, err := deploy.NormalizePod(spec)
	if err != nil {
		return usageError("%v", err)
	}
	var wanted []wantedLoRA
	if len(o.loras) > 0 {
		if wanted, err = a.prepareLoRAs(ctx, o.loras, o.pipeline, ns.LoRADir); err != nil {
			return err
		}
	}
	c, err := a.runpod()
	if err != nil {
		return err
	}
	res := map[string]any{"dry_run": o.dryRun}
	var steps []deploy.Step
	var pod *provider.Pod
	created := false
	if rp.isNew {
		// Idempotent like every deploy: a live pod that an earlier deploy --new with the
		// same name made is made to match instead of paying for a second one.
		prev, err := a.deployedPod(ctx, c, deployPodName(o.s.Name), rp.create.GPUType)
		if err != nil {
			return err
		}
		if prev != "" {
			rp.isNew, rp.pod = false, prev
			res["reused"] = prev
		}
	}
	if rp.isNew {
		cs := rp.create
		cs.Name = deployPodName(o.s.Name)
		if cs.NetworkVolumeID != "" && !cmd.Flags().Changed("volume-gb") {
			cs.VolumeGB = 0 // the network volume is the /workspace
		}
		cs = ns.CreateSpec(cs)
		if o.dryRun {
			vol := fmt.Sprintf("%d GB volume", cs.VolumeGB)
			if cs.NetworkVolumeID != "" {
				vol = "network volume " + cs.NetworkVolumeID
			}
			steps = []deploy.Step{{Action: "create", Reason: fmt.Sprintf("a pod with %d × %s (%s cloud) running %s, %s at /workspace",
				max(cs.GPUCount, 1), cs.GPUType, strings.ToUpper(cs.Cloud), cs.Image, vol)}}
			res["steps"] = steps
			return a.out(res, func(w io.Writer) { printSteps(w, steps, true) })
		}
		if err := a.budgetGate(ctx, c, rp.budget, cs, rp.maxHours); err != nil {
			return err
		}
		var rec *store.Pod
		pod, rec, err = a.createPod(ctx, c, cs, rp.idle, rp.maxHours, rp.sshKey)
		if err != nil {
			return a.cleanupUnknownCreate(ctx, c, rec, rp.keep, err)
		}
		created = true
		steps = []deploy.Step{{Action: "create", Reason: fmt.Sprintf("pod %s: %d × %s, $%.3f/h, running %s", pod.ID, max(pod.GPUCount, 1), pod.GPUType, pod.CostPerHr, ns.Image)}}
	} else {
		id, err := a.resolvePod(ctx, rp.pod)
		if err != nil {
			return err
		}
		steps, pod, err = deploy.ApplyPod(ctx, c, id, spec, o.dryRun)
		if err != nil {
			return notFound(err)
		}
		if prev, ok := res["reused"]; ok {
			steps = append([]deploy.Step{{Action: "reuse", Reason: fmt.Sprintf("pod %s, made by an earlier deploy --new --name %s (another --name makes a second pod)", prev, deployPodName(o.s.Name))}}, steps...)
		}
		if o.dryRun {
			res["steps"], res["pod"] = steps, pod
			return a.out(res, func(w io.Writer) { printSteps(w, steps, true) })
		}
	}
	res["steps"] = steps
	id := pod.ID
	// fail ends a deploy that went wrong after the pod existed: a pod --new made is
	// terminated (unless --keep), so that nobody pays for a pod that does not work.
	fail := func(err error) error {
		if !created {
			return err
		}
		if rp.keep {
			return fmt.Errorf("%w; pod %s kept (--keep): `scopectl pod rm %s --yes` terminates it", err, id, id)
		}
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		if terr := c.Terminate(tctx, id); terr != nil && !errors.Is(terr, provider.ErrNotFound) {
			return fmt.Errorf("%w; terminating pod %s failed too (%v): terminate it with `scopectl pod rm %s --yes`", err, id, terr, id)
		}
		a.markTerminated(tctx, id)
		return fmt.Errorf("%w; pod %s terminated (--keep keeps a pod that failed to deploy)", err, id)
	}
	pod, err = deploy.WaitPod(ctx, c, id, len(wanted) > 0, o.wait)
	if err != nil {
		return fail(err)
	}
	if len(wanted) > 0 {
		host, port, _ := pod.SSH()
		target := "ssh://root@" + net.JoinHostPort(host, strconv.Itoa(port)) + ns.LoRADir
		rf := o.rf
		if rf.knownHosts == "" {
			// Trust on first use, per pod and per boot: a pod's host keys are made when
			// its container starts, and RunPod hands the same address to other pods later.
			rf.knownHosts = filepath.Join(a.cfg.DataDir, "known_hosts.d", id)
			rf.acceptNewHostKey = true
			if created || rebooted(steps) {
				os.Remove(rf.knownHosts)
			}
		}
		sres, err := a.syncLoRAs(ctx, target, wanted, o.pipeline, rf, o.wait)
		if err != nil {
			return fail(fmt.Errorf("syncing LoRAs to pod %s: %w", id, err))
		}
		res["sync"] = sres
	}
	sc := &scope.Client{Base: c.ProxyURL(id, deploy.ContainerPort)}
	if err := a.scopeUp(ctx, sc, o.wait, o.pipeline, wanted, res); err != nil {
		return fail(err)
	}
	res["pod"], res["created"] = pod, created
	// The guard on the pod enforces its limits with the laptop closed.
	if info, gerr := a.installGuard(ctx, c, pod, o.rf, ""); gerr != nil {
		a.warn(oneLineErr(gerr))
	} else {
		res["guard"] = info
	}
	return a.out(res, func(w io.Writer) {
		printSteps(w, steps, false)
		printScopeUp(w, res, o.pipeline, len(wanted))
		fmt.Fprintf(w, "open %s\n", sc.Base)
	})
}

func rebooted(steps []deploy.Step) bool {
	for _, s := range steps {
		if s.Action == "update" || s.Action == "start" {
			return true
		}
	}
	return false
}

// cleanupUnknownCreate: a create that may have made a pod (no answer, retries spent)
// leaves it running unless scopectl finds it by its request id and terminates it.
func (a *app) cleanupUnknownCreate(ctx context.Context, c *runpod.Client, rec *store.Pod, keep bool, err error) error {
	if rec == nil || !errors.Is(err, provider.ErrOutcomeUnknown) || keep {
		return err
	}
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	found, ferr := c.FindByTag(tctx, rec.RequestID)
	if ferr != nil {
		return fmt.Errorf("%w; could not look for the pod (%v): `scopectl pod ls` shows it if it exists", err, ferr)
	}
	if len(found) == 0 {
		return fmt.Errorf("%w; no pod with request id %s exists", err, rec.RequestID)
	}
	for _, p := range found {
		if terr := c.Terminate(tctx, p.ID); terr != nil && !errors.Is(terr, provider.ErrNotFound) {
			return fmt.Errorf("%w; terminating pod %s failed too (%v): terminate it with `scopectl pod rm %s --yes`", err, p.ID, terr, p.ID)
		}
		a.markTerminated(tctx, p.ID)
	}
	return fmt.Errorf("%w; the pod it made was found and terminated", err)
}

// deployPodName is the name deploy --new gives its pod (the request id is appended).
func deployPodName(name string) string {
	if name == "" {
		return "scope"
	}
	return name
}

// deployedPod finds the live pod an earlier deploy --new named name made: the newest
// one the store records that the provider still has and has not terminated. A pod of
// that name on another GPU type is refused rather than silently kept or replaced.
func (a *app) deployedPod(ctx context.Context, c *runpod.Client, name, gpu string) (string, error) {
	ps, err := a.podStore()
	if err != nil {
		return "", err
	}
	recs, err := ps.ListPods(ctx, true)
	if err != nil {
		return "", err
	}
	for _, rec := range recs {
		if rec.Name != name || rec.Provider != c.Name() || rec.ID == "" {
			continue
		}
		p, err := c.Get(ctx, rec.ID)
		if errors.Is(err, provider.ErrNotFound) || (err == nil && p.Status == provider.StatusTerminated) {
			a.markTerminated(ctx, rec.ID)
			continue
		}
		if err != nil {
			return "", err
		}
		if gpu != "" && p.GPUType != "" && p.GPUType != gpu {
			return "", withCode(ExitRefused, fmt.Errorf("pod %s (%s) already runs Scope on %s, not %s: `scopectl pod rm %s --yes` first, or deploy --new --name another", p.ID, name, p.GPUType, gpu, p.ID))
		}
		return p.ID, nil
	}
	return "", nil
}
