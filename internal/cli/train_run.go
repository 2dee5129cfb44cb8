package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/daydreamlive/scopectl/internal/aitk"
	"github.com/daydreamlive/scopectl/internal/dataset"
	"github.com/daydreamlive/scopectl/internal/deploy"
	"github.com/daydreamlive/scopectl/internal/progress"
	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/secret"
	"github.com/daydreamlive/scopectl/internal/store"
	"github.com/daydreamlive/scopectl/internal/train"
)

// trainRunCmds are the commands that run and follow training jobs.
func (a *app) trainRunCmds() []*cobra.Command {
	cmds := []*cobra.Command{a.trainRun(), a.trainStatus(), a.trainLogs(), a.trainLs(), a.trainCtl("stop", "Stop a job: the stop flag, then SIGINT, then SIGKILL (never during a save)"),
		a.trainCtl("save-now", "Save a checkpoint at the next step"), a.trainCtl("sample-now", "Make samples at the next step"),
		a.trainResume(), a.trainCollect(), a.trainWatch(), a.trainCompare(), a.trainSupervise(), a.trainSuperviseCtl()}
	return append(cmds, a.trainKubeCmds()...)
}

// trainer is the laptop side with this invocation's library and remote settings.
func (a *app) trainer(rf remoteFlags) (*train.Trainer, error) {
	lib, err := a.library()
	if err != nil {
		return nil, err
	}
	ts, ok := lib.Store.(store.TrainStore)
	if !ok {
		return nil, errors.New("this store does not record training jobs")
	}
	t := &train.Trainer{Lib: lib, Jobs: ts, Env: remote.Env{Secrets: secret.Default, Lookup: a.cfg.Secret,
		KnownHosts: rf.knownHosts, AcceptNewHostKey: rf.acceptNewHostKey, Options: map[string]string{}}}
	if rf.compress != "" {
		t.Env.Options["compress"] = rf.compress
	}
	// collections show on scopectl serve's transfers (no bar: the job's own line is shown)
	t.Progress = progress.Reporter{Publish: a.progress().Publish}
	if !a.json {
		t.Notify = func(msg string) { fmt.Fprintln(a.stderr, msg) }
	}
	t.PodEnv = func(id string) remote.Env {
		env := t.Env
		if rf.knownHosts == "" {
			// Trust on first use, per pod (as deploy does): a pod's host keys are made
			// when its container starts.
			env.KnownHosts = filepath.Join(a.cfg.DataDir, "known_hosts.d", id)
			env.AcceptNewHostKey = true
		}
		return env
	}
	t.Resolve = func(ctx context.Context, job store.TrainJob) (string, error) {
		_, p, err := a.podWithClient(ctx, job.PodID, rf)
		if err != nil {
			return "", err
		}
		if _, direct := p.SSHURL(); !direct {
			return "", fmt.Errorf("pod %s has no public SSH port (status %s)", p.ID, p.Status)
		}
		return podSSHURL(p), nil
	}
	a.kubeTrainer(t, rf)
	return t, nil
}

