package cli

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// podSSH opens an interactive shell on a pod: direct TCP to its public IP and mapped
// port, checked against known_hosts by OpenSSH itself.
func (a *app) podSSH() *cobra.Command {
	return &cobra.Command{
		Use:   "ssh ID",
		Short: "Open a shell on a pod (direct SSH to its public IP and mapped port)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := a.fetchPod(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			host, port, ok := p.SSH()
			if !ok {
				return fmt.Errorf("pod %s has no public IP with port 22 mapped (status %s); use RunPod's gateway (ssh -tt POD-ID@ssh.runpod.io), or for transfers ssh+pty://", p.ID, p.Status)
			}
			ssh, err := exec.LookPath("ssh")
			if err != nil {
				return fmt.Errorf("no ssh client on PATH; connect to root@%s port %d", host, port)
			}
			sc := exec.CommandContext(cmd.Context(), ssh, "-p", strconv.Itoa(port), "root@"+host)
			sc.Stdin, sc.Stdout, sc.Stderr = os.Stdin, os.Stdout, os.Stderr
			return sc.Run()
		},
	}
}

// podCost is one pod's spend estimate.
type podCost struct {
	ID        string  `json:"id"`
	Name      string  `json:"name"`
	Status    string  `json:"status"`
	CostPerHr float64 `json:"cost_per_hr"`
	Hours     float64 `json:"hours"`
	Dollars   float64 `json:"dollars"`
}

func (a *app) costCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "cost",
		Short: "Estimated $ per pod scopectl created: hours since creation × the API's cost per hour",
		Long: "An upper bound: hours are counted from creation until termination (or now) at the pod's\n" +
			"GPU rate, including time it spent stopped. RunPod's own billing is the reference.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.runpod()
			if err != nil {
				return err
			}
			ps, err := a.podStore()
			if err != nil {
				return err
			}
			if _, err := reconcile(cmd.Context(), c, ps); err != nil {
				return err
			}
			recs, err := ps.ListPods(cmd.Context(), false)
			if err != nil {
				return err
			}
			out := []podCost{}
			var total float64
			for _, r := range recs {
				if r.ID == "" {
					continue
				}
				end := time.Now()
				if r.TerminatedAt != nil {
					end = *r.TerminatedAt
				}
				h := end.Sub(r.CreatedAt).Hours()
				pc := podCost{ID: r.ID, Name: r.Name, Status: r.LastSeenStatus, CostPerHr: r.CostPerHr, Hours: h, Dollars: h * r.CostPerHr}
				total += pc.Dollars
				out = append(out, pc)
			}
			return a.out(map[string]any{"pods": out, "total_dollars": total}, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tNAME\tSTATUS\t$/H\tHOURS\t$")
				for _, p := range out {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%.3f\t%.2f\t%.2f\n", p.ID, p.Name, p.Status, p.CostPerHr, p.Hours, p.Dollars)
				}
				fmt.Fprintf(tw, "\t\t\t\ttotal\t%.2f\n", total)
				tw.Flush()
			})
		},
	}
}
