// Package hftest is a local Hugging Face Hub for tests: the model-info and tree APIs,
// /resolve with HEAD metadata (X-Repo-Commit, X-Linked-Etag, X-Linked-Size, ETag) and a
// 302 to a separate "CDN" server that serves signed, ranged LFS downloads, Bearer auth for
// private and gated repos with the Hub's status codes and X-Error-Code headers, and
// hostile modes (corrupt content, truncated bodies, stalls mid-body, 429 storms, unsafe
// names in the tree listing, servers echoing the token). Test code only.
package hftest

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/daydreamlive/scopectl/internal/lora"
	"github.com/daydreamlive/scopectl/internal/lora/loratest"
)

// File is one file of a repo. LFS files are served through the CDN redirect, others by
// the Hub itself.
type File struct {
	Path string
	Data []byte
	LFS  bool
}

// Repo is a repository on the fake Hub; its files form the commit of "main".
type Repo struct {
	ID      string // org/name
	Type    string // model (default), dataset, space
	Private bool   // 401 RepoNotFound without a valid token
	Gated   bool   // files need a token whose account accepted the conditions (AddToken)
	Files   []File
}

// Options tunes a server.
type Options struct {
	TLS      bool // serve both Hub and CDN over HTTPS (httptest's certificate; use Server.Client)
	PlainCDN bool // with TLS: the CDN alone speaks plain HTTP (a downgrading redirect)
	PageSize int  // tree entries per page (default 1000)
}

type blob struct {
	data []byte
	path string // repo path, for faults
}

type commitData struct {
	sha   string
	files []File
}

type repoState struct {
	Repo
	refs    map[string]string // branch/tag -> commit
	commits map[string]*commitData
	removed bool
	extra   []map[string]any // injected raw tree entries
}

// Server is the fake Hub plus its CDN.
type Server struct {
	Hub, CDN *httptest.Server

	// CDNHook, if set, sees every request the CDN receives (assert on headers there).
	CDNHook func(*http.Request)

	opt     Options
	key     []byte
	closing chan struct{}

	mu        sync.Mutex
	repos     map[string]*repoState // "model:org/name"
	renamed   map[string]string     // old key -> new id
	tokens    map[string]bool       // token -> accepted gated conditions
	blobs     map[string]blob       // sha256 -> content
	corrupt   map[string]bool
	truncate  map[string]int64
	stallAt   map[string]int64
	slowAt    map[string]slow
	ranges    map[string][]string
	stallN    map[string]int
	rate429   int
	echoAuth  bool
	counts    map[string]int
	cdnBytes  map[string]int64
	cdnAuth   int
	commitSeq int

	up *upState // the upload side (upload.go)
}

// Start starts a server that is closed when the test ends.
func Start(t testing.TB, opt Options) *Server {
	s := NewServer(opt)
	t.Cleanup(s.Close)
	return s
}

// NewServer starts a server; Close it when done.
func NewServer(opt Options) *Server {
	if opt.PageSize <= 0 {
		opt.PageSize = 1000
	}
	s := &Server{
		opt: opt, key: []byte("hftest-cdn-signing-key"), closing: make(chan struct{}),
		repos: map[string]*repoState{}, renamed: map[string]string{}, tokens: map[string]bool{},
		blobs: map[string]blob{}, corrupt: map[string]bool{}, truncate: map[string]int64{},
		stallAt: map[string]int64{}, stallN: map[string]int{}, slowAt: map[string]slow{}, ranges: map[string][]string{}, counts: map[string]int{},
		cdnBytes: map[string]int64{},
	}
	newSrv := httptest.NewServer
	if opt.TLS {
		newSrv = httptest.NewTLSServer
	}
	s.Hub = newSrv(http.HandlerFunc(s.serveHub))
	if opt.PlainCDN {
		newSrv = httptest.NewServer
	}
	s.CDN = newSrv(http.HandlerFunc(s.serveCDN))
	s.startUploads()
	return s
}

// Close stops both servers (unblocking stalled responses first).
func (s *Server) Close() {
	select {
	case <-s.closing:
		return
	default:
	}
	close(s.closing)
	s.Hub.CloseClientConnections()
	s.CDN.CloseClientConnections()
	s.Hub.Close()
	s.CDN.Close()
	s.closeUploads()
}

