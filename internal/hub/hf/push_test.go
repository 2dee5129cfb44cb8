package hf

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/daydreamlive/scopectl/internal/hub/hf/hftest"
	"github.com/daydreamlive/scopectl/internal/lora"
	"github.com/daydreamlive/scopectl/internal/secret"
)

type pushFixture struct {
	srv  *hftest.Server
	dir  string
	lora []byte // LargeSpec LoRA (~1.1 MiB)
	path string // its local file
}

func newPushFixture(t *testing.T) *pushFixture {
	t.Helper()
	srv := hftest.Start(t, hftest.Options{})
	srv.AddWriteToken(canary, "daydream")
	data, err := hftest.LoRA(hftest.LargeSpec)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "my_lora.safetensors")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	// the presigned storage host must never see the token
	srv.StorageHook(func(r *http.Request) {
		if a := r.Header.Get("Authorization"); a != "" {
			t.Errorf("storage received Authorization %q", a)
		}
	})
	noAuthAtCDN(t, srv)
	return &pushFixture{srv: srv, dir: dir, lora: data, path: p}
}

func (fx *pushFixture) client() *Client {
	return &Client{
		Endpoint: fx.srv.URL(), Token: secret.New(canary),
		Connections: 4, ChunkSize: 64 << 10,
		RetryWait: time.Millisecond, StallTimeout: 2 * time.Second,
	}
}

// pullBack pulls path of repo with the existing client and returns its bytes.
func pullBack(t *testing.T, c *Client, ref Ref, path string) []byte {
	t.Helper()
	ref.Paths = []string{path}
	files, err := c.Pull(context.Background(), t.TempDir(), ref, PullOptions{})
	if err != nil {
		t.Fatalf("pull %s: %v", path, err)
	}
	if len(files) != 1 {
		t.Fatalf("pull %s: %d files", path, len(files))
	}
	data, err := os.ReadFile(files[0].CachePath)
	if err != nil {
		t.Fatal(err)
	}
	if files[0].SHA256 != "" && files[0].SHA256 != hftest.SHA256(data) {
		t.Fatalf("pull %s: sha256 %s does not match the bytes", path, files[0].SHA256)
	}
	return data
}

func fileOf(res *PushResult, path string) PushedFile {
	for _, f := range res.Files {
		if f.Path == path {
			return f
		}
	}
	return PushedFile{}
}

