package aitk

import (
	"fmt"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The names a run writes in <training_folder>/<name>/
// (jobs/process/BaseSDTrainProcess.py save, clean_up_saves,
// get_latest_save_path; toolkit/config_modules.py GenerateImageConfig).

// Checkpoint file suffixes: Wan 2.2 A14B with network.split_multistage_loras
// (the default) writes one file per expert instead of one.
const (
	SuffixHighNoise = "_high_noise"
	SuffixLowNoise  = "_low_noise"
)

// CheckpointName is a LoRA save's file name, parsed.
type CheckpointName struct {
	Job    string `json:"job"`
	Step   int    `json:"step"`             // -1 for the final save {name}.safetensors
	Suffix string `json:"suffix,omitempty"` // "", SuffixHighNoise or SuffixLowNoise
}

// String formats the name: {job}_{step:09d}{suffix}.safetensors, or
// {job}{suffix}.safetensors for the final save (str(step).zfill(9): longer
// steps are not cut).
func (c CheckpointName) String() string {
	if c.Step < 0 {
		return c.Job + c.Suffix + ".safetensors"
	}
	return fmt.Sprintf("%s_%09d%s.safetensors", c.Job, c.Step, c.Suffix)
}

var reCheckpoint = regexp.MustCompile(`^(.+)_([0-9]{9}|[1-9][0-9]{9,17})(_high_noise|_low_noise)?\.safetensors$`)

// ParseCheckpointName reads a step save's name when the job name is not
// known. A final save ({name}.safetensors) cannot be told from another
// file this way: use ParseCheckpointNameFor.
func ParseCheckpointName(file string) (CheckpointName, bool) {
	m := reCheckpoint.FindStringSubmatch(file)
	if m == nil {
		return CheckpointName{}, false
	}
	step, err := strconv.Atoi(m[2])
	if err != nil {
		return CheckpointName{}, false
	}
	return CheckpointName{Job: m[1], Step: step, Suffix: m[3]}, true
}

// ParseCheckpointNameFor reads file as a save of job (step or final).
func ParseCheckpointNameFor(job, file string) (CheckpointName, bool) {
	rest, ok := strings.CutPrefix(file, job)
	if !ok || job == "" {
		return CheckpointName{}, false
	}
	rest, ok = strings.CutSuffix(rest, ".safetensors")
	if !ok {
		return CheckpointName{}, false
	}
	suffix := ""
	for _, s := range []string{SuffixHighNoise, SuffixLowNoise} {
		if r, ok := strings.CutSuffix(rest, s); ok {
			rest, suffix = r, s
			break
		}
	}
	if rest == "" {
		return CheckpointName{Job: job, Step: -1, Suffix: suffix}, true
	}
	digits, ok := strings.CutPrefix(rest, "_")
	if !ok || len(digits) < 9 || len(digits) > 18 || strings.Trim(digits, "0123456789") != "" || (len(digits) > 9 && digits[0] == '0') {
		return CheckpointName{}, false
	}
	step, err := strconv.Atoi(digits)
	if err != nil {
		return CheckpointName{}, false
	}
	return CheckpointName{Job: job, Step: step, Suffix: suffix}, true
}

// SampleName is a sample file's name: samples/{epoch ms}__{step:09d}_{index}.{ext}
// (the index zero-padded to the width of the prompt count; ext webp for
// video samples, else the sample format, jpg by default).
type SampleName struct {
	TimeMS int64  `json:"time_ms"` // generation time, ms since the epoch
	Step   int    `json:"step"`    // -1 when sampled outside training
	Index  int    `json:"index"`   // prompt index
	Width  int    `json:"-"`       // digits of the index (zero padding)
	Ext    string `json:"ext"`
}

// String formats the name.
func (s SampleName) String() string {
	idx := fmt.Sprintf("%0*d", max(s.Width, 1), s.Index)
	if s.Step < 0 {
		return fmt.Sprintf("%d__%s.%s", s.TimeMS, idx, s.Ext)
	}
	return fmt.Sprintf("%d__%09d_%s.%s", s.TimeMS, s.Step, idx, s.Ext)
}

var reSample = regexp.MustCompile(`^(0|[1-9][0-9]{0,17})__(?:([0-9]{9}|[1-9][0-9]{9,17})_)?([0-9]{1,9})\.([A-Za-z0-9]{1,8})$`)

// ParseSampleName reads a sample's file name.
func ParseSampleName(file string) (SampleName, bool) {
	m := reSample.FindStringSubmatch(file)
	if m == nil {
		return SampleName{}, false
	}
	t, err1 := strconv.ParseInt(m[1], 10, 64)
	idx, err2 := strconv.Atoi(m[3])
	if err1 != nil || err2 != nil {
		return SampleName{}, false
	}
	s := SampleName{TimeMS: t, Step: -1, Index: idx, Width: len(m[3]), Ext: m[4]}
	if m[2] != "" {
		st, err := strconv.Atoi(m[2])
		if err != nil {
			return SampleName{}, false
		}
		s.Step = st
	}
	return s, true
}

// Time is the sample's generation time.
func (s SampleName) Time() time.Time { return time.UnixMilli(s.TimeMS) }

// SaveEntry is one entry of a job's output folder.
type SaveEntry struct {
	Name  string    `json:"name"`
	IsDir bool      `json:"is_dir"`
	CTime time.Time `json:"ctime"`
}

// ReadSaveDir lists dir's entries with their change times (the order
// ai-toolkit resumes and prunes by).
func ReadSaveDir(dir string) ([]SaveEntry, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []SaveEntry
	for _, de := range des {
		fi, err := de.Info()
		if err != nil {
			continue // removed meanwhile (pruned)
		}
		out = append(out, SaveEntry{Name: de.Name(), IsDir: fi.IsDir(), CTime: ctime(fi)})
	}
	return out, nil
}

// globMatch is Python's glob for one pattern with a literal prefix and one
// "*": hidden names only match a hidden pattern.
func globMatch(prefix, suffix, name string) bool {
	if strings.HasPrefix(name, ".") && !strings.HasPrefix(prefix, ".") {
		return false
	}
	ok, _ := path.Match(escapeGlob(prefix)+"*"+escapeGlob(suffix), name)
	return ok && len(name) >= len(prefix)+len(suffix)
}

func escapeGlob(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `*`, `\*`, `?`, `\?`, `[`, `\[`)
	return r.Replace(s)
}

