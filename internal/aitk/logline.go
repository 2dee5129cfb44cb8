package aitk

import (
	"bufio"
	"bytes"
	"io"
	"regexp"
	"strconv"
	"strings"
)

// EventKind names what a console line says.
type EventKind string

// Event kinds, from the prints of run.py, jobs/process/BaseSDTrainProcess.py,
// extensions_built_in/sd_trainer and the UI worker (ui/cron).
const (
	EventProgress   EventKind = "progress"    // a tqdm bar update (training or caching)
	EventSaving     EventKind = "saving"      // "Saving at step N" (save_now)
	EventCheckpoint EventKind = "checkpoint"  // "Saved checkpoint to PATH": the file is complete
	EventOptimizer  EventKind = "optimizer"   // "Saved optimizer to PATH"
	EventPruned     EventKind = "pruned"      // "Removing old save: PATH"
	EventResume     EventKind = "resume"      // "#### IMPORTANT RESUMING FROM PATH ####"
	EventResumeStep EventKind = "resume_step" // "Found step N in metadata, starting from there"
	EventSampling   EventKind = "sampling"    // baseline or periodic samples begin
	EventOOMSkip    EventKind = "oom_skip"    // "# OOM during training step, skipping batch k/3 #"
	EventOOM        EventKind = "oom"         // CUDA out of memory outside a skipped step, or 3 in a row
	EventError      EventKind = "error"       // "Error running job: …"
	EventStopped    EventKind = "stopped"     // "Job stopped" (SIGINT or the stop flag)
	EventKilled     EventKind = "killed"      // the UI worker's "Job process terminated with signal SIGKILL."
	EventResult     EventKind = "result"      // run.py's " - N completed job(s)" / " - N failure(s)"
	EventStatus     EventKind = "status"      // a phase line: loading, quantizing, caching
)

// Event is one parsed console line. Only the fields of its Kind are set.
type Event struct {
	Kind EventKind `json:"kind"`
	Line string    `json:"line"`

	Step  int    `json:"step,omitempty"`  // progress, saving, checkpoint (from the name), resume_step
	Total int    `json:"total,omitempty"` // progress
	Path  string `json:"path,omitempty"`  // checkpoint, optimizer, pruned, resume
	Text  string `json:"text,omitempty"`  // error message, status text, progress description

	Percent        int                `json:"percent,omitempty"`
	Elapsed        float64            `json:"elapsed_s,omitempty"`
	Remaining      float64            `json:"remaining_s,omitempty"` // -1 when tqdm shows "?"
	SecondsPerStep float64            `json:"seconds_per_step,omitempty"`
	LR             float64            `json:"lr,omitempty"`
	Losses         map[string]float64 `json:"losses,omitempty"`

	Count     int `json:"count,omitempty"`     // oom_skip: k of 3; result: jobs
	Failed    int `json:"failed,omitempty"`    // result
	Completed int `json:"completed,omitempty"` // result
}

var (
	// {desc}: {pct}%|{bar}| {n}/{total} [{elapsed}<{remaining}, {rate}{, postfix}]
	reTqdm = regexp.MustCompile(`^(.*?):\s*(\d{1,3})%\|[^|]*\|\s*(\d+)/(\d+)\s*\[([0-9:]+|\?)<([0-9:]+|\?),\s*([^,\]]*?)(?:,\s*(.*))?\]\s*$`)
	// a bar without a description
	reTqdmNoDesc = regexp.MustCompile(`^\s*(\d{1,3})%\|[^|]*\|\s*(\d+)/(\d+)\s*\[([0-9:]+|\?)<([0-9:]+|\?),\s*([^,\]]*?)(?:,\s*(.*))?\]\s*$`)
	rePostfix    = regexp.MustCompile(`([A-Za-z_][\w/.\-]*):\s*(\S+)`)
	reSavingAt   = regexp.MustCompile(`^Saving at step (\d+)$`)
	reFoundStep  = regexp.MustCompile(`^Found step (\d+) in metadata, starting from there$`)
	reResume     = regexp.MustCompile(`^#+ IMPORTANT RESUMING FROM (.+?) #+$`)
	reOOMSkip    = regexp.MustCompile(`^#\s*OOM during training step, skipping batch (\d+)/(\d+)\s*#$`)
	reResult     = regexp.MustCompile(`^- (\d+) (completed job|failure)s?$`)
	reSampleBar  = regexp.MustCompile(`^Generating (?:baseline samples before training|first sample from first sample config|Images|Samples)`)
)

