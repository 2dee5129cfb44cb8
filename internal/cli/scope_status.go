package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/daydreamlive/scopectl/internal/deploy"
	"github.com/daydreamlive/scopectl/internal/gpu"
	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/scope"
	"github.com/daydreamlive/scopectl/internal/store"
)

// defaultScopeURL: $SCOPE_URL, else a local Scope.
func defaultScopeURL() string {
	if u := os.Getenv("SCOPE_URL"); u != "" {
		return u
	}
	return "http://localhost:8000"
}

func scopeClient(raw string) (*scope.Client, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usageError("--scope %q: want an http(s) URL such as http://localhost:8000", raw)
	}
	return &scope.Client{Base: strings.TrimRight(raw, "/")}, nil
}

type installedView struct {
	scope.InstalledLoRA
	InLibrary   bool   `json:"in_library"`
	LibraryName string `json:"library_name,omitempty"`
}

// podStatusView is a pod as `status` shows it. Cost so far is the API's cost per hour
// times the time since the pod's last start (lastStartedAt) while it runs.
type podStatusView struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Status    string    `json:"status"`
	GPUType   string    `json:"gpu_type"`
	GPUCount  int       `json:"gpu_count"`
	CostPerHr float64   `json:"cost_per_hr"`
	CreatedAt time.Time `json:"created_at"`
	StartedAt time.Time `json:"started_at"`
	UptimeS   float64   `json:"uptime_s"`
	CostSoFar float64   `json:"cost_so_far"`
	SSH       string    `json:"ssh"` // root@IP:PORT (direct) or "gateway"
	// Limits the pod carries (the guard on it enforces them) and the ledger's last
	// stop of it, with its reason (the guard's, the watch's or the user's), as pod get.
	Limits   *provider.Limits `json:"limits,omitempty"`
	LastStop *store.Run       `json:"last_stop,omitempty"`
}

type statusView struct {
	Target    string                `json:"target"` // "local", an ssh:// URL, or "pod ID"
	Pod       *podStatusView        `json:"pod,omitempty"`
	Container *deploy.Container     `json:"container,omitempty"`
	Scope     string                `json:"scope"`
	Healthy   bool                  `json:"healthy"`
	Health    *scope.Health         `json:"health"`
	Pipeline  *scope.PipelineStatus `json:"pipeline"`
	Installed []installedView       `json:"installed"`
	GPUSource string                `json:"gpu_source,omitempty"`
	GPUs      []gpu.GPU             `json:"gpus"`
	Errors    []string              `json:"errors,omitempty"`
}

