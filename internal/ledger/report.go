package ledger

import (
	"fmt"
	"sort"
	"time"

	"github.com/daydreamlive/scopectl/internal/store"
)

// Line is one group of a report: a pod, a deploy (its name), a job, a network volume,
// a day or a month.
type Line struct {
	Key         string  `json:"key"`
	Name        string  `json:"name,omitempty"` // a network volume's name
	Hours       float64 `json:"hours"`
	GPUDollars  float64 `json:"gpu_dollars"`
	IdleDollars float64 `json:"idle_dollars"` // of GPUDollars: idle time before idle stops
	Storage     float64 `json:"storage_dollars"`
	Dollars     float64 `json:"dollars"` // GPU + storage
	Running     bool    `json:"running,omitempty"`
}

// Report is what the ledger says was spent since a moment.
type Report struct {
	Since     time.Time `json:"since"`
	Until     time.Time `json:"until"`
	Pods      []Line    `json:"pods"`
	Deploys   []Line    `json:"deploys"`
	Jobs      []Line    `json:"jobs"`
	Volumes   []Line    `json:"volumes"` // network volumes: storage only, at NetworkMonthly
	Days      []Line    `json:"days"`
	Months    []Line    `json:"months"`
	Total     Line      `json:"total"`
	Estimated int       `json:"estimated_ends"` // runs whose end was not seen (a lower bound)
	Notes     []string  `json:"notes,omitempty"`
}

// Build sums runs over [since, now): GPU time at each run's price, split across UTC
// days; the pod volume at RunPod's running rate during runs and its stopped rate
// between a pod's runs (and after its last one, for pods in live); idle cost is the
// idle time before each idle stop; network volumes (IsVolume rows) at NetworkMonthly
// for as long as they existed, as their own lines and in the days' and months'
// storage. since zero: everything.
func Build(runs []store.Run, since, now time.Time, live map[string]bool) Report {
	rep := Report{Since: since.UTC(), Until: now.UTC()}
	pods, deploys, jobs, days, months := map[string]*Line{}, map[string]*Line{}, map[string]*Line{}, map[string]*Line{}, map[string]*Line{}
	volumes, volNames := map[string]*Line{}, map[string]string{}
	add := func(m map[string]*Line, key string, hours, gpu, idle, storage float64, running bool) {
		if key == "" {
			return
		}
		l := m[key]
		if l == nil {
			l = &Line{Key: key}
			m[key] = l
		}
		l.Hours += hours
		l.GPUDollars += gpu
		l.IdleDollars += idle
		l.Storage += storage
		l.Dollars += gpu + storage
		l.Running = l.Running || running
	}
	clip := func(a, b time.Time) (time.Time, time.Time) {
		if !since.IsZero() && a.Before(since) {
			a = since
		}
		if b.After(now) {
			b = now
		}
		return a, b
	}
	lastEnd := map[string]time.Time{}
	byPod := map[string]store.Run{}
	for _, r := range runs {
		if IsVolume(r) {
			end, running := now, r.EndedAt == nil
			if !running {
				end = *r.EndedAt
			} else if r.SeenAt.Before(now.Add(-24 * time.Hour)) {
				end = r.SeenAt // not seen for a day: counted to when it was last seen
			}
			monthly := NetworkMonthly(r.VolumeGB)
			a, b := clip(r.StartedAt, end)
			for t := a; t.Before(b); {
				next := time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, time.UTC)
				if next.After(b) {
					next = b
				}
				h := next.Sub(t).Hours()
				st := monthly * h / hoursPerMonth
				add(volumes, r.PodID, h, 0, 0, st, running)
				add(days, t.UTC().Format("2006-01-02"), 0, 0, 0, st, false)
				add(months, t.UTC().Format("2006-01"), 0, 0, 0, st, false)
				rep.Total.Storage += st
				t = next
			}
			if r.Name != "" {
				volNames[r.PodID] = r.Name
			}
			continue
		}
		end := now
		running := r.EndedAt == nil
		if !running {
			end = *r.EndedAt
			if r.EndSource == EndObserved {
				rep.Estimated++
			}
		} else if r.SeenAt.Before(now.Add(-24 * time.Hour)) {
			// An open run not seen for a day: counted to when it was last seen.
			end = r.SeenAt
		}
		// The stopped volume between this pod's previous run and this one.
		if prev, ok := lastEnd[r.PodID]; ok && r.VolumeGB > 0 {
			a, b := clip(prev, r.StartedAt)
			if b.After(a) {
				st := float64(r.VolumeGB) * VolumeStoppedPerGBMonth * b.Sub(a).Hours() / hoursPerMonth
				add(pods, r.PodID, 0, 0, 0, st, false)
				add(deploys, r.Name, 0, 0, 0, st, false)
				add(days, a.UTC().Format("2006-01-02"), 0, 0, 0, st, false)
				add(months, a.UTC().Format("2006-01"), 0, 0, 0, st, false)
				rep.Total.Storage += st
			}
		}
		if end.After(lastEnd[r.PodID]) {
			lastEnd[r.PodID] = end
		}
		byPod[r.PodID] = r
		a, b := clip(r.StartedAt, end)
		if !b.After(a) {
			continue
		}
		idleFrac := 0.0
		if dur := end.Sub(r.StartedAt).Seconds(); r.IdleSeconds > 0 && dur > 0 {
			idleFrac = min(r.IdleSeconds/dur, 1)
		}
		// Split across UTC days.
		for t := a; t.Before(b); {
			next := time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, time.UTC)
			if next.After(b) {
				next = b
			}
			h := next.Sub(t).Hours()
			gpu := h * r.CostPerHr
			st := float64(r.VolumeGB) * VolumeRunningPerGBMonth * h / hoursPerMonth
			idle := gpu * idleFrac
			add(pods, r.PodID, h, gpu, idle, st, running)
			add(deploys, r.Name, h, gpu, idle, st, running)
			add(jobs, r.Job, h, gpu, idle, st, running)
			add(days, t.UTC().Format("2006-01-02"), h, gpu, idle, st, running)
			add(months, t.UTC().Format("2006-01"), h, gpu, idle, st, running)
			rep.Total.Hours += h
			rep.Total.GPUDollars += gpu
			rep.Total.IdleDollars += idle
			rep.Total.Storage += st
			t = next
		}
	}
	// A live pod's volume, stopped since its last run.
	for id, end := range lastEnd {
		r := byPod[id]
		if !live[id] || r.EndedAt == nil || r.VolumeGB == 0 {
			continue
		}
		a, b := clip(end, now)
		if b.After(a) {
			st := float64(r.VolumeGB) * VolumeStoppedPerGBMonth * b.Sub(a).Hours() / hoursPerMonth
			add(pods, id, 0, 0, 0, st, false)
			add(deploys, r.Name, 0, 0, 0, st, false)
			add(days, now.UTC().Format("2006-01-02"), 0, 0, 0, st, false)
			add(months, now.UTC().Format("2006-01"), 0, 0, 0, st, false)
			rep.Total.Storage += st
		}
	}
	rep.Total.Key = "total"
	rep.Total.Dollars = rep.Total.GPUDollars + rep.Total.Storage
	rep.Pods, rep.Deploys, rep.Jobs, rep.Days, rep.Months = lines(pods), lines(deploys), lines(jobs), lines(days), lines(months)
	rep.Volumes = lines(volumes)
	for i := range rep.Volumes {
		rep.Volumes[i].Name = volNames[rep.Volumes[i].Key]
	}
	if rep.Estimated > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d run(s) stopped unseen: counted until last seen running (a lower bound)", rep.Estimated))
	}
	return rep
}

