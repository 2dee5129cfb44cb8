package cli

// The CLI face of the Kubernetes provider (internal/provider/kubernetes): deploy
// --provider kubernetes, pod ls/get/stop/start/rm --provider kubernetes (or a
// k8s://CONTEXT/NAMESPACE/NAME id), status k8s://CONTEXT/NAMESPACE/NAME. Flags are
// parsed here; everything else is the provider's.

import (
	"context"
	"fmt"
	"io"
	"path"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"

	"github.com/daydreamlive/scopectl/internal/deploy"
	"github.com/daydreamlive/scopectl/internal/ledger"
	"github.com/daydreamlive/scopectl/internal/library"
	"github.com/daydreamlive/scopectl/internal/lorasync"
	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/provider/kubernetes"
	"github.com/daydreamlive/scopectl/internal/scope"
	"github.com/daydreamlive/scopectl/internal/secret"
)

// kubeTargetFlags pick the cluster and namespace.
type kubeTargetFlags struct {
	provider   string
	kubeconfig string
	context    string
	namespace  string
}

// add registers --provider and the target flags (pod get/stop/start/rm).
func (f *kubeTargetFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.provider, "provider", "", "kubernetes: NAME is a Scope StatefulSet in --context/--namespace (or give k8s://CONTEXT/NAMESPACE/NAME)")
	f.addTarget(cmd)
}

// addTarget registers the target flags alone (commands that have --provider already).
func (f *kubeTargetFlags) addTarget(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.kubeconfig, "kubeconfig", "", "kubernetes: kubeconfig file (default $KUBECONFIG, else ~/.kube/config)")
	fl.StringVar(&f.context, "context", "", "kubernetes: kubeconfig context (default the current one)")
	fl.StringVarP(&f.namespace, "namespace", "n", "", "kubernetes: namespace (default the context's, else default)")
}

// selected reports whether ref (an id or target) means Kubernetes.
func (f *kubeTargetFlags) selected(ref string) bool {
	return f.provider == kubernetes.Name || strings.HasPrefix(ref, "k8s://")
}

// client opens the cluster for ref: a k8s://CONTEXT/NAMESPACE[/NAME] (flags fill the
// parts it leaves empty) or a plain NAME; it returns the deployment name.
func (f *kubeTargetFlags) client(ref string) (*kubernetes.Client, string, error) {
	t := kubernetes.Target{Kubeconfig: f.kubeconfig, Context: f.context, Namespace: f.namespace}
	name := ref
	if strings.HasPrefix(ref, "k8s://") {
		pt, n, err := kubernetes.ParseTarget(ref)
		if err != nil {
			return nil, "", usageError("%v", err)
		}
		if pt.Context != "" {
			t.Context = pt.Context
		}
		if pt.Namespace != "" {
			t.Namespace = pt.Namespace
		}
		name = n
	}
	c, err := kubernetes.New(t)
	return c, name, err
}

// kubeTarget is podTarget for Kubernetes.
func (a *app) kubeTarget(ref string, rf remoteFlags) (provider.Provider, string, error) {
	c, name, err := rf.kube.client(ref)
	if err != nil {
		return nil, "", err
	}
	if name == "" {
		name = kubernetes.DefaultName
	}
	return c, name, nil
}

// kubePodViews lists scopectl's Scope deployments of the namespace, and brings the
// cost ledger up to date with them.
func (a *app) kubePodViews(ctx context.Context, rf remoteFlags) ([]podView, error) {
	c, _, err := rf.kube.client("")
	if err != nil {
		return nil, err
	}
	deps, err := c.Deployments(ctx, "")
	if err != nil {
		return nil, err
	}
	a.kubeObserve(ctx, c, deps, true)
	views := make([]podView, 0, len(deps))
	for _, d := range deps {
		p := d.Pod
		views = append(views, podView{Pod: p, Recorded: true, Note: p.Detail, Limits: limitsOf(p, nil)}) // the guard's, from the pod env
	}
	return views, nil
}

// kubeLedgerID is a Kubernetes deployment's id in the cost ledger, its address
// k8s://CONTEXT/NAMESPACE/NAME: a StatefulSet's name alone is not unique across
// namespaces and clusters.
func kubeLedgerID(c *kubernetes.Client, name string) string { return c.Target().String() + "/" + name }

