package cli

// train run --provider kubernetes (or --target k8s://CONTEXT/NAMESPACE[/JOB]): the
// machine is a Kubernetes Job (internal/provider/kubernetes), driven by the same
// Trainer as an SSH machine through Trainer.Dial; and the hidden commands the Job's
// pod runs (kube-init, kube-agent, kube-hold).

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"

	"github.com/daydreamlive/scopectl/internal/aitk"
	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/provider/kubernetes"
	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/secret"
	"github.com/daydreamlive/scopectl/internal/store"
	"github.com/daydreamlive/scopectl/internal/train"
)

// kubeTrainFlags are train run's flags for a Kubernetes Job.
type kubeTrainFlags struct {
	kubeTargetFlags
	target         string
	agentImage     string
	storageClass   string
	volumeSize     string
	pullPolicy     string
	nodeSelector   []string
	tolerations    []string
	hostNetwork    bool
	linger         time.Duration
	dryRun         bool
	output         string
	forceConflicts bool
	// prepare applies the Job and waits for its pod (set by kubeTrainMachine; run by
	// kubeLazy on the trainer's first visit to the machine).
	prepare func(ctx context.Context) error
	// cleanup deletes the Job (not its claim) when train run fails before the
	// supervisor runs; set once prepare has applied it.
	cleanup func(ctx context.Context) error
	job     string
	machine string
}

func (f *kubeTrainFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.provider, "provider", "", "kubernetes: run the job as a Kubernetes Job on the kubeconfig's cluster")
	fl.StringVar(&f.target, "target", "", "kubernetes: k8s://CONTEXT/NAMESPACE[/JOB] (empty parts: the kubeconfig's)")
	fl.StringVar(&f.kubeconfig, "kubeconfig", "", "kubernetes: kubeconfig file (default $KUBECONFIG, else ~/.kube/config)")
	fl.StringVar(&f.context, "context", "", "kubernetes: kubeconfig context (default the current one)")
	fl.StringVar(&f.namespace, "namespace", "", "kubernetes: namespace (default the context's, else default)")
	fl.StringVar(&f.agentImage, "agent-image", kubernetes.DefaultAgentImage, "kubernetes: the scopectl image (agent sidecar, and the binary for the trainer's container)")
	fl.StringVar(&f.storageClass, "storage-class", "", "kubernetes: storage class of the workspace claim (default: the cluster's)")
	fl.StringVar(&f.volumeSize, "volume-size", kubernetes.DefaultJobVolume, "kubernetes: size of the workspace claim (datasets, base weights, outputs)")
	fl.StringArrayVar(&f.nodeSelector, "node-selector", nil, "kubernetes: KEY=VALUE a GPU node must have (repeatable)")
	fl.StringArrayVar(&f.tolerations, "toleration", nil, "kubernetes: KEY[=VALUE][:EFFECT] taint to tolerate (repeatable; * for all)")
	fl.DurationVar(&f.linger, "linger", kubernetes.DefaultLinger, "kubernetes: how long the pod stays after the job ends when nobody collects and releases it")
	fl.BoolVar(&f.dryRun, "dry-run", false, "kubernetes: show what would be applied (the API server's dry run; with -o yaml, the manifests, offline)")
	fl.StringVarP(&f.output, "output", "o", "", "kubernetes: with --dry-run, yaml prints the manifests")
	fl.BoolVar(&f.forceConflicts, "force-conflicts", false, "kubernetes: take over fields another field manager owns")
	fl.BoolVar(&f.hostNetwork, "host-network", false, "kubernetes: pods on the node's network (single-node labs)")
	fl.StringVar(&f.pullPolicy, "image-pull-policy", "", "kubernetes: Always, IfNotPresent or Never")
	for _, n := range []string{"host-network", "image-pull-policy"} {
		fl.MarkHidden(n)
	}
}

// on reports whether train run targets Kubernetes.
func (f *kubeTrainFlags) on() bool { return f.provider != "" || f.target != "" }

