package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/klauspost/compress/zstd"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	api "github.com/daydreamlive/scopectl/internal/agent"
	"github.com/daydreamlive/scopectl/internal/remote"
)

// Put creates or resumes the agent's upload session for (name, sha256), sends the chunks
// the agent does not have yet in parallel, each with its sha256, and commits; the agent
// verifies the whole sha256 before it publishes.
func (r *Remote) Put(ctx context.Context, name string, src remote.Source, opt remote.PutOptions) (remote.PutResult, error) {
	var res remote.PutResult
	if err := remote.CheckName(name); err != nil {
		return res, err
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	if !api.IsSHA256(src.SHA256) {
		return res, fmt.Errorf("put %s: the source's sha256 %q is not 64 lowercase hex digits", name, src.SHA256)
	}
	if src.Size < 0 {
		return res, fmt.Errorf("put %s: negative size", name)
	}
	body, err := json.Marshal(api.CreateRequest{Name: name, Size: src.Size, SHA256: src.SHA256, ChunkSize: r.chunkSize})
	if err != nil {
		return res, err
	}
	var up api.Upload
	if err := r.do(ctx, &request{op: "start upload of " + name, method: http.MethodPost, path: "/v1/uploads",
		body: func() io.Reader { return bytes.NewReader(body) }, size: int64(len(body)),
		header: http.Header{"Content-Type": {"application/json"}}, timeout: r.timeout}, &up); err != nil {
		return res, err
	}
	if up.ChunkSize < api.MinChunkSize || up.ChunkSize > api.MaxChunkSize || up.Chunks != api.NumChunks(src.Size, up.ChunkSize) ||
		up.Name != name || up.SHA256 != src.SHA256 || up.Size != src.Size || up.ID == "" {
		return res, fmt.Errorf("start upload of %s: the agent answered an inconsistent session", name)
	}
	have := make([]bool, up.Chunks)
	for _, i := range up.Have {
		if i >= 0 && i < up.Chunks && !have[i] {
			have[i] = true
			res.Resumed += api.ChunkLen(src.Size, up.ChunkSize, i)
		}
	}
	var todo []int
	for i, h := range have {
		if !h {
			todo = append(todo, i)
		}
	}
	p := &progress{w: opt.Progress, seen: make([]int64, up.Chunks)}
	commit := &request{op: "commit " + name, method: http.MethodPost, path: "/v1/uploads/" + url.PathEscape(up.ID) + "/commit",
		// The agent reads the whole file back to verify it: allow for ~20 MB/s.
		timeout: r.timeout + time.Duration(src.Size/(20<<20))*time.Second}
	for range 3 {
		sent, err := r.sendChunks(ctx, name, &up, src, todo, p)
		res.Sent += sent
		if err != nil {
			return res, r.vanished(ctx, name, src, err)
		}
		var e remote.Entry
		err = r.do(ctx, commit, &e)
		var ae *Error
		if errors.As(err, &ae) && ae.Code == api.CodeIncomplete && len(ae.Missing) > 0 {
			todo = todo[:0]
			for _, i := range ae.Missing {
				if i >= 0 && i < up.Chunks {
					todo = append(todo, i)
					if have[i] { // counted as resumed, but must be sent after all
						have[i] = false
						res.Resumed -= api.ChunkLen(src.Size, up.ChunkSize, i)
					}
				}
			}
			continue
		}
		if err != nil {
			return res, r.vanished(ctx, name, src, err)
		}
		return res, nil
	}
	return res, fmt.Errorf("put %s: the agent still misses chunks after three rounds", name)
}

// vanished turns "the session is gone" into success when the content was published
// meanwhile (a commit whose reply was lost, or a concurrent Put of the same content).
func (r *Remote) vanished(ctx context.Context, name string, src remote.Source, err error) error {
	var ae *Error
	if !errors.As(err, &ae) || ae.Code != api.CodeNoUpload || ctx.Err() != nil {
		return err
	}
	if sha, herr := r.Hash(ctx, name); herr == nil && sha == src.SHA256 {
		return nil
	}
	return fmt.Errorf("%w; run the command again to start over", err)
}

// sendChunks uploads chunks todo with r.parallel workers. After the first failure no new
// chunk starts; chunks already in flight finish (so that a resume can use them).
func (r *Remote) sendChunks(ctx context.Context, name string, up *api.Upload, src remote.Source, todo []int, p *progress) (int64, error) {
	if len(todo) == 0 {
		return 0, nil
	}
	var (
		mu       sync.Mutex
		firstErr error
		sent     int64
		wg       sync.WaitGroup
		next     = make(chan int)
		stop     = make(chan struct{})
	)
	for range min(r.parallel, len(todo)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, up.ChunkSize)
			for i := range next {
				n, err := r.sendChunk(ctx, name, up, src, i, buf, p)
				mu.Lock()
				sent += n
				if err != nil && firstErr == nil {
					firstErr = err
					close(stop)
				}
				mu.Unlock()
			}
		}()
	}
