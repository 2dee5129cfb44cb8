// Package ledger keeps what every pod scopectl sees has cost: one row per run (a
// start to its stop, at one price per hour) in the store, written from what the
// provider's API says (lastStartedAt, status, costPerHr), from the stops scopectl
// makes itself (pod stop, pod watch) and from the guard's own stops (stops.jsonl on
// the pod). Rows are only added and completed, never deleted: a row's end, once
// known exactly (scopectl's or the guard's stop), is not overwritten by a guess.
//
// A Kubernetes deployment's rows (provider "kubernetes", pod id k8s://CONTEXT/NAMESPACE/NAME)
// have no price: hours only, from when scopectl started it to a stop, the guard's read
// off the StatefulSet at its own time.
//
// Where a stop was not seen (the pod was stopped from RunPod's console, by a guard
// whose record has not been read yet, or terminated), the run ends when it was last
// seen running: a lower bound, said so in the row (end_source "observed").
package ledger

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/store"
)

// Where a run's end came from.
const (
	EndScopectl = "scopectl" // `pod stop`, `pod rm`, a failed deploy
	EndWatch    = "watch"    // `pod watch`
	EndGuard    = "guard"    // the guard on the pod
	EndObserved = "observed" // seen stopped or gone: ended at most when last seen running
	EndPrice    = "price"    // the price per hour changed: the next row continues the run
)

// RunPod's published storage rates (USD per GB-month): a pod's volume and container
// disk while it runs, a stopped pod's volume, a network volume under / over 1 TB.
const (
	VolumeRunningPerGBMonth = 0.10
	VolumeStoppedPerGBMonth = 0.20
	NetworkPerGBMonth       = 0.07
	NetworkPerGBMonthOver1T = 0.05
	hoursPerMonth           = 730
)

// openRuns is prov's open rows by pod (or volume) id, the newest where there are
// several; in, when set, keeps only the pods it says are its own.
func openRuns(ctx context.Context, ls store.LedgerStore, prov string, in func(podID string) bool) (map[string]*store.Run, error) {
	open, err := ls.OpenRuns(ctx, prov)
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	openBy := map[string]*store.Run{}
	for i := range open {
		r := &open[i]
		if in != nil && !in(r.PodID) {
			continue
		}
		if prev := openBy[r.PodID]; prev == nil || r.StartedAt.After(prev.StartedAt) {
			openBy[r.PodID] = r
		}
	}
	return openBy, nil
}

// Observe brings the ledger up to date with the pods the provider lists now: a
// running pod's run is opened (or its last-seen time moved), a run whose pod is no
// longer running is closed at its last-seen time, and a price change ends one row and
// starts the next. recs names the pods scopectl created (by pod id), for their names.
// notes are one line each (clock skew, a pod gone behind scopectl's back).
func Observe(ctx context.Context, ls store.LedgerStore, prov string, pods []provider.Pod, recs map[string]store.Pod, now time.Time) (notes []string, err error) {
	return ObserveIn(ctx, ls, prov, nil, pods, recs, now)
}

// ObserveIn is Observe for a listing that covers only part of prov's pods (one
// namespace of a Kubernetes cluster, or one deployment): in says which pod ids the
// listing covers (nil: all), and open runs of others are left as they are rather
// than taken for gone.
func ObserveIn(ctx context.Context, ls store.LedgerStore, prov string, in func(podID string) bool, pods []provider.Pod, recs map[string]store.Pod, now time.Time) (notes []string, err error) {
	openBy, err := openRuns(ctx, ls, prov, in)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var errs []error
	for _, p := range pods {
		seen[p.ID] = true
		cur := openBy[p.ID]
		// CREATED: asked to run, booting: RunPod bills from the start.
		if p.Status != provider.StatusRunning && p.Status != provider.StatusCreated {
			if cur != nil {
				errs = append(errs, close(ctx, ls, cur, cur.SeenAt, EndObserved, "seen "+p.Status+" at "+now.UTC().Format(time.RFC3339)))
			}
			continue
		}
		start := p.StartedAt
		if start.IsZero() {
			start = p.CreatedAt
		}
		if start.IsZero() {
			start = now
		}
		// A start ahead of this clock is counted from now, said once (when its run
		// opens); later sightings continue that run rather than take the clamped start
		// for a restart (serve observes every few seconds).
		skewed := start.After(now.Add(time.Minute))
		if skewed {
			if cur == nil {
				notes = append(notes, fmt.Sprintf("pod %s: RunPod says it started at %s, %s ahead of this machine's clock: counted from now",
					p.ID, start.UTC().Format(time.RFC3339), start.Sub(now).Round(time.Second)))
			}
			start = now
		}
		rec := recs[p.ID]
		run := store.Run{Provider: prov, PodID: p.ID, StartedAt: start.UTC(), RequestID: rec.RequestID, Name: nameOf(p, rec),
			GPUType: p.GPUType, CostPerHr: p.CostPerHr, VolumeGB: p.VolumeGB, NetworkVolumeID: p.NetworkVolumeID, SeenAt: now.UTC()}
		switch {
		case cur == nil:
			// A start the provider gives as before the pod's last recorded stop (a
			// Kubernetes deployment restarted without a start time on it) counts from
			// that stop: runs of one pod never overlap.
			start, err := afterLastEnd(ctx, ls, prov, p.ID, run.StartedAt)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			run.StartedAt = start
			if _, err := ls.AddRun(ctx, run); err != nil {
				errs = append(errs, err)
			}
		case !skewed && cur.StartedAt.Before(start.UTC().Add(-time.Second)) && !cur.StartedAt.Equal(start.UTC()) && cur.EndSource == "" && start.After(cur.SeenAt):
			// Restarted since last seen: the old run ended unseen.
			errs = append(errs, close(ctx, ls, cur, cur.SeenAt, EndObserved, "restarted at "+start.UTC().Format(time.RFC3339)))
			if _, err := ls.AddRun(ctx, run); err != nil {
				errs = append(errs, err)
			}
		case math.Abs(cur.CostPerHr-p.CostPerHr) > 1e-9 && p.CostPerHr > 0:
			notes = append(notes, fmt.Sprintf("pod %s: price changed from $%.3f/h to $%.3f/h mid-run: the ledger splits the run at %s",
				p.ID, cur.CostPerHr, p.CostPerHr, now.UTC().Format(time.RFC3339)))
			cur.SeenAt = now.UTC()
			errs = append(errs, close(ctx, ls, cur, now.UTC(), EndPrice, fmt.Sprintf("price $%.3f/h → $%.3f/h", cur.CostPerHr, p.CostPerHr)))
			run.StartedAt = now.UTC()
			if _, err := ls.AddRun(ctx, run); err != nil {
				errs = append(errs, err)
			}
		default:
			cur.SeenAt = now.UTC()
			if cur.Name == "" {
				cur.Name = run.Name
			}
			if cur.RequestID == "" {
				cur.RequestID = run.RequestID
			}
			errs = append(errs, ls.UpdateRun(ctx, *cur))
		}
	}
	for id, cur := range openBy {
		if !seen[id] {
			notes = append(notes, fmt.Sprintf("pod %s is gone (terminated outside scopectl?): its run ends when last seen running, %s",
				id, cur.SeenAt.UTC().Format(time.RFC3339)))
			errs = append(errs, close(ctx, ls, cur, cur.SeenAt, EndObserved, "pod gone"))
		}
	}
	return notes, errors.Join(errs...)
}

