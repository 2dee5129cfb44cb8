package cli

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/daydreamlive/scopectl/internal/ledger"
	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/provider/runpod"
	"github.com/daydreamlive/scopectl/internal/store"
)

// ledgerStore is the store's cost ledger.
func (a *app) ledgerStore() (store.LedgerStore, error) {
	ps, err := a.podStore()
	if err != nil {
		return nil, err
	}
	ls, ok := ps.(store.LedgerStore)
	if !ok {
		return nil, fmt.Errorf("this store keeps no cost ledger")
	}
	return ls, nil
}

// observeLedger brings the ledger up to date with pods just listed; what it notices
// (clock skew, a pod gone behind scopectl's back, a price change) is one warning each.
// A ledger that cannot be written is a warning too: listing pods goes on.
func (a *app) observeLedger(ctx context.Context, prov string, ps store.PodStore, views []podView) {
	ls, ok := ps.(store.LedgerStore)
	if !ok {
		return
	}
	recs := map[string]store.Pod{}
	if all, err := ps.ListPods(ctx, false); err == nil {
		for _, r := range all {
			if r.ID != "" {
				recs[r.ID] = r
			}
		}
	}
	pods := make([]provider.Pod, 0, len(views))
	for _, v := range views {
		pods = append(pods, v.Pod)
	}
	notes, err := ledger.Observe(ctx, ls, prov, pods, recs, time.Now())
	for _, n := range notes {
		a.warn(n)
	}
	if err != nil {
		a.warn("cost ledger not updated: " + oneLineErr(err))
	}
}

// observeVolumes brings the ledger's network-volume rows up to date with RunPod's
// network volumes (billed for as long as they exist); a failure is a warning.
func (a *app) observeVolumes(ctx context.Context, c *runpod.Client, ps store.PodStore) {
	ls, ok := ps.(store.LedgerStore)
	if !ok {
		return
	}
	vols, err := c.NetworkVolumes(ctx)
	if err != nil {
		a.warn("network volumes not read (their storage is not in the ledger now): " + oneLineErr(err))
		return
	}
	in := make([]ledger.Volume, len(vols))
	for i, v := range vols {
		in[i] = ledger.Volume{ID: v.ID, Name: v.Name, SizeGB: v.SizeGB}
	}
	notes, err := ledger.ObserveVolumes(ctx, ls, c.Name(), in, time.Now())
	for _, n := range notes {
		a.warn(n)
	}
	if err != nil {
		a.warn("cost ledger not updated: " + oneLineErr(err))
	}
}

func oneLineErr(err error) string { return strings.Join(strings.Fields(err.Error()), " ") }

// recordStop writes a stop scopectl made into the ledger (pod stop, pod rm).
func (a *app) recordStop(ctx context.Context, prov, id, source, reason string) {
	ls, err := a.ledgerStore()
	if err != nil {
		return
	}
	if err := ledger.Stopped(ctx, ls, prov, id, time.Now(), source, reason, 0, nil); err != nil {
		a.warn("cost ledger: the stop of " + id + " was not recorded: " + oneLineErr(err))
	}
}

