package hftest

// The upload side of the fake Hub, as huggingface_hub's create_repo / create_commit speak
// to the real one over the legacy (non-Xet) LFS path:
//
//	POST /api/repos/create                                 {name, organization?, type, private|visibility}
//	POST /api/{type}s/{org}/{name}/preupload/{rev}         {files: [{path, sample, size}]} (≤256 a call)
//	POST /{prefix}{org}/{name}.git/info/lfs/objects/batch  git-lfs batch, operation=upload, basic|multipart
//	PUT  <storage>/upload/{id}                             presigned single PUT (another host: no token)
//	PUT  <storage>/upload/{id}/{part}                      presigned multipart part, answers an ETag
//	POST /api/complete_multipart?uploadId=…&sig=…          {oid, parts: [{partNumber, etag}]}
//	POST /{prefix}{org}/{name}.git/info/lfs/objects/verify {oid, size}: checks the whole sha256
//	POST /api/{type}s/{org}/{name}/commit/{rev}            NDJSON header / lfsFile / file / deleted*
//
// Writes need a token added with AddWriteToken (AddToken's tokens read only: 403). The
// storage host rejects any request that carries an Authorization header (as S3 does for a
// presigned URL) and counts it (StorageAuthSeen). A commit refuses an lfsFile whose object
// was not uploaded and verified, and makes a new commit on the branch, so Pull sees it.

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// DefaultUploadChunkSize is the part size of multipart LFS uploads: objects larger than
// this are uploaded in parts (SetUploadChunkSize changes it).
const DefaultUploadChunkSize = 16 << 20

// MaxRegularSize is the largest file the Hub stores in git rather than LFS (10 MiB).
const MaxRegularSize = 10 << 20

// maxPreuploadFiles is the most files one preupload call may name (huggingface_hub sends
// chunks of 256).
const maxPreuploadFiles = 256

// GitAttributes is the .gitattributes the Hub commits when it creates a repo (abridged).
const GitAttributes = `*.7z filter=lfs diff=lfs merge=lfs -text
*.bin filter=lfs diff=lfs merge=lfs -text
*.ckpt filter=lfs diff=lfs merge=lfs -text
*.gguf filter=lfs diff=lfs merge=lfs -text
*.gz filter=lfs diff=lfs merge=lfs -text
*.h5 filter=lfs diff=lfs merge=lfs -text
*.npy filter=lfs diff=lfs merge=lfs -text
*.onnx filter=lfs diff=lfs merge=lfs -text
*.pt filter=lfs diff=lfs merge=lfs -text
*.pth filter=lfs diff=lfs merge=lfs -text
*.safetensors filter=lfs diff=lfs merge=lfs -text
*.tar filter=lfs diff=lfs merge=lfs -text
*.zip filter=lfs diff=lfs merge=lfs -text
*tfevents* filter=lfs diff=lfs merge=lfs -text
`

var lfsExt = map[string]bool{
	".7z": true, ".bin": true, ".ckpt": true, ".gguf": true, ".gz": true, ".h5": true,
	".npy": true, ".onnx": true, ".pt": true, ".pth": true, ".safetensors": true,
	".tar": true, ".zip": true,
}

