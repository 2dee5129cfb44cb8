package hf

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"path"
	"sync"
	"time"

	"github.com/daydreamlive/scopectl/internal/fetch"
	"github.com/daydreamlive/scopectl/internal/httpx"
	"github.com/daydreamlive/scopectl/internal/progress"
)

// digest checks content against the listing: sha256 = LFS oid for LFS files, git blob
// sha1 ("blob <size>\0" + content) otherwise.
type digest struct {
	lfs  bool
	size int64
	want string
}

func digestOf(f remoteFile) digest {
	if f.SHA256 != "" {
		return digest{lfs: true, size: f.Size, want: f.SHA256}
	}
	return digest{size: f.Size, want: f.BlobID}
}

func (d digest) new() hash.Hash {
	if d.lfs {
		return sha256.New()
	}
	h := sha1.New()
	fmt.Fprintf(h, "blob %d\x00", d.size)
	return h
}

func (d digest) check(h hash.Hash, file string) error {
	got := hex.EncodeToString(h.Sum(nil))
	if got == d.want {
		return nil
	}
	algo := "git blob sha1"
	if d.lfs {
		algo = "sha256"
	}
	return tagf(ErrIntegrity, "hf: %s: %s mismatch: got %s, want %s (the download was corrupted and has been discarded; run the pull again)", clip(file), algo, got, d.want)
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// fetch downloads one file into blobs/<etag> (verified), through blobs/<etag>.incomplete.
func (p *pull) fetch(ctx context.Context, f remoteFile, m fileMeta) error {
	inc := p.blobRel(f.etag()) + ".incomplete"
	if err := p.root.MkdirAll(fp(path.Dir(inc)), 0o755); err != nil {
		return fmt.Errorf("hf: cache: %w", err)
	}
	tr := p.c.Progress.Start("download", f.Path, f.Size)
	defer tr.Finish()
	if f.Size <= p.chunk {
		return p.fetchWhole(ctx, f, m, inc, tr)
	}
	return p.fetchChunks(ctx, f, m, inc, tr)
}

// finish makes the verified .incomplete the blob: fsync, close, rename, fsync the folder.
func (p *pull) finish(fh *os.File, inc, etag string) error {
	err := fh.Sync()
	if cerr := fh.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = p.root.Rename(fp(inc), fp(p.blobRel(etag)))
	}
	if err != nil {
		_ = p.root.Remove(fp(inc))
		return fmt.Errorf("hf: cache: %w", err)
	}
	p.syncDir(path.Dir(inc))
	return nil
}

// fetchWhole takes a small file in one GET (restarted from the beginning on a retry).
func (p *pull) fetchWhole(ctx context.Context, f remoteFile, m fileMeta, inc string, tr *progress.Tracker) error {
	d := digestOf(f)
	_ = p.root.Remove(fp(inc + ".chunks"))
	fh, err := p.root.OpenFile(fp(inc), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("hf: cache: %w", err)
	}
	fail := func(err error) error {
		fh.Close()
		_ = p.root.Remove(fp(inc))
		return err
	}
	if err := preallocate(fh, f.Size); err != nil {
		return fail(fmt.Errorf("hf: cache: reserving %d bytes for %s: %w", f.Size, clip(f.Path), err))
	}
	var h hash.Hash
	var high int64 // progress already reported
	what := clip(f.Path)
	if f.Size == 0 {
		h = d.new()
	} else {
		err = p.retry(ctx, what, func() error {
			if err := p.acquire(ctx); err != nil {
				return err
			}
			defer p.release()
			h = d.new()
			resp, sent, w, stop, err := p.roundTrip(ctx, p.follow, http.MethodGet, m.location, m.auth, nil)
			if err != nil {
				return err
			}
			defer stop()
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return p.statusError(resp, what, sent)
			}
			if resp.ContentLength >= 0 && resp.ContentLength != f.Size {
				return tagf(ErrIntegrity, "hf: %s: the server sends %d bytes, the file has %d", what, resp.ContentLength, f.Size)
			}
			bp := bufPool.Get().(*[]byte)
			defer bufPool.Put(bp)
			buf := *bp
			var n int64
			r := io.LimitReader(resp.Body, f.Size+1)
			for {
				k, rerr := r.Read(buf)
				if k > 0 {
					w.kick()
					if n+int64(k) > f.Size {
						return tagf(ErrIntegrity, "hf: %s: the server sent more than the %d bytes announced", what, f.Size)
					}
					if _, err := fh.WriteAt(buf[:k], n); err != nil {
						return fmt.Errorf("hf: cache: %w", err)
					}
					h.Write(buf[:k])
					n += int64(k)
					if n > high {
						tr.Add(n - high)
						high = n
					}
				}
				if rerr == io.EOF && n == f.Size {
					return nil
				}
				if rerr != nil {
					return p.readErr(ctx, w, resp.Request.URL.Host, n, f.Size, rerr)
				}
			}
		})
	}
	if err != nil {
		return fail(err)
	}
	if err := d.check(h, f.Path); err != nil {
		return fail(err)
	}
	return p.finish(fh, inc, f.etag())
}

