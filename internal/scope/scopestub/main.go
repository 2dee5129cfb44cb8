// Command scopestub is a stand-in for Daydream Scope's HTTP API, for tests
// (a FROM-scratch image: CGO_ENABLED=0 go build). It answers
//
//	GET  /health
//	GET  /api/v1/pipeline/status
//	POST /api/v1/pipeline/load   (asynchronous: loading, then loaded after --load-delay)
//	GET  /api/v1/logs/tail?lines=N&since_offset=B
//	GET  /api/v1/loras           (*.safetensors under $DAYDREAM_SCOPE_LORA_DIR)
//	GET  /api/v1/session/metrics (--sessions streaming sessions)
//	GET  /api/v1/session/frame?quality=Q (a JPEG that changes over time while a session
//	                             runs; 404 without one, as Scope's mcp_router.py)
//
// like Scope does. A load fails, as in Scope, when a LoRA path does not exist
// (or --fail-load is set): status reads "error" once, then falls back to
// not_loaded, and the log tail holds the traceback.
//
// --root DIR stands in for the container's filesystem: the paths Scope sees
// (/workspace/models/lora/x.safetensors) are looked up under DIR, as a test that
// plays a pod's container (its /workspace in a temporary folder) needs.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"io"
	"io/fs"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

const version = "0.0.0-scopestub"

type server struct {
	mu         sync.Mutex
	start      time.Time
	status     string
	pipelineID *string
	loadParams map[string]any
	adapters   []map[string]any
	stage      *string
	logs       []byte
	delay      time.Duration
	failLoad   bool
	loraDir    string
	root       string // the container's "/" on this machine; "" is "/"
}

// fsPath is where the container path p lies on this machine.
func (s *server) fsPath(p string) string {
	if s.root == "" || !filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(s.root, p)
}

func (s *server) logf(level, format string, a ...any) {
	line := fmt.Sprintf("%s - scope.server.pipeline_manager - %s - %s",
		time.Now().UTC().Format("2006-01-02 15:04:05,000"), level, fmt.Sprintf(format, a...))
	s.logs = append(s.logs, line...)
	s.logs = append(s.logs, '\n')
	log.Print(line)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *server) health(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, 200, map[string]any{
		"status":            "healthy",
		"timestamp":         time.Now().Format("2006-01-02T15:04:05.000000"),
		"server_start_time": float64(s.start.UnixNano()) / 1e9,
		"version":           version,
		"git_commit":        "0000000",
	})
}

func (s *server) pipelineStatus(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var lp any
	if s.loadParams != nil {
		lp = s.loadParams
	}
	var ad any
	if s.adapters != nil {
		ad = s.adapters
	}
	writeJSON(w, 200, map[string]any{"status": s.status, "pipeline_id": s.pipelineID, "load_params": lp,
		"loaded_lora_adapters": ad, "loading_stage": s.stage, "error": nil})
	if s.status == "error" { // Scope clears an error once it has been read
		s.status, s.pipelineID, s.loadParams, s.adapters = "not_loaded", nil, nil, nil
	}
}

