package deploy

// The deploy flows end to end, for both faces (`scopectl deploy` and the web server's
// POST /api/v1/deploys): an SSH host with Docker (Apply), or a RunPod pod, existing
// (ApplyPod) or new; then the LoRAs into Scope's LoRA dir, Scope's health and the
// pipeline. What only a face can do (open a remote with its flags, create a pod with
// its records, gate on a budget, install the guard) comes in as hooks on Deployer.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/daydreamlive/scopectl/internal/docker"
	"github.com/daydreamlive/scopectl/internal/httpx"
	"github.com/daydreamlive/scopectl/internal/library"
	"github.com/daydreamlive/scopectl/internal/lorasync"
	"github.com/daydreamlive/scopectl/internal/progress"
	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/remote/ssh"
	"github.com/daydreamlive/scopectl/internal/scope"
	"github.com/daydreamlive/scopectl/internal/secret"
	"github.com/daydreamlive/scopectl/internal/store"
)

// DeployInput is one deploy: to an SSH host (Host), to an existing RunPod pod (Pod) or
// to a new one (New).
type DeployInput struct {
	Host string `json:"host,omitempty"` // ssh://user@host:port (Docker host)
	Pod  string `json:"pod,omitempty"`  // RunPod pod id, or scopectl's request id
	New  bool   `json:"new,omitempty"`  // create a RunPod pod
	// Spec is the container on a host; on a pod only Image, LoRADir and (with New) Name
	// mean something. Spec.Env and Spec.SecretEnv are set from Env and HFToken.
	Spec     Spec              `json:"spec"`
	Env      map[string]string `json:"env,omitempty"`
	LoRAs    []string          `json:"loras,omitempty"` // library LoRAs, NAME[:SCALE]
	Pipeline string            `json:"pipeline,omitempty"`
	DryRun   bool              `json:"dry_run,omitempty"`
	Wait     time.Duration     `json:"wait,omitempty"` // for the pod, health and the pipeline (each); default 10m
	// With New: the pod (GPU, cloud, sizes, network volume, price limit), its limits,
	// the public key to inject and whether a pod that failed to deploy is kept.
	Create      provider.CreateSpec `json:"create,omitempty"`
	VolumeGBSet bool                `json:"-"` // the volume size was asked for (else a network volume replaces it)
	IdleStop    time.Duration       `json:"idle_stop,omitempty"`
	MaxHours    float64             `json:"max_hours,omitempty"`
	SSHKey      string              `json:"ssh_key,omitempty"`
	Keep        bool                `json:"keep,omitempty"`
	// HFToken goes to the container as the secret HF_TOKEN.
	HFToken secret.Secret `json:"-"`
	// KnownHosts: the LoRA sync to a pod uses the remote's own host-key policy when set;
	// otherwise it trusts a pod's keys on first use, per pod and per boot.
	KnownHosts string `json:"-"`
}

// DeployResult is what a deploy did (the fields of `scopectl deploy --json`).
type DeployResult struct {
	Created  *bool                 `json:"created,omitempty"` // a RunPod deploy: the pod was made now
	DryRun   bool                  `json:"dry_run"`
	Guard    *GuardInfo            `json:"guard,omitempty"`
	Health   *scope.Health         `json:"health,omitempty"`
	Host     string                `json:"host,omitempty"`
	Pipeline *scope.PipelineStatus `json:"pipeline,omitempty"`
	Pod      *provider.Pod         `json:"pod,omitempty"`
	Reused   string                `json:"reused,omitempty"` // the pod an earlier deploy --new made
	Steps    []Step                `json:"steps"`
	Sync     *lorasync.Result      `json:"sync,omitempty"`
	URL      string                `json:"url,omitempty"`
	// LoRAs is how many LoRAs were loaded with the pipeline (for the text output).
	LoRAs int `json:"-"`
}

