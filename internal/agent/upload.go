package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/daydreamlive/scopectl/internal/atomicfile"
	"github.com/daydreamlive/scopectl/internal/remote"
)

var errNoUpload = errors.New("no such upload session (committed, abandoned or expired)")

const (
	stateVersion  = 1
	statePrefix   = remote.TempPrefix + "upload-"
	stateSuffix   = ".state"
	maxStateBytes = 4 << 20
	maxJSONBody   = 64 << 10
	slotWait      = 30 * time.Second // a chunk that finds no free buffer this long gets 503
	gcInterval    = time.Hour
)

// state is an upload session as persisted next to its temporary file.
type state struct {
	Version   int       `json:"version"`
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Size      int64     `json:"size"`
	SHA256    string    `json:"sha256"`
	ChunkSize int64     `json:"chunk_size"`
	Chunks    []string  `json:"chunks"` // sha256 of each chunk received and fsynced; "" if not
	Created   time.Time `json:"created"`
}

func (st *state) temp() string { return remote.TempName(st.Name, st.SHA256) }

func (st *state) have() []int {
	out := []int{}
	for i, c := range st.Chunks {
		if c != "" {
			out = append(out, i)
		}
	}
	return out
}

func (st *state) missing() []int {
	var out []int
	for i, c := range st.Chunks {
		if c == "" {
			out = append(out, i)
		}
	}
	return out
}

func (st *state) upload() Upload {
	return Upload{ID: st.ID, Name: st.Name, Size: st.Size, SHA256: st.SHA256, ChunkSize: st.ChunkSize,
		Chunks: len(st.Chunks), Have: st.have(), Created: st.Created}
}

// session is the in-memory handle of an upload. Chunk writes share rw; loading,
// creating, committing and abandoning hold it exclusively, so no chunk is ever written
// into a file that has been renamed to its final name.
type session struct {
	id     string
	rw     sync.RWMutex
	stMu   sync.Mutex // st.Chunks and the state file, under rw.RLock
	loaded bool
	gone   bool // committed or abandoned: this handle is dead
	st     state
}

// sessionID derives the id of the upload of (name, sha256).
func sessionID(name, sha string) string {
	h := sha256.Sum256([]byte("scopectl-agent-upload\x00" + name + "\x00" + sha))
	return hex.EncodeToString(h[:16])
}

func validID(id string) bool {
	if len(id) != 32 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func stateName(id string) string { return statePrefix + id + stateSuffix }

func (s *Server) readState(id string) (state, error) {
	var st state
	name := stateName(id)
	fi, err := s.root.Lstat(name)
	if err != nil {
		return st, err
	}
	if !fi.Mode().IsRegular() || fi.Size() > maxStateBytes {
		return st, fmt.Errorf("%s: not a regular file of at most %d bytes", name, maxStateBytes)
	}
	b, err := s.root.ReadFile(name)
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("%s: %v", name, err)
	}
	switch {
	case st.Version != stateVersion, st.ID != id, checkName(st.Name) != nil, !IsSHA256(st.SHA256),
		sessionID(st.Name, st.SHA256) != id, st.Size < 0, st.ChunkSize < MinChunkSize, st.ChunkSize > MaxChunkSize,
		len(st.Chunks) != NumChunks(st.Size, st.ChunkSize):
		return st, fmt.Errorf("%s: inconsistent session state", name)
	}
	for _, c := range st.Chunks {
		if c != "" && !IsSHA256(c) {
			return st, fmt.Errorf("%s: inconsistent session state", name)
		}
	}
	tfi, err := s.root.Lstat(st.temp())
	if err != nil || !tfi.Mode().IsRegular() || tfi.Size() != st.Size {
		return st, fmt.Errorf("%s: temporary file missing or of the wrong size", name)
	}
	return st, nil
}

// writeState persists st atomically (the chunks it records are already fsynced).
func (s *Server) writeState(st *state) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(s.dir, stateName(st.ID)), b, 0o600)
}

