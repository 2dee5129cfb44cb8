// Package fetch keeps a ranged download resumable on disk, for the hub clients (hf,
// civitai) that fetch large files as parallel ranges: the data in one file grown to its
// full size up front, and next to it a sidecar that lists the chunks already written,
// each with the SHA256 of its bytes. A resume trusts a chunk only when its bytes on disk
// still hash as recorded, so a torn write, a lost sidecar line or a damaged file costs a
// re-fetch of that chunk, never a corrupt result; the whole file is still verified by
// its owner before it is put in place.
//
// Sidecar format: one header line that names the download (the caller's magic, the
// expected digest, size and chunk size: a sidecar with any other header belongs to
// another download and is ignored), then one "<index> <sha256 hex>" line per chunk
// written. Lines are appended without fsync.
package fetch

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
)

// MaxSidecar bounds the sidecar read on resume; a larger one is ignored.
const MaxSidecar = 16 << 20

// Partial is a download in progress: Size bytes in chunks of Chunk bytes, in File.
type Partial struct {
	File        *os.File
	Size, Chunk int64

	root       *os.Root
	data, side string // names under root

	mu   sync.Mutex
	sf   *os.File // the sidecar, appended to
	done []bool
}

// Resume prepares file (the data, already open read-write as data under root, and
// locked by the caller when it locks) for a download of size bytes in chunks of chunk
// bytes, with its sidecar at side under root. When the sidecar starts with header (a
// single line, without the newline) and the file holds size bytes, every chunk the
// sidecar lists whose bytes still hash as recorded is Done and the rest are fetched;
// otherwise the file is emptied and grown to size again by grow (nil: Truncate). The
// sidecar is rewritten with the header and the chunks kept.
func Resume(root *os.Root, file *os.File, data, side, header string, size, chunk int64, grow func(*os.File, int64) error) (*Partial, error) {
	if size < 0 || chunk <= 0 || strings.ContainsAny(header, "\r\n") {
		return nil, fmt.Errorf("fetch: bad download shape (size %d, chunk %d)", size, chunk)
	}
	p := &Partial{File: file, Size: size, Chunk: chunk, root: root, data: data, side: side}
	p.done = make([]bool, p.Chunks())
	var kept []string
	if fi, err := file.Stat(); err == nil && fi.Size() == size {
		kept = p.verified(header)
	}
	if len(kept) == 0 {
		if grow == nil {
			grow = (*os.File).Truncate
		}
		err := file.Truncate(0)
		if err == nil {
			err = grow(file, size)
		}
		if err != nil {
			return nil, fmt.Errorf("reserving %d bytes: %w", size, err)
		}
	}
	sf, err := root.OpenFile(side, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	if _, err := sf.WriteString(header + "\n" + strings.Join(append(kept, ""), "\n")); err != nil {
		sf.Close()
		return nil, err
	}
	p.sf = sf
	return p, nil
}

// verified reads the sidecar and returns its lines whose chunks still hash as recorded,
// marking those chunks done; nil when the sidecar is missing or another download's.
func (p *Partial) verified(header string) []string {
	f, err := p.root.Open(p.side)
	if err != nil {
		return nil
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxSidecar+1))
	f.Close()
	if err != nil || len(b) > MaxSidecar || !bytes.HasPrefix(b, []byte(header+"\n")) {
		return nil
	}
	var kept []string
	sc := bufio.NewScanner(bytes.NewReader(b[len(header)+1:]))
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) != 2 || len(fs[1]) != 64 {
			continue // a torn last line
		}
		i, err := strconv.Atoi(fs[0])
		if err != nil || i < 0 || i >= len(p.done) || p.done[i] {
			continue
		}
		if sum, err := p.Hash(i); err == nil && hex.EncodeToString(sum) == strings.ToLower(fs[1]) {
			p.done[i] = true
			kept = append(kept, strconv.Itoa(i)+" "+fs[1])
		}
	}
	return kept
}

// Chunks is the number of chunks.
func (p *Partial) Chunks() int { return int((p.Size + p.Chunk - 1) / p.Chunk) }

// Bounds are chunk i's first byte and the byte after its last.
func (p *Partial) Bounds(i int) (start, end int64) {
	start = int64(i) * p.Chunk
	return start, min(start+p.Chunk, p.Size)
}

// Done reports whether chunk i was on record and still hashed as recorded at Resume.
func (p *Partial) Done(i int) bool { return p.done[i] }

// Have is the number of bytes in the chunks that are Done.
func (p *Partial) Have() int64 {
	var n int64
	for i, ok := range p.done {
		if ok {
			s, e := p.Bounds(i)
			n += e - s
		}
	}
	return n
}

// Hash is the SHA256 of chunk i's bytes as they are on disk.
func (p *Partial) Hash(i int) ([]byte, error) {
	s, e := p.Bounds(i)
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(p.File, s, e-s)); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

// Record puts chunk i, whose bytes hash to sum, on record for a resume.
func (p *Partial) Record(i int, sum []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sf == nil {
		return os.ErrClosed
	}
	_, err := fmt.Fprintf(p.sf, "%d %x\n", i, sum)
	return err
}

// Seal hashes chunk i as it is on disk and puts it on record.
func (p *Partial) Seal(i int) error {
	sum, err := p.Hash(i)
	if err != nil {
		return err
	}
	return p.Record(i, sum)
}

// Close closes the sidecar; the data and the sidecar stay for a resume.
func (p *Partial) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sf != nil {
		p.sf.Close()
		p.sf = nil
	}
}

// Complete removes the sidecar of a download that is whole (the data is the caller's
// to put in place).
func (p *Partial) Complete() {
	p.Close()
	_ = p.root.Remove(p.side)
}

// Discard empties and removes the data and the sidecar (after an integrity failure:
// nothing of it is worth a resume). File stays open for the caller to close.
func (p *Partial) Discard() {
	p.Close()
	_ = p.File.Truncate(0)
	_ = p.root.Remove(p.data)
	_ = p.root.Remove(p.side)
}
