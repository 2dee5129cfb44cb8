package guard

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// DefaultJobsGlob is where training jobs keep their state on a pod.
const DefaultJobsGlob = "/workspace/.scopectl/jobs/*/state.json"

// endedPhases are job phases after which the job does no more work.
var endedPhases = map[string]bool{"done": true, "failed": true, "stopped": true,
	"completed": true, "error": true, "cancelled": true, "canceled": true}

// Jobs finds training jobs on the machine: state files (Glob) with a "phase", and
// running `scopectl train supervise` processes (under /proc, when Procs).
type Jobs struct {
	Glob  string // default DefaultJobsGlob
	Procs bool
	// ProcDir is /proc (tests point it elsewhere).
	ProcDir string
}

// JobState is what Look found.
type JobState struct {
	Active bool   // some job is running
	Seen   bool   // some job exists (running or ended)
	Ended  string // when none runs: the ended jobs, "name (phase)"
	Why    string
}

// Look reads the jobs now. A state file that cannot be read is not a running job
// (it is named in Why): a broken file must not keep a GPU billed forever.
func (j *Jobs) Look() JobState {
	var st JobState
	glob := j.Glob
	if glob == "" {
		glob = DefaultJobsGlob
	}
	files, _ := filepath.Glob(glob)
	sort.Strings(files)
	var running, ended, bad []string
	for _, f := range files {
		name := filepath.Base(filepath.Dir(f))
		b, err := os.ReadFile(f)
		var s struct {
			Phase string `json:"phase"`
		}
		if err != nil || json.Unmarshal(b, &s) != nil || s.Phase == "" {
			bad = append(bad, name)
			continue
		}
		st.Seen = true
		phase := strings.ToLower(s.Phase)
		if endedPhases[phase] {
			ended = append(ended, fmt.Sprintf("%s (%s)", name, phase))
		} else {
			running = append(running, fmt.Sprintf("%s (%s)", name, phase))
		}
	}
	if j.Procs {
		if n := j.supervisors(); n > 0 {
			st.Seen = true
			running = append(running, fmt.Sprintf("%d `scopectl train supervise` process(es)", n))
		}
	}
	switch {
	case len(running) > 0:
		st.Active, st.Why = true, "training job "+strings.Join(running, ", ")
	case len(ended) > 0:
		st.Ended, st.Why = strings.Join(ended, ", "), "jobs ended: "+strings.Join(ended, ", ")
	}
	if len(bad) > 0 {
		st.Why = strings.TrimPrefix(st.Why+"; unreadable job state: "+strings.Join(bad, ", "), "; ")
	}
	return st
}

// supervisors counts processes whose command line is `… scopectl train supervise …`.
func (j *Jobs) supervisors() int {
	proc := j.ProcDir
	if proc == "" {
		proc = "/proc"
	}
	ents, err := os.ReadDir(proc)
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range ents {
		if e.Name() == "" || e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		b, err := os.ReadFile(filepath.Join(proc, e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := bytes.Split(bytes.TrimRight(b, "\x00"), []byte{0})
		for i := 0; i+2 < len(args); i++ {
			if strings.HasSuffix(string(args[i]), "scopectl") && string(args[i+1]) == "train" && string(args[i+2]) == "supervise" {
				n++
				break
			}
		}
	}
	return n
}
