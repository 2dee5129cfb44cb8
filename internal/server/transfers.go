package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/daydreamlive/scopectl/internal/library"
	"github.com/daydreamlive/scopectl/internal/lorasync"
	"github.com/daydreamlive/scopectl/internal/progress"
	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/store"
)

// Transfer is a sync the server started, or a transfer another scopectl process runs
// (Source "cli": a sync, pull, download or collection, from the data dir's registry of
// transfers in flight), with its progress.
type Transfer struct {
	ID        string           `json:"id"`
	Source    string           `json:"source"`        // serve | cli
	Op        string           `json:"op"`            // sync (from the page); send, pull, download, upload, collect…
	PID       int              `json:"pid,omitempty"` // the process running a cli transfer
	LoRA      string           `json:"lora"`          // the LoRA, or the file a cli transfer moves
	To        string           `json:"to"`
	State     string           `json:"state"` // running | done | failed | canceled
	Done      int64            `json:"done_bytes"`
	Total     int64            `json:"total_bytes"`
	Error     string           `json:"error,omitempty"`
	Result    *lorasync.Result `json:"result,omitempty"`
	StartedAt time.Time        `json:"started_at"`
	EndedAt   *time.Time       `json:"ended_at,omitempty"`

	cancel context.CancelFunc
}

type transfers struct {
	mu   sync.Mutex
	n    int
	all  map[string]*Transfer
	sent int64 // bytes sent by finished and running syncs
}

func newTransfers() *transfers { return &transfers{all: map[string]*Transfer{}} }

func (t *transfers) list() []Transfer {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Transfer, 0, len(t.all))
	for _, x := range t.all {
		out = append(out, *x)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID > out[j].ID })
	return out
}

// progressWriter reads the NDJSON progress events a sync reports.
type progressWriter struct {
	s *Server
	t *Transfer
	w *io.PipeWriter
}

func (s *Server) watchProgress(t *Transfer) *io.PipeWriter {
	pr, pw := io.Pipe()
	go func() {
		sc := bufio.NewScanner(pr)
		last := map[string]int64{}
		for sc.Scan() {
			var ev struct {
				Event string `json:"event"`
				Item  string `json:"item"`
				Done  int64  `json:"done"`
				Total int64  `json:"total"`
			}
			if json.Unmarshal(sc.Bytes(), &ev) != nil || ev.Event != "progress" {
				continue
			}
			s.xfers.mu.Lock()
			d := ev.Done - last[ev.Item]
			if d > 0 {
				t.Done += d
				s.xfers.sent += d
				s.metrics.transferBytes.Add(float64(d))
			}
			if _, seen := last[ev.Item]; !seen {
				t.Total += ev.Total
			}
			last[ev.Item] = ev.Done
			s.xfers.mu.Unlock()
		}
		io.Copy(io.Discard, pr)
	}()
	return pw
}

// startSync sends e to `to` in the background; the transfer list shows its progress.
func (s *Server) startSync(e store.LoRA, to string, req SyncRequest) Transfer {
	s.xfers.mu.Lock()
	s.xfers.n++
	t := &Transfer{ID: fmt.Sprintf("t%06d", s.xfers.n), Source: "serve", Op: "sync", LoRA: e.Name, To: s.red.Redact(to), State: "running", StartedAt: time.Now().UTC()}
	s.xfers.all[t.ID] = t
	snap := *t
	s.xfers.mu.Unlock()
	s.metrics.actions.WithLabelValues("sync").Inc()
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Hour)
	s.xfers.mu.Lock()
	t.cancel = cancel
	s.xfers.mu.Unlock()
	go func() {
		defer cancel()
		res, err := s.runSync(ctx, e, to, req, t)
		now := time.Now().UTC()
		s.xfers.mu.Lock()
		t.EndedAt, t.Result, t.cancel = &now, res, nil
		if err != nil && errors.Is(ctx.Err(), context.Canceled) {
			t.State, t.Error = "canceled", "canceled"
			s.metrics.transfers.WithLabelValues("canceled").Inc()
		} else if err != nil {
			t.State, t.Error = "failed", oneLine(s.red.Redact(err.Error()))
			s.metrics.transfers.WithLabelValues("failed").Inc()
		} else {
			t.State = "done"
			if t.Total == 0 {
				t.Total = t.Done
			}
			s.metrics.transfers.WithLabelValues("done").Inc()
		}
		s.xfers.mu.Unlock()
		s.log.Info("sync ended", "transfer", t.ID, "lora", e.Name, "state", t.State)
	}()
	return snap
}

