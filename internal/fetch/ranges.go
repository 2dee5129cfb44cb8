package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/daydreamlive/scopectl/internal/httpx"
)

// Source is where a ranged download's bytes come from: the hub's URL and auth, its
// checks of each answer, and its words for each failure.
type Source interface {
	// Range opens bytes [off, end] (end inclusive) of the file (with Download.Whole:
	// the whole file, off 0). The body yields exactly those bytes; a failure while
	// reading it, a short body included, is an error the download's Policy can
	// classify (a body cut short is worth a retry). Closing the body releases the
	// answer.
	Range(ctx context.Context, off, end int64) (io.ReadCloser, error)
}

// Download fetches a file into File over Conns connections, each range retried under
// Policy and resumed where it broke off. With Part, the chunks not Done are fetched and
// each whole chunk is put on record (Partial.Seal) as it completes; once nothing is
// left to start, an idle connection takes over the back half of the largest range still
// in flight (at least 2×MinSteal bytes), so that a slow connection does not hold up the
// end. Without Part the file is one range of Size bytes.
type Download struct {
	File  io.WriterAt
	Part  *Partial
	Size  int64 // without Part
	Whole bool  // without Part: the source does not do ranges; a retry starts over from byte 0
	Src   Source
	Conns int
	// Policy retries a range that failed (Progressed is set by Run: a range that moved
	// starts its count again). Run's error is a *httpx.GaveUpError when one ran out.
	Policy   httpx.Policy
	MinSteal int64 // 0: no sharing
	// First, when set, is an answer already open for the first range (bytes 0 to the
	// end of chunk 0, or the whole file): it is read before anything is asked.
	First io.ReadCloser
	// Added reports bytes written (progress); Sealed, that chunk i is whole and on
	// record. Both may be nil; they are called from several goroutines.
	Added  func(n int64)
	Sealed func(i int)
}

// stealPoll is how often a connection with nothing queued looks for a range to share.
var stealPoll = 100 * time.Millisecond

var bufPool = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// Run fetches what is missing. The first failure stops the other connections and is
// returned (the real cause, not the cancellations it caused).
func (d *Download) Run(ctx context.Context) error {
	if d.First != nil {
		defer func() {
			if d.First != nil {
				d.First.Close()
			}
		}()
	}
	n := 1
	if d.Part != nil {
		n = d.Part.Chunks()
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	sp := newSpans(n)
	queue := make(chan int, n)
	for i := range n {
		if d.Part == nil || !d.Part.Done(i) {
			queue <- i
		}
	}
	close(queue)
	var wg sync.WaitGroup
	for range max(min(d.Conns, n), 1) {
		wg.Go(func() {
			q := queue
			poll := time.NewTimer(stealPoll)
			defer poll.Stop()
			for {
				var s *span
				select {
				case i, ok := <-q:
					if ok {
						start, end := d.bounds(i)
						s = sp.add(i, start, end)
						break
					}
					q = nil // drained; share what is left in flight
					continue
				case <-ctx.Done():
					return
				case <-poll.C:
					poll.Reset(stealPoll)
					if s = sp.steal(d.MinSteal); s == nil {
						if q == nil && sp.empty() {
							return
						}
						continue
					}
				}
				if err := d.fetch(ctx, sp, s); err != nil {
					cancel(err)
					return
				}
				if sp.finish(s) {
					if d.Part != nil {
						if err := d.Part.Seal(s.chunk); err != nil {
							cancel(fmt.Errorf("recording chunk %d: %w", s.chunk, err))
							return
						}
					}
					if d.Sealed != nil {
						d.Sealed(s.chunk)
					}
				}
				poll.Reset(stealPoll)
			}
		})
	}
	wg.Wait()
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return ctx.Err()
}

// bounds are chunk i's first and last byte.
func (d *Download) bounds(i int) (int64, int64) {
	if d.Part == nil {
		return 0, d.Size - 1
	}
	s, e := d.Part.Bounds(i)
	return s, e - 1
}

// fetch fetches span s, resuming within it after a failed attempt (from byte 0 without
// ranges). Failures without progress are bounded by the policy.
func (d *Download) fetch(ctx context.Context, sp *spans, s *span) error {
	moved := false
	pol := d.Policy
	pol.Progressed = func(error) bool { return moved }
	_, err := httpx.Do(ctx, pol, func(int) (struct{}, error) {
		moved = false
		off, end := sp.next(s)
		if off > end {
			return struct{}{}, nil
		}
		var body io.ReadCloser
		if s.chunk == 0 && off == 0 && d.First != nil {
			body, d.First = d.First, nil
		} else {
			var err error
			if body, err = d.Src.Range(ctx, off, end); err != nil {
				return struct{}{}, err
			}
		}
		defer body.Close()
		high := sp.high(s)
		n, err := d.copy(body, sp, s, off, end)
		moved = n > 0
		if err != nil && d.Whole {
			// Starting over: only bytes never had before are progress.
			moved = sp.high(s) > high
			sp.restart(s)
		}
		return struct{}{}, err
	})
	if err != nil && ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return err
}

// copy writes the body of [off, end] into the file, advancing s; it stops early when
// another connection took over the rest of s, and returns the bytes written.
func (d *Download) copy(body io.Reader, sp *spans, s *span, off, end int64) (int64, error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	want := end - off + 1
	r := io.LimitReader(body, want)
	var n int64
	for n < want {
		k, rerr := r.Read(buf)
		if k > 0 {
			use := sp.advance(s, int64(k))
			if _, err := d.File.WriteAt(buf[:use], off+n); err != nil {
				return n, &WriteError{err}
			}
			n += use
			if news := sp.reached(s, off+n); news > 0 && d.Added != nil {
				d.Added(news)
			}
			if use < int64(k) {
				return n, nil
			}
			if _, cur := sp.next(s); off+n > cur {
				return n, nil // the rest of the span is another connection's now
			}
		}
		if rerr == io.EOF && n == want {
			break
		}
		if rerr != nil {
			return n, rerr
		}
	}
	return n, nil
}

// WriteError is a failure to write the file: never retried.
type WriteError struct{ Err error }

func (e *WriteError) Error() string { return e.Err.Error() }
func (e *WriteError) Unwrap() error { return e.Err }

// span is a byte range one connection fetches: [off, end], off advancing as bytes are
// written. Another connection may take over its back half, shrinking end.
type span struct {
	chunk    int
	start    int64
	off, end int64 // guarded by spans.mu
	high     int64 // the furthest byte written + 1: a restart reports no byte twice
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
	s := &span{chunk: chunk, start: start, off: start, end: end, high: start}
	sp.mu.Lock()
	sp.live[s] = struct{}{}
	sp.open[chunk]++
	sp.mu.Unlock()
	return s
}

func (sp *spans) empty() bool {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return len(sp.live) == 0
}

// steal splits the span with the most bytes left, if at least 2×least are left, and
// returns its back half as a new span. least 0 never splits.
func (sp *spans) steal(least int64) *span {
	if least <= 0 {
		return nil
	}
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
	s := &span{chunk: victim.chunk, start: mid, off: mid, end: victim.end, high: mid}
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

// restart sends s back to its first byte (a source without ranges starts over).
func (sp *spans) restart(s *span) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	s.off = s.start
}

// reached records that s has been written up to pos (exclusive) and returns how many
// bytes that adds to what it had reached before.
func (sp *spans) reached(s *span, pos int64) int64 {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if pos <= s.high {
		return 0
	}
	n := pos - s.high
	s.high = pos
	return n
}

// high is the furthest s has been written.
func (sp *spans) high(s *span) int64 {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return s.high
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