// statusPrefixes are phase lines worth showing (model loading prints its
// status through print_and_status_update).
var statusPrefixes = []string{
	"Loading Wan model", "Loading transformer", "Loading UMT5EncoderModel", "Loading VAE", "Quantizing Transformer",
	"Quantizing UMT5EncoderModel", "Moving transformer", "Making pipe", "Preparing Model",
	"Caching embeddings and unloading text encoder", "Caching latents", "Caching text embeddings",
	"Loading dataset", "Bucket sizes for", "Running job:", "Running 1 job",
}

// ParseLine parses one console line (without its line ending; split the
// stream on both "\n" and "\r", since tqdm redraws with "\r"). ok is false
// for lines that say nothing scopectl uses.
func ParseLine(line string) (Event, bool) {
	line = strings.TrimRight(line, "\r\n")
	s := stripANSI(strings.TrimSpace(line))
	ev := Event{Line: line}
	if s == "" {
		return ev, false
	}
	if strings.Contains(s, "%|") {
		if m := reTqdm.FindStringSubmatch(s); m != nil {
			return progress(ev, m[1], m[2:]), true
		}
		if m := reTqdmNoDesc.FindStringSubmatch(s); m != nil {
			return progress(ev, "", m[1:]), true
		}
	}
	switch {
	case strings.HasPrefix(s, "Saved checkpoint to "):
		ev.Kind, ev.Path = EventCheckpoint, strings.TrimPrefix(s, "Saved checkpoint to ")
		if n, ok := ParseCheckpointName(baseName(ev.Path)); ok && n.Step >= 0 {
			ev.Step = n.Step
		}
		return ev, true
	case strings.HasPrefix(s, "Saved optimizer to "):
		ev.Kind, ev.Path = EventOptimizer, strings.TrimPrefix(s, "Saved optimizer to ")
		return ev, true
	case strings.HasPrefix(s, "Removing old save: "):
		ev.Kind, ev.Path = EventPruned, strings.TrimPrefix(s, "Removing old save: ")
		return ev, true
	case strings.HasPrefix(s, "Error running job: "):
		ev.Kind, ev.Text = EventError, strings.TrimPrefix(s, "Error running job: ")
		if isOOMText(ev.Text) {
			ev.Kind = EventOOM
		}
		return ev, true
	case s == "Job stopped":
		ev.Kind = EventStopped
		return ev, true
	case strings.HasPrefix(s, "Job process terminated with signal SIGKILL"):
		ev.Kind, ev.Text = EventKilled, s
		return ev, true
	case strings.HasPrefix(s, "OOM during training step") && strings.Contains(s, "in a row"):
		ev.Kind, ev.Text = EventOOM, s
		return ev, true
	}
	if m := reSavingAt.FindStringSubmatch(s); m != nil {
		ev.Kind, ev.Step = EventSaving, atoi(m[1])
		return ev, true
	}
	if m := reFoundStep.FindStringSubmatch(s); m != nil {
		ev.Kind, ev.Step = EventResumeStep, atoi(m[1])
		return ev, true
	}
	if m := reResume.FindStringSubmatch(s); m != nil {
		ev.Kind, ev.Path = EventResume, m[1]
		return ev, true
	}
	if m := reOOMSkip.FindStringSubmatch(s); m != nil {
		ev.Kind, ev.Count = EventOOMSkip, atoi(m[1])
		return ev, true
	}
	if m := reResult.FindStringSubmatch(s); m != nil {
		ev.Kind, ev.Count = EventResult, atoi(m[1])
		if m[2] == "failure" {
			ev.Failed = ev.Count
		} else {
			ev.Completed = ev.Count
		}
		return ev, true
	}
	if reSampleBar.MatchString(s) {
		ev.Kind, ev.Text = EventSampling, s
		return ev, true
	}
	if isOOMText(s) {
		ev.Kind, ev.Text = EventOOM, s
		return ev, true
	}
	for _, p := range statusPrefixes {
		if strings.HasPrefix(s, p) {
			ev.Kind, ev.Text = EventStatus, s
			return ev, true
		}
	}
	return ev, false
}

