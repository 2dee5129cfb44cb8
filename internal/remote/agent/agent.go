// Package agent is the http:// and https:// remote: it talks to `scopectl agent` running
// on a pod (for RunPod, https://{podId}-{port}.proxy.runpod.net). Uploads go in verified
// chunks, in parallel, and resume after either side was interrupted.
//
// URL: https://host[:port][/path-prefix]. The token is the "agent_token" credential
// (SCOPECTL_AGENT_TOKEN), never part of the URL. Options (remote.Env.Options):
//
//	parallel    chunks in flight per file (default 8, at most 64)
//	chunk_size  bytes per chunk, e.g. 8M or 256k (default 8M; the agent may adjust it)
//	timeout     per request / per stall, a Go duration (default 2m)
//	retries     retries of a failed request (network error, 5xx, damaged chunk; default 5)
//	ca_file     PEM file of extra CAs to trust (an agent with its own certificate)
//	allow_http  "true": allow http:// to a host other than localhost (the token would
//	            travel in clear text)
package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	api "github.com/daydreamlive/scopectl/internal/agent"
	"github.com/daydreamlive/scopectl/internal/httpx"
	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/secret"
	"github.com/daydreamlive/scopectl/internal/units"
)

// TokenKey is the credential remote.Env.Lookup is asked for.
const TokenKey = "agent_token"

// ErrUnauthorized: the agent refused the token.
var ErrUnauthorized = errors.New("the agent refused the token")

func init() {
	remote.Register("http", Open)
	remote.Register("https", Open)
}

// Remote is a folder served by `scopectl agent`.
type Remote struct {
	base      string // scheme://host[:port][/prefix], no trailing slash
	token     secret.Secret
	hc        *http.Client
	parallel  int
	chunkSize int64
	timeout   time.Duration
	retries   int
	backoff   time.Duration // first retry delay; doubles up to 5 s
	compress  bool          // zstd-compress chunks that shrink (option compress, default on)
}

const (
	defaultParallel = 8
	defaultTimeout  = 2 * time.Minute
	defaultRetries  = 5
	hashTimeout     = 5 * time.Minute // a sha256 computed on the agent, maybe from a slow network volume
	maxErrorBody    = 64 << 10
	maxListBody     = 64 << 20
)