func (p *pull) acquire(ctx context.Context) error {
	select {
	case p.xfer <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *pull) release() { <-p.xfer }

// sidecarMagic starts the header of "<etag>.incomplete.chunks", the record of the
// chunks written (fetch.Partial) next to the .incomplete.
const sidecarMagic = "scopectl-hf-chunks 1"

// fetchChunks downloads a large file as parallel ranges into a preallocated .incomplete,
// resuming from the chunks a previous run recorded that still verify (fetch.Resume).
// The whole file is hashed in order as chunks land, so verification ends with the last
// chunk.
func (p *pull) fetchChunks(ctx context.Context, f remoteFile, m fileMeta, inc string, tr *progress.Tracker) error {
	d := digestOf(f)
	etag := f.etag()
	sideRel := inc + ".chunks"
	what := clip(f.Path)

	fh, err := p.root.OpenFile(fp(inc), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("hf: cache: %w", err)
	}
	part, err := fetch.Resume(p.root, fh, fp(inc), fp(sideRel), fmt.Sprintf("%s %d %d %s", sidecarMagic, f.Size, p.chunk, etag), f.Size, p.chunk, preallocate)
	if err != nil {
		fh.Close()
		_ = p.root.Remove(fp(inc))
		_ = p.root.Remove(fp(sideRel))
		return fmt.Errorf("hf: cache: %s: %w", what, err)
	}
	defer part.Close()
	discard := func(err error) error {
		part.Discard()
		fh.Close()
		return err
	}

	n := part.Chunks()
	bounds := func(i int) (int64, int64) {
		start, end := part.Bounds(i)
		return start, end - 1
	}
	fctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	ready := make([]chan struct{}, n)
	for i := range ready {
		ready[i] = make(chan struct{})
	}
	queue := make(chan int, n)
	for i := 0; i < n; i++ {
		if !part.Done(i) {
			queue <- i
		}
	}
	sp := newSpans(n)
	var wg sync.WaitGroup
	for range min(p.conns, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			poll := time.NewTimer(stealPoll)
			defer poll.Stop()
			for {
				var s *span
				select {
				case i, ok := <-queue:
					if !ok {
						return
					}
					start, end := bounds(i)
					s = sp.add(i, start, end)
				case <-fctx.Done():
					return
				case <-poll.C:
					// Nothing queued: share the largest range still being fetched, so
					// that the last chunks do not crawl on a few connections.
					poll.Reset(stealPoll)
					if s = sp.steal(p.minSteal()); s == nil {
						continue
					}
				}
				if err := p.getRange(fctx, fh, m, f, sp, s, tr); err != nil {
					cancel(err)
					return
				}
				if sp.finish(s) {
					// The chunk is whole: record it for a resume right away, whatever
					// the in-order hasher below has reached.
					if err := part.Seal(s.chunk); err != nil {
						cancel(fmt.Errorf("hf: cache: %w", err))
						return
					}
					close(ready[s.chunk])
				}
				poll.Reset(stealPoll)
			}
		}()
	}

	// Hash the whole file in order as chunks complete (those on record were checked by
	// fetch.Resume).
	whole := d.new()
	herr := func() error {
		for i := 0; i < n; i++ {
			start, end := bounds(i)
			size := end - start + 1
			if part.Done(i) {
				tr.Add(size)
			} else {
				select {
				case <-ready[i]:
				case <-fctx.Done():
					return context.Cause(fctx)
				}
			}
			if _, err := io.Copy(whole, io.NewSectionReader(fh, start, size)); err != nil {
				return fmt.Errorf("hf: cache: %w", err)
			}
		}
		return nil
	}()
	close(queue)
	if herr != nil {
		cancel(herr)
	}
	wg.Wait()
	if herr != nil {
		if errors.Is(herr, ErrIntegrity) {
			return discard(herr)
		}
		fh.Close()
		return herr // .incomplete and sidecar stay for the next run
	}
	if err := d.check(whole, f.Path); err != nil {
		return discard(err)
	}
	part.Complete()
	return p.finish(fh, inc, etag)
}

// stealPoll is how often a connection with nothing queued looks for a range to share.
var stealPoll = 100 * time.Millisecond

// minSteal is the least a connection takes over from another: below it, a new request
// (a round trip, perhaps a new connection in slow start) costs more than it saves.
func (p *pull) minSteal() int64 { return max(p.chunk/8, minStealFloor) }

var minStealFloor int64 = 1 << 20 // tests lower it

// span is a byte range one connection fetches: [off, end], off advancing as bytes are
// written. Another connection may take over its back half, shrinking end.
type span struct {
	chunk    int
	off, end int64 // guarded by spans.mu
}

// spans tracks the ranges being fetched and how many are open per chunk.
type spans struct {
	mu   sync.Mutex
	live map[*span]struct{}
	open []int // per chunk
}

func newSpans(chunks int) *spans {
	return &spans{live: map[*span]struct{}{}, open: make([]int, chunks)}
}

