package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/daydreamlive/scopectl/internal/atomicfile"
	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/secret"
)

// Server serves the agent API for one folder. Set the exported fields before the first
// request; the zero values of the optional ones are sensible defaults.
type Server struct {
	Dir   string        // the folder files are published in (Scope's LoRA dir); must exist
	Token secret.Secret // bearer token; when unset every authenticated request is refused

	Log *slog.Logger // request log (method, path, status; never headers); nil: none

	// ChunkTimeout bounds reading one chunk body; a client that stalls longer is cut
	// off. Default 2 minutes.
	ChunkTimeout time.Duration
	// WriteIdleTimeout cuts off a download whose reader takes no data for this long.
	// Default 1 minute.
	WriteIdleTimeout time.Duration
	// ListHashBudget bounds the time one listing spends hashing files that are not in
	// the cache yet; the rest are listed without sha256. Default 10 seconds.
	ListHashBudget time.Duration
	// MaxBuffers is how many chunk bodies may be held in memory at once (each at most
	// MaxChunkSize); further chunk requests wait, then get 503. Default 16.
	MaxBuffers int
	// SessionTTL: upload sessions untouched this long are removed with their temporary
	// files. Default 7 days.
	SessionTTL time.Duration

	once     sync.Once
	initErr  error
	dir      string // absolute Dir
	root     *os.Root
	mux      *http.ServeMux
	tokenSum secret.Secret // hex sha256 of Token: compared in constant time, length-blind
	slots    chan []byte   // chunk buffers; a receive acquires one

	mu       sync.Mutex
	sessions map[string]*session
	hashes   map[string]hashEntry
	lastGC   time.Time
}

type hashEntry struct {
	fi  os.FileInfo
	sha string
}

func (s *Server) init() {
	s.once.Do(func() {
		if s.Dir == "" {
			s.initErr = errors.New("agent: no folder configured")
			return
		}
		dir, err := filepath.Abs(s.Dir)
		if err != nil {
			s.initErr = err
			return
		}
		s.dir = dir
		if s.root, err = os.OpenRoot(dir); err != nil {
			s.initErr = fmt.Errorf("agent: %w", err)
			return
		}
		if s.Token.IsSet() {
			sum := sha256.Sum256([]byte(s.Token.Reveal()))
			s.tokenSum = secret.New(hex.EncodeToString(sum[:]))
		}
		n := s.MaxBuffers
		if n <= 0 {
			n = 16
		}
		s.slots = make(chan []byte, n)
		for range n {
			s.slots <- nil // buffers are allocated on first use
		}
		s.sessions = map[string]*session{}
		s.hashes = map[string]hashEntry{}
		m := http.NewServeMux()
		m.HandleFunc("GET /v1/health", s.health)
		m.HandleFunc("GET /v1/files", s.list)
		m.HandleFunc("GET /v1/files/{name}", s.get)
		m.HandleFunc("GET /v1/files/{name}/sha256", s.hash)
		m.HandleFunc("DELETE /v1/files/{name}", s.delete)
		m.HandleFunc("POST /v1/uploads", s.create)
		m.HandleFunc("PUT /v1/uploads/{id}/chunks/{index}", s.putChunk)
		m.HandleFunc("POST /v1/uploads/{id}/commit", s.commit)
		m.HandleFunc("DELETE /v1/uploads/{id}", s.abort)
		m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			writeError(w, http.StatusNotFound, CodeNotFound, "no such API endpoint")
		})
		s.mux = m
	})
}

// Init checks the configuration (the folder can be opened) without serving anything.
func (s *Server) Init() error {
	s.init()
	return s.initErr
}

// Close releases the folder handle. In-flight requests should be finished first
// (http.Server.Shutdown).
func (s *Server) Close() error {
	s.init()
	if s.root != nil {
		return s.root.Close()
	}
	return nil
}

// HTTPServer wraps s in an http.Server with timeouts that keep stalled or slow clients
// from holding connections forever. The caller sets Addr/TLSConfig and serves.
func (s *Server) HTTPServer() *http.Server {
	var errLog *slog.Logger
	if s.Log != nil {
		errLog = s.Log
	} else {
		errLog = slog.New(slog.DiscardHandler)
	}
	return &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       s.chunkTimeout() + 30*time.Second, // whole request; chunk bodies are bounded tighter
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(errLog.Handler(), slog.LevelDebug),
	}
}