func (a *app) trainRun() *cobra.Command {
	var rf remoteFlags
	var in train.RunInput
	var host, pod, gpu, cloud string
	var newPod, detach bool
	var pv previewFlags
	var interval, wait time.Duration
	var volumeGB int
	var kf kubeTrainFlags
	cmd := &cobra.Command{
		Use:   "run CONFIG (--host ssh://user@host:port [--aitk-dir DIR | --image REF] | --pod ID | --new --gpu TYPE)",
		Short: "Train a LoRA on a machine over SSH: check, send the dataset, start a supervisor there, follow it and collect checkpoints",
		Long: "Checks the config and its datasets (refusing errors unless --force), sends the datasets (only\n" +
			"changed files, verified) and this scopectl to the machine, and starts `scopectl train supervise`\n" +
			"there, detached: the run goes on if this command is killed or the laptop sleeps. Without --detach\n" +
			"it then follows the job (as `train watch`), adding each checkpoint to the library as it is saved.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			in.Config = args[0]
			switch {
			case kf.on() && (host != "" || pod != "" || newPod):
				return usageError("--provider kubernetes (--target k8s://…) goes without --host, --pod and --new")
			case kf.on():
				if done, err := a.kubeTrainMachine(ctx, cmd, &in, &kf, gpu, wait); done || err != nil {
					return err
				}
				rf.kube.kubeconfig = kf.kubeconfig // the trainer reaches the pod with the same kubeconfig
			case (host != "") && (pod != "") || (host != "" || pod != "") && newPod:
				return usageError("give one of --host, --pod and --new")
			case newPod:
				if gpu == "" {
					return usageError("--new needs --gpu TYPE (see `scopectl pod gpus`)")
				}
				p, err := a.newTrainPod(ctx, gpu, cloud, volumeGB, in.Keep, wait, rf)
				if err != nil {
					return err
				}
				in.Target, in.PodID, in.CostPerHr = podSSHURL(p), p.ID, p.CostPerHr
			case host != "":
				in.Target = host
			case pod != "":
				_, p, err := a.podWithClient(ctx, pod, rf)
				if err != nil {
					return err
				}
				if _, direct := p.SSHURL(); !direct {
					return fmt.Errorf("pod %s has no public SSH port: training needs direct SSH (expose 22/tcp)", p.ID)
				}
				in.Target, in.PodID, in.CostPerHr = podSSHURL(p), p.ID, p.CostPerHr
				if in.AITKDir == "" && in.Image == "" && !strings.Contains(p.Image, "aitoolkit") && !strings.Contains(p.Image, "ai-toolkit") {
					return usageError("pod %s runs %s, not ai-toolkit's image: give --aitk-dir or --image", p.ID, p.Image)
				}
			default:
				return usageError("give --host ssh://user@host:port, --pod ID or --new --gpu TYPE")
			}
			if in.AITKDir != "" && in.Image != "" {
				return usageError("give --aitk-dir or --image, not both")
			}
			if host != "" && in.AITKDir == "" && in.Image == "" {
				return usageError("on an SSH host give --aitk-dir (an ai-toolkit checkout there) or --image (an ai-toolkit image for docker run)")
			}
			if !kf.on() {
				in.HFToken = a.cfg.HFToken // on Kubernetes: from the Job's Secret
			}
			in.Preview = pv.target
			t, err := a.trainer(rf)
			if err != nil {
				return err
			}
			a.kubeLazy(t, &kf) // the Job is applied once the checks have passed
			res, err := t.Run(ctx, in)
			if res != nil && res.Refused {
				a.printProblems(res)
				return withCode(ExitRefused, err)
			}
			if err != nil {
				return a.kubeRunFailed(&kf, err) // the Job goes: no pod waits on a GPU for nothing
			}
			if detach {
				return a.out(res, func(w io.Writer) {
					fmt.Fprintf(w, "job %s started on %s\nfollow it with: scopectl train watch %s\n", res.Job.ID, remote.Redact(res.Job.Target), res.Job.ID)
				})
			}
			if !a.json {
				fmt.Fprintf(a.stderr, "job %s started on %s (Ctrl+C leaves it running; `scopectl train watch %s` reattaches)\n", res.Job.ID, remote.Redact(res.Job.Target), res.Job.ID)
			}
			return a.watchJob(ctx, t, res.Job.ID, interval, rf, pv)
		},
	}
	f := cmd.Flags()
	f.StringVar(&host, "host", "", "the machine: ssh://user@host:port")
	f.StringVar(&pod, "pod", "", "a RunPod pod (direct SSH); its image must be ai-toolkit's unless --aitk-dir or --image")
	f.BoolVar(&newPod, "new", false, "rent a RunPod pod running "+train.DefaultImage+" (CUDA "+strings.Join(train.AllowedCUDA, ",")+" hosts only); stopped when the job ends unless --keep")
	f.StringVar(&gpu, "gpu", "", "with --new: GPU type id, e.g. \"NVIDIA H100 80GB HBM3\"; with --provider kubernetes: RESOURCE=COUNT (default nvidia.com/gpu=1)")
	f.StringVar(&cloud, "cloud", "secure", "with --new: secure or community")
	f.IntVar(&volumeGB, "volume-gb", 100, "with --new: pod volume at /workspace, GB (datasets, base weights, outputs)")
	f.DurationVar(&wait, "wait", 15*time.Minute, "with --new or --provider kubernetes: how long to wait for the pod to run")
	f.StringVar(&in.AITKDir, "aitk-dir", "", "an ai-toolkit checkout on the machine (python run.py there)")
	f.StringVar(&in.Image, "image", "", "an ai-toolkit image to docker run on the machine (e.g. ostris/aitoolkit:"+aitk.Version+")")
	f.StringVar(&in.Workspace, "workspace", train.DefaultWorkspace, "folder on the machine for datasets, outputs and jobs")
	f.StringVar(&in.Binary, "binary", "", "scopectl binary to copy (default: this one, if linux/amd64)")
	f.StringArrayVar(&in.Env, "env", nil, "KEY=VALUE for the trainer's environment (not for secrets: HF_TOKEN is sent from the config)")
	f.BoolVar(&in.Force, "force", false, "run even if the config or a dataset has errors")
	f.BoolVar(&in.NoPrepull, "no-prepull", false, "let ai-toolkit download the base model itself instead of scopectl pulling it into the machine's HF cache first")
	f.BoolVar(&in.Keep, "keep", false, "leave the pod running when the job ends")
	pv.add(cmd)
	f.BoolVar(&detach, "detach", false, "start the job and return")
	f.DurationVar(&interval, "interval", 10*time.Second, "how often to look at the job")
	f.StringVar(&in.DockerGPUs, "docker-gpus", "", "docker run --gpus (default all; - for none)")
	f.DurationVar(&in.StopGrace, "stop-grace", 0, "stop: time for the trainer to stop at a step boundary before SIGINT (default 5m)")
	f.DurationVar(&in.KillGrace, "kill-grace", 0, "stop: time after SIGINT before SIGKILL (default 2m)")
	f.DurationVar(&in.Poll, "poll", 0, "how often the supervisor looks at the trainer (default 1s)")
	for _, n := range []string{"docker-gpus", "poll"} {
		f.MarkHidden(n)
	}
	rf.add(cmd)
	kf.add(cmd)
	return cmd
}

