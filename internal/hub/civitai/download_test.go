package civitai

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/httpx"
	"github.com/daydreamlive/scopectl/internal/hub/civitai/civitaitest"
	"github.com/daydreamlive/scopectl/internal/lora"
	"github.com/daydreamlive/scopectl/internal/lora/loratest"
	"github.com/daydreamlive/scopectl/internal/secret"
)

// fileOf resolves a version's SafeTensor file through the public API.
func fileOf(t *testing.T, c *Client, vid int64) FileInfo {
	t.Helper()
	v, err := c.Version(context.Background(), Ref{VersionID: vid})
	if err != nil {
		t.Fatal(err)
	}
	f, err := c.PrimarySafetensors(v)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// listDir returns the names in dir, sorted.
func listDir(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

// sandbox returns parent/dl: the download goes to dl, and parent must stay otherwise empty.
func sandbox(t *testing.T) (parent, dir string) {
	parent = t.TempDir()
	return parent, filepath.Join(parent, "dl")
}

func checkSandbox(t *testing.T, parent string, wantInDir ...string) {
	t.Helper()
	if got := listDir(t, parent); len(got) > 1 || len(got) == 1 && got[0] != "dl" {
		t.Errorf("something was written outside the target directory: %v", got)
	}
	if _, err := os.Stat(filepath.Join(parent, "dl")); err != nil {
		if len(wantInDir) > 0 {
			t.Errorf("target directory missing: %v", err)
		}
		return
	}
	got := listDir(t, filepath.Join(parent, "dl"))
	slices.Sort(wantInDir)
	if !slices.Equal(got, wantInDir) && !(len(got) == 0 && len(wantInDir) == 0) {
		t.Errorf("target directory holds %v, want %v", got, wantInDir)
	}
}

func TestDownload(t *testing.T) {
	s := civitaitest.Catalog(t)
	c := newClient(s, civitaitest.Token)
	f := fileOf(t, c, civitaitest.VersionT2V14B)
	parent, dir := sandbox(t)
	s.ResetRequests()
	p, err := c.Download(context.Background(), f, dir)
	if err != nil {
		t.Fatal(err)
	}
	if p != filepath.Join(dir, f.Name) {
		t.Errorf("path %s, want %s", p, filepath.Join(dir, f.Name))
	}
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, s.FileData(f.ID)) {
		t.Fatal("content differs")
	}
	checkSandbox(t, parent, f.Name)
	// the file is a real LoRA for the right base
	rep, err := lora.Inspect(p, lora.InspectOptions{})
	if err != nil {
		t.Fatalf("downloaded LoRA does not parse: %v", err)
	}
	if rep.Base != lora.BaseT2V14B {
		t.Errorf("downloaded LoRA detected as %s (%s)", rep.Base, rep.BaseReason)
	}

	var api, cdn int
	for _, r := range s.Requests() {
		switch r.Server {
		case "cdn":
			cdn++
			if r.Authorization != "" || r.Cookie != "" || strings.Contains(r.RawQuery, "token=") {
				t.Errorf("the CDN received credentials: %+v", r)
			}
			if r.Range == "" || r.Status != http.StatusPartialContent {
				t.Errorf("CDN request without a range: %+v", r)
			}
		case "api":
			if strings.HasPrefix(r.Path, "/api/download/") {
				api++
				if r.Authorization != "Bearer "+civitaitest.Token {
					t.Errorf("download endpoint got Authorization %q", r.Authorization)
				}
			}
		}
	}
	chunks := (len(got) + 8<<10 - 1) / (8 << 10)
	if api != 1 || cdn != chunks {
		t.Errorf("%d download-endpoint and %d CDN requests, want 1 and %d", api, cdn, chunks)
	}

	// again: the same content is already there, nothing is downloaded but the probe
	s.ResetRequests()
	p2, err := c.Download(context.Background(), f, dir)
	if err != nil || p2 != p {
		t.Fatalf("second download: %s, %v", p2, err)
	}
	if n := len(s.CDNRequests()); n > 1 {
		t.Errorf("second download made %d CDN requests", n)
	}
	checkSandbox(t, parent, f.Name)

	// other content under that name is never overwritten
	if err := os.WriteFile(p, []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = c.Download(context.Background(), f, dir)
	wantErr(t, err, ErrExists, "move it away")
	if b, _ := os.ReadFile(p); string(b) != "mine" {
		t.Error("existing file was overwritten")
	}
}

func TestDownloadWithoutKeyAndAnonymousCDN(t *testing.T) {
	s := civitaitest.Catalog(t)
	c := newClient(s, "")
	f := fileOf(t, c, civitaitest.VersionI2V480)
	c.Connections = 1
	p, err := c.Download(context.Background(), f, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); !bytes.Equal(b, s.FileData(f.ID)) {
		t.Fatal("content differs")
	}
	for _, r := range s.Requests() {
		if r.Authorization != "" {
			t.Errorf("Authorization sent without a key: %+v", r)
		}
	}
}

func TestDownloadNonPrimarySafeTensor(t *testing.T) {
	s := civitaitest.Catalog(t)
	c := newClient(s, civitaitest.Token)
	f := fileOf(t, c, civitaitest.VersionMixed)
	p, err := c.Download(context.Background(), f, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(p) != "mixed.safetensors" {
		t.Errorf("path %s", p)
	}
	if b, _ := os.ReadFile(p); !bytes.Equal(b, s.FileData(civitaitest.FileMixedST)) {
		t.Fatal("content differs")
	}
}

// bigLoRA adds a model whose file spans many chunks.
func bigLoRA(t *testing.T, s *civitaitest.Server, fs civitaitest.FileSpec) (civitaitest.ModelSpec, []byte) {
	if fs.Data == nil {
		fs.Data = civitaitest.LoRA(t, loratest.Spec{Base: lora.BaseT2V1_3B, Blocks: []int{0, 1, 2}, Seed: 7}) // ~1.1 MB
	}
	m := s.AddModel(civitaitest.ModelSpec{Name: "Big", Versions: []civitaitest.VersionSpec{{BaseModel: "Wan Video 1.3B t2v", Files: []civitaitest.FileSpec{fs}}}})
	return m, fs.Data
}

func TestResumeAfterCancel(t *testing.T) {
	s := civitaitest.New(t)
	m, data := bigLoRA(t, s, civitaitest.FileSpec{Name: "big.safetensors"})
	c := newClient(s, civitaitest.Token)
	c.Connections = 1
	c.chunkSize = 64 << 10
	nchunks := (len(data) + 64<<10 - 1) / (64 << 10)
	if nchunks < 8 {
		t.Fatalf("test file too small: %d chunks", nchunks)
	}
	f := fileOf(t, c, m.Versions[0].ID)
	parent, dir := sandbox(t)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.SetMode(civitaitest.Mode{BeforeCDN: func(n int, r *http.Request) {
		if n == 6 { // chunks 0-4 are done
			cancel()
		}
	}})
	_, err := c.Download(ctx, f, dir)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "resume") {
		t.Fatalf("interrupted download: %v", err)
	}
	checkErr(t, err)
	checkSandbox(t, parent, "big.safetensors"+IncompleteSuffix, "big.safetensors"+PartsSuffix)
	parts, _ := os.ReadFile(filepath.Join(dir, "big.safetensors"+PartsSuffix))
	// header + chunks 0-4; the chunk in flight when the cancel landed may have finished too.
	done := strings.Count(string(parts), "\n") - 1
	if done < 5 || done > 6 {
		t.Errorf("sidecar holds %d chunks:\n%s", done, parts)
	}

	// damage chunk 2 on disk: the resume must notice and fetch it again
	inc, err := os.OpenFile(filepath.Join(dir, "big.safetensors"+IncompleteSuffix), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := inc.WriteAt([]byte("XXXX"), 2*64<<10+100); err != nil {
		t.Fatal(err)
	}
	inc.Close()

	s.SetMode(civitaitest.Mode{})
	s.ResetRequests()
	c.Connections = 3
	p, err := c.Download(context.Background(), f, dir)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); !bytes.Equal(b, data) {
		t.Fatal("resumed content differs")
	}
	checkSandbox(t, parent, "big.safetensors")
	var starts []int64
	var fetched int64
	for _, r := range s.CDNRequests() {
		var a, b int64
		if _, err := fmt.Sscanf(r.Range, "bytes=%d-%d", &a, &b); err != nil {
			t.Fatalf("range %q", r.Range)
		}
		starts = append(starts, a/(64<<10))
		fetched += b - a + 1
	}
	slices.Sort(starts)
	// A range retried after a slow moment on a busy machine is fine; what matters is
	// which chunks were fetched at all.
	starts = slices.Compact(starts)
	// The probe (chunk 0, discarded), the damaged chunk 2, and the chunks not on record
	// are fetched. Chunk 5, in flight when the cancel landed, may be on record and still
	// fetched again: the resume re-checks recorded chunks on disk, and a chunk cut short
	// by the cancel fails that check. Chunks 0-4 (but 0 and 2) never are.
	wantFrom := func(first int) []int64 {
		w := []int64{0, 2}
		for i := first; i < nchunks; i++ {
			w = append(w, int64(i))
		}
		return w
	}
	if !slices.Equal(starts, wantFrom(done)) && !slices.Equal(starts, wantFrom(5)) {
		t.Errorf("resume fetched chunks %v, want %v", starts, wantFrom(done))
	}
}

func TestResumeIgnoresForeignSidecar(t *testing.T) {
	s := civitaitest.New(t)
	m, data := bigLoRA(t, s, civitaitest.FileSpec{Name: "big.safetensors"})
	c := newClient(s, "")
	c.chunkSize = 64 << 10
	f := fileOf(t, c, m.Versions[0].ID)
	dir := t.TempDir()
	// leftovers of another file under the same name
	junk := bytes.Repeat([]byte{0xAA}, len(data))
	os.WriteFile(filepath.Join(dir, "big.safetensors"+IncompleteSuffix), junk, 0o644)
	os.WriteFile(filepath.Join(dir, "big.safetensors"+PartsSuffix), []byte(partsMagic+" "+strings.Repeat("0", 64)+" "+strconv.Itoa(len(data))+" 65536\n0 "+sha(junk[:65536])+"\n"), 0o644)
	p, err := c.Download(context.Background(), f, dir)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); !bytes.Equal(b, data) {
		t.Fatal("content differs")
	}
	if got := listDir(t, dir); !slices.Equal(got, []string{"big.safetensors"}) {
		t.Errorf("dir holds %v", got)
	}
}

func TestDownloadBusy(t *testing.T) {
	s := civitaitest.Catalog(t)
	c := newClient(s, "")
	f := fileOf(t, c, civitaitest.VersionT2V14B)
	dir := t.TempDir()
	h, err := os.OpenFile(filepath.Join(dir, f.Name+IncompleteSuffix), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := lockFile(h); err != nil {
		t.Skip("no file locking here")
	}
	_, err = c.Download(context.Background(), f, dir)
	wantErr(t, err, ErrBusy, "another scopectl")
}

func TestHostileDownloads(t *testing.T) {
	other := strings.Repeat("ab", 32)
	cases := []struct {
		name     string
		file     civitaitest.FileSpec
		mode     civitaitest.Mode
		sentinel error
		msg      []string
		leftover bool // .incomplete/.parts may stay for a resume
	}{
		{name: "wrong sha256", file: civitaitest.FileSpec{PublishedSHA256: other}, sentinel: ErrIntegrity, msg: []string{"SHA256", other, "discarded"}},
		{name: "truncated file", file: civitaitest.FileSpec{Truncate: 100}, sentinel: ErrIntegrity, msg: []string{"SHA256"}},
		{name: "not safetensors", file: civitaitest.FileSpec{Data: bytes.Repeat([]byte("garbage!"), 2000)}, sentinel: ErrUnsupported, msg: []string{"not a valid safetensors"}},
		{name: "connection always cut at one offset", mode: civitaitest.Mode{CutAt: 20000}, sentinel: ErrRetry, msg: []string{"closed the connection early", "resume"}, leftover: true},
		{name: "stall storm", mode: civitaitest.Mode{StallCDN: 1000}, sentinel: ErrRetry, msg: []string{"stalled"}, leftover: true},
		{name: "429 storm on the CDN", mode: civitaitest.Mode{RateLimitCDN: 1000}, sentinel: ErrRetry, msg: []string{"429"}},
		{name: "429 storm on the API", mode: civitaitest.Mode{RateLimitAPI: 1000}, sentinel: ErrRetry, msg: []string{"429"}},
		{name: "expired links", mode: civitaitest.Mode{LinkTTL: -time.Minute}, sentinel: ErrForbidden, msg: []string{"signed links"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := civitaitest.New(t)
			fs := tc.file
			fs.Name = "victim.safetensors"
			m, _ := bigLoRA(t, s, fs)
			c := newClient(s, civitaitest.Token)
			c.chunkSize = 64 << 10
			f := fileOf(t, c, m.Versions[0].ID)
			s.SetMode(tc.mode)
			parent, dir := sandbox(t)
			_, err := c.Download(context.Background(), f, dir)
			wantErr(t, err, tc.sentinel, tc.msg...)
			if _, err := os.Stat(filepath.Join(dir, "victim.safetensors")); err == nil {
				t.Error("a final file exists after a failed download")
			}
			if !tc.leftover {
				checkSandbox(t, parent)
			}
			for _, r := range s.CDNRequests() {
				if r.Authorization != "" {
					t.Errorf("CDN got Authorization")
				}
			}
			if tc.leftover {
				// the transfer resumes once the server behaves
				s.SetMode(civitaitest.Mode{})
				p, err := c.Download(context.Background(), f, dir)
				if err != nil {
					t.Fatalf("resume: %v", err)
				}
				if b, _ := os.ReadFile(p); !bytes.Equal(b, s.FileData(f.ID)) {
					t.Fatal("resumed content differs")
				}
				checkSandbox(t, parent, "victim.safetensors")
			}
		})
	}
}

func TestTraversalNames(t *testing.T) {
	for _, disp := range []string{
		`attachment; filename="../../evil.safetensors"`,
		`attachment; filename="../evil.safetensors"`,
		`attachment; filename="/tmp/evil.safetensors"`,
		`attachment; filename="..\\..\\evil.safetensors"`,
		`attachment; filename*=UTF-8''..%2F..%2Fevil.safetensors`,
		`attachment; filename=../../evil.safetensors`,
		`attachment; filename="evil.sh"`,
		`attachment; filename="evil.safetensors.exe"`,
		`attachment; filename="C:\\Windows\\evil.safetensors"`,
		`attachment; filename*=UTF-8''evil%0A.safetensors`,
		`attachment; filename*=UTF-8''evil%E2%80%AEsrotnesfas.safetensors`,
		`attachment; filename=""`,
	} {
		t.Run(disp, func(t *testing.T) {
			s := civitaitest.New(t)
			m, _ := bigLoRA(t, s, civitaitest.FileSpec{Name: "ok.safetensors", RawDisposition: disp})
			c := newClient(s, civitaitest.Token)
			f := fileOf(t, c, m.Versions[0].ID)
			parent, dir := sandbox(t)
			_, err := c.Download(context.Background(), f, dir)
			wantErr(t, err, ErrUnsafe)
			checkSandbox(t, parent)
		})
	}
	// a harmless directory prefix is stripped, and the Content-Disposition name wins
	s := civitaitest.New(t)
	m, data := bigLoRA(t, s, civitaitest.FileSpec{Name: "api-name.safetensors", Disposition: "loras/cdn-name.safetensors"})
	c := newClient(s, "")
	f := fileOf(t, c, m.Versions[0].ID)
	parent, dir := sandbox(t)
	p, err := c.Download(context.Background(), f, dir)
	if err != nil || p != filepath.Join(dir, "cdn-name.safetensors") {
		t.Fatalf("%s, %v", p, err)
	}
	if b, _ := os.ReadFile(p); !bytes.Equal(b, data) {
		t.Fatal("content differs")
	}
	checkSandbox(t, parent, "cdn-name.safetensors")
}

func TestResilientDownloads(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode civitaitest.Mode
	}{
		{"429s on the CDN", civitaitest.Mode{RateLimitCDN: 3}},
		{"429s on the API", civitaitest.Mode{RateLimitAPI: 3}},
		{"503s on the API", civitaitest.Mode{ServerErrorAPI: 3}},
		{"a few stalls", civitaitest.Mode{StallCDN: 3, StallAfter: 1000}},
		{"connections cut every 3000 bytes", civitaitest.Mode{CutEvery: 3000}},
		{"no Range support", civitaitest.Mode{NoRanges: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := civitaitest.New(t)
			m, data := bigLoRA(t, s, civitaitest.FileSpec{Name: "ok.safetensors"})
			c := newClient(s, civitaitest.Token)
			c.chunkSize = 32 << 10
			f := fileOf(t, c, m.Versions[0].ID)
			s.SetMode(tc.mode)
			parent, dir := sandbox(t)
			start := time.Now()
			p, err := c.Download(context.Background(), f, dir)
			if err != nil {
				t.Fatal(err)
			}
			if b, _ := os.ReadFile(p); !bytes.Equal(b, data) {
				t.Fatal("content differs")
			}
			checkSandbox(t, parent, "ok.safetensors")
			if d := time.Since(start); d > 20*time.Second {
				t.Errorf("took %s", d)
			}
		})
	}
}

func TestExpiredLinkIsRenewed(t *testing.T) {
	s := civitaitest.New(t)
	m, data := bigLoRA(t, s, civitaitest.FileSpec{Name: "ok.safetensors"})
	c := newClient(s, civitaitest.Token)
	f := fileOf(t, c, m.Versions[0].ID)
	s.SetMode(civitaitest.Mode{LinkTTL: -time.Minute, BeforeCDN: func(n int, r *http.Request) {
		if n == 1 {
			s.SetMode(civitaitest.Mode{}) // links signed from now on are valid
		}
	}})
	s.ResetRequests()
	p, err := c.Download(context.Background(), f, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); !bytes.Equal(b, data) {
		t.Fatal("content differs")
	}
	n := 0
	for _, r := range s.Requests() {
		if strings.HasPrefix(r.Path, "/api/download/") {
			n++
		}
	}
	if n != 2 {
		t.Errorf("%d download-endpoint requests, want 2 (one renewal)", n)
	}
}

func TestDownloadRefusals(t *testing.T) {
	s := civitaitest.Catalog(t)
	ctx := context.Background()
	anon := newClient(s, "")
	keyed := newClient(s, civitaitest.Token)
	supporter := newClient(s, civitaitest.SupporterToken)
	invalid := newClient(s, canary)

	check := func(c *Client, vid int64, sentinel error, msg ...string) {
		t.Helper()
		parent, dir := sandbox(t)
		_, err := c.Download(ctx, fileOf(t, c, vid), dir)
		wantErr(t, err, sentinel, msg...)
		checkSandbox(t, parent)
	}
	check(anon, civitaitest.VersionAuth, ErrAuth, "CIVITAI_API_KEY", "401", "logged in")
	check(invalid, civitaitest.VersionAuth, ErrAuth, "refused the API key", "invalid or revoked")
	check(anon, civitaitest.VersionEarly, ErrEarlyAccess, "early access", "/model-versions/2009", "CIVITAI_API_KEY")
	check(keyed, civitaitest.VersionEarly, ErrEarlyAccess, "early access", "unlock it at")
	check(anon, civitaitest.VersionArchived, ErrGone, "410")
	check(keyed, civitaitest.VersionDisabled, ErrForbidden, "disabled downloads")
	for _, c := range []*Client{keyed, supporter} {
		if _, err := c.Download(ctx, fileOf(t, c, civitaitest.VersionAuth), t.TempDir()); err != nil {
			t.Errorf("login-only version with a key: %v", err)
		}
	}
	if _, err := supporter.Download(ctx, fileOf(t, supporter, civitaitest.VersionEarly), t.TempDir()); err != nil {
		t.Errorf("early access with an unlocking account: %v", err)
	}

	// what a browser gets: redirects to the login and version pages
	s.SetMode(civitaitest.Mode{LoginRedirects: true})
	check(anon, civitaitest.VersionAuth, ErrAuth, "CIVITAI_API_KEY")
	check(anon, civitaitest.VersionEarly, ErrEarlyAccess)
	s.SetMode(civitaitest.Mode{})

	// files scopectl refuses before any request
	good := fileOf(t, anon, civitaitest.VersionT2V14B)
	for _, tc := range []struct {
		mut      func(*FileInfo)
		sentinel error
	}{
		{func(f *FileInfo) { f.SHA256 = "" }, ErrIntegrity},
		{func(f *FileInfo) { f.Format = "PickleTensor" }, ErrUnsupported},
		{func(f *FileInfo) { f.Name = "x.ckpt"; f.Format = "" }, ErrUnsupported},
		{func(f *FileInfo) { f.DownloadURL = "" }, ErrUnsafe},
		{func(f *FileInfo) { f.DownloadURL = "https://civitai.com/api/v1/models/1" }, ErrUnsafe},
		{func(f *FileInfo) { f.DownloadURL = "https://civitai.com/api/download/models/2002/../../x" }, ErrUnsafe},
	} {
		f := good
		tc.mut(&f)
		s.ResetRequests()
		parent, dir := sandbox(t)
		_, err := keyed.Download(ctx, f, dir)
		wantErr(t, err, tc.sentinel)
		checkSandbox(t, parent)
		if n := len(s.Requests()); n != 0 {
			t.Errorf("%+v: %d requests made", f, n)
		}
	}
	// a download URL on another host is rebuilt on CivitAI's origin: the key goes nowhere else
	f := good
	f.DownloadURL = "https://evil.example.com/api/download/models/2002?token=stolen&type=Model"
	s.ResetRequests()
	if _, err := keyed.Download(ctx, f, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	for _, r := range s.Requests() {
		if strings.Contains(r.RawQuery, "stolen") {
			t.Errorf("query from the answer was forwarded: %+v", r)
		}
	}
}

// TestRedirectPolicy checks the download endpoint's redirects with a hand-made CivitAI.
func TestRedirectPolicy(t *testing.T) {
	var target atomic.Value
	var sawAuth atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/api/download/") {
			http.Redirect(w, r, target.Load().(string), http.StatusTemporaryRedirect)
			return
		}
		if r.Header.Get("Authorization") != "" {
			sawAuth.Add(1)
		}
		w.WriteHeader(http.StatusTeapot)
	}))
	defer srv.Close()
	c := &Client{BaseURL: srv.URL, Token: secret.New(canary), HTTP: srv.Client(), backoffMin: time.Millisecond, backoffMax: time.Millisecond, maxAttempts: 2}
	f := FileInfo{Name: "x.safetensors", Format: "SafeTensor", SHA256: strings.Repeat("0", 64), DownloadURL: srv.URL + "/api/download/models/1"}
	for _, tc := range []struct {
		loc      string
		sentinel error
	}{
		{"http://127.0.0.1:1/file?X-Amz-Signature=secret", ErrUnsafe},                               // downgrade to http
		{"https://other.example.com/api/download/models/1", ErrUnsafe},                              // CivitAI on another domain
		{"https://user:pw@cdn.example.com/file", ErrUnsafe},                                         // user info
		{"/login?reason=download-auth&returnUrl=%2Fmodels%2F1", ErrAuth},                            // browser login
		{"/pricing?reason=early-access", ErrEarlyAccess},                                            // browser early access
		{"/some/page", ErrProtocol},                                                                 // some page
		{"/api/download/models/1", ErrProtocol},                                                     // a loop
		{"javascript:alert(1)", ErrUnsafe},                                                          // not a URL we fetch
		{"https://127.0.0.1:1/signed?X-Amz-Signature=secret&token=" + canary, httpx.ErrUnreachable}, // unreachable CDN: no retry
	} {
		target.Store(tc.loc)
		parent, dir := sandbox(t)
		_, err := c.Download(context.Background(), f, dir)
		wantErr(t, err, tc.sentinel)
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: error shows the signed query: %v", tc.loc, err)
		}
		checkSandbox(t, parent)
	}
	if sawAuth.Load() != 0 {
		t.Error("Authorization was sent to a page outside the download endpoint")
	}
}

func TestParseContentRange(t *testing.T) {
	for _, tc := range []struct {
		in      string
		s, e, n int64
		ok      bool
	}{
		{"bytes 0-9/100", 0, 9, 100, true},
		{"bytes 90-99/100", 90, 99, 100, true},
		{"bytes 0-9/*", 0, 9, -1, true},
		{"bytes 0-100/100", 0, 0, 0, false},
		{"bytes 9-0/100", 0, 0, 0, false},
		{"bytes -1-9/100", 0, 0, 0, false},
		{"bytes */100", 0, 0, 0, false},
		{"items 0-9/100", 0, 0, 0, false},
		{"", 0, 0, 0, false},
	} {
		s, e, n, ok := parseContentRange(tc.in)
		if ok != tc.ok || ok && (s != tc.s || e != tc.e || n != tc.n) {
			t.Errorf("%q: %d %d %d %v", tc.in, s, e, n, ok)
		}
	}
}