// session returns the live session id, loading it from disk if this process has not
// seen it (an agent restart). With req, a missing or unusable session is created.
func (s *Server) session(id string, req *CreateRequest) (*session, error) {
	for range 3 { // a handle may die (commit) between lookup and lock; take a fresh one
		s.mu.Lock()
		sess := s.sessions[id]
		if sess == nil {
			sess = &session{id: id}
			s.sessions[id] = sess
		}
		s.mu.Unlock()
		ok, err := s.prepare(sess, req)
		if ok || err != nil {
			return sess, err
		}
	}
	return nil, errNoUpload
}

// prepare loads or creates sess; false if its handle is dead and a fresh one is needed.
func (s *Server) prepare(sess *session, req *CreateRequest) (bool, error) {
	sess.rw.Lock()
	defer sess.rw.Unlock()
	if sess.gone {
		return false, nil
	}
	if !sess.loaded {
		st, err := s.readState(sess.id)
		switch {
		case err == nil:
			sess.st, sess.loaded = st, true
		case !errors.Is(err, fs.ErrNotExist) && s.Log != nil:
			s.Log.Warn("discarding upload session", "id", sess.id, "err", err)
		}
	}
	if req != nil && sess.loaded && sess.st.Name == req.Name && sess.st.SHA256 == req.SHA256 && sess.st.Size == req.Size {
		if fi, err := s.root.Lstat(sess.st.temp()); err == nil && fi.Mode().IsRegular() && fi.Size() == sess.st.Size {
			return true, nil // resume
		}
	}
	if req == nil {
		if !sess.loaded {
			// Kill the handle: whoever else holds it must look up a fresh one, or two
			// handles (two locks) could end up serving one session.
			sess.gone = true
			s.forget(sess)
			return true, errNoUpload
		}
		return true, nil
	}
	cs := req.ChunkSize
	if cs <= 0 {
		cs = DefaultChunkSize
	}
	cs = max(MinChunkSize, min(MaxChunkSize, cs))
	n := NumChunks(req.Size, cs)
	if n > MaxChunks {
		return true, fmt.Errorf("%w: %d bytes is more than the agent takes (%d chunks of %d bytes)", errTooLarge, req.Size, MaxChunks, cs)
	}
	st := state{Version: stateVersion, ID: sess.id, Name: req.Name, Size: req.Size, SHA256: req.SHA256,
		ChunkSize: cs, Chunks: make([]string, n), Created: time.Now().UTC()}
	f, err := s.root.OpenFile(st.temp(), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return true, err
	}
	err = preallocate(f, st.Size)
	if err == nil {
		err = f.Truncate(st.Size)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = s.writeState(&st)
	}
	if err != nil {
		s.root.Remove(st.temp())
		return true, err
	}
	sess.st, sess.loaded = st, true
	return true, nil
}

// forget drops a dead or unloadable handle from the map (if it is still the one there).
func (s *Server) forget(sess *session) {
	s.mu.Lock()
	if s.sessions[sess.id] == sess {
		delete(s.sessions, sess.id)
	}
	s.mu.Unlock()
}

// end removes a session's files and kills its handle; sess.rw must be held exclusively.
func (s *Server) end(sess *session, removeTemp bool) {
	if removeTemp {
		s.root.Remove(sess.st.temp())
	}
	s.root.Remove(stateName(sess.id))
	sess.gone = true
	s.forget(sess)
}

var errTooLarge = errors.New("too large")