// GuardInfo is the guard a deploy started (or found running) on its pod: deploy
// --json's "guard". It carries guard.Installed's fields (deploy cannot import guard,
// which imports deploy); pid and already_running are always present.
type GuardInfo struct {
	Pod     string `json:"pod"`
	Limits  string `json:"limits"`
	Log     string `json:"log"`
	PID     int    `json:"pid"`
	Already bool   `json:"already_running"`
}

// InputError is bad input (exit status 2 on the command line, 400 from the API).
type InputError struct{ Msg string }

func (e *InputError) Error() string { return e.Msg }

func inputError(format string, a ...any) error { return &InputError{fmt.Sprintf(format, a...)} }

// RefusedError is a deploy refused as it would replace or duplicate something.
type RefusedError struct{ Err error }

func (e *RefusedError) Error() string { return e.Err.Error() }
func (e *RefusedError) Unwrap() error { return e.Err }

// ErrCannotCreate: this Deployer has no CreatePod (a face that keeps no pod records).
var ErrCannotCreate = errors.New("this deployer cannot create pods: run scopectl deploy --new, or deploy to an existing pod")

// LookupError is a failure to find or read the pod deployed to.
type LookupError struct{ Err error }

func (e *LookupError) Error() string { return e.Err.Error() }
func (e *LookupError) Unwrap() error { return e.Err }

// Deployer runs deploys with what the face provides.
type Deployer struct {
	Lib *library.Library
	// RunPod: nil when RUNPOD_API_KEY is not set.
	RunPod RunPod
	// RunPodErr says why RunPod is nil (returned by a RunPod deploy).
	RunPodErr error
	Pods      store.PodStore
	// DataDir holds known_hosts.d (per-pod host keys).
	DataDir string
	// OpenRemote opens a target URL; knownHosts, when set, is a known_hosts file whose
	// new keys are accepted (a pod's, on first use).
	OpenRemote func(ctx context.Context, target, knownHosts string) (remote.Remote, error)
	// CreatePod creates and records a pod with the limits and key of in.
	CreatePod func(ctx context.Context, cs provider.CreateSpec, in DeployInput) (*provider.Pod, *store.Pod, error)
	// BudgetGate refuses (or warns about) a pod the day's budget cannot pay; nil: none.
	BudgetGate func(ctx context.Context, cs provider.CreateSpec, in DeployInput) error
	// InstallGuard installs the guard on a deployed pod; nil: none.
	InstallGuard func(ctx context.Context, p *provider.Pod) (*GuardInfo, error)
	// HFToken goes to every deploy as the secret HF_TOKEN unless its input has one.
	HFToken  secret.Secret
	Progress progress.Reporter // transfers
	Reporter progress.Reporter // retries
	Warn     func(string)
}

// RunPod is what a RunPod deploy needs of the provider (runpod.Client): the pods, their
// HTTP proxy URLs, and a pod found by the request id it carries.
type RunPod interface {
	provider.Provider
	Name() string
	ProxyURL(podID string, port int) string
	FindByTag(ctx context.Context, tag string) ([]provider.Pod, error)
}

// WantedLoRA is a LoRA to load: the library entry and the load request for it.
type WantedLoRA struct {
	Ref  string
	Load scope.LoRALoad
}

// Deploy runs in: on Host, Pod or New.
func (d *Deployer) Deploy(ctx context.Context, in DeployInput) (*DeployResult, error) {
	if in.Wait <= 0 {
		in.Wait = 10 * time.Minute
	}
	if !in.HFToken.IsSet() {
		in.HFToken = d.HFToken
	}
	switch {
	case in.Host != "" && (in.Pod != "" || in.New):
		return nil, inputError("--host deploys to a Docker host, --pod/--new to a RunPod pod: pick one")
	case in.Pod != "" || in.New:
		return d.deployRunPod(ctx, in)
	case in.Host != "":
		return d.deployHost(ctx, in)
	}
	return nil, inputError("deploy needs a target: --host ssh://user@host:port (Docker), --pod ID or --new --gpu TYPE (RunPod)")
}