// Open is the remote.Constructor of http:// and https:// URLs.
func Open(_ context.Context, u *url.URL, env remote.Env) (remote.Remote, error) {
	where := u.Scheme + "://" + u.Host
	if u.User != nil {
		return nil, fmt.Errorf("remote %s: credentials in the URL are not supported; set SCOPECTL_AGENT_TOKEN instead", where)
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("remote %s: no host (expected %s://host[:port][/path])", remote.Redact(u.String()), u.Scheme)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return nil, fmt.Errorf("remote %s: query strings and fragments are not supported (options are flags; the token is SCOPECTL_AGENT_TOKEN)", where)
	}
	opt := func(k string) string {
		if env.Options == nil {
			return ""
		}
		return strings.TrimSpace(env.Options[k])
	}
	if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		if v, _ := strconv.ParseBool(opt("allow_http")); !v {
			return nil, fmt.Errorf("remote %s: plain http would send the agent token in clear text; use https (RunPod's proxy URL, or `scopectl agent --tls-cert`), an SSH tunnel to localhost, or the allow_http option", where)
		}
	}
	r := &Remote{
		base:      u.Scheme + "://" + u.Host + strings.TrimRight(u.EscapedPath(), "/"),
		parallel:  defaultParallel,
		chunkSize: api.DefaultChunkSize,
		timeout:   defaultTimeout,
		retries:   defaultRetries,
		backoff:   250 * time.Millisecond,
	}
	if v := opt("parallel"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 64 {
			return nil, fmt.Errorf("remote %s: parallel %q: expected 1 to 64", r, v)
		}
		r.parallel = n
	}
	if v := opt("chunk_size"); v != "" {
		n, err := units.ParseSize(v)
		if err != nil || n < api.MinChunkSize || n > api.MaxChunkSize {
			return nil, fmt.Errorf("remote %s: chunk_size %q: expected %d to %d bytes (e.g. 8M)", r, v, api.MinChunkSize, api.MaxChunkSize)
		}
		r.chunkSize = n
	}
	if v := opt("timeout"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("remote %s: timeout %q: expected a duration like 90s", r, v)
		}
		r.timeout = d
	}
	r.compress = true
	if v := opt("compress"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("remote %s: compress %q: expected true or false", r, v)
		}
		r.compress = b
	}
	if v := opt("retries"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 20 {
			return nil, fmt.Errorf("remote %s: retries %q: expected 0 to 20", r, v)
		}
		r.retries = n
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if v := opt("ca_file"); v != "" {
		pem, err := os.ReadFile(v)
		if err != nil {
			return nil, fmt.Errorf("remote %s: ca_file: %w", r, err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("remote %s: ca_file %s: no PEM certificates in it", r, v)
		}
		tlsConf.RootCAs = pool
	}
	if env.Lookup != nil {
		r.token = env.Lookup(TokenKey)
	}
	if !r.token.IsSet() {
		return nil, fmt.Errorf("remote %s: no agent token: set SCOPECTL_AGENT_TOKEN to the token `scopectl agent` was started with", r)
	}
	if env.Secrets != nil {
		env.Secrets.Add(r.token)
	}
	dialer := &net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		TLSClientConfig:       tlsConf,
		TLSHandshakeTimeout:   15 * time.Second,
		MaxIdleConns:          2 * r.parallel,
		MaxIdleConnsPerHost:   2 * r.parallel,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		// HTTP/1.1: parallel chunks use parallel TCP connections, which fare better than
		// one multiplexed connection over long, lossy paths.
	}
	r.hc = &http.Client{
		Transport: tr,
		// The API never redirects; following one could send the token elsewhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return r, nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (r *Remote) String() string { return r.base }

func (r *Remote) Close() error {
	r.hc.CloseIdleConnections()
	return nil
}

// Error is a refusal or failure reported by the agent.
type Error struct {
	Op      string // "PUT chunk 3 of x.safetensors"
	Status  int
	Code    string
	Message string // the agent's message, sanitised
	Missing []int
}

func (e *Error) Error() string {
	if e.Status == http.StatusUnauthorized {
		return fmt.Sprintf("%s: %v (HTTP 401): check that SCOPECTL_AGENT_TOKEN matches the agent's token", e.Op, ErrUnauthorized)
	}
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	return fmt.Sprintf("%s: %s (HTTP %d)", e.Op, msg, e.Status)
}

// Is maps the agent's error codes to remote's errors.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized
	case remote.ErrNotFound:
		return e.Code == api.CodeNotFound
	case remote.ErrBadName:
		return e.Code == api.CodeBadName
	case remote.ErrHashMismatch:
		return e.Code == api.CodeHashMismatch
	}
	return false
}

func (e *Error) retryable() bool {
	switch {
	case e.Code == api.CodeChunkMismatch, e.Code == api.CodeBusy, e.Code == api.CodeTimeout:
		return true
	case e.Status == http.StatusRequestTimeout, e.Status == http.StatusTooManyRequests:
		return true
	case e.Code == api.CodeNoSpace, e.Status == http.StatusNotImplemented:
		return false
	}
	return e.Status >= 500
}

// sanitize keeps a remote message printable and short.
func sanitize(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return strings.TrimSpace(s)
}

// errorFrom reads an error response.
func errorFrom(op string, resp *http.Response) *Error {
	e := &Error{Op: op, Status: resp.StatusCode}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var body api.ErrorBody
	if json.Unmarshal(b, &body) == nil && (body.Code != "" || body.Error != "") {
		e.Code, e.Message, e.Missing = body.Code, sanitize(body.Error), body.Missing
	} else if len(b) > 0 && resp.StatusCode != http.StatusUnauthorized && strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		e.Message = sanitize(string(b)) // e.g. a proxy's short error text (HTML pages are left out)
	}
	if e.Code == "" && (resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusGatewayTimeout) {
		e.Message = strings.TrimSpace(http.StatusText(resp.StatusCode) + " " + e.Message + " (is `scopectl agent` running and its port exposed?)")
	}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		e.Message = "unexpected redirect (to " + sanitize(resp.Header.Get("Location")) + ")"
	}
	return e
}

// request is one API call, sent again (with a fresh body) on retryable failures.
type request struct {
	op      string
	method  string
	path    string // below base, already escaped
	body    func() io.Reader
	size    int64 // body length; -1 unknown
	header  http.Header
	timeout time.Duration
	ok      []int // accepted statuses; default 200 and 204
}

// stallError reports a request that timed out.
type stallError struct {
	op string
	d  time.Duration
}

func (e *stallError) Error() string {
	return fmt.Sprintf("%s: the agent did not answer within %s (stalled or unreachable)", e.op, e.d)
}
func (e *stallError) Timeout() bool { return true }
func (e *stallError) Unwrap() error { return context.DeadlineExceeded }

