package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/daydreamlive/scopectl/internal/guard"
	"github.com/daydreamlive/scopectl/internal/ledger"
	"github.com/daydreamlive/scopectl/internal/pods"
	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/provider/kubernetes"
	"github.com/daydreamlive/scopectl/internal/provider/runpod"
	"github.com/daydreamlive/scopectl/internal/provider/sshhost"
	"github.com/daydreamlive/scopectl/internal/secret"
	"github.com/daydreamlive/scopectl/internal/store"
)

// DefaultIdleStop is the idle limit every pod scopectl creates gets unless told otherwise.
const DefaultIdleStop = 30 * time.Minute

func (a *app) runpod() (*runpod.Client, error) {
	if !a.cfg.RunPodKey.IsSet() {
		return nil, usageError("set RUNPOD_API_KEY (environment, .env or config.yaml) to manage RunPod pods")
	}
	opts := runpod.OptionsFromEnv(os.Getenv)
	opts.APIKey = a.cfg.RunPodKey
	opts.Redactor = secret.Default
	return runpod.New(opts)
}

// runpodStore opens the RunPod client and the store's pod records.
func (a *app) runpodStore() (*runpod.Client, store.PodStore, error) {
	c, err := a.runpod()
	if err != nil {
		return nil, nil, err
	}
	ps, err := a.podStore()
	return c, ps, err
}

// reconciled is RunPod's pods reconciled with the store (see reconcile).
func (a *app) reconciled(ctx context.Context) ([]podView, error) {
	c, ps, err := a.runpodStore()
	if err != nil {
		return nil, err
	}
	views, err := reconcile(ctx, c, ps)
	if err != nil {
		return nil, err
	}
	a.observeLedger(ctx, c.Name(), ps, views)
	a.observeVolumes(ctx, c, ps)
	return views, nil
}

func (a *app) podStore() (store.PodStore, error) {
	lib, err := a.library()
	if err != nil {
		return nil, err
	}
	ps, ok := lib.Store.(store.PodStore)
	if !ok {
		return nil, errors.New("this store does not record pods")
	}
	return ps, nil
}

func (a *app) podCmd() *cobra.Command {
	cmd := group(&cobra.Command{Use: "pod", Short: "RunPod pods and SSH hosts: create/add, list, stop, start, terminate/forget, GPUs"})
	cmd.AddCommand(a.podGPUs(), a.podCreate(), a.podLs(), a.podGet(), a.podAction("stop"), a.podAction("start"), a.podRm(), a.podWatch(), a.podSSH(), a.podGuardCmd())
	return cmd
}

func (a *app) podGPUs() *cobra.Command {
	var prov string
	var rf remoteFlags
	cmd := &cobra.Command{
		Use:   "gpus [--provider runpod|ssh]",
		Short: "GPU types with price per hour and availability (RunPod), or the GPUs of the SSH hosts (nvidia-smi)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch prov {
			case sshhost.Name:
				return a.sshHostGPUs(cmd.Context(), rf)
			case "kubernetes":
				return a.kubeGPUs(cmd.Context(), rf)
			case runpod.Name:
			default:
				return usageError("--provider %q: runpod, ssh or kubernetes", prov)
			}
			c, err := a.runpod()
			if err != nil {
				return err
			}
			ts, err := c.GPUTypes(cmd.Context())
			if err != nil {
				return err
			}
			if ts == nil {
				ts = []provider.GPUType{}
			}
			return a.out(ts, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "GPU\tMEMORY\tSECURE $/h\tCOMMUNITY $/h\tAVAILABLE")
				for _, t := range ts {
					fmt.Fprintf(tw, "%s\t%d GB\t%.2f\t%.2f\t%v\n", t.ID, t.MemoryGB, t.SecurePrice, t.CommunityPrice, t.Available)
				}
				tw.Flush()
			})
		},
	}
	cmd.Flags().StringVar(&prov, "provider", runpod.Name, "runpod, ssh (the GPUs nvidia-smi reports on each SSH host), or kubernetes (the GPUs the nodes offer)")
	rf.addSSH(cmd)
	rf.kube.addTarget(cmd)
	return cmd
}