func nameOf(p provider.Pod, rec store.Pod) string {
	if rec.Name != "" {
		return rec.Name
	}
	return p.Name
}

func close(ctx context.Context, ls store.LedgerStore, r *store.Run, at time.Time, source, reason string) error {
	if at.Before(r.StartedAt) {
		at = r.StartedAt
	}
	at = at.UTC()
	r.EndedAt, r.EndSource, r.EndReason = &at, source, reason
	return ls.UpdateRun(ctx, *r)
}

// Stopped records a stop scopectl (or a guard) made of pod id at `at`: its open run,
// or the run that covers `at` (a guard's stop read later), ends then. idle is the idle
// time before an idle stop. With no run known, one is added from the pod as it was
// (start and price), so that no stop is lost.
func Stopped(ctx context.Context, ls store.LedgerStore, prov, podID string, at time.Time, source, reason string, idle time.Duration, p *provider.Pod) error {
	runs, err := ls.Runs(ctx, at.Add(-time.Second))
	if err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	var best *store.Run
	for i := range runs {
		r := &runs[i]
		if r.Provider != prov || r.PodID != podID || !r.StartedAt.Before(at) {
			continue // started at or after the stop: a later run
		}
		if r.EndedAt != nil && (r.EndSource == EndScopectl || r.EndSource == EndWatch || r.EndSource == EndGuard || r.EndSource == EndPrice) {
			continue // an exact end is kept
		}
		if best == nil || r.StartedAt.After(best.StartedAt) {
			best = r
		}
	}
	if best == nil {
		if p == nil || p.StartedAt.IsZero() || p.StartedAt.After(at) {
			return nil
		}
		// Not before the pod's last recorded end: a stop read again (a guard's stop
		// still on a Kubernetes StatefulSet) finds its run ended at it and adds nothing.
		start, err := afterLastEnd(ctx, ls, prov, podID, p.StartedAt.UTC())
		if err != nil {
			return err
		}
		if !start.Before(at) {
			return nil
		}
		best = &store.Run{Provider: prov, PodID: podID, StartedAt: start, Name: p.Name, GPUType: p.GPUType,
			CostPerHr: p.CostPerHr, VolumeGB: p.VolumeGB, NetworkVolumeID: p.NetworkVolumeID, SeenAt: at.UTC()}
		if _, err := ls.AddRun(ctx, *best); err != nil {
			return fmt.Errorf("ledger: %w", err)
		}
	}
	if at.After(best.SeenAt) {
		best.SeenAt = at.UTC()
	}
	best.IdleSeconds = idle.Seconds()
	if err := close(ctx, ls, best, at, source, reason); err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	return nil
}

// afterLastEnd is start, or the end of pod id's latest run ended after it.
func afterLastEnd(ctx context.Context, ls store.LedgerStore, prov, id string, start time.Time) (time.Time, error) {
	runs, err := ls.Runs(ctx, start)
	if err != nil {
		return start, fmt.Errorf("ledger: %w", err)
	}
	for _, r := range runs {
		if r.Provider == prov && r.PodID == id && r.EndedAt != nil && r.EndedAt.After(start) {
			start = r.EndedAt.UTC()
		}
	}
	return start, nil
}
