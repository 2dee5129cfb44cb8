package s3

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/remote/remotetest"
)

// An interrupted upload (kill -9 mid-upload) of a file that is no longer wanted: sync
// --delete aborts its open multipart upload (its parts take space on the volume until
// then) and removes its marker; without --delete both stay for a resume.
func TestCleanTempsAbortsUnwantedUploads(t *testing.T) {
	f := newFakeS3(t)
	r := f.open(t, nil)
	a, shaA := remotetest.Data(15<<20, 71)
	interrupt(t, r, "gone.safetensors", a, shaA, 11<<20)
	b, shaB := remotetest.Data(12<<20, 72)
	interrupt(t, r, "kept.safetensors", b, shaB, 6<<20)
	if u := f.openUploads(t); len(u) != 2 {
		t.Fatalf("open uploads %v", u)
	}
	cleaned, err := r.CleanTemps(ctx, nil)
	if err != nil || len(cleaned) != 0 || len(f.openUploads(t)) != 2 || len(f.keys(t)) != 2 {
		t.Fatalf("without --delete: cleaned %v, %v; uploads %v; keys %v", cleaned, err, f.openUploads(t), f.keys(t))
	}
	cleaned, err = r.CleanTemps(ctx, func(name string) bool { return name != "kept.safetensors" })
	if err != nil || !slices.Equal(cleaned, []string{"gone.safetensors"}) {
		t.Fatalf("cleaned %v, %v", cleaned, err)
	}
	if u := f.openUploads(t); len(u) != 1 || !strings.HasPrefix(u[0], testPrefix+"kept.safetensors ") {
		t.Errorf("open uploads %v, want only the wanted one", u)
	}
	if k := f.keys(t); !slices.Equal(k, []string{testPrefix + remote.TempName("kept.safetensors", shaB)}) {
		t.Errorf("bucket holds %v", k)
	}
	// the wanted one still resumes
	res, err := r.Put(ctx, "kept.safetensors", remotetest.Src(b, shaB), remote.PutOptions{})
	if err != nil || res.Resumed == 0 {
		t.Fatalf("resume after clean up: %+v %v", res, err)
	}
}

// A Put killed between CompleteMultipartUpload and removing its marker leaves the
// marker of a complete object: CleanTemps removes it, with or without --delete, and
// keeps the object.
func TestCleanTempsRemovesOrphanMarker(t *testing.T) {
	f := newFakeS3(t)
	r := f.open(t, nil)
	// an interrupted upload (no object yet) is kept for a resume
	c, shaC := remotetest.Data(12<<20, 74)
	interrupt(t, r, "other.safetensors", c, shaC, 6<<20)
	b, sha := remotetest.Data(12<<20, 73)
	if _, err := r.Put(ctx, "done.safetensors", remotetest.Src(b, sha), remote.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	mk := r.key(remote.TempName("done.safetensors", sha))
	if err := r.writeMarker(ctx, mk, marker{UploadID: "completed-upload", SHA256: sha, Size: int64(len(b)), PartSize: 5 << 20}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Put(ctx, "other2.safetensors", remotetest.Src(b, sha), remote.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	cleaned, err := r.CleanTemps(ctx, nil)
	if err != nil || !slices.Equal(cleaned, []string{"done.safetensors"}) {
		t.Fatalf("cleaned %v, %v", cleaned, err)
	}
	want := []string{testPrefix + remote.TempName("other.safetensors", shaC), testPrefix + "done.safetensors", testPrefix + "other2.safetensors"}
	slices.Sort(want)
	if k := f.keys(t); !slices.Equal(k, want) {
		t.Errorf("bucket holds %v, want %v", k, want)
	}
	if !bytes.Equal(get(t, r, "done.safetensors", 0), b) {
		t.Error("content differs")
	}
}
