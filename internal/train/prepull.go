package train

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/daydreamlive/scopectl/internal/aitk"
	"github.com/daydreamlive/scopectl/internal/hub/hf"
	"github.com/daydreamlive/scopectl/internal/progress"
	"github.com/daydreamlive/scopectl/internal/secret"
)

// PhaseDownloading: the supervisor pulls the base model into the job's HF cache
// before the trainer starts (State.Download has the bytes).
const PhaseDownloading = "downloading model"

// Download is the progress of the pre-pull (State.Download).
type Download struct {
	Repo  string `json:"repo"`             // the repo being pulled now
	Field string `json:"field,omitempty"`  // the config field that names it
	Item  int    `json:"item"`             // 1-based, of Items
	Items int    `json:"items"`            // repos to pull
	Files int    `json:"files"`            // files selected in all
	Done  int64  `json:"done_bytes"`       // bytes in the cache so far
	Total int64  `json:"total_bytes"`      // bytes of every selected file
	Cache string `json:"cache"`            // HF_HUB_CACHE on the machine
	Ended bool   `json:"ended,omitempty"`  // every file is in the cache
	Error string `json:"error,omitempty"`  // why it failed (one line)
	Since string `json:"since,omitempty"`  // RFC 3339 start of this pull
	Speed int64  `json:"bytes_per_second"` // over this pull
}

// envValue is the last KEY=… in env.
func envValue(env []string, key string) string {
	v := ""
	for _, kv := range env {
		if k, val, ok := strings.Cut(kv, "="); ok && k == key {
			v = val
		}
	}
	return v
}

// hubCache is where huggingface_hub looks in the trainer's environment: HF_HUB_CACHE,
// else $HF_HOME/hub, else the default HF_HOME's hub.
func hubCache(env []string) string {
	if c := envValue(env, "HF_HUB_CACHE"); c != "" {
		return c
	}
	if h := envValue(env, "HF_HOME"); h != "" {
		return filepath.Join(h, "hub")
	}
	return filepath.Join(hf.DefaultHFHome(), "hub")
}