func (a *app) printProblems(res *train.RunResult) {
	if a.json {
		_ = a.out(res, func(io.Writer) {})
		return
	}
	for _, p := range res.Problems {
		fmt.Fprintln(a.stderr, p.String())
	}
	// What makes a dataset fail the check: errors, and warnings that change what is
	// trained (Report.Fails); a refusal always says which.
	fails := func(f dataset.Finding) bool {
		return f.Severity == dataset.Error || f.Severity == dataset.Warning && f.Changes
	}
	for _, r := range res.Datasets {
		for _, f := range r.Findings {
			if fails(f) {
				fmt.Fprintf(a.stderr, "%s: %s %s: %s\n", r.Dir, f.Severity, f.Code, f.Message)
			}
		}
		for _, it := range r.Items {
			for _, f := range it.Findings {
				if fails(f) {
					fmt.Fprintf(a.stderr, "%s: %s %s: %s\n", filepath.Join(r.Dir, it.Path), f.Severity, f.Code, f.Message)
				}
			}
		}
	}
}

// previewFlags put each new checkpoint on a running Scope: its LoRA folder (a sync
// target, or a pod id) and its HTTP API, to load the running pipeline with it.
type previewFlags struct {
	target, scopeURL, pipeline string
}

func (p *previewFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&p.target, "preview", "", "put each new checkpoint on a running Scope and load it: a pod id (the LoRA folder its DAYDREAM_SCOPE_LORA_DIR names, default "+deploy.DefaultLoRADir+", Scope through the pod's HTTP port) or a LoRA folder (a sync remote, e.g. ssh://root@host:22"+deploy.DefaultLoRADir+", or a local folder)")
	f.StringVar(&p.scopeURL, "preview-scope", "", "with --preview: Scope's URL (default for a pod: its proxy URL)")
	f.StringVar(&p.pipeline, "preview-pipeline", "", "with --preview: the pipeline to load (default: the one Scope has loaded)")
}

