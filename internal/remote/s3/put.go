package s3

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/daydreamlive/scopectl/internal/remote"
)

// Put publishes src as name.
//
// Content up to one part goes in a single PutObject. Anything larger goes through a
// multipart upload to the final key, parts sent in parallel; the object appears only when
// CompleteMultipartUpload succeeds, which happens only after the whole content read from
// src hashed to src.SHA256. Every part carries Content-MD5 and its sha256 as the signed
// payload hash (x-amz-content-sha256), so the server rejects a part damaged on the way.
//
// An interrupted Put leaves its multipart upload open. S3 cannot tell what an open upload
// holds (ListMultipartUploads and ListParts return no user metadata), so the upload is
// recorded in a small marker object under remote.TempName(name, sha256) — a dot-file
// List and Scope skip — holding the upload id, content sha256 and part size. The next Put
// of the same content finds the upload through ListMultipartUploads and the marker,
// lists its parts (ListParts), keeps every part whose size and ETag match the MD5 of
// the local chunk, uploads the rest and completes. Open uploads of the key for other
// content (or without a marker) are aborted.
func (s *S3) Put(ctx context.Context, name string, src remote.Source, opt remote.PutOptions) (remote.PutResult, error) {
	var res remote.PutResult
	if err := remote.CheckName(name); err != nil {
		return res, err
	}
	if src.Size < 0 || src.R == nil {
		return res, s.errf("put %s: bad source", name)
	}
	if !isSHA256Hex(src.SHA256) {
		return res, s.errf("put %s: expected sha256 %q is not 64 lowercase hex digits", name, src.SHA256)
	}
	if err := ctx.Err(); err != nil {
		return res, s.errf("put %s: %w", name, err)
	}
	var prog func([]byte)
	if opt.Progress != nil {
		var mu sync.Mutex
		prog = func(b []byte) {
			mu.Lock()
			opt.Progress.Write(b)
			mu.Unlock()
		}
	}
	if src.Size <= s.partSize {
		return s.putSingle(ctx, name, src, prog)
	}
	return s.putMultipart(ctx, name, src, prog)
}

// putSingle verifies the whole content, then sends it in one PutObject.
func (s *S3) putSingle(ctx context.Context, name string, src remote.Source, prog func([]byte)) (remote.PutResult, error) {
	var res remote.PutResult
	buf := make([]byte, src.Size)
	if err := readAt(ctx, src.R, buf, 0); err != nil {
		return res, s.errf("put %s: reading source: %w", name, err)
	}
	sum := sha256.Sum256(buf)
	if got := hex.EncodeToString(sum[:]); got != src.SHA256 {
		return res, s.errf("put %s: %w: got %s, expected %s", name, remote.ErrHashMismatch, got, src.SHA256)
	}
	md := md5.Sum(buf)
	_, err := s.core.PutObject(ctx, s.bucket, s.key(name), newPartReader(buf, prog), src.Size,
		base64.StdEncoding.EncodeToString(md[:]), src.SHA256, minio.PutObjectOptions{
			UserMetadata:         map[string]string{metaSHA256: src.SHA256},
			DisableContentSha256: true, // we pass the real payload sha256: signed, checked by the server
		})
	if err != nil {
		return res, s.errf("put %s: %w", name, err)
	}
	res.Sent = src.Size
	return res, nil
}

// marker is the content of the marker object of an open multipart upload.
type marker struct {
	UploadID string `json:"upload_id"`
	SHA256   string `json:"sha256"`
	Size     int64  `json:"size"`
	PartSize int64  `json:"part_size"`
}

// upload is the multipart upload a Put sends its parts to.
type upload struct {
	id        string
	partSize  int64
	have      map[int]minio.ObjectPart // parts already on the server (resume)
	markerKey string
}

type job struct {
	n   int // part number, from 1
	buf []byte
}