// URL is the Hub endpoint (HF_ENDPOINT).
func (s *Server) URL() string { return s.Hub.URL }

// Client is an *http.Client that trusts the servers' TLS certificate (when TLS is on).
func (s *Server) Client() *http.Client { return s.Hub.Client() }

func key(typ, id string) string {
	if typ == "" {
		typ = "model"
	}
	return typ + ":" + id
}

// GitBlobSHA1 is git's blob id of data.
func GitBlobSHA1(data []byte) string {
	h := sha1.New()
	fmt.Fprintf(h, "blob %d\x00", len(data))
	h.Write(data)
	return hex.EncodeToString(h.Sum(nil))
}

// SHA256 is the hex sha256 of data. Sums of large files are remembered (keyed by the
// slice's backing array and length; files are never changed in place), so that a Hub
// serving a 1 GiB file answers its metadata requests as fast as the real one, which
// stores the sums: the benchmarks must measure the client, not this fake.
func SHA256(data []byte) string {
	if len(data) < 1<<20 {
		h := sha256.Sum256(data)
		return hex.EncodeToString(h[:])
	}
	k := sumKey{unsafe.SliceData(data), len(data)}
	if v, ok := bigSums.Load(k); ok {
		return v.(string)
	}
	h := sha256.Sum256(data)
	sum := hex.EncodeToString(h[:])
	bigSums.Store(k, sum)
	return sum
}

type sumKey struct {
	p *byte
	n int
}

var bigSums sync.Map // sumKey → hex sha256

func lfsPointer(data []byte) []byte {
	return fmt.Appendf(nil, "version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n", SHA256(data), len(data))
}

// AddRepo adds a repo whose files make the "main" branch and returns that commit.
func (s *Server) AddRepo(r Repo) string {
	if r.Type == "" {
		r.Type = "model"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rs := &repoState{Repo: r, refs: map[string]string{}, commits: map[string]*commitData{}}
	s.repos[key(r.Type, r.ID)] = rs
	return s.addCommitLocked(rs, "main", r.Files)
}

// AddRevision adds a commit with files to an existing repo and points the branch or tag
// name at it (main included).
func (s *Server) AddRevision(typ, id, name string, files []File) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	rs := s.repos[key(typ, id)]
	if rs == nil {
		panic("hftest: no repo " + id)
	}
	return s.addCommitLocked(rs, name, files)
}

func (s *Server) addCommitLocked(rs *repoState, name string, files []File) string {
	s.commitSeq++
	h := sha1.New()
	fmt.Fprintf(h, "%s\x00%s\x00%d", rs.ID, name, s.commitSeq)
	for _, f := range files {
		fmt.Fprintf(h, "\x00%s\x00%s", f.Path, SHA256(f.Data))
		if f.LFS {
			s.blobs[SHA256(f.Data)] = blob{data: f.Data, path: f.Path}
		}
	}
	sha := hex.EncodeToString(h.Sum(nil))
	cp := append([]File(nil), files...)
	sort.Slice(cp, func(i, j int) bool { return cp[i].Path < cp[j].Path })
	rs.commits[sha] = &commitData{sha: sha, files: cp}
	rs.refs[name] = sha
	return sha
}

// AddToken makes tok valid; acceptedGated says whether its account accepted the
// conditions of gated repos.
func (s *Server) AddToken(tok string, acceptedGated bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[tok] = acceptedGated
}

// Rename moves a repo: requests for the old id get a 307 with a relative Location.
func (s *Server) Rename(typ, oldID, newID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rs := s.repos[key(typ, oldID)]
	delete(s.repos, key(typ, oldID))
	rs.ID = newID
	s.repos[key(typ, newID)] = rs
	s.renamed[key(typ, oldID)] = newID
}

// Remove makes a repo answer 410 Gone.
func (s *Server) Remove(typ, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.repos[key(typ, id)].removed = true
}

// Corrupt makes the CDN flip one byte in the middle of the file at path (any repo).
func (s *Server) Corrupt(path string) { s.mu.Lock(); s.corrupt[path] = true; s.mu.Unlock() }

// TruncateAt makes every CDN response for path that covers byte off end there, with the
// connection closed after announcing the full length.
func (s *Server) TruncateAt(path string, off int64) {
	s.mu.Lock()
	s.truncate[path] = off
	s.mu.Unlock()
}