var nonLabel = regexp.MustCompile(`[^a-z0-9-]+`)

// kubeJobName makes a Job name from the config's name: a DNS label with a random tail.
func kubeJobName(cfgName string) string {
	n := strings.Trim(nonLabel.ReplaceAllString(strings.ToLower(cfgName), "-"), "-")
	if len(n) > 36 {
		n = strings.TrimRight(n[:36], "-")
	}
	if n == "" {
		n = "train"
	}
	var b [4]byte
	rand.Read(b[:])
	return n + "-" + hex.EncodeToString(b[:])
}

// kubeTrainMachine prepares the training Job for train run and points in at it; the
// Job is applied (and its pod waited for) only when the Trainer first reaches for the
// machine, after the config and dataset checks (kubeLazy): a refused run never takes a
// GPU. With --dry-run it prints and done is true.
func (a *app) kubeTrainMachine(ctx context.Context, cmd *cobra.Command, in *train.RunInput, f *kubeTrainFlags, gpu string, wait time.Duration) (done bool, err error) {
	switch {
	case f.provider != "" && f.provider != kubernetes.Name:
		return true, usageError("--provider %q: want kubernetes (RunPod: --pod or --new; SSH: --host)", f.provider)
	case in.AITKDir != "":
		return true, usageError("--aitk-dir: a Kubernetes Job runs the ai-toolkit image (--image), not a checkout")
	case cmd.Flags().Changed("workspace") && in.Workspace != kubernetes.JobWorkspace:
		return true, usageError("--workspace: a Kubernetes Job's workspace is its claim at %s", kubernetes.JobWorkspace)
	case f.output != "" && f.output != "yaml":
		return true, usageError("-o %q: want yaml", f.output)
	case f.output != "" && !f.dryRun:
		return true, usageError("-o yaml goes with --dry-run")
	}
	cfg, err := aitk.ReadFile(in.Config, aitk.ParseOptions{})
	if err != nil {
		return true, err
	}
	c, name, err := f.client(f.target)
	if err != nil {
		return true, err
	}
	if name == "" {
		name = kubeJobName(cfg.Config.Name)
	}
	res, count, err := kubernetes.ParseGPU(gpu)
	if err != nil {
		return true, usageError("%v", err)
	}
	spec := kubernetes.TrainJobSpec{Name: name, Image: in.Image, AgentImage: f.agentImage, GPUResource: res, GPUCount: count,
		VolumeSize: f.volumeSize, StorageClass: f.storageClass, HostNetwork: f.hostNetwork, Linger: f.linger,
		ImagePullPolicy: corev1.PullPolicy(f.pullPolicy), SecretEnv: map[string]secret.Secret{}}
	if spec.Image == "" {
		spec.Image = train.DefaultImage
	}
	if spec.NodeSelector, err = parseKV("--node-selector", f.nodeSelector); err != nil {
		return true, err
	}
	for _, v := range f.tolerations {
		t, err := kubernetes.ParseToleration(v)
		if err != nil {
			return true, usageError("%v", err)
		}
		spec.Tolerations = append(spec.Tolerations, t)
	}
	if a.cfg.HFToken.IsSet() {
		spec.SecretEnv[kubernetes.SecretHFToken] = a.cfg.HFToken
	}
	if f.dryRun && f.output == "yaml" {
		// Offline: the agent token is made (or kept) on apply.
		spec.SecretEnv[kubernetes.SecretAgentToken] = secret.New("(made on apply)")
		o, err := spec.BuildJob(c.Namespace)
		if err != nil {
			return true, usageError("%v", err)
		}
		y, err := o.YAML()
		if err != nil {
			return true, err
		}
		_, err = a.stdout.Write(y)
		return true, err
	}
	if _, err := spec.Normalize(); err != nil {
		return true, usageError("%v", err)
	}
	if f.dryRun {
		applied, err := c.ApplyJob(ctx, spec, kubernetes.ApplyOptions{Force: f.forceConflicts, ServerDryRun: true})
		if err != nil {
			return true, err
		}
		return true, a.out(map[string]any{"job": name, "target": c.Target().String(), "applied": applied}, func(w io.Writer) {
			fmt.Fprintf(w, "dry run in %s (nothing stored):\n", c.Target())
			for _, ap := range applied {
				fmt.Fprintf(w, "  %s/%s: would be %s\n", ap.Kind, ap.Name, ap.Action)
			}
		})
	}
	f.job, f.machine = name, kubernetes.MachineURL(c.Target(), name)
	f.prepare = func(ctx context.Context) error {
		applied, err := c.ApplyJob(ctx, spec, kubernetes.ApplyOptions{Force: f.forceConflicts})
		if err != nil {
			return err
		}
		f.cleanup = func(ctx context.Context) error { return c.DeleteJob(ctx, name, false) }
		for _, ap := range applied {
			a.kubeNote("%s/%s %s", ap.Kind, ap.Name, ap.Action)
		}
		wctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		st, err := c.WaitJobRunning(wctx, name, func(st kubernetes.JobState) {
			if st.Reason != "" {
				a.kubeNote("job %s: %s: %s", name, st.Phase, st.Reason)
			} else {
				a.kubeNote("job %s: %s", name, st.Phase)
			}
		})
		if err != nil {
			return err
		}
		a.kubeNote("job %s: pod %s runs on %s", name, st.Pod, cmpOrString(st.Node, "its node"))
		return nil
	}
	in.Target, in.PodID = kubernetes.MachineURL(c.Target(), name), name
	in.Image, in.Workspace = "", kubernetes.JobWorkspace  // ai-toolkit is the container's own (/app/ai-toolkit)
	in.HFToken = secret.Secret{}                          // the pod has it from the Secret
	in.MachineBinary = kubernetes.JobBinDir + "/scopectl" // when this scopectl cannot run there (not linux/amd64)
	// Recorded with the job (the path, not the content): later commands reach this
	// cluster from a shell without the same KUBECONFIG.
	in.Kubeconfig = kubernetes.KubeconfigInUse(f.kubeconfig)
	return false, nil
}

