package civitai

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/httpx"
	"github.com/daydreamlive/scopectl/internal/hub/civitai/civitaitest"
	"github.com/daydreamlive/scopectl/internal/lora"
	"github.com/daydreamlive/scopectl/internal/progress"
	"github.com/daydreamlive/scopectl/internal/secret"
)

// newClient returns a client for the fake with fast retries and small chunks.
func newClient(s *civitaitest.Server, tok string) *Client {
	return &Client{
		BaseURL:      s.URL(),
		Token:        secret.New(tok),
		HTTP:         s.HTTPClient(),
		Connections:  4,
		chunkSize:    8 << 10,
		stallTimeout: 300 * time.Millisecond,
		backoffMin:   time.Millisecond,
		backoffMax:   5 * time.Millisecond,
		maxAttempts:  4,
	}
}

// forbidden strings: no error, log line or recorded CDN request may hold them.
var forbidden = []string{civitaitest.Token, civitaitest.SupporterToken, canary, "X-Amz-Signature", "X-Amz-Credential"}

const canary = "CANARY-civitai-key-0123456789abcdef"

// checkErr fails unless err is one line without secrets or signed-URL queries.
func checkErr(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	msg := err.Error()
	if strings.ContainsAny(msg, "\n\r") {
		t.Errorf("error is not one line: %q", msg)
	}
	for _, f := range forbidden {
		if strings.Contains(msg, f) {
			t.Errorf("error leaks %q: %s", f, msg)
		}
	}
}