// StallAt makes the next times CDN responses for path that cover byte off send the bytes
// before off and then nothing, keeping the connection open until the client gives up.
func (s *Server) StallAt(path string, off int64, times int) {
	s.mu.Lock()
	s.stallAt[path], s.stallN[path] = off, times
	s.mu.Unlock()
}

// SlowAt makes every CDN response for path that covers byte off (any response when off
// is negative) crawl: each 32 KiB piece after a pause of delay, like a connection that a
// loss burst set back, or a slow link.
func (s *Server) SlowAt(path string, off int64, delay time.Duration) {
	s.mu.Lock()
	s.slowAt[path] = slow{off, delay}
	s.mu.Unlock()
}

type slow struct {
	off   int64
	delay time.Duration
}

// Ranges lists the Range headers of the CDN requests for path, in arrival order ("" for
// a request without one).
func (s *Server) Ranges(path string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.ranges[path]...)
}

// RateLimit answers the next n requests (Hub or CDN) with 429 Too Many Requests.
func (s *Server) RateLimit(n int) { s.mu.Lock(); s.rate429 = n; s.mu.Unlock() }

// InjectTreeEntry appends a raw entry (e.g. {"type":"file","path":"../evil",…}) to the
// repo's tree listings.
func (s *Server) InjectTreeEntry(typ, id string, entry map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rs := s.repos[key(typ, id)]
	rs.extra = append(rs.extra, entry)
}

// EchoAuth makes error answers repeat the request's Authorization header in
// X-Error-Message and the body, like a hostile or buggy server.
func (s *Server) EchoAuth(on bool) { s.mu.Lock(); s.echoAuth = on; s.mu.Unlock() }

// Count is the number of requests of a kind: "revision", "tree", "head", "get" (resolve
// GETs on the Hub), "cdn", "429".
func (s *Server) Count(kind string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[kind]
}

// CDNBytes is the payload bytes the CDN sent for path ("" for all paths).
func (s *Server) CDNBytes(path string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if path != "" {
		return s.cdnBytes[path]
	}
	var n int64
	for _, v := range s.cdnBytes {
		n += v
	}
	return n
}

// CDNAuthSeen is the number of CDN requests that carried an Authorization header.
func (s *Server) CDNAuthSeen() int { s.mu.Lock(); defer s.mu.Unlock(); return s.cdnAuth }

// ResetCounts zeroes the request and byte counters.
func (s *Server) ResetCounts() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts, s.cdnBytes, s.cdnAuth = map[string]int{}, map[string]int64{}, 0
}

func (s *Server) count(kind string) { s.mu.Lock(); s.counts[kind]++; s.mu.Unlock() }

// takeRateLimit reports whether this request should get a 429.
func (s *Server) takeRateLimit() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rate429 > 0 {
		s.rate429--
		s.counts["429"]++
		return true
	}
	return false
}

// hubError answers like the Hub: JSON {"error"} plus X-Error-Code / X-Error-Message.
func (s *Server) hubError(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	s.mu.Lock()
	echo := s.echoAuth
	s.mu.Unlock()
	if echo {
		msg += " (got " + r.Header.Get("Authorization") + ")"
	}
	if code != "" {
		w.Header().Set("X-Error-Code", code)
	}
	w.Header().Set("X-Error-Message", msg)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		json.NewEncoder(w).Encode(map[string]string{"error": msg})
	}
}

// route splits a Hub path into its parts; the revision segment stays escaped until here.
type route struct {
	kind     string // "revision", "tree", "resolve"
	typ, id  string
	rev      string
	path     string
	idPrefix string // the raw path before the repo id, for rename redirects
}