// previewer is the preview core with this invocation's library, remotes and pods.
func (a *app) previewer(rf remoteFlags) (*train.Previewer, error) {
	lib, err := a.library()
	if err != nil {
		return nil, err
	}
	return &train.Previewer{Lib: lib, Progress: a.progress(),
		Open: func(ctx context.Context, raw, podID string) (remote.Remote, error) {
			return a.openRemote(ctx, raw, podRemoteFlags(rf, a.cfg.DataDir, podID))
		},
		Pod: func(ctx context.Context, ref string) (train.PodTarget, error) {
			c, p, err := a.podWithClient(ctx, ref, rf)
			if err != nil {
				return train.PodTarget{}, err
			}
			return train.PodTarget{Pod: p, ScopeURL: podScopeURL(c, p)}, nil
		}}, nil
}

// podRemoteFlags trusts a pod's host key on first use, per pod (as the trainer and
// deploy do: a pod's host keys are made when its container starts), unless the user
// gave --known-hosts.
func podRemoteFlags(rf remoteFlags, dataDir, podID string) remoteFlags {
	if podID != "" && rf.knownHosts == "" {
		rf.knownHosts = filepath.Join(dataDir, "known_hosts.d", podID)
		rf.acceptNewHostKey = true
	}
	return rf
}

// preview installs the newest checkpoint collected on the --preview target and
// loads the running pipeline with it (train.Previewer); a failure is a warning (the
// training goes on).
func (a *app) preview(ctx context.Context, p previewFlags, rf remoteFlags, res *train.CollectResult) {
	newest := train.NewestCollected(res)
	if p.target == "" || newest == nil {
		return
	}
	pv, err := a.previewer(rf)
	if err == nil {
		var r *train.PreviewResult
		r, err = pv.Preview(ctx, train.PreviewInput{Target: p.target, ScopeURL: p.scopeURL, Pipeline: p.pipeline, Step: newest.Step, Name: newest.Name})
		if err == nil && !a.json {
			fmt.Fprintln(a.stderr, previewLine(r))
		}
	}
	if err != nil {
		a.warn("preview: step " + strconv.Itoa(newest.Step) + ": " + oneLineErr(err))
	}
}

// previewLine is one preview's line for the terminal.
func previewLine(r *train.PreviewResult) string {
	msg := fmt.Sprintf("preview: step %d (%s) installed on %s", r.Step, r.Name, r.Folder)
	switch {
	case r.Pipeline != "":
		msg += "; loading " + r.Pipeline + " with it"
	case r.NotLoaded == train.PreviewNoPipeline:
		msg += " (no pipeline loaded in Scope: give --preview-pipeline)"
	}
	return msg
}

// watchJob follows a job to its end with a progress line (TTY) or JSON lines.
func (a *app) watchJob(ctx context.Context, t *train.Trainer, id string, interval time.Duration, rf remoteFlags, pv previewFlags) error {
	prog := a.progress()
	var bar interface {
		Write([]byte) (int, error)
		Finish()
	}
	var done int
	opt := train.WatchOptions{Interval: interval,
		OnState: func(st *train.State) {
			if a.json {
				return
			}
			if a.tty && st.Total > 0 {
				if bar == nil {
					bar = prog.Start("train", st.Name, int64(st.Total))
				}
				if st.Step > done {
					bar.Write(make([]byte, st.Step-done))
					done = st.Step
				}
				return
			}
			fmt.Fprintln(a.stderr, stateLine(st))
		},
		OnCollect: func(r *train.CollectResult) {
			a.preview(ctx, pv, rf, r)
			if a.json {
				return
			}
			for _, c := range r.Checkpoints {
				if c.New {
					fmt.Fprintf(a.stderr, "collected step %d: %s (%s)\n", c.Step, c.Name, c.SHA256[:12])
				}
			}
		},
		PodGone: func(ctx context.Context, job store.TrainJob) (string, bool) {
			if isKubeJob(job) {
				return a.kubeJobGone(ctx, job, rf)
			}
			c, err := a.runpod()
			if err != nil {
				return "", false
			}
			p, err := c.Get(ctx, job.PodID)
			switch {
			case errors.Is(err, provider.ErrNotFound):
				return "was terminated", true
			case err != nil:
				return "", false
			case p.Status == provider.StatusTerminated:
				return "was terminated", true
			case p.Status == provider.StatusExited:
				return "was stopped (`scopectl pod start " + job.PodID + "`, then `scopectl train resume " + job.ID + "`, continues on it)", true
			}
			return "", false
		},
		StopMachine: func(ctx context.Context, job store.TrainJob) error {
			if isKubeJob(job) {
				return t.Release(ctx, job) // the Job completes; its claim stays
			}
			c, _, err := a.podWithClient(ctx, job.PodID, rf)
			if err != nil {
				return err
			}
			return c.Stop(ctx, job.PodID)
		},
	}
	res, err := t.Watch(ctx, id, opt)
	if bar != nil {
		bar.Finish()
	}
	if err != nil {
		if errors.Is(err, context.Canceled) {
			fmt.Fprintf(a.stderr, "stopped following; job %s runs on (scopectl train watch %s)\n", id, id)
		}
		return err
	}
	return a.out(res, func(w io.Writer) {
		st := res.State
		fmt.Fprintf(w, "job %s: %s (%s)\n", id, st.Phase, st.Reason)
		for _, c := range res.Checkpoints {
			fmt.Fprintf(w, "  step %-6d %s  %s\n", c.Step, c.Name, c.SHA256[:12])
		}
		for _, f := range res.Failures {
			fmt.Fprintf(w, "  lost: %s\n", f)
		}
	})
}