func (a *app) kubeNote(format string, args ...any) {
	if !a.json {
		fmt.Fprintf(a.stderr, format+"\n", args...)
	}
}

func parseKV(flag string, vs []string) (map[string]string, error) {
	if len(vs) == 0 {
		return nil, nil
	}
	m := map[string]string{}
	for _, v := range vs {
		k, val, ok := strings.Cut(v, "=")
		if !ok || k == "" {
			return nil, usageError("%s %q: want KEY=VALUE", flag, v)
		}
		m[k] = val
	}
	return m, nil
}

// kubeLazy makes t apply the Job and wait for its pod (f.prepare) on its first visit
// to the machine, which comes after the config and dataset checks.
func (a *app) kubeLazy(t *train.Trainer, f *kubeTrainFlags) {
	if f.prepare == nil {
		return
	}
	open := t.Dial
	var once sync.Once
	var perr error
	t.Dial = func(ctx context.Context, addr string) (remote.Remote, error) {
		once.Do(func() { perr = f.prepare(ctx) })
		if perr != nil {
			return nil, perr
		}
		return open(ctx, addr)
	}
}

// kubeRunFailed deletes the Job of a train run that failed before its supervisor ran
// (its pod would hold a GPU for nothing), keeping its claim and what was sent to it.
func (a *app) kubeRunFailed(f *kubeTrainFlags, err error) error {
	if f.cleanup == nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if cerr := f.cleanup(ctx); cerr != nil {
		return fmt.Errorf("%w; deleting Job %s failed too (`scopectl pod rm --provider kubernetes %s` frees its GPU): %v", err, f.job, f.job, cerr)
	}
	return fmt.Errorf("%w; Job %s deleted (no GPU held); its claim %s-workspace keeps what was sent: `train run … --target %s` goes on from there", err, f.job, f.job, f.machine)
}

