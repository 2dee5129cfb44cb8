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
	what := clip(f.Path)
	if f.Size > 0 {
		dl := &fetch.Download{File: fh, Size: f.Size, Whole: true, Src: &source{p: p, m: m, f: f, whole: true},
			Conns: 1, Policy: p.policy(what), Added: tr.Add}
		if err := dl.Run(ctx); err != nil {
			return fail(p.downloadErr(what, err))
		}
	}
	h := d.new()
	if _, err := io.Copy(h, io.NewSectionReader(fh, 0, f.Size)); err != nil {
		return fail(fmt.Errorf("hf: cache: %w", err))
	}
	if err := d.check(h, f.Path); err != nil {
		return fail(err)
	}
	return p.finish(fh, inc, f.etag())
}

// downloadErr is the error of a download of what that failed with err (fetch.Download).
func (p *pull) downloadErr(what string, err error) error {
	var we *fetch.WriteError
	if errors.As(err, &we) {
		return fmt.Errorf("hf: cache: %w", we.Err)
	}
	return p.retried(what, err)
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
	fctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	ready := make([]chan struct{}, n)
	for i := range ready {
		ready[i] = make(chan struct{})
	}
	dl := &fetch.Download{File: fh, Part: part, Src: &source{p: p, m: m, f: f}, Conns: p.conns,
		Policy: p.policy(what), MinSteal: p.minSteal(), Added: tr.Add,
		Sealed: func(i int) { close(ready[i]) }}
	ran := make(chan error, 1)
	go func() {
		err := dl.Run(fctx)
		if err != nil {
			cancel(err)
		}
		ran <- err
	}()

	// Hash the whole file in order as chunks complete (those on record were checked by
	// fetch.Resume).
	whole := d.new()
	herr := func() error {
		for i := 0; i < n; i++ {
			start, end := part.Bounds(i)
			size := end - start
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
	if herr != nil {
		cancel(herr)
	}
	<-ran
	if herr != nil {
		herr = p.downloadErr(what, herr)
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

// minSteal is the least a connection takes over from another: below it, a new request
// (a round trip, perhaps a new connection in slow start) costs more than it saves.
func (p *pull) minSteal() int64 { return max(p.chunk/8, minStealFloor) }

var minStealFloor int64 = 1 << 20 // tests lower it

// source is the file's bytes on the Hub's CDN (fetch.Source): ranged GETs under a
// watchdog, each answer checked; whole: one plain GET of a small file.
type source struct {
	p     *pull
	m     fileMeta
	f     remoteFile
	whole bool
}

func (src *source) Range(ctx context.Context, off, end int64) (io.ReadCloser, error) {
	p, f := src.p, src.f
	what := clip(f.Path)
	if err := p.acquire(ctx); err != nil {
		return nil, err
	}
	var hdr http.Header
	if !src.whole {
		hdr = http.Header{"Range": {fmt.Sprintf("bytes=%d-%d", off, end)}}
	}
	resp, sent, w, stop, err := p.roundTrip(ctx, p.follow, http.MethodGet, src.m.location, src.m.auth, hdr)
	if err != nil {
		p.release()
		return nil, err
	}
	b := &body{ctx: ctx, p: p, resp: resp, w: w, want: end - off + 1, done: func() { stop(); p.release() }}
	fail := func(err error) (io.ReadCloser, error) {
		b.Close()
		return nil, err
	}
	switch {
	case src.whole:
		if resp.StatusCode != http.StatusOK {
			return fail(p.statusError(resp, what, sent))
		}
		if resp.ContentLength >= 0 && resp.ContentLength != f.Size {
			return fail(tagf(ErrIntegrity, "hf: %s: the server sends %d bytes, the file has %d", what, resp.ContentLength, f.Size))
		}
		return b, nil
	case resp.StatusCode == http.StatusPartialContent:
		a, z, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || a != off || z != end || (total >= 0 && total != f.Size) {
			return fail(tagf(ErrIntegrity, "hf: %s: asked for bytes %d-%d, the server sent %q", what, off, end, clip(resp.Header.Get("Content-Range"))))
		}
	case resp.StatusCode == http.StatusOK:
		if off != 0 || end != f.Size-1 {
			return fail(fmt.Errorf("hf: %s: the download server %s ignores Range requests; run again with one connection", what, resp.Request.URL.Host))
		}
	default:
		return fail(p.statusError(resp, what, sent))
	}
	if resp.ContentLength >= 0 && resp.ContentLength != b.want {
		return fail(tagf(ErrIntegrity, "hf: %s: asked for %d bytes, the server announces %d", what, b.want, resp.ContentLength))
	}
	return b, nil
}

// body is an answer's body: every read kicks the watchdog, and a read that fails (or
// ends short) is classified (readErr).
type body struct {
	ctx       context.Context
	p         *pull
	resp      *http.Response
	w         *watchdog
	got, want int64
	done      func()
}

func (b *body) Read(buf []byte) (int, error) {
	k, err := b.resp.Body.Read(buf)
	if k > 0 {
		b.w.kick()
		b.got += int64(k)
	}
	if err == io.EOF && b.got >= b.want {
		return k, io.EOF
	}
	if err != nil {
		return k, b.p.readErr(b.ctx, b.w, b.resp.Request.URL.Host, b.got, b.want, err)
	}
	return k, nil
}

func (b *body) Close() error {
	err := b.resp.Body.Close()
	b.done()
	return err
}

// parseContentRange is httpx.ParseContentRange (shared with the other hub client).
func parseContentRange(s string) (start, end, total int64, ok bool) {
	return httpx.ParseContentRange(s)
}