func stateLine(st *train.State) string {
	s := fmt.Sprintf("%s: %s", st.JobID, st.Phase)
	if st.Total > 0 {
		s += fmt.Sprintf(" step %d/%d", st.Step, st.Total)
	}
	if st.SecPerIt > 0 {
		s += fmt.Sprintf(" %.2fs/step", st.SecPerIt)
	}
	if st.Loss != nil {
		s += fmt.Sprintf(" loss %.4g", *st.Loss)
	}
	if d := st.Download; d != nil && st.Phase == train.PhaseDownloading {
		s += fmt.Sprintf(" %s (%d/%d) %s of %s", d.Repo, d.Item, d.Items, humanBytes(d.Done), humanBytes(d.Total))
		if d.Speed > 0 {
			s += " at " + humanBytes(d.Speed) + "/s"
		}
	}
	if st.Reason != "" && train.Terminal(st.Phase) {
		s += " (" + st.Reason + ")"
	}
	return s
}

func (a *app) trainStatus() *cobra.Command {
	var rf remoteFlags
	cmd := &cobra.Command{
		Use:   "status JOB",
		Short: "Show a job's phase, step, speed, loss, checkpoints and cost",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := a.trainer(rf)
			if err != nil {
				return err
			}
			res, err := t.Status(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.out(res, func(w io.Writer) {
				st := res.State
				fmt.Fprintln(w, stateLine(st))
				if l := a.datasetLabel(cmd.Context(), res.Job.DatasetSHA); l != "" {
					fmt.Fprintf(w, "  dataset: %s (id %.12s)\n", l, res.Job.DatasetSHA)
				}
				if st.Info != "" {
					fmt.Fprintf(w, "  info: %s\n", st.Info)
				}
				if res.Recorded {
					fmt.Fprintf(w, "  as recorded when it ended; its machine was not reached (%s)\n", oneLineErr(errors.New(res.Unreachable)))
				}
				if d := st.Download; d != nil && d.Ended {
					fmt.Fprintf(w, "  models: %d repo(s), %d file(s), %s pulled into %s\n", d.Items, d.Files, humanBytes(d.Total), d.Cache)
				}
				if st.SupervisorAlive != nil && !*st.SupervisorAlive && !train.Terminal(st.Phase) {
					fmt.Fprintf(w, "  the supervisor is not running: scopectl train resume %s\n", st.JobID)
				}
				for _, c := range st.Checkpoints {
					fmt.Fprintf(w, "  checkpoint step %-6d %s %s\n", c.Step, c.File, c.SHA256[:12])
				}
				for _, f := range st.Failures {
					fmt.Fprintf(w, "  lost: %s\n", f)
				}
				if res.Cost > 0 {
					fmt.Fprintf(w, "  cost so far: $%.2f\n", res.Cost)
				}
			})
		},
	}
	rf.add(cmd)
	rf.kube.addJobKubeconfig(cmd)
	return cmd
}