// send performs q once; on success the caller must close the body.
func (r *Remote) send(ctx context.Context, q *request) (*http.Response, context.CancelFunc, error) {
	rctx, cancel := context.WithTimeout(ctx, q.timeout)
	var body io.Reader
	if q.body != nil {
		body = q.body()
	}
	req, err := http.NewRequestWithContext(rctx, q.method, r.base+q.path, body)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	if q.body != nil {
		req.ContentLength = q.size
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(q.body()), nil }
	}
	for k, v := range q.header {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", "Bearer "+r.token.Reveal())
	req.Header.Set("User-Agent", "scopectl")
	resp, err := r.hc.Do(req)
	if err != nil {
		stalled := rctx.Err() == context.DeadlineExceeded
		cancel()
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		if stalled {
			return nil, nil, &stallError{q.op, q.timeout}
		}
		if u := httpx.Unreachable(r.host(), err); u != nil {
			return nil, nil, fmt.Errorf("%s: %w", q.op, u) // offline or no agent listening: not retried
		}
		return nil, nil, fmt.Errorf("%s: %w", q.op, stripURL(err))
	}
	ok := q.ok
	if ok == nil {
		ok = []int{http.StatusOK, http.StatusNoContent}
	}
	for _, s := range ok {
		if resp.StatusCode == s {
			return resp, cancel, nil
		}
	}
	e := errorFrom(q.op, resp)
	resp.Body.Close()
	cancel()
	return nil, nil, e
}

// stripURL drops the *url.Error wrapper: its text repeats the whole URL.
func stripURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// do runs q with retries and decodes a JSON reply into out (if not nil).
func (r *Remote) do(ctx context.Context, q *request, out any) error {
	_, n, err := retryRun(ctx, r, func() (struct{}, error) {
		if err := ctx.Err(); err != nil {
			return struct{}{}, err
		}
		resp, cancel, err := r.send(ctx, q)
		if err != nil {
			return struct{}{}, err
		}
		if out != nil {
			err = json.NewDecoder(io.LimitReader(resp.Body, maxListBody)).Decode(out)
			if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
				err = &stallError{q.op, q.timeout}
			} else if err != nil {
				err = fmt.Errorf("%s: reading the reply: %w", q.op, err)
			}
		}
		resp.Body.Close()
		cancel()
		return struct{}{}, err
	})
	if err != nil && ctx.Err() == nil && n > 1 {
		return fmt.Errorf("%w (after %d attempts)", err, n)
	}
	return err
}

// retryRun runs attempt with retries (httpx.Do on the shared schedule: from the first
// delay, doubling, jittered, at most 5 s), logging each failure being retried, and
// returns the number of attempts made.
func retryRun[T any](ctx context.Context, r *Remote, attempt func() (T, error)) (T, int, error) {
	n := 0
	v, err := httpx.Do(ctx, httpx.Policy{
		Backoff:   httpx.Backoff{Min: r.backoff, Max: 5 * time.Second},
		Attempts:  r.retries + 1,
		Retryable: retryable,
		Notify: func(rt httpx.Retry) {
			slog.Warn("retrying", "remote", r.host(), "attempt", fmt.Sprintf("%d/%d", rt.Attempt, r.retries+1), "reason", rt.Reason, "wait", rt.Wait.Round(time.Millisecond))
		},
	}, func(i int) (T, error) { n = i; return attempt() })
	if g := (*httpx.GaveUpError)(nil); errors.As(err, &g) {
		err = g.Err
	}
	return v, n, err
}

func retryable(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		return e.retryable()
	}
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	if errors.As(err, &se) || errors.As(err, &te) {
		return false // not the agent's API: asking again will not help
	}
	// DNS not found, connection refused, TLS: the shared rules say asking again will not help.
	return !httpx.Permanent(err) // network errors, stalls, cut replies
}

// host is the agent's host[:port], for messages.
func (r *Remote) host() string {
	if u, err := url.Parse(r.base); err == nil && u.Host != "" {
		return u.Host
	}
	return r.base
}

func filePath(name string) string { return "/v1/files/" + url.PathEscape(name) }

