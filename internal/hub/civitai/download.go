package civitai

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"github.com/daydreamlive/scopectl/internal/atomicfile"
	"github.com/daydreamlive/scopectl/internal/fetch"
	"github.com/daydreamlive/scopectl/internal/httpx"
	"github.com/daydreamlive/scopectl/internal/progress"
	"github.com/daydreamlive/scopectl/internal/safetensors"
)

// Suffixes of the files a download keeps next to its target while it runs. Neither ends
// in .safetensors or .json, so Scope's LoRA loader and lister ignore them.
const (
	IncompleteSuffix = ".incomplete"       // the data, preallocated to the full size
	PartsSuffix      = ".incomplete.parts" // the sidecar: chunks written and their SHA256
)

const (
	maxFileSize   = 64 << 30 // refuse anything larger, whatever the server says
	maxRedirects  = 5
	maxURLRefresh = 3   // re-signings of an expired CDN link per Download
	maxChunkTries = 100 // attempts per chunk, progress or not
	partsMagic    = "scopectl-civitai-parts 1"
)

var downloadPath = regexp.MustCompile(`/api/download/models/[0-9]{1,18}$`)

// Download fetches f into dir (created if missing): parallel ranged requests into
// dir/<name>.incomplete, resumable after an interruption (the sidecar <name>.incomplete.parts
// lists the chunks written with their SHA256, re-checked on resume), the whole file checked
// against the SHA256 CivitAI publishes and parsed as safetensors, then renamed to
// dir/<name>. The name comes from the CDN's Content-Disposition (else f.Name) and is
// sanitized; nothing is written outside dir. It returns the final path. If dir/<name>
// already holds the same content it is returned as is; different content is never
// overwritten (ErrExists).
func (c *Client) Download(ctx context.Context, f FileInfo, dir string) (string, error) {
	p, err := c.download(ctx, f, dir)
	return p, c.guard(err)
}

// dl is one Download in progress.
type dl struct {
	c      *Client
	hc     *http.Client
	f      FileInfo
	want   string // expected SHA256, lower-case hex
	base   *url.URL
	apiURL *url.URL
	w      what

	mu       sync.Mutex
	cdn      *url.URL // current signed link
	gen      int      // bumped on every re-signing
	refreshs int

	root   *os.Root
	dir    string
	name   string
	fh     *os.File
	total  int64
	chunk  int64
	ranged bool
	tr     *progress.Tracker

	part *fetch.Partial // the resumable chunks (nil when the server does not do ranges)
}

