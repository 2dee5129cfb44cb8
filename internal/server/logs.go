package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/daydreamlive/scopectl/internal/docker"
	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/scope"
	"github.com/daydreamlive/scopectl/internal/store"
	"github.com/daydreamlive/scopectl/internal/train"
)

// Logs follow live as server-sent events. Every event that carries lines has an id,
// the cursor after them (a byte offset of the log where the source has one, docker's
// timestamp otherwise); a browser's EventSource sends it back as Last-Event-ID when it
// reconnects, so the stream resumes where it was, without repeating a line. Only whole
// lines leave the server, each through the redactor (a secret split across two reads
// is still found). Buffers are bounded: a line is cut at maxLogLine, an event holds at
// most logChunk bytes, and a stream ends after streamFor (the browser reconnects).

const (
	maxLogLine = 16 << 10
	streamFor  = 10 * time.Minute
	heartbeat  = 15 * time.Second
)

// sse writes server-sent events.
type sse struct {
	w http.ResponseWriter
	f http.Flusher
}

func (s *Server) startSSE(w http.ResponseWriter) (*sse, error) {
	f, ok := w.(http.Flusher)
	if !ok {
		return nil, errorf(http.StatusInternalServerError, "streaming is not supported here")
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	io.WriteString(w, "retry: 2000\n\n")
	f.Flush()
	return &sse{w, f}, nil
}

// send writes one event; v is encoded (and redacted) as one line of JSON.
func (s *Server) send(e *sse, id, event string, v any) error {
	b, _ := s.encode(v)
	var buf bytes.Buffer
	if id != "" {
		fmt.Fprintf(&buf, "id: %s\n", id)
	}
	fmt.Fprintf(&buf, "event: %s\ndata: %s\n\n", event, bytes.TrimRight(b, "\n"))
	if _, err := e.w.Write(buf.Bytes()); err != nil {
		return err
	}
	e.f.Flush()
	return nil
}

func (e *sse) ping() error {
	if _, err := io.WriteString(e.w, ": ping\n\n"); err != nil {
		return err
	}
	e.f.Flush()
	return nil
}

// cursor is where a stream resumes: Last-Event-ID (a reconnect), else ?cursor= or ?offset=.
func cursor(r *http.Request) string {
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		return v
	}
	if v := r.URL.Query().Get("cursor"); v != "" {
		return v
	}
	return r.URL.Query().Get("offset")
}

// LogLines is the data of an event "lines".
type LogLines struct {
	Source string   `json:"source"` // scope | docker | train
	Lines  []string `json:"lines"`
	Cursor string   `json:"cursor,omitempty"`
}

// lineSplitter cuts a byte stream into whole lines; a line longer than maxLogLine is
// cut there. Off is the offset just after the last line it gave.
type lineSplitter struct {
	Off  int64
	part []byte
}

func (l *lineSplitter) feed(p []byte) []string {
	var out []string
	l.part = append(l.part, p...)
	for {
		i := bytes.IndexByte(l.part, '\n')
		if i < 0 || i >= maxLogLine {
			if i < 0 && len(l.part) < maxLogLine {
				break
			}
			i = maxLogLine - 1
			out = append(out, strings.ToValidUTF8(string(l.part[:i+1]), "\uFFFD"))
		} else {
			out = append(out, strings.ToValidUTF8(strings.TrimSuffix(string(l.part[:i]), "\r"), "\uFFFD"))
		}
		l.Off += int64(i + 1)
		l.part = l.part[i+1:]
	}
	if len(l.part) == 0 {
		l.part = nil
	}
	return out
}

func (s *Server) redactLines(ls []string) []string {
	for i, l := range ls {
		ls[i] = s.red.Redact(l)
	}
	return ls
}

// every is how often a followed log is read again.
func (s *Server) every() time.Duration {
	if s.opt.LogEvery > 0 {
		return s.opt.LogEvery
	}
	return 2 * time.Second
}

// follow calls read every s.every() until it says done, the stream has run streamFor,
// or the client goes away; it keeps the connection alive with comments.
func (s *Server) follow(ctx context.Context, e *sse, read func(ctx context.Context) (done bool, err error)) {
	end := time.Now().Add(streamFor)
	lastSent := time.Now()
	for time.Now().Before(end) {
		done, err := read(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			if s.send(e, "", "problem", apiError{oneLine(s.red.Redact(err.Error()))}) != nil {
				return
			}
		}
		if done {
			s.send(e, "", "end", struct{}{})
			return
		}
		if time.Since(lastSent) > heartbeat {
			if e.ping() != nil {
				return
			}
			lastSent = time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(s.every()):
		}
	}
}

