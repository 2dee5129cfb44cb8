// Package hf downloads Hugging Face Hub repositories into the real huggingface_hub cache
// layout (HF_HUB_CACHE), so that huggingface_hub, transformers, diffusers and Daydream
// Scope find the files offline:
//
//	models--ORG--NAME/
//	  blobs/<etag>                       content (etag: sha256 for LFS files, git blob sha1 otherwise)
//	  refs/<revision>                    the commit a branch or tag pointed to
//	  snapshots/<commit>/<path>          relative symlink to ../../blobs/<etag> (one more ../ per folder)
//	  .no_exist/<commit>/<path>          empty marker: this path does not exist at that commit
//	  trees/<commit>.json                huggingface_hub's cached tree listing
//	.locks/models--ORG--NAME/<etag>.lock flock shared with huggingface_hub
//
// Large files are fetched as parallel ranged GETs into one preallocated
// blobs/<etag>.incomplete; a sidecar (<etag>.incomplete.chunks) records the sha256 of each
// finished chunk, so an interrupted pull resumes from the chunks that still verify. Every
// file is checked against its LFS sha256 (or git blob sha1) and size before it is renamed
// into place. All writes go through an os.Root opened on the cache folder, and every path
// and URL the server sends is validated first.
package hf

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/daydreamlive/scopectl/internal/httpx"
	"github.com/daydreamlive/scopectl/internal/progress"
	"github.com/daydreamlive/scopectl/internal/secret"
)

// DefaultEndpoint is huggingface_hub's default HF_ENDPOINT.
const DefaultEndpoint = "https://huggingface.co"

// Client downloads from the Hub. The zero value works (public repos, defaults below).
type Client struct {
	Endpoint    string        // HF_ENDPOINT, default https://huggingface.co; must be https (http only on loopback, for tests, or with AllowInsecureHTTP)
	Token       secret.Secret // sent as "Authorization: Bearer" to the endpoint's host only
	HTTP        *http.Client  // default: TLS-verifying HTTP/1.1 client (one TCP connection per range)
	Connections int           // parallel ranges per file, default 8
	ChunkSize   int64         // range size, default 16 MiB; files up to this size take one GET
	Progress    progress.Reporter

	Retries      int           // retries after a 429, 5xx, network error or stall, default 6
	RetryWait    time.Duration // first backoff (doubling, jittered, at most 64×), default 500ms
	StallTimeout time.Duration // a request that receives nothing for this long is retried, default 30s
	UserAgent    string        // default "scopectl"

	// AllowInsecureHTTP lets an http:// Endpoint be on any host, not only loopback, and
	// then lets the Hub redirect to http:// URLs on any host (the CDN). It is for
	// benchmarks and test networks: nothing is encrypted, the Token included. Default false.
	// It relaxes only that loopback rule: https URLs are still TLS-verified, and an https
	// endpoint still may not redirect to http.
	AllowInsecureHTTP bool
}

// File is one file of a pull.
type File struct {
	Path       string `json:"path"`             // path in the repo
	Size       int64  `json:"size"`             // bytes
	SHA256     string `json:"sha256,omitempty"` // LFS oid; "" for a file stored in git
	Etag       string `json:"etag"`             // blob name: sha256 for LFS files, git blob sha1 otherwise
	Commit     string `json:"commit"`           // commit the revision resolved to
	CachePath  string `json:"cache_path"`       // <cache>/models--ORG--NAME/snapshots/<commit>/<path> (absolute)
	BlobPath   string `json:"blob_path"`        // <cache>/models--ORG--NAME/blobs/<etag> (absolute)
	Downloaded bool   `json:"downloaded"`       // false: it was already in the cache
}

// PullOptions filters the files of a pull like huggingface_hub's allow_patterns and
// ignore_patterns (fnmatch globs; '*' matches '/' too; "dir/" means everything below).
type PullOptions struct {
	Include, Exclude []string
}