func (c *Client) download(ctx context.Context, f FileInfo, dir string) (string, error) {
	d := &dl{c: c, f: f, hc: c.httpClient(), chunk: c.chunk(), dir: dir}
	d.w = what{desc: fmt.Sprintf("file %s", clip(f.Name))}
	if d.want = normSHA256(f.SHA256); d.want == "" {
		return "", fmt.Errorf("civitai: CivitAI publishes no SHA256 for %s, so it cannot be verified; scopectl does not install unverified downloads: %w", clip(f.Name), ErrIntegrity)
	}
	if isPickle(f) || f.Format != "" && !strings.EqualFold(f.Format, "SafeTensor") {
		return "", fmt.Errorf("civitai: %s is a %s file, not SafeTensor; scopectl installs only .safetensors (pickle formats can run code when loaded): %w", clip(f.Name), formatName(f), ErrUnsupported)
	}
	var err error
	if d.base, err = c.base(); err != nil {
		return "", err
	}
	if d.apiURL, err = d.downloadURL(); err != nil {
		return "", err
	}
	if m := downloadPath.FindString(d.apiURL.Path); m != "" {
		vid, _ := strconv.ParseInt(m[strings.LastIndexByte(m, '/')+1:], 10, 64)
		d.w = what{desc: fmt.Sprintf("model version %d (%s)", vid, clip(f.Name)),
			page: fmt.Sprintf("%s/model-versions/%d", d.base, vid)}
	}
	if dir == "" {
		return "", fmt.Errorf("civitai: no target directory: %w", ErrBadRef)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("civitai: creating %s: %w", dir, err)
	}
	if d.root, err = os.OpenRoot(dir); err != nil {
		return "", fmt.Errorf("civitai: opening %s: %w", dir, err)
	}
	defer d.root.Close()

	cdn, err := d.resolve(ctx)
	if err != nil {
		return "", err
	}
	d.cdn = cdn
	probe, err := d.probe(ctx)
	if err != nil {
		return "", err
	}
	closeProbe := func() {
		if probe != nil {
			probe.resp.Body.Close()
			probe.wd.stop()
			probe = nil
		}
	}
	defer closeProbe()

	if d.name, err = d.fileName(probe.resp); err != nil {
		return "", err
	}
	final := filepath.Join(dir, d.name)
	if same, err := d.existing(); err != nil {
		return "", err
	} else if same {
		closeProbe()
		d.removeLeftovers()
		return final, nil
	}
	d.tr = c.Progress.Start("download", d.name, d.total)
	defer d.tr.Finish()

	inc := d.name + IncompleteSuffix
	d.fh, err = d.root.OpenFile(inc, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return "", fmt.Errorf("civitai: creating %s: %w", filepath.Join(dir, inc), err)
	}
	fhOpen := true
	defer func() {
		if fhOpen {
			d.fh.Close()
		}
	}()
	if err := lockFile(d.fh); err != nil {
		return "", fmt.Errorf("civitai: another scopectl is already downloading %s into %s; wait for it or stop it: %w", d.name, dir, ErrBusy)
	}
	if err := d.loadParts(); err != nil {
		return "", err
	}
	defer func() {
		if d.part != nil {
			d.part.Close()
		}
	}()

	if err := d.fetchAll(ctx, &probe); err != nil {
		if errors.Is(err, ErrIntegrity) || errors.Is(err, ErrUnsupported) {
			d.discard()
		}
		if ctx.Err() != nil {
			return "", fmt.Errorf("civitai: download of %s interrupted; run the same pull again to resume: %w", d.name, context.Cause(ctx))
		}
		return "", err
	}
	if err := d.verify(); err != nil {
		d.discard()
		return "", err
	}
	if err := d.fh.Sync(); err != nil {
		return "", fmt.Errorf("civitai: writing %s: %w", filepath.Join(dir, inc), err)
	}
	if runtime.GOOS == "windows" {
		// Windows cannot rename an open file; Unix renames while the lock is held.
		d.fh.Close()
		fhOpen = false
	}
	if same, err := d.existing(); err != nil {
		return "", err
	} else if !same {
		if err := d.root.Rename(inc, d.name); err != nil {
			return "", fmt.Errorf("civitai: renaming %s into place: %w", filepath.Join(dir, inc), err)
		}
	} else {
		_ = d.root.Remove(inc)
	}
	if d.part != nil {
		d.part.Complete()
	}
	_ = d.root.Remove(d.name + PartsSuffix)
	if err := atomicfile.SyncDir(dir); err != nil {
		return "", fmt.Errorf("civitai: syncing %s: %w", dir, err)
	}
	return final, nil
}

// removeLeftovers deletes a stale .incomplete and sidecar of the name, unless another
// process is writing them.
func (d *dl) removeLeftovers() {
	h, err := d.root.OpenFile(d.name+IncompleteSuffix, os.O_RDWR, 0)
	if err != nil {
		_ = d.root.Remove(d.name + PartsSuffix)
		return
	}
	defer h.Close()
	if lockFile(h) != nil {
		return
	}
	_ = d.root.Remove(d.name + IncompleteSuffix)
	_ = d.root.Remove(d.name + PartsSuffix)
}