func (a *app) statusCmd() *cobra.Command {
	var scopeURL, name string
	var rf remoteFlags
	cmd := &cobra.Command{
		Use:   "status [POD-ID | SSH-HOST-ID | ssh://user@host:port]",
		Short: "Show a deployment: pod state and cost, container, Scope health, pipeline, LoRAs vs the library, GPU",
		Long: "TARGET is a RunPod pod (its state and cost so far; Scope through RunPod's proxy; the GPU\n" +
			"over SSH, or through RunPod's gateway), an SSH host where `deploy --host` runs Scope (the\n" +
			"container through docker inspect; Scope at the host's published port; the GPU through\n" +
			"nvidia-smi), or nothing: Scope at --scope ($SCOPE_URL, default http://localhost:8000) and\n" +
			"this machine's GPU (NVML, else nvidia-smi). What cannot be read is listed under errors;\n" +
			"the exit status is 1 when Scope is not healthy.",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			target := ""
			if len(args) == 1 {
				target = args[0]
			}
			explicitScope := cmd.Flags().Changed("scope")
			v := statusView{Target: "local", Installed: []installedView{}, GPUs: []gpu.GPU{}}
			fail := func(part string, err error) {
				v.Errors = append(v.Errors, part+": "+strings.Join(strings.Fields(err.Error()), " "))
			}
			base := scopeURL
			var gpuSrc gpu.Source
			if rf.kube.selected(target) {
				return a.kubeStatus(ctx, target, rf)
			}
			if target != "" {
				// An SSH host scopectl records: read it as ssh://, with the container deploy made.
				t, err := a.hostTarget(ctx, target, &name, cmd.Flags().Changed("name"))
				if err != nil {
					return err
				}
				target = t
			}
			switch {
			case target == "":
				gpuSrc = gpu.Local(ctx)
			case strings.HasPrefix(target, "ssh://") || strings.HasPrefix(target, "ssh+pty://"):
				u, err := url.Parse(target)
				if err != nil || u.Hostname() == "" {
					return usageError("%s: want ssh://user@host:port", remote.Redact(target))
				}
				v.Target = remote.Redact(target)
				port := deploy.DefaultPort
				r, run, err := a.openRunner(ctx, target, rf)
				if err != nil {
					fail("ssh", err)
				} else {
					defer r.Close()
					if ct, err := deploy.Inspect(ctx, run, name); err != nil {
						fail("container", err)
					} else {
						v.Container = ct
						if !ct.Exists {
							fail("container", fmt.Errorf("no container %s on %s (scopectl deploy --host …)", name, r))
						} else if ct.HostPort > 0 {
							port = ct.HostPort
						}
					}
					gpuSrc = gpu.Over(run, r.String())
				}
				if !explicitScope {
					base = "http://" + net.JoinHostPort(u.Hostname(), strconv.Itoa(port))
				}
			default:
				c, p, err := a.podWithClient(ctx, target, rf)
				if err != nil {
					return err
				}
				v.Target = "pod " + p.ID
				now := time.Now()
				pv := &podStatusView{ID: p.ID, Name: p.Name, Status: p.Status, GPUType: p.GPUType, GPUCount: p.GPUCount,
					CostPerHr: p.CostPerHr, CreatedAt: p.CreatedAt, StartedAt: p.StartedAt, SSH: "gateway",
					UptimeS: p.Uptime(now).Seconds(), CostSoFar: p.CostSoFar(now)}
				if host, port, ok := p.SSH(); ok {
					pv.SSH = "root@" + net.JoinHostPort(host, strconv.Itoa(port))
				}
				pv.Limits, pv.LastStop = limitsOf(*p, nil), a.lastStop(ctx, p.ID)
				v.Pod = pv
				if !explicitScope {
					base = podScopeURL(c, p)
				}
				if p.Status != provider.StatusRunning {
					fail("gpu", fmt.Errorf("pod %s is %s: no GPU attached", p.ID, p.Status))
				} else if r, run, err := a.podRunner(ctx, c, p, rf, false); err != nil {
					fail("gpu", err)
				} else {
					defer r.Close()
					gpuSrc = gpu.Over(run, r.String())
				}
			}
			sc, err := scopeClient(base)
			if err != nil {
				return err
			}
			v.Scope = sc.Base
			if h, err := sc.Health(ctx); err != nil {
				fail("scope", fmt.Errorf("%s: %w", sc.Base, err))
			} else {
				v.Health, v.Healthy = h, h.Status == "healthy"
				if !v.Healthy {
					fail("scope", fmt.Errorf("%s reports %q", sc.Base, h.Status))
				}
				if v.Pipeline, err = sc.PipelineStatus(ctx); err != nil {
					fail("pipeline", err)
				}
				if err := a.installedVsLibrary(ctx, sc, &v); err != nil {
					fail("loras", err)
				}
			}
			if gpuSrc != nil {
				v.GPUSource = fmt.Sprint(gpuSrc)
				if gpus, err := gpuSrc.GPUs(ctx); err != nil {
					fail("gpu", err)
				} else if gpus != nil {
					v.GPUs = gpus
				}
			}
			if err := a.out(v, func(w io.Writer) { printStatus(w, &v) }); err != nil {
				return err
			}
			if !v.Healthy {
				if a.json {
					return withCode(ExitFailure, fmt.Errorf("Scope at %s is not healthy", v.Scope))
				}
				return withCode(ExitFailure, errSilent)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&scopeURL, "scope", defaultScopeURL(), "Scope's base URL ($SCOPE_URL); with a TARGET, overrides the URL derived from it")
	cmd.Flags().StringVar(&name, "name", deploy.DefaultName, "container name on an SSH host")
	rf.add(cmd)
	return cmd
}

// installedVsLibrary fills v.Installed: the LoRAs Scope lists, each matched by sha256
// against the library.
func (a *app) installedVsLibrary(ctx context.Context, c *scope.Client, v *statusView) error {
	installed, err := c.LoRAs(ctx)
	if err != nil {
		return err
	}
	byHash := map[string]store.LoRA{}
	if len(installed) > 0 {
		lib, err := a.library()
		if err != nil {
			return err
		}
		all, err := lib.Store.ListLoRAs(ctx, store.Filter{})
		if err != nil {
			return err
		}
		for _, l := range all {
			byHash[strings.ToLower(l.SHA256)] = l
		}
	}
	for _, in := range installed {
		iv := installedView{InstalledLoRA: in}
		if l, ok := byHash[strings.ToLower(in.SHA256)]; ok && in.SHA256 != "" {
			iv.InLibrary, iv.LibraryName = true, l.Name
		}
		v.Installed = append(v.Installed, iv)
	}
	return nil
}

func printStatus(w io.Writer, v *statusView) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, f string, a ...any) { fmt.Fprintf(tw, "%s:\t"+f+"\n", append([]any{k}, a...)...) }
	row("target", "%s", v.Target)
	if p := v.Pod; p != nil {
		row("pod", "%s (%s): %s, %d × %s", p.ID, p.Name, p.Status, p.GPUCount, p.GPUType)
		up := "not running"
		if p.UptimeS > 0 {
			up = "up " + (time.Duration(p.UptimeS) * time.Second).String()
		}
		row("cost", "$%.3f/h, %s, $%.2f so far", p.CostPerHr, up, p.CostSoFar)
		row("ssh", "%s", p.SSH)
		if p.Limits != nil {
			row("limits", "%s", limitsText(p.Limits))
		}
		if s := p.LastStop; s != nil && s.EndedAt != nil {
			row("last stop", "%s by %s: %s", s.EndedAt.Local().Format(time.DateTime), s.EndSource, s.EndReason)
		}
	}
	if c := v.Container; c != nil {
		if !c.Exists {
			row("container", "%s: none", c.Name)
		} else {
			s := c.Status
			if c.Status == "exited" {
				s += fmt.Sprintf(" (exit %d)", c.ExitCode)
			}
			row("container", "%s %s, image %s (%s), restarts %d", c.Name, s, c.Image, shortID(c.ImageID), c.RestartCount)
		}
	}
	row("scope", "%s", v.Scope)
	if h := v.Health; h != nil {
		up := ""
		if h.UptimeS > 0 {
			up = ", up " + (time.Duration(h.UptimeS) * time.Second).String()
		}
		row("health", "%s%s", h.Status, up)
		ver := h.Version
		if h.GitCommit != "" {
			ver += " (" + h.GitCommit + ")"
		}
		row("version", "%s", ver)
	} else {
		row("health", "unreachable")
	}
	if p := v.Pipeline; p != nil {
		s := p.Status
		if p.PipelineID != "" {
			s += " " + p.PipelineID
		}
		if p.LoadingStage != "" {
			s += ": " + p.LoadingStage
		}
		if p.Error != "" {
			s += ": " + p.Error
		}
		row("pipeline", "%s", s)
		if len(p.LoadedLoRAs) == 0 {
			row("loaded LoRAs", "none")
		}
		for i, l := range p.LoadedLoRAs {
			k := ""
			if i == 0 {
				k = "loaded LoRAs"
			}
			fmt.Fprintf(tw, "%s\t%s ×%g\n", k+":", l.Path, l.Scale)
		}
	}
	for _, g := range v.GPUs {
		row(fmt.Sprintf("gpu %d", g.Index), "%s, %d/%d MiB, %d%% util, %d°C (%s)", g.Name, g.MemoryUsedMiB, g.MemoryTotalMiB, g.UtilizationPct, g.TemperatureC, v.GPUSource)
	}
	tw.Flush()
	if v.Health != nil {
		fmt.Fprintf(w, "installed LoRAs: %d\n", len(v.Installed))
	}
	if len(v.Installed) > 0 {
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  NAME\tSIZE\tSHA256\tLIBRARY")
		for _, in := range v.Installed {
			name := in.Name
			if in.Folder != "" {
				name = in.Folder + "/" + name
			}
			sha := in.SHA256
			if len(sha) > 12 {
				sha = sha[:12]
			}
			lib := "-"
			switch {
			case in.SHA256 == "":
				sha, lib = "?", "unknown (no sha256)"
			case in.InLibrary:
				lib = "yes (" + in.LibraryName + ")"
			default:
				lib = "no"
			}
			fmt.Fprintf(tw, "  %s\t%.2f MB\t%s\t%s\n", name, in.SizeMB, sha, lib)
		}
		tw.Flush()
	}
	for _, e := range v.Errors {
		fmt.Fprintln(w, "error: "+e)
	}
}

