// Package progress reports the progress of long operations: a bar on a terminal,
// throttled JSON event lines for scripts (--json), or nothing.
package progress

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// Mode selects how progress is shown.
type Mode int

const (
	Off  Mode = iota
	Bar       // progress bar (only when the writer is a terminal)
	JSON      // NDJSON events: {"event":"progress","op":…,"item":…,"done":…,"total":…}
)

// Reporter creates trackers for operations. The zero value reports nothing.
type Reporter struct {
	Mode Mode
	W    io.Writer // stderr normally
	// Publish, when set, also shows every operation to other processes (the shared
	// registry of transfers in flight, inflight.Dir.Publish, that `scopectl serve`
	// reads): Start calls it, and the function it returns gets the bytes done on every
	// Add and, with end set, once at Finish.
	Publish func(op, item string, total int64) func(done int64, end bool)
}

// Auto picks Bar when w is a terminal, JSON when asJSON, else Off.
func Auto(w io.Writer, asJSON bool) Reporter {
	if asJSON {
		return Reporter{Mode: JSON, W: w}
	}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return Reporter{Mode: Bar, W: w}
	}
	return Reporter{}
}

// Tracker follows one operation over total bytes. It is an io.Writer so that it can
// sit in an io.MultiWriter or io.TeeReader.
type Tracker struct {
	mu    sync.Mutex
	r     Reporter
	op    string
	item  string
	total int64
	done  int64
	last  time.Time
	bar   *progressbar.ProgressBar
	pub   func(done int64, end bool)
}

// Start begins tracking op on item (a file name) over total bytes.
func (r Reporter) Start(op, item string, total int64) *Tracker {
	t := &Tracker{r: r, op: op, item: item, total: total}
	if r.Publish != nil {
		t.pub = r.Publish(op, item, total)
	}
	switch r.Mode {
	case Bar:
		t.bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(r.W),
			progressbar.OptionSetDescription(op+" "+item),
			progressbar.OptionShowBytes(true),
			progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
		)
	case JSON:
		t.emit("start")
	}
	return t
}

func (t *Tracker) Write(p []byte) (int, error) {
	t.Add(int64(len(p)))
	return len(p), nil
}

// Add records n more bytes done.
func (t *Tracker) Add(n int64) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.done += n
	if t.pub != nil {
		t.pub(t.done, false)
	}
	switch t.r.Mode {
	case Bar:
		_ = t.bar.Add64(n)
	case JSON:
		if time.Since(t.last) >= 250*time.Millisecond {
			t.emit("progress")
		}
	}
}

// Finish ends the operation.
func (t *Tracker) Finish() {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pub != nil {
		t.pub(t.done, true)
	}
	switch t.r.Mode {
	case Bar:
		_ = t.bar.Finish()
	case JSON:
		t.emit("done")
	}
}

func (t *Tracker) emit(ev string) {
	t.last = time.Now()
	_ = json.NewEncoder(t.r.W).Encode(struct {
		Event string `json:"event"`
		Op    string `json:"op"`
		Item  string `json:"item"`
		Done  int64  `json:"done"`
		Total int64  `json:"total"`
	}{ev, t.op, t.item, t.done, t.total})
}

// Retry reports that op failed (attempt of `of`, 0 when unknown) for reason and will be
// tried again after wait: one line on W in text modes ("scopectl: retrying …"), an NDJSON
// {"event":"retry",…} with JSON. A Reporter without W reports nothing.
func (r Reporter) Retry(op string, attempt, of int, reason string, wait time.Duration) {
	if r.W == nil {
		return
	}
	if r.Mode == JSON {
		_ = json.NewEncoder(r.W).Encode(struct {
			Event   string  `json:"event"`
			Op      string  `json:"op"`
			Attempt int     `json:"attempt"`
			Of      int     `json:"of,omitempty"`
			Reason  string  `json:"reason"`
			WaitS   float64 `json:"wait_s"`
		}{"retry", op, attempt, of, reason, wait.Seconds()})
		return
	}
	n := fmt.Sprint(attempt)
	if of > 0 {
		n += "/" + fmt.Sprint(of)
	}
	prefix := ""
	if r.Mode == Bar {
		prefix = "\r\033[K" // clear a bar drawn on this line
	}
	fmt.Fprintf(r.W, "%sscopectl: %s: attempt %s failed (%s); retrying in %s\n", prefix, op, n, reason, wait.Round(100*time.Millisecond))
}
