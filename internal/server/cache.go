package server

import (
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"
)

// listCache keeps encoded answers of the LoRA list, keyed by the query. An answer is
// used while the database files (the SQLite file and its WAL, which every commit by
// any process changes) look as they did when it was made, and for at most cacheTTL.
type listCache struct {
	mu sync.Mutex
	m  map[string]cachedList
}

type cachedList struct {
	stamp string
	at    time.Time
	body  []byte
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

func (c *listCache) get(key, stamp string) ([]byte, bool) {
	if stamp == "" {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok || e.stamp != stamp || time.Since(e.at) > cacheTTL {
		return nil, false
	}
	return e.body, true
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

// cachedLoRAs serves GET /api/v1/loras from the cache when it can.
func (s *Server) cachedLoRAs(w http.ResponseWriter, r *http.Request) {
	key, stamp := r.URL.RawQuery, s.dbStamp()
	if b, ok := s.loraCache.get(key, stamp); ok {
		writeBody(w, http.StatusOK, b)
		return
	}
	v, err := s.listLoRAs(r)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	b, status := s.encode(v)
	if status == http.StatusOK {
		s.loraCache.put(key, stamp, b)
	}
	writeBody(w, status, b)
}