// Limits of Client.Connections and Client.ChunkSize.
const (
	MaxConnections = 32       // the idle pool keeps 32 connections per host
	MinChunkSize   = 64 << 10 // below it, requests cost more than they carry
)

const (
	defaultConnections = 8
	defaultChunkSize   = 16 << 20
	defaultRetries     = 6
	defaultRetryWait   = 500 * time.Millisecond
	defaultStall       = 30 * time.Second
	maxAPIBody         = 64 << 20
	maxFilesInFlight   = 4
)

var defaultHTTP = &http.Client{Transport: &http.Transport{
	Proxy:                 http.ProxyFromEnvironment,
	DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
	TLSHandshakeTimeout:   15 * time.Second,
	ResponseHeaderTimeout: 60 * time.Second,
	MaxIdleConns:          64,
	MaxIdleConnsPerHost:   32,
	IdleConnTimeout:       90 * time.Second,
	// HTTP/1.1 on purpose: parallel ranges only help when each has its own TCP window.
	ForceAttemptHTTP2: false,
	TLSNextProto:      map[string]func(string, *tls.Conn) http.RoundTripper{},
}}

// pull is the state of one Pull call.
type pull struct {
	c        *Client
	ref      Ref
	ep       *url.URL // endpoint
	base     string   // endpoint without trailing slash
	follow   *http.Client
	nofollow *http.Client
	root     *os.Root
	rootDir  string // absolute cache dir
	folder   string // models--ORG--NAME
	commit   string
	listing  []remoteFile

	conns     int
	chunk     int64
	retries   int
	wait      time.Duration
	stall     time.Duration
	xfer      chan struct{} // limits concurrent transfers
	refOnce   sync.Once
	refErr    error
	userAgent string
}

// Pull downloads ref into the huggingface_hub cache at cacheDir (HF_HUB_CACHE) and returns
// every selected file, downloaded now or found already cached. A second Pull of the same
// revision downloads nothing. On error, the files placed so far are returned with it.
func (c *Client) Pull(ctx context.Context, cacheDir string, ref Ref, opt PullOptions) ([]File, error) {
	ref.Paths = append([]string(nil), ref.Paths...)
	if err := ref.validate(); err != nil {
		return nil, err
	}
	m, err := newMatcher(opt.Include, opt.Exclude)
	if err != nil {
		return nil, err
	}
	p, err := c.newPull(cacheDir, ref)
	if err != nil {
		return nil, err
	}
	defer p.root.Close()

	if commitRe.MatchString(ref.Revision) {
		p.commit = ref.Revision
	} else if p.commit, err = p.resolveCommit(ctx); err != nil {
		return nil, err
	}
	listing, err := p.listTree(ctx)
	if err != nil {
		return nil, err
	}
	sel, missing := selectFiles(listing, ref.Paths, m)
	if len(missing) > 0 {
		var msgs []string
		var first error
		for _, mp := range missing {
			err := p.markMissing(ctx, mp)
			if first == nil {
				first = err
			}
			msgs = append(msgs, err.Error())
		}
		if len(msgs) == 1 {
			return nil, first
		}
		return nil, &tagged{msg: strings.Join(msgs, "; "), err: first} // one line
	}
	if len(sel) == 0 {
		return nil, tagf(ErrNotFound, "hf: no file of %s at %s matches the include/exclude patterns", ref.Repo, clip(ref.Revision))
	}
	p.listing = listing
	p.writeCacheDirTag()

	out := make([]File, len(sel))
	done := make([]bool, len(sel))
	err = eachBounded(ctx, len(sel), min(maxFilesInFlight, p.conns), func(ctx context.Context, i int) error {
		f, err := p.pullFile(ctx, sel[i])
		out[i], done[i] = f, err == nil
		return err
	})
	var placed []File
	for i := range sel {
		if done[i] {
			placed = append(placed, out[i])
		}
	}
	return placed, err
}

