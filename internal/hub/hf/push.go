package hf

// Push: one commit of local files to a Hub repo, spoken as huggingface_hub's create_repo /
// create_commit do on the legacy LFS path (no Xet):
//
//  1. optional POST /api/repos/create (409: exists, fine; 401/402/403: fine if the repo
//     turns out to exist and be visible, as huggingface_hub's exist_ok does);
//  2. POST /api/{type}s/{repo}/preupload/{rev} with each file's path, size and first 512
//     bytes (≤256 files a call): the Hub says lfs or regular, and the oid it already has;
//     files whose oid equals the local one are left out of the commit;
//  3. POST {endpoint}/{repo}.git/info/lfs/objects/batch (operation=upload, transfers basic
//     and multipart): objects the Hub already stores come back without actions; the others
//     get a presigned PUT, or part URLs plus chunk_size and a completion URL; then the
//     verify action;
//  4. POST /api/{type}s/{repo}/commit/{rev} with NDJSON header / lfsFile / file lines.
//
// Files are hashed and uploaded straight from disk (a part at a time), so memory does not
// grow with their size. The token goes to the endpoint's host only, never to presigned
// storage URLs. Idempotent steps are retried with backoff on 429, 5xx and network errors;
// the commit only on 429, since a commit that failed mid-way may have been made.

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/daydreamlive/scopectl/internal/progress"
)

// PushOptions tunes a Push.
type PushOptions struct {
	Create    bool   // create the repo first; an existing repo is fine
	Private   bool   // with Create: a new repo is private (an existing one keeps its visibility)
	Revision  string // branch to commit to, default main
	Message   string // commit summary, default "Upload <file> with scopectl"
	ModelCard []byte // README.md content, optional (pushed as a regular file)
}

// PushedFile is one file of a push.
type PushedFile struct {
	Path      string `json:"path"`
	Size      int64  `json:"size"`
	SHA256    string `json:"sha256"`
	LFS       bool   `json:"lfs"`
	Uploaded  bool   `json:"uploaded"`            // LFS bytes sent now; false: the Hub already had the object (or the file is regular)
	Unchanged bool   `json:"unchanged,omitempty"` // the branch already had this exact file: left out of the commit
}

// PushResult describes a finished push.
type PushResult struct {
	Repo    string       `json:"repo"`
	Commit  string       `json:"commit"` // the new commit; when nothing changed, the branch's current one
	URL     string       `json:"url"`    // the repo's page (its /tree/<branch> page for a branch other than main)
	Files   []PushedFile `json:"files"`
	Created bool         `json:"created,omitempty"` // Create made a new repo
}

// Upload names one local file and its path in the repo.
type Upload struct {
	Path  string // path in the repo (forward slashes)
	Local string // local file
}

const (
	maxPreuploadFiles = 256 // huggingface_hub's UPLOAD_BATCH_MAX_NUM_FILES
	lfsJSON           = "application/vnd.git-lfs+json"
	hashProgressMin   = 8 << 20 // smaller files are hashed without a progress report
)

// pushHTTP is defaultHTTP with a longer wait for answers: completing a large multipart
// upload or a commit can take the Hub more than a minute.
var pushHTTP = func() *http.Client {
	t := defaultHTTP.Transport.(*http.Transport).Clone()
	t.ResponseHeaderTimeout = 10 * time.Minute
	return &http.Client{Transport: t}
}()

// pushItem is one file being pushed.
type pushItem struct {
	path   string
	local  string // "" for data
	data   []byte
	size   int64
	mtime  time.Time
	sample []byte
	sha256 string

	mode      string // "lfs" or "regular", from preupload
	unchanged bool
	uploaded  bool
}

// readerAtCloser is an open file (or in-memory data).
type readerAtCloser interface {
	io.ReaderAt
	io.Closer
}

type bytesAt struct{ *bytes.Reader }

func (bytesAt) Close() error { return nil }

var errChanged = errors.New("changed on disk while pushing")