// jobLogStream is GET /api/v1/jobs/{id}/log/stream: train.log from a byte offset,
// following while the job runs; ids are byte offsets.
func (s *Server) jobLogStream(w http.ResponseWriter, r *http.Request) {
	j, err := s.job(r)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	var off int64
	if v := cursor(r); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			s.writeErr(w, errorf(http.StatusBadRequest, "offset %q: want a byte offset", v))
			return
		}
		off = n
	}
	if !j.Local && s.opt.Trainer == nil {
		s.writeErr(w, errorf(http.StatusNotFound, "job %s runs on %s, which this server cannot reach", j.Job.ID, j.Job.Target))
		return
	}
	e, err := s.startSSE(w)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	ctx := r.Context()
	sp := &lineSplitter{Off: off}
	emit := func(p []byte) error {
		ls := sp.feed(p)
		if len(ls) == 0 {
			return nil
		}
		return s.send(e, strconv.FormatInt(sp.Off, 10), "lines", LogLines{Source: "train", Lines: s.redactLines(ls), Cursor: strconv.FormatInt(sp.Off, 10)})
	}
	if !j.Local {
		// over SSH, as `scopectl train logs -f`: Trainer.Logs follows until the job ends
		ctx, cancel := context.WithTimeout(ctx, streamFor)
		defer cancel()
		_, err := s.opt.Trainer.Logs(ctx, j.Job.ID, off, true, writerFunc(func(p []byte) (int, error) {
			for len(p) > 0 { // bounded events
				n := min(len(p), logChunk)
				if err := emit(p[:n]); err != nil {
					return 0, err
				}
				p = p[n:]
			}
			return len(p), nil
		}))
		if err != nil && ctx.Err() == nil {
			s.send(e, "", "problem", apiError{oneLine(s.red.Redact(err.Error()))})
			// the browser reconnects when the stream ends: not sooner than this
			select {
			case <-ctx.Done():
			case <-time.After(30 * time.Second):
			}
			return
		}
		if ctx.Err() == nil {
			s.send(e, "", "end", struct{}{})
		}
		return
	}
	p := filepath.Join(j.Job.JobDir, train.LogFile)
	buf := make([]byte, logChunk)
	s.follow(ctx, e, func(ctx context.Context) (bool, error) {
		f, err := os.Open(p)
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return false, err
		}
		if sp.Off+int64(len(sp.part)) > fi.Size() { // the log was replaced: from its start
			*sp = lineSplitter{}
			if err := s.send(e, "0", "reset", struct{}{}); err != nil {
				return true, err
			}
		}
		for i := 0; i < 16; i++ { // at most 16 chunks a round
			n, err := f.ReadAt(buf, sp.Off+int64(len(sp.part)))
			if n > 0 {
				if err := emit(buf[:n]); err != nil {
					return true, err
				}
			}
			if err != nil || n < len(buf) {
				break
			}
		}
		return s.jobEnded(j.Job.ID) && sp.Off+int64(len(sp.part)) >= fi.Size(), nil
	})
}

// jobEnded: the sampler last saw the job ended.
func (s *Server) jobEnded(id string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	js := s.jobs[id]
	if js == nil {
		return false
	}
	if js.res.State != nil {
		return js.res.State.Ended != nil || train.Terminal(js.res.State.Phase)
	}
	return js.res.Job.EndedAt != nil
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) {
	n := len(p)
	_, err := f(p)
	return n, err
}

