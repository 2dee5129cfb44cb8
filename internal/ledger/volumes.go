package ledger

// Network volumes cost money for as long as they exist, pod or no pod: RunPod bills
// them by size per month, $0.07/GB for the first TB and $0.05/GB beyond. The ledger
// keeps a volume's life as rows of the same table as pods' runs, under the provider
// name VolumeProvider(prov): one row per size (a resize ends one row and starts the
// next), opened when scopectl first sees the volume (RunPod gives no creation time:
// what came before is not counted) and ended, when it is no longer listed, at its
// last sighting ("observed").

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/daydreamlive/scopectl/internal/store"
)

// Volume is a network volume as the provider lists it.
type Volume struct {
	ID     string
	Name   string
	SizeGB int
}

// VolumeProvider is the ledger's provider name for prov's network volumes.
func VolumeProvider(prov string) string { return prov + volumeSuffix }

const volumeSuffix = ":volume"

// IsVolume says whether a ledger row is a network volume's (not a pod's run).
func IsVolume(r store.Run) bool { return strings.HasSuffix(r.Provider, volumeSuffix) }

// NetworkMonthly is what a network volume of sizeGB costs per month at RunPod's
// published rates: NetworkPerGBMonth for the first TB (1000 GB), NetworkPerGBMonthOver1T
// for every GB beyond.
func NetworkMonthly(sizeGB int) float64 {
	first := min(sizeGB, 1000)
	return float64(first)*NetworkPerGBMonth + float64(max(sizeGB-1000, 0))*NetworkPerGBMonthOver1T
}

// ObserveVolumes brings the volume rows of prov up to date with the volumes listed now.
func ObserveVolumes(ctx context.Context, ls store.LedgerStore, prov string, vols []Volume, now time.Time) (notes []string, err error) {
	vp := VolumeProvider(prov)
	openBy, err := openRuns(ctx, ls, vp, nil)
	if err != nil {
		return nil, err
	}
	now = now.UTC()
	seen := map[string]bool{}
	var errs []error
	for _, v := range vols {
		if v.ID == "" || seen[v.ID] {
			continue
		}
		seen[v.ID] = true
		row := store.Run{Provider: vp, PodID: v.ID, StartedAt: now, Name: v.Name, VolumeGB: v.SizeGB, NetworkVolumeID: v.ID, SeenAt: now}
		switch cur := openBy[v.ID]; {
		case cur == nil:
			if _, err := ls.AddRun(ctx, row); err != nil {
				errs = append(errs, err)
			}
		case cur.VolumeGB != v.SizeGB:
			notes = append(notes, fmt.Sprintf("network volume %s resized from %d GB to %d GB: the ledger counts the new size from %s",
				v.ID, cur.VolumeGB, v.SizeGB, now.Format(time.RFC3339)))
			cur.SeenAt = now
			errs = append(errs, close(ctx, ls, cur, now, EndPrice, fmt.Sprintf("size %d GB → %d GB", cur.VolumeGB, v.SizeGB)))
			if _, err := ls.AddRun(ctx, row); err != nil {
				errs = append(errs, err)
			}
		default:
			cur.SeenAt = now
			if v.Name != "" {
				cur.Name = v.Name
			}
			errs = append(errs, ls.UpdateRun(ctx, *cur))
		}
	}
	for id, cur := range openBy {
		if !seen[id] {
			notes = append(notes, fmt.Sprintf("network volume %s is gone: its storage counts until last seen, %s", id, cur.SeenAt.UTC().Format(time.RFC3339)))
			errs = append(errs, close(ctx, ls, cur, cur.SeenAt, EndObserved, "volume gone"))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return notes, fmt.Errorf("ledger: %w", err)
	}
	return notes, nil
}

// VolumeSizes is each network volume's size in GB as its latest row in runs says: its
// size now while it exists, its last size once it is gone. Report lines give a
// volume's dollars; this gives what they are for (and, with NetworkMonthly, its rate).
func VolumeSizes(runs []store.Run) map[string]int {
	out := map[string]int{}
	latest := map[string]time.Time{}
	for _, r := range runs {
		if !IsVolume(r) {
			continue
		}
		if t, ok := latest[r.PodID]; ok && !r.StartedAt.After(t) {
			continue
		}
		latest[r.PodID], out[r.PodID] = r.StartedAt, r.VolumeGB
	}
	return out
}