func (d *Deployer) deployHost(ctx context.Context, in DeployInput) (*DeployResult, error) {
	u, err := url.Parse(in.Host)
	if err != nil || (u.Scheme != "ssh" && u.Scheme != "ssh+pty") {
		return nil, inputError("--host %s: expected ssh:// or ssh+pty://", remote.Redact(in.Host))
	}
	s := in.Spec
	s.Env = in.Env
	if s.Env == nil {
		s.Env = map[string]string{}
	}
	if in.HFToken.IsSet() {
		s.SecretEnv = map[string]secret.Secret{"HF_TOKEN": in.HFToken}
	}
	// The limits travel with the container, as a RunPod pod's travel in its env: the
	// guard on the host and every scopectl that lists the host read them there.
	s.Labels = provider.Limits{IdleStop: in.IdleStop, MaxHours: in.MaxHours}.Labels()
	ns, err := Normalize(s)
	if err != nil {
		return nil, err
	}
	var wanted []WantedLoRA
	if len(in.LoRAs) > 0 {
		if wanted, err = d.PrepareLoRAs(ctx, in.LoRAs, in.Pipeline, ns.LoRADir); err != nil {
			return nil, err
		}
	}
	r, err := d.OpenRemote(ctx, in.Host, "")
	if err != nil {
		return nil, err
	}
	defer r.Close()
	run, ok := r.(remote.Runner)
	if !ok {
		return nil, inputError("%s cannot run commands: want ssh:// or ssh+pty://", r)
	}
	steps, err := Apply(ctx, run, s, in.DryRun)
	res := &DeployResult{Host: r.String(), Steps: steps, DryRun: in.DryRun, LoRAs: len(wanted)}
	if err != nil || in.DryRun {
		return res, err
	}
	// LoRAs go to the host folder mounted at /workspace.
	if len(wanted) > 0 {
		lu := *u
		lu.Path = path.Join(ns.Volume, strings.TrimPrefix(ns.LoRADir, "/workspace"))
		if res.Sync, err = d.SyncLoRAs(ctx, lu.String(), "", wanted, in.Pipeline, 0); err != nil {
			return nil, err
		}
	}
	sc := &scope.Client{Base: fmt.Sprintf("http://%s:%d", u.Hostname(), ns.Port)}
	if err := d.ScopeUp(ctx, sc, in.Wait, in.Pipeline, wanted, res); err != nil {
		return nil, err
	}
	return res, nil
}

// PrepareLoRAs parses NAME[:SCALE] and checks, before anything is deployed, that each
// names a library LoRA that passes the base-model gate for pipeline (converting it for
// Scope if needed: the sync that follows reuses that).
func (d *Deployer) PrepareLoRAs(ctx context.Context, refs []string, pipeline, loraDir string) ([]WantedLoRA, error) {
	var out []WantedLoRA
	for _, l := range refs {
		name, scale := l, 1.0
		if n, sc, ok := strings.Cut(l, ":"); ok {
			if _, err := fmt.Sscanf(sc, "%g", &scale); err != nil {
				return nil, inputError("--lora %q: scale must be a number", l)
			}
			name = n
		}
		if scale < -10 || scale > 10 {
			return nil, inputError("--lora %q: Scope takes scales from -10 to 10", l)
		}
		pr, err := d.Lib.Prepare(ctx, name, library.InstallOptions{Pipeline: pipeline})
		if err != nil {
			return nil, err
		}
		out = append(out, WantedLoRA{Ref: name, Load: scope.LoRALoad{Path: path.Join(loraDir, pr.File), Scale: scale}})
	}
	return out, nil
}