func (a *app) podCreate() *cobra.Command {
	var spec provider.CreateSpec
	var idle time.Duration
	var maxHours float64
	var sshKey, prov, host string
	var rf remoteFlags
	var bf budgetFlags
	var gf guardFlags
	cmd := &cobra.Command{
		Use:   "create --gpu TYPE [--cloud secure|community] [--volume-gb N | --network-volume ID] | --provider ssh --host ssh://user@host:port",
		Short: "Create a pod (idempotent; recorded in the store; idle auto-stop limit by default), or add an SSH host",
		Long: "RunPod (the default): rents a pod. --provider ssh: adds a machine you can SSH to, after\n" +
			"checking it (SSH with its host key checked, nvidia-smi for its GPUs, Docker); its pod id is\n" +
			"ssh-… and its name --name (default the host name). Its \"pod\" is the Scope container that\n" +
			"`scopectl deploy --pod ID` runs there.\n\n" +
			"Once the pod runs (the host answers), the guard starts there (as `scopectl pod guard` does) and\n" +
			"enforces the pod's limits with this machine closed; --no-guard leaves that to `pod watch`/`serve`.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch prov {
			case sshhost.Name:
				return a.createSSHHost(cmd.Context(), cmd, host, spec.Name, rf, gf)
			case runpod.Name:
				if host != "" {
					return usageError("--host is for --provider ssh")
				}
			default:
				return usageError("--provider %q: runpod or ssh", prov)
			}
			c, err := a.runpod()
			if err != nil {
				return err
			}
			if err := a.budgetGate(cmd.Context(), c, bf, spec, maxHours); err != nil {
				return err
			}
			pod, rec, err := a.createPod(cmd.Context(), c, spec, idle, maxHours, sshKey)
			if err != nil {
				return err
			}
			v := podStarted{Pod: pod}
			v.Guard, v.GuardError = a.startGuard(cmd.Context(), c, pod, rf, gf, slices.Contains(spec.Ports, "22/tcp"))
			if v.Guard != nil { // it runs now: its addresses are known
				if fresh, err := c.Get(cmd.Context(), pod.ID); err == nil {
					v.Pod = fresh
				}
			}
			return a.out(v, func(w io.Writer) {
				printPod(w, c, pod, rec)
				if v.Guard != nil {
					printGuard(w, v.Guard)
				}
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&spec.GPUType, "gpu", "", "GPU type id, e.g. \"NVIDIA RTX A6000\"")
	f.IntVar(&spec.GPUCount, "gpus", 1, "number of GPUs")
	f.StringVar(&spec.Cloud, "cloud", "secure", "secure or community")
	f.StringVar(&spec.Image, "image", "daydreamlive/scope:main", "container image")
	f.StringVar(&spec.Name, "name", "", "pod name (default scopectl)")
	f.IntVar(&spec.VolumeGB, "volume-gb", 50, "pod volume at /workspace, GB")
	f.IntVar(&spec.ContainerDiskGB, "container-disk-gb", 30, "container disk, GB")
	f.StringVar(&spec.NetworkVolumeID, "network-volume", "", "network volume id to mount at /workspace")
	f.StringSliceVar(&spec.Ports, "ports", []string{"8000/http", "22/tcp"}, "ports to expose")
	f.Float64Var(&spec.MaxPrice, "max-price", 0, "refuse GPUs above this $/h (0: no limit)")
	f.DurationVar(&idle, "idle-stop", DefaultIdleStop, "stop the pod after this long idle (0 disables; see `pod watch`)")
	f.Float64Var(&maxHours, "max-hours", 0, "stop the pod after this many hours (0: no limit)")
	f.StringVar(&sshKey, "ssh-key", "", "public key to inject (default ~/.ssh/id_ed25519.pub)")
	f.StringVar(&prov, "provider", runpod.Name, "runpod, or ssh: add a host you can SSH to (--host)")
	f.StringVar(&host, "host", "", "with --provider ssh: ssh://user@host:port")
	bf.add(cmd)
	gf.add(cmd)
	rf.addSSH(cmd)
	return cmd
}

// podStarted is pod create's and pod start's answer: the pod and its guard (or why
// there is none).
type podStarted struct {
	*provider.Pod
	Guard      *guard.Installed `json:"guard,omitempty"`
	GuardError string           `json:"guard_error,omitempty"`
}

// createPod creates a pod (pod create, deploy --new): the store's record, keyed by a
// fresh request id, is written before asking, so that a crash between request and
// answer never loses the pod; the user's SSH public key (sshKey, default
// ~/.ssh/id_ed25519.pub) and HF_TOKEN go into the pod; a create that certainly made no
// pod is marked in the record.
func (a *app) createPod(ctx context.Context, c *runpod.Client, spec provider.CreateSpec, idle time.Duration, maxHours float64, sshKey string) (*provider.Pod, *store.Pod, error) {
	return a.createPodLimits(ctx, c, spec, idle, maxHours, false, sshKey)
}

// createPodLimits is createPod for a pod that may also stop when its training job ends
// (train run's pods).
func (a *app) createPodLimits(ctx context.Context, c *runpod.Client, spec provider.CreateSpec, idle time.Duration, maxHours float64, stopOnJobEnd bool, sshKey string) (*provider.Pod, *store.Pod, error) {
	if spec.GPUType == "" {
		return nil, nil, usageError("--gpu is required (see `scopectl pod gpus`)")
	}
	spec.Cloud = strings.ToUpper(spec.Cloud)
	if spec.Cloud != "SECURE" && spec.Cloud != "COMMUNITY" {
		return nil, nil, usageError("--cloud %q: expected secure or community", spec.Cloud)
	}
	ps, err := a.podStore()
	if err != nil {
		return nil, nil, err
	}
	if sshKey == "" {
		home, _ := os.UserHomeDir()
		sshKey = filepath.Join(home, ".ssh", "id_ed25519.pub")
	}
	if b, err := os.ReadFile(sshKey); err == nil {
		spec.SSHPublicKey = strings.TrimSpace(string(b))
	}
	if _, set := spec.SecretEnv["HF_TOKEN"]; !set && a.cfg.HFToken.IsSet() {
		sec := map[string]secret.Secret{"HF_TOKEN": a.cfg.HFToken}
		for k, v := range spec.SecretEnv {
			sec[k] = v
		}
		spec.SecretEnv = sec
	}
	// The limits travel with the pod: any scopectl that lists it, and the guard on it,
	// read them from its environment.
	env := map[string]string{}
	for k, v := range spec.Env {
		env[k] = v
	}
	for k, v := range (provider.Limits{IdleStop: idle, MaxHours: maxHours, StopOnJobEnd: stopOnJobEnd}).Env() {
		env[k] = v
	}
	spec.Env = env
	spec.RequestID = provider.NewRequestID()
	if spec.Name == "" {
		spec.Name = "scopectl"
	}
	rec := store.Pod{RequestID: spec.RequestID, Provider: c.Name(), Name: spec.Name, GPUType: spec.GPUType,
		IdleStop: idle, MaxHours: maxHours, LastSeenStatus: provider.StatusCreating, CreatedAt: time.Now().UTC()}
	// Recorded before asking: a crash between request and answer leaves a row
	// that names the request id the pod carries, so it is never forgotten.
	if err := ps.PutPod(ctx, rec); err != nil {
		return nil, nil, err
	}
	pod, err := c.Create(ctx, spec)
	if err != nil {
		if errors.Is(err, provider.ErrNoCapacity) || errors.Is(err, provider.ErrPriceTooHigh) || errors.Is(err, provider.ErrUnauthorized) {
			now := time.Now().UTC()
			rec.LastSeenStatus, rec.TerminatedAt = "NOT_CREATED", &now
			ps.PutPod(ctx, rec)
		}
		return nil, &rec, err
	}
	now := time.Now().UTC()
	rec.ID, rec.CostPerHr, rec.LastSeenStatus, rec.LastSeenAt = pod.ID, pod.CostPerHr, pod.Status, &now
	if err := ps.PutPod(ctx, rec); err != nil {
		return pod, &rec, err
	}
	return pod, &rec, nil
}

// markTerminated records that scopectl terminated the pod.
func (a *app) markTerminated(ctx context.Context, id string) {
	if ps, err := a.podStore(); err == nil {
		if rec, err := ps.GetPod(ctx, id); err == nil {
			now := time.Now().UTC()
			rec.TerminatedAt, rec.LastSeenStatus = &now, provider.StatusTerminated
			ps.PutPod(ctx, rec)
		}
	}
}

func printPod(w io.Writer, c provider.Provider, p *provider.Pod, rec *store.Pod) {
	fmt.Fprintf(w, "pod %s (%s): %s, %d × %s, $%.3f/h\n", p.ID, p.Name, p.Status, p.GPUCount, p.GPUType, p.CostPerHr)
	if p.Detail != "" {
		fmt.Fprintf(w, "%s\n", p.Detail)
	}
	if u, ok := p.SSHURL(); ok {
		fmt.Fprintf(w, "ssh: %s\n", u)
	}
	if u := podScopeURL(c, p); u != "" {
		fmt.Fprintf(w, "scope: %s\n", u)
	}
	if rec != nil && rec.IdleStop > 0 {
		fmt.Fprintf(w, "idle auto-stop after %s\n", rec.IdleStop)
	}
	if l := limitsOf(*p, rec); l != nil {
		fmt.Fprintf(w, "limits: %s\n", limitsText(l))
	}
}

// podView is a pod as the API and the store see it together: the pods service's View,
// which the server's /api/v1/pods shows too.
type podView = pods.View

// limitsOf is a pod's limits: those it carries (any scopectl's pod), else the record's
// (a pod created before limits travelled with pods), else nil.
func limitsOf(p provider.Pod, rec *store.Pod) *provider.Limits { return pods.LimitsOf(p, rec) }

func limitsText(l *provider.Limits) string {
	if l == nil {
		return "-"
	}
	s := l.String()
	if !l.FromPod {
		s += " (local)"
	}
	if l.Problem != "" {
		s += " (" + l.Problem + ")"
	}
	return s
}

func (a *app) podLs() *cobra.Command {
	var rf remoteFlags
	var prov string
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List pods, reconciling the API with what scopectl recorded, and the SSH hosts (checked now)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if prov == "kubernetes" {
				views, err := a.kubePodViews(ctx, rf)
				if err != nil {
					return err
				}
				return a.out(views, func(w io.Writer) { printKubePods(w, views) })
			}
			if prov != "" && prov != runpod.Name && prov != sshhost.Name {
				return usageError("--provider %q: runpod, ssh or kubernetes", prov)
			}
			views := []podView{}
			if prov != runpod.Name {
				hosts, err := a.sshHostViews(ctx, rf)
				if err != nil {
					return err
				}
				if hosts != nil {
					views = hosts
				}
			}
			if prov == "" && !a.cfg.RunPodKey.IsSet() {
				// The SSH hosts are listed all the same; RunPod is only skipped, and said so.
				a.warn("RunPod pods not listed: RUNPOD_API_KEY is not set (environment, .env or config.yaml)")
			} else if prov != sshhost.Name {
				pods, err := a.reconciled(ctx)
				if err != nil {
					return err
				}
				views = append(pods, views...)
			}
			return a.out(views, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				if len(views) == 0 {
					fmt.Fprintln(w, "no pods")
					return
				}
				fmt.Fprintln(tw, "ID\tNAME\tSTATUS\tGPU\t$/H\tSCOPECTL\tLIMITS\tNOTE")
				for _, v := range views {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d × %s\t%.3f\t%v\t%s\t%s\n", v.ID, v.Name, v.Status, v.GPUCount, v.GPUType, v.CostPerHr, v.Recorded, limitsText(v.Limits), v.Note)
				}
				tw.Flush()
			})
		},
	}
	cmd.Flags().StringVar(&prov, "provider", "", "only runpod, only ssh, or kubernetes (default runpod and ssh; RunPod when RUNPOD_API_KEY is set)")
	rf.addSSH(cmd)
	rf.kube.addTarget(cmd)
	return cmd
}