func (a *app) trainLogs() *cobra.Command {
	var rf remoteFlags
	var follow bool
	var container string
	cmd := &cobra.Command{
		Use:   "logs JOB [-f]",
		Short: "Print the trainer's output (train.log on the machine); -f follows it to the end of the job",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := a.trainer(rf)
			if err != nil {
				return err
			}
			if container != "" {
				job, err := t.Job(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				if !isKubeJob(job) {
					return usageError("--container: job %s does not run on Kubernetes", job.ID)
				}
				return a.kubeJobLogs(cmd.Context(), job, jobKubeconfig(job, rf), container, follow)
			}
			_, err = t.Logs(cmd.Context(), args[0], 0, follow, a.stdout)
			return err
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing until the job ends")
	cmd.Flags().StringVar(&container, "container", "", "kubernetes: the log of the Job pod's container instead (train: the holder and supervisor; agent: the sidecar), through the API server")
	rf.add(cmd)
	rf.kube.addJobKubeconfig(cmd)
	return cmd
}

func (a *app) trainLs() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List training jobs (as last seen; `train status JOB` asks the machine)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := a.trainer(remoteFlags{})
			if err != nil {
				return err
			}
			jobs, err := t.Jobs.ListTrainJobs(cmd.Context())
			if err != nil {
				return err
			}
			return a.out(jobs, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "JOB\tNAME\tPHASE\tSTEP\tMACHINE\tSTARTED")
				for _, j := range jobs {
					m := remote.Redact(j.Target)
					if j.PodID != "" {
						m = "pod " + j.PodID
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%s\t%s\n", j.ID, j.Name, j.Phase, j.Step, j.Steps, m, j.StartedAt.Local().Format("2006-01-02 15:04"))
				}
				tw.Flush()
			})
		},
	}
	return cmd
}

func (a *app) trainCtl(verb, short string) *cobra.Command {
	var rf remoteFlags
	cmd := &cobra.Command{
		Use:   verb + " JOB",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := a.trainer(rf)
			if err != nil {
				return err
			}
			var st *train.State
			switch verb {
			case "stop":
				st, err = t.Stop(cmd.Context(), args[0])
			case "save-now":
				st, err = t.SaveNow(cmd.Context(), args[0])
			default:
				st, err = t.SampleNow(cmd.Context(), args[0])
			}
			if err != nil {
				return err
			}
			return a.out(st, func(w io.Writer) { fmt.Fprintf(w, "%s requested; %s\n", verb, stateLine(st)) })
		},
	}
	rf.add(cmd)
	rf.kube.addJobKubeconfig(cmd)
	return cmd
}