func (r *Remote) List(ctx context.Context) ([]remote.Entry, error) {
	var es []remote.Entry
	// Listing may hash new files on the agent, within a budget (10 s) well below timeout.
	q := &request{op: "list " + r.base, method: http.MethodGet, path: "/v1/files", timeout: r.timeout}
	if err := r.do(ctx, q, &es); err != nil {
		return nil, err
	}
	out := es[:0]
	for _, e := range es {
		// Names come from the far side: only single, printable path elements pass.
		if remote.CheckName(e.Name) != nil || remote.IsTemp(e.Name) || e.Size < 0 {
			continue
		}
		if e.SHA256 != "" && !api.IsSHA256(e.SHA256) {
			e.SHA256 = ""
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Hash asks the agent for a file's sha256 (computed there if not cached).
func (r *Remote) Hash(ctx context.Context, name string) (string, error) {
	if err := remote.CheckName(name); err != nil {
		return "", err
	}
	var e remote.Entry
	q := &request{op: "sha256 of " + name, method: http.MethodGet, path: filePath(name) + "/sha256", timeout: max(r.timeout, hashTimeout)}
	if err := r.do(ctx, q, &e); err != nil {
		return "", err
	}
	if !api.IsSHA256(e.SHA256) {
		return "", fmt.Errorf("sha256 of %s: the agent answered %q", name, sanitize(e.SHA256))
	}
	return e.SHA256, nil
}

func (r *Remote) Delete(ctx context.Context, name string) error {
	if err := remote.CheckName(name); err != nil {
		return err
	}
	return r.do(ctx, &request{op: "delete " + name, method: http.MethodDelete, path: filePath(name), timeout: r.timeout}, nil)
}

// Get streams name from off. A read that sees no data for the timeout fails.
func (r *Remote) Get(ctx context.Context, name string, off int64) (io.ReadCloser, error) {
	if err := remote.CheckName(name); err != nil {
		return nil, err
	}
	if off < 0 {
		return nil, fmt.Errorf("get %s: negative offset", name)
	}
	rc, _, err := retryRun(ctx, r, func() (io.ReadCloser, error) { return r.get(ctx, name, off) })
	return rc, err
}

func (r *Remote) get(ctx context.Context, name string, off int64) (io.ReadCloser, error) {
	op := "get " + name
	gctx, cancel := context.WithCancel(ctx)
	wd := &watchdog{cancel: cancel, d: r.timeout}
	wd.t = time.AfterFunc(r.timeout, wd.fire)
	req, err := http.NewRequestWithContext(gctx, http.MethodGet, r.base+filePath(name), nil)
	if err != nil {
		wd.stop()
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+r.token.Reveal())
	req.Header.Set("User-Agent", "scopectl")
	if off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", off))
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		wd.stop()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if wd.fired() {
			return nil, &stallError{op, r.timeout}
		}
		return nil, fmt.Errorf("%s: %w", op, stripURL(err))
	}
	body := &watchedBody{rc: resp.Body, wd: wd, op: op}
	switch {
	case resp.StatusCode == http.StatusPartialContent && off > 0:
		var start int64 = -1
		fmt.Sscanf(resp.Header.Get("Content-Range"), "bytes %d-", &start)
		if start != off {
			body.Close()
			return nil, fmt.Errorf("%s: the agent sent a range from %d, not %d", op, start, off)
		}
		return body, nil
	case resp.StatusCode == http.StatusOK:
		if off > 0 { // range ignored (a proxy?): skip to off
			if _, err := io.CopyN(io.Discard, body, off); err != nil {
				body.Close()
				return nil, fmt.Errorf("%s: skipping to offset %d: %w", op, off, err)
			}
		}
		return body, nil
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && off > 0:
		body.Close() // offset at (or past) the end: nothing to read
		return io.NopCloser(bytes.NewReader(nil)), nil
	}
	e := errorFrom(op, resp)
	body.Close()
	return nil, e
}

// watchdog cancels a request that makes no progress for d.
type watchdog struct {
	mu      sync.Mutex
	t       *time.Timer
	d       time.Duration
	cancel  context.CancelFunc
	didFire bool
}

func (w *watchdog) fire() {
	w.mu.Lock()
	w.didFire = true
	w.mu.Unlock()
	w.cancel()
}

func (w *watchdog) fired() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.didFire
}

func (w *watchdog) kick() { w.t.Reset(w.d) }

func (w *watchdog) stop() {
	w.t.Stop()
	w.cancel()
}

type watchedBody struct {
	rc io.ReadCloser
	wd *watchdog
	op string
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if n > 0 {
		b.wd.kick()
	}
	if err != nil && err != io.EOF && b.wd.fired() {
		return n, &stallError{b.op, b.wd.d}
	}
	return n, err
}

func (b *watchedBody) Close() error {
	b.wd.stop()
	return b.rc.Close()
}

// chunkHash is the lowercase hex sha256 of b.
func chunkHash(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