// kubeObserve brings the cost ledger up to date with Kubernetes deployments just read
// (all of c's namespace when whole, else only those given), as pod ls does RunPod's
// pods: the guard's stop recorded on a StatefulSet ends its run when the guard stopped
// it, not when scopectl looks; a running deployment's run is opened (from when scopectl
// last started it) or seen; one stopped or, whole, no longer listed ends when last seen
// running. The cluster is the user's: hours, no price. Failures are warnings.
func (a *app) kubeObserve(ctx context.Context, c *kubernetes.Client, deps []kubernetes.Deployment, whole bool) {
	ls, err := a.ledgerStore()
	if err != nil {
		return
	}
	pods := make([]provider.Pod, 0, len(deps))
	ids := map[string]bool{}
	for _, d := range deps {
		p := d.Pod
		p.ID = kubeLedgerID(c, d.ID)
		p.CostPerHr, p.VolumeGB = 0, 0 // no price, and RunPod's volume rates are not the cluster's
		ids[p.ID] = true
		if s := d.GuardStop; s != nil {
			if err := ledger.Stopped(ctx, ls, kubernetes.Name, p.ID, s.At, ledger.EndGuard, s.Reason, 0, &p); err != nil {
				a.warn("cost ledger: the guard's stop of " + p.ID + " was not recorded: " + oneLineErr(err))
			}
		}
		pods = append(pods, p)
	}
	in := func(id string) bool { return ids[id] }
	if whole {
		prefix := c.Target().String() + "/"
		in = func(id string) bool { return strings.HasPrefix(id, prefix) }
	}
	notes, err := ledger.ObserveIn(ctx, ls, kubernetes.Name, in, pods, nil, time.Now())
	for _, n := range notes {
		a.warn(n)
	}
	if err != nil {
		a.warn("cost ledger not updated: " + oneLineErr(err))
	}
}

// kubeObserveOne is kubeObserve for deployment name alone; it returns its ledger id.
func (a *app) kubeObserveOne(ctx context.Context, c *kubernetes.Client, name string) string {
	if deps, err := c.Deployments(ctx, name); err == nil {
		a.kubeObserve(ctx, c, deps, false)
	}
	return kubeLedgerID(c, name)
}

// kubeObserveOpen reads again the Kubernetes deployments the cost ledger has open runs
// of (cost), each namespace through the default kubeconfig and the context in its id:
// a guard's stop since is recorded at its time. What cannot be read is a warning.
func (a *app) kubeObserveOpen(ctx context.Context) {
	ls, err := a.ledgerStore()
	if err != nil {
		return
	}
	open, err := ls.OpenRuns(ctx, kubernetes.Name)
	if err != nil {
		return
	}
	seen := map[kubernetes.Target]bool{}
	for _, r := range open {
		t, _, err := kubernetes.ParseTarget(r.PodID)
		if err != nil || seen[t] {
			continue
		}
		seen[t] = true
		c, err := kubernetes.New(t)
		if err == nil {
			rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			var deps []kubernetes.Deployment
			if deps, err = c.Deployments(rctx, ""); err == nil {
				a.kubeObserve(rctx, c, deps, true)
			}
			cancel()
		}
		if err != nil {
			a.warn(fmt.Sprintf("Kubernetes deployments in %s not read (the ledger as last seen): %s", t, oneLineErr(err)))
		}
	}
}

// kubeDeployFlags are deploy's flags for --provider kubernetes.
type kubeDeployFlags struct {
	kubeTargetFlags
	replicas       int32
	nodeSelector   []string
	tolerations    []string
	hostNetwork    bool
	agentImage     string
	storageClass   string
	volumeSize     string
	forceConflicts bool
	output         string
}