// downloadURL rebuilds f.DownloadURL on BaseURL's origin: only the path
// /api/download/models/{id} and the file-selecting query parameters are kept, so the key
// can never be sent anywhere else, whatever the answer said.
func (d *dl) downloadURL() (*url.URL, error) {
	raw := strings.TrimSpace(d.f.DownloadURL)
	bad := func(why string) (*url.URL, error) {
		return nil, fmt.Errorf("civitai: %s: unusable download URL from CivitAI (%s): %w", d.w.desc, why, ErrUnsafe)
	}
	if raw == "" {
		return bad("missing")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return bad("unparsable")
	}
	if u.User != nil {
		return bad("user info")
	}
	m := downloadPath.FindString(u.Path)
	if m == "" || !strings.HasSuffix(u.Path, m) {
		return bad("not an /api/download/models/{id} URL")
	}
	out := *d.base
	out.Path = d.base.Path + m
	q := url.Values{}
	for k, vs := range u.Query() {
		switch k {
		case "type", "format", "size", "fp", "quantType":
			for _, v := range vs {
				q.Add(k, v)
			}
		}
	}
	out.RawQuery = q.Encode()
	return &out, nil
}

// resolve asks CivitAI's download endpoint for the signed CDN link. It follows redirects on
// CivitAI's own origin (with the key) and stops at the first one leaving it.
func (d *dl) resolve(ctx context.Context) (*url.URL, error) {
	c := d.c
	u := d.apiURL
	for hop := 0; hop <= maxRedirects; hop++ {
		var next *url.URL
		var sent bool
		err := c.withRetry(ctx, func() error {
			var err error
			next, sent, err = d.resolveOnce(ctx, u)
			return err
		})
		if err != nil {
			return nil, err
		}
		if next.Scheme != "https" && next.Scheme != "http" || next.Host == "" {
			return nil, fmt.Errorf("civitai: %s: CivitAI redirected to an unusable location: %w", d.w.desc, ErrUnsafe)
		}
		if next.User != nil {
			return nil, fmt.Errorf("civitai: %s: CivitAI redirected to a URL with user info: %w", d.w.desc, ErrUnsafe)
		}
		if sameOrigin(d.base, next) {
			p := strings.TrimPrefix(next.Path, d.base.Path)
			reason := next.Query().Get("reason")
			switch {
			case strings.HasPrefix(p, "/login") || reason == "download-auth":
				return nil, d.authRedirect(sent)
			case reason == "early-access" || strings.HasPrefix(p, "/pricing") || strings.HasPrefix(p, "/purchase") ||
				strings.HasPrefix(p, "/model-versions/") || strings.HasPrefix(p, "/models/"):
				return nil, c.earlyAccessError(d.w, "", sent)
			case strings.HasPrefix(p, "/api/download/"):
				u = next
				continue
			}
			return nil, fmt.Errorf("civitai: %s: CivitAI redirected the download to the page %s instead of the file: %w", d.w.desc, redactURL(next), ErrProtocol)
		}
		if d.base.Scheme == "https" && next.Scheme != "https" {
			return nil, fmt.Errorf("civitai: %s: CivitAI redirected to an insecure http:// download link on %s; refusing: %w", d.w.desc, clip(next.Host), ErrUnsafe)
		}
		if strings.Contains(next.Path, "/api/download/") {
			return nil, fmt.Errorf("civitai: %s: CivitAI moved the download to %s; set CIVITAI_API_URL to %s://%s: %w",
				d.w.desc, clip(next.Host), next.Scheme, clip(next.Host), ErrUnsafe)
		}
		return next, nil
	}
	return nil, fmt.Errorf("civitai: %s: more than %d redirects on CivitAI: %w", d.w.desc, maxRedirects, ErrProtocol)
}

func (d *dl) authRedirect(sent bool) error {
	if sent {
		return fmt.Errorf("civitai: %s: CivitAI sent the download to its login page although an API key was given; the key may be invalid or revoked: create a new one at https://civitai.com/user/account and set CIVITAI_API_KEY: %w", d.w.desc, ErrAuth)
	}
	return fmt.Errorf("civitai: %s needs a logged-in CivitAI account to download: create an API key at https://civitai.com/user/account and set CIVITAI_API_KEY: %w", d.w.desc, ErrAuth)
}

