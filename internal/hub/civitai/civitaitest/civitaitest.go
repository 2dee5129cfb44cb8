// Package civitaitest is a local, protocol-faithful CivitAI for tests: the REST API
// (model-versions by id and by hash, models by id and search), the download endpoint with
// its 307 redirect to a signed storage link, and a separate CDN server that checks the
// signature and expiry, serves Range requests and names the file in Content-Disposition,
// as CivitAI's S3/R2 storage does. Both are TLS servers with httptest's certificate.
//
// It also misbehaves on request: rate-limit storms, 5xx storms, stalls, connections cut
// mid-body, truncated files, wrong published hashes, hostile Content-Disposition names,
// no Range support, browser-style login redirects. Every request is recorded (including
// any Authorization header) so tests can check what went where.
//
// Test code only.
package civitaitest

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/lora"
	"github.com/daydreamlive/scopectl/internal/lora/loratest"
)

// API keys the fake accepts.
const (
	Token          = "civitai-test-key-0123456789abcdef"      // a logged-in account
	SupporterToken = "civitai-supporter-key-0123456789abcdef" // an account that unlocked every early-access version
)

// FileSpec is one file of a version.
type FileSpec struct {
	ID      int64  // 0: assigned
	Name    string // API name; default "<model>_<version>.safetensors"
	Data    []byte // content; default a small Wan LoRA for the version's base
	Type    string // default "Model"
	Format  string // default "SafeTensor"
	Primary bool   // the first file of a version is primary unless another one is

	PublishedSHA256 string // hostile: publish this SHA256 instead of the real one
	Disposition     string // Content-Disposition file name; default Name
	RawDisposition  string // hostile: the whole Content-Disposition header value
	Truncate        int64  // hostile: the CDN holds the file without its last Truncate bytes
}

// VersionSpec is one version of a model.
type VersionSpec struct {
	ID                int64 // 0: assigned
	Name              string
	BaseModel         string // as CivitAI writes it, e.g. "Wan Video 14B t2v"
	TrainedWords      []string
	EarlyAccess       bool // downloads answer 403 Early Access except to SupporterToken
	RequireAuth       bool // downloads answer 401 without a valid key
	DownloadsDisabled bool // downloads answer 401 "disabled downloads"
	Archived          bool // downloads answer 410
	Files             []FileSpec
}

// ModelSpec is a model with its versions, newest first (as CivitAI lists them).
type ModelSpec struct {
	ID        int64  // 0: assigned
	Name      string // default "Model <id>"
	Type      string // default "LORA"
	Downloads int64
	Versions  []VersionSpec
}

// Mode holds the hostile behaviours; set it with SetMode. Counters count down as they fire.
type Mode struct {
	RateLimitAPI   int    // the next N requests to civitai.com answer 429
	ServerErrorAPI int    // the next N requests to civitai.com answer 503
	RateLimitCDN   int    // the next N CDN requests answer 429
	RetryAfter     string // Retry-After on those 429s (CivitAI sends none)
	StallCDN       int    // the next N CDN answers stall after StallAfter bytes until the client hangs up
	StallAfter     int64
	CutAt          int64 // every CDN answer breaks the connection on reaching this file offset (0: off)
	CutEvery       int64 // every CDN answer breaks the connection after this many body bytes (0: off)
	NoRanges       bool  // the CDN ignores Range and sends the whole file (200)
	LoginRedirects bool  // refused downloads redirect like a browser's (to /login, /model-versions/V)
	LinkTTL        time.Duration
	EchoKey        bool // hostile: refusals of downloads quote the API key they got in their message
	// BeforeCDN runs before each CDN answer; n counts CDN requests from 1.
	BeforeCDN func(n int, r *http.Request)
}

// Request is one recorded request.
type Request struct {
	Server        string // "api" or "cdn"
	Method        string
	Path          string
	RawQuery      string
	Authorization string
	Cookie        string
	Range         string
	Status        int
}

type file struct {
	spec      FileSpec
	v         *version
	data      []byte // what the CDN serves
	sha       string // real SHA256 of the full data, upper hex (as CivitAI writes hashes)
	published string
	crc       string
	sizeKB    float64
}

type version struct {
	spec    VersionSpec
	m       *model
	files   []*file
	created time.Time
}

type model struct {
	spec     ModelSpec
	versions []*version
}