// parseSince reads --since: "7d", "36h", "2026-03-01" or RFC 3339.
func parseSince(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	if n, ok := strings.CutSuffix(s, "d"); ok {
		if d, err := strconv.ParseFloat(n, 64); err == nil && d >= 0 {
			return now.Add(-time.Duration(d * 24 * float64(time.Hour))), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	for _, layout := range []string{"2006-01-02", time.RFC3339} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, usageError("--since %q: want 7d, 36h, 2026-03-01 or an RFC 3339 time", s)
}

// parseBudget reads a budget: "$20/day", "20/day", "20".
func parseBudget(s string) (float64, error) {
	v := strings.TrimSpace(s)
	if v == "" {
		return 0, nil
	}
	v = strings.TrimSuffix(strings.TrimSuffix(strings.TrimPrefix(v, "$"), "/day"), "/d")
	f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil || f < 0 {
		return 0, usageError("budget %q: want a dollar amount per day, e.g. $20/day", s)
	}
	return f, nil
}

// CheckBudget is the budget gate for anything that rents a pod (pod create, deploy
// --new, train run): with a budget (flag, else budget_per_day), it warns when the
// day's spend in the ledger plus rate × maxHours (0: the rest of the day) would pass
// it, and with strict refuses (exit 3). flagValue is the --budget flag ("" unset).
func (a *app) CheckBudget(ctx context.Context, flagValue string, strict bool, rate, maxHours float64) error {
	raw := flagValue
	if raw == "" {
		raw = a.cfg.Budget
	}
	budget, err := parseBudget(raw)
	if err != nil || budget <= 0 {
		return err
	}
	ls, err := a.ledgerStore()
	if err != nil {
		return err
	}
	now := time.Now()
	day := time.Date(now.UTC().Year(), now.UTC().Month(), now.UTC().Day(), 0, 0, 0, 0, time.UTC)
	runs, err := ls.Runs(ctx, day)
	if err != nil {
		return err
	}
	msg, over := ledger.BudgetCheck(ledger.SpentOn(runs, now), budget, rate, maxHours, now)
	if !over {
		return nil
	}
	if strict {
		return withCode(ExitRefused, fmt.Errorf("%s: refused (--strict)", msg))
	}
	a.warn(msg)
	return nil
}

// budgetFlags are --budget and --strict.
type budgetFlags struct {
	budget string
	strict bool
}

func (b *budgetFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&b.budget, "budget", "", "daily budget, e.g. $20/day (default: budget_per_day); warn when this pod could pass it")
	cmd.Flags().BoolVar(&b.strict, "strict", false, "refuse, rather than warn, when the budget would be passed")
}

func (a *app) costCmd() *cobra.Command {
	var since string
	var offline bool
	cmd := &cobra.Command{
		Use:   "cost [--since 7d] [--offline]",
		Short: "$ spent per pod, per deploy, per training job, per day and month, from the cost ledger",
		Long: "Every start and stop of every pod scopectl sees is kept in the ledger (from RunPod's\n" +
			"lastStartedAt, status and cost per hour, from scopectl's own stops and the guards'). GPU\n" +
			"time at each run's price (a price change splits the run), the pod volume at RunPod's rates\n" +
			"($0.10/GB-month running, $0.20 stopped), network volumes as their own lines for as long as\n" +
			"they exist ($0.07/GB-month for the first TB, $0.05 beyond; counted from when scopectl first\n" +
			"listed them), and what idle time before idle stops cost. A run\n" +
			"whose stop was not seen counts until it was last seen running (a lower bound; said so).\n" +
			"RunPod's own billing is the reference. Kubernetes deployments count hours only (no price),\n" +
			"their stops (the guard's too) read again from the namespaces of runs still open.\n" +
			"--offline reads the ledger without asking RunPod or the clusters.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			now := time.Now()
			from, err := parseSince(since, now)
			if err != nil {
				return err
			}
			live := map[string]bool{}
			if !offline && a.cfg.RunPodKey.IsSet() {
				views, err := a.reconciled(ctx)
				if err != nil {
					return err
				}
				for _, v := range views {
					live[v.ID] = true
				}
			} else if !offline {
				a.warn("RunPod not asked: RUNPOD_API_KEY is not set; the ledger as last seen")
			}
			if !offline {
				a.kubeObserveOpen(ctx) // Kubernetes deployments it has open runs of: a guard's stop since, at its time
			}
			ls, err := a.ledgerStore()
			if err != nil {
				return err
			}
			runs, err := ls.Runs(ctx, from)
			if err != nil {
				return err
			}
			rep := ledger.Build(runs, from, now, live)
			for _, n := range rep.Notes {
				a.warn(n)
			}
			return a.out(rep, func(w io.Writer) { printCost(w, rep) })
		},
	}
	cmd.Flags().StringVar(&since, "since", "", "only from then: 7d, 36h, 2026-03-01")
	cmd.Flags().BoolVar(&offline, "offline", false, "do not ask RunPod or Kubernetes; report the ledger as it is")
	return cmd
}

func printCost(w io.Writer, rep ledger.Report) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	section := func(title string, ls []ledger.Line) {
		if len(ls) == 0 {
			return
		}
		fmt.Fprintf(tw, "%s\tHOURS\tGPU $\tIDLE $\tSTORAGE $\t$\n", title)
		for _, l := range ls {
			run := ""
			if l.Name != "" {
				run = " (" + l.Name + ")"
			}
			if l.Running && title != "VOLUME" {
				run += " (running)"
			}
			fmt.Fprintf(tw, "%s%s\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\n", l.Key, run, l.Hours, l.GPUDollars, l.IdleDollars, l.Storage, l.Dollars)
		}
		fmt.Fprintln(tw, "\t\t\t\t\t")
	}
	section("POD", rep.Pods)
	section("DEPLOY", rep.Deploys)
	section("JOB", rep.Jobs)
	section("VOLUME", rep.Volumes)
	section("DAY", rep.Days)
	section("MONTH", rep.Months)
	t := rep.Total
	fmt.Fprintf(tw, "TOTAL\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\n", t.Hours, t.GPUDollars, t.IdleDollars, t.Storage, t.Dollars)
	tw.Flush()
}

// budgetGate checks the budget before renting the pod spec describes, at the GPU's
// listed price (the --max-price when the price cannot be read).
func (a *app) budgetGate(ctx context.Context, c *runpod.Client, bf budgetFlags, spec provider.CreateSpec, maxHours float64) error {
	if bf.budget == "" && a.cfg.Budget == "" {
		if bf.strict {
			return usageError("--strict needs a budget: --budget $N/day or budget_per_day")
		}
		return nil
	}
	rate := spec.MaxPrice
	if ts, err := c.GPUTypes(ctx); err == nil {
		for _, t := range ts {
			if t.ID == spec.GPUType {
				p := t.SecurePrice
				if strings.EqualFold(spec.Cloud, "community") {
					p = t.CommunityPrice
				}
				rate = p * float64(max(spec.GPUCount, 1))
			}
		}
	} else if rate == 0 {
		a.warn("budget not checked: the GPU's price could not be read (" + oneLineErr(err) + ")")
		return nil
	}
	return a.CheckBudget(ctx, bf.budget, bf.strict, rate, maxHours)
}