func TestPushRoundTrip(t *testing.T) {
	fx := newPushFixture(t)
	c := fx.client()
	ctx := context.Background()
	card := ModelCard(ModelCardInfo{Name: "My LoRA", Base: lora.BaseT2V1_3B, Rank: 4, Alpha: 4, Targets: []string{"self_attn.q"}, TriggerWords: []string{"sks style"}, SHA256: hftest.SHA256(fx.lora)})
	up := []Upload{{Path: "my_lora.safetensors", Local: fx.path}}
	res, err := c.Push(ctx, "daydream/new-lora", up, PushOptions{Create: true, ModelCard: card, Message: "first"})
	if err != nil {
		t.Fatal(err)
	}
	files, head, ok := fx.srv.Files("model", "daydream/new-lora", "main")
	if !ok || res.Commit != head || !res.Created || res.Repo != "daydream/new-lora" || res.URL != fx.srv.URL()+"/daydream/new-lora" {
		t.Fatalf("result %+v, head %s", res, head)
	}
	if len(res.Files) != 2 {
		t.Fatalf("files %+v", res.Files)
	}
	lf := fileOf(res, "my_lora.safetensors")
	if !lf.LFS || !lf.Uploaded || lf.Unchanged || lf.Size != int64(len(fx.lora)) || lf.SHA256 != hftest.SHA256(fx.lora) {
		t.Errorf("lora %+v", lf)
	}
	rf := fileOf(res, "README.md")
	if rf.LFS || rf.Uploaded || rf.SHA256 != hftest.SHA256(card) {
		t.Errorf("readme %+v", rf)
	}
	var names []string
	for _, f := range files {
		names = append(names, fmt.Sprintf("%s:%v", f.Path, f.LFS))
	}
	if got := strings.Join(names, " "); got != ".gitattributes:false README.md:false my_lora.safetensors:true" {
		t.Errorf("commit files %s", got)
	}
	if fx.srv.StorageAuthSeen() != 0 || fx.srv.StorageBytes() != int64(len(fx.lora)) {
		t.Errorf("storage: auth %d, bytes %d", fx.srv.StorageAuthSeen(), fx.srv.StorageBytes())
	}
	if n := fx.srv.Count("verify"); n != 1 {
		t.Errorf("%d verify calls", n)
	}

	// pull it back with the download client: same bytes, same sha256
	ref := Ref{Repo: "daydream/new-lora"}
	if got := pullBack(t, c, ref, "my_lora.safetensors"); !bytes.Equal(got, fx.lora) {
		t.Errorf("pulled LoRA differs")
	}
	if got := pullBack(t, c, ref, "README.md"); !bytes.Equal(got, card) {
		t.Errorf("pulled README differs")
	}

	// the same push again: nothing uploaded, no commit
	fx.srv.ResetCounts()
	before := fx.srv.StorageBytes()
	again, err := c.Push(ctx, "daydream/new-lora", up, PushOptions{Create: true, ModelCard: card})
	if err != nil {
		t.Fatal(err)
	}
	if again.Commit != head || again.Created {
		t.Errorf("second push %+v (head %s)", again, head)
	}
	for _, f := range again.Files {
		if f.Uploaded || !f.Unchanged {
			t.Errorf("second push: %+v", f)
		}
	}
	if fx.srv.StorageBytes() != before || fx.srv.Count("commit")+fx.srv.Count("batch")+fx.srv.Count("storage") != 0 {
		t.Errorf("second push: %d bytes, %d commits, %d batches", fx.srv.StorageBytes()-before, fx.srv.Count("commit"), fx.srv.Count("batch"))
	}

	// the same bytes under another path: the Hub has the object, so no LFS bytes move
	res3, err := c.Push(ctx, "hf://daydream/new-lora", []Upload{{Path: "v2/lora.safetensors", Local: fx.path}}, PushOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if f := res3.Files[0]; f.Uploaded || f.Unchanged || !f.LFS || res3.Commit == head {
		t.Errorf("third push %+v", res3)
	}
	if fx.srv.StorageBytes() != before || fx.srv.Count("batch") != 1 || fx.srv.Count("commit") != 1 {
		t.Errorf("third push: %d bytes, %d batches", fx.srv.StorageBytes()-before, fx.srv.Count("batch"))
	}
	if got := pullBack(t, c, ref, "v2/lora.safetensors"); !bytes.Equal(got, fx.lora) {
		t.Errorf("pulled v2 LoRA differs")
	}
	if fx.srv.CDNAuthSeen() != 0 {
		t.Errorf("CDN saw Authorization")
	}
}

func TestPushDatasetAndBranch(t *testing.T) {
	fx := newPushFixture(t)
	c := fx.client()
	ctx := context.Background()
	if _, err := c.Push(ctx, "hf://datasets/daydream/clips", []Upload{{Path: "a/lora.safetensors", Local: fx.path}}, PushOptions{Create: true}); err != nil {
		t.Fatal(err)
	}
	if !fx.srv.RepoExists("dataset", "daydream/clips") || fx.srv.RepoExists("model", "daydream/clips") {
		t.Fatal("dataset not created as a dataset")
	}
	if got := pullBack(t, c, Ref{Repo: "daydream/clips", RepoType: "dataset"}, "a/lora.safetensors"); !bytes.Equal(got, fx.lora) {
		t.Errorf("dataset LoRA differs")
	}
	// a branch that does not exist: one-line not-found error
	_, err := c.Push(ctx, "daydream/clips", []Upload{{Path: "x.safetensors", Local: fx.path}}, PushOptions{Revision: "dev"})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("model repo does not exist: %v", err)
	}
	fx.srv.AddRevision("dataset", "daydream/clips", "dev", nil)
	res, err := c.Push(ctx, "hf://datasets/daydream/clips", []Upload{{Path: "x.safetensors", Local: fx.path}}, PushOptions{Revision: "dev"})
	if err != nil {
		t.Fatal(err)
	}
	if _, head, _ := fx.srv.Files("dataset", "daydream/clips", "dev"); head != res.Commit || !strings.HasSuffix(res.URL, "/datasets/daydream/clips/tree/dev") {
		t.Errorf("%+v", res)
	}
	_, err = c.Push(ctx, "hf://datasets/daydream/clips", []Upload{{Path: "x.safetensors", Local: fx.path}}, PushOptions{Revision: "nope"})
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), `branch "nope"`) {
		t.Errorf("missing branch: %v", err)
	}
}

func TestPushPrivateCreate(t *testing.T) {
	fx := newPushFixture(t)
	c := fx.client()
	ctx := context.Background()
	res, err := c.Push(ctx, "daydream/secret-lora", []Upload{{Path: "l.safetensors", Local: fx.path}}, PushOptions{Create: true, Private: true})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Created || !fx.srv.IsPrivate("model", "daydream/secret-lora") {
		t.Fatalf("not created private: %+v", res)
	}
	anon := &Client{Endpoint: fx.srv.URL(), RetryWait: time.Millisecond}
	if _, err := anon.Pull(ctx, t.TempDir(), Ref{Repo: "daydream/secret-lora"}, PullOptions{}); err == nil {
		t.Errorf("anonymous pull of a private repo worked")
	}
	if got := pullBack(t, c, Ref{Repo: "daydream/secret-lora"}, "l.safetensors"); !bytes.Equal(got, fx.lora) {
		t.Errorf("pulled private LoRA differs")
	}
	// public create: the flag is not sent, the repo is public
	if _, err := c.Push(ctx, "daydream/open-lora", []Upload{{Path: "l.safetensors", Local: fx.path}}, PushOptions{Create: true}); err != nil {
		t.Fatal(err)
	}
	if fx.srv.IsPrivate("model", "daydream/open-lora") {
		t.Errorf("public repo created private")
	}
}