func (s *server) load(w http.ResponseWriter, r *http.Request) {
	var req struct {
		PipelineIDs []string       `json:"pipeline_ids"`
		LoadParams  map[string]any `json:"load_params"`
		Pipelines   []struct {
			PipelineID string         `json:"pipeline_id"`
			LoadParams map[string]any `json:"load_params"`
		} `json:"pipelines"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		writeJSON(w, 422, map[string]any{"detail": "invalid JSON: " + err.Error()})
		return
	}
	id, params := "", req.LoadParams
	switch {
	case len(req.Pipelines) > 0:
		id, params = req.Pipelines[0].PipelineID, req.Pipelines[0].LoadParams
	case len(req.PipelineIDs) > 0:
		id = req.PipelineIDs[0]
	default:
		writeJSON(w, 400, map[string]any{"detail": "Either 'pipelines' or 'pipeline_ids' must be provided"})
		return
	}
	var loras []map[string]any
	if ls, ok := params["loras"].([]any); ok {
		for _, l := range ls {
			if m, ok := l.(map[string]any); ok {
				scale := 1.0
				if f, ok := m["scale"].(float64); ok {
					scale = f
				}
				loras = append(loras, map[string]any{"path": m["path"], "scale": scale})
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	stage := "Loading diffusion model"
	s.status, s.pipelineID, s.loadParams, s.adapters, s.stage = "loading", &id, params, nil, &stage
	s.logf("INFO", "Loading pipeline %s", id)
	delay, fail := s.delay, s.failLoad
	go func() {
		time.Sleep(delay)
		s.mu.Lock()
		defer s.mu.Unlock()
		s.stage = nil
		missing := ""
		for _, l := range loras {
			p, _ := l["path"].(string)
			if _, err := os.Stat(s.fsPath(p)); err != nil {
				missing = p
				break
			}
		}
		if fail || missing != "" {
			s.status, s.adapters = "error", nil
			reason := "stub configured to fail (--fail-load)"
			exc := "RuntimeError: " + reason
			if missing != "" {
				reason, exc = "LoRA loading failed", "FileNotFoundError: LoRA file not found: "+missing
			}
			s.logf("ERROR", "Failed to load pipeline %s: %s", id, reason)
			for _, l := range []string{"Traceback (most recent call last):",
				`  File "/app/src/scope/core/pipelines/wan2_1/lora/utils.py", line 1, in load_lora_weights`,
				"    raise FileNotFoundError(path)", exc} {
				s.logs = append(s.logs, l+"\n"...)
			}
			return
		}
		s.status, s.adapters = "loaded", loras
		s.logf("INFO", "Pipeline %s loaded with %d LoRA(s)", id, len(loras))
	}()
	writeJSON(w, 200, map[string]any{"message": "Pipeline loading initiated successfully"})
}

func (s *server) logsTail(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	n, since := 200, int64(0)
	if v := q.Get("lines"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 || n > 1000 {
			writeJSON(w, 422, map[string]any{"detail": "lines must be 1..1000"})
			return
		}
	}
	if v := q.Get("since_offset"); v != "" {
		var err error
		if since, err = strconv.ParseInt(v, 10, 64); err != nil || since < 0 {
			writeJSON(w, 422, map[string]any{"detail": "since_offset must be >= 0"})
			return
		}
	}
	s.mu.Lock()
	data := string(s.logs)
	s.mu.Unlock()
	size := int64(len(data))
	if since > 0 {
		if since >= size {
			writeJSON(w, 200, map[string]any{"lines": []string{}, "offset": size})
			return
		}
		data = data[since:]
	}
	lines := []string{}
	for _, l := range strings.Split(data, "\n") {
		if strings.TrimSpace(l) != "" {
			lines = append(lines, strings.TrimRight(l, "\r "))
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	writeJSON(w, 200, map[string]any{"lines": lines, "offset": size})
}

func (s *server) loras(w http.ResponseWriter, _ *http.Request) {
	files := []map[string]any{}
	dir := s.fsPath(s.loraDir)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == dir && os.IsNotExist(err) {
				return fs.SkipAll
			}
			return err
		}
		if d.IsDir() || !strings.HasSuffix(d.Name(), ".safetensors") {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		h := sha256.New()
		size, err := io.Copy(h, f)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		var folder any
		if dir := filepath.Dir(rel); dir != "." {
			folder = filepath.ToSlash(dir)
		}
		files = append(files, map[string]any{
			"name":       strings.TrimSuffix(d.Name(), ".safetensors"),
			"path":       filepath.Join(s.loraDir, rel),
			"size_mb":    float64(int64(float64(size)/(1<<20)*100+0.5)) / 100,
			"size_bytes": size,
			"folder":     folder,
			"sha256":     hex.EncodeToString(h.Sum(nil)),
			"provenance": nil,
			"read_only":  false,
		})
		return nil
	})
	if err != nil {
		writeJSON(w, 500, map[string]any{"detail": err.Error()})
		return
	}
	sort.Slice(files, func(i, j int) bool {
		fi, _ := files[i]["folder"].(string)
		fj, _ := files[j]["folder"].(string)
		if fi != fj {
			return fi < fj
		}
		return files[i]["name"].(string) < files[j]["name"].(string)
	})
	writeJSON(w, 200, map[string]any{"lora_files": files})
}

func loraDir() string {
	if d := os.Getenv("DAYDREAM_SCOPE_LORA_DIR"); d != "" {
		return d
	}
	if d := os.Getenv("SCOPE_LORA_DIR"); d != "" {
		return d
	}
	if d := os.Getenv("DAYDREAM_SCOPE_MODELS_DIR"); d != "" {
		return filepath.Join(d, "lora")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".daydream-scope", "models", "lora")
}

func main() {
	port := flag.Int("port", 8000, "port to listen on")
	host := flag.String("host", "0.0.0.0", "address to listen on")
	delay := flag.Duration("load-delay", 2*time.Second, "how long a pipeline load takes")
	fail := flag.Bool("fail-load", false, "make every pipeline load fail")
	root := flag.String("root", "", "folder standing in for the container's / (absolute paths Scope sees are looked up under it)")
	sessions := flag.Int("sessions", 0, "active streaming sessions GET /api/v1/session/metrics reports")
	flag.Parse()
	s := &server{start: time.Now(), status: "not_loaded", delay: *delay, failLoad: *fail, loraDir: loraDir(), root: *root}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", s.health)
	mux.HandleFunc("GET /api/v1/pipeline/status", s.pipelineStatus)
	mux.HandleFunc("POST /api/v1/pipeline/load", s.load)
	mux.HandleFunc("GET /api/v1/logs/tail", s.logsTail)
	mux.HandleFunc("GET /api/v1/loras", s.loras)
	// Scope's session metrics (src/scope/server/mcp_router.py): {"sessions": {id: {…}}, "gpu": {…}}.
	mux.HandleFunc("GET /api/v1/session/metrics", func(w http.ResponseWriter, _ *http.Request) {
		m := map[string]any{}
		for i := 0; i < *sessions; i++ {
			m[fmt.Sprintf("session-%d", i+1)] = map[string]any{"frames_out": 100 * (i + 1), "fps": 16.0}
		}
		writeJSON(w, 200, map[string]any{"sessions": m, "gpu": map[string]any{}})
	})
	mux.HandleFunc("GET /api/v1/session/frame", func(w http.ResponseWriter, r *http.Request) {
		q := 85
		if v := r.URL.Query().Get("quality"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 100 {
				writeJSON(w, 422, map[string]any{"detail": "quality must be 1..100"})
				return
			}
			q = n
		}
		if *sessions == 0 {
			writeJSON(w, 404, map[string]any{"detail": "No frame available (no active session or pipeline not running)"})
			return
		}
		w.Header().Set("Content-Type", "image/jpeg")
		jpeg.Encode(w, frame(time.Since(s.start)), &jpeg.Options{Quality: q})
	})
	addr := fmt.Sprintf("%s:%d", *host, *port)
	s.mu.Lock()
	s.logf("INFO", "scopestub %s listening on %s (LoRA dir %s)", version, addr, s.loraDir)
	s.mu.Unlock()
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(srv.ListenAndServe())
}

// frame is a 512×288 picture that moves with t: a sky-to-ground gradient and a sun
// crossing it, enough to tell one frame from the next.
func frame(t time.Duration) image.Image {
	const w, h = 512, 288
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	ph := float64(t.Milliseconds()%8000) / 8000
	sx, sy := int(ph*float64(w)), h/3
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			c := color.RGBA{uint8(40 + 120*y/h), uint8(70 + 100*y/h), uint8(200 - 120*y/h), 255}
			if y > h*2/3 {
				c = color.RGBA{uint8(30 + x*60/w), uint8(110 + 40*(y-h*2/3)/h), 60, 255}
			}
			if dx, dy := x-sx, y-sy; dx*dx+dy*dy < 900 {
				c = color.RGBA{255, 214, 90, 255}
			}
			img.SetRGBA(x, y, c)
		}
	}
	return img
}