func (s *Server) create(w http.ResponseWriter, r *http.Request) {
	var req CreateRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxJSONBody))
	if err := dec.Decode(&req); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			fail(w, err)
			return
		}
		writeError(w, http.StatusBadRequest, CodeBadRequest, "request body: %v", err)
		return
	}
	if err := checkName(req.Name); err != nil {
		fail(w, err)
		return
	}
	if !IsSHA256(req.SHA256) {
		writeError(w, http.StatusBadRequest, CodeBadRequest, "sha256 must be 64 lowercase hex digits")
		return
	}
	if req.Size < 0 {
		writeError(w, http.StatusBadRequest, CodeBadRequest, "negative size")
		return
	}
	s.gc(time.Now())
	sess, err := s.session(sessionID(req.Name, req.SHA256), &req)
	if errors.Is(err, errTooLarge) {
		writeError(w, http.StatusRequestEntityTooLarge, CodeTooLarge, "%v", err)
		return
	}
	if err != nil {
		fail(w, err)
		return
	}
	sess.rw.RLock()
	sess.stMu.Lock()
	up := sess.st.upload()
	sess.stMu.Unlock()
	sess.rw.RUnlock()
	writeJSON(w, http.StatusOK, up)
}

// liveSession resolves the {id} of a request to a loaded session.
func (s *Server) liveSession(r *http.Request) (*session, error) {
	id := r.PathValue("id")
	if !validID(id) {
		return nil, errNoUpload
	}
	return s.session(id, nil)
}

func (s *Server) putChunk(w http.ResponseWriter, r *http.Request) {
	sess, err := s.liveSession(r)
	if err != nil {
		fail(w, err)
		return
	}
	i, err := strconv.Atoi(r.PathValue("index"))
	sess.rw.RLock()
	size, cs, n := sess.st.Size, sess.st.ChunkSize, len(sess.st.Chunks)
	sess.rw.RUnlock()
	if err != nil || i < 0 || i >= n {
		writeError(w, http.StatusBadRequest, CodeBadRequest, "chunk index %q out of range [0, %d)", r.PathValue("index"), n)
		return
	}
	want := r.Header.Get(ChunkSHA256Header)
	if !IsSHA256(want) {
		writeError(w, http.StatusBadRequest, CodeBadRequest, "missing or malformed %s header", ChunkSHA256Header)
		return
	}
	length := ChunkLen(size, cs, i)
	encoded := r.Header.Get("Content-Encoding")
	if encoded != "" && encoded != "zstd" {
		writeError(w, http.StatusUnsupportedMediaType, CodeBadRequest, "Content-Encoding %q: only zstd is accepted", encoded)
		return
	}
	if encoded == "" && r.ContentLength >= 0 && r.ContentLength != length {
		writeError(w, http.StatusBadRequest, CodeBadRequest, "chunk %d is %d bytes, not %d", i, length, r.ContentLength)
		return
	}

	// Hold one of a bounded number of buffers while the body arrives, and bound how
	// long a stalled client may hold it.
	var buf []byte
	select {
	case buf = <-s.slots:
	case <-r.Context().Done():
		return
	case <-time.After(slotWait):
		writeError(w, http.StatusServiceUnavailable, CodeBusy, "too many chunks in flight; retry")
		return
	}
	defer func() { s.slots <- buf }()
	if int64(cap(buf)) < length {
		buf = make([]byte, MaxChunkSize)
	}
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(s.chunkTimeout()))
	data := buf[:length]
	if encoded == "zstd" {
		// A compressed chunk may not decompress to more than its declared length; the
		// sha256 below checks the decompressed bytes as for any chunk.
		if err := readZstd(w, r.Body, data); err != nil {
			w.Header().Set("Connection", "close")
			writeError(w, http.StatusBadRequest, CodeBadRequest, "chunk %d: %v", i, err)
			return
		}
		_ = rc.SetReadDeadline(time.Time{})
		goto verify
	}
	{
		body := http.MaxBytesReader(w, r.Body, length)
		if _, err := io.ReadFull(body, data); err != nil {
			// The deadline stays: the connection is not reused, and nothing waits on it.
			w.Header().Set("Connection", "close")
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
				writeError(w, http.StatusBadRequest, CodeBadRequest, "chunk %d: body shorter than %d bytes", i, length)
				return
			}
			fail(w, err)
			return
		}
		if k, err := body.Read(make([]byte, 1)); k > 0 || (err != nil && err != io.EOF) {
			w.Header().Set("Connection", "close")
			writeError(w, http.StatusRequestEntityTooLarge, CodeTooLarge, "chunk %d: body longer than %d bytes", i, length)
			return
		}
		_ = rc.SetReadDeadline(time.Time{}) // the body is in; the connection may serve more
	}