func shortID(id string) string {
	id = strings.TrimPrefix(id, "sha256:")
	if len(id) > 12 {
		id = id[:12]
	}
	return id
}

// logsPoll is how often `logs -f` polls.
var logsPoll = 2 * time.Second

// scopeUnreachable explains a failed connection to Scope: nothing answers at that URL,
// and how to point scopectl elsewhere. Other errors pass unchanged.
func scopeUnreachable(base string, err error) error {
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "dial" {
		return err
	}
	cause := op.Err.Error()
	if errors.Is(err, syscall.ECONNREFUSED) {
		cause = "connection refused"
	}
	return fmt.Errorf("Scope is not running at %s (%s); start it there, or point scopectl elsewhere with --scope URL or SCOPE_URL, or name a pod or SSH host (scopectl logs POD-ID|ssh://user@host:port)", base, cause)
}

func (a *app) logsCmd() *cobra.Command {
	var scopeURL, name string
	var n int
	var follow bool
	var rf remoteFlags
	cmd := &cobra.Command{
		Use:   "logs [POD-ID | SSH-HOST-ID | ssh://user@host:port | k8s://CONTEXT/NAMESPACE/NAME]",
		Short: "Print the tail of a deployment's log (-f: follow)",
		Long: "With an SSH host (or ssh:// URL), the Scope container's output through `docker logs`;\n" +
			"with a RunPod pod, Scope's own log (/workspace/logs, through /api/v1/logs/tail behind\n" +
			"RunPod's proxy); with nothing, the log of the Scope at --scope ($SCOPE_URL).",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if n < 1 || n > 1000 {
				return usageError("-n %d: want 1..1000", n)
			}
			ctx := cmd.Context()
			emit := func(lines []string) error {
				if a.json {
					return a.out(map[string]any{"lines": lines}, nil)
				}
				for _, l := range lines {
					fmt.Fprintln(a.stdout, l)
				}
				return nil
			}
			base := scopeURL
			if len(args) == 1 && strings.HasPrefix(args[0], "k8s://") {
				if !cmd.Flags().Changed("name") {
					name = "scope" // the container; --name agent: the sidecar's
				}
				return a.kubeLogs(ctx, args[0], name, n, follow, emit)
			}
			if len(args) == 1 && !cmd.Flags().Changed("scope") {
				target, err := a.hostTarget(ctx, args[0], &name, cmd.Flags().Changed("name"))
				if err != nil {
					return err
				}
				if strings.HasPrefix(target, "ssh://") || strings.HasPrefix(target, "ssh+pty://") {
					r, run, err := a.openRunner(ctx, target, rf)
					if err != nil {
						return err
					}
					defer r.Close()
					return a.containerLogs(ctx, run, name, n, follow, emit)
				}
				c, p, err := a.podWithClient(ctx, target, rf)
				if err != nil {
					return err
				}
				if base = podScopeURL(c, p); base == "" {
					return fmt.Errorf("pod %s has no address for Scope's port %d", p.ID, deploy.ContainerPort)
				}
			}
			c, err := scopeClient(base)
			if err != nil {
				return err
			}
			t, err := c.LogsSince(ctx, n, 0)
			if err != nil {
				return scopeUnreachable(base, err)
			}
			if !follow {
				if a.json {
					return a.out(map[string]any{"lines": t.Lines}, nil)
				}
				return emit(t.Lines)
			}
			if err := emit(t.Lines); err != nil {
				return err
			}
			return a.followLogs(ctx, c, t, emit)
		},
	}
	f := cmd.Flags()
	f.StringVar(&scopeURL, "scope", defaultScopeURL(), "Scope's base URL ($SCOPE_URL)")
	f.StringVar(&name, "name", deploy.DefaultName, "the Scope container on an SSH host")
	f.IntVarP(&n, "lines", "n", 50, "how many lines (1..1000)")
	f.BoolVarP(&follow, "follow", "f", false, "keep printing new lines (polls every 2 s) until interrupted")
	rf.add(cmd)
	return cmd
}