func (s *S3) putMultipart(ctx context.Context, name string, src remote.Source, prog func([]byte)) (remote.PutResult, error) {
	var res remote.PutResult
	key := s.key(name)
	up, err := s.openUpload(ctx, name, src)
	if err != nil {
		return res, err
	}
	ps := up.partSize
	nParts := int((src.Size + ps - 1) / ps)

	pctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		mu    sync.Mutex
		parts = make([]minio.CompletePart, nParts)
		upErr error
		wg    sync.WaitGroup
		jobs  = make(chan job)
		bufs  = make(chan []byte, s.parallel+1) // parallel parts in flight + the one being read
	)
	for range s.parallel + 1 {
		bufs <- nil // allocated on first use
	}
	for range min(s.parallel, nParts) {
		wg.Go(func() {
			for j := range jobs {
				cp, reused, err := s.sendPart(pctx, key, up, j, prog)
				mu.Lock()
				switch {
				case err != nil:
					if upErr == nil {
						upErr = fmt.Errorf("part %d: %w", j.n, err)
						cancel(upErr)
					}
				case reused:
					parts[j.n-1] = cp
					res.Resumed += int64(len(j.buf))
				default:
					parts[j.n-1] = cp
					res.Sent += int64(len(j.buf))
				}
				mu.Unlock()
				bufs <- j.buf
			}
		})
	}

	// Read the chunks in order, hashing the whole content as it goes by; the workers
	// hash and send each chunk.
	h := sha256.New()
	var readErr error