// open opens the content and checks that a local file still has the size and
// modification time it had when it was hashed.
func (it *pushItem) open() (readerAtCloser, error) {
	if it.local == "" {
		return bytesAt{bytes.NewReader(it.data)}, nil
	}
	f, err := os.Open(it.local)
	if err != nil {
		return nil, fmt.Errorf("hf: %s: %w", clip(it.path), err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("hf: %s: %w", clip(it.path), err)
	}
	if fi.Size() != it.size || !fi.ModTime().Equal(it.mtime) {
		f.Close()
		return nil, fmt.Errorf("hf: %s (%s) %w; run the push again", clip(it.path), clip(it.local), errChanged)
	}
	return f, nil
}

// section is a request body over bytes [off, off+n) of the item, opened anew each attempt.
func (it *pushItem) section(off, n int64) *reqBody {
	return &reqBody{size: n, open: func() (io.ReadCloser, error) {
		f, err := it.open()
		if err != nil {
			return nil, err
		}
		return struct {
			io.Reader
			io.Closer
		}{io.NewSectionReader(f, off, n), f}, nil
	}}
}

type pusher struct {
	*pull
	items    []*pushItem
	respWait time.Duration
}

// Push commits files (and opt.ModelCard as README.md) to repo ("org/name", or an
// hf://… reference without a path) in one commit, creating the repo first with
// opt.Create. Files the branch already has byte for byte are left out; when nothing is
// left, no commit is made and the result names the branch's current commit.
func (c *Client) Push(ctx context.Context, repo string, files []Upload, opt PushOptions) (*PushResult, error) {
	ref, err := pushRef(repo, opt.Revision)
	if err != nil {
		return nil, err
	}
	if !c.Token.IsSet() {
		return nil, tagf(ErrAuth, "hf: pushing to %s needs a token with write access: set HF_TOKEN (or log in with `hf auth login`) to a write token from https://huggingface.co/settings/tokens", ref.Repo)
	}
	items, err := pushItems(files, opt.ModelCard)
	if err != nil {
		return nil, err
	}
	p, err := c.session(ref)
	if err != nil {
		return nil, err
	}
	ps := &pusher{pull: p, items: items, respWait: 10 * p.stall}
	for _, it := range items {
		if err := ps.hash(ctx, it); err != nil {
			return nil, err
		}
	}
	res := &PushResult{Repo: ref.Repo, URL: ps.repoPage()}
	if opt.Create {
		if res.Created, err = ps.createRepo(ctx, opt.Private); err != nil {
			return nil, err
		}
	}
	if err := ps.preupload(ctx); err != nil {
		return nil, err
	}
	var changed, lfs []*pushItem
	for _, it := range items {
		if !it.unchanged {
			changed = append(changed, it)
			if it.mode == "lfs" {
				lfs = append(lfs, it)
			}
		}
	}
	if len(changed) == 0 {
		if res.Commit, err = ps.resolveCommit(ctx); err != nil {
			return nil, err
		}
	} else {
		if err := ps.uploadLFS(ctx, lfs); err != nil {
			return nil, err
		}
		msg := opt.Message
		if strings.TrimSpace(msg) == "" {
			msg = "Upload " + changed[0].path + " with scopectl"
			if len(changed) > 1 {
				msg = fmt.Sprintf("Upload %d files with scopectl", len(changed))
			}
		}
		if res.Commit, err = ps.commit(ctx, changed, msg); err != nil {
			return nil, err
		}
	}
	for _, it := range items {
		res.Files = append(res.Files, PushedFile{Path: it.path, Size: it.size, SHA256: it.sha256, LFS: it.mode == "lfs", Uploaded: it.uploaded, Unchanged: it.unchanged})
	}
	return res, nil
}

// pushRef parses the target: a bare org/name or an hf:// / web reference without a path.
func pushRef(repo, rev string) (Ref, error) {
	ref, err := ParseRef(repo)
	if err != nil {
		return Ref{}, err
	}
	if len(ref.Paths) > 0 {
		return Ref{}, fmt.Errorf("hf: push target %q names a path in the repo; give the repo only (ORG/NAME) and the files' paths separately", clip(repo))
	}
	if rev != "" {
		ref.Revision = rev
	}
	if err := ref.validate(); err != nil {
		return Ref{}, err
	}
	if commitRe.MatchString(ref.Revision) {
		return Ref{}, fmt.Errorf("hf: cannot push to commit %s: name a branch", ref.Revision)
	}
	return ref, nil
}

func pushItems(files []Upload, card []byte) ([]*pushItem, error) {
	var items []*pushItem
	seen := map[string]bool{}
	add := func(it *pushItem) error {
		if err := safePath(it.path); err != nil {
			return fmt.Errorf("hf: path in repo %q: %v", clip(it.path), err)
		}
		for _, seg := range strings.Split(it.path, "/") {
			if seg == ".git" {
				return fmt.Errorf("hf: path in repo %q: the .git folder cannot be written", clip(it.path))
			}
		}
		if seen[it.path] {
			return fmt.Errorf("hf: %s is given twice", clip(it.path))
		}
		seen[it.path] = true
		items = append(items, it)
		return nil
	}
	for _, f := range files {
		if f.Local == "" {
			return nil, fmt.Errorf("hf: %s: no local file", clip(f.Path))
		}
		if err := add(&pushItem{path: f.Path, local: f.Local}); err != nil {
			return nil, err
		}
	}
	if len(card) > 0 {
		if err := add(&pushItem{path: "README.md", data: card}); err != nil {
			return nil, fmt.Errorf("%v (both a file and the model card)", err)
		}
	}
	if len(items) == 0 {
		return nil, errors.New("hf: nothing to push")
	}
	return items, nil
}

// session is newPull without a cache folder.
func (c *Client) session(ref Ref) (*pull, error) { return c.newSession(ref, pushHTTP) }

func (ps *pusher) repoPage() string {
	u := ps.base + "/" + urlPrefix(ps.ref.RepoType) + ps.ref.Repo
	if ps.ref.Revision != DefaultRevision {
		u += "/tree/" + url.PathEscape(ps.ref.Revision)
	}
	return u
}

// hash reads the item once: size, first 512 bytes, sha256.
func (ps *pusher) hash(ctx context.Context, it *pushItem) error {
	if it.local == "" {
		it.size = int64(len(it.data))
		it.sample = it.data[:min(len(it.data), 512)]
		s := sha256.Sum256(it.data)
		it.sha256 = hex.EncodeToString(s[:])
		return nil
	}
	f, err := os.Open(it.local)
	if err != nil {
		return fmt.Errorf("hf: %s: %w", clip(it.path), err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("hf: %s: %w", clip(it.path), err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("hf: %s: %s is not a regular file", clip(it.path), clip(it.local))
	}
	it.size, it.mtime = fi.Size(), fi.ModTime()
	it.sample = make([]byte, min(it.size, 512))
	if _, err := f.ReadAt(it.sample, 0); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("hf: %s: %w", clip(it.path), err)
	}
	var tr *progress.Tracker // nil reports nothing
	if it.size >= hashProgressMin {
		tr = ps.c.Progress.Start("hash", it.path, it.size)
		defer tr.Finish()
	}
	h := sha256.New()
	bp := hashBufs.Get().(*[]byte)
	defer hashBufs.Put(bp)
	var w io.Writer = h
	if tr != nil {
		w = io.MultiWriter(h, tr)
	}
	n, err := io.CopyBuffer(w, &ctxReader{ctx: ctx, r: io.NewSectionReader(f, 0, it.size+1)}, *bp)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("hf: %s: %w", clip(it.path), err)
	}
	if n != it.size {
		return fmt.Errorf("hf: %s (%s) %w; run the push again", clip(it.path), clip(it.local), errChanged)
	}
	it.sha256 = hex.EncodeToString(h.Sum(nil))
	return nil
}

// gitSHA1 is the item's git blob id, read anew (regular files are small).
func (it *pushItem) gitSHA1() (string, error) {
	f, err := it.open()
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha1.New()
	fmt.Fprintf(h, "blob %d\x00", it.size)
	if n, err := io.Copy(h, io.NewSectionReader(f, 0, it.size+1)); err != nil || n != it.size {
		if err == nil {
			err = errChanged
		}
		return "", fmt.Errorf("hf: %s: %w", clip(it.path), err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(b []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(b)
}

// reqBody is a request body that can be opened again for a retry or a redirect.
type reqBody struct {
	size int64
	open func() (io.ReadCloser, error)
}

func jsonBody(v any) *reqBody {
	b, _ := json.Marshal(v)
	return &reqBody{size: int64(len(b)), open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }}
}

// bodyReader feeds a request body to the transport: it keeps the watchdog quiet while
// bytes flow, gives the server respWait to answer once all is sent, checks the length,
// and remembers a local read error so that it is not taken for a network one.
type bodyReader struct {
	rc       io.ReadCloser
	w        *watchdog
	respWait time.Duration
	n, want  int64
	prog     func(int64)
	err      atomic.Pointer[error]
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.n += int64(n)
	if n > 0 {
		b.w.kick()
		if b.prog != nil {
			b.prog(b.n)
		}
	}
	switch {
	case err == io.EOF && b.n != b.want:
		err = errChanged
		b.err.Store(&err)
	case err == io.EOF:
		b.w.t.Reset(b.respWait)
	case err != nil:
		b.err.Store(&err)
	}
	return n, err
}

func (b *bodyReader) Close() error { return b.rc.Close() }

// request is one HTTP exchange of a push.
type request struct {
	method, url string
	auth        bool // send the token (only ever to the endpoint's host)
	hdr         http.Header
	body        *reqBody
	prog        func(int64) // bytes of the body read so far (this attempt)
	what        string      // for messages
	commit      bool        // not idempotent: retried only after a 429
}

// send is roundTrip with a request body.
func (ps *pusher) send(ctx context.Context, rq request) (*http.Response, bool, *watchdog, func(), error) {
	actx, w, stop := ps.watch(ctx)
	req, sent, err := ps.newRequest(actx, rq.method, rq.url, rq.auth)
	if err != nil {
		stop()
		return nil, false, nil, nil, err
	}
	for k, v := range rq.hdr {
		req.Header[k] = v
	}
	if a := req.Header.Get("Accept"); a == "application/json" || a == lfsJSON {
		req.Header.Del("Accept-Encoding") // let the transport gzip (and check) API answers
	}
	var body *bodyReader
	if rq.body != nil {
		mk := func() (io.ReadCloser, error) {
			rc, err := rq.body.open()
			if err != nil {
				return nil, err
			}
			body = &bodyReader{rc: rc, w: w, respWait: ps.respWait, want: rq.body.size, prog: rq.prog}
			return body, nil
		}
		req.ContentLength = rq.body.size
		if rq.body.size == 0 {
			req.Body = http.NoBody
		} else {
			rc, err := mk()
			if err != nil {
				stop()
				return nil, false, nil, nil, err
			}
			req.Body = rc
			req.GetBody = mk
		}
	}
	resp, err := ps.follow.Do(req)
	host := req.URL.Host
	if err != nil {
		stop()
		if ctx.Err() != nil {
			return nil, sent, nil, nil, ctx.Err()
		}
		if body != nil {
			if e := body.err.Load(); e != nil {
				if errors.Is(*e, errChanged) {
					return nil, sent, nil, nil, fmt.Errorf("hf: %s %w; run the push again", rq.what, errChanged)
				}
				return nil, sent, nil, nil, fmt.Errorf("hf: %s: reading the local file: %v", rq.what, clipErr(*e))
			}
		}
		if w.stalled.Load() {
			return nil, sent, nil, nil, &transient{err: fmt.Errorf("%s: nothing sent or received for %s", host, ps.stall)}
		}
		return nil, sent, nil, nil, transportErr(host, err)
	}
	w.kick()
	if terr := retryStatus(resp, stop); terr != nil {
		return nil, sent, nil, nil, terr
	}
	return resp, sent, w, stop, nil
}

// answer is a successful exchange.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// do runs rq with retries and returns the answer when ok accepts its status (2xx when
// ok is nil); any other status is a one-line error.
func (ps *pusher) do(ctx context.Context, rq request, ok func(int) bool) (answer, error) {
	if ok == nil {
		ok = func(code int) bool { return code >= 200 && code < 300 }
	}
	maybe := func(err error) error {
		return fmt.Errorf("hf: %s: %v; the commit may or may not have been made: check %s and run the push again (files already uploaded are not sent again)", rq.what, err, ps.repoPage())
	}
	var a answer
	err := ps.retry(ctx, rq.what, func() error {
		resp, sent, w, stop, err := ps.send(ctx, rq)
		if err != nil {
			var t *transient
			if rq.commit && errors.As(err, &t) && t.status != http.StatusTooManyRequests {
				return maybe(t.err)
			}
			return err
		}
		defer stop()
		defer resp.Body.Close()
		if !ok(resp.StatusCode) {
			return ps.pushError(resp, rq.what, sent)
		}
		b, err := io.ReadAll(&kickReader{r: io.LimitReader(resp.Body, maxAPIBody+1), w: w})
		if err != nil {
			err = ps.readErr(ctx, w, resp.Request.URL.Host, int64(len(b)), resp.ContentLength, err)
			var t *transient
			if rq.commit && errors.As(err, &t) {
				return maybe(t.err)
			}
			return err
		}
		if len(b) > maxAPIBody {
			return fmt.Errorf("hf: %s: answer larger than %d MiB", rq.what, maxAPIBody>>20)
		}
		a = answer{status: resp.StatusCode, header: resp.Header, body: b}
		return nil
	})
	return a, err
}

var s3CodeRe = regexp.MustCompile(`<Code>([A-Za-z0-9]{1,64})</Code>`)

// serverMessage is the Hub's explanation: X-Error-Message, else "error" or "message" in
// a JSON body; scrubbed of the token, one short line.
func (ps *pusher) serverMessage(resp *http.Response) string {
	if m := resp.Header.Get("X-Error-Message"); m != "" {
		return ps.c.scrub(m)
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var v struct {
		Error   any    `json:"error"`
		Message string `json:"message"`
	}
	if json.Unmarshal(b, &v) == nil {
		if s, ok := v.Error.(string); ok && s != "" {
			return ps.c.scrub(s)
		}
		if v.Message != "" {
			return ps.c.scrub(v.Message)
		}
	}
	if m := s3CodeRe.FindSubmatch(b); m != nil {
		return string(m[1])
	}
	return ""
}

// pushError turns a failed answer into a one-line error that says what to do. It never
// includes the token or a presigned URL.
func (ps *pusher) pushError(resp *http.Response, what string, sentToken bool) error {
	code := resp.StatusCode
	msg := ps.serverMessage(resp)
	detail := ""
	if msg != "" {
		detail = ": " + msg
	}
	repo := ps.ref.Repo
	if resp.Request != nil && !ps.sameOrigin(resp.Request.URL) {
		return fmt.Errorf("hf: %s: the upload server %s answered %d %s%s (its signed link may have expired); run the push again", what, resp.Request.URL.Host, code, http.StatusText(code), detail)
	}
	newToken := "create one with write access at https://huggingface.co/settings/tokens and set HF_TOKEN"
	switch {
	case code == http.StatusUnauthorized && (sentToken || msg == "Invalid credentials in Authorization header"):
		return tagf(ErrAuth, "hf: the Hugging Face token was refused (401) while pushing to %s: it is invalid or expired; %s", repo, newToken)
	case code == http.StatusUnauthorized:
		return tagf(ErrAuth, "hf: pushing to %s needs authentication (401): %s", repo, newToken)
	case code == http.StatusForbidden || code == http.StatusPaymentRequired:
		return tagf(ErrForbidden, "hf: your token cannot write to %s (%d%s): use a write token, or a fine-grained one with write access to the repo (and to its namespace, to create it), from https://huggingface.co/settings/tokens", repo, code, detail)
	case resp.Header.Get("X-Error-Code") == "RevisionNotFound":
		return tagf(ErrNotFound, "hf: branch %q not found in %s: push to an existing branch", clip(ps.ref.Revision), repo)
	case code == http.StatusNotFound && resp.Header.Get("X-Error-Code") == "RepoNotFound":
		return tagf(ErrNotFound, "hf: repository %s not found: create it first (push with create), or check the name and that your token's account can see it", repo)
	case code == http.StatusNotFound:
		return tagf(ErrNotFound, "hf: %s: not found (404%s)", what, detail)
	case code == http.StatusGone:
		return tagf(ErrGone, "hf: %s was removed from the Hub (410 Gone)", repo)
	case code == http.StatusConflict || code == http.StatusPreconditionFailed:
		return fmt.Errorf("hf: %s: the branch changed meanwhile (%d%s); run the push again", what, code, detail)
	}
	return fmt.Errorf("hf: %s: the Hub answered %d %s%s", what, code, http.StatusText(code), detail)
}

// createRepo is huggingface_hub's create_repo(exist_ok=True); true when it made a new repo.
func (ps *pusher) createRepo(ctx context.Context, private bool) (bool, error) {
	org, name, _ := strings.Cut(ps.ref.Repo, "/")
	payload := map[string]any{"name": name, "organization": org, "type": ps.ref.RepoType}
	if private {
		payload["private"] = true // omitted otherwise: the namespace's default visibility
	}
	what := "creating " + ps.ref.Repo
	code := 0
	_, err := ps.do(ctx, request{
		method: http.MethodPost, url: ps.base + "/api/repos/create", auth: true, what: what,
		hdr:  http.Header{"Content-Type": {"application/json"}, "Accept": {"application/json"}},
		body: jsonBody(payload),
	}, func(c int) bool { code = c; return c >= 200 && c < 300 || c == http.StatusConflict })
	if err == nil {
		return code != http.StatusConflict, nil
	}
	if errors.Is(err, ErrForbidden) || errors.Is(err, ErrAuth) {
		// a fine-grained token may write the repo without the right to create in its
		// namespace: fine if the repo exists (huggingface_hub's exist_ok does the same)
		if _, rerr := ps.resolveCommit(ctx); rerr == nil {
			return false, nil
		}
	}
	return false, err
}

// preupload asks the Hub for each file's upload mode and current oid.
func (ps *pusher) preupload(ctx context.Context) error {
	what := ps.ref.Repo + " (preupload)"
	for start := 0; start < len(ps.items); start += maxPreuploadFiles {
		chunk := ps.items[start:min(start+maxPreuploadFiles, len(ps.items))]
		type entry struct {
			Path   string `json:"path"`
			Sample string `json:"sample"`
			Size   int64  `json:"size"`
		}
		var files []entry
		byPath := map[string]*pushItem{}
		for _, it := range chunk {
			files = append(files, entry{Path: it.path, Sample: base64.StdEncoding.EncodeToString(it.sample), Size: it.size})
			byPath[it.path] = it
		}
		a, err := ps.do(ctx, request{
			method: http.MethodPost, url: ps.apiURL("/preupload/" + url.PathEscape(ps.ref.Revision)), auth: true, what: what,
			hdr:  http.Header{"Content-Type": {"application/json"}, "Accept": {"application/json"}},
			body: jsonBody(map[string]any{"files": files}),
		}, nil)
		if err != nil {
			return err
		}
		var ans struct {
			Files []struct {
				Path         string  `json:"path"`
				UploadMode   string  `json:"uploadMode"`
				ShouldIgnore bool    `json:"shouldIgnore"`
				OID          *string `json:"oid"`
			} `json:"files"`
		}
		if err := strictJSON(a.body, &ans); err != nil {
			return tagf(ErrUnsafe, "hf: %s: %v", what, err)
		}
		done := map[string]bool{}
		for _, f := range ans.Files {
			it := byPath[f.Path]
			switch {
			case it == nil:
				return tagf(ErrUnsafe, "hf: %s: the Hub answered for a file not asked about (%q)", what, clip(f.Path))
			case done[f.Path]:
				return tagf(ErrUnsafe, "hf: %s: the Hub answered twice for %s", what, clip(f.Path))
			case f.UploadMode != "lfs" && f.UploadMode != "regular":
				return tagf(ErrUnsafe, "hf: %s: unknown upload mode %q for %s", what, clip(f.UploadMode), clip(f.Path))
			case f.ShouldIgnore:
				return fmt.Errorf("hf: %s is ignored by the .gitignore of %s: rename it or change .gitignore", clip(f.Path), ps.ref.Repo)
			}
			done[f.Path] = true
			it.mode = f.UploadMode
			if it.size == 0 {
				it.mode = "regular" // empty files cannot be LFS objects (huggingface_hub does the same)
			}
			if f.OID == nil || *f.OID == "" {
				continue
			}
			if it.mode == "lfs" {
				it.unchanged = *f.OID == it.sha256
			} else {
				sum, err := it.gitSHA1()
				if err != nil {
					return err
				}
				it.unchanged = *f.OID == sum
			}
		}
		for _, it := range chunk {
			if !done[it.path] {
				return tagf(ErrUnsafe, "hf: %s: the Hub did not answer for %s", what, clip(it.path))
			}
		}
	}
	return nil
}

type lfsAction struct {
	Href   string         `json:"href"`
	Header map[string]any `json:"header"`
}

type lfsObject struct {
	OID     string `json:"oid"`
	Size    *int64 `json:"size"`
	Actions *struct {
		Upload *lfsAction `json:"upload"`
		Verify *lfsAction `json:"verify"`
	} `json:"actions"`
	Error *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// uploadLFS sends the LFS objects the Hub does not have yet.
func (ps *pusher) uploadLFS(ctx context.Context, items []*pushItem) error {
	byOID := map[string]*pushItem{}
	var objs []*pushItem
	for _, it := range items {
		if byOID[it.sha256] == nil {
			byOID[it.sha256] = it
			objs = append(objs, it)
		}
	}
	what := ps.ref.Repo + " (LFS batch)"
	type job struct {
		it *pushItem
		o  lfsObject
	}
	var jobs []job
	for start := 0; start < len(objs); start += maxPreuploadFiles {
		chunk := objs[start:min(start+maxPreuploadFiles, len(objs))]
		type obj struct {
			OID  string `json:"oid"`
			Size int64  `json:"size"`
		}
		var req []obj
		for _, it := range chunk {
			req = append(req, obj{it.sha256, it.size})
		}
		a, err := ps.do(ctx, request{
			method: http.MethodPost, url: ps.base + "/" + urlPrefix(ps.ref.RepoType) + ps.ref.Repo + ".git/info/lfs/objects/batch",
			auth: true, what: what,
			hdr: http.Header{"Content-Type": {lfsJSON}, "Accept": {lfsJSON}},
			body: jsonBody(map[string]any{
				"operation": "upload", "transfers": []string{"basic", "multipart"}, "objects": req,
				"hash_algo": "sha256", "ref": map[string]string{"name": ps.ref.Revision},
			}),
		}, nil)
		if err != nil {
			return err
		}
		var ans struct {
			Transfer *string     `json:"transfer"`
			Objects  []lfsObject `json:"objects"`
		}
		if err := strictJSON(a.body, &ans); err != nil {
			return tagf(ErrUnsafe, "hf: %s: %v", what, err)
		}
		if ans.Transfer != nil && *ans.Transfer != "basic" && *ans.Transfer != "multipart" {
			return fmt.Errorf("hf: %s: the Hub chose the %q transfer, which scopectl does not speak", what, clip(*ans.Transfer))
		}
		seen := map[string]bool{}
		for _, o := range ans.Objects {
			it := byOID[o.OID]
			switch {
			case it == nil:
				return tagf(ErrUnsafe, "hf: %s: the Hub answered for an object not asked about", what)
			case seen[o.OID]:
				return tagf(ErrUnsafe, "hf: %s: the Hub answered twice for %s", what, clip(it.path))
			case o.Error != nil:
				return fmt.Errorf("hf: %s: the Hub refused %s (%d: %s)", what, clip(it.path), o.Error.Code, ps.c.scrub(o.Error.Message))
			case o.Size == nil || *o.Size != it.size:
				return tagf(ErrUnsafe, "hf: %s: the Hub answered another size for %s", what, clip(it.path))
			}
			seen[o.OID] = true
			if o.Actions != nil && o.Actions.Upload != nil {
				jobs = append(jobs, job{it, o})
			}
		}
		for _, it := range chunk {
			if !seen[it.sha256] {
				return tagf(ErrUnsafe, "hf: %s: the Hub did not answer for %s", what, clip(it.path))
			}
		}
	}
	if len(jobs) == 0 {
		return nil
	}
	return eachBounded(ctx, len(jobs), min(maxFilesInFlight, ps.conns), func(ctx context.Context, i int) error {
		return ps.uploadObject(ctx, jobs[i].it, jobs[i].o)
	})
}

// checkedURL parses a URL the Hub handed out and applies the client's URL policy.
func (ps *pusher) checkedURL(raw, what string) (string, error) {
	u, err := ps.ep.Parse(raw)
	if err != nil || u.Host == "" {
		return "", tagf(ErrUnsafe, "hf: %s: the Hub sent a bad upload URL", what)
	}
	if err := ps.allowedURL(u); err != nil {
		return "", fmt.Errorf("hf: %s: %w", what, err)
	}
	return u.String(), nil
}

// uploadProgress reports each byte of a file once, however often a part is retried.
type uploadProgress struct {
	mu   sync.Mutex
	tr   *progress.Tracker
	high int64
}

func (u *uploadProgress) at(off int64) func(int64) {
	return func(n int64) {
		u.mu.Lock()
		defer u.mu.Unlock()
		if off+n > u.high {
			u.tr.Add(off + n - u.high)
			u.high = off + n
		}
	}
}

// uploadObject sends one object as the batch answer says (one PUT, or parts and a
// completion), then calls verify.
func (ps *pusher) uploadObject(ctx context.Context, it *pushItem, o lfsObject) error {
	what := clip(it.path)
	up := o.Actions.Upload
	href, err := ps.checkedURL(up.Href, what)
	if err != nil {
		return err
	}
	tr := ps.c.Progress.Start("upload", it.path, it.size)
	defer tr.Finish()
	prog := &uploadProgress{tr: tr}
	if cs, ok := up.Header["chunk_size"]; ok {
		if err := ps.uploadParts(ctx, it, up, cs, href, prog); err != nil {
			return err
		}
	} else {
		_, err := ps.do(ctx, request{
			method: http.MethodPut, url: href, what: what, body: it.section(0, it.size), prog: prog.at(0),
		}, nil)
		if err != nil {
			return err
		}
	}
	it.uploaded = true
	if v := o.Actions.Verify; v != nil {
		vu, err := ps.checkedURL(v.Href, what)
		if err != nil {
			return err
		}
		_, err = ps.do(ctx, request{
			method: http.MethodPost, url: vu, auth: true, what: what + " (verify)",
			hdr:  http.Header{"Content-Type": {"application/json"}, "Accept": {lfsJSON}},
			body: jsonBody(map[string]any{"oid": it.sha256, "size": it.size}),
		}, nil)
		if err != nil {
			return err
		}
	}
	return nil
}

// uploadParts is the multipart transfer: header.chunk_size, header."1".."N" part URLs
// (N = ceil(size/chunk_size)), each part PUT in turn, then the completion POST with the
// parts' ETags.
func (ps *pusher) uploadParts(ctx context.Context, it *pushItem, up *lfsAction, cs any, completion string, prog *uploadProgress) error {
	what := clip(it.path)
	var chunk int64
	switch v := cs.(type) {
	case string:
		chunk, _ = strconv.ParseInt(v, 10, 64)
	case float64:
		if v == float64(int64(v)) {
			chunk = int64(v)
		}
	}
	if chunk <= 0 {
		return tagf(ErrUnsafe, "hf: %s: the Hub sent a bad chunk_size", what)
	}
	n := (it.size + chunk - 1) / chunk
	parts := map[int64]string{}
	for k, v := range up.Header {
		if k == "" || strings.TrimLeft(k, "0123456789") != "" {
			continue
		}
		i, err := strconv.ParseInt(k, 10, 64)
		s, isStr := v.(string)
		if err != nil || !isStr || i < 1 || i > n || parts[i] != "" {
			return tagf(ErrUnsafe, "hf: %s: the Hub sent bad part URLs", what)
		}
		if parts[i], err = ps.checkedURL(s, what); err != nil {
			return err
		}
	}
	if int64(len(parts)) != n {
		return tagf(ErrUnsafe, "hf: %s: the Hub sent %d part URLs for %d parts of %d bytes", what, len(parts), n, chunk)
	}
	type part struct {
		PartNumber int64  `json:"partNumber"`
		ETag       string `json:"etag"`
	}
	done := make([]part, 0, n)
	for i := int64(1); i <= n; i++ {
		off := (i - 1) * chunk
		size := min(chunk, it.size-off)
		a, err := ps.do(ctx, request{
			method: http.MethodPut, url: parts[i], what: fmt.Sprintf("%s (part %d of %d)", what, i, n),
			body: it.section(off, size), prog: prog.at(off),
		}, nil)
		if err != nil {
			return err
		}
		etag := a.header.Get("ETag")
		if etag == "" {
			return fmt.Errorf("hf: %s: the upload server answered part %d without an ETag", what, i)
		}
		done = append(done, part{i, etag})
	}
	_, err := ps.do(ctx, request{
		method: http.MethodPost, url: completion, what: what + " (completing the upload)",
		hdr:  http.Header{"Content-Type": {lfsJSON}, "Accept": {lfsJSON}},
		body: jsonBody(map[string]any{"oid": it.sha256, "parts": done}),
	}, nil)
	return err
}

// commit posts the NDJSON commit and returns the new commit's id.
func (ps *pusher) commit(ctx context.Context, items []*pushItem, msg string) (string, error) {
	for _, it := range items {
		if it.mode == "lfs" {
			f, err := it.open() // still the file that was hashed and uploaded
			if err != nil {
				return "", err
			}
			f.Close()
		}
	}
	body, err := commitBody(items, msg)
	if err != nil {
		return "", err
	}
	what := ps.ref.Repo + " (commit)"
	a, err := ps.do(ctx, request{
		method: http.MethodPost, url: ps.apiURL("/commit/" + url.PathEscape(ps.ref.Revision)), auth: true, what: what, commit: true,
		hdr:  http.Header{"Content-Type": {"application/x-ndjson"}, "Accept": {"application/json"}},
		body: body,
	}, nil)
	if err != nil {
		return "", err
	}
	var ans struct {
		CommitOid string `json:"commitOid"`
		CommitURL string `json:"commitUrl"`
	}
	if err := strictJSON(a.body, &ans); err != nil {
		return "", tagf(ErrUnsafe, "hf: %s: %v", what, err)
	}
	if !commitRe.MatchString(ans.CommitOid) {
		return "", tagf(ErrUnsafe, "hf: %s: the Hub answered commit %q, not 40 lowercase hex digits", what, clip(ans.CommitOid))
	}
	return ans.CommitOid, nil
}

// commitBody builds the NDJSON commit with an exact length; regular files are streamed
// base64-encoded from disk when the body is read.
func commitBody(items []*pushItem, msg string) (*reqBody, error) {
	type seg struct {
		b  []byte
		it *pushItem // base64 of its content, after b
	}
	line := func(key string, v any) []byte {
		b, _ := json.Marshal(map[string]any{"key": key, "value": v})
		return append(b, '\n')
	}
	segs := []seg{{b: line("header", map[string]any{"summary": msg, "description": ""})}}
	var size int64 = int64(len(segs[0].b))
	for _, it := range items {
		if it.mode == "lfs" {
			b := line("lfsFile", map[string]any{"path": it.path, "algo": "sha256", "oid": it.sha256, "size": it.size})
			segs = append(segs, seg{b: b})
			size += int64(len(b))
			continue
		}
		p, _ := json.Marshal(it.path)
		segs = append(segs, seg{b: []byte(`{"key":"file","value":{"content":"`), it: it},
			seg{b: append(append([]byte(`","path":`), p...), []byte(`,"encoding":"base64"}}`+"\n")...)})
		size += int64(len(`{"key":"file","value":{"content":"`)) + int64(base64.StdEncoding.EncodedLen(int(it.size))) +
			int64(len(`","path":`)+len(p)+len(`,"encoding":"base64"}}`+"\n"))
	}
	return &reqBody{size: size, open: func() (io.ReadCloser, error) {
		r := &ndjsonReader{}
		for _, s := range segs {
			s := s
			r.parts = append(r.parts, func() (io.Reader, io.Closer, error) { return bytes.NewReader(s.b), nil, nil })
			if s.it != nil {
				r.parts = append(r.parts, func() (io.Reader, io.Closer, error) {
					f, err := s.it.open()
					if err != nil {
						return nil, nil, err
					}
					return &b64Reader{src: io.NewSectionReader(f, 0, s.it.size+1), want: s.it.size}, f, nil
				})
			}
		}
		return r, nil
	}}, nil
}

// ndjsonReader reads its parts in turn, opening each (a file) only when it is reached.
type ndjsonReader struct {
	parts []func() (io.Reader, io.Closer, error)
	cur   io.Reader
	cl    io.Closer
}

func (r *ndjsonReader) Read(p []byte) (int, error) {
	for {
		if r.cur == nil {
			if len(r.parts) == 0 {
				return 0, io.EOF
			}
			var err error
			r.cur, r.cl, err = r.parts[0]()
			r.parts = r.parts[1:]
			if err != nil {
				r.cur = nil
				return 0, err
			}
		}
		n, err := r.cur.Read(p)
		if err == io.EOF {
			r.closeCur()
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (r *ndjsonReader) closeCur() {
	if r.cl != nil {
		r.cl.Close()
	}
	r.cur, r.cl = nil, nil
}

func (r *ndjsonReader) Close() error { r.closeCur(); r.parts = nil; return nil }

// b64Reader base64-encodes src as it is read; src must hold exactly want bytes.
type b64Reader struct {
	src     io.Reader
	want, n int64
	in      [3 << 10]byte
	out     [4 << 10]byte
	pending []byte
	eof     bool
}

func (b *b64Reader) Read(p []byte) (int, error) {
	for len(b.pending) == 0 {
		if b.eof {
			return 0, io.EOF
		}
		k, err := io.ReadFull(b.src, b.in[:])
		b.n += int64(k)
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			b.eof = true
			if b.n != b.want {
				return 0, errChanged
			}
		case err != nil:
			return 0, err
		}
		base64.StdEncoding.Encode(b.out[:], b.in[:k])
		b.pending = b.out[:base64.StdEncoding.EncodedLen(k)]
	}
	n := copy(p, b.pending)
	b.pending = b.pending[n:]
	return n, nil
}

// ModelCardInfo is what ModelCard writes about a LoRA; zero fields are left out.
type ModelCardInfo struct {
	Name           string   // title
	Base           string   // scopectl's base name (wan2.1-t2v-14b, wan2.1-t2v-1.3b, wan2.1-i2v-14b) or free text
	BaseRepo       string   // base model repo on the Hub; default from Base
	Rank           int      // LoRA rank
	Alpha          float64  // LoRA alpha
	Targets        []string // targeted modules (self_attn.q, ffn.0, …)
	TriggerWords   []string // words the LoRA was trained to respond to
	TrainingConfig string   // training configuration summary (shown verbatim in a code block)
	SHA256         string   // of the .safetensors file
}

// wanBases maps scopectl's base names (internal/lora) to the Hub repos and pipeline tags.
var wanBases = map[string]struct{ repo, title, pipeline string }{
	"wan2.1-t2v-14b":  {"Wan-AI/Wan2.1-T2V-14B", "Wan2.1 T2V 14B", "text-to-video"},
	"wan2.1-t2v-1.3b": {"Wan-AI/Wan2.1-T2V-1.3B", "Wan2.1 T2V 1.3B", "text-to-video"},
	// the 480P and 720P I2V checkpoints share one architecture: a LoRA fits both
	"wan2.1-i2v-14b": {"Wan-AI/Wan2.1-I2V-14B-480P", "Wan2.1 I2V 14B", "image-to-video"},
}

// ModelCard writes a README.md for a Wan LoRA: YAML front matter the Hub understands
// (base_model, base_model_relation: adapter, library_name, pipeline_tag, tags
// [lora, wan, …], instance_prompt) and a body with the base model, rank, alpha, targets,
// trigger words and the training configuration when known.
func ModelCard(info ModelCardInfo) []byte {
	base, known := wanBases[strings.ToLower(strings.TrimSpace(info.Base))]
	repo := strings.TrimSpace(info.BaseRepo)
	if repo == "" && known {
		repo = base.repo
	}
	if validRepoID(repo) != nil {
		repo = ""
	}
	var b strings.Builder
	b.WriteString("---\n")
	if repo != "" {
		fmt.Fprintf(&b, "base_model: %s\nbase_model_relation: adapter\n", yamlScalar(repo))
	}
	b.WriteString("library_name: diffusers\n")
	if known {
		fmt.Fprintf(&b, "pipeline_tag: %s\n", base.pipeline)
	}
	tags := []string{"lora", "wan"}
	if known {
		tags = append(tags, "wan2.1", base.pipeline)
	}
	tags = append(tags, "scopectl")
	b.WriteString("tags:\n")
	for _, t := range tags {
		fmt.Fprintf(&b, "- %s\n", t)
	}
	var words []string
	for _, w := range info.TriggerWords {
		if w = oneLine(w); w != "" {
			words = append(words, w)
		}
	}
	if len(words) > 0 {
		fmt.Fprintf(&b, "instance_prompt: %s\n", yamlScalar(strings.Join(words, ", ")))
	}
	b.WriteString("---\n\n")

	name := oneLine(info.Name)
	if name == "" {
		name = "Wan LoRA"
	}
	fmt.Fprintf(&b, "# %s\n\n", mdEscape(name))
	baseText := oneLine(info.Base)
	if known {
		baseText = base.title
	}
	switch {
	case repo != "" && baseText != "":
		fmt.Fprintf(&b, "A LoRA for %s ([%s](https://huggingface.co/%s)).\n\n", mdEscape(baseText), repo, repo)
	case repo != "":
		fmt.Fprintf(&b, "A LoRA for [%s](https://huggingface.co/%s).\n\n", repo, repo)
	case baseText != "":
		fmt.Fprintf(&b, "A LoRA for %s.\n\n", mdEscape(baseText))
	default:
		b.WriteString("A LoRA for Wan video models.\n\n")
	}
	if len(words) > 0 {
		b.WriteString("## Trigger words\n\nUse ")
		for i, w := range words {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(mdCode(w))
		}
		b.WriteString(" in the prompt.\n\n")
	}
	var rows [][2]string
	if baseText != "" || repo != "" {
		v := mdEscape(baseText)
		if repo != "" {
			v = strings.TrimSpace(v + " " + mdCode(repo))
		}
		rows = append(rows, [2]string{"Base model", v})
	}
	if info.Rank > 0 {
		rows = append(rows, [2]string{"Rank", strconv.Itoa(info.Rank)})
	}
	if info.Alpha > 0 {
		v := strconv.FormatFloat(info.Alpha, 'g', -1, 64)
		if info.Rank > 0 {
			v += " (scale alpha/rank = " + strconv.FormatFloat(info.Alpha/float64(info.Rank), 'g', 4, 64) + ")"
		}
		rows = append(rows, [2]string{"Alpha", v})
	}
	if len(info.Targets) > 0 {
		t := append([]string(nil), info.Targets...)
		sort.Strings(t)
		var cs []string
		for _, x := range t {
			if x = oneLine(x); x != "" {
				cs = append(cs, mdCode(x))
			}
		}
		rows = append(rows, [2]string{"Targets", strings.Join(cs, ", ")})
	}
	if sha256Re.MatchString(info.SHA256) {
		rows = append(rows, [2]string{"SHA256", "`" + info.SHA256 + "`"})
	}
	if len(rows) > 0 {
		b.WriteString("## Details\n\n| | |\n|---|---|\n")
		for _, r := range rows {
			fmt.Fprintf(&b, "| %s | %s |\n", r[0], strings.ReplaceAll(r[1], "|", `\|`))
		}
		b.WriteString("\n")
	}
	if tc := strings.TrimSpace(info.TrainingConfig); tc != "" {
		fence := strings.Repeat("`", max(3, longestRun(tc, '`')+1))
		fmt.Fprintf(&b, "## Training\n\n%s\n%s\n%s\n\n", fence, tc, fence)
	}
	b.WriteString("_Pushed with [scopectl](https://github.com/daydreamlive/scopectl)._\n")
	return []byte(b.String())
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)), " ")
}

var plainYAML = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_./-]*$`)

// yamlScalar quotes s as a YAML double-quoted scalar when it is not plainly safe.
func yamlScalar(s string) string {
	if plainYAML.MatchString(s) {
		return s
	}
	b, _ := json.Marshal(s) // JSON strings are valid YAML double-quoted scalars
	return string(b)
}

var mdSpecial = strings.NewReplacer(`\`, `\\`, "`", "\\`", "*", `\*`, "_", `\_`, "[", `\[`, "]", `\]`, "<", "&lt;", ">", "&gt;", "#", `\#`, "|", `\|`)

func mdEscape(s string) string { return mdSpecial.Replace(s) }

// mdCode is s as inline code, with a fence longer than any backtick run inside.
func mdCode(s string) string {
	f := strings.Repeat("`", longestRun(s, '`')+1)
	if strings.HasPrefix(s, "`") || strings.HasSuffix(s, "`") {
		return f + " " + s + " " + f
	}
	return f + s + f
}

func longestRun(s string, c byte) int {
	best, cur := 0, 0
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			cur++
			best = max(best, cur)
		} else {
			cur = 0
		}
	}
	return best
}

// hashBufs are the buffers files are hashed through.
var hashBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}