// SyncLoRAs sends the wanted LoRAs to target (a folder URL) with the transfer engine.
// A target that cannot be reached yet (a pod's sshd still starting) is tried again
// until retryFor has passed; a refused host key is never retried.
func (d *Deployer) SyncLoRAs(ctx context.Context, target, knownHosts string, wanted []WantedLoRA, pipeline string, retryFor time.Duration) (*lorasync.Result, error) {
	names := make([]string, len(wanted))
	for i, w := range wanted {
		names[i] = w.Ref
	}
	// A target is tried again, on the shared schedule, while the next try still falls
	// within retryFor.
	pol := httpx.Policy{Backoff: httpx.Backoff{Min: 500 * time.Millisecond, Max: 5 * time.Second}, MaxElapsed: retryFor,
		Retryable: func(err error) bool {
			return !errors.Is(err, ssh.ErrUnknownHostKey) && !errors.Is(err, ssh.ErrHostKeyChanged) && Retryable(err)
		},
		Op: "connecting to " + target,
		Notify: func(r httpx.Retry) {
			d.Reporter.Retry(r.Op, r.Attempt, r.Of, r.Reason, r.Wait)
		}}
	if retryFor <= 0 {
		pol.Attempts = 1
	}
	var last error
	r, err := httpx.Do(ctx, pol, func(int) (remote.Remote, error) {
		r, err := d.OpenRemote(ctx, target, knownHosts)
		last = err
		return r, err
	})
	if err != nil {
		return nil, last // the target's own words, also when ctx ended during a wait
	}
	defer r.Close()
	return lorasync.Sync(ctx, d.Lib, r, lorasync.Options{Names: names, Pipeline: pipeline, Progress: d.Progress})
}

// Retryable: a pod that just started refuses connections until its sshd is up, so a
// refused connection is worth waiting out here; otherwise the shared rules apply (a name
// that does not resolve, a TLS failure: at once).
func Retryable(err error) bool {
	if u := httpx.Unreachable("", err); u != nil {
		return u.Refused
	}
	return !httpx.Permanent(err)
}

// ScopeUp waits for Scope's health and, with a pipeline, loads it with the LoRAs and
// waits until it is loaded; it fills res's Health, URL and Pipeline.
func (d *Deployer) ScopeUp(ctx context.Context, sc *scope.Client, wait time.Duration, pipeline string, wanted []WantedLoRA, res *DeployResult) error {
	h, err := sc.WaitHealthy(ctx, wait)
	if err != nil {
		return fmt.Errorf("Scope on %s did not become healthy: %w", sc.Base, err)
	}
	res.Health, res.URL = h, sc.Base
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
	res.Pipeline = st
	return nil
}

// PodName is the name deploy --new gives its pod (the request id is appended).
func PodName(name string) string {
	if name == "" {
		return "scope"
	}
	return name
}