// containerLogs prints the Scope container's output on an SSH host; with follow it polls
// docker every logsPoll for the lines stamped after the last one shown.
func (a *app) containerLogs(ctx context.Context, run remote.Runner, name string, n int, follow bool, emit func([]string) error) error {
	var last time.Time
	show := func(ls []deploy.LogLine) error {
		text := make([]string, 0, len(ls))
		for _, l := range ls {
			text = append(text, l.Text)
			if l.Time.After(last) {
				last = l.Time
			}
		}
		return emit(text)
	}
	ls, err := deploy.Logs(ctx, run, name, n, time.Time{})
	if err != nil {
		return err
	}
	if err := show(ls); err != nil || !follow {
		return err
	}
	tick := time.NewTicker(logsPoll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		since := last
		if since.IsZero() {
			since = time.Now().Add(-logsPoll)
		}
		ls, err := deploy.Logs(ctx, run, name, 1000, since)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if len(ls) > 0 {
			if err := show(ls); err != nil {
				return err
			}
		}
	}
}

// followLogs polls the log tail every logsPoll until ctx ends. With an
// offset (Scope supports since_offset) it asks only for new bytes; without,
// it prints the lines after the longest overlap with the previous tail.
func (a *app) followLogs(ctx context.Context, c *scope.Client, prev *scope.LogTail, emit func([]string) error) error {
	last := prev.Lines
	offset, useOffset := prev.Offset, prev.HasOffset
	tick := time.NewTicker(logsPoll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		var t *scope.LogTail
		var err error
		if useOffset {
			t, err = c.LogsSince(ctx, 1000, offset)
		} else {
			t, err = c.LogsSince(ctx, 1000, 0)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			fmt.Fprintln(a.stderr, "scopectl: "+err.Error()) // transient: keep polling
			continue
		}
		var fresh []string
		switch {
		case useOffset && t.HasOffset:
			if t.Offset < offset { // the log was rotated (a new file): start over
				t, err = c.LogsSince(ctx, 1000, 0)
				if err != nil {
					continue
				}
			}
			fresh, offset = t.Lines, t.Offset
		default:
			useOffset = false
			fresh = newLines(last, t.Lines)
			last = t.Lines
		}
		if len(fresh) > 0 {
			if err := emit(fresh); err != nil {
				return err
			}
		}
	}
}

// newLines returns the lines of cur after its longest prefix that is a
// suffix of prev (all of cur if they do not overlap).
func newLines(prev, cur []string) []string {
	for k := min(len(prev), len(cur)); k > 0; k-- {
		match := true
		for i := range k {
			if prev[len(prev)-k+i] != cur[i] {
				match = false
				break
			}
		}
		if match {
			return cur[k:]
		}
	}
	return cur
}
