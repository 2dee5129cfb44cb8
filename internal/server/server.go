// Package server is `scopectl serve`: one local web page (embedded), a JSON API and
// Prometheus metrics over the whole LoRA life. Its handlers call the same core
// packages the commands do (library, lorasync, pods, provider/runpod, train, scope,
// gpu); nothing here runs a command.
//
// Security: reads are open only when the listener is on loopback (Options.OpenReads);
// every action (POST) needs the token, as a bearer header or as the session cookie the
// login gives, and a browser's request must come from this server's own origin. No
// secret reaches an answer, a metric or a log: every answer passes the redactor.
package server

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/daydreamlive/scopectl/internal/deploy"
	"github.com/daydreamlive/scopectl/internal/gpu"
	"github.com/daydreamlive/scopectl/internal/inflight"
	"github.com/daydreamlive/scopectl/internal/library"
	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/provider/runpod"
	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/secret"
	"github.com/daydreamlive/scopectl/internal/train"
)

// Options configure a Server.
type Options struct {
	Lib *library.Library
	// RunPod manages pods; nil when RUNPOD_API_KEY is not set (the page says so).
	RunPod *runpod.Client
	// Trainer reaches training jobs on their machines over SSH; nil: only jobs whose
	// folder is on this machine show their live state.
	Trainer *train.Trainer
	// PodGPU is a pod's GPU source (nvidia-smi over SSH); nil: pods show no GPU.
	PodGPU func(ctx context.Context, p provider.Pod) (gpu.Source, error)
	// LocalGPU is this machine's GPUs, shown as pod "local" (nil: none).
	LocalGPU gpu.Source
	// LocalScope is Scope's URL on this machine ("" : none).
	LocalScope string
	// ScopeURL is a pod's Scope URL; nil: RunPod's proxy (RunPod.ProxyURL).
	ScopeURL func(p provider.Pod) string
	// RemoteEnv opens sync targets (credentials through Lookup, known_hosts policy).
	RemoteEnv remote.Env
	// Token authorizes actions always, and reads unless OpenReads.
	Token secret.Secret
	// OpenReads: GET needs no token (the listener is on loopback).
	OpenReads bool
	Redactor  *secret.Redactor
	Version   string
	// Interval between samples of pods, GPUs, Scope and jobs (default 5 s).
	Interval time.Duration
	// History is how many samples of each GPU series are kept (default 720).
	History int
	Log     *slog.Logger
	// HTTP is the client for Scope (default: 5 s timeout).
	HTTP *http.Client
	// LogEvery is how often a followed log is read again (default 2 s).
	LogEvery time.Duration
	// Transfers is the registry of transfers other scopectl processes run (the data
	// dir's); "": none shown.
	Transfers inflight.Dir
	// VolumeEvery is how often RunPod's network volumes are listed for the cost ledger
	// (default 1 min; pods are observed at every sample).
	VolumeEvery time.Duration
	// Deployer runs POST /api/v1/deploys, the same core as `scopectl deploy`; nil: one
	// over Lib, RunPod and RemoteEnv that deploys to hosts and existing pods only.
	Deployer *deploy.Deployer
}

// Server serves the page, the API and the metrics.
type Server struct {
	opt     Options
	mux     *http.ServeMux
	reg     *prometheus.Registry
	metrics *metrics
	red     *secret.Redactor
	log     *slog.Logger
	key     []byte // session cookie MAC key, derived from the token

	mu       sync.RWMutex
	pods     map[string]*podState // by pod id ("local" for this machine)
	podOrder []string
	podErr   string // why pods could not be listed
	jobs     map[string]*jobState
	polled   time.Time

	xfers     *transfers
	deploys   deployJobs
	loraCache listCache

	// the cost ledger: RunPod's pods in its last successful listing (for ledger.Build's
	// live), whether there was one, when volumes were last listed, the shared report
	live      map[string]bool
	liveOK    bool
	ledgerMu  sync.Mutex
	volumesAt time.Time
	cost      costCache

	refresh chan struct{}
	started time.Time
}