func lines(m map[string]*Line) []Line {
	out := make([]Line, 0, len(m))
	for _, l := range m {
		out = append(out, *l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// SpentOn is what the runs cost (GPU and running volume) on now's UTC day.
func SpentOn(runs []store.Run, now time.Time) float64 {
	day := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	return Build(runs, day, now, nil).Total.Dollars
}

// BudgetCheck says whether a new pod at rate $/h for maxHours (0: the rest of the day)
// would take the day's spend past budget ($/day; 0: no budget). over is true when it
// would; msg is one line either way when a budget is set.
func BudgetCheck(spentToday, budget, rate, maxHours float64, now time.Time) (msg string, over bool) {
	if budget <= 0 {
		return "", false
	}
	hours := maxHours
	left := time.Date(now.Year(), now.Month(), now.Day()+1, 0, 0, 0, 0, time.UTC).Sub(now.UTC()).Hours()
	what := fmt.Sprintf("%g h (max-hours)", maxHours)
	if hours <= 0 || hours > left {
		hours = left
		what = fmt.Sprintf("%.1f h (the rest of the UTC day)", left)
	}
	would := spentToday + rate*hours
	if would > budget+1e-9 {
		return fmt.Sprintf("budget $%.2f/day: spent $%.2f today, and $%.3f/h × %s would make $%.2f", budget, spentToday, rate, what, would), true
	}
	return fmt.Sprintf("budget $%.2f/day: spent $%.2f today, at most $%.2f with this pod", budget, spentToday, would), false
}
