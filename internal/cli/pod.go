package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/provider/runpod"
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
	cmd := group(&cobra.Command{Use: "pod", Short: "RunPod pods: create, list, stop, start, terminate, GPU types"})
	cmd.AddCommand(a.podGPUs(), a.podCreate(), a.podLs(), a.podGet(), a.podAction("stop"), a.podAction("start"), a.podRm(), a.podWatch(), a.podSSH())
	return cmd
}

func (a *app) podGPUs() *cobra.Command {
	return &cobra.Command{
		Use:   "gpus",
		Short: "GPU types with price per hour and availability",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
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
}

func (a *app) podCreate() *cobra.Command {
	var spec provider.CreateSpec
	var idle time.Duration
	var maxHours float64
	var sshKey string
	cmd := &cobra.Command{
		Use:   "create --gpu TYPE [--cloud secure|community] [--volume-gb N | --network-volume ID]",
		Short: "Create a pod (idempotent; recorded in the store; idle auto-stop limit by default)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.runpod()
			if err != nil {
				return err
			}
			pod, rec, err := a.createPod(cmd.Context(), c, spec, idle, maxHours, sshKey)
			if err != nil {
				return err
			}
			return a.out(pod, func(w io.Writer) { printPod(w, c, pod, rec) })
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
	return cmd
}

// createPod creates a pod (pod create, deploy --new): the store's record, keyed by a
// fresh request id, is written before asking, so that a crash between request and
// answer never loses the pod; the user's SSH public key (sshKey, default
// ~/.ssh/id_ed25519.pub) and HF_TOKEN go into the pod; a create that certainly made no
// pod is marked in the record.
func (a *app) createPod(ctx context.Context, c *runpod.Client, spec provider.CreateSpec, idle time.Duration, maxHours float64, sshKey string) (*provider.Pod, *store.Pod, error) {
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

func printPod(w io.Writer, c *runpod.Client, p *provider.Pod, rec *store.Pod) {
	fmt.Fprintf(w, "pod %s (%s): %s, %d × %s, $%.3f/h\n", p.ID, p.Name, p.Status, p.GPUCount, p.GPUType, p.CostPerHr)
	if host, port, ok := p.SSH(); ok {
		fmt.Fprintf(w, "ssh: ssh://root@%s:%d/workspace/models/lora\n", host, port)
	}
	fmt.Fprintf(w, "scope: %s\n", c.ProxyURL(p.ID, 8000))
	if rec != nil && rec.IdleStop > 0 {
		fmt.Fprintf(w, "idle auto-stop after %s\n", rec.IdleStop)
	}
}

// podView is a pod as the API and the store see it together.
type podView struct {
	provider.Pod
	Recorded bool   `json:"recorded"` // scopectl created it
	Note     string `json:"note,omitempty"`
}

func (a *app) podLs() *cobra.Command {
	return &cobra.Command{
		Use:   "ls",
		Short: "List pods, reconciling the API with what scopectl recorded",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.runpod()
			if err != nil {
				return err
			}
			ps, err := a.podStore()
			if err != nil {
				return err
			}
			views, err := reconcile(cmd.Context(), c, ps)
			if err != nil {
				return err
			}
			return a.out(views, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tNAME\tSTATUS\tGPU\t$/H\tSCOPECTL\tNOTE")
				for _, v := range views {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d × %s\t%.3f\t%v\t%s\n", v.ID, v.Name, v.Status, v.GPUCount, v.GPUType, v.CostPerHr, v.Recorded, v.Note)
				}
				tw.Flush()
			})
		},
	}
}

// reconcile lists the API's pods, updates the store's records, marks records whose pod
// is gone as terminated, and settles records left CREATING by a crash.
func reconcile(ctx context.Context, c *runpod.Client, ps store.PodStore) ([]podView, error) {
	pods, err := c.List(ctx)
	if err != nil {
		return nil, err
	}
	recs, err := ps.ListPods(ctx, true)
	if err != nil {
		return nil, err
	}
	byID, byTag := map[string]*store.Pod{}, map[string]*store.Pod{}
	for i := range recs {
		byTag[recs[i].RequestID] = &recs[i]
		if recs[i].ID != "" {
			byID[recs[i].ID] = &recs[i]
		}
	}
	now := time.Now().UTC()
	seen := map[string]bool{}
	views := []podView{}
	for _, p := range pods {
		v := podView{Pod: p}
		rec := byID[p.ID]
		if rec == nil && p.Tag != "" {
			rec = byTag[p.Tag]
			if rec != nil {
				v.Note = "found after an interrupted create"
			}
		}
		if rec != nil {
			v.Recorded = true
			seen[rec.RequestID] = true
			rec.ID, rec.LastSeenStatus, rec.LastSeenAt, rec.CostPerHr = p.ID, p.Status, &now, p.CostPerHr
			if err := ps.PutPod(ctx, *rec); err != nil {
				return nil, err
			}
		} else {
			v.Note = "not created by scopectl"
		}
		views = append(views, v)
	}
	for i := range recs {
		r := &recs[i]
		if seen[r.RequestID] {
			continue
		}
		if r.LastSeenStatus == provider.StatusCreating && time.Since(r.CreatedAt) < 5*time.Minute {
			continue // a create may still be in flight
		}
		r.TerminatedAt, r.LastSeenStatus = &now, provider.StatusTerminated
		if err := ps.PutPod(ctx, *r); err != nil {
			return nil, err
		}
	}
	return views, nil
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

// podTarget opens the provider and resolves a pod reference (pod id or request id).
func (a *app) podTarget(ctx context.Context, ref string) (*runpod.Client, string, error) {
	c, err := a.runpod()
	if err != nil {
		return nil, "", err
	}
	id, err := a.resolvePod(ctx, ref)
	return c, id, err
}

// fetchPod reads one pod from the provider.
func (a *app) fetchPod(ctx context.Context, ref string) (*provider.Pod, error) {
	c, id, err := a.podTarget(ctx, ref)
	if err != nil {
		return nil, err
	}
	p, err := c.Get(ctx, id)
	return p, notFound(err)
}

func (a *app) podGet() *cobra.Command {
	return &cobra.Command{
		Use:   "get ID",
		Short: "Show one pod",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, id, err := a.podTarget(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			p, err := c.Get(cmd.Context(), id)
			if err != nil {
				return notFound(err)
			}
			return a.out(p, func(w io.Writer) { printPod(w, c, p, nil) })
		},
	}
}

func notFound(err error) error {
	if errors.Is(err, provider.ErrNotFound) {
		return withCode(ExitNotFound, err)
	}
	return err
}

func (a *app) podAction(verb string) *cobra.Command {
	return &cobra.Command{
		Use:   verb + " ID",
		Short: map[string]string{"stop": "Stop a pod (the volume stays; billing for the GPU stops)", "start": "Start a stopped pod"}[verb],
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, id, err := a.podTarget(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if verb == "stop" {
				err = c.Stop(cmd.Context(), id)
			} else {
				err = c.Start(cmd.Context(), id)
			}
			if err != nil {
				return notFound(err)
			}
			return a.out(map[string]string{"id": id, "action": verb}, func(w io.Writer) { fmt.Fprintf(w, "%s: %s requested\n", id, verb) })
		},
	}
}

func (a *app) podRm() *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "rm ID",
		Short: "Terminate a pod (its volume is deleted); asks unless --yes",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !yes {
				return usageError("terminating %s deletes its volume; pass --yes to confirm", args[0])
			}
			ctx := cmd.Context()
			c, id, err := a.podTarget(ctx, args[0])
			if err != nil {
				return err
			}
			if err := c.Terminate(ctx, id); err != nil {
				return notFound(err)
			}
			a.markTerminated(ctx, id)
			return a.out(map[string]string{"id": id, "action": "terminate"}, func(w io.Writer) { fmt.Fprintf(w, "%s terminated\n", id) })
		},
	}
	cmd.Flags().BoolVar(&yes, "yes", false, "confirm termination")
	return cmd
}