// prepull pulls every item of the spec's plan into the trainer's HF cache with
// scopectl's downloader (resumable, verified), keeping State.Download current. The
// error is one line naming the repo and what to do.
func (s *supervisor) prepull(ctx context.Context) error {
	pctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	env := append(os.Environ(), s.spec.Env...)
	c := &hf.Client{Endpoint: envValue(env, "HF_ENDPOINT")}
	for _, name := range s.spec.SecretEnv {
		if name != "HF_TOKEN" {
			continue
		}
		b, err := os.ReadFile(s.dir.Join(SecretsDir, name))
		if err != nil {
			return fmt.Errorf("secret %s: %w", name, err)
		}
		c.Token = secret.New(strings.TrimSpace(string(b)))
	}
	cache := hubCache(env)
	d := &Download{Cache: cache, Since: time.Now().UTC().Format(time.RFC3339)}
	s.st.Phase, s.st.Download = PhaseDownloading, d

	// What to pull: each item's files, and their sizes for the total.
	type job struct {
		it  aitk.PullItem
		ref hf.Ref
	}
	var jobs []job
	for _, it := range s.spec.Pull {
		if s.spec.Workdir != "" && !filepath.IsAbs(it.Repo) {
			if _, err := os.Stat(filepath.Join(s.spec.Workdir, it.Repo)); err == nil {
				s.logf("pre-pull: %s is a folder in %s, not a Hub repo: skipped", it.Repo, s.spec.Workdir)
				continue
			}
		}
		ref := hf.Ref{Repo: it.Repo, Revision: it.Revision}
		d.Repo, d.Field = it.Repo, it.Field
		s.write()
		_, listing, err := c.List(ctx, ref)
		if err != nil {
			return s.pullErr(ctx, it, err)
		}
		size := map[string]int64{}
		var paths []string
		for _, e := range listing {
			size[e.Path] = e.Size
			paths = append(paths, e.Path)
		}
		files := it.Files
		if len(files) == 0 {
			files = aitk.SelectPretrainedFiles(paths)
			if len(files) == 0 {
				return fmt.Errorf("downloading %s (%s): the repo has no config or weight files diffusers would load", it.Repo, it.Field)
			}
		}
		for _, f := range files {
			d.Total += size[f]
		}
		d.Files += len(files)
		ref.Paths = files
		jobs = append(jobs, job{it, ref})
	}
	d.Items = len(jobs)
	s.logf("pre-pull: %d repo(s), %d file(s), %d bytes into %s", d.Items, d.Files, d.Total, cache)

	// Progress: bytes of finished repos plus the files under way.
	var done atomic.Int64 // finished repos
	var mu sync.Mutex
	inflight := map[*int64]bool{}
	c.Progress = progress.Reporter{Publish: func(op, item string, total int64) func(int64, bool) {
		cur := new(int64)
		mu.Lock()
		inflight[cur] = true
		mu.Unlock()
		return func(n int64, end bool) {
			mu.Lock()
			*cur = n
			mu.Unlock()
		}
	}}
	snapshot := func() int64 {
		mu.Lock()
		defer mu.Unlock()
		n := done.Load()
		for p := range inflight {
			n += *p
		}
		return n
	}
	start := time.Now()
	update := func() {
		d.Done = min(snapshot(), d.Total)
		if el := time.Since(start).Seconds(); el > 0.5 {
			d.Speed = int64(float64(d.Done) / el)
		}
		s.write()
	}
	for i, j := range jobs {
		d.Item, d.Repo, d.Field = i+1, j.it.Repo, j.it.Field
		s.write()
		stop := make(chan struct{})
		ticked := make(chan struct{})
		go func() {
			defer close(ticked)
			t := time.NewTicker(s.poll())
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					update()
					if _, err := os.Stat(s.dir.Join(ControlDir, stopRequest)); err == nil {
						cancel(errStopDuringPull)
					}
				}
			}
		}()
		files, err := c.Pull(pctx, cache, j.ref, hf.PullOptions{})
		close(stop)
		<-ticked
		if err != nil {
			return s.pullErr(pctx, j.it, err)
		}
		var n int64
		for _, f := range files {
			n += f.Size
		}
		mu.Lock()
		clear(inflight)
		mu.Unlock()
		done.Add(n)
		update()
		s.logf("pre-pull: %s: %d file(s) in %s", j.it.Repo, len(files), cache)
	}
	d.Ended = true
	update()
	return nil
}

// errStopDuringPull: `train stop` came while the model was downloading.
var errStopDuringPull = errors.New("stop requested during the pre-pull")

// pullErr is the one line a failed pull ends the job with.
func (s *supervisor) pullErr(ctx context.Context, it aitk.PullItem, err error) error {
	if cause := context.Cause(ctx); cause != nil {
		return cause
	}
	what := "downloading " + it.Repo + " (" + it.Field + ")"
	var hint string
	switch {
	case errors.Is(err, hf.ErrGated), errors.Is(err, hf.ErrAuth), errors.Is(err, hf.ErrForbidden):
		hint = "accept the license on huggingface.co/" + it.Repo + " and set HF_TOKEN to a token of that account"
	case errors.Is(err, hf.ErrNotFound):
		hint = "check the repo id in the config (a private repo needs HF_TOKEN)"
	case errors.Is(err, syscall.ENOSPC):
		hint = "disk full on the machine: give the pod a bigger volume for HF_HOME"
	}
	msg := oneLine(err.Error())
	if errors.Is(err, hf.ErrGated) {
		msg = "gated repo, access not granted (401/403)"
	}
	if hint != "" {
		msg += "; " + hint
	}
	return fmt.Errorf("%s: %s", what, msg)
}