var (
	oidRe    = regexp.MustCompile(`^[0-9a-f]{64}$`)
	repoIDRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$`)
)

// upState is the upload side's state; every field is guarded by Server.mu.
type upState struct {
	storage  *httptest.Server
	hook     func(*http.Request)
	writers  map[string][]string          // write token -> scopes ("org" or "org/name"; none: everything)
	pending  map[string]map[string][]byte // repo key -> oid -> uploaded, not yet verified
	verified map[string]map[string][]byte // repo key -> oid -> verified LFS object
	sessions map[string]*upSession        // upload id -> session
	chunk    int64
	interr   int // storage PUTs to cut off halfway
	fail     int // storage PUTs to answer 500
	auth     int // storage requests that carried Authorization
	bytes    int64
}

// upSession is one object's upload, from the batch answer to its verification.
type upSession struct {
	repo    string // repo key
	oid     string
	size    int64
	chunk   int64 // 0: basic (one PUT)
	parts   map[int][]byte
	etags   map[int]string
	expires time.Time
}

func (s *Server) startUploads() {
	s.up = &upState{
		writers: map[string][]string{}, pending: map[string]map[string][]byte{},
		verified: map[string]map[string][]byte{}, sessions: map[string]*upSession{},
		chunk: DefaultUploadChunkSize,
	}
	newSrv := httptest.NewServer
	if s.opt.TLS && !s.opt.PlainCDN {
		newSrv = httptest.NewTLSServer
	}
	s.up.storage = newSrv(http.HandlerFunc(s.serveStorage))
}

func (s *Server) closeUploads() {
	s.up.storage.CloseClientConnections()
	s.up.storage.Close()
}

// StorageURL is the presigned-upload host (an S3 stand-in), separate from Hub and CDN.
func (s *Server) StorageURL() string { return s.up.storage.URL }

// StorageHook, if set, sees every request the storage host receives (before any check).
func (s *Server) StorageHook(h func(*http.Request)) { s.mu.Lock(); s.up.hook = h; s.mu.Unlock() }

// AddWriteToken makes tok valid for reading (gated conditions accepted) and for writing.
// Scopes limit writes: "org" allows creating and writing repos of that namespace,
// "org/name" writing that repo only (as a fine-grained token); none allows everything.
// The token's user namespace (for a create without organization) is the first scope
// without a slash, else "hftest-user".
func (s *Server) AddWriteToken(tok string, scopes ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[tok] = true
	s.up.writers[tok] = append([]string{}, scopes...)
}

// SetUploadChunkSize makes LFS objects larger than n bytes upload in n-byte parts
// (multipart transfer); n <= 0 means always one PUT (basic transfer).
func (s *Server) SetUploadChunkSize(n int64) { s.mu.Lock(); s.up.chunk = n; s.mu.Unlock() }

// InterruptUploads makes the next n storage PUTs read half their body and then drop the
// connection.
func (s *Server) InterruptUploads(n int) { s.mu.Lock(); s.up.interr = n; s.mu.Unlock() }

// FailUploads makes the next n storage PUTs answer 500 after reading their body.
func (s *Server) FailUploads(n int) { s.mu.Lock(); s.up.fail = n; s.mu.Unlock() }

// StorageAuthSeen is the number of storage requests that carried an Authorization header.
func (s *Server) StorageAuthSeen() int { s.mu.Lock(); defer s.mu.Unlock(); return s.up.auth }

// StorageBytes is the number of payload bytes the storage host received.
func (s *Server) StorageBytes() int64 { s.mu.Lock(); defer s.mu.Unlock(); return s.up.bytes }

// RepoExists reports whether the repo exists (created or added).
func (s *Server) RepoExists(typ, id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.repos[key(typ, id)] != nil
}

// IsPrivate reports whether the repo exists and is private.
func (s *Server) IsPrivate(typ, id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	rs := s.repos[key(typ, id)]
	return rs != nil && rs.Private
}

// Files returns the files of the commit a branch, tag or commit names, and that commit.
func (s *Server) Files(typ, id, rev string) ([]File, string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rs := s.repos[key(typ, id)]
	if rs == nil {
		return nil, "", false
	}
	sha := rev
	if c, ok := rs.refs[rev]; ok {
		sha = c
	}
	cd := rs.commits[sha]
	if cd == nil {
		return nil, "", false
	}
	return append([]File(nil), cd.files...), cd.sha, true
}

// serveUpload answers the upload endpoints; false: not one of them.
func (s *Server) serveUpload(w http.ResponseWriter, r *http.Request) bool {
	p := r.URL.EscapedPath()
	switch {
	case p == "/api/repos/create":
		s.count("create")
		s.handleCreate(w, r)
	case p == "/api/complete_multipart":
		s.count("complete")
		s.handleComplete(w, r)
	case strings.HasPrefix(p, "/api/"):
		segs := strings.Split(strings.TrimPrefix(p, "/"), "/")
		if len(segs) < 6 || segs[4] != "preupload" && segs[4] != "commit" {
			return false
		}
		typ := ""
		switch segs[1] {
		case "models", "datasets", "spaces":
			typ = strings.TrimSuffix(segs[1], "s")
		default:
			return false
		}
		var revs []string
		for _, x := range segs[5:] {
			u, err := url.PathUnescape(x)
			if err != nil {
				s.hubError(w, r, http.StatusBadRequest, "", "bad revision")
				return true
			}
			revs = append(revs, u)
		}
		rev := strings.Join(revs, "/")
		id := segs[2] + "/" + segs[3]
		s.count(segs[4])
		if r.Method != http.MethodPost {
			s.hubError(w, r, http.StatusMethodNotAllowed, "", "Method not allowed")
			return true
		}
		if segs[4] == "preupload" {
			s.handlePreupload(w, r, typ, id, rev)
		} else {
			s.handleCommit(w, r, typ, id, rev)
		}
	case strings.Contains(p, ".git/info/lfs/objects/"):
		i := strings.Index(p, ".git/info/lfs/objects/")
		repoPart, op := strings.TrimPrefix(p[:i], "/"), p[i+len(".git/info/lfs/objects/"):]
		typ := "model"
		if t, rest, ok := strings.Cut(repoPart, "/"); ok && (t == "datasets" || t == "spaces") {
			typ, repoPart = strings.TrimSuffix(t, "s"), rest
		}
		switch op {
		case "batch":
			s.count("batch")
			s.handleBatch(w, r, typ, repoPart)
		case "verify":
			s.count("verify")
			s.handleVerify(w, r, typ, repoPart)
		default:
			return false
		}
	default:
		return false
	}
	return true
}

// writeAccess applies the Hub's rules to a write: no token 401, invalid token 401, an
// unknown repo (or private one without token) 401/404 as for reads, a token without write
// access 403. create asks for the right to create repos in the namespace of id.
func (s *Server) writeAccess(r *http.Request, typ, id string, create bool) (*repoState, int, string, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := r.Header.Get("Authorization")
	tok, isBearer := strings.CutPrefix(a, "Bearer ")
	if a != "" {
		if _, ok := s.tokens[tok]; !ok || !isBearer {
			return nil, http.StatusUnauthorized, "", "Invalid credentials in Authorization header"
		}
	}
	var rs *repoState
	if !create {
		rs = s.repos[key(typ, id)]
		if rs == nil || rs.Private && a == "" {
			if a == "" {
				return nil, http.StatusUnauthorized, "RepoNotFound", "Repository Not Found for url: " + r.URL.Path + ". Please make sure you specified the correct `repo_id` and `repo_type`. If you are trying to access a private or gated repo, make sure you are authenticated."
			}
			return nil, http.StatusNotFound, "RepoNotFound", "Repository not found"
		}
		if rs.removed {
			return nil, http.StatusGone, "", "This repository has been removed"
		}
	}
	if a == "" {
		return nil, http.StatusUnauthorized, "", "Invalid username or password."
	}
	scopes, ok := s.up.writers[tok]
	org := strings.Split(id, "/")[0]
	allowed := ok && len(scopes) == 0
	for _, sc := range scopes {
		if sc == org || sc == id && !create {
			allowed = true
		}
	}
	if !allowed {
		if create {
			return nil, http.StatusForbidden, "", fmt.Sprintf("You don't have the rights to create a %s under the namespace %q", typ, org)
		}
		return nil, http.StatusForbidden, "", "You don't have the rights to write to " + id + ": your token has no write access"
	}
	return rs, 0, "", ""
}

func (s *Server) tokenUser(r *http.Request) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	for _, sc := range s.up.writers[tok] {
		if !strings.Contains(sc, "/") {
			return sc
		}
	}
	return "hftest-user"
}

func readJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<20))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, ctype string, v any) {
	w.Header().Set("Content-Type", ctype)
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// hubErrorLocked is hubError for a caller that holds s.mu.
func (s *Server) hubErrorLocked(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	if s.echoAuth {
		msg += " (got " + r.Header.Get("Authorization") + ")"
	}
	if code != "" {
		w.Header().Set("X-Error-Code", code)
	}
	w.Header().Set("X-Error-Message", msg)
	writeJSON(w, status, "application/json", map[string]string{"error": msg})
}

func (s *Server) repoURL(typ, id string) string {
	prefix := ""
	if typ == "dataset" || typ == "space" {
		prefix = typ + "s/"
	}
	return s.Hub.URL + "/" + prefix + id
}

func (s *Server) handleCreate(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		s.hubError(w, r, http.StatusMethodNotAllowed, "", "Method not allowed")
		return
	}
	var req struct {
		Name         string  `json:"name"`
		Organization *string `json:"organization"`
		Type         *string `json:"type"`
		Private      *bool   `json:"private"`
		Visibility   *string `json:"visibility"`
	}
	if err := readJSON(r, &req); err != nil {
		s.hubError(w, r, http.StatusBadRequest, "", "Invalid JSON body")
		return
	}
	typ := "model"
	if req.Type != nil {
		typ = *req.Type
	}
	if typ != "model" && typ != "dataset" && typ != "space" {
		s.hubError(w, r, http.StatusBadRequest, "", "Invalid repo type")
		return
	}
	if req.Private != nil && req.Visibility != nil {
		s.hubError(w, r, http.StatusBadRequest, "", "private and visibility are mutually exclusive")
		return
	}
	private := req.Private != nil && *req.Private
	if req.Visibility != nil {
		switch *req.Visibility {
		case "private":
			private = true
		case "public":
		default:
			s.hubError(w, r, http.StatusBadRequest, "", "Invalid visibility")
			return
		}
	}
	org := ""
	if req.Organization != nil {
		org = *req.Organization
	}
	if org == "" {
		org = s.tokenUser(r)
	}
	id := org + "/" + req.Name
	if !repoIDRe.MatchString(id) || strings.Contains(id, "--") || strings.Contains(id, "..") || len(req.Name) > 96 {
		s.hubError(w, r, http.StatusBadRequest, "", "Invalid repo name")
		return
	}
	if _, status, code, msg := s.writeAccess(r, typ, id, true); status != 0 {
		s.hubError(w, r, status, code, msg)
		return
	}
	s.mu.Lock()
	if s.repos[key(typ, id)] != nil {
		s.mu.Unlock()
		w.Header().Set("X-Error-Message", "You already created this "+typ+" repo")
		writeJSON(w, http.StatusConflict, "application/json", map[string]string{"error": "You already created this " + typ + " repo", "url": s.repoURL(typ, id)})
		return
	}
	rs := &repoState{Repo: Repo{ID: id, Type: typ, Private: private}, refs: map[string]string{}, commits: map[string]*commitData{}}
	s.repos[key(typ, id)] = rs
	s.addCommitLocked(rs, "main", []File{{Path: ".gitattributes", Data: []byte(GitAttributes)}})
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, "application/json", map[string]string{"url": s.repoURL(typ, id), "name": id, "id": "hftest" + SHA256([]byte(id))[:24]})
}

// headFiles returns the commit a branch names (404 RevisionNotFound otherwise).
func (s *Server) headLocked(rs *repoState, rev string) *commitData {
	if c, ok := rs.refs[rev]; ok {
		return rs.commits[c]
	}
	return nil
}

// IsLFS is the fake Hub's upload mode rule: LFS for files over 10 MiB, for names the
// .gitattributes marks (*.safetensors, …), and for binary content (a NUL in the first 512
// bytes); never for an empty file.
func IsLFS(p string, size int64, sample []byte) bool {
	if size == 0 {
		return false
	}
	return size > MaxRegularSize || lfsExt[strings.ToLower(path.Ext(p))] || strings.Contains(path.Base(p), "tfevents") || bytes.IndexByte(sample, 0) >= 0
}

func safeRepoPath(p string) bool {
	if p == "" || len(p) > 1024 || !utf8.ValidString(p) || strings.HasPrefix(p, "/") || strings.ContainsAny(p, "\\\x00\n\r") {
		return false
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "" || seg == "." || seg == ".." || seg == ".git" {
			return false
		}
	}
	return true
}

func (s *Server) handlePreupload(w http.ResponseWriter, r *http.Request, typ, id, rev string) {
	rs, status, code, msg := s.writeAccess(r, typ, id, false)
	if status != 0 {
		s.hubError(w, r, status, code, msg)
		return
	}
	var req struct {
		Files []struct {
			Path   string `json:"path"`
			Sample string `json:"sample"`
			Size   *int64 `json:"size"`
		} `json:"files"`
		GitIgnore *string `json:"gitIgnore"`
	}
	if err := readJSON(r, &req); err != nil {
		s.hubError(w, r, http.StatusBadRequest, "", "Invalid JSON body")
		return
	}
	if len(req.Files) > maxPreuploadFiles {
		s.hubError(w, r, http.StatusBadRequest, "", fmt.Sprintf("Too many files: at most %d per call", maxPreuploadFiles))
		return
	}
	s.mu.Lock()
	cd := s.headLocked(rs, rev)
	s.mu.Unlock()
	if cd == nil {
		s.hubError(w, r, http.StatusNotFound, "RevisionNotFound", "Invalid rev id: "+rev)
		return
	}
	have := map[string]File{}
	for _, f := range cd.files {
		have[f.Path] = f
	}
	out := []map[string]any{}
	for _, f := range req.Files {
		sample, err := base64.StdEncoding.DecodeString(f.Sample)
		if !safeRepoPath(f.Path) || err != nil || len(sample) > 512 || f.Size == nil || *f.Size < 0 || int64(len(sample)) > *f.Size {
			s.hubError(w, r, http.StatusBadRequest, "", "Invalid file entry")
			return
		}
		mode := "regular"
		if IsLFS(f.Path, *f.Size, sample) {
			mode = "lfs"
		}
		e := map[string]any{"path": f.Path, "uploadMode": mode, "shouldIgnore": false}
		if old, ok := have[f.Path]; ok {
			if old.LFS {
				e["oid"] = SHA256(old.Data)
			} else {
				e["oid"] = GitBlobSHA1(old.Data)
			}
		}
		out = append(out, e)
	}
	writeJSON(w, http.StatusOK, "application/json", map[string]any{"files": out, "commitOid": cd.sha})
}

const lfsType = "application/vnd.git-lfs+json"

func (s *Server) signUpload(method, p string, exp int64) string {
	m := hmac.New(sha256.New, s.key)
	fmt.Fprintf(m, "upload|%s|%s|%d", method, p, exp)
	return hex.EncodeToString(m.Sum(nil))
}

func (s *Server) presign(base, method, p string, q url.Values) string {
	exp := time.Now().Add(time.Hour).Unix()
	if q == nil {
		q = url.Values{}
	}
	q.Set("X-Amz-Expires", strconv.FormatInt(exp, 10))
	q.Set("X-Amz-Signature", s.signUpload(method, p, exp))
	return base + p + "?" + q.Encode()
}

func (s *Server) checkSig(r *http.Request) bool {
	exp, _ := strconv.ParseInt(r.URL.Query().Get("X-Amz-Expires"), 10, 64)
	return hmac.Equal([]byte(r.URL.Query().Get("X-Amz-Signature")), []byte(s.signUpload(r.Method, r.URL.Path, exp))) && time.Now().Unix() <= exp
}

func newID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// hasObjectLocked reports whether the repo already stores the object (verified upload or
// in some commit).
func (s *Server) hasObjectLocked(rs *repoState, oid string) ([]byte, bool) {
	if d, ok := s.up.verified[key(rs.Type, rs.ID)][oid]; ok {
		return d, true
	}
	for _, c := range rs.commits {
		for _, f := range c.files {
			if f.LFS && SHA256(f.Data) == oid {
				return f.Data, true
			}
		}
	}
	return nil, false
}

func (s *Server) handleBatch(w http.ResponseWriter, r *http.Request, typ, id string) {
	if r.Method != http.MethodPost {
		s.hubError(w, r, http.StatusMethodNotAllowed, "", "Method not allowed")
		return
	}
	if !strings.Contains(r.Header.Get("Accept"), lfsType) {
		s.hubError(w, r, http.StatusNotAcceptable, "", "Accept must be "+lfsType)
		return
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, lfsType) {
		s.hubError(w, r, http.StatusUnsupportedMediaType, "", "Content-Type must be "+lfsType)
		return
	}
	rs, status, code, msg := s.writeAccess(r, typ, id, false)
	if status != 0 {
		s.hubError(w, r, status, code, msg)
		return
	}
	var req struct {
		Operation string   `json:"operation"`
		Transfers []string `json:"transfers"`
		Objects   []struct {
			OID  string `json:"oid"`
			Size *int64 `json:"size"`
		} `json:"objects"`
		HashAlgo string `json:"hash_algo"`
		Ref      *struct {
			Name string `json:"name"`
		} `json:"ref"`
	}
	if err := readJSON(r, &req); err != nil {
		s.hubError(w, r, http.StatusBadRequest, "", "Invalid JSON body")
		return
	}
	if req.Operation != "upload" || req.HashAlgo != "" && req.HashAlgo != "sha256" {
		s.hubError(w, r, http.StatusUnprocessableEntity, "", "Only the upload operation with sha256 is supported")
		return
	}
	basic, multi := false, false
	for _, t := range req.Transfers {
		basic = basic || t == "basic"
		multi = multi || t == "multipart"
	}
	if len(req.Transfers) == 0 {
		basic = true // git-lfs: omitted means basic
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	chunk := s.up.chunk
	transfer := "basic"
	if multi && chunk > 0 {
		transfer = "multipart"
	}
	var objs []map[string]any
	for _, o := range req.Objects {
		if !oidRe.MatchString(o.OID) || o.Size == nil || *o.Size < 0 {
			objs = append(objs, map[string]any{"oid": o.OID, "size": 0, "error": map[string]any{"code": 422, "message": "Invalid oid or size"}})
			continue
		}
		size := *o.Size
		e := map[string]any{"oid": o.OID, "size": size}
		if d, ok := s.hasObjectLocked(rs, o.OID); ok {
			if int64(len(d)) != size {
				e["error"] = map[string]any{"code": 422, "message": "Size does not match the stored object"}
			}
			objs = append(objs, e) // already stored: no actions
			continue
		}
		id := newID()
		ses := &upSession{repo: key(rs.Type, rs.ID), oid: o.OID, size: size, expires: time.Now().Add(time.Hour), parts: map[int][]byte{}, etags: map[int]string{}}
		verify := map[string]any{"href": s.Hub.URL + "/" + urlPrefixOf(rs.Type) + rs.ID + ".git/info/lfs/objects/verify"}
		switch {
		case multi && chunk > 0 && size > chunk:
			ses.chunk = chunk
			n := int((size + chunk - 1) / chunk)
			hdr := map[string]any{"chunk_size": strconv.FormatInt(chunk, 10)}
			for i := 1; i <= n; i++ {
				hdr[fmt.Sprintf("%05d", i)] = s.presign(s.up.storage.URL, http.MethodPut, fmt.Sprintf("/upload/%s/%d", id, i), nil)
			}
			q := url.Values{"uploadId": {id}}
			e["actions"] = map[string]any{
				"upload": map[string]any{"href": s.presign(s.Hub.URL, http.MethodPost, "/api/complete_multipart", q), "header": hdr},
				"verify": verify,
			}
		case basic:
			e["actions"] = map[string]any{
				"upload": map[string]any{"href": s.presign(s.up.storage.URL, http.MethodPut, "/upload/"+id, nil)},
				"verify": verify,
			}
		default:
			e["error"] = map[string]any{"code": 422, "message": "No supported transfer adapter"}
			objs = append(objs, e)
			continue
		}
		s.up.sessions[id] = ses
		objs = append(objs, e)
	}
	if objs == nil {
		objs = []map[string]any{}
	}
	writeJSON(w, http.StatusOK, lfsType, map[string]any{"transfer": transfer, "objects": objs, "hash_algo": "sha256"})
}

func urlPrefixOf(typ string) string {
	if typ == "dataset" || typ == "space" {
		return typ + "s/"
	}
	return ""
}

func etagOf(b []byte) string {
	h := md5.Sum(b)
	return `"` + hex.EncodeToString(h[:]) + `"`
}

func storageError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>%s</Code><Message>%s</Message></Error>", code, msg)
}

// serveStorage is the presigned upload host: PUT /upload/{id} (basic) and
// /upload/{id}/{part} (multipart). It refuses an Authorization header, as S3 refuses a
// second auth mechanism on a presigned URL.
func (s *Server) serveStorage(w http.ResponseWriter, r *http.Request) {
	s.count("storage")
	s.mu.Lock()
	hook := s.up.hook
	if r.Header.Get("Authorization") != "" {
		s.up.auth++
	}
	s.mu.Unlock()
	if hook != nil {
		hook(r)
	}
	if s.takeRateLimit() {
		w.Header().Set("Retry-After", "0")
		storageError(w, http.StatusServiceUnavailable, "SlowDown", "Please reduce your request rate.")
		return
	}
	if r.Header.Get("Authorization") != "" {
		storageError(w, http.StatusBadRequest, "InvalidArgument", "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified")
		return
	}
	if r.Method != http.MethodPut {
		storageError(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "The specified method is not allowed against this resource.")
		return
	}
	if !s.checkSig(r) {
		storageError(w, http.StatusForbidden, "AccessDenied", "Request has expired or the signature does not match")
		return
	}
	segs := strings.Split(strings.TrimPrefix(r.URL.Path, "/upload/"), "/")
	s.mu.Lock()
	ses := s.up.sessions[segs[0]]
	interrupt := s.up.interr > 0
	if interrupt {
		s.up.interr--
	}
	fail := !interrupt && s.up.fail > 0
	if fail {
		s.up.fail--
	}
	s.mu.Unlock()
	if ses == nil || time.Now().After(ses.expires) {
		storageError(w, http.StatusNotFound, "NoSuchUpload", "The specified upload does not exist.")
		return
	}
	part := 0
	if len(segs) == 2 {
		n, err := strconv.Atoi(segs[1])
		if err != nil || ses.chunk == 0 || n < 1 || int64(n-1)*ses.chunk >= max(ses.size, 1) {
			storageError(w, http.StatusBadRequest, "InvalidArgument", "Part number is invalid")
			return
		}
		part = n
	} else if len(segs) != 1 || ses.chunk != 0 {
		storageError(w, http.StatusBadRequest, "InvalidArgument", "Bad upload path")
		return
	}
	if interrupt {
		half := max(r.ContentLength/2, 1)
		n, _ := io.CopyN(io.Discard, r.Body, half)
		s.mu.Lock()
		s.up.bytes += n
		s.mu.Unlock()
		panic(http.ErrAbortHandler) // drop the connection mid-body
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, ses.size+1))
	s.mu.Lock()
	s.up.bytes += int64(len(data))
	s.mu.Unlock()
	if err != nil {
		return
	}
	if r.ContentLength >= 0 && int64(len(data)) != r.ContentLength {
		storageError(w, http.StatusBadRequest, "IncompleteBody", "You did not provide the number of bytes specified by the Content-Length HTTP header.")
		return
	}
	if fail {
		storageError(w, http.StatusInternalServerError, "InternalError", "We encountered an internal error. Please try again.")
		return
	}
	etag := etagOf(data)
	s.mu.Lock()
	if part > 0 {
		ses.parts[part], ses.etags[part] = data, etag
	} else {
		m := s.up.pending[ses.repo]
		if m == nil {
			m = map[string][]byte{}
			s.up.pending[ses.repo] = m
		}
		m[ses.oid] = data
	}
	s.mu.Unlock()
	w.Header().Set("ETag", etag)
	w.WriteHeader(http.StatusOK)
}

// handleComplete assembles a multipart upload: every part, in order, with the ETag its
// PUT answered, each chunk_size long but the last.
func (s *Server) handleComplete(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		s.hubError(w, r, http.StatusMethodNotAllowed, "", "Method not allowed")
		return
	}
	if !s.checkSig(r) {
		s.hubError(w, r, http.StatusForbidden, "", "Invalid or expired signature")
		return
	}
	var req struct {
		OID   string `json:"oid"`
		Parts []struct {
			PartNumber int    `json:"partNumber"`
			ETag       string `json:"etag"`
		} `json:"parts"`
	}
	if err := readJSON(r, &req); err != nil {
		s.hubError(w, r, http.StatusBadRequest, "", "Invalid JSON body")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ses := s.up.sessions[r.URL.Query().Get("uploadId")]
	if ses == nil || ses.chunk == 0 {
		s.hubErrorLocked(w, r, http.StatusNotFound, "", "No such multipart upload")
		return
	}
	if req.OID != ses.oid {
		s.hubErrorLocked(w, r, http.StatusBadRequest, "", "oid does not match the upload")
		return
	}
	n := int((ses.size + ses.chunk - 1) / ses.chunk)
	if len(req.Parts) != n {
		s.hubErrorLocked(w, r, http.StatusBadRequest, "", fmt.Sprintf("Expected %d parts, got %d", n, len(req.Parts)))
		return
	}
	var all bytes.Buffer
	for i, p := range req.Parts {
		data, ok := ses.parts[i+1]
		want := min(ses.chunk, ses.size-int64(i)*ses.chunk)
		switch {
		case p.PartNumber != i+1:
			s.hubErrorLocked(w, r, http.StatusBadRequest, "", "Parts must be listed in order")
			return
		case !ok:
			s.hubErrorLocked(w, r, http.StatusBadRequest, "", fmt.Sprintf("Part %d was not uploaded", i+1))
			return
		case strings.Trim(p.ETag, `"`) != strings.Trim(ses.etags[i+1], `"`):
			s.hubErrorLocked(w, r, http.StatusBadRequest, "", fmt.Sprintf("ETag of part %d does not match", i+1))
			return
		case int64(len(data)) != want:
			s.hubErrorLocked(w, r, http.StatusBadRequest, "", fmt.Sprintf("Part %d has %d bytes, want %d", i+1, len(data), want))
			return
		}
		all.Write(data)
	}
	m := s.up.pending[ses.repo]
	if m == nil {
		m = map[string][]byte{}
		s.up.pending[ses.repo] = m
	}
	m[ses.oid] = all.Bytes()
	writeJSON(w, http.StatusOK, "application/json", map[string]any{"success": true})
}

// handleVerify promotes an uploaded object once its size and sha256 match the oid.
func (s *Server) handleVerify(w http.ResponseWriter, r *http.Request, typ, id string) {
	if r.Method != http.MethodPost {
		s.hubError(w, r, http.StatusMethodNotAllowed, "", "Method not allowed")
		return
	}
	rs, status, code, msg := s.writeAccess(r, typ, id, false)
	if status != 0 {
		s.hubError(w, r, status, code, msg)
		return
	}
	var req struct {
		OID  string `json:"oid"`
		Size int64  `json:"size"`
	}
	if err := readJSON(r, &req); err != nil {
		s.hubError(w, r, http.StatusBadRequest, "", "Invalid JSON body")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rk := key(rs.Type, rs.ID)
	if d, ok := s.up.verified[rk][req.OID]; ok && int64(len(d)) == req.Size {
		writeJSON(w, http.StatusOK, lfsType, map[string]any{"oid": req.OID, "size": req.Size})
		return
	}
	data, ok := s.up.pending[rk][req.OID]
	switch {
	case !ok:
		s.hubErrorLocked(w, r, http.StatusNotFound, "", "Object "+req.OID+" not found")
		return
	case int64(len(data)) != req.Size:
		delete(s.up.pending[rk], req.OID)
		s.hubErrorLocked(w, r, http.StatusUnprocessableEntity, "", fmt.Sprintf("Size mismatch: stored %d bytes, expected %d", len(data), req.Size))
		return
	case SHA256(data) != req.OID:
		delete(s.up.pending[rk], req.OID)
		s.hubErrorLocked(w, r, http.StatusUnprocessableEntity, "", "sha256 mismatch: the uploaded content does not match the oid")
		return
	}
	delete(s.up.pending[rk], req.OID)
	if s.up.verified[rk] == nil {
		s.up.verified[rk] = map[string][]byte{}
	}
	s.up.verified[rk][req.OID] = data
	writeJSON(w, http.StatusOK, lfsType, map[string]any{"oid": req.OID, "size": req.Size})
}

type commitLine struct {
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value"`
}