// eachBounded runs fn(ctx, i) for i in [0, n), at most limit at a time. The first failure
// cancels the rest and is returned (the real cause, not the cancellations it caused);
// a cancelled ctx stops starting new ones and is returned when not all ran.
func eachBounded(ctx context.Context, n, limit int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	slots := make(chan struct{}, max(limit, 1))
	errs := make([]error, n)
	ran := 0
	var wg sync.WaitGroup
	for i := range n {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		ran++
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			if errs[i] = fn(ctx, i); errs[i] != nil {
				cancel(errs[i])
			}
		}()
	}
	wg.Wait()
	for _, e := range errs {
		if e != nil && !errors.Is(e, context.Canceled) {
			return e
		}
	}
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	if ran < n {
		if err := ctx.Err(); err != nil {
			return err
		}
		return context.Canceled
	}
	return nil
}

func (c *Client) newPull(cacheDir string, ref Ref) (*pull, error) {
	p, err := c.newSession(ref, defaultHTTP)
	if err != nil {
		return nil, err
	}
	if cacheDir == "" {
		return nil, errors.New("hf: no cache folder (HF_HUB_CACHE)")
	}
	abs, err := filepath.Abs(cacheDir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("hf: cache folder: %w", err)
	}
	root, err := os.OpenRoot(abs)
	if err != nil {
		return nil, fmt.Errorf("hf: cache folder: %w", err)
	}
	p.root, p.rootDir, p.folder = root, abs, RepoFolder(ref.RepoType, ref.Repo)
	return p, nil
}

// newSession checks the endpoint, fills in the defaults and makes the HTTP clients that
// pulls and pushes share; def is the client used when Client.HTTP is nil.
func (c *Client) newSession(ref Ref, def *http.Client) (*pull, error) {
	ep := c.Endpoint
	if ep == "" {
		ep = DefaultEndpoint
	}
	ep = strings.TrimRight(ep, "/")
	u, err := url.Parse(ep)
	if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("hf: endpoint %q is not a plain http(s) URL", clip(ep))
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && (isLoopback(u.Hostname()) || c.AllowInsecureHTTP):
	default:
		return nil, fmt.Errorf("hf: endpoint %s must use https", clip(u.Scheme+"://"+u.Host))
	}
	p := &pull{
		c: c, ref: ref, ep: u, base: ep,
		conns:     c.Connections,
		chunk:     c.ChunkSize,
		retries:   c.Retries,
		wait:      c.RetryWait,
		stall:     c.StallTimeout,
		userAgent: c.UserAgent,
	}
	if p.conns <= 0 {
		p.conns = defaultConnections
	}
	p.conns = min(p.conns, MaxConnections)
	if p.chunk <= 0 {
		p.chunk = defaultChunkSize
	}
	p.chunk = max(p.chunk, MinChunkSize)
	if p.retries <= 0 {
		p.retries = defaultRetries
	}
	if p.wait <= 0 {
		p.wait = defaultRetryWait
	}
	if p.stall <= 0 {
		p.stall = defaultStall
	}
	if p.userAgent == "" {
		p.userAgent = "scopectl"
	}
	p.xfer = make(chan struct{}, p.conns)
	hc := c.HTTP
	if hc == nil {
		hc = def
	}
	f := *hc
	f.CheckRedirect = p.checkRedirect
	p.follow = &f
	nf := *hc
	nf.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	p.nofollow = &nf
	return p, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// allowedURL is the policy for every URL the client fetches besides the endpoint itself:
// https only, or http when the endpoint is http on loopback (tests) and so is the URL
// (any host instead of loopback with AllowInsecureHTTP).
func (p *pull) allowedURL(u *url.URL) error {
	if u.User != nil {
		return tagf(ErrUnsafe, "refusing a URL with credentials from the server")
	}
	switch {
	case u.Scheme == "https" && u.Host != "":
		return nil
	case u.Scheme == "http" && p.ep.Scheme == "http" && (isLoopback(u.Hostname()) || p.c.AllowInsecureHTTP):
		return nil
	}
	return tagf(ErrUnsafe, "refusing to follow the server to a non-https address (%s://%s)", clip(u.Scheme), clip(u.Host))
}

