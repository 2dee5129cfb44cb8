package agent_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math"
	"math/rand/v2"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/daydreamlive/scopectl/internal/remote"
)

// LoRA weights compress; chunks travel zstd-compressed and arrive byte-identical, and the
// progress count is the file's own bytes.
func TestCompressedChunks(t *testing.T) {
	var wire atomic.Int64
	dir := t.TempDir()
	a := startAgent(t, dir, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if isChunk(r) {
				if r.Header.Get("Content-Encoding") != "zstd" {
					t.Errorf("a compressible chunk went uncompressed")
				}
				wire.Add(r.ContentLength)
			}
			h.ServeHTTP(w, r)
		})
	})
	// LoRA weights: bf16 of normal(0, 0.02) values, whose exponents cluster.
	b := make([]byte, 1<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < len(b); i += 2 {
		v := uint16(math.Float32bits(float32(rng.NormFloat64()*0.02)) >> 16)
		b[i], b[i+1] = byte(v), byte(v>>8)
	}
	sum := sha256.Sum256(b)
	sha := hex.EncodeToString(sum[:])
	var prog bytes.Buffer
	r := a.open(t, testToken, nil)
	if _, err := r.Put(context.Background(), "c.safetensors", remote.Source{R: bytes.NewReader(b), Size: int64(len(b)), SHA256: sha}, remote.PutOptions{Progress: &prog}); err != nil {
		t.Fatal(err)
	}
	checkFile(t, dir, "c.safetensors", b)
	if wire.Load() >= int64(len(b))*9/10 || prog.Len() != len(b) {
		t.Fatalf("sent %d bytes on the wire for %d; progress %d", wire.Load(), len(b), prog.Len())
	}
}

// A zstd body that decompresses to more than the chunk is refused, and nothing is written.
func TestZstdBombRefused(t *testing.T) {
	dir := t.TempDir()
	a := startAgent(t, dir, nil)
	enc, _ := zstd.NewWriter(nil)
	body := enc.EncodeAll(make([]byte, 200<<10), nil) // 200 KiB of zeros for a 64 KiB chunk
	data := make([]byte, 64<<10)
	sum := sha256.Sum256(data)
	req := func(method, path string, b []byte, hdr map[string]string) *http.Response {
		rq, _ := http.NewRequest(method, a.ts.URL+path, bytes.NewReader(b))
		rq.Header.Set("Authorization", "Bearer "+testToken)
		for k, v := range hdr {
			rq.Header.Set(k, v)
		}
		resp, err := a.ts.Client().Do(rq)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	all := sha256.Sum256(data)
	resp := req("POST", "/v1/uploads", []byte(`{"name":"b.safetensors","size":65536,"sha256":"`+hex.EncodeToString(all[:])+`","chunk_size":65536}`), nil)
	var up struct{ ID string }
	json.NewDecoder(resp.Body).Decode(&up)
	resp.Body.Close()
	if up.ID == "" {
		t.Fatalf("no upload: %d", resp.StatusCode)
	}
	resp = req("PUT", "/v1/uploads/"+up.ID+"/chunks/0", body, map[string]string{"Content-Encoding": "zstd", "X-Chunk-Sha256": hex.EncodeToString(sum[:])})
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("bomb chunk: status %d", resp.StatusCode)
	}
	resp = req("PUT", "/v1/uploads/"+up.ID+"/chunks/0", body, map[string]string{"Content-Encoding": "gzip", "X-Chunk-Sha256": hex.EncodeToString(sum[:])})
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Fatalf("gzip chunk: status %d", resp.StatusCode)
	}
}