func TestPushAuthErrors(t *testing.T) {
	fx := newPushFixture(t)
	srv := fx.srv
	srv.AddRepo(hftest.Repo{ID: "daydream/existing", Files: []hftest.File{{Path: ".gitattributes", Data: []byte(hftest.GitAttributes)}}})
	srv.AddRepo(hftest.Repo{ID: "other/theirs"})
	const readOnly = "hf_CanaryTokenNeverPrintMe_readonly77"
	const bogus = "hf_CanaryTokenNeverPrintMe_invalid99"
	const repoScoped = "hf_CanaryTokenNeverPrintMe_scoped123"
	srv.AddToken(readOnly, true)
	srv.AddWriteToken(repoScoped, "daydream/existing")
	up := []Upload{{Path: "l.safetensors", Local: fx.path}}
	cases := []struct {
		name, repo, token string
		create, echo      bool
		want              error
		text              string
	}{
		{"no token", "daydream/existing", "", false, false, ErrAuth, "needs a token with write access"},
		{"bogus token", "daydream/existing", bogus, false, false, ErrAuth, "token was refused (401)"},
		{"bogus token echoed", "daydream/existing", bogus, true, true, ErrAuth, "401"},
		{"read-only token", "daydream/existing", readOnly, false, false, ErrForbidden, "cannot write to daydream/existing (403"},
		{"read-only token echoed", "daydream/existing", readOnly, false, true, ErrForbidden, "403"},
		{"read-only create", "daydream/new", readOnly, true, false, ErrForbidden, "403"},
		{"other namespace", "other/theirs", canary, false, false, ErrForbidden, "write"},
		{"create in other namespace", "other/mine", canary, true, false, ErrForbidden, "create"},
		{"missing repo", "daydream/nothing", canary, false, false, ErrNotFound, "create it first"},
		{"repo-scoped token cannot create", "daydream/brand-new", repoScoped, true, false, ErrForbidden, "403"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv.EchoAuth(tc.echo)
			defer srv.EchoAuth(false)
			c := &Client{Endpoint: srv.URL(), Token: secret.New(tc.token), RetryWait: time.Millisecond}
			_, err := c.Push(context.Background(), tc.repo, up, PushOptions{Create: tc.create})
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			msg := err.Error()
			t.Log(msg)
			if !strings.Contains(msg, tc.text) || strings.ContainsAny(msg, "\n\r") {
				t.Errorf("message %q", msg)
			}
			checkNoCanary(t, err)
			for _, tok := range []string{bogus, readOnly, repoScoped} {
				if strings.Contains(msg, tok) {
					t.Errorf("token in %q", msg)
				}
			}
		})
	}
	if srv.Count("storage") != 0 {
		t.Errorf("refused pushes reached the storage host %d times", srv.Count("storage"))
	}
	// a token that may write the repo but not create in its namespace: create's 403 is
	// fine once the repo turns out to exist (huggingface_hub's exist_ok)
	c := &Client{Endpoint: srv.URL(), Token: secret.New(repoScoped), RetryWait: time.Millisecond}
	res, err := c.Push(context.Background(), "daydream/existing", up, PushOptions{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Created {
		t.Errorf("claimed to create an existing repo")
	}
}

func TestPushMultipart(t *testing.T) {
	fx := newPushFixture(t)
	const chunk = 64 << 10
	fx.srv.SetUploadChunkSize(chunk)
	c := fx.client()
	res, err := c.Push(context.Background(), "daydream/parts", []Upload{{Path: "big.safetensors", Local: fx.path}}, PushOptions{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	parts := (len(fx.lora) + chunk - 1) / chunk
	if parts < 3 {
		t.Fatalf("test LoRA too small for multipart: %d parts", parts)
	}
	if n := fx.srv.Count("storage"); n != parts {
		t.Errorf("%d storage PUTs for %d parts", n, parts)
	}
	if fx.srv.Count("complete") != 1 || fx.srv.Count("verify") != 1 || !res.Files[0].Uploaded {
		t.Errorf("complete %d, verify %d, %+v", fx.srv.Count("complete"), fx.srv.Count("verify"), res.Files[0])
	}
	if fx.srv.StorageAuthSeen() != 0 {
		t.Errorf("storage saw Authorization")
	}
	if got := pullBack(t, c, Ref{Repo: "daydream/parts"}, "big.safetensors"); !bytes.Equal(got, fx.lora) {
		t.Errorf("pulled multipart LoRA differs")
	}
}

func TestPushRetriesAndInterruptions(t *testing.T) {
	fx := newPushFixture(t)
	const chunk = 128 << 10
	fx.srv.SetUploadChunkSize(chunk)
	c := fx.client()
	ctx := context.Background()
	parts := (len(fx.lora) + chunk - 1) / chunk

	// dropped connections, 500s and 429s on the way are retried
	fx.srv.InterruptUploads(2)
	fx.srv.FailUploads(1)
	fx.srv.RateLimit(3)
	if _, err := c.Push(ctx, "daydream/flaky", []Upload{{Path: "l.safetensors", Local: fx.path}}, PushOptions{Create: true}); err != nil {
		t.Fatal(err)
	}
	if n := fx.srv.Count("storage"); n < parts+3 {
		t.Errorf("%d storage requests for %d parts and 3 faults", n, parts)
	}
	if got := pullBack(t, c, Ref{Repo: "daydream/flaky"}, "l.safetensors"); !bytes.Equal(got, fx.lora) {
		t.Errorf("pulled LoRA differs")
	}

	// a push cancelled in the middle of the parts, then run again
	other := append([]byte(nil), fx.lora...)
	other[len(other)-1] ^= 0xff // another object, so that it must be uploaded again
	p2 := filepath.Join(fx.dir, "other.safetensors")
	if err := os.WriteFile(p2, other, 0o644); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	var seen atomic.Int32
	fx.srv.StorageHook(func(r *http.Request) {
		if seen.Add(1) == 3 {
			cancel()
		}
	})
	_, err := c.Push(cctx, "daydream/flaky", []Upload{{Path: "other.safetensors", Local: p2}}, PushOptions{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled push: %v", err)
	}
	if _, _, ok := fx.srv.Files("model", "daydream/flaky", "main"); !ok {
		t.Fatal("repo gone")
	}
	if files, _, _ := fx.srv.Files("model", "daydream/flaky", "main"); len(files) != 2 {
		t.Errorf("the cancelled push committed: %d files", len(files))
	}
	fx.srv.StorageHook(nil)
	res, err := c.Push(ctx, "daydream/flaky", []Upload{{Path: "other.safetensors", Local: p2}}, PushOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Files[0].Uploaded {
		t.Errorf("retried push did not upload: %+v", res.Files[0])
	}
	if got := pullBack(t, c, Ref{Repo: "daydream/flaky"}, "other.safetensors"); !bytes.Equal(got, other) {
		t.Errorf("pulled retried LoRA differs")
	}
}

func TestPushManyFilesChunksPreupload(t *testing.T) {
	fx := newPushFixture(t)
	c := fx.client()
	var up []Upload
	for i := range 300 {
		p := filepath.Join(fx.dir, fmt.Sprintf("n%03d.txt", i))
		if err := os.WriteFile(p, fmt.Appendf(nil, "note %d\n", i), 0o644); err != nil {
			t.Fatal(err)
		}
		up = append(up, Upload{Path: fmt.Sprintf("notes/n%03d.txt", i), Local: p})
	}
	up = append(up, Upload{Path: "empty.txt", Local: filepath.Join(fx.dir, "empty")})
	if err := os.WriteFile(filepath.Join(fx.dir, "empty"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := c.Push(context.Background(), "daydream/notes", up, PushOptions{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	if fx.srv.Count("preupload") != 2 || fx.srv.Count("commit") != 1 || fx.srv.Count("batch") != 0 {
		t.Errorf("preupload %d, commit %d, batch %d", fx.srv.Count("preupload"), fx.srv.Count("commit"), fx.srv.Count("batch"))
	}
	if len(res.Files) != 301 {
		t.Fatalf("%d files", len(res.Files))
	}
	files, _, _ := fx.srv.Files("model", "daydream/notes", "main")
	if len(files) != 302 {
		t.Errorf("%d files in the commit", len(files))
	}
	if got := pullBack(t, c, Ref{Repo: "daydream/notes"}, "notes/n299.txt"); string(got) != "note 299\n" {
		t.Errorf("pulled %q", got)
	}
	if got := pullBack(t, c, Ref{Repo: "daydream/notes"}, "empty.txt"); len(got) != 0 {
		t.Errorf("pulled %q", got)
	}
}

func TestPushFileChangedMidway(t *testing.T) {
	fx := newPushFixture(t)
	c := fx.client()
	fx.srv.StorageHook(func(r *http.Request) {
		os.WriteFile(fx.path, append(append([]byte(nil), fx.lora...), "more"...), 0o644)
	})
	_, err := c.Push(context.Background(), "daydream/changing", []Upload{{Path: "l.safetensors", Local: fx.path}}, PushOptions{Create: true})
	if err == nil {
		t.Fatal("a file that changed during the push was committed")
	}
	t.Log(err)
	if !errors.Is(err, errChanged) && !strings.Contains(err.Error(), "sha256") {
		t.Errorf("error %v", err)
	}
	if files, _, _ := fx.srv.Files("model", "daydream/changing", "main"); len(files) != 1 {
		t.Errorf("commit made: %d files", len(files))
	}
}

func TestPushInputErrors(t *testing.T) {
	fx := newPushFixture(t)
	c := fx.client()
	ctx := context.Background()
	for _, tc := range []struct {
		repo string
		up   []Upload
		opt  PushOptions
		text string
	}{
		{"daydream/x", nil, PushOptions{}, "nothing to push"},
		{"daydream/x/file.safetensors", []Upload{{Path: "a", Local: fx.path}}, PushOptions{}, "names a path"},
		{"not a repo", []Upload{{Path: "a", Local: fx.path}}, PushOptions{}, "no ORG/NAME"},
		{"daydream/x", []Upload{{Path: "../a", Local: fx.path}}, PushOptions{}, "unsafe"},
		{"daydream/x", []Upload{{Path: ".git/config", Local: fx.path}}, PushOptions{}, ".git"},
		{"daydream/x", []Upload{{Path: "a", Local: fx.path}, {Path: "a", Local: fx.path}}, PushOptions{}, "twice"},
		{"daydream/x", []Upload{{Path: "README.md", Local: fx.path}}, PushOptions{ModelCard: []byte("# x")}, "twice"},
		{"daydream/x", []Upload{{Path: "a", Local: fx.dir}}, PushOptions{}, "not a regular file"},
		{"daydream/x", []Upload{{Path: "a", Local: filepath.Join(fx.dir, "missing")}}, PushOptions{}, "no such file"},
		{"daydream/x", []Upload{{Path: "a", Local: fx.path}}, PushOptions{Revision: strings.Repeat("a", 40)}, "name a branch"},
	} {
		_, err := c.Push(ctx, tc.repo, tc.up, tc.opt)
		if err == nil || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("%s %v: %v, want %q", tc.repo, tc.up, err, tc.text)
		}
	}
	if n := fx.srv.Count("create") + fx.srv.Count("preupload"); n != 0 {
		t.Errorf("bad input reached the Hub %d times", n)
	}
}

// TestPushHostileHub: upload URLs the client must refuse, and garbage answers.
func TestPushHostileHub(t *testing.T) {
	data := []byte("\x00binary")
	dir := t.TempDir()
	p := filepath.Join(dir, "w.safetensors")
	os.WriteFile(p, data, 0o644)
	oid := hftest.SHA256(data)
	var storageAuth atomic.Int32
	storage := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			storageAuth.Add(1)
		}
	}))
	defer storage.Close()
	for _, tc := range []struct {
		name, batch string
		want        error
	}{
		{"verify on another host gets no token", `{"objects":[{"oid":"` + oid + `","size":7,"actions":{"upload":{"href":"` + storage.URL + `/put"},"verify":{"href":"` + storage.URL + `/verify"}}}]}`, nil},
		{"http upload on another host", `{"objects":[{"oid":"` + oid + `","size":7,"actions":{"upload":{"href":"http://example.com/put"}}}]}`, ErrUnsafe},
		{"credentials in the URL", `{"objects":[{"oid":"` + oid + `","size":7,"actions":{"upload":{"href":"https://u:p@example.com/put"}}}]}`, ErrUnsafe},
		{"wrong size", `{"objects":[{"oid":"` + oid + `","size":8}]}`, ErrUnsafe},
		{"unknown object", `{"objects":[{"oid":"` + strings.Repeat("a", 64) + `","size":7}]}`, ErrUnsafe},
		{"missing object", `{"objects":[]}`, ErrUnsafe},
		{"part count", `{"objects":[{"oid":"` + oid + `","size":7,"actions":{"upload":{"href":"` + storage.URL + `/c","header":{"chunk_size":"2","1":"` + storage.URL + `/1"}}}}]}`, ErrUnsafe},
		{"xet only", `{"transfer":"xet","objects":[]}`, nil},
		{"object error", `{"objects":[{"oid":"` + oid + `","size":7,"error":{"code":422,"message":"no ` + canary + `"}}]}`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch {
				case strings.HasSuffix(r.URL.Path, "/preupload/main"):
					fmt.Fprint(w, `{"files":[{"path":"w.safetensors","uploadMode":"lfs","shouldIgnore":false}]}`)
				case strings.HasSuffix(r.URL.Path, "/info/lfs/objects/batch"):
					w.Header().Set("Content-Type", lfsJSON)
					fmt.Fprint(w, tc.batch)
				case strings.HasSuffix(r.URL.Path, "/commit/main"):
					fmt.Fprintf(w, `{"commitOid":"%s","commitUrl":"x"}`, strings.Repeat("c", 40))
				default:
					t.Errorf("unexpected %s %s", r.Method, r.URL.Path)
					w.WriteHeader(http.StatusTeapot)
				}
			}))
			defer hub.Close()
			c := &Client{Endpoint: hub.URL, Token: secret.New(canary), RetryWait: time.Millisecond}
			_, err := c.Push(context.Background(), "o/r", []Upload{{Path: "w.safetensors", Local: p}}, PushOptions{})
			if strings.HasPrefix(tc.name, "verify") {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			t.Log(err)
			checkNoCanary(t, err)
		})
	}
	if storageAuth.Load() != 0 {
		t.Errorf("storage saw Authorization")
	}
}

func TestModelCard(t *testing.T) {
	for base := range wanBases {
		switch base {
		case lora.BaseT2V14B, lora.BaseT2V1_3B, lora.BaseI2V14B:
		default:
			t.Errorf("base %q is not one of internal/lora's", base)
		}
	}
	card := ModelCard(ModelCardInfo{
		Name: "Neon | *city* `noir`", Base: lora.BaseI2V14B, Rank: 16, Alpha: 8,
		Targets: []string{"self_attn.q", "ffn.0"}, TriggerWords: []string{"n30n", "night: city"},
		TrainingConfig: "steps: 2000\nlr: 1e-4\n```", SHA256: strings.Repeat("ab", 32),
	})
	s := string(card)
	front, body, ok := strings.Cut(strings.TrimPrefix(s, "---\n"), "\n---\n")
	if !strings.HasPrefix(s, "---\n") || !ok {
		t.Fatalf("no front matter:\n%s", s)
	}
	var meta struct {
		BaseModel      string   `yaml:"base_model"`
		Relation       string   `yaml:"base_model_relation"`
		Library        string   `yaml:"library_name"`
		Pipeline       string   `yaml:"pipeline_tag"`
		Tags           []string `yaml:"tags"`
		InstancePrompt string   `yaml:"instance_prompt"`
	}
	if err := yaml.Unmarshal([]byte(front), &meta); err != nil {
		t.Fatalf("front matter: %v\n%s", err, front)
	}
	if meta.BaseModel != "Wan-AI/Wan2.1-I2V-14B-480P" || meta.Relation != "adapter" || meta.Library != "diffusers" || meta.Pipeline != "image-to-video" || meta.InstancePrompt != "n30n, night: city" {
		t.Errorf("meta %+v", meta)
	}
	if strings.Join(meta.Tags, ",") != "lora,wan,wan2.1,image-to-video,scopectl" {
		t.Errorf("tags %v", meta.Tags)
	}
	for _, want := range []string{"# Neon \\| \\*city\\* \\`noir\\`", "| Rank | 16 |", "| Alpha | 8 (scale alpha/rank = 0.5) |", "`ffn.0`, `self_attn.q`", "`n30n`", "````\nsteps: 2000\nlr: 1e-4\n```\n````", "`" + strings.Repeat("ab", 32) + "`"} {
		if !strings.Contains(body, want) {
			t.Errorf("card lacks %q:\n%s", want, s)
		}
	}
	// unknown base, explicit repo; nothing else
	min := string(ModelCard(ModelCardInfo{BaseRepo: "someone/base-model"}))
	if !strings.Contains(min, "base_model: someone/base-model\n") || !strings.Contains(min, "- lora\n- wan\n") || strings.Contains(min, "## Details\n\n| | |\n|---|---|\n| Rank") {
		t.Errorf("minimal card:\n%s", min)
	}
	// a bogus repo id is not written into YAML
	if s := string(ModelCard(ModelCardInfo{BaseRepo: "x\nevil: 1"})); strings.Contains(s, "evil") {
		t.Errorf("bad base repo leaked:\n%s", s)
	}
}

func TestPushDedupesAndUploadsInParallel(t *testing.T) {
	fx := newPushFixture(t)
	c := fx.client()
	small, err := hftest.LoRA(hftest.SmallSpec)
	if err != nil {
		t.Fatal(err)
	}
	ps := filepath.Join(fx.dir, "small.safetensors")
	if err := os.WriteFile(ps, small, 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := c.Push(context.Background(), "daydream/pair", []Upload{
		{Path: "a.safetensors", Local: fx.path},
		{Path: "b/same_as_a.safetensors", Local: fx.path},
		{Path: "small.safetensors", Local: ps},
	}, PushOptions{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(res.Files[0].Uploaded, res.Files[1].Uploaded, res.Files[2].Uploaded); got != "true false true" {
		t.Errorf("uploaded flags %s", got)
	}
	if n := fx.srv.StorageBytes(); n != int64(len(fx.lora)+len(small)) {
		t.Errorf("storage received %d bytes, want %d", n, len(fx.lora)+len(small))
	}
	for path, want := range map[string][]byte{"a.safetensors": fx.lora, "b/same_as_a.safetensors": fx.lora, "small.safetensors": small} {
		if got := pullBack(t, c, Ref{Repo: "daydream/pair"}, path); !bytes.Equal(got, want) {
			t.Errorf("%s differs", path)
		}
	}
}

// discardHub is a minimal Hub whose storage hashes uploads and keeps nothing, so that the
// process's allocations are the client's.
type discardHub struct {
	hub, storage *httptest.Server
	chunk        int64
	got          atomic.Int64
	sum          atomic.Value // sha256 of the basic upload
}

func newDiscardHub(t *testing.T, chunk int64) *discardHub {
	d := &discardHub{chunk: chunk}
	d.storage = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, _ := io.Copy(h, r.Body)
		d.got.Add(n)
		if r.URL.Path == "/whole" {
			d.sum.Store(hex.EncodeToString(h.Sum(nil)))
		}
		w.Header().Set("ETag", `"e"`)
	}))
	d.hub = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.Contains(r.URL.Path, "/preupload/"):
			fmt.Fprint(w, `{"files":[{"path":"big.safetensors","uploadMode":"lfs","shouldIgnore":false}]}`)
		case strings.HasSuffix(r.URL.Path, "/objects/batch"):
			var req struct {
				Objects []struct {
					OID  string `json:"oid"`
					Size int64  `json:"size"`
				} `json:"objects"`
			}
			json.NewDecoder(r.Body).Decode(&req)
			o := req.Objects[0]
			up := map[string]any{"href": d.storage.URL + "/whole"}
			if d.chunk > 0 {
				hdr := map[string]any{"chunk_size": strconv.FormatInt(d.chunk, 10)}
				for i := int64(1); (i-1)*d.chunk < o.Size; i++ {
					hdr[strconv.FormatInt(i, 10)] = d.storage.URL + "/part"
				}
				up = map[string]any{"href": d.hub.URL + "/complete", "header": hdr}
			}
			json.NewEncoder(w).Encode(map[string]any{"objects": []any{map[string]any{"oid": o.OID, "size": o.Size, "actions": map[string]any{"upload": up}}}})
		case r.URL.Path == "/complete":
		case strings.Contains(r.URL.Path, "/commit/"):
			io.Copy(io.Discard, r.Body)
			fmt.Fprintf(w, `{"commitOid":"%s","commitUrl":"x"}`, strings.Repeat("c", 40))
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	t.Cleanup(func() { d.hub.Close(); d.storage.Close() })
	return d
}

// TestPushStreamsFromDisk: pushing a 96 MiB file (one PUT, then in 8 MiB parts) allocates
// a small fraction of its size.
func TestPushStreamsFromDisk(t *testing.T) {
	if testing.Short() {
		t.Skip("96 MiB file")
	}
	const size = 96 << 20
	p := filepath.Join(t.TempDir(), "big.safetensors")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	seed := make([]byte, 1<<20)
	for i := range seed {
		seed[i] = byte(i*7 + i>>9)
	}
	h := sha256.New()
	for range size / len(seed) {
		f.Write(seed)
		h.Write(seed)
	}
	f.Close()
	want := hex.EncodeToString(h.Sum(nil))
	for _, chunk := range []int64{0, 8 << 20} {
		d := newDiscardHub(t, chunk)
		c := &Client{Endpoint: d.hub.URL, Token: secret.New(canary), RetryWait: time.Millisecond}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		res, err := c.Push(context.Background(), "o/big", []Upload{{Path: "big.safetensors", Local: p}}, PushOptions{})
		runtime.ReadMemStats(&after)
		if err != nil {
			t.Fatal(err)
		}
		if d.got.Load() != size || res.Files[0].SHA256 != want || chunk == 0 && d.sum.Load() != want {
			t.Fatalf("chunk %d: storage got %d bytes, sha256 %v / %s", chunk, d.got.Load(), d.sum.Load(), res.Files[0].SHA256)
		}
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > size/8 {
			t.Errorf("chunk %d: pushing %d MiB allocated %d MiB", chunk, size>>20, alloc>>20)
		} else {
			t.Logf("chunk %d: pushing %d MiB allocated %.1f MiB", chunk, size>>20, float64(alloc)/(1<<20))
		}
	}
}

// TestPushCommitRetryPolicy: a commit is retried after a 429 (not applied), never after a
// 5xx or a lost answer (it may have been applied).
func TestPushCommitRetryPolicy(t *testing.T) {
	p := filepath.Join(t.TempDir(), "notes.txt")
	os.WriteFile(p, []byte("hello\n"), 0o644)
	for _, tc := range []struct {
		status   int
		ok       bool
		attempts int32
	}{{http.StatusTooManyRequests, true, 2}, {http.StatusInternalServerError, false, 1}, {http.StatusBadGateway, false, 1}} {
		var commits, preuploads atomic.Int32
		hub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch {
			case strings.HasSuffix(r.URL.Path, "/preupload/main"):
				if preuploads.Add(1) == 1 {
					w.WriteHeader(http.StatusServiceUnavailable) // idempotent: retried
					return
				}
				fmt.Fprint(w, `{"files":[{"path":"notes.txt","uploadMode":"regular","shouldIgnore":false}]}`)
			case strings.HasSuffix(r.URL.Path, "/commit/main"):
				body, _ := io.ReadAll(r.Body)
				if r.Header.Get("Content-Type") != "application/x-ndjson" || !strings.Contains(string(body), `{"key":"file","value":{"content":"aGVsbG8K","path":"notes.txt","encoding":"base64"}}`) {
					t.Errorf("commit body %q", body)
				}
				if commits.Add(1) == 1 {
					w.Header().Set("Retry-After", "0")
					w.WriteHeader(tc.status)
					return
				}
				fmt.Fprintf(w, `{"commitOid":"%s","commitUrl":"x"}`, strings.Repeat("d", 40))
			default:
				w.WriteHeader(http.StatusNotFound)
			}
		}))
		c := &Client{Endpoint: hub.URL, Token: secret.New(canary), RetryWait: time.Millisecond}
		res, err := c.Push(context.Background(), "o/r", []Upload{{Path: "notes.txt", Local: p}}, PushOptions{})
		hub.Close()
		if tc.ok != (err == nil) || commits.Load() != tc.attempts || preuploads.Load() != 2 {
			t.Errorf("%d: err %v, %d commits, %d preuploads", tc.status, err, commits.Load(), preuploads.Load())
			continue
		}
		if tc.ok && res.Commit != strings.Repeat("d", 40) {
			t.Errorf("commit %s", res.Commit)
		}
		if !tc.ok && !strings.Contains(err.Error(), "may or may not have been made") {
			t.Errorf("%d: %v", tc.status, err)
		}
	}
}