func isOOMText(s string) bool {
	return strings.Contains(s, "CUDA out of memory") || strings.Contains(s, "OutOfMemoryError")
}

func progress(ev Event, desc string, m []string) Event {
	ev.Kind, ev.Text = EventProgress, strings.TrimSpace(desc)
	ev.Percent, ev.Step, ev.Total = atoi(m[0]), atoi(m[1]), atoi(m[2])
	ev.Elapsed = clock(m[3])
	ev.Remaining = clock(m[4])
	rate := strings.TrimSpace(m[5])
	switch {
	case strings.HasSuffix(rate, "s/it"):
		if v, err := strconv.ParseFloat(strings.TrimSuffix(rate, "s/it"), 64); err == nil && v > 0 {
			ev.SecondsPerStep = v
		}
	case strings.HasSuffix(rate, "it/s"):
		if v, err := strconv.ParseFloat(strings.TrimSuffix(rate, "it/s"), 64); err == nil && v > 0 {
			ev.SecondsPerStep = 1 / v
		}
	}
	for _, kv := range rePostfix.FindAllStringSubmatch(m[6], -1) {
		v, err := strconv.ParseFloat(kv[2], 64)
		if err != nil {
			continue
		}
		if kv[1] == "lr" {
			ev.LR = v
			continue
		}
		if ev.Losses == nil {
			ev.Losses = map[string]float64{}
		}
		ev.Losses[kv[1]] = v
	}
	return ev
}

// clock reads tqdm's [H:]MM:SS; "?" is -1.
func clock(s string) float64 {
	if s == "?" || s == "" {
		return -1
	}
	t := 0.0
	for _, p := range strings.Split(s, ":") {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return -1
		}
		t = t*60 + float64(n)
	}
	return t
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0
	}
	return n
}

var reANSI = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]`)

func stripANSI(s string) string {
	if !strings.Contains(s, "\x1b") {
		return s
	}
	return reANSI.ReplaceAllString(s, "")
}

func baseName(p string) string {
	p = strings.ReplaceAll(p, "\\", "/")
	return p[strings.LastIndex(p, "/")+1:]
}

// ScanLines splits a console stream on "\n", "\r\n" and lone "\r" (tqdm's
// redraws), for bufio.Scanner.
func ScanLines(data []byte, atEOF bool) (advance int, token []byte, err error) {
	if atEOF && len(data) == 0 {
		return 0, nil, nil
	}
	if i := bytes.IndexAny(data, "\r\n"); i >= 0 {
		if data[i] == '\r' {
			if i+1 < len(data) {
				if data[i+1] == '\n' {
					return i + 2, data[:i], nil
				}
				return i + 1, data[:i], nil
			}
			if !atEOF {
				return 0, nil, nil // a "\n" may follow
			}
		}
		return i + 1, data[:i], nil
	}
	if atEOF {
		return len(data), data, nil
	}
	return 0, nil, nil
}

// ParseLog reads a whole console stream and returns its events in order.
func ParseLog(r io.Reader) ([]Event, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	sc.Split(ScanLines)
	var out []Event
	for sc.Scan() {
		if ev, ok := ParseLine(sc.Text()); ok {
			out = append(out, ev)
		}
	}
	return out, sc.Err()
}
