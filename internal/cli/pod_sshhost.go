package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/daydreamlive/scopectl/internal/deploy"
	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/provider/runpod"
	"github.com/daydreamlive/scopectl/internal/provider/sshhost"
	"github.com/daydreamlive/scopectl/internal/store"
)

// sshFlags are the SSH host-key flags of the pod commands (a subset of remoteFlags).
func (f *remoteFlags) addSSH(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.acceptNewHostKey, "accept-new-host-key", false, "SSH hosts: add an unknown host key to known_hosts (a changed key is always refused)")
	cmd.Flags().StringVar(&f.knownHosts, "known-hosts", "", "SSH hosts: known_hosts file (default ~/.ssh/known_hosts)")
}

// sshHosts is the provider of the SSH hosts the store records.
func (a *app) sshHosts(rf remoteFlags) (*sshhost.Provider, error) {
	ps, err := a.podStore()
	if err != nil {
		return nil, err
	}
	return &sshhost.Provider{Store: ps, Dial: func(ctx context.Context, u string) (sshhost.Runner, error) {
		r, _, err := a.openRunner(ctx, u, rf)
		if err != nil {
			return nil, err
		}
		run, ok := r.(sshhost.Runner)
		if !ok {
			r.Close()
			return nil, fmt.Errorf("%s cannot run commands", r)
		}
		return run, nil
	}}, nil
}

// sshHost returns the live record of the SSH host ref names (its id or its name); ok is
// false when ref names no SSH host. A forgotten host is an error (exit 4).
func (a *app) sshHost(ctx context.Context, ref string) (store.Pod, bool, error) {
	ps, err := a.podStore()
	if err != nil {
		return store.Pod{}, false, err
	}
	if rec, err := ps.GetPod(ctx, ref); err == nil {
		if rec.Provider == sshhost.Name && rec.TerminatedAt != nil {
			return rec, true, withCode(ExitNotFound, fmt.Errorf("ssh host %s (%s) was forgotten (pod rm); pod create --provider ssh --host %s adds it again", rec.ID, rec.Name, rec.Address))
		}
		return rec, rec.Provider == sshhost.Name, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return store.Pod{}, false, err
	}
	recs, err := ps.ListPods(ctx, true)
	if err != nil {
		return store.Pod{}, false, err
	}
	for _, rec := range recs {
		if rec.Provider == sshhost.Name && rec.Name == ref {
			return rec, true, nil
		}
	}
	return store.Pod{}, false, nil
}

// podTarget resolves a pod reference (a pod id, scopectl's request id, or an SSH host's
// name) and opens its provider: the store's record says which; RunPod otherwise.
func (a *app) podTarget(ctx context.Context, ref string, rf remoteFlags) (provider.Provider, string, error) {
	if rf.kube.selected(ref) {
		return a.kubeTarget(ref, rf)
	}
	if rec, ok, err := a.sshHost(ctx, ref); err != nil {
		return nil, "", err
	} else if ok {
		p, err := a.sshHosts(rf)
		return p, rec.ID, err
	}
	c, err := a.runpod()
	if err != nil {
		return nil, "", err
	}
	id, err := a.resolvePod(ctx, ref)
	return c, id, err
}

// podWithClient reads the pod ref names from its provider, which it returns too.
func (a *app) podWithClient(ctx context.Context, ref string, rf remoteFlags) (provider.Provider, *provider.Pod, error) {
	c, id, err := a.podTarget(ctx, ref, rf)
	if err != nil {
		return nil, nil, err
	}
	p, err := c.Get(ctx, id)
	if err != nil {
		return nil, nil, notFound(err)
	}
	return c, p, nil
}