// sameOrigin reports whether u is on the endpoint's scheme, host and port.
func (p *pull) sameOrigin(u *url.URL) bool {
	return strings.EqualFold(u.Scheme, p.ep.Scheme) && strings.EqualFold(u.Host, p.ep.Host)
}

func (p *pull) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("too many redirects")
	}
	if err := p.allowedURL(req.URL); err != nil {
		return err
	}
	// Once any hop left the endpoint's host, the token stays home (signed CDN URLs).
	if !p.sameOrigin(req.URL) {
		req.Header.Del("Authorization")
	}
	for _, v := range via {
		if !p.sameOrigin(v.URL) {
			req.Header.Del("Authorization")
		}
	}
	return nil
}

// newRequest builds a request with the standard headers; the token goes only to the
// endpoint's own host.
func (p *pull) newRequest(ctx context.Context, method, u string, auth bool) (*http.Request, bool, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, false, fmt.Errorf("hf: bad URL: %v", clipErr(err))
	}
	req.Header.Set("User-Agent", p.userAgent)
	req.Header.Set("Accept-Encoding", "identity")
	sent := false
	if auth && p.c.Token.IsSet() && p.sameOrigin(req.URL) {
		req.Header.Set("Authorization", "Bearer "+p.c.Token.Reveal())
		sent = true
	}
	return req, sent, nil
}

// apiURL is base + "/api/" + type + "s/" + repo + suffix.
func (p *pull) apiURL(suffix string) string {
	return p.base + "/api/" + p.ref.RepoType + "s/" + p.ref.Repo + suffix
}

// resolveURL is huggingface_hub's hf_hub_url: revision quoted with no safe characters,
// path quoted keeping '/'.
func (p *pull) resolveURL(rev, file string) string {
	segs := strings.Split(file, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return p.base + "/" + urlPrefix(p.ref.RepoType) + p.ref.Repo + "/resolve/" + url.PathEscape(rev) + "/" + strings.Join(segs, "/")
}

// policy is the retry policy of what: the shared schedule (httpx.Backoff: exponential
// from RetryWait, jittered, at most 64× RetryWait), or the server's Retry-After capped
// the same; p.retries retries after the first attempt; only a *transient failure is
// retried. Each retry is reported through Progress first, so that none passes silently.
func (p *pull) policy(what string) httpx.Policy {
	return httpx.Policy{
		Backoff:   httpx.Backoff{Min: p.wait, Max: p.wait * 64},
		Attempts:  p.retries + 1,
		Retryable: func(err error) bool { return errors.As(err, new(*transient)) },
		RetryAfter: func(err error) (time.Duration, bool) {
			var t *transient
			errors.As(err, &t)
			return httpx.RetryAfterHeader(t.retryAfter)
		},
		Op: "hf: " + what,
		Notify: func(r httpx.Retry) {
			p.c.Progress.Retry(r.Op, r.Attempt, r.Of, r.Reason, r.Wait)
		},
	}
}

var errStalled = errors.New("connection stalled")

// watchdog cancels a request's context when nothing arrives for p.stall.
type watchdog struct {
	t       *time.Timer
	d       time.Duration
	stalled atomic.Bool
}

func (p *pull) watch(ctx context.Context) (context.Context, *watchdog, func()) {
	actx, cancel := context.WithCancelCause(ctx)
	w := &watchdog{d: p.stall}
	w.t = time.AfterFunc(p.stall, func() { w.stalled.Store(true); cancel(errStalled) })
	return actx, w, func() { w.t.Stop(); cancel(nil) }
}

// readErr classifies an error while reading a body: the caller's cancellation as is, a
// stall or a network error as transient.
func (p *pull) readErr(ctx context.Context, w *watchdog, host string, got, want int64, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if w.stalled.Load() {
		return &transient{err: fmt.Errorf("%s: nothing received for %s after %d of %d bytes", host, p.stall, got, want)}
	}
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return &transient{err: fmt.Errorf("%s: connection closed after %d of %d bytes", host, got, want)}
	}
	return &transient{err: netError(host, err)}
}