// Server is the fake CivitAI: API is civitai.com, CDN the storage behind signed links.
type Server struct {
	API *httptest.Server
	CDN *httptest.Server

	t       testing.TB
	secret  []byte
	closing chan struct{} // closed when the test ends: stalled answers give up

	mu       sync.Mutex
	models   []*model
	versions map[int64]*version
	files    map[int64]*file
	nextID   int64
	mode     Mode
	cdnCount int
	reqs     []Request
}

// New starts an empty fake CivitAI; it stops when the test ends.
func New(t testing.TB) *Server {
	s := &Server{t: t, secret: []byte("cdn-signing-secret"), closing: make(chan struct{}), versions: map[int64]*version{}, files: map[int64]*file{}, nextID: 100}
	start := func(h http.HandlerFunc) *httptest.Server {
		srv := httptest.NewUnstartedServer(h)
		srv.Config.ErrorLog = log.New(io.Discard, "", 0) // TLS handshake failures are tests, not news
		srv.StartTLS()
		return srv
	}
	s.API = start(s.serveAPI)
	s.CDN = start(s.serveCDN)
	t.Cleanup(func() {
		close(s.closing)
		s.API.CloseClientConnections()
		s.CDN.CloseClientConnections()
		s.API.Close()
		s.CDN.Close()
	})
	return s
}

// URL is the site's base URL (what CIVITAI_API_URL would be).
func (s *Server) URL() string { return s.API.URL }

// HTTPClient returns a client that trusts the fake's TLS certificate (and nothing else).
func (s *Server) HTTPClient() *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(s.API.Certificate())
	pool.AddCert(s.CDN.Certificate())
	t := s.API.Client().Transport.(*http.Transport).Clone()
	t.TLSClientConfig.RootCAs = pool
	return &http.Client{Transport: t}
}

// SetMode replaces the hostile behaviours.
func (s *Server) SetMode(m Mode) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mode = m
}

// Requests returns a copy of every request so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.reqs)
}

// CDNRequests returns the CDN's requests so far.
func (s *Server) CDNRequests() []Request {
	var out []Request
	for _, r := range s.Requests() {
		if r.Server == "cdn" {
			out = append(out, r)
		}
	}
	return out
}

// ResetRequests forgets the recorded requests.
func (s *Server) ResetRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reqs = nil
}