feed:
	for n := 1; n <= nParts; n++ {
		off := int64(n-1) * ps
		var buf []byte
		select {
		case buf = <-bufs:
		case <-pctx.Done():
			break feed
		}
		if buf == nil {
			buf = make([]byte, ps)
		}
		buf = buf[:min(ps, src.Size-off)]
		if err := readAt(pctx, src.R, buf, off); err != nil {
			readErr = err
			break
		}
		h.Write(buf)
		select {
		case jobs <- job{n: n, buf: buf}:
		case <-pctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait() // after a read error, parts in flight still finish: a resume keeps them

	// Any failure so far leaves the upload open for a resume.
	if upErr != nil {
		return res, s.errf("put %s: %w", name, upErr)
	}
	if err := ctx.Err(); err != nil {
		return res, s.errf("put %s: %w", name, err)
	}
	if readErr != nil {
		return res, s.errf("put %s: reading source: %w", name, readErr)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != src.SHA256 {
		s.abandon(ctx, key, up)
		return res, s.errf("put %s: %w: got %s, expected %s", name, remote.ErrHashMismatch, got, src.SHA256)
	}
	if _, err := s.core.CompleteMultipartUpload(ctx, s.bucket, key, up.id, parts, minio.PutObjectOptions{}); err != nil {
		return res, s.errf("put %s: complete multipart upload: %w", name, err)
	}
	cctx, ccancel := cleanupCtx(ctx)
	defer ccancel()
	s.core.RemoveObject(cctx, s.bucket, up.markerKey, minio.RemoveObjectOptions{}) // best effort: a stale marker is ignored
	return res, nil
}

// sendPart uploads one chunk, unless the server already holds it (same size, ETag = MD5).
func (s *S3) sendPart(ctx context.Context, key string, up *upload, j job, prog func([]byte)) (minio.CompletePart, bool, error) {
	md := md5.Sum(j.buf)
	mdHex := hex.EncodeToString(md[:])
	if p, ok := up.have[j.n]; ok && p.Size == int64(len(j.buf)) && strings.EqualFold(strings.Trim(p.ETag, `"`), mdHex) {
		return minio.CompletePart{PartNumber: j.n, ETag: p.ETag}, true, nil
	}
	sh := sha256.Sum256(j.buf)
	op, err := s.core.PutObjectPart(ctx, s.bucket, key, up.id, j.n, newPartReader(j.buf, prog), int64(len(j.buf)),
		minio.PutObjectPartOptions{
			Md5Base64:            base64.StdEncoding.EncodeToString(md[:]),
			Sha256Hex:            hex.EncodeToString(sh[:]),
			DisableContentSha256: true, // no aws-chunked streaming: the real sha256 is signed instead
		})
	if err != nil {
		return minio.CompletePart{}, false, err
	}
	return minio.CompletePart{PartNumber: j.n, ETag: op.ETag}, false, nil
}

// openUpload finds the open multipart upload of this content to resume, aborting the
// key's other uploads, or starts a new one.
func (s *S3) openUpload(ctx context.Context, name string, src remote.Source) (*upload, error) {
	key := s.key(name)
	uploads, err := s.listUploads(ctx, key)
	if err != nil {
		return nil, s.errf("put %s: list multipart uploads: %w", name, err)
	}
	markers, err := s.listMarkers(ctx, name)
	if err != nil {
		return nil, s.errf("put %s: list upload markers: %w", name, err)
	}
	ours := s.key(remote.TempName(name, src.SHA256))
	var up *upload
	if markers[ours] && len(uploads) > 0 {
		mk, err := s.readMarker(ctx, ours)
		if err != nil && ctx.Err() != nil {
			return nil, s.errf("put %s: %w", name, ctx.Err())
		}
		if err == nil && mk.SHA256 == src.SHA256 && mk.Size == src.Size && validPartSize(mk.PartSize, src.Size) && uploads[mk.UploadID] {
			have, err := s.listParts(ctx, key, mk.UploadID)
			switch {
			case err == nil:
				up = &upload{id: mk.UploadID, partSize: mk.PartSize, have: have, markerKey: ours}
			case s3Code(err) != "NoSuchUpload": // gone meanwhile: start afresh
				return nil, s.errf("put %s: list parts: %w", name, err)
			}
		}
	}
	// Uploads of other content, and ours if we cannot resume it, are garbage now (RunPod
	// keeps their parts on the volume until aborted).
	for id := range uploads {
		if up == nil || id != up.id {
			s.core.AbortMultipartUpload(ctx, s.bucket, key, id) // best effort, like the markers
		}
	}
	for mk := range markers {
		if up == nil || mk != up.markerKey {
			s.core.RemoveObject(ctx, s.bucket, mk, minio.RemoveObjectOptions{}) // best effort
		}
	}
	if up != nil {
		return up, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, s.errf("put %s: %w", name, err)
	}

	ps := partSizeFor(s.partSize, src.Size)
	if !validPartSize(ps, src.Size) {
		return nil, s.errf("put %s: %d bytes is more than S3 takes in %d parts", name, src.Size, MaxParts)
	}
	id, err := s.core.NewMultipartUpload(ctx, s.bucket, key, minio.PutObjectOptions{
		// Given at creation, the metadata is what the completed object carries.
		UserMetadata: map[string]string{metaSHA256: src.SHA256},
	})
	if err != nil {
		return nil, s.errf("put %s: create multipart upload: %w", name, err)
	}
	up = &upload{id: id, partSize: ps, markerKey: ours}
	if err := s.writeMarker(ctx, ours, marker{UploadID: id, SHA256: src.SHA256, Size: src.Size, PartSize: ps}); err != nil {
		s.abandon(ctx, key, up)
		return nil, s.errf("put %s: write upload marker: %w", name, err)
	}
	return up, nil
}

// abandon aborts an upload and removes its marker, even if ctx has ended.
func (s *S3) abandon(ctx context.Context, key string, up *upload) {
	cctx, cancel := cleanupCtx(ctx)
	defer cancel()
	s.core.AbortMultipartUpload(cctx, s.bucket, key, up.id)
	s.core.RemoveObject(cctx, s.bucket, up.markerKey, minio.RemoveObjectOptions{})
}

func cleanupCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
}

// partSizeFor grows the configured part size (in whole MiB) when the content would
// otherwise need more than S3's 10,000 parts.
func partSizeFor(ps, size int64) int64 {
	if least := (size + MaxParts - 1) / MaxParts; least > ps {
		ps = (least + 1<<20 - 1) &^ (1<<20 - 1)
	}
	return ps
}

func validPartSize(ps, size int64) bool {
	return ps >= MinPartSize && ps <= MaxPartSize && (size+ps-1)/ps <= MaxParts
}

// listUploads returns the ids of the open multipart uploads of exactly key.
func (s *S3) listUploads(ctx context.Context, key string) (map[string]bool, error) {
	out := map[string]bool{}
	keyMarker, idMarker := "", ""
	for {
		r, err := s.core.ListMultipartUploads(ctx, s.bucket, key, keyMarker, idMarker, "", 1000)
		if err != nil {
			if s3Code(err) == "NoSuchUpload" {
				return out, nil // gofakes3's answer for a bucket that never had one; S3 lists none
			}
			return nil, err
		}
		for _, u := range r.Uploads {
			if u.Key == key { // the prefix also matches longer keys
				out[u.UploadID] = true
			}
		}
		if !r.IsTruncated {
			return out, nil
		}
		if r.NextKeyMarker == keyMarker && r.NextUploadIDMarker == idMarker || r.NextKeyMarker == "" {
			return nil, fmt.Errorf("ListMultipartUploads truncated without advancing")
		}
		if r.NextKeyMarker > key {
			return out, nil // past our key: the rest are longer keys
		}
		keyMarker, idMarker = r.NextKeyMarker, r.NextUploadIDMarker
	}
}

// listParts returns the parts of an open upload by part number.
func (s *S3) listParts(ctx context.Context, key, id string) (map[int]minio.ObjectPart, error) {
	out := map[int]minio.ObjectPart{}
	next := 0
	for {
		r, err := s.core.ListObjectParts(ctx, s.bucket, key, id, next, 1000)
		if err != nil {
			return nil, err
		}
		for _, p := range r.ObjectParts {
			out[p.PartNumber] = p
		}
		if !r.IsTruncated {
			return out, nil
		}
		if r.NextPartNumberMarker <= next {
			return nil, fmt.Errorf("ListParts truncated without advancing")
		}
		next = r.NextPartNumberMarker
	}
}

// listMarkers returns the keys of the upload markers for name (any content).
func (s *S3) listMarkers(ctx context.Context, name string) (map[string]bool, error) {
	out := map[string]bool{}
	base := s.prefix + remote.TempPrefix
	for obj := range s.core.ListObjectsIter(ctx, s.bucket, minio.ListObjectsOptions{Prefix: base, MaxKeys: s.listPageSize, FetchOwner: new(bool)}) {
		if obj.Err != nil {
			return nil, obj.Err
		}
		// TempPrefix + 16 hex digits + "-" + name + ".tmp"
		rest := strings.TrimPrefix(obj.Key, base)
		if len(rest) > 17 && rest[16] == '-' && rest[17:] == name+".tmp" {
			out[obj.Key] = true
		}
	}
	return out, ctx.Err()
}

func (s *S3) readMarker(ctx context.Context, key string) (marker, error) {
	var mk marker
	rc, _, _, err := s.core.GetObject(ctx, s.bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return mk, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, 4096))
	if err != nil {
		return mk, err
	}
	return mk, json.Unmarshal(b, &mk)
}