func (sp *spans) add(chunk int, start, end int64) *span {
	s := &span{chunk: chunk, off: start, end: end}
	sp.mu.Lock()
	sp.live[s] = struct{}{}
	sp.open[chunk]++
	sp.mu.Unlock()
	return s
}

// steal splits the span with the most bytes left, if at least 2×least are left, and
// returns its back half as a new span.
func (sp *spans) steal(least int64) *span {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	var victim *span
	var left int64
	for s := range sp.live {
		if l := s.end - s.off + 1; l > left {
			victim, left = s, l
		}
	}
	if victim == nil || left < 2*least {
		return nil
	}
	mid := victim.off + left/2
	s := &span{chunk: victim.chunk, off: mid, end: victim.end}
	victim.end = mid - 1
	sp.live[s] = struct{}{}
	sp.open[s.chunk]++
	return s
}

// next reports where s stands: the next byte to fetch and the last one.
func (sp *spans) next(s *span) (off, end int64) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return s.off, s.end
}

// advance claims up to k bytes at s.off for writing and returns how many lie within the
// span (fewer when its back half was taken meanwhile).
func (sp *spans) advance(s *span, k int64) int64 {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	k = min(k, s.end-s.off+1)
	s.off += k
	return k
}

// finish retires s and reports whether its chunk is complete.
func (sp *spans) finish(s *span) bool {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	delete(sp.live, s)
	sp.open[s.chunk]--
	return sp.open[s.chunk] == 0
}

// getRange fetches span s into fh, resuming within it after a failed attempt. Failures
// without progress are bounded by p.retries.
func (p *pull) getRange(ctx context.Context, fh *os.File, m fileMeta, f remoteFile, sp *spans, s *span, tr *progress.Tracker) error {
	what := clip(f.Path)
	pol := p.policy(what)
	moved := false
	pol.Progressed = func(error) bool { return moved }
	_, err := httpx.Do(ctx, pol, func(int) (struct{}, error) {
		moved = false
		off, end := sp.next(s)
		if off > end {
			return struct{}{}, nil
		}
		if err := p.acquire(ctx); err != nil {
			return struct{}{}, err
		}
		n, err := p.rangeOnce(ctx, fh, m, f, sp, s, off, end, tr)
		p.release()
		moved = n > 0
		return struct{}{}, err
	})
	if err != nil && ctx.Err() != nil {
		return context.Cause(ctx)
	}
	var g *httpx.GaveUpError
	var t *transient
	if errors.As(err, &g) && errors.As(g.Err, &t) {
		return gaveUp(what, g.Attempts, t)
	}
	return err
}

// rangeOnce is one ranged GET of [off, end] for span s, which it advances; it stops
// early when another connection took over the rest of s, and returns the bytes written.
func (p *pull) rangeOnce(ctx context.Context, fh *os.File, m fileMeta, f remoteFile, sp *spans, s *span, off, end int64, tr *progress.Tracker) (int64, error) {
	what := clip(f.Path)
	hdr := http.Header{"Range": {fmt.Sprintf("bytes=%d-%d", off, end)}}
	resp, sent, w, stop, err := p.roundTrip(ctx, p.follow, http.MethodGet, m.location, m.auth, hdr)
	if err != nil {
		return 0, err
	}
	defer stop()
	defer resp.Body.Close()
	want := end - off + 1
	switch resp.StatusCode {
	case http.StatusPartialContent:
		a, b, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || a != off || b != end || (total >= 0 && total != f.Size) {
			return 0, tagf(ErrIntegrity, "hf: %s: asked for bytes %d-%d, the server sent %q", what, off, end, clip(resp.Header.Get("Content-Range")))
		}
	case http.StatusOK:
		if off != 0 || end != f.Size-1 {
			return 0, fmt.Errorf("hf: %s: the download server %s ignores Range requests; run again with one connection", what, resp.Request.URL.Host)
		}
	default:
		return 0, p.statusError(resp, what, sent)
	}
	if resp.ContentLength >= 0 && resp.ContentLength != want {
		return 0, tagf(ErrIntegrity, "hf: %s: asked for %d bytes, the server announces %d", what, want, resp.ContentLength)
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	var n int64
	r := io.LimitReader(resp.Body, want)
	for n < want {
		k, rerr := r.Read(buf)
		if k > 0 {
			w.kick()
			use := sp.advance(s, int64(k))
			if _, err := fh.WriteAt(buf[:use], off+n); err != nil {
				return n, fmt.Errorf("hf: cache: %w", err)
			}
			n += use
			tr.Add(use)
			if use < int64(k) || off+n > end {
				return n, nil
			}
			if _, cur := sp.next(s); off+n > cur {
				return n, nil // the rest of the span is another connection's now
			}
		}
		if rerr != nil {
			if rerr == io.EOF && n == want {
				break
			}
			return n, p.readErr(ctx, w, resp.Request.URL.Host, n, want, rerr)
		}
	}
	return n, nil
}

// parseContentRange is httpx.ParseContentRange (shared with the other hub client).
func parseContentRange(s string) (start, end, total int64, ok bool) {
	return httpx.ParseContentRange(s)
}