// LoRA returns the bytes of a synthetic Wan LoRA written by loratest.
func LoRA(t testing.TB, spec loratest.Spec) []byte {
	t.Helper()
	p := filepath.Join(t.TempDir(), "lora.safetensors")
	if err := loratest.Write(p, spec); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// defaultLoRA is a small LoRA for a CivitAI base label (1.3B shapes when unmapped).
func defaultLoRA(t testing.TB, civitaiBase string, seed uint64) []byte {
	base := lora.BaseT2V1_3B
	switch {
	case strings.Contains(civitaiBase, "14B t2v"):
		base = lora.BaseT2V14B
	case strings.Contains(civitaiBase, "14B i2v"):
		base = lora.BaseI2V14B
	}
	return LoRA(t, loratest.Spec{Base: base, Blocks: []int{0}, Modules: []string{"self_attn.q"}, Seed: seed})
}

// AddModel adds a model and returns its spec with every id filled in.
func (s *Server) AddModel(spec ModelSpec) ModelSpec {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	id := func(v *int64) {
		if *v == 0 {
			s.nextID++
			*v = s.nextID
		}
	}
	id(&spec.ID)
	if spec.Name == "" {
		spec.Name = fmt.Sprintf("Model %d", spec.ID)
	}
	if spec.Type == "" {
		spec.Type = "LORA"
	}
	m := &model{}
	now := time.Now().UTC()
	for vi := range spec.Versions {
		vs := &spec.Versions[vi]
		id(&vs.ID)
		if vs.Name == "" {
			vs.Name = fmt.Sprintf("v%d.0", len(spec.Versions)-vi)
		}
		if vs.Files == nil {
			vs.Files = []FileSpec{{}}
		}
		v := &version{m: m, created: now.Add(-time.Duration(vi) * 24 * time.Hour)}
		hasPrimary := false
		for _, fs := range vs.Files {
			hasPrimary = hasPrimary || fs.Primary
		}
		for fi := range vs.Files {
			fs := &vs.Files[fi]
			id(&fs.ID)
			if fs.Type == "" {
				fs.Type = "Model"
			}
			if fs.Format == "" {
				fs.Format = "SafeTensor"
			}
			if !hasPrimary && fi == 0 {
				fs.Primary = true
			}
			if fs.Name == "" {
				ext := ".safetensors"
				if fs.Format == "PickleTensor" {
					ext = ".pt"
				}
				fs.Name = slug(spec.Name) + "_" + slug(vs.Name) + ext
			}
			if fs.Data == nil {
				fs.Data = defaultLoRA(s.t, vs.BaseModel, uint64(fs.ID))
			}
			sum := sha256.Sum256(fs.Data)
			f := &file{spec: *fs, v: v, sha: strings.ToUpper(hex.EncodeToString(sum[:]))}
			f.published = f.sha
			if fs.PublishedSHA256 != "" {
				f.published = strings.ToUpper(fs.PublishedSHA256)
			}
			f.crc = fmt.Sprintf("%08X", crc32.ChecksumIEEE(fs.Data))
			f.sizeKB = float64(len(fs.Data)) / 1024
			f.data = fs.Data[:len(fs.Data)-int(min(max(fs.Truncate, 0), int64(len(fs.Data))))]
			v.files = append(v.files, f)
			s.files[fs.ID] = f
		}
		v.spec = *vs
		m.versions = append(m.versions, v)
		s.versions[vs.ID] = v
	}
	m.spec = spec
	s.models = append(s.models, m)
	return spec
}

func slug(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

// ---- the catalog most tests use ----

// Ids of the standard catalog (Catalog).
const (
	ModelT2V1_3B     = 1001 // "Wan Video 1.3B t2v", two versions
	VersionT2V1_3B   = 2001 // latest
	VersionT2V1_3BV1 = 2000
	ModelT2V14B      = 1002 // "Wan Video 14B t2v"
	VersionT2V14B    = 2002
	ModelI2V480      = 1003 // "Wan Video 14B i2v 480p"
	VersionI2V480    = 2003
	ModelI2V720      = 1004 // "Wan Video 14B i2v 720p"
	VersionI2V720    = 2004
	ModelWan22       = 1005 // "Wan Video 2.2 T2V-A14B"
	VersionWan22     = 2005
	ModelSDXL        = 1006 // "SDXL 1.0"
	VersionSDXL      = 2006
	ModelPickle      = 1007 // only a PickleTensor file
	VersionPickle    = 2007
	ModelMixed       = 1008 // primary PickleTensor, second file SafeTensor
	VersionMixed     = 2008
	FileMixedST      = 3008
	ModelEarly       = 1009 // early access
	VersionEarly     = 2009
	ModelAuth        = 1010 // creator requires login
	VersionAuth      = 2010
	ModelArchived    = 1011 // archived: 410
	VersionArchived  = 2011
	ModelDisabled    = 1012 // downloads disabled
	VersionDisabled  = 2012
)

// Catalog starts a fake CivitAI holding Wan LoRAs for every base label CivitAI uses, plus
// an SDXL LoRA, pickle-only and mixed-format versions, and early-access, login-required,
// archived and download-disabled versions.
func Catalog(t testing.TB) *Server {
	s := New(t)
	add := func(mid, vid int64, name, base string, downloads int64, mut func(*VersionSpec)) {
		vs := VersionSpec{ID: vid, Name: "v1.0", BaseModel: base, TrainedWords: []string{"wanstyle"}}
		if mut != nil {
			mut(&vs)
		}
		s.AddModel(ModelSpec{ID: mid, Name: name, Downloads: downloads, Versions: []VersionSpec{vs}})
	}
	s.AddModel(ModelSpec{ID: ModelT2V1_3B, Name: "Wan Small Anime Style", Downloads: 5000, Versions: []VersionSpec{
		{ID: VersionT2V1_3B, Name: "v2.0", BaseModel: "Wan Video 1.3B t2v", TrainedWords: []string{"anime style"}},
		{ID: VersionT2V1_3BV1, Name: "v1.0", BaseModel: "Wan Video 1.3B t2v"},
	}})
	add(ModelT2V14B, VersionT2V14B, "Wan Big Anime Style", "Wan Video 14B t2v", 9000, nil)
	add(ModelI2V480, VersionI2V480, "Wan I2V Motion 480", "Wan Video 14B i2v 480p", 3000, nil)
	add(ModelI2V720, VersionI2V720, "Wan I2V Motion 720", "Wan Video 14B i2v 720p", 2000, nil)
	add(ModelWan22, VersionWan22, "Wan22 Anime Style", "Wan Video 2.2 T2V-A14B", 8000, nil)
	add(ModelSDXL, VersionSDXL, "SDXL Anime Style", "SDXL 1.0", 99999, nil)
	add(ModelPickle, VersionPickle, "Old Pickle LoRA", "Wan Video 14B t2v", 10, func(v *VersionSpec) {
		v.Files = []FileSpec{{Format: "PickleTensor", Data: []byte("PK\x03\x04 not really a pickle")}}
	})
	add(ModelMixed, VersionMixed, "Mixed Formats", "Wan Video 1.3B t2v", 10, func(v *VersionSpec) {
		v.Files = []FileSpec{
			{Format: "PickleTensor", Primary: true, Data: []byte("PK\x03\x04 pickle")},
			{ID: FileMixedST, Format: "SafeTensor", Name: "mixed.safetensors"},
		}
	})
	add(ModelEarly, VersionEarly, "Early Access LoRA", "Wan Video 14B t2v", 10, func(v *VersionSpec) { v.EarlyAccess = true })
	add(ModelAuth, VersionAuth, "Login Only LoRA", "Wan Video 1.3B t2v", 10, func(v *VersionSpec) { v.RequireAuth = true })
	add(ModelArchived, VersionArchived, "Archived LoRA", "Wan Video 1.3B t2v", 10, func(v *VersionSpec) { v.Archived = true })
	add(ModelDisabled, VersionDisabled, "No Downloads LoRA", "Wan Video 1.3B t2v", 10, func(v *VersionSpec) { v.DownloadsDisabled = true })
	return s
}

// FileData returns the content of a file (as published, before any Truncate).
func (s *Server) FileData(fileID int64) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.files[fileID]; f != nil {
		return f.spec.Data
	}
	return nil
}

// PrimaryFileID returns the id of a version's primary file.
func (s *Server) PrimaryFileID(versionID int64) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v := s.versions[versionID]; v != nil {
		for _, f := range v.files {
			if f.spec.Primary {
				return f.spec.ID
			}
		}
	}
	return 0
}