func wantErr(t *testing.T, err error, sentinel error, substr ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want %v", sentinel)
	}
	checkErr(t, err)
	if !errors.Is(err, sentinel) {
		t.Fatalf("error %q does not wrap %v", err, sentinel)
	}
	for _, s := range substr {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestVersionEveryRefForm(t *testing.T) {
	s := civitaitest.Catalog(t)
	c := newClient(s, "")
	ctx := context.Background()
	latest := s.PrimaryFileID(civitaitest.VersionT2V1_3B)
	cases := []struct {
		ref     string
		version int64
	}{
		{"civitai:2001", civitaitest.VersionT2V1_3B},
		{"civitai:2000", civitaitest.VersionT2V1_3BV1},
		{"civitai:model/1001", civitaitest.VersionT2V1_3B}, // latest
		{"civitai:model/1001@2000", civitaitest.VersionT2V1_3BV1},
		{"https://civitai.com/models/1001", civitaitest.VersionT2V1_3B},
		{"https://civitai.com/models/1001/wan-small-anime-style", civitaitest.VersionT2V1_3B},
		{"https://civitai.com/models/1001/wan-small-anime-style?modelVersionId=2000", civitaitest.VersionT2V1_3BV1},
		{"https://civitai.com/models/1001?modelVersionId=2001", civitaitest.VersionT2V1_3B},
		{"https://civitai.com/api/download/models/2000", civitaitest.VersionT2V1_3BV1},
		{"urn:air:wanvideo:lora:civitai:1001@2000", civitaitest.VersionT2V1_3BV1},
		{"urn:air:wanvideo:lora:civitai:1001", civitaitest.VersionT2V1_3B},
	}
	for _, cs := range cases {
		ref, err := ParseRef(cs.ref)
		if err != nil {
			t.Fatalf("%s: %v", cs.ref, err)
		}
		v, err := c.Version(ctx, ref)
		if err != nil {
			t.Fatalf("%s: %v", cs.ref, err)
		}
		if v.ID != cs.version || v.ModelID != civitaitest.ModelT2V1_3B {
			t.Errorf("%s: got version %d of model %d", cs.ref, v.ID, v.ModelID)
		}
		if v.Base != lora.BaseT2V1_3B || v.BaseModel != "Wan Video 1.3B t2v" || v.BaseNote != "" {
			t.Errorf("%s: base %q (%q, %q)", cs.ref, v.Base, v.BaseModel, v.BaseNote)
		}
		if v.ModelName != "Wan Small Anime Style" || v.ModelType != "LORA" {
			t.Errorf("%s: model %q type %q", cs.ref, v.ModelName, v.ModelType)
		}
		if want := s.URL() + "/models/1001?modelVersionId=" + itoa(cs.version); v.ModelPage != want {
			t.Errorf("%s: page %q, want %q", cs.ref, v.ModelPage, want)
		}
		if len(v.Files) != 1 || !v.Files[0].Primary || v.Files[0].Format != "SafeTensor" {
			t.Fatalf("%s: files %+v", cs.ref, v.Files)
		}
		if got, want := v.Files[0].SHA256, sha(s.FileData(v.Files[0].ID)); got != want {
			t.Errorf("%s: sha256 %s, want %s", cs.ref, got, want)
		}
		if v.EarlyAccess {
			t.Errorf("%s: early access", cs.ref)
		}
	}
	v, err := c.Version(ctx, Ref{VersionID: civitaitest.VersionT2V1_3B})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(v.TrainedWords, []string{"anime style"}) || v.Name != "v2.0" || v.Files[0].ID != latest {
		t.Errorf("version details: %+v", v)
	}

	// an AIR pinning a file
	v, err = c.Version(ctx, Ref{ModelID: civitaitest.ModelMixed, VersionID: civitaitest.VersionMixed, FileID: civitaitest.FileMixedST})
	if err != nil || v.PinnedFileID != civitaitest.FileMixedST {
		t.Fatalf("pinned: %+v, %v", v, err)
	}
	_, err = c.Version(ctx, Ref{ModelID: civitaitest.ModelMixed, VersionID: civitaitest.VersionMixed, FileID: 999999})
	wantErr(t, err, ErrNotFound)

	// model and version that do not belong together
	_, err = c.Version(ctx, Ref{ModelID: civitaitest.ModelT2V14B, VersionID: civitaitest.VersionT2V1_3B})
	wantErr(t, err, ErrNotFound, "belongs to model 1001")
	_, err = c.Version(ctx, Ref{VersionID: 987654})
	wantErr(t, err, ErrNotFound, "987654", "404")
	_, err = c.Version(ctx, Ref{ModelID: 987654})
	wantErr(t, err, ErrNotFound, "model 987654")
	_, err = c.Version(ctx, Ref{})
	wantErr(t, err, ErrBadRef)

	// every base label
	for _, bc := range []struct {
		v    int64
		base string
	}{
		{civitaitest.VersionT2V14B, lora.BaseT2V14B}, {civitaitest.VersionI2V480, lora.BaseI2V14B},
		{civitaitest.VersionI2V720, lora.BaseI2V14B}, {civitaitest.VersionWan22, lora.BaseUnknown},
		{civitaitest.VersionSDXL, lora.BaseUnknown},
	} {
		v, err := c.Version(ctx, Ref{VersionID: bc.v})
		if err != nil || v.Base != bc.base {
			t.Errorf("version %d: base %v, %v; want %s", bc.v, v, err, bc.base)
		}
		if bc.base == lora.BaseUnknown && v.BaseNote == "" {
			t.Errorf("version %d: unknown base without a note", bc.v)
		}
	}
	ea, err := c.Version(ctx, Ref{VersionID: civitaitest.VersionEarly})
	if err != nil || !ea.EarlyAccess {
		t.Errorf("early access version: %+v, %v", ea, err)
	}
	// the API key travels only as a Bearer header to the API
	c2 := newClient(s, civitaitest.Token)
	s.ResetRequests()
	if _, err := c2.Version(ctx, Ref{VersionID: civitaitest.VersionT2V14B}); err != nil {
		t.Fatal(err)
	}
	for _, r := range s.Requests() {
		if r.Authorization != "Bearer "+civitaitest.Token || strings.Contains(r.RawQuery, "token") {
			t.Errorf("API request %s %s?%s: Authorization %q", r.Method, r.Path, r.RawQuery, r.Authorization)
		}
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestPrimarySafetensors(t *testing.T) {
	s := civitaitest.Catalog(t)
	c := newClient(s, "")
	ctx := context.Background()
	v, err := c.Version(ctx, Ref{VersionID: civitaitest.VersionPickle})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.PrimarySafetensors(v)
	wantErr(t, err, ErrUnsupported, "PickleTensor", "arbitrary code", ".safetensors")

	v, err = c.Version(ctx, Ref{VersionID: civitaitest.VersionMixed})
	if err != nil {
		t.Fatal(err)
	}
	f, err := c.PrimarySafetensors(v)
	if err != nil || f.ID != civitaitest.FileMixedST || f.Format != "SafeTensor" {
		t.Fatalf("mixed: %+v, %v", f, err)
	}
	if !strings.Contains(f.DownloadURL, "format=SafeTensor") {
		t.Errorf("a non-primary file's download URL selects it: %s", f.DownloadURL)
	}
	// pinned to the pickle file
	v.PinnedFileID = v.Files[0].ID
	_, err = c.PrimarySafetensors(v)
	wantErr(t, err, ErrUnsupported, "arbitrary code")

	v, err = c.Version(ctx, Ref{VersionID: civitaitest.VersionT2V14B})
	if err != nil {
		t.Fatal(err)
	}
	f, err = c.PrimarySafetensors(v)
	if err != nil || !f.Primary {
		t.Fatalf("primary: %+v, %v", f, err)
	}
	_, err = c.PrimarySafetensors(&Version{ID: 1, Files: []FileInfo{{Name: "data.zip", Type: "Training Data", Format: "Other"}}})
	wantErr(t, err, ErrNotFound)
}

func TestByHash(t *testing.T) {
	s := civitaitest.Catalog(t)
	c := newClient(s, "")
	ctx := context.Background()
	data := s.FileData(s.PrimaryFileID(civitaitest.VersionI2V720))
	h := sha(data)
	for _, q := range []string{h, strings.ToUpper(h), h[:10]} {
		v, err := c.ByHash(ctx, q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		if v.ID != civitaitest.VersionI2V720 || v.ModelID != civitaitest.ModelI2V720 || v.Base != lora.BaseI2V14B || v.ModelName != "Wan I2V Motion 720" {
			t.Errorf("%s: %+v", q, v)
		}
	}
	_, err := c.ByHash(ctx, strings.Repeat("ab", 32))
	wantErr(t, err, ErrNotFound, "not from CivitAI")
	for _, bad := range []string{"", "xyz", strings.Repeat("g", 64), h[:20], "../" + h[:61]} {
		_, err = c.ByHash(ctx, bad)
		wantErr(t, err, ErrBadRef)
	}
}

func TestSearch(t *testing.T) {
	s := civitaitest.Catalog(t)
	c := newClient(s, "")
	ctx := context.Background()
	names := func(rs []SearchResult) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.Name)
		}
		slices.Sort(out)
		return out
	}
	rs, err := c.Search(ctx, "anime", lora.BaseT2V14B, 10)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(rs); !slices.Equal(got, []string{"Wan Big Anime Style"}) {
		t.Errorf("14B search: %v", got)
	}
	r := rs[0]
	if r.ModelID != civitaitest.ModelT2V14B || r.VersionID != civitaitest.VersionT2V14B || r.Base != lora.BaseT2V14B ||
		r.BaseModel != "Wan Video 14B t2v" || r.SizeBytes <= 0 || r.Downloads != 9000 || !strings.Contains(r.URL, "modelVersionId=2002") {
		t.Errorf("result %+v", r)
	}
	// the request is what CivitAI expects
	var q string
	for _, rq := range s.Requests() {
		if rq.Path == "/api/v1/models" {
			q = rq.RawQuery
		}
	}
	for _, want := range []string{"types=LORA", "query=anime", "limit=10", "baseModels=Wan+Video+14B+t2v"} {
		if !strings.Contains(q, want) {
			t.Errorf("search query %q lacks %q", q, want)
		}
	}

	rs, err = c.Search(ctx, "anime", "", 10) // any Wan 2.1 base
	if err != nil {
		t.Fatal(err)
	}
	if got := names(rs); !slices.Equal(got, []string{"Wan Big Anime Style", "Wan Small Anime Style"}) {
		t.Errorf("Wan 2.1 search: %v", got)
	}
	rs, err = c.Search(ctx, "", lora.BaseI2V14B, 10)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(rs); !slices.Equal(got, []string{"Wan I2V Motion 480", "Wan I2V Motion 720"}) {
		t.Errorf("i2v search: %v", got)
	}
	rs, err = c.Search(ctx, "anime", "any", 10)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(rs); !slices.Equal(got, []string{"SDXL Anime Style", "Wan Big Anime Style", "Wan Small Anime Style", "Wan22 Anime Style"}) {
		t.Errorf("unfiltered search: %v", got)
	}
	for _, r := range rs {
		if r.Name == "Wan22 Anime Style" && r.Base != lora.BaseUnknown {
			t.Errorf("Wan 2.2 result mapped to %s", r.Base)
		}
	}
	rs, err = c.Search(ctx, "anime", "Wan Video 2.2 T2V-A14B", 10) // a raw CivitAI label
	if err != nil || len(rs) != 1 || rs[0].Name != "Wan22 Anime Style" {
		t.Errorf("label search: %+v, %v", rs, err)
	}
	rs, err = c.Search(ctx, "anime", "", 1)
	if err != nil || len(rs) != 1 {
		t.Errorf("limit 1: %+v, %v", rs, err)
	}
	rs, err = c.Search(ctx, "no such thing", "", 0)
	if err != nil || len(rs) != 0 {
		t.Errorf("no hits: %+v, %v", rs, err)
	}
}

func TestRetriesAndStorms(t *testing.T) {
	s := civitaitest.Catalog(t)
	c := newClient(s, "")
	ctx := context.Background()

	s.SetMode(civitaitest.Mode{RateLimitAPI: 3, RetryAfter: "0"})
	s.ResetRequests()
	if _, err := c.Version(ctx, Ref{VersionID: civitaitest.VersionT2V14B}); err != nil {
		t.Fatalf("after 3×429: %v", err)
	}
	if n := len(s.Requests()); n != 4 {
		t.Errorf("%d requests, want 4", n)
	}
	s.SetMode(civitaitest.Mode{ServerErrorAPI: 2})
	if _, err := c.Search(ctx, "anime", "", 5); err != nil {
		t.Fatalf("after 2×503: %v", err)
	}

	// a storm that does not end: bounded attempts, a clear error
	s.SetMode(civitaitest.Mode{RateLimitAPI: 1000})
	s.ResetRequests()
	_, err := c.Version(ctx, Ref{VersionID: civitaitest.VersionT2V14B})
	wantErr(t, err, ErrRetry, "429", "wait a few minutes", "gave up after 4 attempts")
	if n := len(s.Requests()); n != 4 {
		t.Errorf("%d requests, want 4 (bounded)", n)
	}
	s.SetMode(civitaitest.Mode{ServerErrorAPI: 1000})
	_, err = c.ByHash(ctx, strings.Repeat("ab", 32))
	wantErr(t, err, ErrRetry, "503", "try again later")

	// cancellation stops the backoff
	s.SetMode(civitaitest.Mode{RateLimitAPI: 1000})
	slow := newClient(s, "")
	slow.backoffMin, slow.backoffMax, slow.maxAttempts = time.Hour, time.Hour, 5
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = slow.Version(cctx, Ref{VersionID: civitaitest.VersionT2V14B})
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Errorf("cancel during backoff: %v after %s", err, time.Since(start))
	}
	s.SetMode(civitaitest.Mode{})
}