func (f *kubeDeployFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.provider, "provider", "", "kubernetes: Scope as a StatefulSet on the kubeconfig's cluster (else RunPod/SSH as above)")
	f.addTarget(cmd)
	fl.Int32Var(&f.replicas, "replicas", 1, "kubernetes: Scope replicas, one GPU set each")
	fl.StringSliceVar(&f.nodeSelector, "node-selector", nil, "kubernetes: node label KEY=VALUE the replicas need (repeatable)")
	fl.StringSliceVar(&f.tolerations, "toleration", nil, "kubernetes: taint to tolerate, KEY[=VALUE][:EFFECT] (repeatable)")
	fl.BoolVar(&f.hostNetwork, "host-network", false, "kubernetes: run the replicas on the node's network")
	fl.StringVar(&f.agentImage, "agent-image", "", "kubernetes: image with the static scopectl binary for the agent sidecar (default "+kubernetes.DefaultAgentImage+"; - for none)")
	fl.StringVar(&f.storageClass, "storage-class", "", "kubernetes: storage class of each replica's volume (default the cluster's)")
	fl.StringVar(&f.volumeSize, "volume-size", "", "kubernetes: each replica's volume at /workspace (default "+kubernetes.DefaultVolumeSize+")")
	fl.BoolVar(&f.forceConflicts, "force-conflicts", false, "kubernetes: take over fields another field manager owns")
	fl.StringVarP(&f.output, "output", "o", "", "kubernetes, with --dry-run: yaml prints the manifests (secrets never)")
}