// ---- the API server ----

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

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *Server) record(server string, r *http.Request, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reqs = append(s.reqs, Request{
		Server: server, Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery,
		Authorization: r.Header.Get("Authorization"), Cookie: r.Header.Get("Cookie"),
		Range: r.Header.Get("Range"), Status: status,
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func apiError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]any{"error": msg})
}

// apiToken returns the API key of a request: Authorization: Bearer, else ?token=.
func apiToken(r *http.Request) string {
	if a := r.Header.Get("Authorization"); a != "" {
		if t, ok := strings.CutPrefix(a, "Bearer "); ok {
			return strings.TrimSpace(t)
		}
		return ""
	}
	return r.URL.Query().Get("token")
}

func validToken(t string) bool { return t == Token || t == SupporterToken }

func (s *Server) serveAPI(rw http.ResponseWriter, r *http.Request) {
	w := &statusWriter{ResponseWriter: rw}
	defer func() { s.record("api", r, w.status) }()
	s.mu.Lock()
	limited, failing := s.mode.RateLimitAPI > 0, s.mode.ServerErrorAPI > 0
	if limited {
		s.mode.RateLimitAPI--
	} else if failing {
		s.mode.ServerErrorAPI--
	}
	retryAfter := s.mode.RetryAfter
	s.mu.Unlock()
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		apiError(w, http.StatusMethodNotAllowed, "Method not allowed")
		return
	}
	p := r.URL.Path
	if strings.HasPrefix(p, "/api/") {
		switch {
		case limited:
			if retryAfter != "" {
				w.Header().Set("Retry-After", retryAfter)
			}
			apiError(w, http.StatusTooManyRequests, "Rate limited")
			return
		case failing:
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("<html><body>503 Service Temporarily Unavailable</body></html>"))
			return
		}
	}
	switch {
	case strings.HasPrefix(p, "/api/v1/model-versions/by-hash/"):
		s.byHash(w, strings.TrimPrefix(p, "/api/v1/model-versions/by-hash/"))
	case strings.HasPrefix(p, "/api/v1/model-versions/"):
		s.modelVersion(w, r, strings.TrimPrefix(p, "/api/v1/model-versions/"))
	case p == "/api/v1/models":
		s.listModels(w, r)
	case strings.HasPrefix(p, "/api/v1/models/"):
		s.getModel(w, r, strings.TrimPrefix(p, "/api/v1/models/"))
	case strings.HasPrefix(p, "/api/download/models/"):
		s.download(w, r, strings.TrimPrefix(p, "/api/download/models/"))
	case p == "/login" || p == "/pricing" || strings.HasPrefix(p, "/model-versions/") || strings.HasPrefix(p, "/models/"):
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte("<!DOCTYPE html><html><body>Civitai</body></html>"))
	default:
		apiError(w, http.StatusNotFound, "Not found")
	}
}

func (s *Server) base() string { return s.API.URL }