// TestPushServerMessages: the Hub's explanation comes from X-Error-Message, else the JSON
// body, else an S3 error code; never the token, never a presigned URL's query.
func TestPushServerMessages(t *testing.T) {
	p := filepath.Join(t.TempDir(), "w.safetensors")
	os.WriteFile(p, []byte("\x00weights"), 0o644)
	oid := hftest.SHA256([]byte("\x00weights"))
	storage := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, `<?xml version="1.0"?><Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>`)
	}))
	defer storage.Close()
	for _, tc := range []struct{ name, preupload, want string }{
		{"json error", `{"error":"Bad request: ` + canary + ` is not allowed here"}`, "Bad request: [redacted] is not allowed here"},
		{"json message", `{"message":"ref main is locked"}`, "ref main is locked"},
		{"s3 code", "", "upload server " + strings.TrimPrefix(storage.URL, "http://") + " answered 403 Forbidden: AccessDenied"},
	} {
		hub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch {
			case strings.HasSuffix(r.URL.Path, "/preupload/main") && tc.preupload != "":
				w.WriteHeader(http.StatusBadRequest)
				fmt.Fprint(w, tc.preupload)
			case strings.HasSuffix(r.URL.Path, "/preupload/main"):
				fmt.Fprint(w, `{"files":[{"path":"w.safetensors","uploadMode":"lfs","shouldIgnore":false}]}`)
			case strings.HasSuffix(r.URL.Path, "/objects/batch"):
				fmt.Fprint(w, `{"objects":[{"oid":"`+oid+`","size":8,"actions":{"upload":{"href":"`+storage.URL+`/put?X-Amz-Signature=SECRETSIG"}}}]}`)
			default:
				w.WriteHeader(http.StatusNotFound)
			}
		}))
		c := &Client{Endpoint: hub.URL, Token: secret.New(canary), RetryWait: time.Millisecond}
		_, err := c.Push(context.Background(), "o/r", []Upload{{Path: "w.safetensors", Local: p}}, PushOptions{})
		hub.Close()
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "SECRETSIG") {
			t.Errorf("%s: %v", tc.name, err)
		}
		checkNoCanary(t, err)
	}
}