// hostTarget turns a recorded SSH host's id or name into its ssh:// address, and
// *container into the Scope container deploy made there unless the user named one.
// Other targets come back as they are.
func (a *app) hostTarget(ctx context.Context, target string, container *string, containerSet bool) (string, error) {
	if strings.Contains(target, "://") {
		return target, nil
	}
	rec, ok, err := a.sshHost(ctx, target)
	if err != nil || !ok {
		return target, err
	}
	if !containerSet && rec.Container != "" {
		*container = rec.Container
	}
	return rec.Address + "/", nil
}

// podScopeURL is where Scope answers on pod p of provider c: RunPod's proxy, or the
// port an SSH host publishes; "" when unknown.
func podScopeURL(c provider.Provider, p *provider.Pod) string {
	if rp, ok := c.(*runpod.Client); ok {
		return rp.ProxyURL(p.ID, deploy.ContainerPort)
	}
	if port, ok := p.Ports[strconv.Itoa(deploy.ContainerPort)+"/http"]; ok && p.PublicIP != "" {
		return "http://" + net.JoinHostPort(p.PublicIP, strconv.Itoa(port))
	}
	return ""
}

// createSSHHost is `pod create --provider ssh`: the host is checked and recorded.
func (a *app) createSSHHost(ctx context.Context, cmd *cobra.Command, host, name string, rf remoteFlags, gf guardFlags) error {
	for _, f := range []string{"gpu", "gpus", "cloud", "image", "volume-gb", "container-disk-gb", "network-volume", "ports", "max-price", "idle-stop", "max-hours", "ssh-key", "guard-wait"} {
		if cmd.Flags().Changed(f) {
			return usageError("--%s is for RunPod pods; an SSH host is added as it is (--host, --name; its limits are deploy's --idle-stop/--max-hours)", f)
		}
	}
	if host == "" {
		return usageError("--provider ssh needs --host ssh://user@host:port")
	}
	if _, err := sshhost.HostURL(host); err != nil {
		return usageError("%v", err)
	}
	c, err := a.sshHosts(rf)
	if err != nil {
		return err
	}
	p, err := c.Create(ctx, provider.CreateSpec{Host: host, Name: name})
	if err != nil {
		return err
	}
	v := podStarted{Pod: p}
	v.Guard, v.GuardError = a.startGuard(ctx, c, p, rf, gf, true)
	return a.out(v, func(w io.Writer) {
		printPod(w, c, p, nil)
		if v.Guard != nil {
			printGuard(w, v.Guard)
		}
	})
}

// sshHostGPUs is `pod gpus --provider ssh`: the GPUs of every recorded host.
func (a *app) sshHostGPUs(ctx context.Context, rf remoteFlags) error {
	c, err := a.sshHosts(rf)
	if err != nil {
		return err
	}
	hosts, err := c.GPUs(ctx)
	if err != nil {
		return err
	}
	if hosts == nil {
		hosts = []sshhost.HostGPUs{}
	}
	return a.out(hosts, func(w io.Writer) {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "HOST\tNAME\tGPU\tMEMORY\tUTIL\tNOTE")
		for _, h := range hosts {
			if h.Error != "" || len(h.GPUs) == 0 {
				fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t%s\n", h.ID, h.Name, h.Error)
			}
			for _, g := range h.GPUs {
				fmt.Fprintf(tw, "%s\t%s\t%d: %s\t%d/%d MiB\t%d%%\t\n", h.ID, h.Name, g.Index, g.Name, g.MemoryUsedMiB, g.MemoryTotalMiB, g.UtilizationPct)
			}
		}
		tw.Flush()
	})
}

// sshHostViews lists the recorded SSH hosts for `pod ls`, each checked now.
func (a *app) sshHostViews(ctx context.Context, rf remoteFlags) ([]podView, error) {
	c, err := a.sshHosts(rf)
	if err != nil {
		return nil, err
	}
	pods, err := c.List(ctx)
	views := make([]podView, 0, len(pods))
	for _, p := range pods {
		views = append(views, podView{Pod: p, Recorded: true, Note: p.Detail, Limits: limitsOf(p, nil)}) // from its container's labels
	}
	return views, err
}
