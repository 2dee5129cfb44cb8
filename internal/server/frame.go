package server

import (
	"context"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// maxFrame bounds a frame read from Scope.
const maxFrame = 8 << 20

// podFrame is GET /api/v1/pods/{id}/frame: the last frame of the pod's Scope session,
// as a JPEG, read from Scope's headless session API (GET /api/v1/session/frame,
// src/scope/server/mcp_router.py), which answers 404 when no session runs. ?quality=
// 1..100 (default 70) goes to Scope.
func (s *Server) podFrame(w http.ResponseWriter, r *http.Request) {
	s.ensurePolled(r.Context())
	id := r.PathValue("id")
	q := 70
	if v := r.URL.Query().Get("quality"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			s.writeErr(w, errorf(http.StatusBadRequest, "quality %q: want 1..100", v))
			return
		}
		q = n
	}
	s.mu.RLock()
	st := s.pods[id]
	var base string
	if st != nil && st.scope != nil {
		base = st.scope.URL
	}
	s.mu.RUnlock()
	if st == nil {
		s.writeErr(w, errorf(http.StatusNotFound, "pod %q not found", id))
		return
	}
	if base == "" {
		s.writeErr(w, errorf(http.StatusNotFound, "pod %s serves no Scope this server reaches: no frame", id))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+"/api/v1/session/frame?quality="+strconv.Itoa(q), nil)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	resp, err := s.opt.HTTP.Do(req)
	if err != nil {
		s.writeErr(w, errorf(http.StatusBadGateway, "Scope on pod %s: %s", id, oneLine(s.red.Redact(err.Error()))))
		return
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		s.writeErr(w, errorf(http.StatusNotFound, "Scope on pod %s has no frame: no streaming session runs", id))
		return
	case resp.StatusCode != http.StatusOK:
		s.writeErr(w, errorf(http.StatusBadGateway, "Scope on pod %s answered %s to the frame request", id, resp.Status))
		return
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "image/jpeg" {
		s.writeErr(w, errorf(http.StatusBadGateway, "Scope on pod %s sent %q, not a JPEG frame", id, mt))
		return
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxFrame+1))
	if err != nil {
		s.writeErr(w, errorf(http.StatusBadGateway, "Scope on pod %s: reading the frame: %s", id, oneLine(s.red.Redact(err.Error()))))
		return
	}
	if len(b) > maxFrame {
		s.writeErr(w, errorf(http.StatusBadGateway, "Scope on pod %s sent a frame over %d bytes", id, maxFrame))
		return
	}
	w.Header().Set("Content-Type", "image/jpeg")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Write(b)
}