func (w *watchdog) kick() { w.t.Reset(w.d) }

// transient describes a failed attempt that is worth retrying.
type transient struct {
	err        error
	retryAfter string
	status     int
}

func (t *transient) Error() string { return t.err.Error() }
func (t *transient) Unwrap() error { return t.err }

// roundTrip sends one request under a watchdog. A transport error, a stall or a
// retryable status comes back as *transient; any other answer is returned to the caller
// (with the watchdog still running: call stop when the body is consumed).
func (p *pull) roundTrip(ctx context.Context, hc *http.Client, method, u string, auth bool, hdr http.Header) (*http.Response, bool, *watchdog, func(), error) {
	actx, w, stop := p.watch(ctx)
	req, sent, err := p.newRequest(actx, method, u, auth)
	if err != nil {
		stop()
		return nil, false, nil, nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if req.Header.Get("Accept") == "application/json" {
		req.Header.Del("Accept-Encoding") // let the transport gzip (and check) API answers
	}
	resp, err := hc.Do(req)
	host := req.URL.Host
	if err != nil {
		stop()
		if ctx.Err() != nil {
			return nil, sent, nil, nil, ctx.Err()
		}
		if w.stalled.Load() || errors.Is(context.Cause(actx), errStalled) {
			return nil, sent, nil, nil, &transient{err: fmt.Errorf("%s: no answer for %s", host, p.stall)}
		}
		return nil, sent, nil, nil, transportErr(host, err)
	}
	w.kick()
	if terr := retryStatus(resp, stop); terr != nil {
		return nil, sent, nil, nil, terr
	}
	return resp, sent, w, stop, nil
}

// retry runs attempt until it succeeds, fails for good, or p.retries retries are spent.
func (p *pull) retry(ctx context.Context, what string, attempt func() error) error {
	_, err := httpx.Do(ctx, p.policy(what), func(int) (struct{}, error) { return struct{}{}, attempt() })
	return p.retried(what, err)
}

// retried is the error of a retry loop over what: spent retries say so, and an
// unreachable host is said at once.
func (p *pull) retried(what string, err error) error {
	var g *httpx.GaveUpError
	var t *transient
	var u *httpx.UnreachableError
	switch {
	case errors.As(err, &g) && errors.As(g.Err, &t):
		return gaveUp(what, g.Attempts, t)
	case errors.As(err, &u) && !errors.As(err, &t):
		return fmt.Errorf("hf: %s: %w", what, u) // offline or nothing listening: at once, no retries
	}
	return err
}

func gaveUp(what string, attempts int, t *transient) error {
	if t.status == http.StatusTooManyRequests {
		return tagf(ErrRetry, "hf: %s: rate limited by the Hub (429) %d times in a row; wait a few minutes and retry (authenticated requests with HF_TOKEN get higher limits)", what, attempts)
	}
	return tagf(ErrRetry, "hf: %s: %v (%d attempts; try again later)", what, t.err, attempts)
}

// getJSON GETs an API URL on the endpoint, with retries, and returns the body and headers.
func (p *pull) getJSON(ctx context.Context, u, what string) ([]byte, http.Header, error) {
	var body []byte
	var hdr http.Header
	err := p.retry(ctx, what, func() error {
		resp, sent, w, stop, err := p.roundTrip(ctx, p.follow, http.MethodGet, u, true, http.Header{"Accept": {"application/json"}})
		if err != nil {
			return err
		}
		defer stop()
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return p.statusError(resp, what, sent)
		}
		b, err := io.ReadAll(&kickReader{r: io.LimitReader(resp.Body, maxAPIBody+1), w: w})
		if err != nil {
			return p.readErr(ctx, w, resp.Request.URL.Host, int64(len(b)), resp.ContentLength, err)
		}
		if len(b) > maxAPIBody {
			return fmt.Errorf("hf: %s: answer larger than %d MiB", what, maxAPIBody>>20)
		}
		body, hdr = b, resp.Header
		return nil
	})
	return body, hdr, err
}