// New builds a Server; Run starts its sampler.
func New(opt Options) (*Server, error) {
	if opt.Lib == nil {
		return nil, errors.New("server: no library")
	}
	if !opt.Token.IsSet() {
		return nil, errors.New("server: no token")
	}
	if opt.Interval <= 0 {
		opt.Interval = 5 * time.Second
	}
	if opt.History <= 0 {
		opt.History = 720
	}
	if opt.VolumeEvery <= 0 {
		opt.VolumeEvery = time.Minute
	}
	if opt.Redactor == nil {
		opt.Redactor = secret.Default
	}
	if opt.Log == nil {
		opt.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opt.HTTP == nil {
		opt.HTTP = &http.Client{Timeout: 5 * time.Second}
	}
	if opt.Version == "" {
		opt.Version = "dev"
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
			opt.Version = bi.Main.Version
		}
	}
	mac := hmac.New(sha256.New, []byte("scopectl-serve-session"))
	mac.Write([]byte(opt.Token.Reveal()))
	s := &Server{opt: opt, red: opt.Redactor, log: slog.New(secret.NewSlogHandler(opt.Log.Handler(), opt.Redactor)),
		key: mac.Sum(nil), pods: map[string]*podState{}, jobs: map[string]*jobState{}, xfers: newTransfers(),
		refresh: make(chan struct{}, 1), started: time.Now()}
	s.red.Add(opt.Token)
	s.reg = prometheus.NewRegistry()
	s.metrics = newMetrics(s)
	s.routes()
	return s, nil
}

// Handler is the whole server behind its middleware.
func (s *Server) Handler() http.Handler { return s.recoverer(s.headers(s.mux)) }

// Run samples pods, GPUs, Scope and jobs every Interval until ctx ends.
func (s *Server) Run(ctx context.Context) {
	t := time.NewTicker(s.opt.Interval)
	defer t.Stop()
	for {
		s.poll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.refresh:
		}
	}
}

// Poll samples once (tests and the first answer use it).
func (s *Server) Poll(ctx context.Context) { s.poll(ctx) }

// kick asks the sampler for a sample now (after an action).
func (s *Server) kick() {
	select {
	case s.refresh <- struct{}{}:
	default:
	}
}

// apiError is the one-line JSON error every endpoint answers with.
type apiError struct {
	Error string `json:"error"`
}

// httpError is an error with its status.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func errorf(status int, format string, a ...any) error {
	return &httpError{status, fmt.Sprintf(format, a...)}
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i]
	}
	if len(s) > 400 {
		s = s[:400] + "…"
	}
	return s
}

func (s *Server) writeJSON(w http.ResponseWriter, status int, v any) {
	b, st := s.encode(v)
	if st != http.StatusOK {
		status = st
	}
	writeBody(w, status, b)
}

// encode is v as redacted JSON with a newline.
func (s *Server) encode(v any) ([]byte, int) {
	b, err := json.Marshal(v)
	if err != nil {
		return []byte("{\"error\":\"cannot encode the answer\"}\n"), http.StatusInternalServerError
	}
	return append([]byte(s.red.Redact(string(b))), '\n'), http.StatusOK
}

func writeBody(w http.ResponseWriter, status int, b []byte) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(b)
}

func (s *Server) writeErr(w http.ResponseWriter, err error) {
	b, status := s.errBody(err)
	writeBody(w, status, b)
}

// errBody is err as the JSON error answer, with its status.
func (s *Server) errBody(err error) ([]byte, int) {
	status := http.StatusInternalServerError
	var he *httpError
	if errors.As(err, &he) {
		status = he.status
	} else if errors.Is(err, context.DeadlineExceeded) {
		status = http.StatusGatewayTimeout
	}
	msg := oneLine(s.red.Redact(err.Error()))
	if status >= 500 {
		s.log.Warn("request failed", "status", status, "error", msg)
	}
	b, st := s.encode(apiError{msg})
	if st != http.StatusOK {
		status = st
	}
	return b, status
}

// api adapts a handler that returns its answer or an error.
func (s *Server) api(f func(r *http.Request) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := f(r)
		if err != nil {
			s.writeErr(w, err)
			return
		}
		s.writeJSON(w, http.StatusOK, v)
	}
}