func (s *Server) fileJSON(f *file) map[string]any {
	dl := fmt.Sprintf("%s/api/download/models/%d", s.base(), f.v.spec.ID)
	if !f.spec.Primary {
		dl += "?" + url.Values{"type": {f.spec.Type}, "format": {f.spec.Format}}.Encode()
	}
	return map[string]any{
		"id":                f.spec.ID,
		"sizeKB":            f.sizeKB,
		"name":              f.spec.Name,
		"type":              f.spec.Type,
		"pickleScanResult":  "Success",
		"pickleScanMessage": "No Pickle imports",
		"virusScanResult":   "Success",
		"virusScanMessage":  nil,
		"scannedAt":         f.v.created.Format(time.RFC3339Nano),
		"metadata":          map[string]any{"format": f.spec.Format, "size": nil, "fp": "bf16"},
		"hashes": map[string]any{
			"AutoV2": f.published[:min(10, len(f.published))],
			"SHA256": f.published,
			"CRC32":  f.crc,
		},
		"primary":     f.spec.Primary,
		"downloadUrl": dl,
	}
}

func (s *Server) versionJSON(v *version, nested bool) map[string]any {
	files := []any{}
	for _, f := range v.files {
		files = append(files, s.fileJSON(f))
	}
	availability := "Public"
	var eaEnds, eaConfig any
	if v.spec.EarlyAccess {
		availability = "EarlyAccess"
		eaEnds = time.Now().UTC().Add(72 * time.Hour).Format("2006-01-02T15:04:05.000Z")
		eaConfig = map[string]any{"timeframe": 3, "chargeForDownload": true, "downloadPrice": 500}
	}
	trained := v.spec.TrainedWords
	if trained == nil {
		trained = []string{}
	}
	out := map[string]any{
		"id":                   v.spec.ID,
		"name":                 v.spec.Name,
		"createdAt":            v.created.Format("2006-01-02T15:04:05.000Z"),
		"updatedAt":            v.created.Format("2006-01-02T15:04:05.000Z"),
		"status":               "Published",
		"publishedAt":          v.created.Format("2006-01-02T15:04:05.000Z"),
		"trainedWords":         trained,
		"trainingStatus":       nil,
		"trainingDetails":      nil,
		"baseModel":            v.spec.BaseModel,
		"baseModelType":        "Standard",
		"earlyAccessEndsAt":    eaEnds,
		"earlyAccessConfig":    eaConfig,
		"description":          "<p>LoRA</p>",
		"uploadType":           "Created",
		"usageControl":         "Download",
		"air":                  fmt.Sprintf("urn:air:wanvideo:lora:civitai:%d@%d", v.m.spec.ID, v.spec.ID),
		"availability":         availability,
		"nsfwLevel":            1,
		"stats":                map[string]any{"downloadCount": v.m.spec.Downloads / 2, "ratingCount": 0, "rating": 0, "thumbsUpCount": 12},
		"files":                files,
		"images":               []any{},
		"downloadUrl":          fmt.Sprintf("%s/api/download/models/%d", s.base(), v.spec.ID),
		"supportsGeneration":   false,
		"earlyAccessTimeFrame": 0,
	}
	if !nested {
		out["modelId"] = v.m.spec.ID
		out["model"] = map[string]any{"name": v.m.spec.Name, "type": v.m.spec.Type, "nsfw": false, "poi": false, "minor": false}
	}
	return out
}

func (s *Server) modelJSON(m *model) map[string]any {
	vs := []any{}
	for _, v := range m.versions {
		vs = append(vs, s.versionJSON(v, true))
	}
	return map[string]any{
		"id":            m.spec.ID,
		"name":          m.spec.Name,
		"description":   "<p>A Wan LoRA</p>",
		"type":          m.spec.Type,
		"poi":           false,
		"nsfw":          false,
		"nsfwLevel":     1,
		"availability":  "Public",
		"allowNoCredit": true,
		"stats":         map[string]any{"downloadCount": m.spec.Downloads, "thumbsUpCount": 10, "thumbsDownCount": 0, "commentCount": 0, "tippedAmountCount": 0},
		"creator":       map[string]any{"username": "tester", "image": nil},
		"tags":          []string{"style", "wan"},
		"modelVersions": vs,
	}
}

func parseID(s string) (int64, bool) {
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil && n > 0
}