// deployKube deploys Scope to Kubernetes: server-side apply, then a watch until every
// replica is ready (--wait; 0 does not wait).
func (a *app) deployKube(cmd *cobra.Command, o *deployFlags) error {
	ctx := cmd.Context()
	kf := &o.kube
	for _, n := range []string{"pod", "new", "port", "gpus", "volume", "gpu-count", "cloud", "volume-gb", "container-disk-gb", "network-volume", "max-price", "ssh-key", "keep"} {
		if cmd.Flags().Changed(n) {
			return usageError("--%s is not for --provider kubernetes", n)
		}
	}
	if (len(o.loras) > 0 || o.pipeline != "") && (o.wait <= 0 || kf.replicas == 0 || kf.agentImage == "-") {
		return usageError("--lora/--pipeline need the replicas up (--wait > 0, --replicas > 0) and the agent sidecar")
	}
	if kf.output != "" && (kf.output != "yaml" || !o.dryRun) {
		return usageError("-o %s: only -o yaml, with --dry-run", kf.output)
	}
	env, err := parseEnv(o.envs)
	if err != nil {
		return err
	}
	ps, err := deploy.NormalizePod(deploy.PodSpec{Image: o.s.Image, LoRADir: o.s.LoRADir, Env: env})
	if err != nil {
		return err
	}
	if strings.HasPrefix(o.host, "k8s://") && o.s.Name == "" {
		if _, n, err := kubernetes.ParseTarget(o.host); err == nil {
			o.s.Name = n
		}
	}
	var wanted []wantedLoRA
	if len(o.loras) > 0 && !o.dryRun {
		if wanted, err = a.prepareLoRAs(ctx, o.loras, o.pipeline, ps.LoRADir); err != nil {
			return err
		}
	}
	gpuRes, gpuN, err := kubernetes.ParseGPU(o.rp.create.GPUType)
	if err != nil {
		return usageError("%v", err)
	}
	s := kubernetes.ScopeSpec{Name: o.s.Name, Replicas: kf.replicas, Image: ps.Image, AgentImage: kf.agentImage,
		GPUResource: gpuRes, GPUCount: gpuN, HostNetwork: kf.hostNetwork, StorageClass: kf.storageClass,
		VolumeSize: kf.volumeSize, LoRADir: ps.LoRADir, Env: ps.PodEnv(), SecretEnv: map[string]secret.Secret{},
		// The guard container beside the agent scales the StatefulSet to zero past these.
		Limits: provider.Limits{IdleStop: o.rp.idle, MaxHours: o.rp.maxHours}}
	switch o.s.Pull {
	case "":
	case deploy.PullAlways:
		s.ImagePullPolicy = corev1.PullAlways
	case deploy.PullMissing:
		s.ImagePullPolicy = corev1.PullIfNotPresent
	case deploy.PullNever:
		s.ImagePullPolicy = corev1.PullNever
	default:
		return usageError("--pull %q: always, missing or never", o.s.Pull)
	}
	for _, kv := range kf.nodeSelector {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return usageError("--node-selector %q: want KEY=VALUE", kv)
		}
		if s.NodeSelector == nil {
			s.NodeSelector = map[string]string{}
		}
		s.NodeSelector[k] = v
	}
	for _, tv := range kf.tolerations {
		t, err := kubernetes.ParseToleration(tv)
		if err != nil {
			return usageError("%v", err)
		}
		s.Tolerations = append(s.Tolerations, t)
	}
	if a.cfg.HFToken.IsSet() {
		s.SecretEnv[kubernetes.SecretHFToken] = a.cfg.HFToken
	}
	if a.cfg.AgentToken.IsSet() {
		s.SecretEnv[kubernetes.SecretAgentToken] = a.cfg.AgentToken
	}
	if o.dryRun {
		ns, err := s.Normalize()
		if err != nil {
			return err
		}
		if _, ok := ns.SecretEnv[kubernetes.SecretAgentToken]; !ok && ns.AgentImage != "-" {
			ns.SecretEnv[kubernetes.SecretAgentToken] = secret.New("(kept from the cluster, or made on apply)")
		}
		namespace := kf.namespace
		if c, _, err := kf.client(o.host); err == nil {
			namespace = c.Namespace
		}
		if kf.output == "yaml" {
			y, err := ns.Build(namespace).YAML()
			if err != nil {
				return err
			}
			_, err = a.stdout.Write(y)
			return err
		}
		// The plan: a server-side dry run (admission, validation, RBAC and conflicts
		// included; nothing stored) says what each object would go through.
		c, _, err := kf.client(o.host)
		if err != nil {
			return err
		}
		plan, err := c.Apply(ctx, s, kubernetes.ApplyOptions{Force: kf.forceConflicts, ServerDryRun: true})
		if err != nil {
			return err
		}
		return a.out(map[string]any{"dry_run": true, "target": c.Target().String(), "plan": plan}, func(w io.Writer) {
			for _, p := range plan {
				verb := map[string]string{kubernetes.ActionCreated: "create", kubernetes.ActionConfigured: "configure", kubernetes.ActionUnchanged: "keep"}[p.Action]
				fmt.Fprintf(w, "would %-10s %s/%s\n", verb, p.Kind, p.Name)
			}
			fmt.Fprintf(w, "in %s, field manager %s (-o yaml prints the manifests)\n", c.Target(), kubernetes.FieldManager)
		})
	}
	c, _, err := kf.client(o.host)
	if err != nil {
		return err
	}
	t0 := time.Now()
	applied, err := c.Apply(ctx, s, kubernetes.ApplyOptions{Force: kf.forceConflicts})
	if err != nil {
		return err
	}
	res := map[string]any{"target": c.Target().String(), "applied": applied}
	if !a.json {
		for _, ap := range applied {
			fmt.Fprintf(a.stdout, "%-11s %s/%s\n", ap.Action, ap.Kind, ap.Name)
		}
	}
	name := cmpOrString(o.s.Name, kubernetes.DefaultName)
	if o.wait > 0 && kf.replicas > 0 {
		wctx, cancel := context.WithTimeout(ctx, o.wait)
		defer cancel()
		reps, err := c.WaitReady(wctx, name, kubernetes.WaitOptions{Events: true, Progress: func(r kubernetes.Replica) {
			if !r.Ready && r.Reason != "" {
				a.warn(fmt.Sprintf("%s: %s", r.Name, r.Reason))
			}
		}})
		res["replicas"] = reps
		if err != nil {
			return err
		}
		res["ready_in_s"] = time.Since(t0).Seconds()
		if len(wanted) > 0 || o.pipeline != "" {
			if err := a.kubeScopeUp(ctx, c, name, reps, o, wanted, res); err != nil {
				return err
			}
		}
	}
	return a.out(res, func(w io.Writer) {
		reps, _ := res["replicas"].([]kubernetes.Replica)
		for _, r := range reps {
			fmt.Fprintf(w, "%s ready in %s on %s\n", r.Name, r.ReadyIn.Round(100*time.Millisecond), cmpOrString(r.Node, "?"))
		}
		fmt.Fprintf(w, "Scope %s in %s: %d replica(s) (pod ls/get/stop/start/rm --provider kubernetes, status k8s://%s/%s/%s)\n",
			name, c.Target(), kf.replicas, c.Context, c.Namespace, name)
	})
}