func TestBackoffBounds(t *testing.T) {
	waits := func(c *Client, retryAfter string) []time.Duration {
		p := c.policy()
		var ws []time.Duration
		p.Notify = func(r httpx.Retry) { ws = append(ws, r.Wait) }
		_, err := httpx.Do(context.Background(), p, func(int) (struct{}, error) {
			return struct{}{}, &retryErr{err: errors.New("busy"), retryAfter: retryAfter}
		})
		if !errors.As(err, new(*httpx.GaveUpError)) {
			t.Fatalf("want the attempts spent, got %v", err)
		}
		return ws
	}
	c := &Client{backoffMin: 10 * time.Millisecond, backoffMax: 40 * time.Millisecond, maxAttempts: 8}
	for i, d := range waits(c, "") {
		if d < 5*time.Millisecond || d > 40*time.Millisecond {
			t.Errorf("retry %d waited %s", i+1, d)
		}
	}
	// Retry-After replaces the wait but is capped at twice the maximum backoff
	c = &Client{backoffMin: time.Millisecond, backoffMax: 20 * time.Millisecond, maxAttempts: 2}
	if ws := waits(c, "3600"); len(ws) != 1 || ws[0] != 40*time.Millisecond {
		t.Errorf("Retry-After 3600 waited %v, want 40ms", ws)
	}
}