type kickReader struct {
	r io.Reader
	w *watchdog
}

func (k *kickReader) Read(b []byte) (int, error) {
	n, err := k.r.Read(b)
	if n > 0 {
		k.w.kick()
	}
	return n, err
}

// resolveCommit asks the Hub which commit the revision points to.
func (p *pull) resolveCommit(ctx context.Context) (string, error) {
	what := p.ref.Repo + "@" + clip(p.ref.Revision)
	body, _, err := p.getJSON(ctx, p.apiURL("/revision/"+url.PathEscape(p.ref.Revision)), what)
	if err != nil {
		return "", err
	}
	ri, err := decodeRepoInfo(body)
	if err != nil {
		return "", tagf(ErrUnsafe, "hf: %s: %v", what, err)
	}
	return ri.SHA, nil
}

// listTree lists every file at the commit, following the Link: rel="next" pages (which
// must stay on the endpoint).
func (p *pull) listTree(ctx context.Context) ([]remoteFile, error) {
	what := p.ref.Repo + " (file list)"
	u := p.apiURL("/tree/" + url.PathEscape(p.commit) + "?recursive=true&expand=false")
	var all []remoteFile
	for page := 0; u != ""; page++ {
		if page > 10000 {
			return nil, tagf(ErrUnsafe, "hf: %s: too many pages", what)
		}
		body, hdr, err := p.getJSON(ctx, u, what)
		if err != nil {
			return nil, err
		}
		files, err := decodeTreePage(body)
		if err != nil {
			return nil, tagf(ErrUnsafe, "hf: %s: %v", what, err)
		}
		all = append(all, files...)
		if len(all) > maxEntries {
			return nil, tagf(ErrUnsafe, "hf: %s: more than %d files", what, maxEntries)
		}
		u = ""
		if next := nextLink(hdr.Values("Link")); next != "" {
			nu, err := p.ep.Parse(next)
			if err != nil || !p.sameOrigin(nu) {
				return nil, tagf(ErrUnsafe, "hf: %s: the next page is on another host", what)
			}
			u = nu.String()
		}
	}
	if err := checkListing(all); err != nil {
		return nil, tagf(ErrUnsafe, "hf: %s: %v", what, err)
	}
	return all, nil
}

// nextLink finds the rel="next" target in Link headers.
func nextLink(values []string) string {
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			part = strings.TrimSpace(part)
			i := strings.IndexByte(part, '>')
			if !strings.HasPrefix(part, "<") || i < 0 {
				continue
			}
			target, params := part[1:i], part[i+1:]
			for _, prm := range strings.Split(params, ";") {
				prm = strings.ReplaceAll(strings.TrimSpace(prm), " ", "")
				if prm == `rel="next"` || prm == "rel=next" {
					return target
				}
			}
		}
	}
	return ""
}

// selectFiles applies the ref's paths (files or folders) and the patterns. Requested
// paths that match nothing come back as missing.
func selectFiles(all []remoteFile, paths []string, m *matcher) (sel []remoteFile, missing []string) {
	under := func(f, p string) bool { return f == p || strings.HasPrefix(f, p+"/") }
	for _, p := range paths {
		found := false
		for _, f := range all {
			if under(f.Path, p) {
				found = true
				break
			}
		}
		if !found {
			missing = append(missing, p)
		}
	}
	for _, f := range all {
		if len(paths) > 0 {
			ok := false
			for _, p := range paths {
				if under(f.Path, p) {
					ok = true
					break
				}
			}
			if !ok {
				continue
			}
		}
		if m.match(f.Path) {
			sel = append(sel, f)
		}
	}
	return sel, missing
}

