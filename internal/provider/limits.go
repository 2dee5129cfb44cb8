package provider

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Environment variables that carry a pod's limits on the pod itself (RunPod pod env,
// an SSH host container's labels), so that every scopectl that sees the pod, on any
// machine, and the guard running on it, know them.
const (
	// EnvIdleStop: stop after this long idle, a Go duration ("30m"); "0" never.
	EnvIdleStop = "SCOPECTL_IDLE_STOP"
	// EnvMaxHours: stop after this many hours since the pod's last start; "0" no limit.
	EnvMaxHours = "SCOPECTL_MAX_HOURS"
	// EnvStopOnJobEnd: "1" on training pods: stop as soon as the training job ends.
	EnvStopOnJobEnd = "SCOPECTL_STOP_ON_JOB_END"
)

// Limits are what a pod may cost before something stops it.
type Limits struct {
	IdleStop     time.Duration `json:"idle_stop"`         // 0: never for idleness
	MaxHours     float64       `json:"max_hours"`         // 0: no limit
	StopOnJobEnd bool          `json:"stop_on_job_end"`   // a training pod
	FromPod      bool          `json:"from_pod"`          // read from the pod itself
	Problem      string        `json:"problem,omitempty"` // a value on the pod that could not be read
}

// Env is l as the pod's environment variables.
func (l Limits) Env() map[string]string {
	env := map[string]string{
		EnvIdleStop: l.IdleStop.String(),
		EnvMaxHours: strconv.FormatFloat(l.MaxHours, 'f', -1, 64),
	}
	if l.IdleStop == 0 {
		env[EnvIdleStop] = "0"
	}
	if l.StopOnJobEnd {
		env[EnvStopOnJobEnd] = "1"
	}
	return env
}

// MaxDuration is MaxHours as a Duration (0 when there is no limit), saturating.
func (l Limits) MaxDuration() time.Duration {
	d := l.MaxHours * float64(time.Hour)
	if d <= 0 || math.IsNaN(d) {
		return 0
	}
	if d >= math.MaxInt64 {
		return math.MaxInt64
	}
	return time.Duration(d)
}

// String is a short human form: "idle 30m0s, max 4h, stop on job end", or "none".
func (l Limits) String() string {
	var parts []string
	if l.IdleStop > 0 {
		parts = append(parts, "idle "+shortDur(l.IdleStop))
	}
	if l.MaxHours > 0 {
		parts = append(parts, "max "+strconv.FormatFloat(l.MaxHours, 'f', -1, 64)+"h")
	}
	if l.StopOnJobEnd {
		parts = append(parts, "stop on job end")
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func shortDur(d time.Duration) string {
	s := d.String()
	s = strings.TrimSuffix(s, "0s")
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	if s == "" {
		return d.String()
	}
	return s
}

// LimitsFromEnv reads a pod's limits from its environment. ok is false when the pod
// carries none (a pod scopectl did not create, or one created before limits travelled
// with pods). A value that cannot be read is reported in Problem and counts as no
// limit for that field: a wrong value never stops a pod.
func LimitsFromEnv(env map[string]string) (l Limits, ok bool) {
	idle, hasIdle := env[EnvIdleStop]
	maxh, hasMax := env[EnvMaxHours]
	job, hasJob := env[EnvStopOnJobEnd]
	if !hasIdle && !hasMax && !hasJob {
		return l, false
	}
	l.FromPod = true
	var problems []string
	if hasIdle && strings.TrimSpace(idle) != "" && strings.TrimSpace(idle) != "0" {
		d, err := time.ParseDuration(strings.TrimSpace(idle))
		if err != nil || d < 0 {
			problems = append(problems, fmt.Sprintf("%s=%q is not a duration", EnvIdleStop, idle))
		} else {
			l.IdleStop = d
		}
	}
	if hasMax && strings.TrimSpace(maxh) != "" {
		h, err := strconv.ParseFloat(strings.TrimSpace(maxh), 64)
		if err != nil || h < 0 || math.IsNaN(h) || math.IsInf(h, 0) {
			problems = append(problems, fmt.Sprintf("%s=%q is not a number of hours", EnvMaxHours, maxh))
		} else {
			l.MaxHours = h
		}
	}
	switch strings.ToLower(strings.TrimSpace(job)) {
	case "1", "true", "yes":
		l.StopOnJobEnd = true
	}
	l.Problem = strings.Join(problems, "; ")
	return l, true
}

// Docker labels that carry an SSH host's limits on its Scope container (deploy sets
// them; `pod ls`/`pod get` and the guard on the host read them back), as a RunPod
// pod's environment carries them.
const (
	LabelIdleStop     = "scopectl.idle-stop"
	LabelMaxHours     = "scopectl.max-hours"
	LabelStopOnJobEnd = "scopectl.stop-on-job-end"
)

// labelEnv maps each limit label to its environment variable.
var labelEnv = map[string]string{LabelIdleStop: EnvIdleStop, LabelMaxHours: EnvMaxHours, LabelStopOnJobEnd: EnvStopOnJobEnd}

// Labels is l as container labels (the values Env gives).
func (l Limits) Labels() map[string]string {
	out := map[string]string{}
	env := l.Env()
	for lab, e := range labelEnv {
		if v, ok := env[e]; ok {
			out[lab] = v
		}
	}
	return out
}

// LimitsEnvFromLabels is the limit variables a container's labels carry, as the
// environment LimitsFromEnv reads (empty when it carries none).
func LimitsEnvFromLabels(labels map[string]string) map[string]string {
	env := map[string]string{}
	for lab, e := range labelEnv {
		if v, ok := labels[lab]; ok {
			env[e] = v
		}
	}
	return env
}