// kubeStatus is status for k8s://CONTEXT/NAMESPACE/NAME: the deployment and every replica.
func (a *app) kubeStatus(ctx context.Context, ref string, rf remoteFlags) error {
	c, name, err := rf.kube.client(ref)
	if err != nil {
		return err
	}
	if name == "" {
		name = kubernetes.DefaultName
	}
	p, err := c.Get(ctx, name)
	if err != nil {
		return notFound(err)
	}
	a.kubeObserveOne(ctx, c, name)
	reps, err := c.Replicas(ctx, name)
	if err != nil {
		return err
	}
	// Scope in each ready replica, through a port-forward: health and pipeline.
	views := make([]kubeReplicaView, len(reps))
	for i, r := range reps {
		views[i].Replica = r
		if !r.Ready {
			continue
		}
		addr, stop, err := c.PortForward(ctx, r.Name, kubernetes.ScopePort)
		if err != nil {
			views[i].Error = err.Error()
			continue
		}
		sc := &scope.Client{Base: "http://" + addr}
		if h, err := sc.Health(ctx); err != nil {
			views[i].Error = "scope: " + err.Error()
		} else {
			views[i].Health = h
			if st, err := sc.PipelineStatus(ctx); err == nil {
				views[i].Pipeline = st
			}
		}
		stop()
	}
	v := map[string]any{"target": c.Target().String(), "deployment": p, "replicas": views}
	return a.out(v, func(w io.Writer) {
		fmt.Fprintf(w, "%s %s: %s, %s, %d × %s\n", c.Target(), p.ID, p.Status, p.Detail, p.GPUCount, p.GPUType)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "REPLICA\tPHASE\tREADY\tNODE\tRESTARTS\tSCOPE\tPIPELINE\tLORAS\tREASON")
		for _, r := range views {
			health, pipe, loras := "-", "-", "-"
			if r.Health != nil {
				health = r.Health.Status + " " + r.Health.Version
			}
			if pl := r.Pipeline; pl != nil {
				pipe = pl.Status
				if pl.PipelineID != "" {
					pipe = pl.PipelineID + " (" + pl.Status + ")"
				}
				if len(pl.LoadedLoRAs) > 0 {
					var ls []string
					for _, l := range pl.LoadedLoRAs {
						ls = append(ls, fmt.Sprintf("%s:%g", strings.TrimSuffix(path.Base(l.Path), ".safetensors"), l.Scale))
					}
					loras = strings.Join(ls, ",")
				}
			}
			why := r.Reason
			if r.Error != "" {
				why = r.Error
			}
			fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%d\t%s\t%s\t%s\t%s\n", r.Name, r.Phase, r.Ready, r.Node, r.Restarts, health, pipe, loras, why)
		}
		tw.Flush()
	})
}

