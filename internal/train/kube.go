package train

// The pod side of a training machine on Kubernetes (internal/provider/kubernetes builds
// the Job): the workspace agent sidecar, the holder that keeps the pod up while jobs run
// in it, and the init step that copies scopectl out of the agent image. The laptop
// drives the pod with the same Trainer code as an SSH machine: files through the agent,
// sh scripts through exec.

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/daydreamlive/scopectl/internal/agent"
	"github.com/daydreamlive/scopectl/internal/atomicfile"
	"github.com/daydreamlive/scopectl/internal/secret"
	"github.com/daydreamlive/scopectl/internal/store"
)

// WorkspaceAgent serves every folder under Root through the agent API: the folder
// /workspace/.scopectl/jobs/ID is at /d/%2Fworkspace%2F.scopectl%2Fjobs%2FID/v1/…, one
// path segment, so that an http:// remote opened at that prefix is that folder, as
// ssh://host/DIR is on an SSH machine. A folder is made on its first authorized
// request; nothing outside Root is served.
type WorkspaceAgent struct {
	Root  string
	Token secret.Secret
	Log   *slog.Logger

	once    sync.Once
	root    string
	initErr error
	sum     [32]byte
	mu      sync.Mutex
	dirs    map[string]*agent.Server
}

// maxAgentDirs bounds the folders served at once (each holds a handle).
const maxAgentDirs = 256

func (w *WorkspaceAgent) init() {
	w.once.Do(func() {
		if !w.Token.IsSet() {
			w.initErr = errors.New("workspace agent: no token (SCOPECTL_AGENT_TOKEN)")
			return
		}
		w.sum = sha256.Sum256([]byte(w.Token.Reveal()))
		root, err := filepath.Abs(w.Root)
		if err == nil {
			err = os.MkdirAll(root, 0o755)
		}
		if err == nil {
			root, err = filepath.EvalSymlinks(root)
		}
		w.root, w.initErr = root, err
		w.dirs = map[string]*agent.Server{}
	})
}

// Init checks the configuration.
func (w *WorkspaceAgent) Init() error {
	w.init()
	return w.initErr
}

// Close releases every folder's handle.
func (w *WorkspaceAgent) Close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for k, s := range w.dirs {
		s.Close()
		delete(w.dirs, k)
	}
}

func (w *WorkspaceAgent) authorized(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	const prefix = "Bearer "
	if len(h) <= len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(h[len(prefix):])))
	return subtle.ConstantTimeCompare(got[:], w.sum[:]) == 1
}

func agentError(rw http.ResponseWriter, status int, code, msg string) {
	rw.Header().Set("Content-Type", "application/json")
	rw.WriteHeader(status)
	json.NewEncoder(rw).Encode(map[string]string{"error": msg, "code": code})
}

// ServeHTTP routes a request to its folder's agent.
func (w *WorkspaceAgent) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	w.init()
	if w.initErr != nil {
		agentError(rw, http.StatusInternalServerError, agent.CodeInternal, "agent misconfigured")
		return
	}
	p := r.URL.EscapedPath()
	if p == "/v1/health" {
		rw.Header().Set("Content-Type", "application/json")
		io.WriteString(rw, `{"ok":true}`+"\n")
		return
	}
	rest, ok := strings.CutPrefix(p, "/d/")
	seg, api, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 || !strings.HasPrefix("/"+api, "/v1/") {
		agentError(rw, http.StatusNotFound, agent.CodeNotFound, "no such API endpoint")
		return
	}
	if !w.authorized(r) {
		rw.Header().Set("WWW-Authenticate", `Bearer realm="scopectl-agent"`)
		agentError(rw, http.StatusUnauthorized, agent.CodeUnauthorized, "missing or wrong bearer token")
		return
	}
	dir, err := url.PathUnescape(seg)
	if err == nil {
		dir, err = w.folder(dir)
	}
	if err != nil {
		agentError(rw, http.StatusBadRequest, agent.CodeBadRequest, err.Error())
		return
	}
	s, err := w.server(dir)
	if err != nil {
		agentError(rw, http.StatusInternalServerError, agent.CodeInternal, err.Error())
		return
	}
	api = "/" + api
	path, err := url.PathUnescape(api)
	if err != nil {
		agentError(rw, http.StatusBadRequest, agent.CodeBadRequest, "bad path")
		return
	}
	r2 := new(http.Request)
	*r2 = *r
	u := *r.URL
	u.Path, u.RawPath = path, api
	r2.URL = &u
	s.ServeHTTP(rw, r2)
}

