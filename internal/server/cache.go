package server

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"
)

// listCache keeps encoded answers of the LoRA list, keyed by the query. An answer is
// used while the database files (the SQLite file and its WAL, which every commit by
// any process changes) look as they did when it was made. Past cacheTTL it is still
// served while one request makes it again in the background (stale while revalidate);
// misses of one key share one computation, so that a burst of requests after a start
// or a write runs one query, not one per connection.
type listCache struct {
	mu       sync.Mutex
	m        map[string]cachedList
	inflight map[string]*flight
}

type cachedList struct {
	stamp string
	at    time.Time
	body  []byte
}

// flight is one computation of a key that other requests wait for.
type flight struct {
	done   chan struct{}
	body   []byte
	status int
}

const (
	cacheTTL     = time.Second
	cacheEntries = 512
)

// dbStamp is the size and modification time of the store's files; "" when unknown.
func (s *Server) dbStamp() string {
	p, ok := s.opt.Lib.Store.(interface{ Path() string })
	if !ok {
		return ""
	}
	stamp := ""
	for _, f := range []string{p.Path(), p.Path() + "-wal"} {
		fi, err := os.Stat(f)
		if err != nil {
			stamp += "-;"
			continue
		}
		stamp += fmt.Sprintf("%d.%d;", fi.Size(), fi.ModTime().UnixNano())
	}
	return stamp
}

// get is the cached answer for key at stamp, and whether it is past cacheTTL.
func (c *listCache) get(key, stamp string) (body []byte, stale, ok bool) {
	if stamp == "" {
		return nil, false, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok || e.stamp != stamp {
		return nil, false, false
	}
	return e.body, time.Since(e.at) > cacheTTL, true
}

func (c *listCache) put(key, stamp string, body []byte) {
	if stamp == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= cacheEntries {
		c.m = map[string]cachedList{}
	}
	c.m[key] = cachedList{stamp: stamp, at: time.Now(), body: body}
}

// do runs compute once for key+stamp however many requests ask at the same time; wait
// says whether the caller waits for it (a background refresh does not).
func (c *listCache) do(key, stamp string, wait bool, compute func() ([]byte, int)) ([]byte, int, bool) {
	k := key + "\x00" + stamp
	c.mu.Lock()
	if f, ok := c.inflight[k]; ok {
		c.mu.Unlock()
		if !wait {
			return nil, 0, false
		}
		<-f.done
		return f.body, f.status, true
	}
	if c.inflight == nil {
		c.inflight = map[string]*flight{}
	}
	f := &flight{done: make(chan struct{})}
	c.inflight[k] = f
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.inflight, k)
		c.mu.Unlock()
		close(f.done)
	}()
	f.body, f.status = compute()
	if f.status == http.StatusOK {
		c.put(key, stamp, f.body)
	}
	return f.body, f.status, true
}

// cachedLoRAs serves GET /api/v1/loras from the cache when it can.
func (s *Server) cachedLoRAs(w http.ResponseWriter, r *http.Request) {
	key, stamp := r.URL.RawQuery, s.dbStamp()
	compute := func(ctx context.Context) func() ([]byte, int) {
		return func() ([]byte, int) {
			v, err := s.listLoRAs(r.WithContext(ctx))
			if err != nil {
				return s.errBody(err)
			}
			return s.encode(v)
		}
	}
	if b, stale, ok := s.loraCache.get(key, stamp); ok {
		if stale {
			go s.loraCache.do(key, stamp, false, compute(context.WithoutCancel(r.Context())))
		}
		writeBody(w, http.StatusOK, b)
		return
	}
	if stamp == "" { // a store without files: no cache
		b, status := compute(r.Context())()
		writeBody(w, status, b)
		return
	}
	b, status, _ := s.loraCache.do(key, stamp, true, compute(context.WithoutCancel(r.Context())))
	writeBody(w, status, b)
}