func (s *Server) chunkTimeout() time.Duration {
	if s.ChunkTimeout > 0 {
		return s.ChunkTimeout
	}
	return 2 * time.Minute
}

func (s *Server) writeIdle() time.Duration {
	if s.WriteIdleTimeout > 0 {
		return s.WriteIdleTimeout
	}
	return time.Minute
}

func (s *Server) sessionTTL() time.Duration {
	if s.SessionTTL > 0 {
		return s.SessionTTL
	}
	return 7 * 24 * time.Hour
}

// statusWriter records the status for the request log.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// ServeHTTP authenticates and routes a request.
func (s *Server) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	s.init()
	w := &statusWriter{ResponseWriter: rw}
	start := time.Now()
	defer func() {
		if s.Log != nil {
			// Only the method and path: never headers (the token) or the query.
			s.Log.Info("request", "method", r.Method, "path", r.URL.Path, "status", w.status,
				"ms", time.Since(start).Milliseconds(), "remote", r.RemoteAddr)
		}
	}()
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if s.initErr != nil {
		writeError(w, http.StatusInternalServerError, CodeInternal, "agent misconfigured")
		return
	}
	if r.URL.Path != "/v1/health" && !s.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="scopectl-agent"`)
		writeError(w, http.StatusUnauthorized, CodeUnauthorized, "missing or wrong bearer token")
		return
	}
	s.mux.ServeHTTP(w, r)
}

func (s *Server) authorized(r *http.Request) bool {
	if !s.tokenSum.IsSet() {
		return false
	}
	h := r.Header.Get("Authorization")
	const prefix = "Bearer "
	if len(h) <= len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(h[len(prefix):])))
	return s.tokenSum.Equal(secret.New(hex.EncodeToString(sum[:])))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"encoding the reply failed","code":"internal"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
	defer rc.SetWriteDeadline(time.Time{})
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, status int, code, format string, a ...any) {
	writeJSON(w, status, ErrorBody{Error: fmt.Sprintf(format, a...), Code: code})
}

// fail answers err with the status its kind calls for. Paths in messages are relative
// to the folder (os.Root reports the names it was given).
func fail(w http.ResponseWriter, err error) {
	var mbe *http.MaxBytesError
	switch {
	case errors.Is(err, remote.ErrBadName):
		writeError(w, http.StatusBadRequest, CodeBadName, "%v", err)
	case errors.Is(err, errNoUpload):
		writeError(w, http.StatusNotFound, CodeNoUpload, "%v", err)
	case errors.Is(err, remote.ErrNotFound), errors.Is(err, fs.ErrNotExist):
		writeError(w, http.StatusNotFound, CodeNotFound, "%v", err)
	case errors.As(err, &mbe):
		writeError(w, http.StatusRequestEntityTooLarge, CodeTooLarge, "request body larger than %d bytes", mbe.Limit)
	case errors.Is(err, syscall.ENOSPC):
		writeError(w, http.StatusInsufficientStorage, CodeNoSpace, "%v", err)
	case errors.Is(err, os.ErrDeadlineExceeded):
		writeError(w, http.StatusRequestTimeout, CodeTimeout, "request body not received in time")
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusServiceUnavailable, CodeBusy, "request cancelled: %v", err)
	default:
		writeError(w, http.StatusInternalServerError, CodeInternal, "%v", err)
	}
}

// checkName refuses what remote.CheckName refuses, and scopectl's own temporary names.
func checkName(name string) error {
	if err := remote.CheckName(name); err != nil {
		return err
	}
	if remote.IsTemp(name) || atomicfile.IsTemp(name) {
		return fmt.Errorf("%w %q: reserved for scopectl's temporary files", remote.ErrBadName, name)
	}
	return nil
}

// published returns the FileInfo of a published regular file (symlinks and other
// non-regular files are not published files: not found).
func (s *Server) published(name string) (os.FileInfo, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	fi, err := s.root.Lstat(name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s: %w", name, remote.ErrNotFound)
		}
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: %w (not a regular file)", name, remote.ErrNotFound)
	}
	return fi, nil
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, Health{Status: "ok", API: APIVersion})
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	f, err := s.root.Open(".")
	if err != nil {
		fail(w, err)
		return
	}
	des, err := f.ReadDir(-1)
	f.Close()
	if err != nil {
		fail(w, err)
		return
	}
	budget := s.ListHashBudget
	if budget <= 0 {
		budget = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(r.Context(), budget)
	defer cancel()
	out := []Entry{}
	seen := map[string]bool{}
	for _, de := range des {
		name := de.Name()
		if !de.Type().IsRegular() || checkName(name) != nil {
			continue
		}
		fi, err := de.Info()
		if err != nil {
			continue // removed meanwhile
		}
		seen[name] = true
		e := Entry{Name: name, Size: fi.Size(), ModTime: fi.ModTime().UTC()}
		if sha, ok := s.cachedHash(name, fi); ok {
			e.SHA256 = sha
		} else if ctx.Err() == nil {
			if sha, err := s.hashFile(ctx, name); err == nil {
				e.SHA256 = sha
			}
		}
		out = append(out, e)
	}
	s.mu.Lock()
	for n := range s.hashes {
		if !seen[n] {
			delete(s.hashes, n)
		}
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) cachedHash(name string, fi os.FileInfo) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.hashes[name]
	if ok && os.SameFile(c.fi, fi) && c.fi.Size() == fi.Size() && c.fi.ModTime().Equal(fi.ModTime()) {
		return c.sha, true
	}
	return "", false
}

func (s *Server) remember(name string, fi os.FileInfo, sha string) {
	s.mu.Lock()
	s.hashes[name] = hashEntry{fi: fi, sha: sha}
	s.mu.Unlock()
}

// hashFile computes a published file's sha256 and caches it. The cache entry is keyed by
// the FileInfo taken from the open file before reading; a file changed while hashing is
// caught by comparing it with the one taken after.
func (s *Server) hashFile(ctx context.Context, name string) (string, error) {
	f, err := s.root.Open(name)
	if err != nil {
		return "", err
	}
	defer f.Close()
	before, err := f.Stat()
	if err != nil {
		return "", err
	}
	if !before.Mode().IsRegular() {
		return "", fmt.Errorf("%s: %w (not a regular file)", name, remote.ErrNotFound)
	}
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		n, err := f.Read(buf)
		h.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", err
		}
	}
	sha := hex.EncodeToString(h.Sum(nil))
	if after, err := s.root.Lstat(name); err == nil && os.SameFile(before, after) &&
		after.Size() == before.Size() && after.ModTime().Equal(before.ModTime()) {
		s.remember(name, after, sha)
	}
	return sha, nil
}

func (s *Server) hash(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	fi, err := s.published(name)
	if err != nil {
		fail(w, err)
		return
	}
	sha, ok := s.cachedHash(name, fi)
	if !ok {
		if sha, err = s.hashFile(r.Context(), name); err != nil {
			fail(w, err)
			return
		}
	}
	writeJSON(w, http.StatusOK, Entry{Name: name, Size: fi.Size(), SHA256: sha, ModTime: fi.ModTime().UTC()})
}

// idleWriter pushes the connection's write deadline forward while data flows, so that a
// reader that stops reading is cut off after WriteIdleTimeout.
type idleWriter struct {
	http.ResponseWriter
	rc   *http.ResponseController
	idle time.Duration
	last time.Time
}

func (w *idleWriter) Write(p []byte) (int, error) {
	if now := time.Now(); now.Sub(w.last) > time.Second {
		w.last = now
		_ = w.rc.SetWriteDeadline(now.Add(w.idle))
	}
	return w.ResponseWriter.Write(p)
}

func (w *idleWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (s *Server) get(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	fi, err := s.published(name)
	if err != nil {
		fail(w, err)
		return
	}
	f, err := s.root.Open(name)
	if err != nil {
		fail(w, err)
		return
	}
	defer f.Close()
	ofi, err := f.Stat()
	if err != nil || !os.SameFile(fi, ofi) { // replaced between Lstat and Open
		fail(w, fmt.Errorf("%s: %w (changed while opening)", name, remote.ErrNotFound))
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	if sha, ok := s.cachedHash(name, ofi); ok {
		w.Header().Set("X-File-Sha256", sha)
	}
	rc := http.NewResponseController(w)
	defer rc.SetWriteDeadline(time.Time{})
	http.ServeContent(&idleWriter{ResponseWriter: w, rc: rc, idle: s.writeIdle()}, r, "", ofi.ModTime(), f)
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if _, err := s.published(name); err != nil {
		fail(w, err)
		return
	}
	if err := s.root.Remove(name); err != nil {
		fail(w, err)
		return
	}
	s.mu.Lock()
	delete(s.hashes, name)
	s.mu.Unlock()
	if err := atomicfile.SyncDir(s.dir); err != nil {
		fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