// deployRunPod runs Scope on a RunPod pod: an existing one (Pod) made to match, or a
// new one (New). Then LoRAs over direct SSH, health and the pipeline through RunPod's
// proxy.
func (d *Deployer) deployRunPod(ctx context.Context, in DeployInput) (*DeployResult, error) {
	switch {
	case in.Pod != "" && in.New:
		return nil, inputError("--pod deploys to an existing pod, --new creates one: pick one")
	case in.New && in.Create.GPUType == "":
		return nil, inputError("--new needs --gpu TYPE (see `scopectl pod gpus`)")
	}
	spec := PodSpec{Image: in.Spec.Image, LoRADir: in.Spec.LoRADir, Env: in.Env}
	if spec.Env == nil {
		spec.Env = map[string]string{}
	}
	if in.New {
		spec.GPUs = max(in.Create.GPUCount, 1)
	}
	if in.HFToken.IsSet() {
		spec.SecretEnv = map[string]secret.Secret{"HF_TOKEN": in.HFToken}
	}
	ns, err := NormalizePod(spec)
	if err != nil {
		return nil, inputError("%v", err)
	}
	var wanted []WantedLoRA
	if len(in.LoRAs) > 0 {
		if wanted, err = d.PrepareLoRAs(ctx, in.LoRAs, in.Pipeline, ns.LoRADir); err != nil {
			return nil, err
		}
	}
	c := d.RunPod
	if c == nil {
		if d.RunPodErr != nil {
			return nil, d.RunPodErr
		}
		return nil, inputError("set RUNPOD_API_KEY (environment, .env or config.yaml) to manage RunPod pods")
	}
	res := &DeployResult{DryRun: in.DryRun, LoRAs: len(wanted)}
	var pod *provider.Pod
	created := false
	if in.New {
		// Idempotent like every deploy: a live pod that an earlier deploy --new with the
		// same name made is made to match instead of paying for a second one.
		prev, err := d.deployedPod(ctx, PodName(in.Spec.Name), in.Create.GPUType)
		if err != nil {
			return nil, err
		}
		if prev != "" {
			in.New, in.Pod = false, prev
			res.Reused = prev
		}
	}
	if in.New {
		cs := in.Create
		cs.Name = PodName(in.Spec.Name)
		if cs.NetworkVolumeID != "" && !in.VolumeGBSet {
			cs.VolumeGB = 0 // the network volume is the /workspace
		}
		cs = ns.CreateSpec(cs)
		if in.DryRun {
			vol := fmt.Sprintf("%d GB volume", cs.VolumeGB)
			if cs.NetworkVolumeID != "" {
				vol = "network volume " + cs.NetworkVolumeID
			}
			res.Steps = []Step{{Action: "create", Reason: fmt.Sprintf("a pod with %d × %s (%s cloud) running %s, %s at /workspace",
				max(cs.GPUCount, 1), cs.GPUType, strings.ToUpper(cs.Cloud), cs.Image, vol)}}
			return res, nil
		}
		if d.CreatePod == nil {
			return nil, ErrCannotCreate
		}
		if d.BudgetGate != nil {
			if err := d.BudgetGate(ctx, cs, in); err != nil {
				return nil, err
			}
		}
		var rec *store.Pod
		pod, rec, err = d.CreatePod(ctx, cs, in)
		if err != nil {
			return nil, d.CleanupUnknownCreate(ctx, rec, in.Keep, err)
		}
		created = true
		res.Steps = []Step{{Action: "create", Reason: fmt.Sprintf("pod %s: %d × %s, $%.3f/h, running %s", pod.ID, max(pod.GPUCount, 1), pod.GPUType, pod.CostPerHr, ns.Image)}}
	} else {
		id := d.ResolvePod(ctx, in.Pod)
		var steps []Step
		steps, pod, err = ApplyPod(ctx, c, id, spec, in.DryRun)
		if err != nil {
			return nil, &LookupError{err}
		}
		if res.Reused != "" {
			steps = append([]Step{{Action: "reuse", Reason: fmt.Sprintf("pod %s, made by an earlier deploy --new --name %s (another --name makes a second pod)", res.Reused, PodName(in.Spec.Name))}}, steps...)
		}
		res.Steps = steps
		if in.DryRun {
			res.Pod = pod
			return res, nil
		}
	}
	id := pod.ID
	// fail ends a deploy that went wrong after the pod existed: a pod New made is
	// terminated (unless Keep), so that nobody pays for a pod that does not work.
	fail := func(err error) error {
		if !created {
			return err
		}
		if in.Keep {
			return fmt.Errorf("%w; pod %s kept (--keep): `scopectl pod rm %s --yes` terminates it", err, id, id)
		}
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		if terr := c.Terminate(tctx, id); terr != nil && !errors.Is(terr, provider.ErrNotFound) {
			return fmt.Errorf("%w; terminating pod %s failed too (%v): terminate it with `scopectl pod rm %s --yes`", err, id, terr, id)
		}
		d.MarkTerminated(tctx, id)
		return fmt.Errorf("%w; pod %s terminated (--keep keeps a pod that failed to deploy)", err, id)
	}
	pod, err = WaitPod(ctx, c, id, len(wanted) > 0, in.Wait)
	if err != nil {
		return nil, fail(err)
	}
	if len(wanted) > 0 {
		host, port, _ := pod.SSH()
		target := "ssh://root@" + net.JoinHostPort(host, strconv.Itoa(port)) + ns.LoRADir
		kh := in.KnownHosts
		if kh == "" {
			// Trust on first use, per pod and per boot: a pod's host keys are made when
			// its container starts, and RunPod hands the same address to other pods later.
			kh = filepath.Join(d.DataDir, "known_hosts.d", id)
			if created || rebooted(res.Steps) {
				os.Remove(kh)
			}
		} else {
			kh = ""
		}
		if res.Sync, err = d.SyncLoRAs(ctx, target, kh, wanted, in.Pipeline, in.Wait); err != nil {
			return nil, fail(fmt.Errorf("syncing LoRAs to pod %s: %w", id, err))
		}
	}
	sc := &scope.Client{Base: c.ProxyURL(id, ContainerPort)}
	if err := d.ScopeUp(ctx, sc, in.Wait, in.Pipeline, wanted, res); err != nil {
		return nil, fail(err)
	}
	res.Pod, res.Created = pod, &created
	// The guard on the pod enforces its limits with the laptop closed.
	if d.InstallGuard != nil {
		if info, gerr := d.InstallGuard(ctx, pod); gerr != nil {
			if d.Warn != nil {
				d.Warn(docker.OneLine(gerr.Error()))
			}
		} else {
			res.Guard = info
		}
	}
	return res, nil
}