// TestFakeHubChecksUploads speaks to hftest directly: the checks the push tests rely on.
func TestFakeHubChecksUploads(t *testing.T) {
	srv := hftest.Start(t, hftest.Options{})
	srv.AddWriteToken(canary)
	srv.AddRepo(hftest.Repo{ID: "o/r"})
	srv.SetUploadChunkSize(4)
	hc := srv.Client()
	call := func(method, u string, auth bool, ctype, body string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(method, u, strings.NewReader(body))
		if auth {
			req.Header.Set("Authorization", "Bearer "+canary)
		}
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
			req.Header.Set("Accept", ctype)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}
	batch := func(data string, transfers string) map[string]any {
		_, b := call("POST", srv.URL()+"/o/r.git/info/lfs/objects/batch", true, lfsJSON,
			fmt.Sprintf(`{"operation":"upload","transfers":[%s],"objects":[{"oid":"%s","size":%d}],"hash_algo":"sha256"}`, transfers, hftest.SHA256([]byte(data)), len(data)))
		var a struct{ Objects []map[string]any }
		json.Unmarshal([]byte(b), &a)
		return a.Objects[0]["actions"].(map[string]any)
	}
	// basic: wrong bytes fail verify; a token at the storage host is refused
	act := batch("right", `"basic"`)
	href := act["upload"].(map[string]any)["href"].(string)
	if resp, _ := call("PUT", href, true, "", "right"); resp.StatusCode != http.StatusBadRequest || srv.StorageAuthSeen() != 1 {
		t.Errorf("storage accepted Authorization: %d", resp.StatusCode)
	}
	if resp, _ := call("PUT", href+"x", false, "", "right"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("bad signature: %d", resp.StatusCode)
	}
	if resp, _ := call("PUT", href, false, "", "wrong"); resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT %d", resp.StatusCode)
	}
	verify := act["verify"].(map[string]any)["href"].(string)
	if resp, _ := call("POST", verify, true, "application/json", fmt.Sprintf(`{"oid":"%s","size":5}`, hftest.SHA256([]byte("right")))); resp.StatusCode != http.StatusUnprocessableEntity {
		t.Errorf("verify of wrong content: %d", resp.StatusCode)
	}
	commit := fmt.Sprintf("{\"key\":\"header\",\"value\":{\"summary\":\"x\"}}\n{\"key\":\"lfsFile\",\"value\":{\"path\":\"a.bin\",\"algo\":\"sha256\",\"oid\":\"%s\",\"size\":5}}\n", hftest.SHA256([]byte("right")))
	if resp, b := call("POST", srv.URL()+"/api/models/o/r/commit/main", true, "application/x-ndjson", commit); resp.StatusCode != http.StatusBadRequest || !strings.Contains(b, "does not exist") {
		t.Errorf("commit of an unverified object: %d %s", resp.StatusCode, b)
	}
	// multipart: a wrong ETag or a missing part is refused at completion
	act = batch("0123456789", `"basic","multipart"`)
	up := act["upload"].(map[string]any)
	hdr := up["header"].(map[string]any)
	if hdr["chunk_size"] != "4" || hdr["00003"] == nil || hdr["00004"] != nil {
		t.Fatalf("multipart header %v", hdr)
	}
	var etags []string
	for i, part := range []string{"0123", "4567", "89"} {
		resp, _ := call("PUT", hdr[fmt.Sprintf("%05d", i+1)].(string), false, "", part)
		etags = append(etags, resp.Header.Get("ETag"))
	}
	oid := hftest.SHA256([]byte("0123456789"))
	complete := func(e3 string, n int) int {
		parts := []string{}
		for i := 0; i < n; i++ {
			e := etags[i]
			if i == 2 {
				e = e3
			}
			parts = append(parts, fmt.Sprintf(`{"partNumber":%d,"etag":%q}`, i+1, e))
		}
		resp, _ := call("POST", up["href"].(string), false, lfsJSON, fmt.Sprintf(`{"oid":%q,"parts":[%s]}`, oid, strings.Join(parts, ",")))
		return resp.StatusCode
	}
	if complete(`"bogus"`, 3) != http.StatusBadRequest || complete(etags[2], 2) != http.StatusBadRequest || complete(etags[2], 3) != http.StatusOK {
		t.Errorf("completion checks")
	}
	if resp, _ := call("POST", act["verify"].(map[string]any)["href"].(string), true, "application/json", fmt.Sprintf(`{"oid":%q,"size":10}`, oid)); resp.StatusCode != http.StatusOK {
		t.Errorf("verify of the assembled object: %d", resp.StatusCode)
	}
	// writes need a write token
	srv.AddToken("hf_reader_only_0123456789", false)
	req, _ := http.NewRequest("POST", srv.URL()+"/api/models/o/r/preupload/main", strings.NewReader(`{"files":[]}`))
	req.Header.Set("Authorization", "Bearer hf_reader_only_0123456789")
	if resp, err := hc.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("read token may write: %v %v", resp, err)
	}
}