func (s *S3) writeMarker(ctx context.Context, key string, mk marker) error {
	b, err := json.Marshal(mk)
	if err != nil {
		return err
	}
	md := md5.Sum(b)
	sh := sha256.Sum256(b)
	_, err = s.core.PutObject(ctx, s.bucket, key, bytes.NewReader(b), int64(len(b)),
		base64.StdEncoding.EncodeToString(md[:]), hex.EncodeToString(sh[:]),
		minio.PutObjectOptions{ContentType: "application/json", DisableContentSha256: true})
	return err
}

// readAt fills buf from r at off.
func readAt(ctx context.Context, r io.ReaderAt, buf []byte, off int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	n, err := r.ReadAt(buf, off)
	if n == len(buf) {
		return nil // io.ReaderAt may report io.EOF along with the last bytes
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// partReader is the request body of one part. It is seekable, so minio can retry the
// request, and reports each byte to the progress sink once, however often it is re-sent.
type partReader struct {
	r    *bytes.Reader
	buf  []byte
	high int64 // bytes reported so far
	prog func([]byte)
}

func newPartReader(buf []byte, prog func([]byte)) *partReader {
	return &partReader{r: bytes.NewReader(buf), buf: buf, prog: prog}
}

func (p *partReader) Read(b []byte) (int, error) {
	pos := p.r.Size() - int64(p.r.Len())
	n, err := p.r.Read(b)
	if end := pos + int64(n); end > p.high {
		if p.prog != nil {
			p.prog(p.buf[max(pos, p.high):end])
		}
		p.high = end
	}
	return n, err
}

func (p *partReader) Seek(off int64, whence int) (int64, error) { return p.r.Seek(off, whence) }

// CleanTemps implements remote.TempCleaner. It reads every upload marker in the folder:
// a marker whose object is complete with the marker's content (a Put killed between
// CompleteMultipartUpload and removing the marker) is removed, with the upload if it is
// somehow still open; when unwanted(name) is true, the name's open multipart uploads
// are aborted (their parts stay on the volume until then) and its markers removed.
// Markers of interrupted uploads still wanted stay, for the next Put to resume.
func (s *S3) CleanTemps(ctx context.Context, unwanted func(name string) bool) ([]string, error) {
	base := s.prefix + remote.TempPrefix
	byName := map[string][]string{} // name -> marker keys
	for obj := range s.core.ListObjectsIter(ctx, s.bucket, minio.ListObjectsOptions{Prefix: base, MaxKeys: s.listPageSize, FetchOwner: new(bool)}) {
		if obj.Err != nil {
			return nil, s.errf("clean up: list upload markers: %w", obj.Err)
		}
		// TempPrefix + 16 hex digits + "-" + name + ".tmp"
		rest := strings.TrimPrefix(obj.Key, base)
		if len(rest) <= 17 || rest[16] != '-' || !strings.HasSuffix(rest, ".tmp") {
			continue
		}
		name := strings.TrimSuffix(rest[17:], ".tmp")
		if remote.CheckName(name) != nil {
			continue
		}
		byName[name] = append(byName[name], obj.Key)
	}
	if err := ctx.Err(); err != nil {
		return nil, s.errf("clean up: %w", err)
	}
	names := make([]string, 0, len(byName))
	for name := range byName {
		names = append(names, name)
	}
	sort.Strings(names)
	var cleaned []string
	for _, name := range names {
		key := s.key(name)
		uploads, err := s.listUploads(ctx, key)
		if err != nil {
			return cleaned, s.errf("clean up %s: list multipart uploads: %w", name, err)
		}
		var drop []string
		abort := map[string]bool{}
		if unwanted != nil && unwanted(name) {
			drop = byName[name]
			abort = uploads
		} else {
			for _, mkKey := range byName[name] {
				mk, err := s.readMarker(ctx, mkKey)
				if err != nil {
					continue // unreadable: a Put of this name replaces it
				}
				info, err := s.core.StatObject(ctx, s.bucket, key, minio.StatObjectOptions{})
				if err != nil || info.Size != mk.Size || metaSHA(info) != mk.SHA256 {
					continue // not complete: the next Put resumes it
				}
				drop = append(drop, mkKey)
				if uploads[mk.UploadID] {
					abort[mk.UploadID] = true
				}
			}
		}
		if len(drop) == 0 {
			continue
		}
		for id := range abort {
			if err := s.core.AbortMultipartUpload(ctx, s.bucket, key, id); err != nil && s3Code(err) != "NoSuchUpload" {
				return cleaned, s.errf("clean up %s: abort multipart upload: %w", name, err)
			}
		}
		for _, mkKey := range drop {
			if err := s.core.RemoveObject(ctx, s.bucket, mkKey, minio.RemoveObjectOptions{}); err != nil {
				return cleaned, s.errf("clean up %s: remove upload marker: %w", name, err)
			}
		}
		cleaned = append(cleaned, name)
	}
	return cleaned, nil
}