func rebooted(steps []Step) bool {
	for _, s := range steps {
		if s.Action == "update" || s.Action == "start" {
			return true
		}
	}
	return false
}

// ResolvePod is the pod id a reference names: scopectl's request id, else the id itself.
func (d *Deployer) ResolvePod(ctx context.Context, ref string) string {
	if d.Pods != nil {
		if rec, err := d.Pods.GetPod(ctx, ref); err == nil && rec.ID != "" {
			return rec.ID
		}
	}
	return ref
}

// MarkTerminated records that scopectl terminated the pod.
func (d *Deployer) MarkTerminated(ctx context.Context, id string) {
	if d.Pods == nil {
		return
	}
	if rec, err := d.Pods.GetPod(ctx, id); err == nil {
		now := time.Now().UTC()
		rec.TerminatedAt, rec.LastSeenStatus = &now, provider.StatusTerminated
		d.Pods.PutPod(ctx, rec)
	}
}

// CleanupUnknownCreate: a create that may have made a pod (no answer, retries spent)
// leaves it running unless scopectl finds it by its request id and terminates it.
func (d *Deployer) CleanupUnknownCreate(ctx context.Context, rec *store.Pod, keep bool, err error) error {
	if rec == nil || !errors.Is(err, provider.ErrOutcomeUnknown) || keep {
		return err
	}
	c := d.RunPod
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
		d.MarkTerminated(tctx, p.ID)
	}
	return fmt.Errorf("%w; the pod it made was found and terminated", err)
}

// deployedPod finds the live pod an earlier deploy --new named name made: the newest
// one the store records that the provider still has and has not terminated. A pod of
// that name on another GPU type is refused rather than silently kept or replaced.
func (d *Deployer) deployedPod(ctx context.Context, name, gpu string) (string, error) {
	if d.Pods == nil {
		return "", errors.New("this store does not record pods")
	}
	c := d.RunPod
	recs, err := d.Pods.ListPods(ctx, true)
	if err != nil {
		return "", err
	}
	for _, rec := range recs {
		if rec.Name != name || rec.Provider != c.Name() || rec.ID == "" {
			continue
		}
		p, err := c.Get(ctx, rec.ID)
		if errors.Is(err, provider.ErrNotFound) || (err == nil && p.Status == provider.StatusTerminated) {
			d.MarkTerminated(ctx, rec.ID)
			continue
		}
		if err != nil {
			return "", err
		}
		if gpu != "" && p.GPUType != "" && p.GPUType != gpu {
			return "", &RefusedError{fmt.Errorf("pod %s (%s) already runs Scope on %s, not %s: `scopectl pod rm %s --yes` first, or deploy --new --name another", p.ID, name, p.GPUType, gpu, p.ID)}
		}
		return p.ID, nil
	}
	return "", nil
}