// handleCommit applies an NDJSON commit to a branch and answers the new commit.
func (s *Server) handleCommit(w http.ResponseWriter, r *http.Request, typ, id, rev string) {
	rs, status, code, msg := s.writeAccess(r, typ, id, false)
	if status != 0 {
		s.hubError(w, r, status, code, msg)
		return
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-ndjson") {
		s.hubError(w, r, http.StatusBadRequest, "", "Content-Type must be application/x-ndjson")
		return
	}
	bad := func(m string) { s.hubError(w, r, http.StatusBadRequest, "", m) }
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<30))
	var header struct {
		Summary      string  `json:"summary"`
		Description  string  `json:"description"`
		ParentCommit *string `json:"parentCommit"`
	}
	type lfsFile struct {
		Path, Algo, OID string
		Size            int64
	}
	var adds []File
	var lfsAdds []lfsFile
	var dels, delDirs []string
	seen := map[string]bool{}
	for n := 0; ; n++ {
		var line commitLine
		err := dec.Decode(&line)
		if err == io.EOF {
			break
		}
		if err != nil {
			bad("Invalid NDJSON line")
			return
		}
		if n == 0 && line.Key != "header" {
			bad("The first line must be the header")
			return
		}
		strict := func(v any) error {
			d := json.NewDecoder(bytes.NewReader(line.Value))
			d.DisallowUnknownFields()
			return d.Decode(v)
		}
		var p string
		switch line.Key {
		case "header":
			if n != 0 || strict(&header) != nil {
				bad("Invalid header")
				return
			}
			continue
		case "file":
			var v struct {
				Content  string `json:"content"`
				Path     string `json:"path"`
				Encoding string `json:"encoding"`
			}
			if strict(&v) != nil || v.Encoding != "base64" {
				bad("Invalid file line (want base64 content)")
				return
			}
			data, err := base64.StdEncoding.DecodeString(v.Content)
			if err != nil {
				bad("Invalid base64 content for " + v.Path)
				return
			}
			if len(data) > MaxRegularSize {
				bad("Your push was rejected because it contains files larger than 10 MiB. Please use https://git-lfs.github.com/ to store large files.")
				return
			}
			if IsLFS(v.Path, int64(len(data)), data[:min(len(data), 512)]) {
				bad("Your push was rejected because " + v.Path + " should be stored with Git LFS")
				return
			}
			p = v.Path
			adds = append(adds, File{Path: v.Path, Data: data})
		case "lfsFile":
			var v struct {
				Path string `json:"path"`
				Algo string `json:"algo"`
				OID  string `json:"oid"`
				Size *int64 `json:"size"`
			}
			if strict(&v) != nil || v.Algo != "sha256" || !oidRe.MatchString(v.OID) || v.Size == nil {
				bad("Invalid lfsFile line")
				return
			}
			p = v.Path
			lfsAdds = append(lfsAdds, lfsFile{v.Path, v.Algo, v.OID, *v.Size})
		case "deletedFile", "deletedFolder":
			var v struct {
				Path string `json:"path"`
			}
			if strict(&v) != nil {
				bad("Invalid " + line.Key + " line")
				return
			}
			p = strings.TrimSuffix(v.Path, "/")
			if line.Key == "deletedFile" {
				dels = append(dels, p)
			} else {
				delDirs = append(delDirs, p)
			}
		default:
			bad("Unknown key " + line.Key)
			return
		}
		if !safeRepoPath(p) {
			bad("Invalid path " + p)
			return
		}
		if seen[p] {
			bad("Path " + p + " appears twice in the commit")
			return
		}
		seen[p] = true
	}
	if strings.TrimSpace(header.Summary) == "" {
		bad("A commit summary is required")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cd := s.headLocked(rs, rev)
	if cd == nil {
		w.Header().Set("X-Error-Code", "RevisionNotFound")
		w.Header().Set("X-Error-Message", "Invalid rev id: "+rev)
		writeJSON(w, http.StatusNotFound, "application/json", map[string]string{"error": "Invalid rev id: " + rev})
		return
	}
	if header.ParentCommit != nil && *header.ParentCommit != cd.sha {
		w.Header().Set("X-Error-Message", "A commit has happened since. Please refresh and try again.")
		writeJSON(w, http.StatusPreconditionFailed, "application/json", map[string]string{"error": "A commit has happened since. Please refresh and try again."})
		return
	}
	for _, l := range lfsAdds {
		data, ok := s.hasObjectLocked(rs, l.OID)
		if !ok {
			w.Header().Set("X-Error-Message", "Your push was rejected because an LFS pointer pointed to a file that does not exist.")
			writeJSON(w, http.StatusBadRequest, "application/json", map[string]string{"error": "Your push was rejected because an LFS pointer pointed to a file that does not exist. For instance, this can happen if you used git push --no-verify to push your changes. Offending file: - " + l.Path})
			return
		}
		if int64(len(data)) != l.Size {
			w.Header().Set("X-Error-Message", "LFS pointer size does not match the object")
			writeJSON(w, http.StatusBadRequest, "application/json", map[string]string{"error": "LFS pointer size does not match the object for " + l.Path})
			return
		}
		adds = append(adds, File{Path: l.Path, Data: data, LFS: true})
	}
	files := map[string]File{}
	for _, f := range cd.files {
		files[f.Path] = f
	}
	for _, d := range dels {
		delete(files, d)
	}
	for _, d := range delDirs {
		for p := range files {
			if strings.HasPrefix(p, d+"/") {
				delete(files, p)
			}
		}
	}
	for _, f := range adds {
		files[f.Path] = f
	}
	list := make([]File, 0, len(files))
	for _, f := range files {
		list = append(list, f)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Path < list[j].Path })
	for _, f := range list {
		for d := path.Dir(f.Path); d != "."; d = path.Dir(d) {
			if _, clash := files[d]; clash {
				s.hubErrorLocked(w, r, http.StatusBadRequest, "", "Path "+d+" is both a file and a folder")
				return
			}
		}
	}
	sha := s.addCommitLocked(rs, rev, list)
	writeJSON(w, http.StatusOK, "application/json", map[string]any{
		"success": true, "commitOid": sha, "commitUrl": s.repoURL(rs.Type, rs.ID) + "/commit/" + sha, "hookOutput": "",
	})
}