// folder checks that dir is an absolute folder under the root, through symlinks too,
// and makes it.
func (w *WorkspaceAgent) folder(dir string) (string, error) {
	if !filepath.IsAbs(dir) || filepath.Clean(dir) != dir {
		return "", fmt.Errorf("folder %q: want a clean absolute path", dir)
	}
	inside := func(d string) bool {
		rel, err := filepath.Rel(w.root, d)
		return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
	}
	if !inside(dir) {
		return "", fmt.Errorf("folder %q is outside the workspace %s", dir, w.root)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	real, err := filepath.EvalSymlinks(dir)
	if err != nil || !inside(real) {
		return "", fmt.Errorf("folder %q leads outside the workspace %s", dir, w.root)
	}
	return real, nil
}

func (w *WorkspaceAgent) server(dir string) (*agent.Server, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if s := w.dirs[dir]; s != nil {
		return s, nil
	}
	if len(w.dirs) >= maxAgentDirs {
		for k, s := range w.dirs { // drop one; it is opened again when asked for
			s.Close()
			delete(w.dirs, k)
			break
		}
	}
	s := &agent.Server{Dir: dir, Token: w.Token, Log: w.Log}
	if err := s.Init(); err != nil {
		return nil, err
	}
	w.dirs[dir] = s
	return s, nil
}

// HoldOptions tune Hold.
type HoldOptions struct {
	Workspace string
	Name      string        // the Kubernetes Job: its release file is ReleaseDir/NAME.release
	Linger    time.Duration // how long to stay up once every job has ended (default 30m)
	// StartTimeout: no job started in this long after the hold began ends it (default 1h).
	StartTimeout time.Duration
	Poll         time.Duration // default 2s
	Log          io.Writer
}

// ReleaseDir (under the workspace) holds the release files of training pods.
const ReleaseDir = ".scopectl/kube"

// ReleaseFile is the name of Job name's release file in ReleaseDir.
func ReleaseFile(name string) string { return name + ".release" }

// Hold is the main process of a training pod on Kubernetes: it keeps the pod (and its
// GPU) while the jobs `train run` starts in it run, and ends when the laptop releases
// it (after the last checkpoint is collected), or when every job started since the hold
// began has ended and nobody released it within Linger, or when no job started within
// StartTimeout. It returns the newest job's final phase; the pod's exit status follows
// it (failed: 1), so the Kubernetes Job succeeds or fails with the training.
func Hold(ctx context.Context, o HoldOptions) (string, error) {
	if o.Linger <= 0 {
		o.Linger = 30 * time.Minute
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = time.Hour
	}
	if o.Poll <= 0 {
		o.Poll = 2 * time.Second
	}
	logf := func(format string, a ...any) {
		if o.Log != nil {
			fmt.Fprintf(o.Log, time.Now().UTC().Format(time.RFC3339)+" hold: "+format+"\n", a...)
		}
	}
	start := time.Now()
	release := filepath.Join(o.Workspace, ReleaseDir, ReleaseFile(o.Name))
	jobs := filepath.Join(o.Workspace, ".scopectl", "jobs")
	_ = os.Remove(release) // an earlier pod's of the same name, on a claim used again
	logf("holding %s for the jobs started in it (release: %s)", o.Name, release)
	var idleSince time.Time
	seen := false
	for {
		reapOrphans()
		newest, running, n := holdScan(jobs, start)
		seen = seen || n > 0
		switch {
		case fileExists(release):
			logf("released")
			return newest, nil
		case !seen && time.Since(start) >= o.StartTimeout:
			return PhaseFailed, fmt.Errorf("no training job started within %s", o.StartTimeout)
		case running || !seen || n == 0:
			idleSince = time.Time{}
		case idleSince.IsZero():
			idleSince = time.Now()
			logf("every job has ended (%s); staying up %s for collection", newest, o.Linger)
		case time.Since(idleSince) >= o.Linger:
			logf("nobody released the pod within %s", o.Linger)
			return newest, nil
		}
		select {
		case <-ctx.Done():
			return newest, ctx.Err()
		case <-time.After(o.Poll):
		}
	}
}

// holdScan looks at the jobs whose state was written since start: the newest one's
// phase, whether any still runs, and how many there are.
func holdScan(jobs string, start time.Time) (newest string, running bool, n int) {
	ents, _ := os.ReadDir(jobs)
	var at time.Time
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(jobs, e.Name())
		fi, err := os.Stat(filepath.Join(dir, StateFile))
		if err != nil || fi.ModTime().Before(start.Add(-time.Second)) {
			if lockHeld(filepath.Join(dir, LockFile)) {
				running, n = true, n+1
			}
			continue
		}
		st, err := ReadState(dir)
		if err != nil {
			continue
		}
		n++
		if !Terminal(st.Phase) || lockHeld(filepath.Join(dir, LockFile)) {
			running = true
		}
		if st.Started.After(at) {
			at, newest = st.Started, st.Phase
		}
	}
	return newest, running, n
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// CopySelf copies this scopectl to path (0755, atomically): a training pod's init
// container puts it where the ai-toolkit image's container finds it. With a workspace,
// it also puts it where `train run` sends its scopectl (.scopectl/bin/scopectl-<sha256
// prefix>, content-addressed): a laptop running the same build then sends nothing.
func CopySelf(path, workspace string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	b, err := os.ReadFile(exe)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(path, b, 0o755); err != nil {
		return err
	}
	if workspace == "" {
		return nil
	}
	sum := sha256.Sum256(b)
	dir := filepath.Join(workspace, ".scopectl", "bin")
	dst := filepath.Join(dir, "scopectl-"+hex.EncodeToString(sum[:6])) // sendBinary's name
	if fi, err := os.Stat(dst); err == nil && fi.Size() == int64(len(b)) {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return atomicfile.WriteFile(dst, b, 0o755)
}

// Release tells a Kubernetes training pod that the laptop is done with it (the last
// checkpoint is collected): its holder ends, the Job completes and the GPU is given
// back. The workspace claim, with the job folder and outputs, stays.
func (t *Trainer) Release(ctx context.Context, job store.TrainJob) error {
	if !strings.HasPrefix(job.Target, "k8s://") || job.PodID == "" {
		return fmt.Errorf("job %s does not run on Kubernetes", job.ID)
	}
	r, err := t.open(ctx, job.Target, path.Join(job.Workspace, ReleaseDir), "")
	if err != nil {
		return err
	}
	defer r.Close()
	m := &machine{remote: r}
	return m.put(ctx, r, ReleaseFile(job.PodID), []byte(job.Phase+"\n"))
}

// KubeconfigOf is the kubeconfig recorded with the newest job on machine (a Kubernetes
// Job's address, k8s://CONTEXT/NAMESPACE/JOB); "" when none is (the default loading
// rules then). kubernetes.Machines.KubeconfigOf.
func (t *Trainer) KubeconfigOf(ctx context.Context, machine string) string {
	jobs, err := t.Jobs.ListTrainJobs(ctx) // newest first
	if err != nil {
		return ""
	}
	for _, j := range jobs {
		if j.Target == machine {
			return j.Kubeconfig
		}
	}
	return ""
}