func parseRoute(escaped string) (route, bool) {
	segs := strings.Split(strings.TrimPrefix(escaped, "/"), "/")
	var rt route
	unesc := func(s string) string { u, _ := url.PathUnescape(s); return u }
	if len(segs) > 0 && segs[0] == "api" {
		if len(segs) < 6 {
			return rt, false
		}
		switch segs[1] {
		case "models", "datasets", "spaces":
			rt.typ = strings.TrimSuffix(segs[1], "s")
		default:
			return rt, false
		}
		rt.id = segs[2] + "/" + segs[3]
		rt.idPrefix = "/api/" + segs[1] + "/"
		rt.kind = segs[4]
		if rt.kind != "revision" && rt.kind != "tree" {
			return rt, false
		}
		rt.rev = unesc(segs[5])
		var rest []string
		for _, x := range segs[6:] {
			rest = append(rest, unesc(x))
		}
		rt.path = strings.Join(rest, "/")
		if rt.kind == "revision" && rt.path != "" { // unescaped refs/pr/1
			rt.rev += "/" + rt.path
			rt.path = ""
		}
		return rt, true
	}
	rt.typ = "model"
	rt.idPrefix = "/"
	if len(segs) > 0 && (segs[0] == "datasets" || segs[0] == "spaces") {
		rt.typ = strings.TrimSuffix(segs[0], "s")
		rt.idPrefix = "/" + segs[0] + "/"
		segs = segs[1:]
	}
	if len(segs) < 5 || segs[2] != "resolve" {
		return rt, false
	}
	rt.kind = "resolve"
	rt.id = segs[0] + "/" + segs[1]
	rt.rev = unesc(segs[3])
	var rest []string
	for _, x := range segs[4:] {
		rest = append(rest, unesc(x))
	}
	rt.path = strings.Join(rest, "/")
	return rt, true
}

func (s *Server) serveHub(w http.ResponseWriter, r *http.Request) {
	if s.takeRateLimit() {
		w.Header().Set("Retry-After", "0")
		s.hubError(w, r, http.StatusTooManyRequests, "", "You have been rate-limited")
		return
	}
	if s.serveUpload(w, r) {
		return
	}
	rt, ok := parseRoute(r.URL.EscapedPath())
	if !ok {
		s.hubError(w, r, http.StatusNotFound, "", "Sorry, we can't find the page you are looking for.")
		return
	}
	if rt.kind == "resolve" {
		if r.Method == http.MethodHead {
			s.count("head")
		} else {
			s.count("get")
		}
	} else {
		s.count(rt.kind)
	}
	s.mu.Lock()
	newID, moved := s.renamed[key(rt.typ, rt.id)]
	s.mu.Unlock()
	if moved {
		p := r.URL.EscapedPath()
		loc := rt.idPrefix + newID + strings.TrimPrefix(p, rt.idPrefix+rt.id)
		if r.URL.RawQuery != "" {
			loc += "?" + r.URL.RawQuery
		}
		w.Header().Set("Location", loc)
		w.WriteHeader(http.StatusTemporaryRedirect)
		return
	}
	rs, commit, status, code, msg := s.access(r, rt)
	if status != 0 {
		s.hubError(w, r, status, code, msg)
		return
	}
	switch rt.kind {
	case "revision":
		s.serveRevision(w, r, rs, commit)
	case "tree":
		s.serveTree(w, r, rt, rs, commit)
	case "resolve":
		s.serveResolve(w, r, rt, commit)
	}
}

// access applies the Hub's rules: invalid token 401, unknown or private repo 401 (no
// token) / 404 (token), gated files 401 (no token) / 403 (not accepted), removed 410,
// unknown revision 404 RevisionNotFound.
func (s *Server) access(r *http.Request, rt route) (*repoState, *commitData, int, string, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tok := ""
	if a := r.Header.Get("Authorization"); a != "" {
		tok = strings.TrimPrefix(a, "Bearer ")
		if _, ok := s.tokens[tok]; !ok || !strings.HasPrefix(a, "Bearer ") {
			return nil, nil, http.StatusUnauthorized, "", "Invalid credentials in Authorization header"
		}
	}
	rs := s.repos[key(rt.typ, rt.id)]
	if rs == nil || rs.Private && tok == "" {
		if tok == "" {
			return nil, nil, http.StatusUnauthorized, "RepoNotFound", "Repository Not Found for url: " + r.URL.Path + ". Please make sure you specified the correct `repo_id` and `repo_type`. If you are trying to access a private or gated repo, make sure you are authenticated."
		}
		return nil, nil, http.StatusNotFound, "RepoNotFound", "Repository not found"
	}
	if rs.removed {
		return nil, nil, http.StatusGone, "", "This repository has been removed"
	}
	if rt.kind == "resolve" && rs.Gated {
		if tok == "" {
			return nil, nil, http.StatusUnauthorized, "GatedRepo", "Access to model " + rs.ID + " is restricted. You must have access to it and be authenticated to access it. Please log in."
		}
		if !s.tokens[tok] {
			return nil, nil, http.StatusForbidden, "GatedRepo", "Access to model " + rs.ID + " is restricted and you are not in the authorized list. Visit https://huggingface.co/" + rs.ID + " to ask for access."
		}
	}
	sha := rt.rev
	if c, ok := rs.refs[rt.rev]; ok {
		sha = c
	}
	cd := rs.commits[sha]
	if cd == nil {
		return nil, nil, http.StatusNotFound, "RevisionNotFound", "Invalid rev id: " + rt.rev
	}
	return rs, cd, 0, "", ""
}

