package lorasync_test

import (
	"bytes"
	"context"
	"errors"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/daydreamlive/scopectl/internal/lorasync"
	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/remote/remotetest"
	"github.com/daydreamlive/scopectl/internal/remote/s3"
	"github.com/daydreamlive/scopectl/internal/secret"
)

type failingReader struct{ r *bytes.Reader }

func (f failingReader) ReadAt(p []byte, off int64) (int, error) {
	if off >= 6<<20 {
		return 0, errors.New("killed")
	}
	return f.r.ReadAt(p, off)
}

// An upload interrupted mid-way (kill -9) of a file that is then no longer wanted:
// `sync OTHER --delete` aborts its open multipart upload and removes its marker, which
// a plain sync keeps for a resume.
func TestSyncDeleteCleansInterruptedS3Upload(t *testing.T) {
	lib, _, _ := setup(t)
	be := s3mem.New()
	if err := be.CreateBucket("vol1"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gofakes3.New(be, gofakes3.WithLogger(gofakes3.DiscardLog())).Server())
	defer srv.Close()
	r, err := remote.Open(ctx, "s3://vol1/lora", remote.Env{
		Lookup: func(k string) secret.Secret {
			if k == s3.KeyAccessKeyID || k == s3.KeySecretAccessKey {
				return secret.New("test-" + k)
			}
			return secret.Secret{}
		},
		Options: map[string]string{s3.OptEndpoint: srv.URL, s3.OptRegion: "us-east-1", s3.OptPartSize: "5MiB"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, sha := remotetest.Data(12<<20, 9)
	if _, err := r.Put(ctx, "old.safetensors", remote.Source{R: failingReader{bytes.NewReader(b)}, Size: int64(len(b)), SHA256: sha}, remote.PutOptions{}); err == nil {
		t.Fatal("interrupted Put succeeded")
	}
	temps := func() (n int) {
		l, err := be.ListBucket("vol1", nil, gofakes3.ListBucketPage{})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range l.Contents {
			if strings.Contains(c.Key, remote.TempPrefix) {
				n++
			}
		}
		return n
	}
	if temps() != 1 {
		t.Fatal("no upload marker after the interruption")
	}
	res, err := lorasync.Sync(context.Background(), lib, r, lorasync.Options{Names: []string{"toolkit"}})
	if err != nil || len(res.Cleaned) != 0 || temps() != 1 {
		t.Fatalf("plain sync: cleaned %v, %v, %d markers", res.Cleaned, err, temps())
	}
	res, err = lorasync.Sync(context.Background(), lib, r, lorasync.Options{Names: []string{"toolkit"}, Delete: true})
	if err != nil || !slices.Equal(res.Cleaned, []string{"old.safetensors"}) || len(res.Warnings) != 0 {
		t.Fatalf("sync --delete: cleaned %v, warnings %v, %v", res.Cleaned, res.Warnings, err)
	}
	if temps() != 0 {
		t.Error("marker left after sync --delete")
	}
	if ups, err := r.(*s3.S3).CleanTemps(ctx, func(string) bool { return true }); err != nil || len(ups) != 0 {
		t.Errorf("still something to clean: %v %v", ups, err)
	}
}
