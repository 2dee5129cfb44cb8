package fetch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/httpx"
)

// cut is a failure worth a retry (a body cut short).
type cut struct{ got, want int64 }

func (c *cut) Error() string { return fmt.Sprintf("closed after %d of %d bytes", c.got, c.want) }

// httpSource asks srv for ranges (or the whole file) with plain GETs.
type httpSource struct {
	url   string
	whole bool
}

type countBody struct {
	io.ReadCloser
	got, want int64
}

func (b *countBody) Read(p []byte) (int, error) {
	k, err := b.ReadCloser.Read(p)
	b.got += int64(k)
	if err == io.EOF && b.got >= b.want {
		return k, io.EOF
	}
	if err != nil {
		return k, &cut{b.got, b.want}
	}
	return k, nil
}

func (s httpSource) Range(ctx context.Context, off, end int64) (io.ReadCloser, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if !s.whole {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, end))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusPartialContent && resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	return &countBody{ReadCloser: resp.Body, want: end - off + 1}, nil
}

// server serves content with ranges; the first answer to each distinct Range (or every
// answer, with always) is cut after cutAt bytes.
func server(t *testing.T, content []byte, cutAt int, always bool) (*httptest.Server, *atomic.Int64) {
	var mu sync.Mutex
	seen := map[string]bool{}
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		mu.Lock()
		first := !seen[r.Header.Get("Range")]
		seen[r.Header.Get("Range")] = true
		mu.Unlock()
		if cutAt > 0 && (first || always) {
			rec := httptest.NewRecorder()
			http.ServeContent(rec, r, "f", time.Time{}, bytes.NewReader(content))
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			b := rec.Body.Bytes()
			w.Write(b[:min(cutAt, len(b))])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler) // cut the connection
		}
		http.ServeContent(w, r, "f", time.Time{}, bytes.NewReader(content))
	}))
	t.Cleanup(srv.Close)
	return srv, &requests
}

func policy(attempts int) httpx.Policy {
	return httpx.Policy{Backoff: httpx.Backoff{Min: time.Millisecond, Max: 2 * time.Millisecond}, Attempts: attempts,
		Retryable: func(err error) bool { return errors.As(err, new(*cut)) }}
}

// Ranges over three connections, each cut once midway: every range resumes where it
// broke off, every chunk is sealed once, progress counts every byte once.
func TestDownloadResumesRanges(t *testing.T) {
	content := bytes.Repeat([]byte("scopectl-fetch-"), 4000) // 60,000 bytes
	srv, _ := server(t, content, 5000, false)
	_, f, p := start(t, t.TempDir(), int64(len(content)), 16<<10)
	var sealed, added atomic.Int64
	d := &Download{File: f, Part: p, Src: httpSource{url: srv.URL}, Conns: 3, Policy: policy(3),
		Added: func(n int64) { added.Add(n) }, Sealed: func(int) { sealed.Add(1) }}
	if err := d.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(f.Name())
	if !bytes.Equal(got, content) || sealed.Load() != 4 || added.Load() != int64(len(content)) {
		t.Fatalf("file ok %v, %d chunks sealed, %d bytes reported", bytes.Equal(got, content), sealed.Load(), added.Load())
	}
}

// Without ranges a retry starts over from byte 0, and a server that always cuts at the
// same place runs the attempts out (no endless "progress").
func TestDownloadWholeGivesUp(t *testing.T) {
	content := bytes.Repeat([]byte("x"), 30000)
	srv, requests := server(t, content, 1000, true)
	f, err := os.Create(t.TempDir() + "/f")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var added atomic.Int64
	d := &Download{File: f, Size: int64(len(content)), Whole: true, Src: httpSource{url: srv.URL, whole: true}, Conns: 4,
		Policy: policy(3), Added: func(n int64) { added.Add(n) }}
	err = d.Run(context.Background())
	var g *httpx.GaveUpError
	if !errors.As(err, &g) || !strings.Contains(err.Error(), "closed after") {
		t.Fatalf("want the attempts spent, got %v", err)
	}
	// Three attempts: the bytes after the first are no news, so none counts as progress.
	if n := requests.Load(); n != 3 || added.Load() != 1000 {
		t.Fatalf("%d requests, %d bytes reported", n, added.Load())
	}
	// A cancelled context: its error, at once.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := d.Run(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}