// reconcile lists the API's pods, updates the store's records, marks records whose pod
// is gone as terminated, and settles records left CREATING by a crash (pods.Reconcile).
func reconcile(ctx context.Context, c *runpod.Client, ps store.PodStore) ([]podView, error) {
	return pods.Reconcile(ctx, c, ps)
}

func (a *app) resolvePod(ctx context.Context, ref string) (string, error) {
	ps, err := a.podStore()
	if err != nil {
		return "", err
	}
	if rec, err := ps.GetPod(ctx, ref); err == nil && rec.ID != "" {
		return rec.ID, nil
	}
	return ref, nil
}

func (a *app) podGet() *cobra.Command {
	var rf remoteFlags
	cmd := &cobra.Command{
		Use:   "get ID",
		Short: "Show one pod, or SSH host (checked now)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, id, err := a.podTarget(cmd.Context(), args[0], rf)
			if err != nil {
				return err
			}
			p, err := c.Get(cmd.Context(), id)
			if err != nil {
				return notFound(err)
			}
			ledgerID := p.ID
			if kc, ok := c.(*kubernetes.Client); ok {
				ledgerID = a.kubeObserveOne(cmd.Context(), kc, p.ID) // a guard's stop since, at its time
			}
			v := podGetView{Pod: p, Limits: limitsOf(*p, nil), LastStop: a.lastStop(cmd.Context(), ledgerID)}
			return a.out(v, func(w io.Writer) {
				printPod(w, c, p, nil)
				if s := v.LastStop; s != nil && s.EndedAt != nil {
					fmt.Fprintf(w, "last stop: %s by %s: %s\n", s.EndedAt.Local().Format(time.DateTime), s.EndSource, s.EndReason)
				}
			})
		},
	}
	rf.addSSH(cmd)
	rf.kube.add(cmd)
	return cmd
}