// podLogStream is GET /api/v1/pods/{id}/logs: the Scope container's output through
// `docker logs` on an SSH host (cursor: docker's timestamp, "t" + Unix nanoseconds), or
// Scope's own log through its /api/v1/logs/tail elsewhere, as `scopectl logs` reads them
// (cursor: "o" + the log's byte offset).
func (s *Server) podLogStream(w http.ResponseWriter, r *http.Request) {
	s.ensurePolled(r.Context())
	id := r.PathValue("id")
	s.mu.RLock()
	st := s.pods[id]
	var scopeURL string
	if st != nil {
		scopeURL = s.scopeURL(st.view.Pod)
		if st.scope != nil && scopeURL == "" {
			scopeURL = st.scope.URL
		}
	}
	s.mu.RUnlock()
	if st == nil {
		s.writeErr(w, errorf(http.StatusNotFound, "pod %q not found", id))
		return
	}
	var rec *store.Pod
	if ps, ok := s.opt.Lib.Store.(store.PodStore); ok && id != LocalPod {
		if p, err := ps.GetPod(r.Context(), id); err == nil && p.Address != "" {
			rec = &p
		}
	}
	cur := cursor(r)
	if rec == nil && scopeURL == "" {
		s.writeErr(w, errorf(http.StatusConflict, "pod %s serves no Scope that this server can reach (status %s): no log to follow", id, st.view.Status))
		return
	}
	if rec != nil {
		s.dockerLogStream(w, r, rec, cur)
		return
	}
	var off int64
	if v, ok := strings.CutPrefix(cur, "o"); ok {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			s.writeErr(w, errorf(http.StatusBadRequest, "cursor %q: want o and a byte offset", cur))
			return
		}
		off = n
	} else if cur != "" {
		s.writeErr(w, errorf(http.StatusBadRequest, "cursor %q: want o and a byte offset", cur))
		return
	}
	e, err := s.startSSE(w)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	c := &scope.Client{Base: scopeURL, HTTP: s.opt.HTTP}
	var last []string // without offsets: the previous tail, to find the new lines
	s.follow(r.Context(), e, func(ctx context.Context) (bool, error) {
		t, err := c.LogsSince(ctx, 1000, off)
		if err != nil {
			return false, err
		}
		if off > 0 && t.HasOffset && t.Offset < off { // a new log file: from its start
			if err := s.send(e, "o0", "reset", struct{}{}); err != nil {
				return true, err
			}
			off = 0
			if t, err = c.LogsSince(ctx, 1000, 0); err != nil {
				return false, err
			}
		}
		fresh := t.Lines
		id := ""
		if t.HasOffset {
			off = t.Offset
			id = "o" + strconv.FormatInt(off, 10)
		} else {
			fresh = newLines(last, t.Lines)
			last = t.Lines
		}
		if len(fresh) == 0 {
			return false, nil
		}
		for _, ch := range chunkLines(fresh) {
			if err := s.send(e, id, "lines", LogLines{Source: "scope", Lines: s.redactLines(ch), Cursor: id}); err != nil {
				return true, err
			}
		}
		return false, nil
	})
}

// dockerLogStream follows the Scope container on an SSH host over one SSH connection.
func (s *Server) dockerLogStream(w http.ResponseWriter, r *http.Request, rec *store.Pod, cur string) {
	var since time.Time
	if v, ok := strings.CutPrefix(cur, "t"); ok {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			s.writeErr(w, errorf(http.StatusBadRequest, "cursor %q: want t and Unix nanoseconds", cur))
			return
		}
		since = time.Unix(0, n)
	} else if cur != "" {
		s.writeErr(w, errorf(http.StatusBadRequest, "cursor %q: want t and Unix nanoseconds", cur))
		return
	}
	name := rec.Container
	if name == "" {
		name = docker.DefaultName
	}
	rm, err := remote.Open(r.Context(), strings.TrimSuffix(rec.Address, "/")+"/", s.opt.RemoteEnv)
	if err != nil {
		s.writeErr(w, errorf(http.StatusBadGateway, "%s", oneLine(s.red.Redact(err.Error()))))
		return
	}
	defer rm.Close()
	run, ok := rm.(remote.Runner)
	if !ok {
		s.writeErr(w, errorf(http.StatusConflict, "%s cannot run commands", rm))
		return
	}
	e, err := s.startSSE(w)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	s.follow(r.Context(), e, func(ctx context.Context) (bool, error) {
		tail := 200
		if !since.IsZero() {
			tail = 1000
		}
		ls, err := docker.Logs(ctx, run, name, tail, since)
		if err != nil {
			return false, err
		}
		var text []string
		for _, l := range ls {
			if !l.Time.IsZero() && !l.Time.After(since) && !since.IsZero() {
				continue
			}
			text = append(text, l.Text)
			if l.Time.After(since) {
				since = l.Time
			}
		}
		if len(text) == 0 {
			return false, nil
		}
		id := ""
		if !since.IsZero() {
			id = "t" + strconv.FormatInt(since.UnixNano(), 10)
		}
		for _, ch := range chunkLines(text) {
			if err := s.send(e, id, "lines", LogLines{Source: "docker", Lines: s.redactLines(ch), Cursor: id}); err != nil {
				return true, err
			}
		}
		return false, nil
	})
}

// chunkLines splits lines into groups of at most logChunk bytes (each line cut at
// maxLogLine), so that no event is unbounded.
func chunkLines(ls []string) [][]string {
	var out [][]string
	var cur []string
	size := 0
	for _, l := range ls {
		if len(l) > maxLogLine {
			l = strings.ToValidUTF8(l[:maxLogLine], "")
		}
		if size+len(l) > logChunk && len(cur) > 0 {
			out = append(out, cur)
			cur, size = nil, 0
		}
		cur = append(cur, l)
		size += len(l)
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// newLines returns the lines of cur after its longest prefix that is a suffix of prev
// (all of cur when they do not overlap): a Scope without log offsets.
func newLines(prev, cur []string) []string {
	for k := min(len(prev), len(cur)); k > 0; k-- {
		match := true
		for i := 0; i < k; i++ {
			if prev[len(prev)-k+i] != cur[i] {
				match = false
				break
			}
		}
		if match {
			return cur[k:]
		}
	}
	return cur
}