func (s *Server) runSync(ctx context.Context, e store.LoRA, to string, req SyncRequest, t *Transfer) (*lorasync.Result, error) {
	r, err := remote.Open(ctx, to, s.opt.RemoteEnv)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	pw := s.watchProgress(t)
	defer pw.Close()
	res, err := lorasync.Sync(ctx, s.opt.Lib, r, lorasync.Options{Names: []string{e.SHA256}, Pipeline: req.Pipeline,
		Force: req.Force, Progress: progress.Reporter{Mode: progress.JSON, W: pw}})
	if errors.Is(err, library.ErrRefused) {
		return res, fmt.Errorf("%w", err)
	}
	return res, err
}

func (s *Server) listTransfers(r *http.Request) (any, error) {
	p, err := paging(r)
	if err != nil {
		return nil, err
	}
	items := s.xfers.list()
	// newest first: ids sort descending, so page on the reversed order
	out := List[Transfer]{Items: []Transfer{}}
	if p.After == "" { // the other processes' transfers, all running, lead the first page
		out.Items = append(out.Items, s.cliTransfers()...)
	}
	for _, x := range items {
		if p.After != "" && strings.Compare(x.ID, p.After) >= 0 {
			continue
		}
		if len(out.Items) == p.Limit {
			out.Next = out.Items[len(out.Items)-1].ID
			break
		}
		out.Items = append(out.Items, x)
	}
	return out, nil
}

// cliTransfers are the transfers other scopectl processes have in flight (stale
// entries, of processes that are gone, are dropped by the registry).
func (s *Server) cliTransfers() []Transfer {
	if s.opt.Transfers == "" {
		return nil
	}
	es, err := s.opt.Transfers.List()
	if err != nil {
		return nil
	}
	out := make([]Transfer, 0, len(es))
	for i := len(es) - 1; i >= 0; i-- { // newest first
		e := es[i]
		if e.PID == os.Getpid() {
			continue
		}
		out = append(out, Transfer{ID: "cli-" + e.ID, Source: "cli", Op: e.Op, PID: e.PID, LoRA: e.Item, State: "running",
			Done: e.Done, Total: e.Total, StartedAt: e.StartedAt})
	}
	return out
}

// cancelTransfer is DELETE /api/v1/transfers/{id}: a sync this server runs stops (what
// it had sent in full stays; a file in flight is not left half-written, as lorasync
// writes each file atomically). Transfers of other processes are theirs to stop.
func (s *Server) cancelTransfer(r *http.Request) (any, error) {
	id := r.PathValue("id")
	if strings.HasPrefix(id, "cli-") {
		return nil, errorf(http.StatusConflict, "transfer %s runs in another scopectl process: stop it there", id)
	}
	s.xfers.mu.Lock()
	t, ok := s.xfers.all[id]
	var cancel context.CancelFunc
	if ok {
		cancel = t.cancel
	}
	s.xfers.mu.Unlock()
	if !ok {
		return nil, errorf(http.StatusNotFound, "transfer %q not found", id)
	}
	if cancel == nil {
		return nil, errorf(http.StatusConflict, "transfer %s has ended", id)
	}
	cancel()
	for i := 0; i < 100; i++ {
		s.xfers.mu.Lock()
		done, snap := t.EndedAt != nil, *t
		s.xfers.mu.Unlock()
		if done {
			return snap, nil
		}
		select {
		case <-r.Context().Done():
			return nil, r.Context().Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	s.xfers.mu.Lock()
	defer s.xfers.mu.Unlock()
	return *t, nil
}