func (s *Server) modelVersion(w http.ResponseWriter, r *http.Request, idStr string) {
	id, ok := parseID(idStr)
	if !ok {
		apiError(w, http.StatusBadRequest, "Invalid id")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.versions[id]
	if v == nil {
		apiError(w, http.StatusNotFound, fmt.Sprintf("No model version with id %d", id))
		return
	}
	writeJSON(w, http.StatusOK, s.versionJSON(v, false))
}

func (s *Server) byHash(w http.ResponseWriter, h string) {
	h = strings.ToUpper(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.models {
		for _, v := range m.versions {
			for _, f := range v.files {
				if h == f.published || len(h) == 10 && strings.HasPrefix(f.published, h) || h == f.crc {
					writeJSON(w, http.StatusOK, s.versionJSON(v, false))
					return
				}
			}
		}
	}
	apiError(w, http.StatusNotFound, "Model not found")
}

func (s *Server) getModel(w http.ResponseWriter, r *http.Request, idStr string) {
	id, ok := parseID(idStr)
	if !ok {
		apiError(w, http.StatusBadRequest, "Invalid id")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.models {
		if m.spec.ID == id {
			writeJSON(w, http.StatusOK, s.modelJSON(m))
			return
		}
	}
	apiError(w, http.StatusNotFound, fmt.Sprintf("No model with id %d", id))
}

var modelTypes = map[string]bool{
	"Checkpoint": true, "TextualInversion": true, "Hypernetwork": true, "AestheticGradient": true, "LORA": true,
	"LoCon": true, "DoRA": true, "Controlnet": true, "Upscaler": true, "MotionModule": true, "VAE": true,
	"Poses": true, "Wildcards": true, "Workflows": true, "Detection": true, "Other": true,
}

// multi reads a parameter given repeated or comma-separated.
func multi(q url.Values, k string) []string {
	var out []string
	for _, v := range q[k] {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

func (s *Server) listModels(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := 100
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 100 {
			apiError(w, http.StatusBadRequest, "limit: Number must be between 1 and 100")
			return
		}
		limit = n
	}
	query := q.Get("query")
	if query != "" && q.Get("page") != "" {
		apiError(w, http.StatusBadRequest, "Cannot use page param with query search. Use cursor-based pagination.")
		return
	}
	types := multi(q, "types")
	for _, t := range types {
		if !modelTypes[t] {
			apiError(w, http.StatusBadRequest, fmt.Sprintf("types: Invalid enum value. Received '%s'", t))
			return
		}
	}
	bases := multi(q, "baseModels")
	s.mu.Lock()
	defer s.mu.Unlock()
	var hits []*model
	for _, m := range s.models {
		if query != "" && !strings.Contains(strings.ToLower(m.spec.Name), strings.ToLower(query)) {
			continue
		}
		if len(types) > 0 && !slices.Contains(types, m.spec.Type) {
			continue
		}
		if len(bases) > 0 && !slices.ContainsFunc(m.versions, func(v *version) bool { return slices.Contains(bases, v.spec.BaseModel) }) {
			continue
		}
		hits = append(hits, m)
	}
	sort.SliceStable(hits, func(i, j int) bool { return hits[i].spec.Downloads > hits[j].spec.Downloads })
	start := 0
	if c := q.Get("cursor"); c != "" {
		start, _ = strconv.Atoi(c)
		start = min(max(start, 0), len(hits))
	}
	end := min(start+limit, len(hits))
	items := []any{}
	for _, m := range hits[start:end] {
		items = append(items, s.modelJSON(m))
	}
	meta := map[string]any{"nextCursor": nil}
	if end < len(hits) {
		meta["nextCursor"] = strconv.Itoa(end)
		nq := url.Values{}
		for k, v := range q {
			nq[k] = v
		}
		nq.Set("cursor", strconv.Itoa(end))
		meta["nextPage"] = s.base() + "/api/v1/models?" + nq.Encode()
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": items, "metadata": meta})
}

// download is /api/download/models/{versionId}: checks as CivitAI does, then a 307 to a
// signed CDN link.
func (s *Server) download(w http.ResponseWriter, r *http.Request, idStr string) {
	id, ok := parseID(idStr)
	if !ok {
		apiError(w, http.StatusBadRequest, "Invalid modelVersionId")
		return
	}
	tok := apiToken(r)
	authed := validToken(tok)
	s.mu.Lock()
	v := s.versions[id]
	browser := s.mode.LoginRedirects
	echo := ""
	if s.mode.EchoKey {
		echo = " (key used: " + tok + ", header: " + r.Header.Get("Authorization") + ")"
	}
	ttl := s.mode.LinkTTL
	var f *file
	if v != nil {
		q := r.URL.Query()
		typ, format := q.Get("type"), q.Get("format")
		for _, c := range v.files {
			if typ == "" && format == "" && c.spec.Primary || (typ != "" || format != "") &&
				(typ == "" || c.spec.Type == typ) && (format == "" || c.spec.Format == format) {
				f = c
				break
			}
		}
	}
	s.mu.Unlock()
	switch {
	case v == nil || f == nil:
		apiError(w, http.StatusNotFound, "File not found")
		return
	case v.spec.Archived:
		apiError(w, http.StatusGone, "Model archived, not available for download")
		return
	case v.spec.EarlyAccess && tok != SupporterToken:
		if browser {
			http.Redirect(w, r, fmt.Sprintf("/model-versions/%d", id), http.StatusTemporaryRedirect)
			return
		}
		writeJSON(w, http.StatusForbidden, map[string]any{
			"error":    "Early Access",
			"deadline": time.Now().UTC().Add(72 * time.Hour).Format("2006-01-02T15:04:05.000Z"),
			"message":  "This asset is in Early Access. You can use Buzz access it now!" + echo,
		})
		return
	case v.spec.RequireAuth && !authed:
		if browser {
			http.Redirect(w, r, "/login?"+url.Values{"reason": {"download-auth"}, "returnUrl": {fmt.Sprintf("/model-versions/%d", id)}}.Encode(), http.StatusTemporaryRedirect)
			return
		}
		writeJSON(w, http.StatusUnauthorized, map[string]any{"error": "Unauthorized", "message": "The creator of this asset requires you to be logged in to download it" + echo})
		return
	case v.spec.DownloadsDisabled:
		writeJSON(w, http.StatusUnauthorized, map[string]any{"error": "Unauthorized", "message": "The creator of this asset has disabled downloads on this file" + echo})
		return
	}
	if ttl == 0 {
		ttl = time.Hour
	}
	http.Redirect(w, r, s.SignedURL(f.spec.ID, ttl), http.StatusTemporaryRedirect)
}

// SignedURL returns a signed CDN link for a file, valid for ttl (negative: already expired).
func (s *Server) SignedURL(fileID int64, ttl time.Duration) string {
	s.mu.Lock()
	f := s.files[fileID]
	s.mu.Unlock()
	if f == nil {
		return s.CDN.URL + "/missing"
	}
	disp := f.spec.RawDisposition
	if disp == "" {
		name := f.spec.Disposition
		if name == "" {
			name = f.spec.Name
		}
		disp = fmt.Sprintf("attachment; filename=%q", name)
	}
	key := fmt.Sprintf("/modelfiles/%d/%d/%s", f.v.spec.ID, fileID, url.PathEscape(f.spec.Name))
	date := time.Now().UTC().Add(min(ttl, 0)).Format("20060102T150405Z")
	exp := strconv.Itoa(int(max(ttl, time.Second) / time.Second))
	if ttl < 0 {
		exp = "1"
	}
	q := url.Values{
		"X-Amz-Algorithm":              {"AWS4-HMAC-SHA256"},
		"X-Amz-Credential":             {"TESTKEY/20250101/auto/s3/aws4_request"},
		"X-Amz-Date":                   {date},
		"X-Amz-Expires":                {exp},
		"X-Amz-SignedHeaders":          {"host"},
		"response-content-disposition": {disp},
	}
	q.Set("X-Amz-Signature", s.sign(key, date, exp, disp))
	return s.CDN.URL + key + "?" + q.Encode()
}

func (s *Server) sign(key, date, exp, disp string) string {
	m := hmac.New(sha256.New, s.secret)
	fmt.Fprintf(m, "%s\n%s\n%s\n%s", key, date, exp, disp)
	return hex.EncodeToString(m.Sum(nil))
}

// ---- the CDN ----

func s3Error(w http.ResponseWriter, code int, c, msg string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(code)
	fmt.Fprintf(w, "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>%s</Code><Message>%s</Message></Error>", c, msg)
}

func (s *Server) serveCDN(rw http.ResponseWriter, r *http.Request) {
	w := &statusWriter{ResponseWriter: rw}
	defer func() { s.record("cdn", r, w.status) }()
	s.mu.Lock()
	s.cdnCount++
	n := s.cdnCount
	mode := s.mode
	limited := s.mode.RateLimitCDN > 0
	if limited {
		s.mode.RateLimitCDN--
	}
	stall := s.mode.StallCDN > 0
	if stall {
		s.mode.StallCDN--
	}
	s.mu.Unlock()
	if mode.BeforeCDN != nil {
		mode.BeforeCDN(n, r)
	}
	if r.Method != http.MethodGet {
		s3Error(w, http.StatusForbidden, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided.")
		return
	}
	if r.Header.Get("Authorization") != "" {
		s3Error(w, http.StatusBadRequest, "InvalidArgument", "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified")
		return
	}
	q := r.URL.Query()
	disp := q.Get("response-content-disposition")
	date, exp := q.Get("X-Amz-Date"), q.Get("X-Amz-Expires")
	if !hmac.Equal([]byte(q.Get("X-Amz-Signature")), []byte(s.sign(r.URL.EscapedPath(), date, exp, disp))) {
		s3Error(w, http.StatusForbidden, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided.")
		return
	}
	t, err := time.Parse("20060102T150405Z", date)
	secs, _ := strconv.Atoi(exp)
	if err != nil || time.Now().After(t.Add(time.Duration(secs)*time.Second)) {
		s3Error(w, http.StatusForbidden, "AccessDenied", "Request has expired")
		return
	}
	if limited {
		if mode.RetryAfter != "" {
			w.Header().Set("Retry-After", mode.RetryAfter)
		}
		s3Error(w, http.StatusTooManyRequests, "SlowDown", "Please reduce your request rate.")
		return
	}
	parts := strings.Split(strings.Trim(r.URL.EscapedPath(), "/"), "/")
	var f *file
	if len(parts) == 4 {
		if id, ok := parseID(parts[2]); ok {
			s.mu.Lock()
			f = s.files[id]
			s.mu.Unlock()
		}
	}
	if f == nil {
		s3Error(w, http.StatusNotFound, "NoSuchKey", "The specified key does not exist.")
		return
	}
	data := f.data
	size := int64(len(data))
	start, end := int64(0), size-1
	status := http.StatusOK
	if rg := r.Header.Get("Range"); rg != "" && !mode.NoRanges {
		a, b, ok := parseRange(rg, size)
		if !ok {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", size))
			s3Error(w, http.StatusRequestedRangeNotSatisfiable, "InvalidRange", "The requested range is not satisfiable")
			return
		}
		start, end, status = a, b, http.StatusPartialContent
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", a, b, size))
	}
	h := w.Header()
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Type", "application/octet-stream")
	h.Set("ETag", `"`+strings.ToLower(f.sha[:32])+`"`)
	h.Set("Last-Modified", f.v.created.Format(http.TimeFormat))
	if disp != "" {
		h.Set("Content-Disposition", disp)
	}
	h.Set("Content-Length", strconv.FormatInt(end-start+1, 10))
	w.WriteHeader(status)
	body := data[start : end+1]
	// where to break the connection, in body bytes; -1 never
	cut := int64(-1)
	if mode.CutAt > 0 && mode.CutAt >= start && mode.CutAt <= end {
		cut = mode.CutAt - start
	}
	if mode.CutEvery > 0 && mode.CutEvery < int64(len(body)) && (cut < 0 || mode.CutEvery < cut) {
		cut = mode.CutEvery
	}
	if stall {
		sa := min(max(mode.StallAfter, 0), int64(len(body)))
		_, _ = w.Write(body[:sa])
		w.Flush()
		select {
		case <-r.Context().Done():
		case <-s.closing:
		case <-time.After(time.Minute):
		}
		panic(http.ErrAbortHandler)
	}
	if cut >= 0 {
		_, _ = w.Write(body[:cut])
		w.Flush()
		panic(http.ErrAbortHandler)
	}
	_, _ = w.Write(body)
}

// parseRange reads one "bytes=a-b", "bytes=a-" or "bytes=-n" range (S3 serves no multi-range).
func parseRange(h string, size int64) (int64, int64, bool) {
	spec, ok := strings.CutPrefix(h, "bytes=")
	if !ok || strings.Contains(spec, ",") {
		return 0, 0, false
	}
	a, b, ok := strings.Cut(spec, "-")
	if !ok {
		return 0, 0, false
	}
	if a == "" {
		n, err := strconv.ParseInt(b, 10, 64)
		if err != nil || n <= 0 {
			return 0, 0, false
		}
		return max(size-n, 0), size - 1, size > 0
	}
	start, err := strconv.ParseInt(a, 10, 64)
	if err != nil || start < 0 || start >= size {
		return 0, 0, false
	}
	end := size - 1
	if b != "" {
		e, err := strconv.ParseInt(b, 10, 64)
		if err != nil || e < start {
			return 0, 0, false
		}
		end = min(e, size-1)
	}
	return start, end, true
}