// recoverer turns a panic into a JSON 500; the server keeps serving.
func (s *Server) recoverer(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error("panic", "path", r.URL.Path, "panic", fmt.Sprint(v))
				s.metrics.panics.Inc()
				s.writeJSON(w, http.StatusInternalServerError, apiError{"internal error"})
			}
		}()
		h.ServeHTTP(w, r)
	})
}

// csp allows only this server's own scripts, styles, images and connections.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; media-src 'self'; connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// headers sets the security headers every answer carries and checks who may ask.
func (s *Server) headers(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", csp)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Cross-Origin-Opener-Policy", "same-origin")
		hd.Set("Cross-Origin-Resource-Policy", "same-origin")
		path := r.URL.Path
		switch {
		case path == "/healthz":
		case r.Method == http.MethodGet || r.Method == http.MethodHead:
			if path == "/login" || strings.HasPrefix(path, "/assets/") || path == "/" {
				break // the page itself holds no data; its API calls are checked
			}
			if !s.opt.OpenReads && !s.authorized(r) {
				s.writeJSON(w, http.StatusUnauthorized, apiError{"unauthorized: send Authorization: Bearer TOKEN, or log in on the page"})
				return
			}
		case r.Method == http.MethodPost || r.Method == http.MethodDelete:
			if !s.sameOrigin(r) {
				s.writeJSON(w, http.StatusForbidden, apiError{"cross-origin request refused"})
				return
			}
			if path != "/login" && path != "/logout" && !s.authorized(r) {
				s.writeJSON(w, http.StatusUnauthorized, apiError{"unauthorized: actions need the token (Authorization: Bearer TOKEN, or log in on the page)"})
				return
			}
		default:
			hd.Set("Allow", "GET, HEAD, POST, DELETE")
			s.writeJSON(w, http.StatusMethodNotAllowed, apiError{"method not allowed"})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// sameOrigin: a request a browser sends says where it comes from (Origin, or
// Sec-Fetch-Site); it must be this server. A request without either (curl, a
// script) is not a cross-site request a browser could be tricked into.
func (s *Server) sameOrigin(r *http.Request) bool {
	if o := r.Header.Get("Origin"); o != "" {
		return o == "http://"+r.Host || o == "https://"+r.Host
	}
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
		return true
	}
	return false
}

const cookieName = "scopectl_session"

// authorized: the bearer token, or a session cookie the login gave.
func (s *Server) authorized(r *http.Request) bool {
	if a := r.Header.Get("Authorization"); a != "" {
		tok, ok := strings.CutPrefix(a, "Bearer ")
		return ok && s.tokenOK(strings.TrimSpace(tok))
	}
	c, err := r.Cookie(cookieName)
	if err != nil {
		return false
	}
	return s.sessionOK(c.Value)
}

// tokenOK compares in constant time (over the token's hash, so the length leaks nothing).
func (s *Server) tokenOK(tok string) bool {
	a := sha256.Sum256([]byte(tok))
	b := sha256.Sum256([]byte(s.opt.Token.Reveal()))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// session cookies are nonce.expiry.MAC(key, nonce.expiry): no server state, and the
// token itself never travels in a cookie.
func (s *Server) newSession(ttl time.Duration) string {
	var n [16]byte
	rand.Read(n[:])
	body := base64.RawURLEncoding.EncodeToString(n[:]) + "." + fmt.Sprint(time.Now().Add(ttl).Unix())
	return body + "." + s.sign(body)
}

func (s *Server) sign(body string) string {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(body))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (s *Server) sessionOK(v string) bool {
	i := strings.LastIndexByte(v, '.')
	if i < 0 {
		return false
	}
	body, mac := v[:i], v[i+1:]
	if !hmac.Equal([]byte(mac), []byte(s.sign(body))) {
		return false
	}
	j := strings.LastIndexByte(body, '.')
	var exp int64
	if j < 0 {
		return false
	}
	if _, err := fmt.Sscan(body[j+1:], &exp); err != nil {
		return false
	}
	return time.Now().Unix() < exp
}