func TestTLSIsVerified(t *testing.T) {
	s := civitaitest.Catalog(t)
	c := newClient(s, civitaitest.Token)
	c.HTTP = &http.Client{} // does not trust the fake's certificate
	s.ResetRequests()
	_, err := c.Version(context.Background(), Ref{VersionID: civitaitest.VersionT2V14B})
	wantErr(t, err, ErrUnsafe, "TLS certificate")
	if n := len(s.Requests()); n != 0 {
		t.Errorf("%d requests reached the server", n)
	}
	// a plain-HTTP server behind an https base URL
	plain := httptest.NewServer(http.NotFoundHandler())
	defer plain.Close()
	c = &Client{BaseURL: strings.Replace(plain.URL, "http://", "https://", 1), backoffMin: time.Millisecond, backoffMax: time.Millisecond}
	_, err = c.Version(context.Background(), Ref{VersionID: 1})
	checkErr(t, err)
	if err == nil || errors.Is(err, ErrRetry) {
		t.Errorf("TLS to a plain server: %v", err)
	}
}

func TestBaseURLChecks(t *testing.T) {
	for _, b := range []string{"ftp://civitai.com", "https://user:pw@civitai.com", "https://civitai.com/?token=x", "civitai.com", "https://"} {
		c := &Client{BaseURL: b}
		_, err := c.Version(context.Background(), Ref{VersionID: 1})
		wantErr(t, err, ErrBadRef, "CIVITAI_API_URL")
	}
	c := &Client{}
	if b, err := c.base(); err != nil || b.String() != DefaultBaseURL {
		t.Errorf("default base: %v, %v", b, err)
	}
}