// isKubeJob reports whether a job runs on a Kubernetes Job.
func isKubeJob(job store.TrainJob) bool { return strings.HasPrefix(job.Target, "k8s://") }

// addJobKubeconfig registers --kubeconfig on a command that reaches a recorded job.
func (f *kubeTargetFlags) addJobKubeconfig(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.kubeconfig, "kubeconfig", "", "kubernetes: kubeconfig file (default: the one the job was run with, else $KUBECONFIG, else ~/.kube/config)")
}

// jobKubeconfig is the kubeconfig that reaches a Kubernetes job: --kubeconfig, else the
// one recorded with the job ("": the default loading rules).
func jobKubeconfig(job store.TrainJob, rf remoteFlags) string {
	return cmpOrString(rf.kube.kubeconfig, job.Kubeconfig)
}

// kubeTrainer lets t reach Kubernetes jobs: folders through the pod's agent, commands
// through exec, both through the API server, with --kubeconfig, else the kubeconfig
// recorded with the job.
func (a *app) kubeTrainer(t *train.Trainer, rf remoteFlags) {
	ms := &kubernetes.Machines{Kubeconfig: rf.kube.kubeconfig, KubeconfigOf: t.KubeconfigOf, Env: t.Env}
	t.Dial = ms.Open
	prev := t.Resolve
	t.Resolve = func(ctx context.Context, job store.TrainJob) (string, error) {
		if isKubeJob(job) || prev == nil {
			return job.Target, nil
		}
		return prev(ctx, job)
	}
}

// kubeJobGone says whether a Kubernetes job's pod has gone (Job deleted or ended).
func (a *app) kubeJobGone(ctx context.Context, job store.TrainJob, rf remoteFlags) (string, bool) {
	tg, name, _, err := kubernetes.ParseMachine(job.Target)
	if err != nil {
		return "", false
	}
	tg.Kubeconfig = jobKubeconfig(job, rf)
	c, err := kubernetes.New(tg)
	if err != nil {
		return "", false
	}
	st, err := c.JobStatus(ctx, name)
	switch {
	case errors.Is(err, provider.ErrNotFound):
		return "was deleted (its workspace claim " + name + "-workspace keeps the checkpoints)", true
	case err != nil:
		return "", false
	case st.Phase == kubernetes.JobSucceeded || st.Phase == kubernetes.JobFailed:
		return "ended (" + st.Phase + cmpOrString(": "+st.Reason, "") + ")", true
	}
	return "", false
}