// resolveOnce makes one request to the download endpoint and returns the redirect target.
func (d *dl) resolveOnce(ctx context.Context, u *url.URL) (*url.URL, bool, error) {
	c := d.c
	wd := c.newWatchdog(ctx)
	defer wd.stop()
	req, sent, err := c.newRequest(wd.ctx, u)
	if err != nil {
		return nil, false, err
	}
	resp, err := d.hc.Do(req)
	if err != nil {
		return nil, sent, d.transportErr(ctx, wd, u.Host, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode >= 300 && resp.StatusCode < 400 && resp.StatusCode != http.StatusNotModified:
		loc := resp.Header.Get("Location")
		if loc == "" || len(loc) > 16<<10 {
			return nil, sent, fmt.Errorf("civitai: %s: CivitAI answered %d without a usable Location: %w", d.w.desc, resp.StatusCode, ErrProtocol)
		}
		next, err := u.Parse(loc)
		if err != nil {
			return nil, sent, fmt.Errorf("civitai: %s: CivitAI redirected to an unparsable location: %w", d.w.desc, ErrUnsafe)
		}
		return next, sent, nil
	case resp.StatusCode == http.StatusOK:
		return nil, sent, fmt.Errorf("civitai: %s: CivitAI answered the download request with a page instead of a redirect to the file (is CIVITAI_API_URL right?): %w", d.w.desc, ErrProtocol)
	}
	serr := c.statusError(resp, d.w, sent)
	if retryable(resp.StatusCode) {
		return nil, sent, &retryErr{err: serr, retryAfter: resp.Header.Get("Retry-After")}
	}
	return nil, sent, serr
}

// transportErr classifies a failed round trip or body read.
func (d *dl) transportErr(ctx context.Context, wd *watchdog, host string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if wd.stalled() {
		return &retryErr{err: fmt.Errorf("civitai: %s: %s sent nothing for %s: %w", d.w.desc, clip(host), d.c.stall(), ErrRetry)}
	}
	ne, again := netError(clip(host), err)
	if !again {
		return fmt.Errorf("civitai: %s: %w", d.w.desc, ne)
	}
	return &retryErr{err: fmt.Errorf("civitai: %s: %v: %w", d.w.desc, ne, ErrRetry)}
}

// expiredErr marks a CDN refusal (401/403) that a fresh signed link may cure.
type expiredErr struct {
	gen  int
	code int
}

func (e *expiredErr) Error() string {
	return fmt.Sprintf("the download link was refused (%d)", e.code)
}

// cdnResp is an open CDN answer for bytes [start, end] (end inclusive).
type cdnResp struct {
	resp       *http.Response
	wd         *watchdog
	start, end int64
	total      int64 // -1 when unknown (a 200 without Content-Length)
	whole      bool  // a 200: the whole file from byte 0
}

// cdnGet makes one request to the CDN for [start, end] (end < 0: open-ended). It never
// sends the API key or cookies, and never prints the link (its query is a signature).
func (d *dl) cdnGet(ctx context.Context, start, end int64) (*cdnResp, error) {
	d.mu.Lock()
	u, gen := d.cdn, d.gen
	d.mu.Unlock()
	wd := d.c.newWatchdog(ctx)
	req, err := http.NewRequestWithContext(wd.ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		wd.stop()
		return nil, fmt.Errorf("civitai: %s: bad download link: %w", d.w.desc, ErrUnsafe)
	}
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set("Accept-Encoding", "identity") // ranges of the stored bytes, not of a gzip stream
	if end >= 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", start, end))
	} else if start > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", start))
	}
	resp, err := d.hc.Do(req)
	if err != nil {
		wd.stop()
		return nil, d.transportErr(ctx, wd, u.Host, err)
	}
	fail := func(e error) (*cdnResp, error) {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		wd.stop()
		return nil, e
	}
	host := clip(u.Host)
	switch code := resp.StatusCode; {
	case code == http.StatusPartialContent:
		s, e, t, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || s != start || e < s || end >= 0 && e > end || t >= 0 && e >= t {
			return fail(fmt.Errorf("civitai: %s: the download server %s answered a different range than asked: %w", d.w.desc, host, ErrProtocol))
		}
		if resp.ContentLength >= 0 && resp.ContentLength != e-s+1 {
			return fail(fmt.Errorf("civitai: %s: the download server %s sent an inconsistent Content-Length: %w", d.w.desc, host, ErrProtocol))
		}
		return &cdnResp{resp: resp, wd: wd, start: s, end: e, total: t}, nil
	case code == http.StatusOK:
		if start != 0 {
			return fail(fmt.Errorf("civitai: %s: the download server %s stopped honouring Range requests: %w", d.w.desc, host, ErrProtocol))
		}
		t := resp.ContentLength
		r := &cdnResp{resp: resp, wd: wd, start: 0, end: t - 1, total: t, whole: true}
		return r, nil
	case code == http.StatusRequestedRangeNotSatisfiable:
		return fail(fmt.Errorf("civitai: %s: the download server %s holds fewer bytes than expected (416): %w", d.w.desc, host, ErrIntegrity))
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		return fail(&expiredErr{gen: gen, code: code})
	case code == http.StatusNotFound || code == http.StatusGone:
		return fail(fmt.Errorf("civitai: %s: the download server %s no longer has the file (%d); try again later or report it on the model page: %w", d.w.desc, host, code, ErrNotFound))
	case retryable(code):
		return fail(&retryErr{err: fmt.Errorf("civitai: %s: the download server %s answered %d %s: %w", d.w.desc, host, code, http.StatusText(code), ErrRetry), retryAfter: resp.Header.Get("Retry-After")})
	}
	return fail(fmt.Errorf("civitai: %s: the download server %s answered %d %s: %w", d.w.desc, host, resp.StatusCode, http.StatusText(resp.StatusCode), ErrProtocol))
}