dispatch:
	for _, i := range todo {
		select {
		case next <- i:
		case <-stop:
			break dispatch
		case <-ctx.Done():
			break dispatch
		}
	}
	close(next)
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return sent, firstErr
}

func (r *Remote) sendChunk(ctx context.Context, name string, up *api.Upload, src remote.Source, i int, buf []byte, p *progress) (int64, error) {
	off := int64(i) * up.ChunkSize
	n := api.ChunkLen(up.Size, up.ChunkSize, i)
	data := buf[:n]
	if k, err := src.R.ReadAt(data, off); int64(k) < n {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, fmt.Errorf("put %s: reading the source at offset %d: %w", name, off, err)
	}
	q := &request{
		op:     fmt.Sprintf("chunk %d of %d of %s", i+1, up.Chunks, name),
		method: http.MethodPut,
		path:   "/v1/uploads/" + url.PathEscape(up.ID) + "/chunks/" + strconv.Itoa(i),
		body:   func() io.Reader { return &progressReader{r: bytes.NewReader(data), p: p, i: i} },
		size:   n,
		header: http.Header{
			http.CanonicalHeaderKey(api.ChunkSHA256Header): {chunkHash(data)},
			"Content-Type": {"application/octet-stream"},
		},
		timeout: r.timeout,
	}
	if r.compress {
		// Send the chunk zstd-compressed when that saves at least 5 %; progress still
		// counts the chunk's own bytes, in proportion to the compressed bytes sent.
		if comp := zenc().EncodeAll(data, make([]byte, 0, len(data)/2)); int64(len(comp)) < n-n/20 {
			q.size = int64(len(comp))
			q.header.Set("Content-Encoding", "zstd")
			q.body = func() io.Reader {
				return &scaledProgressReader{r: bytes.NewReader(comp), p: p, i: i, raw: data, ratio: float64(n) / float64(len(comp))}
			}
		}
	}
	if err := r.do(ctx, q, nil); err != nil {
		return 0, err
	}
	p.add(i, 0, data) // whatever the transport read without it being counted
	return n, nil
}

// progress passes every payload byte to PutOptions.Progress once, however often a chunk
// is sent again: per chunk, only bytes beyond those already reported count.
type progress struct {
	mu   sync.Mutex
	w    io.Writer
	seen []int64
}

func (p *progress) add(i int, pos int64, b []byte) {
	if p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	end := pos + int64(len(b))
	if end <= p.seen[i] {
		return
	}
	start := max(pos, p.seen[i])
	p.w.Write(b[start-pos:])
	p.seen[i] = end
}

type progressReader struct {
	r   *bytes.Reader
	p   *progress
	i   int
	pos int64
}

func (pr *progressReader) Read(b []byte) (int, error) {
	n, err := pr.r.Read(b)
	if n > 0 {
		pr.p.add(pr.i, pr.pos, b[:n])
		pr.pos += int64(n)
	}
	return n, err
}

var zenc = sync.OnceValue(func() *zstd.Encoder {
	e, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBetterCompression))
	return e
})

// scaledProgressReader reports the raw bytes a compressed body stands for, as it is read.
type scaledProgressReader struct {
	r     *bytes.Reader
	p     *progress
	i     int
	raw   []byte
	ratio float64
	pos   int64 // compressed bytes read
}

func (sr *scaledProgressReader) Read(b []byte) (int, error) {
	n, err := sr.r.Read(b)
	if n > 0 {
		from := min(int64(float64(sr.pos)*sr.ratio), int64(len(sr.raw)))
		sr.pos += int64(n)
		to := min(int64(float64(sr.pos)*sr.ratio), int64(len(sr.raw)))
		sr.p.add(sr.i, from, sr.raw[from:to])
	}
	return n, err
}
