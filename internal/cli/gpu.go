package cli

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/daydreamlive/scopectl/internal/gpu"
	"github.com/daydreamlive/scopectl/internal/remote"
)

func (a *app) gpuCmd() *cobra.Command {
	var host string
	var rf remoteFlags
	cmd := &cobra.Command{
		Use:   "gpu [--host ssh://user@host:port]",
		Short: "Show GPU name, memory, utilisation, temperature and power (NVML locally, nvidia-smi over SSH)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			var src gpu.Source
			if host == "" {
				src = gpu.Local(ctx)
			} else {
				r, err := a.openRemote(ctx, host, rf)
				if err != nil {
					return err
				}
				defer r.Close()
				run, ok := r.(remote.Runner)
				if !ok {
					return usageError("--host %s: needs an ssh:// or ssh+pty:// remote that can run commands", r)
				}
				src = gpu.Over(run, r.String())
			}
			gpus, err := src.GPUs(ctx)
			if err != nil {
				return err
			}
			if gpus == nil {
				gpus = []gpu.GPU{}
			}
			return a.out(map[string]any{"source": fmt.Sprint(src), "gpus": gpus}, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "GPU\tNAME\tMEMORY\tUTIL\tTEMP\tPOWER")
				for _, g := range gpus {
					fmt.Fprintf(tw, "%d\t%s\t%d/%d MiB\t%d%%\t%d°C\t%.0f/%.0f W\n", g.Index, g.Name, g.MemoryUsedMiB, g.MemoryTotalMiB, g.UtilizationPct, g.TemperatureC, g.PowerW, g.PowerLimitW)
				}
				tw.Flush()
				if len(gpus) == 0 {
					fmt.Fprintln(w, "no GPUs")
				}
			})
		},
	}
	cmd.Flags().StringVar(&host, "host", "", "read the GPUs of this SSH host instead of this machine")
	rf.add(cmd)
	return cmd
}