// SelectResume picks the save ai-toolkit resumes job from: of the entries
// matching {job}*.safetensors, {job}*.pt and {job}* (files and folders),
// minus names holding _LoRA, _refiner, _t2i or _cn that the job name does
// not, the newest by change time. A file copied in later is therefore
// newer than the real last save: restore only the checkpoint meant.
func SelectResume(job string, entries []SaveEntry) (SaveEntry, bool) {
	var best SaveEntry
	found := false
	for _, e := range entries {
		if !globMatch(job, "", e.Name) {
			continue
		}
		skip := false
		for _, fp := range []string{"_LoRA", "_refiner", "_t2i", "_cn"} {
			if !strings.Contains(job, fp) && strings.Contains(e.Name, fp) {
				skip = true
			}
		}
		if skip {
			continue
		}
		if !found || e.CTime.After(best.CTime) {
			best, found = e, true
		}
	}
	return best, found
}

// LatestSave returns the path ai-toolkit would resume job from in dir.
func LatestSave(dir, job string) (string, bool, error) {
	es, err := ReadSaveDir(dir)
	if err != nil {
		return "", false, err
	}
	e, ok := SelectResume(job, es)
	if !ok {
		return "", false, nil
	}
	return path.Join(dir, e.Name), true, nil
}

// Pruned returns the names clean_up_saves removes after a save: of the
// entries matching {job}_*, the .safetensors files, the .pt files and the
// folders are each sorted by change time and all but the newest keep
// (× multiplier: 2 for split Wan 2.2 A14B saves) go, by Python's slice
// items[:-keep] (keep 0 removes nothing). Same-stem .yaml files go too.
func Pruned(job string, keep, multiplier int, entries []SaveEntry) []string {
	if multiplier < 1 {
		multiplier = 1
	}
	keep *= multiplier
	var st, pt, dirs []SaveEntry
	for _, e := range entries {
		if !globMatch(job+"_", "", e.Name) {
			continue
		}
		switch {
		case strings.HasSuffix(e.Name, ".safetensors"):
			st = append(st, e)
		case e.IsDir:
			dirs = append(dirs, e)
		case strings.HasSuffix(e.Name, ".pt"):
			pt = append(pt, e)
		}
		if e.IsDir && strings.HasSuffix(e.Name, ".pt") {
			pt = append(pt, e)
		}
	}
	names := map[string]bool{}
	for _, e := range entries {
		names[e.Name] = true
	}
	var out []string
	seen := map[string]bool{}
	for _, group := range [][]SaveEntry{st, pt, dirs} {
		slices.SortStableFunc(group, func(a, b SaveEntry) int { return a.CTime.Compare(b.CTime) })
		for _, e := range group[:pyHead(len(group), keep)] {
			if seen[e.Name] {
				continue
			}
			seen[e.Name] = true
			out = append(out, e.Name)
			stem := strings.TrimSuffix(e.Name, path.Ext(e.Name))
			if y := stem + ".yaml"; names[y] && y != e.Name && !seen[y] {
				seen[y] = true
				out = append(out, y)
			}
		}
	}
	return out
}

// pyHead is len(items[:-keep]) for n items.
func pyHead(n, keep int) int {
	switch {
	case keep == 0:
		return 0
	case keep > 0:
		return max(n-keep, 0)
	}
	return min(-keep, n)
}
