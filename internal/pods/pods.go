// Package pods is the pods service: RunPod's pods reconciled with the pods scopectl
// recorded, with the limits that apply to each. The CLI's `pod ls` and the web
// server's /api/v1/pods show the same View.
package pods

import (
	"context"
	"time"

	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/store"
)

// View is a pod as the provider and the store see it together (the fields of
// `scopectl pod ls --json`).
type View struct {
	provider.Pod
	Recorded bool             `json:"recorded"` // scopectl created it
	Limits   *provider.Limits `json:"limits,omitempty"`
	Note     string           `json:"note,omitempty"`
}

// Lister is the part of a provider Reconcile needs.
type Lister interface {
	Name() string
	List(ctx context.Context) ([]provider.Pod, error)
}

// CreateGrace is how long a record still "creating" is not taken for terminated
// when the provider does not list its pod: a create may still be in flight.
const CreateGrace = 5 * time.Minute

// Reconcile lists the provider's pods, matches them to the store's records (by pod id,
// else by the request id a pod carries as its tag, which finds a pod whose create was
// interrupted), records what it saw, and marks records whose pod is gone as terminated.
func Reconcile(ctx context.Context, c Lister, ps store.PodStore) ([]View, error) {
	pods, err := c.List(ctx)
	if err != nil {
		return nil, err
	}
	all, err := ps.ListPods(ctx, true)
	if err != nil {
		return nil, err
	}
	var recs []store.Pod
	for _, r := range all {
		if r.Provider == c.Name() {
			recs = append(recs, r)
		}
	}
	byID, byTag := map[string]*store.Pod{}, map[string]*store.Pod{}
	for i := range recs {
		byTag[recs[i].RequestID] = &recs[i]
		if recs[i].ID != "" {
			byID[recs[i].ID] = &recs[i]
		}
	}
	now := time.Now().UTC()
	seen := map[string]bool{}
	views := []View{}
	for _, p := range pods {
		v := View{Pod: p}
		rec := byID[p.ID]
		if rec == nil && p.Tag != "" {
			rec = byTag[p.Tag]
			if rec != nil {
				v.Note = "found after an interrupted create"
			}
		}
		if rec != nil {
			v.Recorded = true
			seen[rec.RequestID] = true
			rec.ID, rec.LastSeenStatus, rec.LastSeenAt, rec.CostPerHr = p.ID, p.Status, &now, p.CostPerHr
			if err := ps.PutPod(ctx, *rec); err != nil {
				return nil, err
			}
		} else {
			v.Note = "not created by scopectl"
		}
		v.Limits = LimitsOf(p, rec)
		views = append(views, v)
	}
	for i := range recs {
		r := &recs[i]
		if seen[r.RequestID] {
			continue
		}
		if r.LastSeenStatus == provider.StatusCreating && time.Since(r.CreatedAt) < CreateGrace {
			continue
		}
		r.TerminatedAt, r.LastSeenStatus = &now, provider.StatusTerminated
		if err := ps.PutPod(ctx, *r); err != nil {
			return nil, err
		}
	}
	return views, nil
}

// LimitsOf is the idle and max-hours limits of p: those it carries in its environment
// (the guard on the pod enforces them), else those recorded when scopectl created it.
func LimitsOf(p provider.Pod, rec *store.Pod) *provider.Limits {
	if l, ok := provider.LimitsFromEnv(p.Env); ok {
		return &l
	}
	if rec != nil {
		return &provider.Limits{IdleStop: rec.IdleStop, MaxHours: rec.MaxHours}
	}
	return nil
}
