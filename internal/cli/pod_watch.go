package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/daydreamlive/scopectl/internal/deploy"
	"github.com/daydreamlive/scopectl/internal/gpu"
	"github.com/daydreamlive/scopectl/internal/ledger"
	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/store"
	"github.com/daydreamlive/scopectl/internal/watch"
)

func (a *app) podWatch() *cobra.Command {
	var every time.Duration
	var once, noSSH bool
	var rf remoteFlags
	cmd := &cobra.Command{
		Use:   "watch [--every 1m] [--once]",
		Short: "Stop pods scopectl created that sat idle past their --idle-stop, or ran past --max-hours",
		Long: "A pod is busy while Scope loads a pipeline or serves a session (its HTTP API through the\n" +
			"RunPod proxy) or while a GPU is in use (nvidia-smi over SSH). Probe failures keep a pod\n" +
			"running twice, then count as idle, so an unreachable pod cannot run forever. Pods scopectl\n" +
			"did not create are never touched.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ps, err := a.runpodStore()
			if err != nil {
				return err
			}
			scope := watch.ScopeProbe{URL: func(p provider.Pod) string { return c.ProxyURL(p.ID, deploy.ContainerPort) }}
			w := &watch.Watcher{Provider: c, ProviderName: c.Name(), Store: ps, Probes: []watch.Probe{scope}}
			if ls, ok := ps.(store.LedgerStore); ok {
				w.OnStop = func(rec store.Pod, p provider.Pod, at time.Time, reason string, idle time.Duration) {
					if err := ledger.Stopped(cmd.Context(), ls, c.Name(), p.ID, at, ledger.EndWatch, reason, idle, &p); err != nil {
						a.warn("cost ledger: the stop of " + p.ID + " was not recorded: " + oneLineErr(err))
					}
				}
			}
			if !noSSH {
				w.Probes = append(w.Probes, watch.GPUProbe{Source: func(ctx context.Context, p provider.Pod) (gpu.Source, error) {
					u, ok := p.SSHURL()
					if !ok {
						return nil, fmt.Errorf("pod %s has no public SSH port", p.ID)
					}
					r, err := a.openRemote(ctx, u, rf)
					if err != nil {
						return nil, err
					}
					run := r.(remote.Runner)
					return gpu.SMI{Run: func(ctx context.Context, args []string) ([]byte, error) {
						defer r.Close()
						out, code, err := run.Run(ctx, "nvidia-smi "+strings.Join(args, " "))
						if err == nil && code != 0 {
							err = fmt.Errorf("nvidia-smi exit status %d", code)
						}
						return []byte(out), err
					}}, nil
				}})
			}
			print := func(ds []watch.Decision) {
				if err := a.out(ds, func(wr io.Writer) {
					for _, d := range ds {
						if d.Action != "none" || d.Reason != "" {
							fmt.Fprintf(wr, "%s %s %s: %s (idle %s)\n", time.Now().Format(time.TimeOnly), d.PodID, d.Action, d.Reason, d.IdleFor.Round(time.Second))
						}
					}
				}); err != nil {
					return
				}
			}
			if once {
				ds, err := w.Tick(cmd.Context())
				print(ds)
				return err
			}
			w.OnTick = func(ds []watch.Decision, err error) {
				if err != nil {
					fmt.Fprintln(a.stderr, "scopectl: pod watch: "+err.Error())
				}
				print(ds)
			}
			err = w.Run(cmd.Context(), every)
			if cmd.Context().Err() != nil {
				return nil // Ctrl-C
			}
			return err
		},
	}
	cmd.Flags().DurationVar(&every, "every", time.Minute, "how often to check")
	cmd.Flags().BoolVar(&once, "once", false, "check once and exit (for cron or systemd timers)")
	cmd.Flags().BoolVar(&noSSH, "no-ssh", false, "do not read GPU utilisation over SSH (Scope's API only)")
	rf.add(cmd)
	return cmd
}