func (a *app) trainResume() *cobra.Command {
	var rf remoteFlags
	var pv previewFlags
	var detach bool
	var interval time.Duration
	var in train.RunInput
	var host, pod string
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "resume JOB [--host ssh://… (--aitk-dir DIR | --image REF) | --pod ID]",
		Short: "Start a stopped or failed job again, from its newest complete checkpoint: on its machine, or on another one",
		Long: "On its own machine, a new supervisor starts (taking over a trainer that still runs). With --host or\n" +
			"--pod the job moves: its config (unchanged, unless --force) and datasets are sent there as by\n" +
			"`train run`, and its newest checkpoint in the library is put into the new save folder last, so\n" +
			"that ai-toolkit continues from it.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			t, err := a.trainer(rf)
			if err != nil {
				return err
			}
			id := args[0]
			if host != "" || pod != "" {
				if host != "" && pod != "" {
					return usageError("give --host or --pod, not both")
				}
				in.Target = host
				if pod != "" {
					_, p, err := a.podWithClient(ctx, pod, rf)
					if err != nil {
						return err
					}
					if _, direct := p.SSHURL(); !direct {
						return fmt.Errorf("pod %s has no public SSH port: training needs direct SSH (expose 22/tcp)", p.ID)
					}
					in.Target, in.PodID, in.CostPerHr = podSSHURL(p), p.ID, p.CostPerHr
				} else if in.AITKDir == "" && in.Image == "" {
					return usageError("on an SSH host give --aitk-dir or --image")
				}
				in.HFToken, in.Preview = a.cfg.HFToken, pv.target
				rres, err := t.ResumeOn(ctx, id, in)
				if rres != nil && rres.Refused {
					a.printProblems(rres)
					return withCode(ExitRefused, err)
				}
				if err != nil {
					return err
				}
				id = rres.Job.ID
				if detach {
					return a.out(rres, func(w io.Writer) { fmt.Fprintf(w, "job %s resumed on %s\n", id, remote.Redact(rres.Job.Target)) })
				}
				return a.watchJob(ctx, t, id, interval, rf, pv)
			}
			if job, err := t.Job(ctx, id); err == nil && isKubeJob(job) {
				if err := a.kubeResumeMachine(ctx, t, &job, rf, wait); err != nil {
					return err
				}
			}
			res, err := t.Resume(ctx, id)
			if err != nil {
				return err
			}
			if detach {
				return a.out(res, func(w io.Writer) { fmt.Fprintf(w, "resumed: %s\n", stateLine(res.State)) })
			}
			return a.watchJob(ctx, t, res.Job.ID, interval, rf, pv)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&detach, "detach", false, "start it and return")
	f.StringVar(&host, "host", "", "continue on this machine: ssh://user@host:port")
	f.StringVar(&pod, "pod", "", "continue on this RunPod pod")
	f.DurationVar(&wait, "wait", 15*time.Minute, "kubernetes: how long to wait for the new Job's pod when the old one has ended")
	f.StringVar(&in.AITKDir, "aitk-dir", "", "with --host: an ai-toolkit checkout there")
	f.StringVar(&in.Image, "image", "", "with --host: an ai-toolkit image to docker run there")
	f.StringVar(&in.Workspace, "workspace", train.DefaultWorkspace, "with --host/--pod: folder there for datasets, outputs and jobs")
	f.StringVar(&in.Binary, "binary", "", "scopectl binary to copy (default: this one, if linux/amd64)")
	f.StringVar(&in.Config, "config", "", "with --host/--pod: the job config (default: the one the job was started from)")
	f.StringArrayVar(&in.Env, "env", nil, "KEY=VALUE for the trainer's environment")
	f.BoolVar(&in.Force, "force", false, "resume even if the config changed or has errors")
	f.BoolVar(&in.NoPrepull, "no-prepull", false, "let ai-toolkit download the base model itself (on a new machine) instead of scopectl pulling it first")
	f.StringVar(&in.DockerGPUs, "docker-gpus", "", "docker run --gpus (default all; - for none)")
	f.DurationVar(&in.StopGrace, "stop-grace", 0, "stop: time before SIGINT (default 5m)")
	f.DurationVar(&in.KillGrace, "kill-grace", 0, "stop: time after SIGINT before SIGKILL (default 2m)")
	f.DurationVar(&in.Poll, "poll", 0, "how often the supervisor looks at the trainer (default 1s)")
	for _, n := range []string{"docker-gpus", "poll"} {
		f.MarkHidden(n)
	}
	pv.add(cmd)
	f.DurationVar(&interval, "interval", 10*time.Second, "how often to look at the job")
	rf.add(cmd)
	rf.kube.addJobKubeconfig(cmd)
	return cmd
}

func (a *app) trainWatch() *cobra.Command {
	var rf remoteFlags
	var pv previewFlags
	var interval time.Duration
	cmd := &cobra.Command{
		Use:   "watch JOB",
		Short: "Follow a job to its end, collecting each checkpoint; stops its pod at the end unless it was run with --keep",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := a.trainer(rf)
			if err != nil {
				return err
			}
			return a.watchJob(cmd.Context(), t, args[0], interval, rf, pv)
		},
	}
	cmd.Flags().DurationVar(&interval, "interval", 10*time.Second, "how often to look at the job")
	pv.add(cmd)
	rf.add(cmd)
	rf.kube.addJobKubeconfig(cmd)
	return cmd
}