// refresh gets a new signed link after the CDN refused the one of generation gen; several
// workers hitting the same expiry share one re-signing.
func (d *dl) refresh(ctx context.Context, e *expiredErr) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.gen != e.gen {
		return nil // someone already refreshed
	}
	if d.refreshs >= maxURLRefresh {
		return fmt.Errorf("civitai: %s: the download server keeps refusing fresh signed links (%d); try again later: %w", d.w.desc, e.code, ErrForbidden)
	}
	d.refreshs++
	u, err := d.resolve(ctx)
	if err != nil {
		return err
	}
	d.cdn = u
	d.gen++
	return nil
}

// get runs cdnGet, re-signing the link when the CDN refused it as expired.
func (d *dl) get(ctx context.Context, start, end int64) (*cdnResp, error) {
	for {
		r, err := d.cdnGet(ctx, start, end)
		var ee *expiredErr
		if !errors.As(err, &ee) {
			return r, err
		}
		if err := d.refresh(ctx, ee); err != nil { // bounded by maxURLRefresh
			return nil, err
		}
	}
}

// open runs get with retries: backoff on 429/5xx/network errors.
func (d *dl) open(ctx context.Context, start, end int64) (*cdnResp, error) {
	var r *cdnResp
	err := d.c.withRetry(ctx, func() (err error) {
		r, err = d.get(ctx, start, end)
		return err
	})
	return r, err
}

// probe opens the first chunk; its answer tells the size, whether ranges work, and the
// file name.
func (d *dl) probe(ctx context.Context) (*cdnResp, error) {
	r, err := d.open(ctx, 0, d.chunk-1)
	if err != nil {
		return nil, err
	}
	limit := int64(maxFileSize)
	if kb := d.f.SizeBytes(); kb > 0 {
		limit = min(limit, kb+kb/20+1<<20)
	}
	switch {
	case r.total < 0:
		err = fmt.Errorf("civitai: %s: the download server does not say how large the file is: %w", d.w.desc, ErrProtocol)
	case r.total == 0:
		err = fmt.Errorf("civitai: %s: the download server offers an empty file: %w", d.w.desc, ErrIntegrity)
	case r.total > limit:
		err = fmt.Errorf("civitai: %s: the download server offers %d bytes, far more than the %d CivitAI lists: %w", d.w.desc, r.total, d.f.SizeBytes(), ErrIntegrity)
	}
	if err != nil {
		r.resp.Body.Close()
		r.wd.stop()
		return nil, err
	}
	d.total = r.total
	d.ranged = !r.whole
	return r, nil
}