// TestProgressNeverShowsKey runs a download with JSON progress and checks the output.
func TestProgressNeverShowsKey(t *testing.T) {
	s := civitaitest.Catalog(t)
	c := newClient(s, civitaitest.Token)
	var buf bytes.Buffer
	c.Progress = progress.Reporter{Mode: progress.JSON, W: &buf}
	v, err := c.Version(context.Background(), Ref{VersionID: civitaitest.VersionT2V14B})
	if err != nil {
		t.Fatal(err)
	}
	f, _ := c.PrimarySafetensors(v)
	if _, err := c.Download(context.Background(), f, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if !strings.Contains(out, `"event":"done"`) {
		t.Errorf("progress output: %s", out)
	}
	for _, f := range forbidden {
		if strings.Contains(out, f) {
			t.Errorf("progress output leaks %q", f)
		}
	}
}

func TestDecodeVersionSanitizes(t *testing.T) {
	raw := `{"id":5,"modelId":6,"name":"v1\u001b[31m\nbad","baseModel":"Wan Video 14B t2v","model":{"name":"Evil\r\nName","type":"LORA"},
	"trainedWords":["ok","\u0007bell"],"files":[{"id":1,"name":"x.safetensors","sizeKB":-5,"type":"Model","primary":true,
	"metadata":{"format":"SafeTensor"},"hashes":{"sha256":"ABCDEF"},"downloadUrl":"https://civitai.com/api/download/models/5"}]}`
	v, err := decodeVersion([]byte(raw), "https://civitai.com", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range append([]string{v.Name, v.ModelName}, v.TrainedWords...) {
		if strings.ContainsAny(s, "\x1b\n\r\x07") {
			t.Errorf("control characters kept: %q", s)
		}
	}
	if v.Files[0].SHA256 != "" || v.Files[0].SizeKB != 0 {
		t.Errorf("bad hash or size kept: %+v", v.Files[0])
	}
	for _, bad := range []string{`{}`, `{"id":5}`, `{"id":-1,"modelId":2}`, `[]`, `null`, `{"id":"5","modelId":1}`} {
		if _, err := decodeVersion([]byte(bad), "https://civitai.com", time.Now()); !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: %v", bad, err)
		}
	}
}

func TestErrorsAreOneLineAndClean(t *testing.T) {
	// a hostile CivitAI that echoes the key in its error messages
	s := civitaitest.Catalog(t)
	s.SetMode(civitaitest.Mode{EchoKey: true})
	dir := t.TempDir()
	for _, tok := range []string{canary, civitaitest.Token, ""} {
		c := newClient(s, tok)
		for _, vid := range []int64{civitaitest.VersionAuth, civitaitest.VersionEarly, civitaitest.VersionDisabled} {
			v, err := c.Version(context.Background(), Ref{VersionID: vid})
			if err != nil {
				t.Fatal(err)
			}
			f, _ := c.PrimarySafetensors(v)
			_, err = c.Download(context.Background(), f, dir)
			if err == nil && !(vid == civitaitest.VersionAuth && tok == civitaitest.Token) {
				t.Errorf("version %d with key %v: no error", vid, tok != "")
			}
			checkErr(t, err)
			if err != nil && tok != "" && vid != civitaitest.VersionEarly && !strings.Contains(err.Error(), "[redacted]") {
				t.Errorf("the echoed key should show as [redacted]: %v", err)
			}
		}
	}
}