func (a *app) trainCollect() *cobra.Command {
	var rf remoteFlags
	cmd := &cobra.Command{
		Use:   "collect JOB",
		Short: "Add the job's staged checkpoints (and their samples) to the library, with their lineage",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := a.trainer(rf)
			if err != nil {
				return err
			}
			res, err := t.Collect(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.out(res, func(w io.Writer) {
				n := 0
				for _, c := range res.Checkpoints {
					if c.New {
						n++
					}
					fmt.Fprintf(w, "step %-6d %s  %s\n", c.Step, c.Name, c.SHA256[:12])
				}
				fmt.Fprintf(w, "%s collected now, %d in all; job %s\n", plural(n, "checkpoint"), len(res.Checkpoints), res.Phase)
				for _, f := range res.Failures {
					fmt.Fprintf(w, "lost: %s\n", f)
				}
			})
		},
	}
	rf.add(cmd)
	rf.kube.addJobKubeconfig(cmd)
	return cmd
}

// trainSupervise is the on-machine supervisor (started by train run).
func (a *app) trainSupervise() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:    "supervise --job-dir DIR",
		Short:  "Run a training job on this machine under watch (started by `train run`)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			train.Detach()
			signal.Ignore(syscall.SIGHUP)
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
			defer stop()
			return train.Supervise(ctx, dir, a.stderr)
		},
	}
	cmd.Flags().StringVar(&dir, "job-dir", "", "the job folder (spec.json)")
	cmd.MarkFlagRequired("job-dir")
	return cmd
}

func (a *app) trainSuperviseCtl() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:       "supervise-ctl --job-dir DIR stop|save-now|sample-now|status",
		Short:     "Control a supervised job on this machine",
		Hidden:    true,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"stop", "save-now", "sample-now", "status"},
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := train.Control(cmd.Context(), dir, train.ControlAction(args[0]))
			if err != nil {
				return err
			}
			_, err = a.stdout.Write(train.MarshalState(st))
			return err
		},
	}
	cmd.Flags().StringVar(&dir, "job-dir", "", "the job folder")
	cmd.MarkFlagRequired("job-dir")
	return cmd
}

// podSSHURL is the pod's direct SSH address as root.
func podSSHURL(p *provider.Pod) string {
	host, port, _ := p.SSH()
	user := p.SSHUser
	if user == "" {
		user = "root"
	}
	return "ssh://" + user + "@" + net.JoinHostPort(host, strconv.Itoa(port))
}

// newTrainPod rents a pod for train run --new: ai-toolkit's pinned image on a CUDA 13
// host, the user's SSH key, limits that stop it when the job ends (unless keep), and
// waits until it runs with a public SSH port.
func (a *app) newTrainPod(ctx context.Context, gpu, cloud string, volumeGB int, keep bool, wait time.Duration, rf remoteFlags) (*provider.Pod, error) {
	c, err := a.runpod()
	if err != nil {
		return nil, err
	}
	spec := provider.CreateSpec{Name: "scopectl-train", GPUType: gpu, Cloud: cloud, Image: train.DefaultImage,
		VolumeGB: volumeGB, ContainerDiskGB: 50, Ports: []string{"22/tcp"}, AllowedCUDA: train.AllowedCUDA}
	if err := a.budgetGate(ctx, c, budgetFlags{}, spec, 0); err != nil {
		return nil, err
	}
	pod, rec, err := a.createPodLimits(ctx, c, spec, DefaultIdleStop, 0, !keep, "")
	if err != nil {
		return nil, a.cleanupUnknownCreate(ctx, c, rec, keep, err)
	}
	if !a.json {
		fmt.Fprintf(a.stderr, "pod %s: %s, $%.3f/h; waiting for it to run\n", pod.ID, pod.GPUType, pod.CostPerHr)
	}
	p, err := deploy.WaitPod(ctx, c, pod.ID, true, wait)
	if err != nil {
		if !keep {
			tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
			defer cancel()
			if terr := c.Terminate(tctx, pod.ID); terr == nil {
				a.markTerminated(tctx, pod.ID)
				return nil, fmt.Errorf("%w; pod %s terminated", err, pod.ID)
			}
		}
		return nil, fmt.Errorf("%w; pod %s left as it is (`scopectl pod rm %s --yes` terminates it)", err, pod.ID, pod.ID)
	}
	// The guard on the pod enforces its limits (and the job end) with the laptop closed.
	if _, gerr := a.installGuard(ctx, c, p, rf, ""); gerr != nil {
		a.warn(oneLineErr(gerr))
	}
	return p, nil
}