func notFound(err error) error {
	if errors.Is(err, provider.ErrNotFound) {
		return withCode(ExitNotFound, err)
	}
	return err
}

func (a *app) podAction(verb string) *cobra.Command {
	var rf remoteFlags
	var gf guardFlags
	cmd := &cobra.Command{
		Use: verb + " ID",
		Short: map[string]string{"stop": "Stop a pod (the volume stays; billing for the GPU stops), or an SSH host's Scope container",
			"start": "Start a stopped pod, or an SSH host's Scope container, and its guard again (--no-guard skips)"}[verb],
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, id, err := a.podTarget(cmd.Context(), args[0], rf)
			if err != nil {
				return err
			}
			ledgerID := id
			if kc, ok := c.(*kubernetes.Client); ok && verb == "stop" {
				// The ledger first sees it as it is (a guard's stop since is its last stop).
				ledgerID = a.kubeObserveOne(cmd.Context(), kc, id)
			}
			if verb == "stop" {
				err = c.Stop(cmd.Context(), id)
			} else {
				err = c.Start(cmd.Context(), id)
			}
			if err != nil {
				return notFound(err)
			}
			if verb == "stop" {
				if n, ok := c.(interface{ Name() string }); ok {
					a.recordStop(cmd.Context(), n.Name(), ledgerID, ledger.EndScopectl, "scopectl pod stop")
				}
				return a.out(map[string]string{"id": id, "action": verb}, func(w io.Writer) { fmt.Fprintf(w, "%s: %s requested\n", id, verb) })
			}
			// A restart leaves the pod without its guard (the container's processes are
			// gone): start it again, once the pod runs.
			res := struct {
				ID         string           `json:"id"`
				Action     string           `json:"action"`
				Guard      *guard.Installed `json:"guard,omitempty"`
				GuardError string           `json:"guard_error,omitempty"`
			}{ID: id, Action: verb}
			if p, err := c.Get(cmd.Context(), id); err != nil {
				res.GuardError = "guard not started on " + id + ": " + oneLineErr(err)
				a.warn(res.GuardError)
			} else {
				res.Guard, res.GuardError = a.startGuard(cmd.Context(), c, p, rf, gf, true)
			}
			info := res.Guard
			return a.out(res, func(w io.Writer) {
				fmt.Fprintf(w, "%s: %s requested\n", id, verb)
				if info != nil {
					printGuard(w, info)
				}
			})
		},
	}
	if verb == "start" {
		gf.add(cmd)
	}
	rf.addSSH(cmd)
	rf.kube.add(cmd)
	return cmd
}