func cmpOrString(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func printKubePods(w io.Writer, views []podView) {
	if len(views) == 0 {
		fmt.Fprintln(w, "no Scope deployments")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATUS\tGPU\tIMAGE\tLIMITS\tNOTE")
	for _, v := range views {
		fmt.Fprintf(tw, "%s\t%s\t%d × %s\t%s\t%s\t%s\n", v.ID, v.Status, v.GPUCount, v.GPUType, v.Image, limitsText(v.Limits), v.Note)
	}
	tw.Flush()
}

// kubeScopeUp syncs the LoRAs to every replica through its agent sidecar and loads the
// pipeline in each Scope, both reached by port-forwards through the API server.
func (a *app) kubeScopeUp(ctx context.Context, c *kubernetes.Client, name string, reps []kubernetes.Replica, o *deployFlags, wanted []wantedLoRA, res map[string]any) error {
	if !a.cfg.AgentToken.IsSet() {
		tok, err := c.AgentToken(ctx, name)
		if err != nil {
			return err
		}
		secret.Default.Add(tok) // redacted from every message, as config's secrets are
		a.cfg.AgentToken = tok
	}
	per := map[string]any{}
	for _, r := range reps {
		one := map[string]any{}
		if len(wanted) > 0 {
			addr, stop, err := c.PortForward(ctx, r.Name, kubernetes.AgentPort)
			if err != nil {
				return err
			}
			sres, err := a.syncLoRAs(ctx, "http://"+addr, wanted, o.pipeline, o.rf, 30*time.Second)
			stop()
			if err != nil {
				return fmt.Errorf("%s: %w", r.Name, err)
			}
			one["sync"] = sres
		}
		addr, stop, err := c.PortForward(ctx, r.Name, kubernetes.ScopePort)
		if err != nil {
			return err
		}
		err = a.scopeUp(ctx, &scope.Client{Base: "http://" + addr}, o.wait, o.pipeline, wanted, one)
		stop()
		if err != nil {
			return fmt.Errorf("%s: %w", r.Name, err)
		}
		per[r.Name] = one
	}
	res["scope"] = per
	return nil
}

// kubeSync is sync --to k8s://CONTEXT/NAMESPACE/NAME: the library's LoRAs to every
// ready replica's volume, each through its agent sidecar reached by a port-forward
// through the API server (the agent token from the deployment's Secret unless set), as
// sync does to a RunPod pod's agent. A replica that is not ready is named, not waited for.
func (a *app) kubeSync(ctx context.Context, ref string, rf remoteFlags, lib *library.Library, opt lorasync.Options) error {
	c, name, err := rf.kube.client(ref)
	if err != nil {
		return err
	}
	if name == "" {
		name = kubernetes.DefaultName
	}
	if _, err := c.Get(ctx, name); err != nil {
		return notFound(err)
	}
	reps, err := c.Replicas(ctx, name)
	if err != nil {
		return err
	}
	if !a.cfg.AgentToken.IsSet() {
		tok, err := c.AgentToken(ctx, name)
		if err != nil {
			return err
		}
		secret.Default.Add(tok)
		a.cfg.AgentToken = tok
	}
	type replicaSync struct {
		Replica string           `json:"replica"`
		Result  *lorasync.Result `json:"result,omitempty"`
		Skipped string           `json:"skipped,omitempty"`
	}
	var out []replicaSync
	synced := 0
	for _, r := range reps {
		if !r.Ready {
			out = append(out, replicaSync{Replica: r.Name, Skipped: "not ready: " + cmpOrString(r.Reason, r.Phase)})
			continue
		}
		addr, stop, err := c.PortForward(ctx, r.Name, kubernetes.AgentPort)
		if err != nil {
			return err
		}
		rem, err := a.openRemote(ctx, "http://"+addr, rf)
		if err != nil {
			stop()
			return fmt.Errorf("%s: %w", r.Name, err)
		}
		res, err := lorasync.Sync(ctx, lib, rem, opt)
		rem.Close()
		stop()
		if err != nil {
			return fmt.Errorf("%s: %w", r.Name, err)
		}
		out = append(out, replicaSync{Replica: r.Name, Result: res})
		synced++
	}
	if synced == 0 {
		return fmt.Errorf("%s in %s: no replica is ready (scopectl pod start %s, or status %s)", name, c.Target(), ref, ref)
	}
	return a.out(map[string]any{"target": c.Target().String(), "name": name, "replicas": out}, func(w io.Writer) {
		for _, r := range out {
			if r.Result == nil {
				fmt.Fprintf(w, "%s: skipped, %s\n", r.Replica, r.Skipped)
				continue
			}
			fmt.Fprintf(w, "%s:\n", r.Replica)
			printSync(w, r.Result)
		}
	})
}

// kubeReplicaView is one replica in status: the pod, and Scope in it when it is ready.
type kubeReplicaView struct {
	kubernetes.Replica
	Health   *scope.Health         `json:"health,omitempty"`
	Pipeline *scope.PipelineStatus `json:"pipeline,omitempty"`
	Error    string                `json:"error,omitempty"`
}

// kubeGPUs lists the GPU resources the cluster's nodes offer (pod gpus --provider kubernetes).
func (a *app) kubeGPUs(ctx context.Context, rf remoteFlags) error {
	c, _, err := rf.kube.client("")
	if err != nil {
		return err
	}
	ts, err := c.GPUTypes(ctx)
	if err != nil {
		return err
	}
	if ts == nil {
		ts = []provider.GPUType{}
	}
	return a.out(ts, func(w io.Writer) {
		if len(ts) == 0 {
			fmt.Fprintln(w, "no node offers a GPU resource (is the device plugin running?)")
			return
		}
		for _, t := range ts {
			fmt.Fprintln(w, t.Name)
		}
	})
}