// fileMeta is what a HEAD on the resolve URL says.
type fileMeta struct {
	commit, etag string
	size         int64
	location     string // where to GET the content
	auth         bool   // whether location is on the endpoint (token allowed)
}

// head asks for a file's metadata like huggingface_hub's get_hf_file_metadata: HEAD,
// following only relative redirects (repo renames), never the CDN redirect.
func (p *pull) head(ctx context.Context, file string) (fileMeta, *http.Response, error) {
	what := clip(file)
	u := p.resolveURL(p.commit, file)
	for hop := 0; ; hop++ {
		if hop > 5 {
			return fileMeta{}, nil, fmt.Errorf("hf: %s: too many redirects", what)
		}
		var resp *http.Response
		var sent bool
		err := p.retry(ctx, what, func() error {
			r, s, _, stop, err := p.roundTrip(ctx, p.nofollow, http.MethodHead, u, true, nil)
			if err != nil {
				return err
			}
			stop()
			r.Body.Close()
			resp, sent = r, s
			return nil
		})
		if err != nil {
			return fileMeta{}, nil, err
		}
		cur, _ := url.Parse(u)
		loc := resp.Header.Get("Location")
		isRedirect := resp.StatusCode >= 300 && resp.StatusCode < 400
		if isRedirect && loc == "" {
			return fileMeta{}, resp, fmt.Errorf("hf: %s: redirect without a Location", what)
		}
		if !isRedirect && resp.StatusCode != http.StatusOK {
			return fileMeta{}, resp, p.statusError(resp, what, sent)
		}
		if isRedirect {
			lu, err := cur.Parse(loc)
			if err != nil {
				return fileMeta{}, resp, tagf(ErrUnsafe, "hf: %s: bad redirect", what)
			}
			if !strings.Contains(loc, "://") && !strings.HasPrefix(loc, "//") {
				// relative: a renamed repo; follow it on the endpoint
				if !p.sameOrigin(lu) {
					return fileMeta{}, resp, tagf(ErrUnsafe, "hf: %s: bad relative redirect", what)
				}
				u = lu.String()
				continue
			}
		}
		m := fileMeta{
			commit: resp.Header.Get("X-Repo-Commit"),
			etag:   normalizeEtag(resp.Header.Get("X-Linked-Etag")),
		}
		if m.etag == "" {
			m.etag = normalizeEtag(resp.Header.Get("ETag"))
		}
		sz := resp.Header.Get("X-Linked-Size")
		if sz == "" && !isRedirect {
			sz = resp.Header.Get("Content-Length")
		}
		if m.commit == "" {
			return fileMeta{}, resp, fmt.Errorf("hf: %s: the answer has no X-Repo-Commit; is %s really a Hugging Face Hub (check HF_ENDPOINT and proxies)?", what, p.ep.Host)
		}
		if m.etag == "" {
			return fileMeta{}, resp, fmt.Errorf("hf: %s: the answer has no ETag", what)
		}
		size, err := strconv.ParseInt(sz, 10, 64)
		if err != nil || size < 0 {
			return fileMeta{}, resp, fmt.Errorf("hf: %s: the answer has no valid size", what)
		}
		m.size = size
		m.location, m.auth = u, true
		if isRedirect {
			lu, _ := cur.Parse(loc)
			if err := p.allowedURL(lu); err != nil {
				return fileMeta{}, resp, fmt.Errorf("hf: %s: %w", what, err)
			}
			m.location, m.auth = lu.String(), p.sameOrigin(lu)
		}
		return m, resp, nil
	}
}

// normalizeEtag is huggingface_hub's _normalize_etag: drop W/ and quotes.
func normalizeEtag(s string) string {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, "W/")
	return strings.Trim(s, `"`)
}