// trainKubeCmds are the commands a training Job's pod runs.
func (a *app) trainKubeCmds() []*cobra.Command {
	var to, ws string
	initCmd := &cobra.Command{
		Use:    "kube-init --to PATH [--workspace DIR]",
		Short:  "Copy this scopectl to PATH and into the workspace (a training pod's init container)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return train.CopySelf(to, ws)
		},
	}
	initCmd.Flags().StringVar(&to, "to", "", "where to copy it")
	initCmd.Flags().StringVar(&ws, "workspace", "", "also put it where train run looks for its scopectl on this workspace")
	initCmd.MarkFlagRequired("to")

	var root, listen string
	agentCmd := &cobra.Command{
		Use:    "kube-agent --root DIR",
		Short:  "Serve every folder under DIR through the agent API (a training pod's sidecar)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tok, err := a.agentToken("")
			if err != nil {
				return err
			}
			secret.Default.Add(tok)
			wa := &train.WorkspaceAgent{Root: root, Token: tok, Log: slog.Default()}
			if err := wa.Init(); err != nil {
				return err
			}
			defer wa.Close()
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stderr, "scopectl workspace agent: serving %s on http://%s\n", root, ln.Addr())
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, os.Interrupt)
			defer stop()
			hs := &http.Server{Handler: wa, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}
			return serveAgent(ctx, hs, ln, "", "")
		},
	}
	agentCmd.Flags().StringVar(&root, "root", kubernetes.JobWorkspace, "the workspace")
	agentCmd.Flags().StringVar(&listen, "listen", DefaultAgentListen, "address to listen on")

	var ho train.HoldOptions
	holdCmd := &cobra.Command{
		Use:    "kube-hold --workspace DIR --name JOB",
		Short:  "Keep a training pod up while its jobs run (a training pod's main process)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, os.Interrupt)
			defer stop()
			ho.Log = a.stderr
			phase, err := train.Hold(ctx, ho)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stderr, "the last job ended: %s\n", cmpOrString(phase, "none"))
			if phase == train.PhaseFailed {
				return withCode(1, fmt.Errorf("training failed"))
			}
			return nil
		},
	}
	hf := holdCmd.Flags()
	hf.StringVar(&ho.Workspace, "workspace", kubernetes.JobWorkspace, "the workspace")
	hf.StringVar(&ho.Name, "name", "", "the Kubernetes Job's name")
	hf.DurationVar(&ho.Linger, "linger", kubernetes.DefaultLinger, "stay up this long after the last job ended unless released")
	hf.DurationVar(&ho.StartTimeout, "start-timeout", time.Hour, "end when no job started within this")
	hf.DurationVar(&ho.Poll, "poll", 2*time.Second, "how often to look")
	holdCmd.MarkFlagRequired("name")
	return []*cobra.Command{initCmd, agentCmd, holdCmd}
}

// kubeResumeMachine gives a Kubernetes job a pod to resume on: its own while it still
// runs (the holder lingers after the job ended), else a new Job like the old one over
// the same workspace claim (job folder, checkpoints and HF cache are on it); the job's
// record then points at the new Job.
func (a *app) kubeResumeMachine(ctx context.Context, t *train.Trainer, job *store.TrainJob, rf remoteFlags, wait time.Duration) error {
	tg, name, _, err := kubernetes.ParseMachine(job.Target)
	if err != nil {
		return err
	}
	tg.Kubeconfig = jobKubeconfig(*job, rf)
	c, err := kubernetes.New(tg)
	if err != nil {
		return err
	}
	if st, err := c.JobStatus(ctx, name); err == nil && st.Phase == kubernetes.JobRunning && st.Ready {
		return nil
	}
	spec, err := c.JobSpecOf(ctx, name)
	if err != nil {
		return fmt.Errorf("resume on Kubernetes: %w", err)
	}
	base := strings.TrimSuffix(name, "-"+name[strings.LastIndex(name, "-")+1:])
	spec.Name = kubeJobName(base)
	if a.cfg.HFToken.IsSet() {
		spec.SecretEnv[kubernetes.SecretHFToken] = a.cfg.HFToken
	}
	applied, err := c.ApplyJob(ctx, spec, kubernetes.ApplyOptions{})
	if err != nil {
		return err
	}
	for _, ap := range applied {
		a.kubeNote("%s/%s %s", ap.Kind, ap.Name, ap.Action)
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if _, err := c.WaitJobRunning(wctx, spec.Name, func(st kubernetes.JobState) { a.kubeNote("job %s: %s %s", spec.Name, st.Phase, st.Reason) }); err != nil {
		return err
	}
	job.Target, job.PodID = kubernetes.MachineURL(c.Target(), spec.Name), spec.Name
	if rf.kube.kubeconfig != "" {
		job.Kubeconfig = kubernetes.KubeconfigInUse(rf.kube.kubeconfig) // the new Job was reached with it
	}
	if err := t.Jobs.PutTrainJob(ctx, *job); err != nil {
		return err
	}
	a.kubeNote("job %s continues on Job %s (claim %s)", job.ID, spec.Name, spec.Claim)
	return nil
}