verify:
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); got != want {
		writeError(w, http.StatusUnprocessableEntity, CodeChunkMismatch, "chunk %d: sha256 %s, header says %s (damaged in transit?)", i, got, want)
		return
	}

	sess.rw.RLock()
	defer sess.rw.RUnlock()
	if sess.gone || sess.st.Size != size || sess.st.ChunkSize != cs || len(sess.st.Chunks) != n {
		fail(w, errNoUpload) // committed, abandoned or restarted meanwhile
		return
	}
	f, err := s.root.OpenFile(sess.st.temp(), os.O_WRONLY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		err = errNoUpload // removed behind the agent's back
	}
	if err != nil {
		fail(w, err)
		return
	}
	_, err = f.WriteAt(data, int64(i)*cs)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		fail(w, err)
		return
	}
	sess.stMu.Lock()
	sess.st.Chunks[i] = want
	err = s.writeState(&sess.st)
	if err != nil {
		sess.st.Chunks[i] = ""
	}
	sess.stMu.Unlock()
	if err != nil {
		fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) commit(w http.ResponseWriter, r *http.Request) {
	sess, err := s.liveSession(r)
	if err != nil {
		fail(w, err)
		return
	}
	sess.rw.Lock()
	defer sess.rw.Unlock()
	if sess.gone {
		fail(w, errNoUpload)
		return
	}
	st := &sess.st
	if missing := st.missing(); len(missing) > 0 {
		writeJSON(w, http.StatusConflict, ErrorBody{Code: CodeIncomplete, Missing: missing,
			Error: fmt.Sprintf("%s: %d of %d chunks not received", st.Name, len(missing), len(st.Chunks))})
		return
	}
	f, err := s.root.OpenFile(st.temp(), os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		s.end(sess, false)
		err = errNoUpload
	}
	if err != nil {
		fail(w, err)
		return
	}
	defer f.Close()
	// One pass: the whole sha256, and each chunk against the hash it was received with
	// (so that a chunk damaged on disk is sent again rather than failing the upload).
	whole := sha256.New()
	bad, err := verifyChunks(r.Context(), f, st, whole)
	if err != nil {
		fail(w, err)
		return
	}
	if len(bad) > 0 {
		for _, i := range bad {
			st.Chunks[i] = ""
		}
		if err := s.writeState(st); err != nil {
			fail(w, err)
			return
		}
		writeJSON(w, http.StatusConflict, ErrorBody{Code: CodeIncomplete, Missing: bad,
			Error: fmt.Sprintf("%s: %d chunks changed on disk since they were received", st.Name, len(bad))})
		return
	}
	if got := hex.EncodeToString(whole.Sum(nil)); got != st.SHA256 {
		f.Close()
		s.end(sess, true)
		writeError(w, http.StatusUnprocessableEntity, CodeHashMismatch, "%s: sha256 of the received content is %s, expected %s", st.Name, got, st.SHA256)
		return
	}
	if err := f.Sync(); err != nil {
		fail(w, err)
		return
	}
	if err := f.Close(); err != nil {
		fail(w, err)
		return
	}
	if err := s.root.Rename(st.temp(), st.Name); err != nil {
		fail(w, err)
		return
	}
	err = atomicfile.SyncDir(s.dir)
	s.end(sess, false)
	if err != nil {
		fail(w, err)
		return
	}
	e := Entry{Name: st.Name, Size: st.Size, SHA256: st.SHA256}
	if fi, err := s.root.Lstat(st.Name); err == nil {
		s.remember(st.Name, fi, st.SHA256)
		e.ModTime = fi.ModTime().UTC()
	}
	writeJSON(w, http.StatusOK, e)
}