// fileName picks and sanitizes the file name: Content-Disposition first, else the API's.
func (d *dl) fileName(resp *http.Response) (string, error) {
	cd := resp.Header.Get("Content-Disposition")
	if cd == "" {
		return SanitizeFileName(d.f.Name)
	}
	_, params, err := mime.ParseMediaType(cd)
	if err != nil {
		return "", fmt.Errorf("civitai: %s: refusing a malformed Content-Disposition from the download server: %w", d.w.desc, ErrUnsafe)
	}
	name, ok := params["filename"]
	if !ok {
		return SanitizeFileName(d.f.Name)
	}
	return SanitizeFileName(name)
}

// existing reports whether dir/name already holds exactly the wanted content; other content
// there is ErrExists.
func (d *dl) existing() (bool, error) {
	fi, err := d.root.Lstat(d.name)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	final := filepath.Join(d.dir, d.name)
	if err != nil {
		return false, fmt.Errorf("civitai: checking %s: %w", final, err)
	}
	other := fmt.Errorf("civitai: %s already exists with other content; move it away or pull into another directory: %w", final, ErrExists)
	if !fi.Mode().IsRegular() || d.total > 0 && fi.Size() != d.total {
		return false, other
	}
	f, err := d.root.Open(d.name)
	if err != nil {
		return false, fmt.Errorf("civitai: checking %s: %w", final, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return false, fmt.Errorf("civitai: checking %s: %w", final, err)
	}
	if hex.EncodeToString(h.Sum(nil)) != d.want {
		return false, other
	}
	return true, nil
}

func (d *dl) partsHeader() string {
	return fmt.Sprintf("%s %s %d %d", partsMagic, d.want, d.total, d.chunk)
}

// loadParts prepares the .incomplete file and the sidecar (fetch.Resume). A sidecar for
// this very file (same SHA256, size and chunk size) names chunks already written; each
// is re-hashed and kept only if it still matches. Anything else starts over.
func (d *dl) loadParts() error {
	inc := filepath.Join(d.dir, d.name+IncompleteSuffix)
	if !d.ranged {
		// no ranges, no resume: one stream from the start
		_ = d.root.Remove(d.name + PartsSuffix)
		if err := d.fh.Truncate(0); err != nil {
			return fmt.Errorf("civitai: %s: %w", inc, err)
		}
		return nil
	}
	p, err := fetch.Resume(d.root, d.fh, d.name+IncompleteSuffix, d.name+PartsSuffix, d.partsHeader(), d.total, d.chunk, nil)
	if err != nil {
		return fmt.Errorf("civitai: %s: %w", inc, err)
	}
	d.part = p
	return nil
}

// discard removes the partial download (after an integrity failure).
func (d *dl) discard() {
	if d.part != nil {
		d.part.Discard()
		return
	}
	_ = d.fh.Truncate(0)
	_ = d.root.Remove(d.name + IncompleteSuffix)
	_ = d.root.Remove(d.name + PartsSuffix)
}

// fetchAll downloads what is missing (fetch.Download: the chunks not on record,
// Connections at a time, or one stream from the start without ranges). The probe's open
// answer serves chunk 0.
func (d *dl) fetchAll(ctx context.Context, probe **cdnResp) error {
	pol := d.c.policy()
	pol.MaxTries = maxChunkTries
	dl := &fetch.Download{File: d.fh, Part: d.part, Size: d.total, Whole: !d.ranged, Src: d,
		Conns: d.c.conns(), Policy: pol, Added: d.tr.Add}
	if d.part != nil {
		d.tr.Add(d.part.Have())
	}
	if *probe != nil {
		dl.First, *probe = d.body(*probe), nil
	}
	err := dl.Run(ctx)
	var we *fetch.WriteError
	var g *httpx.GaveUpError
	var re *retryErr
	switch {
	case errors.As(err, &we):
		return fmt.Errorf("civitai: writing %s: %w", filepath.Join(d.dir, d.name+IncompleteSuffix), we.Err)
	case errors.As(err, &g) && errors.As(g.Err, &re) && re.cut:
		return fmt.Errorf("civitai: %s: %v (gave up after %d attempts); run the pull again later to resume: %w", d.w.desc, re.err, g.Attempts, ErrRetry)
	case errors.As(err, &g) && errors.As(g.Err, &re):
		return fmt.Errorf("%w (gave up after %d attempts)", re.err, g.Attempts)
	}
	return err
}

// Range opens bytes [off, end] on the CDN (fetch.Source); without ranges, the whole
// file. An answer that no longer fits the probe's (another size, ranges honoured or
// not) fails for good.
func (d *dl) Range(ctx context.Context, off, end int64) (io.ReadCloser, error) {
	rs, re := off, end
	if !d.ranged {
		rs, re = 0, -1
	}
	r, err := d.get(ctx, rs, re)
	if err != nil {
		return nil, err
	}
	if r.whole != !d.ranged || r.total != d.total && d.total >= 0 {
		r.resp.Body.Close()
		r.wd.stop()
		if r.total != d.total {
			return nil, fmt.Errorf("civitai: %s: the file on the download server changed size during the download (%d → %d bytes): %w", d.w.desc, d.total, r.total, ErrIntegrity)
		}
		return nil, fmt.Errorf("civitai: %s: the download server changed how it answers Range requests: %w", d.w.desc, ErrProtocol)
	}
	return d.body(r), nil
}

// body is a CDN answer's body: every read kicks the watchdog, and a read that fails or
// ends short is a *retryErr (cut) saying where the transfer broke off.
func (d *dl) body(r *cdnResp) io.ReadCloser { return &cdnBody{d: d, r: r} }

type cdnBody struct {
	d   *dl
	r   *cdnResp
	got int64
}

func (b *cdnBody) Read(p []byte) (int, error) {
	k, err := b.r.resp.Body.Read(p)
	if k > 0 {
		b.r.wd.kick()
		b.got += int64(k)
	}
	want := b.r.end - b.r.start + 1
	if err == nil || err == io.EOF && b.got >= want {
		return k, err
	}
	if ctx := b.r.wd.ctx; ctx.Err() != nil && !b.r.wd.stalled() {
		return k, context.Cause(ctx)
	}
	why := "closed the connection early"
	host := b.r.resp.Request.URL.Host
	switch {
	case b.r.wd.stalled():
		why = fmt.Sprintf("stalled for %s", b.d.c.stall())
	case !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF):
		ne, _ := netError(clip(host), err)
		why = ne.Error()
	}
	return k, &retryErr{cut: true, err: fmt.Errorf("the download server %s %s at byte %d of %d", clip(host), why, b.r.start+b.got, b.d.total)}
}

func (b *cdnBody) Close() error {
	err := b.r.resp.Body.Close()
	b.r.wd.stop()
	return err
}

// verify checks the whole file against the published SHA256 and that it parses as
// safetensors.
func (d *dl) verify() error {
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(d.fh, 0, d.total)); err != nil {
		return fmt.Errorf("civitai: reading back %s: %w", filepath.Join(d.dir, d.name+IncompleteSuffix), err)
	}
	got := hex.EncodeToString(h.Sum(nil))
	if got != d.want {
		return fmt.Errorf("civitai: %s: the downloaded file's SHA256 is %s but CivitAI publishes %s; the download was discarded: run the pull again (if it repeats, the file on CivitAI is broken): %w",
			d.w.desc, got, d.want, ErrIntegrity)
	}
	if _, err := safetensors.ReadHeader(d.fh, d.total); err != nil {
		return fmt.Errorf("civitai: %s matches CivitAI's SHA256 but is not a valid safetensors file (%s); refusing to install it: %w", d.w.desc, clip(err.Error()), ErrUnsupported)
	}
	return nil
}

// parseContentRange is httpx.ParseContentRange (shared with the other hub client).
func parseContentRange(s string) (start, end, total int64, ok bool) {
	return httpx.ParseContentRange(s)
}