func (s *Server) serveRevision(w http.ResponseWriter, r *http.Request, rs *repoState, cd *commitData) {
	blobs := r.URL.Query().Get("blobs") == "true"
	var sib []map[string]any
	for _, f := range cd.files {
		e := map[string]any{"rfilename": f.Path}
		if blobs {
			e["size"] = len(f.Data)
			if f.LFS {
				e["blobId"] = GitBlobSHA1(lfsPointer(f.Data))
				e["lfs"] = map[string]any{"sha256": SHA256(f.Data), "size": len(f.Data), "pointerSize": len(lfsPointer(f.Data))}
			} else {
				e["blobId"] = GitBlobSHA1(f.Data)
			}
		}
		sib = append(sib, e)
	}
	var gated any = false
	if rs.Gated {
		gated = "auto"
	}
	info := map[string]any{
		"_id": "hftest" + cd.sha[:16], "id": rs.ID, "modelId": rs.ID, "author": strings.Split(rs.ID, "/")[0],
		"sha": cd.sha, "lastModified": time.Unix(1700000000, 0).UTC().Format(time.RFC3339),
		"private": rs.Private, "gated": gated, "disabled": false, "tags": []string{"lora"},
		"siblings": sib,
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(info)
}

func (s *Server) serveTree(w http.ResponseWriter, r *http.Request, rt route, rs *repoState, cd *commitData) {
	q := r.URL.Query()
	recursive := q.Get("recursive") == "true" || q.Get("recursive") == "1"
	var entries []map[string]any
	dirs := map[string]bool{}
	prefix := ""
	if rt.path != "" {
		prefix = rt.path + "/"
	}
	for _, f := range cd.files {
		if !strings.HasPrefix(f.Path, prefix) {
			continue
		}
		rel := strings.TrimPrefix(f.Path, prefix)
		parts := strings.Split(rel, "/")
		for i := 1; i < len(parts); i++ {
			d := prefix + strings.Join(parts[:i], "/")
			if !dirs[d] && (recursive || i == 1) {
				dirs[d] = true
				entries = append(entries, map[string]any{"type": "directory", "oid": GitBlobSHA1([]byte(d)), "size": 0, "path": d})
			}
		}
		if !recursive && len(parts) > 1 {
			continue
		}
		e := map[string]any{"type": "file", "size": len(f.Data), "path": f.Path}
		if f.LFS {
			e["oid"] = GitBlobSHA1(lfsPointer(f.Data))
			e["lfs"] = map[string]any{"oid": SHA256(f.Data), "size": len(f.Data), "pointerSize": len(lfsPointer(f.Data))}
		} else {
			e["oid"] = GitBlobSHA1(f.Data)
		}
		entries = append(entries, e)
	}
	s.mu.Lock()
	entries = append(entries, rs.extra...)
	s.mu.Unlock()
	start, _ := strconv.Atoi(q.Get("cursor"))
	start = max(0, min(start, len(entries)))
	end := min(start+s.opt.PageSize, len(entries))
	if end < len(entries) {
		nq := url.Values{}
		for k, v := range q {
			nq[k] = v
		}
		nq.Set("cursor", strconv.Itoa(end))
		next := s.Hub.URL + r.URL.EscapedPath() + "?" + nq.Encode()
		w.Header().Set("Link", "<"+next+">; rel=\"next\"")
	}
	w.Header().Set("Content-Type", "application/json")
	page := entries[start:end]
	if page == nil {
		page = []map[string]any{}
	}
	json.NewEncoder(w).Encode(page)
}

func (s *Server) serveResolve(w http.ResponseWriter, r *http.Request, rt route, cd *commitData) {
	var f *File
	for i := range cd.files {
		if cd.files[i].Path == rt.path {
			f = &cd.files[i]
		}
	}
	w.Header().Set("X-Repo-Commit", cd.sha)
	if f == nil {
		s.hubError(w, r, http.StatusNotFound, "EntryNotFound", rt.path+" does not exist on \""+rt.rev+"\"")
		return
	}
	if f.LFS {
		sum := SHA256(f.Data)
		w.Header().Set("X-Linked-Etag", `"`+sum+`"`)
		w.Header().Set("X-Linked-Size", strconv.Itoa(len(f.Data)))
		w.Header().Set("ETag", `"`+GitBlobSHA1(lfsPointer(f.Data))+`"`)
		w.Header().Set("Location", s.signedURL(sum, rt.path))
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusFound)
		if r.Method != http.MethodHead {
			fmt.Fprintf(w, "Found. Redirecting to %s", s.signedURL(sum, rt.path))
		}
		return
	}
	w.Header().Set("ETag", `W/"`+GitBlobSHA1(f.Data)+`"`)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	http.ServeContent(w, r, "", time.Time{}, strings.NewReader(string(f.Data)))
}