// markMissing confirms with a HEAD that a requested path does not exist and records it
// as .no_exist/<commit>/<path>, as huggingface_hub does, so offline lookups know.
func (p *pull) markMissing(ctx context.Context, file string) error {
	_, resp, err := p.head(ctx, file)
	if err == nil {
		return tagf(ErrUnsafe, "hf: %s is not in the file list of %s at %s but the Hub resolves it; try again", clip(file), p.ref.Repo, clip(p.ref.Revision))
	}
	if resp != nil && resp.Header.Get("X-Error-Code") == "EntryNotFound" {
		if c := resp.Header.Get("X-Repo-Commit"); c == p.commit {
			if e := p.writeNoExist(file); e != nil {
				return &tagged{msg: err.Error() + " (recording it in .no_exist failed: " + clip(e.Error()) + ")", err: err}
			}
		}
	}
	return err
}

// pullFile makes one file present in the snapshot.
func (p *pull) pullFile(ctx context.Context, f remoteFile) (File, error) {
	etag := f.etag()
	out := File{
		Path: f.Path, Size: f.Size, SHA256: f.SHA256, Etag: etag, Commit: p.commit,
		CachePath: filepath.Join(p.rootDir, filepath.FromSlash(p.pointerRel(f.Path))),
		BlobPath:  filepath.Join(p.rootDir, filepath.FromSlash(p.blobRel(etag))),
	}
	if p.hasPointer(f.Path, etag, f.Size) {
		return out, p.ensureRef()
	}
	if p.hasBlob(etag, f.Size) {
		if err := p.ensureRef(); err != nil {
			return out, err
		}
		return out, p.link(f.Path, etag)
	}
	meta, _, err := p.head(ctx, f.Path)
	if err != nil {
		return out, err
	}
	what := clip(f.Path)
	switch {
	case meta.commit != p.commit:
		return out, tagf(ErrUnsafe, "hf: %s: the Hub answered for commit %s, not %s; try again", what, clip(meta.commit), p.commit)
	case meta.etag != etag:
		return out, tagf(ErrIntegrity, "hf: %s: the Hub's ETag %s does not match the file list (%s)", what, clip(meta.etag), etag)
	case meta.size != f.Size:
		return out, tagf(ErrIntegrity, "hf: %s: the Hub announces %d bytes, the file list %d", what, meta.size, f.Size)
	}
	unlock, err := p.lock(ctx, etag)
	if err != nil {
		return out, err
	}
	defer unlock()
	if !p.hasBlob(etag, f.Size) { // another process may have finished it meanwhile
		if err := p.fetch(ctx, f, meta); err != nil {
			return out, err
		}
		out.Downloaded = true
	}
	if err := p.ensureRef(); err != nil {
		return out, err
	}
	return out, p.link(f.Path, etag)
}

func (p *pull) blobRel(etag string) string { return path.Join(p.folder, "blobs", etag) }
func (p *pull) pointerRel(file string) string {
	return path.Join(p.folder, "snapshots", p.commit, file)
}

// transportErr classifies a request that got no answer with the shared rules
// (httpx): an unsafe redirect, a host that is unreachable (DNS not found, connection
// refused) or a TLS failure is final; anything else (reset, timeout) is worth a retry.
func transportErr(host string, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) && (errors.Is(ue.Err, ErrUnsafe) || strings.Contains(ue.Err.Error(), "too many redirects")) {
		return netError(host, err)
	}
	if u := httpx.Unreachable(host, err); u != nil {
		return u
	}
	if httpx.TLSError(err) {
		return fmt.Errorf("TLS with %s failed (%s); scopectl never skips TLS verification: check the system clock, proxies, CA certificates and HF_ENDPOINT", host, clip(err.Error()))
	}
	return &transient{err: netError(host, err)}
}

// retryStatus drains and closes a 429/5xx answer and returns it as a transient error;
// nil for any other status.
func retryStatus(resp *http.Response, stop func()) error {
	if !retryable(resp.StatusCode) {
		return nil
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	stop()
	return &transient{
		err:        fmt.Errorf("%s answered %d %s", resp.Request.URL.Host, resp.StatusCode, http.StatusText(resp.StatusCode)),
		retryAfter: resp.Header.Get("Retry-After"),
		status:     resp.StatusCode,
	}
}
