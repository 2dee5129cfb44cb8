package s3

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/remote/remotetest"
)

var ctx = context.Background()

func TestConformance(t *testing.T) {
	servers := map[*testing.T]*fakeS3{}
	remotetest.Run(t, func(t *testing.T) remote.Remote {
		f := newFakeS3(t)
		servers[t] = f
		return f.open(t, nil)
	}, remotetest.Options{
		Resumes: true,
		BigSize: 12<<20 + 4321, // three 5 MiB parts, the last one short: the cut at 2/3 falls in part 2
		Peek: func(t *testing.T) []string {
			var out []string
			for _, k := range servers[t].keys(t) {
				out = append(out, strings.TrimPrefix(k, testPrefix))
			}
			return out
		},
	})
}

// failAfter is a source that dies at a byte offset, like a sender killed mid-upload.
type failAfter struct {
	r     io.ReaderAt
	limit int64
}

func (f failAfter) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > f.limit {
		return 0, errors.New("injected read failure")
	}
	return f.r.ReadAt(p, off)
}

func get(t *testing.T, r remote.Remote, name string, off int64) []byte {
	t.Helper()
	rc, err := r.Get(ctx, name, off)
	if err != nil {
		t.Fatalf("Get %s@%d: %v", name, off, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func partNumbers(rs []req) []int {
	var out []int
	for _, r := range rs {
		out = append(out, r.Part)
	}
	slices.Sort(out)
	return out
}

// interrupt runs a Put of b that fails reading at byte cut and checks that nothing got
// published.
func interrupt(t *testing.T, r *S3, name string, b []byte, sha string, cut int64) {
	t.Helper()
	_, err := r.Put(ctx, name, remote.Source{R: failAfter{bytes.NewReader(b), cut}, Size: int64(len(b)), SHA256: sha}, remote.PutOptions{})
	if err == nil || !strings.Contains(err.Error(), "injected read failure") {
		t.Fatalf("interrupted Put: %v", err)
	}
	if es, err := r.List(ctx); err != nil || len(es) != 0 {
		t.Fatalf("after an interrupted Put, List = %v, %v", es, err)
	}
}

// Parts go up in parallel and may complete in any order; CompleteMultipartUpload must
// still list them in ascending order (S3 rejects anything else with InvalidPartOrder).
func TestMultipartParallelOutOfOrder(t *testing.T) {
	f := newFakeS3(t)
	r := f.open(t, nil)
	b, sha := remotetest.Data(22<<20+1, 11) // 5 parts of 5 MiB, the last 2 MiB + 1
	f.set(func(f *fakeS3) {
		f.before = func(rq req) {
			if rq.Op != "UploadPart" {
				return
			}
			if rq.Part != 1 {
				time.Sleep(20 * time.Millisecond)
				return
			}
			// Part 1 finishes last: it waits for the other four.
			for deadline := time.Now().Add(10 * time.Second); f.completed() < 4 && time.Now().Before(deadline); {
				time.Sleep(5 * time.Millisecond)
			}
		}
	})
	var prog bytes.Buffer
	res, err := r.Put(ctx, "big.safetensors", remotetest.Src(b, sha), remote.PutOptions{Progress: &prog})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != int64(len(b)) || res.Resumed != 0 || prog.Len() != len(b) {
		t.Fatalf("PutResult %+v, progress %d bytes", res, prog.Len())
	}
	done, maxInflight := f.doneParts()
	if maxInflight < 2 {
		t.Errorf("at most %d part uploads ran at once; want them parallel", maxInflight)
	}
	if got := partNumbers(f.ops("UploadPart")); !slices.Equal(got, []int{1, 2, 3, 4, 5}) {
		t.Errorf("uploaded parts %v", got)
	}
	if done[0].Part == 1 || done[len(done)-1].Part != 1 {
		var order []int
		for _, d := range done {
			order = append(order, d.Part)
		}
		t.Errorf("completion order %v: the delayed part 1 should finish last", order)
	}
	cs := f.ops("CompleteMultipartUpload")
	if len(cs) != 1 {
		t.Fatalf("%d CompleteMultipartUpload requests", len(cs))
	}
	var body struct {
		Parts []struct{ PartNumber int } `xml:"Part"`
	}
	if err := xml.Unmarshal(cs[0].Body, &body); err != nil {
		t.Fatal(err)
	}
	var listed []int
	for _, p := range body.Parts {
		listed = append(listed, p.PartNumber)
	}
	if !slices.Equal(listed, []int{1, 2, 3, 4, 5}) {
		t.Errorf("CompleteMultipartUpload lists parts %v", listed)
	}
	if !bytes.Equal(get(t, r, "big.safetensors", 0), b) {
		t.Fatal("content differs")
	}
	if h, err := r.Hash(ctx, "big.safetensors"); err != nil || h != sha {
		t.Fatalf("Hash = %s, %v", h, err)
	}
	if len(f.ops("GetObject")) != 1 {
		t.Error("Hash streamed the object although its metadata holds the sha256")
	}
	if k := f.keys(t); !slices.Equal(k, []string{testPrefix + "big.safetensors"}) {
		t.Errorf("bucket holds %v; the upload marker should be gone", k)
	}
	if u := f.openUploads(t); len(u) != 0 {
		t.Errorf("open uploads after completion: %v", u)
	}
}

// What the backend relies on, checked against the server directly: parts may be uploaded
// in any order and re-uploaded, ListParts reports them by number with ETag = MD5 of the
// part, nothing is visible before CompleteMultipartUpload, the object is assembled in
// part-number order with the metadata given at creation, and an aborted upload is gone.
func TestSpecMultipartSemantics(t *testing.T) {
	f := newFakeS3(t)
	c := f.core(t)
	key := testPrefix + "spec.bin"
	p1, _ := remotetest.Data(5<<20, 21)
	p2, _ := remotetest.Data(5<<20, 22)
	p3, _ := remotetest.Data(1234, 23)
	id, err := c.NewMultipartUpload(ctx, testBucket, key, minio.PutObjectOptions{UserMetadata: map[string]string{"Sha256": "x"}})
	if err != nil {
		t.Fatal(err)
	}
	up := func(n int, b []byte) minio.ObjectPart {
		md := md5.Sum(b)
		p, err := c.PutObjectPart(ctx, testBucket, key, id, n, bytes.NewReader(b), int64(len(b)), minio.PutObjectPartOptions{Md5Base64: base64.StdEncoding.EncodeToString(md[:]), DisableContentSha256: true})
		if err != nil {
			t.Fatalf("part %d: %v", n, err)
		}
		return p
	}
	up(3, p3)
	up(1, p2) // replaced below: re-uploading a part number overwrites it
	up(2, p2)
	up(1, p1)
	lp, err := c.ListObjectParts(ctx, testBucket, key, id, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var nums []int
	for i, p := range lp.ObjectParts {
		nums = append(nums, p.PartNumber)
		md := md5.Sum([][]byte{p1, p2, p3}[i])
		if strings.Trim(p.ETag, `"`) != hex.EncodeToString(md[:]) || p.Size != int64(len([][]byte{p1, p2, p3}[i])) {
			t.Errorf("ListParts part %d: ETag %s size %d", p.PartNumber, p.ETag, p.Size)
		}
	}
	if !slices.Equal(nums, []int{1, 2, 3}) {
		t.Fatalf("ListParts numbers %v", nums)
	}
	parts := []minio.CompletePart{{PartNumber: 1, ETag: lp.ObjectParts[0].ETag}, {PartNumber: 2, ETag: lp.ObjectParts[1].ETag}, {PartNumber: 3, ETag: lp.ObjectParts[2].ETag}}
	// S3 answers a part list out of ascending order with InvalidPartOrder; gofakes3
	// accepts it (it sorts before checking) and concatenates in the listed order, so that
	// is not asserted here: TestMultipartParallelOutOfOrder checks the client sends the
	// list ascending.
	if _, err := c.StatObject(ctx, testBucket, key, minio.StatObjectOptions{}); minio.ToErrorResponse(err).Code != "NoSuchKey" {
		t.Fatalf("object visible before CompleteMultipartUpload: %v", err)
	}
	if _, err := c.CompleteMultipartUpload(ctx, testBucket, key, id, parts, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	rc, info, _, err := c.GetObject(ctx, testBucket, key, minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, slices.Concat(p1, p2, p3)) {
		t.Fatal("object is not the parts in part-number order")
	}
	if info.UserMetadata["Sha256"] != "x" {
		t.Errorf("metadata given at CreateMultipartUpload not on the object: %v", info.UserMetadata)
	}

	// Abort: the upload and its parts are gone.
	id2, err := c.NewMultipartUpload(ctx, testBucket, key+"2", minio.PutObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutObjectPart(ctx, testBucket, key+"2", id2, 1, bytes.NewReader(p3), int64(len(p3)), minio.PutObjectPartOptions{DisableContentSha256: true}); err != nil {
		t.Fatal(err)
	}
	if err := c.AbortMultipartUpload(ctx, testBucket, key+"2", id2); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListObjectParts(ctx, testBucket, key+"2", id2, 0, 1000); minio.ToErrorResponse(err).Code != "NoSuchUpload" {
		t.Errorf("ListParts of an aborted upload: %v", err)
	}
	if _, err := c.CompleteMultipartUpload(ctx, testBucket, key+"2", id2, []minio.CompletePart{{PartNumber: 1, ETag: "x"}}, minio.PutObjectOptions{}); minio.ToErrorResponse(err).Code != "NoSuchUpload" {
		t.Errorf("Complete of an aborted upload: %v", err)
	}
	if u := f.openUploads(t); len(u) != 0 {
		t.Errorf("open uploads: %v", u)
	}
	if k := f.keys(t); !slices.Equal(k, []string{key}) {
		t.Errorf("bucket holds %v", k)
	}
}

// A resumed Put finds the upload with ListMultipartUploads, asks ListParts what is there,
// and sends only the parts that are missing or whose ETag is not the MD5 of the local
// chunk.
func TestResumeUsesListPartsAndChecksETags(t *testing.T) {
	for _, tampered := range []bool{false, true} {
		t.Run(fmt.Sprintf("tampered=%v", tampered), func(t *testing.T) {
			f := newFakeS3(t)
			r := f.open(t, map[string]string{OptParallel: "2"})
			b, sha := remotetest.Data(20<<20-7, 31) // parts of 5 MiB: 1..4, the last short
			interrupt(t, r, "lora.safetensors", b, sha, 12<<20)
			c := f.core(t)
			ups := f.openUploads(t)
			if len(ups) != 1 {
				t.Fatalf("open uploads after the interruption: %v", ups)
			}
			id := strings.Fields(ups[0])[1]
			lp, err := c.ListObjectParts(ctx, testBucket, testPrefix+"lora.safetensors", id, 0, 1000)
			if err != nil {
				t.Fatal(err)
			}
			if len(lp.ObjectParts) != 2 {
				t.Fatalf("server holds %d parts after the interruption, want parts 1 and 2", len(lp.ObjectParts))
			}
			if k := f.keys(t); len(k) != 1 || !remote.IsTemp(strings.TrimPrefix(k[0], testPrefix)) {
				t.Fatalf("bucket holds %v; want only the upload marker", k)
			}
			wantSent := []int{3, 4}
			wantResumed := int64(10 << 20)
			if tampered {
				// Someone replaced part 1 with other bytes of the same size.
				other, _ := remotetest.Data(5<<20, 99)
				if _, err := c.PutObjectPart(ctx, testBucket, testPrefix+"lora.safetensors", id, 1, bytes.NewReader(other), 5<<20, minio.PutObjectPartOptions{DisableContentSha256: true}); err != nil {
					t.Fatal(err)
				}
				wantSent, wantResumed = []int{1, 3, 4}, 5<<20
			}
			f.resetLog()
			res, err := r.Put(ctx, "lora.safetensors", remotetest.Src(b, sha), remote.PutOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if res.Resumed != wantResumed || res.Sent+res.Resumed != int64(len(b)) {
				t.Errorf("PutResult %+v, want %d resumed", res, wantResumed)
			}
			if len(f.ops("ListMultipartUploads")) == 0 || len(f.ops("ListParts")) == 0 {
				t.Error("resume did not use ListMultipartUploads and ListParts")
			}
			if n := len(f.ops("CreateMultipartUpload")); n != 0 {
				t.Errorf("resume created %d new uploads", n)
			}
			if got := partNumbers(f.ops("UploadPart")); !slices.Equal(got, wantSent) {
				t.Errorf("resume uploaded parts %v, want %v", got, wantSent)
			}
			if cs := f.ops("CompleteMultipartUpload"); len(cs) != 1 || cs[0].UploadID != id {
				t.Errorf("completed %v, want upload %s", cs, id)
			}
			if !bytes.Equal(get(t, r, "lora.safetensors", 0), b) {
				t.Fatal("resumed upload differs")
			}
			if k := f.keys(t); !slices.Equal(k, []string{testPrefix + "lora.safetensors"}) {
				t.Errorf("bucket holds %v", k)
			}
		})
	}
}

// The marker keeps the part size of the interrupted upload, so a resume works even
// after part_size changed.
func TestResumeKeepsPartSize(t *testing.T) {
	f := newFakeS3(t)
	b, sha := remotetest.Data(16<<20, 41)
	interrupt(t, f.open(t, nil), "a.safetensors", b, sha, 11<<20)
	res, err := f.open(t, map[string]string{OptPartSize: "7MiB"}).Put(ctx, "a.safetensors", remotetest.Src(b, sha), remote.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Resumed != 10<<20 || res.Sent != 6<<20 {
		t.Fatalf("PutResult %+v", res)
	}
	if !bytes.Equal(get(t, f.open(t, nil), "a.safetensors", 0), b) {
		t.Fatal("content differs")
	}
}

// A Put of other content to the same name aborts the stale upload (and its marker)
// instead of completing it.
func TestOtherContentUploadAborted(t *testing.T) {
	f := newFakeS3(t)
	r := f.open(t, nil)
	a, shaA := remotetest.Data(15<<20, 51)
	bb, shaB := remotetest.Data(15<<20, 52)
	interrupt(t, r, "x.safetensors", a, shaA, 11<<20)
	stale := f.openUploads(t)
	if len(stale) != 1 {
		t.Fatalf("open uploads %v", stale)
	}
	f.resetLog()
	res, err := r.Put(ctx, "x.safetensors", remotetest.Src(bb, shaB), remote.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Resumed != 0 || res.Sent != int64(len(bb)) {
		t.Errorf("PutResult %+v: nothing of other content may be reused", res)
	}
	if ab := f.ops("AbortMultipartUpload"); len(ab) != 1 || ab[0].UploadID != strings.Fields(stale[0])[1] {
		t.Errorf("aborted %v, want the stale upload", ab)
	}
	if u := f.openUploads(t); len(u) != 0 {
		t.Errorf("open uploads: %v", u)
	}
	if k := f.keys(t); !slices.Equal(k, []string{testPrefix + "x.safetensors"}) {
		t.Errorf("bucket holds %v", k)
	}
	if !bytes.Equal(get(t, r, "x.safetensors", 0), bb) {
		t.Fatal("content differs")
	}
	if h, _ := r.Hash(ctx, "x.safetensors"); h != shaB {
		t.Fatalf("Hash = %s, want the new content's", h)
	}
}

// Content that does not hash to the expected sha256 is never completed: the upload is
// aborted and nothing is left on the server.
func TestHashMismatchAbortsAndLeavesNothing(t *testing.T) {
	f := newFakeS3(t)
	r := f.open(t, nil)
	b, _ := remotetest.Data(12<<20, 61)
	_, wrong := remotetest.Data(10, 62)
	_, err := r.Put(ctx, "m.safetensors", remotetest.Src(b, wrong), remote.PutOptions{})
	if !errors.Is(err, remote.ErrHashMismatch) {
		t.Fatalf("Put: %v", err)
	}
	if len(f.ops("CompleteMultipartUpload")) != 0 {
		t.Error("completed an upload whose content failed verification")
	}
	if len(f.ops("AbortMultipartUpload")) != 1 {
		t.Error("did not abort the upload")
	}
	if u := f.openUploads(t); len(u) != 0 {
		t.Errorf("open uploads: %v", u)
	}
	if k := f.keys(t); len(k) != 0 {
		t.Errorf("bucket holds %v", k)
	}
}

// Each request carries Content-MD5 and the signed sha256 of its payload; damage in
// transit is rejected by the server and the Put fails without publishing. A later
// Put resumes.
func TestDamagedPartRejected(t *testing.T) {
	for _, tc := range []struct {
		name         string
		checkPayload bool
		code         string
	}{
		{"Content-MD5", false, "BadDigest"},                         // gofakes3's check
		{"x-amz-content-sha256", true, "XAmzContentSHA256Mismatch"}, // AWS's, emulated by the front
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeS3(t)
			f.set(func(f *fakeS3) { f.checkPayload = tc.checkPayload })
			r := f.open(t, nil)
			b, sha := remotetest.Data(15<<20+99, 71)
			f.set(func(f *fakeS3) {
				f.tamper = func(rq req, body []byte) []byte {
					if rq.Op == "UploadPart" && rq.Part == 2 {
						body = bytes.Clone(body)
						body[1000] ^= 1
					}
					return body
				}
			})
			_, err := r.Put(ctx, "d.safetensors", remotetest.Src(b, sha), remote.PutOptions{})
			var er minio.ErrorResponse
			if err == nil || !strings.Contains(err.Error(), "part 2") || !errors.As(err, &er) || er.Code != tc.code {
				t.Fatalf("Put with part 2 damaged in transit: %v", err)
			}
			if es, _ := r.List(ctx); len(es) != 0 {
				t.Fatalf("published: %v", es)
			}
			f.set(func(f *fakeS3) { f.tamper = nil })
			res, err := r.Put(ctx, "d.safetensors", remotetest.Src(b, sha), remote.PutOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if res.Resumed == 0 {
				t.Errorf("did not resume: %+v", res)
			}
			if !bytes.Equal(get(t, r, "d.safetensors", 0), b) {
				t.Fatal("content differs")
			}
		})
	}
	t.Run("direct", func(t *testing.T) {
		f := newFakeS3(t)
		c := f.core(t)
		data, _ := remotetest.Data(1000, 72)
		wrong := base64.StdEncoding.EncodeToString(make([]byte, 16))
		_, err := c.PutObject(ctx, testBucket, testPrefix+"w.safetensors", bytes.NewReader(data), 1000, wrong, "", minio.PutObjectOptions{DisableContentSha256: true})
		if code := minio.ToErrorResponse(err).Code; code != "BadDigest" {
			t.Errorf("PutObject with a wrong Content-MD5: %v", err)
		}
		if k := f.keys(t); len(k) != 0 {
			t.Errorf("bucket holds %v", k)
		}
		id, err := c.NewMultipartUpload(ctx, testBucket, testPrefix+"w.safetensors", minio.PutObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.PutObjectPart(ctx, testBucket, testPrefix+"w.safetensors", id, 1, bytes.NewReader(data), 1000, minio.PutObjectPartOptions{Md5Base64: wrong, DisableContentSha256: true})
		if code := minio.ToErrorResponse(err).Code; code != "BadDigest" {
			t.Errorf("UploadPart with a wrong Content-MD5: %v", err)
		}
	})
}

// List: only direct children of the prefix (delimiter "/"), over many pages.
func TestListPaginationAndDelimiter(t *testing.T) {
	f := newFakeS3(t)
	c := f.core(t)
	put := func(key string) {
		if _, err := c.PutObject(ctx, testBucket, key, strings.NewReader(key), int64(len(key)), "", "", minio.PutObjectOptions{DisableContentSha256: true}); err != nil {
			t.Fatalf("%s: %v", key, err)
		}
	}
	var want []string
	for i := range 9 {
		n := fmt.Sprintf("lora%02d.safetensors", i)
		want = append(want, n)
		put(testPrefix + n)
	}
	want = append(want, "notes.json")
	put(testPrefix + "notes.json")
	for _, k := range []string{
		testPrefix + "sub/deep.safetensors", // in a "subfolder"
		testPrefix + "sub/more/deeper.safetensors",
		testPrefix + "zz/last.safetensors",
		testPrefix + "empty/", // a directory placeholder (RunPod lists empty directories)
		testPrefix + remote.TempName("x.safetensors", strings.Repeat("ab", 32)),
		// Names failing remote.CheckName. (An ESC would be the obvious one, but gofakes3
		// ignores encoding-type=url and writes keys raw into XML, where ESC is not
		// allowed, so they come back as U+FFFD; S3 would URL-encode them.)
		testPrefix + "bad\u0085.safetensors",
		testPrefix + "back\\slash.safetensors",
		"models/lora.safetensors",        // next to the folder, not in it
		"models/lora2/other.safetensors", // a sibling folder sharing the prefix string
		"top.safetensors",
	} {
		put(k)
	}
	r := f.open(t, nil)
	r.listPageSize = 2
	es, err := r.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range es {
		got = append(got, e.Name)
		if e.Size != int64(len(testPrefix+e.Name)) || e.ModTime.IsZero() || e.SHA256 != "" {
			t.Errorf("entry %+v", e)
		}
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("List = %v\nwant   %v", got, want)
	}
	ls := f.ops("ListObjectsV2")
	if len(ls) < 7 {
		t.Errorf("%d ListObjectsV2 requests for %d entries in pages of 2: continuation tokens not followed?", len(ls), len(want))
	}
	for i, l := range ls {
		if l.Query.Get("delimiter") != "/" || l.Query.Get("prefix") != testPrefix || l.Query.Get("max-keys") != "2" || (i > 0) != l.Query.Has("continuation-token") {
			t.Errorf("request %d: %v", i, l.Query)
		}
	}

	// The root of the volume lists only top-level files.
	root, err := remote.Open(ctx, "s3://"+testBucket, testEnv(f.URL, testAK, testSK, nil))
	if err != nil {
		t.Fatal(err)
	}
	if es, err := root.List(ctx); err != nil || len(es) != 1 || es[0].Name != "top.safetensors" {
		t.Fatalf("root List = %v, %v", es, err)
	}
}

// A server that repeats listing pages makes List fail instead of looping or returning
// duplicates.
func TestListRepeatedPages(t *testing.T) {
	f := newFakeS3(t)
	c := f.core(t)
	for i := range 5 {
		k := fmt.Sprintf("%sf%d.safetensors", testPrefix, i)
		if _, err := c.PutObject(ctx, testBucket, k, strings.NewReader("x"), 1, "", "", minio.PutObjectOptions{DisableContentSha256: true}); err != nil {
			t.Fatal(err)
		}
	}
	f.set(func(f *fakeS3) { f.loopList = true })
	r := f.open(t, nil)
	r.listPageSize = 2
	if es, err := r.List(ctx); err == nil || !strings.Contains(err.Error(), "repeated") {
		t.Fatalf("List = %v, %v", es, err)
	}
}

func TestGetAndDelete(t *testing.T) {
	f := newFakeS3(t)
	r := f.open(t, nil)
	b, sha := remotetest.Data(3000, 81)
	if _, err := r.Put(ctx, "g.safetensors", remotetest.Src(b, sha), remote.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if p := f.ops("PutObject"); len(p) != 1 || len(f.ops("CreateMultipartUpload")) != 0 {
		t.Fatalf("a small Put should be one PutObject: %v", p)
	}
	for _, off := range []int64{0, 1, 2999, 3000} {
		if got := get(t, r, "g.safetensors", off); !bytes.Equal(got, b[off:]) {
			t.Errorf("Get from %d: %d bytes", off, len(got))
		}
	}
	if _, err := r.Get(ctx, "g.safetensors", 3001); err == nil || errors.Is(err, remote.ErrNotFound) {
		t.Errorf("Get past the end: %v", err)
	}
	if _, err := r.Get(ctx, "nope.safetensors", 10); !errors.Is(err, remote.ErrNotFound) {
		t.Errorf("Get of a missing file: %v", err)
	}
	if _, err := r.Hash(ctx, "nope.safetensors"); !errors.Is(err, remote.ErrNotFound) {
		t.Errorf("Hash of a missing file: %v", err)
	}
	if err := r.Delete(ctx, "nope.safetensors"); !errors.Is(err, remote.ErrNotFound) {
		t.Errorf("Delete of a missing file: %v", err)
	}
	if err := r.Delete(ctx, "g.safetensors"); err != nil {
		t.Fatal(err)
	}
	if k := f.keys(t); len(k) != 0 {
		t.Errorf("bucket holds %v", k)
	}
}

// Objects put by other tools carry no sha256 metadata: Hash streams them.
func TestHashWithoutMetadata(t *testing.T) {
	f := newFakeS3(t)
	b, sha := remotetest.Data(7<<20, 91)
	if _, err := f.core(t).PutObject(ctx, testBucket, testPrefix+"o.safetensors", bytes.NewReader(b), int64(len(b)), "", "", minio.PutObjectOptions{DisableContentSha256: true}); err != nil {
		t.Fatal(err)
	}
	r := f.open(t, nil)
	f.resetLog()
	if h, err := r.Hash(ctx, "o.safetensors"); err != nil || h != sha {
		t.Fatalf("Hash = %s, %v", h, err)
	}
	if len(f.ops("GetObject")) != 1 {
		t.Error("Hash did not stream the object")
	}
}

// Credentials never show in errors, String() or formatted values, even when the server
// echoes the access key id back (AWS does, in InvalidAccessKeyId errors).
func TestCredentialsNeverInErrors(t *testing.T) {
	const canaryAK, canarySK = "CANARYak7Qx93LzP", "CANARYsk0Vb2Jw8RtY5mN4kH"
	f := newFakeS3(t)
	b, sha := remotetest.Data(11<<20, 101)
	small, ssha := remotetest.Data(100, 102)
	if _, err := f.open(t, nil).Put(ctx, "there.safetensors", remotetest.Src(small, ssha), remote.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, creds := range [][2]string{{canaryAK, canarySK}, {testAK, canarySK}} {
		env := testEnv(f.URL, creds[0], creds[1], nil)
		r, err := remote.Open(ctx, "s3://"+testBucket+"/models/lora", env)
		if err != nil {
			t.Fatal(err)
		}
		check := func(what string, err error) {
			t.Helper()
			if err == nil {
				t.Errorf("%s with wrong credentials succeeded", what)
				return
			}
			msg := err.Error() + fmt.Sprintf(" %v %+v %#v", err, err, err)
			if strings.Contains(msg, canaryAK) || strings.Contains(msg, canarySK) {
				t.Errorf("%s: error shows a credential: %s", what, msg)
			}
			var er minio.ErrorResponse
			if !errors.As(err, &er) || er.StatusCode != 403 {
				t.Errorf("%s: want the server's 403, got %v", what, err)
			}
		}
		_, err = r.List(ctx)
		check("List", err)
		_, err = r.Put(ctx, "a.safetensors", remotetest.Src(small, ssha), remote.PutOptions{})
		check("Put small", err)
		_, err = r.Put(ctx, "b.safetensors", remotetest.Src(b, sha), remote.PutOptions{})
		check("Put multipart", err)
		_, err = r.Get(ctx, "there.safetensors", 0)
		check("Get", err)
		_, err = r.Get(ctx, "there.safetensors", 5)
		check("Get from offset", err)
		check("Delete", r.Delete(ctx, "there.safetensors"))
		_, err = r.(remote.Hasher).Hash(ctx, "there.safetensors")
		check("Hash", err)
		for _, s := range []string{r.String(), fmt.Sprintf("%v %+v %#v %s", r, r, r, r)} {
			if strings.Contains(s, canaryAK) || strings.Contains(s, canarySK) {
				t.Errorf("formatted remote shows a credential: %s", s)
			}
		}
		if env.Secrets.Redact("x "+creds[0]+" "+creds[1]) == "x "+creds[0]+" "+creds[1] {
			t.Error("credentials not registered with env.Secrets")
		}
	}
	// The server does echo the key (as AWS does): the redaction is what kept it out.
	raw, err := minio.NewCore(strings.TrimPrefix(f.URL, "http://"), &minio.Options{
		Creds: credentials.NewStaticV4(canaryAK, canarySK, ""), Region: testRegion, BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.ListObjectsV2(testBucket, "", "", "", "/", 10); err == nil || !strings.Contains(err.Error(), canaryAK) {
		t.Fatalf("test server does not echo the key: %v", err)
	}
	if k := f.keys(t); !slices.Equal(k, []string{testPrefix + "there.safetensors"}) {
		t.Errorf("bucket holds %v", k)
	}
}

func TestOpenConfig(t *testing.T) {
	env := func(o map[string]string) remote.Env {
		e := testEnv("", testAK, testSK, nil)
		e.Options = o
		return e
	}
	for _, tc := range []struct {
		url  string
		opts map[string]string
		want string // String(), or "error: substring"
	}{
		{"s3://vol1/models/lora", map[string]string{OptRegion: "EU-RO-1"}, "s3://vol1/models/lora (s3api-eu-ro-1.runpod.io)"},
		{"s3://vol1/models/lora/", map[string]string{OptEndpoint: "https://s3api-us-ks-2.runpod.io/"}, "s3://vol1/models/lora (s3api-us-ks-2.runpod.io)"},
		{"s3://vol1", map[string]string{OptEndpoint: "http://127.0.0.1:9000", OptRegion: "x"}, "s3://vol1/ (127.0.0.1:9000)"},
		{"s3://vol1/a/../b", map[string]string{OptEndpoint: "http://localhost:9000", OptRegion: "x"}, "s3://vol1/b (localhost:9000)"},
		{"s3://vol1/x", map[string]string{OptEndpoint: "http://s3.example.com"}, "error: plain http"},
		{"s3://vol1/x", map[string]string{OptEndpoint: "ftp://s3.example.com"}, "error: https"},
		{"s3://vol1/x", map[string]string{}, "error: s3_endpoint"},
		{"s3://vol1/x", map[string]string{OptRegion: "EU-RO-1", OptPartSize: "4MiB"}, "error: part_size"},
		{"s3://vol1/x", map[string]string{OptRegion: "EU-RO-1", OptPartSize: "6GiB"}, "error: part_size"},
		{"s3://vol1/x", map[string]string{OptRegion: "EU-RO-1", OptParallel: "0"}, "error: parallel"},
		{"s3://vol1/x?region=x", map[string]string{OptRegion: "EU-RO-1"}, "error: unexpected query"},
		{"s3://" + testAK + ":" + testSK + "@vol1/x", map[string]string{OptRegion: "EU-RO-1"}, "error: credentials do not belong in the URL"},
		{"s3://V/x", map[string]string{OptRegion: "EU-RO-1"}, "error: bucket"},
	} {
		r, err := remote.Open(ctx, tc.url, env(tc.opts))
		switch {
		case strings.HasPrefix(tc.want, "error: "):
			if err == nil || !strings.Contains(err.Error(), strings.TrimPrefix(tc.want, "error: ")) {
				t.Errorf("%s %v: %v, want %s", tc.url, tc.opts, err, tc.want)
			} else if strings.Contains(err.Error(), testSK) || strings.Contains(err.Error(), testAK) {
				t.Errorf("%s: error shows a credential: %v", tc.url, err)
			}
		case err != nil:
			t.Errorf("%s %v: %v", tc.url, tc.opts, err)
		case r.String() != tc.want:
			t.Errorf("%s %v: String() = %q, want %q", tc.url, tc.opts, r.String(), tc.want)
		}
	}
	s, err := remote.Open(ctx, "s3://vol1/x", env(map[string]string{OptRegion: "EU-RO-1", OptPartSize: "32M", OptParallel: "8"}))
	if err != nil {
		t.Fatal(err)
	}
	if s := s.(*S3); s.partSize != 32<<20 || s.parallel != 8 || s.prefix != "x/" || s.bucket != "vol1" {
		t.Errorf("config %+v", s)
	}
	if _, err := remote.Open(ctx, "s3://vol1/x", remote.Env{Options: map[string]string{OptRegion: "EU-RO-1"}}); err == nil || !strings.Contains(err.Error(), "credentials missing: set SCOPECTL_S3_ACCESS_KEY_ID (or AWS_ACCESS_KEY_ID) and SCOPECTL_S3_SECRET_ACCESS_KEY (or AWS_SECRET_ACCESS_KEY)") || strings.Contains(err.Error(), "s3_access_key_id") {
		t.Errorf("no credentials: %v", err)
	}
	if u, region, err := endpointAndRegion("https://s3api-eur-is-1.runpod.io", ""); err != nil || region != "EUR-IS-1" || u.Host != "s3api-eur-is-1.runpod.io" {
		t.Errorf("region from endpoint: %v %s %v", u, region, err)
	}
}

// A Put cancelled while parts are in flight returns promptly and leaves the upload to
// resume.
func TestCancelMidUpload(t *testing.T) {
	f := newFakeS3(t)
	r := f.open(t, nil)
	b, sha := remotetest.Data(20<<20, 111)
	cctx, cancel := context.WithCancel(ctx)
	f.set(func(f *fakeS3) {
		f.before = func(rq req) {
			if rq.Op == "UploadPart" && rq.Part > 1 {
				cancel()
				time.Sleep(200 * time.Millisecond)
			}
		}
	})
	start := time.Now()
	_, err := r.Put(cctx, "c.safetensors", remotetest.Src(b, sha), remote.PutOptions{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Put: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("cancelled Put took %v", d)
	}
	time.Sleep(300 * time.Millisecond) // let the server finish the requests it holds
	f.set(func(f *fakeS3) { f.before = nil })
	if u := f.openUploads(t); len(u) != 1 {
		t.Fatalf("open uploads after cancel: %v", u)
	}
	res, err := r.Put(ctx, "c.safetensors", remotetest.Src(b, sha), remote.PutOptions{})
	if err != nil || res.Sent+res.Resumed != int64(len(b)) {
		t.Fatalf("Put after cancel: %+v %v", res, err)
	}
	if !bytes.Equal(get(t, r, "c.safetensors", 0), b) {
		t.Fatal("content differs")
	}
}

func TestPartSize(t *testing.T) {
	// 10,000 parts at most: the part size grows in whole MiB.
	if ps := partSizeFor(16<<20, 147<<20); ps != 16<<20 {
		t.Errorf("147 MiB: part size %d", ps)
	}
	size := int64(200 << 30)
	ps := partSizeFor(5<<20, size)
	if (size+ps-1)/ps > MaxParts || ps%(1<<20) != 0 || ps < 5<<20 || !validPartSize(ps, size) {
		t.Errorf("200 GiB: part size %d gives %d parts", ps, (size+ps-1)/ps)
	}
	if validPartSize(4<<20, 10<<20) || validPartSize(5<<20, 5<<20*MaxParts+1) {
		t.Error("validPartSize accepts what S3 refuses")
	}
}