func (s *Server) sign(sum string, exp int64) string {
	m := hmac.New(sha256.New, s.key)
	fmt.Fprintf(m, "%s|%d", sum, exp)
	return hex.EncodeToString(m.Sum(nil))
}

func (s *Server) signedURL(sum, path string) string {
	exp := time.Now().Add(time.Hour).Unix()
	q := url.Values{}
	q.Set("response-content-disposition", "inline; filename*=UTF-8''"+url.PathEscape(filepath.Base(path)))
	q.Set("Expires", strconv.FormatInt(exp, 10))
	q.Set("Signature", s.sign(sum, exp))
	return s.CDN.URL + "/repos/lfs/" + sum + "?" + q.Encode()
}

// countingWriter counts payload bytes the CDN sends.
type countingWriter struct {
	http.ResponseWriter
	s    *Server
	path string
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.ResponseWriter.Write(b)
	c.s.mu.Lock()
	c.s.cdnBytes[c.path] += int64(n)
	c.s.mu.Unlock()
	return n, err
}

func (c *countingWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *Server) serveCDN(w http.ResponseWriter, r *http.Request) {
	s.count("cdn")
	if hook := s.CDNHook; hook != nil {
		hook(r)
	}
	s.mu.Lock()
	if r.Header.Get("Authorization") != "" {
		s.cdnAuth++
	}
	s.mu.Unlock()
	if s.takeRateLimit() {
		w.Header().Set("Retry-After", "0")
		http.Error(w, "SlowDown", http.StatusTooManyRequests)
		return
	}
	sum := strings.TrimPrefix(r.URL.Path, "/repos/lfs/")
	exp, _ := strconv.ParseInt(r.URL.Query().Get("Expires"), 10, 64)
	if !hmac.Equal([]byte(r.URL.Query().Get("Signature")), []byte(s.sign(sum, exp))) || time.Now().Unix() > exp {
		http.Error(w, "<Error><Code>AccessDenied</Code></Error>", http.StatusForbidden)
		return
	}
	s.mu.Lock()
	b, ok := s.blobs[sum]
	corrupt := s.corrupt[b.path]
	truncAt, trunc := s.truncate[b.path]
	stallOff, stall := s.stallAt[b.path]
	stall = stall && s.stallN[b.path] > 0
	sl, slowed := s.slowAt[b.path]
	if ok {
		s.ranges[b.path] = append(s.ranges[b.path], r.Header.Get("Range"))
	}
	s.mu.Unlock()
	if !ok {
		http.Error(w, "<Error><Code>NoSuchKey</Code></Error>", http.StatusNotFound)
		return
	}
	data := b.data
	if corrupt && len(data) > 0 {
		data = append([]byte(nil), data...)
		data[len(data)/2] ^= 0xff
	}
	size := int64(len(data))
	start, end := int64(0), size-1
	status := http.StatusOK
	if rg := r.Header.Get("Range"); rg != "" {
		a, bb, ok := parseRange(rg, size)
		if !ok {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", size))
			http.Error(w, "InvalidRange", http.StatusRequestedRangeNotSatisfiable)
			return
		}
		start, end, status = a, bb, http.StatusPartialContent
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end, size))
	}
	w.Header().Set("Accept-Ranges", "bytes")
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("ETag", `"`+sum+`"`)
	w.Header().Set("Content-Length", strconv.FormatInt(end-start+1, 10))
	w.WriteHeader(status)
	if r.Method == http.MethodHead || size == 0 {
		return
	}
	cw := &countingWriter{ResponseWriter: w, s: s, path: b.path}
	if stall && stallOff >= start && stallOff <= end {
		s.mu.Lock()
		again := s.stallN[b.path] > 0
		if again {
			s.stallN[b.path]--
		}
		s.mu.Unlock()
		if again {
			cw.Write(data[start:stallOff])
			cw.Flush()
			select {
			case <-r.Context().Done():
			case <-s.closing:
			}
			return
		}
	}
	if trunc && truncAt >= start && truncAt <= end {
		cw.Write(data[start:truncAt])
		cw.Flush()
		panic(http.ErrAbortHandler) // close the connection mid-body
	}
	slowed = slowed && (sl.off < 0 || sl.off >= start && sl.off <= end)
	// write in pieces so a client can be interrupted mid-file
	for off := start; off <= end; {
		n := min(end+1-off, 32<<10)
		if slowed {
			select {
			case <-time.After(sl.delay):
			case <-r.Context().Done():
				return
			case <-s.closing:
				return
			}
		}
		if _, err := cw.Write(data[off : off+n]); err != nil {
			return
		}
		off += n
	}
}