func (a *app) podRm() *cobra.Command {
	var yes bool
	var rf remoteFlags
	cmd := &cobra.Command{
		Use:   "rm ID",
		Short: "Terminate a pod (its volume is deleted; asks unless --yes), or forget an SSH host (nothing on it is touched)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, id, err := a.podTarget(ctx, args[0], rf)
			if err != nil {
				return err
			}
			if _, ok := c.(*sshhost.Provider); ok {
				if err := c.Terminate(ctx, id); err != nil {
					return notFound(err)
				}
				return a.out(map[string]string{"id": id, "action": "forget"}, func(w io.Writer) {
					fmt.Fprintf(w, "%s forgotten; its container and files are untouched\n", id)
				})
			}
			if !yes {
				return usageError("terminating %s deletes its volume; pass --yes to confirm", args[0])
			}
			ledgerID := id
			if kc, ok := c.(*kubernetes.Client); ok {
				ledgerID = a.kubeObserveOne(ctx, kc, id)
			}
			if err := c.Terminate(ctx, id); err != nil {
				return notFound(err)
			}
			a.markTerminated(ctx, id)
			if n, ok := c.(interface{ Name() string }); ok {
				a.recordStop(ctx, n.Name(), ledgerID, ledger.EndScopectl, "scopectl pod rm (terminated)")
			}
			return a.out(map[string]string{"id": id, "action": "terminate"}, func(w io.Writer) { fmt.Fprintf(w, "%s terminated\n", id) })
		},
	}
	cmd.Flags().BoolVar(&yes, "yes", false, "confirm termination")
	rf.addSSH(cmd)
	rf.kube.add(cmd)
	return cmd
}

// podGetView is pod get's answer: the pod, its limits and its last stop in the ledger.
type podGetView struct {
	*provider.Pod
	Limits   *provider.Limits `json:"limits,omitempty"`
	LastStop *store.Run       `json:"last_stop,omitempty"`
}

// lastStop is the ledger's most recent ended run of pod id (nil if none).
func (a *app) lastStop(ctx context.Context, id string) *store.Run {
	ls, err := a.ledgerStore()
	if err != nil {
		return nil
	}
	runs, err := ls.Runs(ctx, time.Time{})
	if err != nil {
		return nil
	}
	var last *store.Run
	for i := range runs {
		r := &runs[i]
		if r.PodID == id && r.EndedAt != nil && r.EndSource != ledger.EndPrice && (last == nil || r.EndedAt.After(*last.EndedAt)) {
			last = r
		}
	}
	return last
}
