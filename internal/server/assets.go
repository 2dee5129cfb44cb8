package server

import (
	"context"
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

// assets are the page: HTML, CSS, the app's script and Chart.js (vendored with its
// license, from Debian's libjs-chart.js), all served from the binary.
//
//go:embed assets
var assets embed.FS

func (s *Server) page(w http.ResponseWriter, r *http.Request) {
	b, err := assets.ReadFile("assets/index.html")
	if err != nil {
		s.writeErr(w, err)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(b)
}

var assetTypes = map[string]string{
	".js":  "text/javascript; charset=utf-8",
	".css": "text/css; charset=utf-8",
	".svg": "image/svg+xml",
	".txt": "text/plain; charset=utf-8",
	".md":  "text/plain; charset=utf-8",
}

func (s *Server) asset(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	ct, ok := assetTypes[path.Ext(name)]
	b, err := fs.ReadFile(assets, "assets/"+name)
	if !ok || err != nil || strings.Contains(name, "/") {
		s.writeJSON(w, http.StatusNotFound, apiError{"not found"})
		return
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Cache-Control", "public, max-age=300")
	w.Write(b)
}

// Session says whether this browser may act (and read, where reads need the token).
type Session struct {
	Authorized bool   `json:"authorized"`
	OpenReads  bool   `json:"open_reads"`
	Version    string `json:"version"`
}

func (s *Server) session(r *http.Request) (any, error) {
	return Session{Authorized: s.authorized(r), OpenReads: s.opt.OpenReads, Version: s.opt.Version}, nil
}

// sessionTTL is how long a login lasts.
const sessionTTL = 12 * time.Hour

// login exchanges the token (JSON {"token": …}) for a session cookie: HttpOnly,
// SameSite=Strict, holding a MAC, never the token.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Token string `json:"token"`
	}
	if err := decode(r, &req); err != nil {
		s.writeErr(w, err)
		return
	}
	if !s.tokenOK(req.Token) {
		time.Sleep(200 * time.Millisecond) // slows guessing
		s.writeJSON(w, http.StatusUnauthorized, apiError{"wrong token"})
		return
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: s.newSession(sessionTTL), Path: "/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil, MaxAge: int(sessionTTL.Seconds())})
	s.writeJSON(w, http.StatusOK, Session{Authorized: true, OpenReads: s.opt.OpenReads, Version: s.opt.Version})
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode, MaxAge: -1})
	s.writeJSON(w, http.StatusOK, Session{OpenReads: s.opt.OpenReads, Version: s.opt.Version})
}

func (s *Server) podItemsCached() ([]PodItem, string) {
	now := time.Now()
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]PodItem, 0, len(s.podOrder))
	for _, id := range s.podOrder {
		out = append(out, s.podItem(s.pods[id], now))
	}
	return out, s.podErr
}

func (s *Server) loraCount() (int, bool) {
	c, ok := s.opt.Lib.Store.(interface {
		CountLoRAs(ctx context.Context) (int, error)
	})
	if !ok {
		return 0, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	n, err := c.CountLoRAs(ctx)
	return n, err == nil
}