// parseRange parses a single "bytes=a-b", "bytes=a-" or "bytes=-n".
func parseRange(h string, size int64) (int64, int64, bool) {
	spec, ok := strings.CutPrefix(h, "bytes=")
	if !ok || strings.Contains(spec, ",") {
		return 0, 0, false
	}
	as, bs, ok := strings.Cut(spec, "-")
	if !ok {
		return 0, 0, false
	}
	if as == "" {
		n, err := strconv.ParseInt(bs, 10, 64)
		if err != nil || n <= 0 {
			return 0, 0, false
		}
		return max(0, size-n), size - 1, size > 0
	}
	a, err := strconv.ParseInt(as, 10, 64)
	if err != nil || a < 0 || a >= size {
		return 0, 0, false
	}
	b := size - 1
	if bs != "" {
		if b, err = strconv.ParseInt(bs, 10, 64); err != nil || b < a {
			return 0, 0, false
		}
		b = min(b, size-1)
	}
	return a, b, true
}

// LoRA generates a small real safetensors Wan LoRA (loratest) and returns its bytes.
func LoRA(spec loratest.Spec) ([]byte, error) {
	dir, err := os.MkdirTemp("", "hftest-lora-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	p := filepath.Join(dir, "x.safetensors")
	if err := loratest.Write(p, spec); err != nil {
		return nil, err
	}
	return os.ReadFile(p)
}

// SmallSpec is a ~24 KiB 1.3B LoRA: one block, one module.
var SmallSpec = loratest.Spec{Base: lora.BaseT2V1_3B, Blocks: []int{0}, Modules: []string{"self_attn.q"}}

// LargeSpec is a ~1.1 MiB 1.3B LoRA: three blocks, every default module.
var LargeSpec = loratest.Spec{Base: lora.BaseT2V1_3B, Blocks: []int{0, 1, 2}, Seed: 7}

// DemoFiles is a typical LoRA repo: a README (stored in git), a small LoRA at the top, a
// larger one two folders down (both LFS).
func DemoFiles() ([]File, error) {
	small, err := LoRA(SmallSpec)
	if err != nil {
		return nil, err
	}
	large, err := LoRA(LargeSpec)
	if err != nil {
		return nil, err
	}
	readme := []byte("---\nbase_model: Wan-AI/Wan2.1-T2V-1.3B\ntags: [lora]\n---\n# demo LoRA\n")
	return []File{
		{Path: "README.md", Data: readme},
		{Path: "lora.safetensors", Data: small, LFS: true},
		{Path: "checkpoints/step1000/lora_large.safetensors", Data: large, LFS: true},
	}, nil
}