func verifyChunks(ctx context.Context, f *os.File, st *state, whole hash.Hash) ([]int, error) {
	var bad []int
	buf := make([]byte, 1<<20)
	ch := sha256.New()
	for i, want := range st.Chunks {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		ch.Reset()
		off := int64(i) * st.ChunkSize
		n := ChunkLen(st.Size, st.ChunkSize, i)
		got, err := io.CopyBuffer(io.MultiWriter(whole, ch), io.NewSectionReader(f, off, n), buf)
		if err != nil {
			return nil, err
		}
		if got != n || hex.EncodeToString(ch.Sum(nil)) != want {
			bad = append(bad, i)
		}
	}
	if fi, err := f.Stat(); err == nil && fi.Size() != st.Size {
		// Longer than it should be: cut; shorter shows up as bad chunks above.
		if err := f.Truncate(st.Size); err != nil {
			return nil, err
		}
	}
	return bad, nil
}

func (s *Server) abort(w http.ResponseWriter, r *http.Request) {
	sess, err := s.liveSession(r)
	if err != nil {
		fail(w, err)
		return
	}
	sess.rw.Lock()
	defer sess.rw.Unlock()
	if sess.gone {
		fail(w, errNoUpload)
		return
	}
	s.end(sess, true)
	w.WriteHeader(http.StatusNoContent)
}

// gc removes, at most once per gcInterval, upload sessions untouched for SessionTTL, and
// stale temporary files of scopectl's that no session owns.
func (s *Server) gc(now time.Time) {
	s.mu.Lock()
	if now.Sub(s.lastGC) < gcInterval {
		s.mu.Unlock()
		return
	}
	s.lastGC = now
	s.mu.Unlock()
	f, err := s.root.Open(".")
	if err != nil {
		return
	}
	des, err := f.ReadDir(-1)
	f.Close()
	if err != nil {
		return
	}
	ttl := s.sessionTTL()
	owned := map[string]bool{}
	var oldTemps []string
	for _, de := range des {
		name := de.Name()
		if !de.Type().IsRegular() {
			continue
		}
		fi, err := de.Info()
		if err != nil {
			continue
		}
		old := now.Sub(fi.ModTime()) > ttl
		switch {
		case strings.HasPrefix(name, statePrefix) && strings.HasSuffix(name, stateSuffix):
			id := strings.TrimSuffix(strings.TrimPrefix(name, statePrefix), stateSuffix)
			if !validID(id) {
				continue
			}
			if st, err := s.readState(id); err == nil {
				owned[st.temp()] = true
			}
			if old {
				s.expire(id, ttl, now)
			}
		case remote.IsTemp(name) && strings.HasSuffix(name, ".tmp") && old:
			oldTemps = append(oldTemps, name)
		case atomicfile.IsTemp(name) && strings.HasPrefix(name, "."+statePrefix) && old:
			s.root.Remove(name)
		}
	}
	for _, name := range oldTemps {
		if !owned[name] {
			s.root.Remove(name)
		}
	}
}

func (s *Server) expire(id string, ttl time.Duration, now time.Time) {
	s.mu.Lock()
	sess := s.sessions[id]
	if sess == nil {
		sess = &session{id: id}
		s.sessions[id] = sess
	}
	s.mu.Unlock()
	sess.rw.Lock()
	defer sess.rw.Unlock()
	if sess.gone {
		return
	}
	fi, err := s.root.Lstat(stateName(id))
	if err != nil || now.Sub(fi.ModTime()) <= ttl {
		if !sess.loaded {
			sess.gone = true // see prepare
			s.forget(sess)
		}
		return
	}
	if st, err := s.readState(id); err == nil {
		sess.st = st
		s.root.Remove(st.temp())
	}
	s.end(sess, false)
	if s.Log != nil {
		s.Log.Info("expired upload session", "id", id)
	}
}
