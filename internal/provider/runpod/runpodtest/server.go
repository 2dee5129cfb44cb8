// Package runpodtest is a local stand-in for RunPod's API, for tests only: the REST
// API v1 pod endpoints (GET/POST /pods, GET/PATCH/DELETE /pods/{id}, POST
// /pods/{id}/start|stop), the GraphQL gpuTypes query, the HTTP proxy in front of pods'
// http ports, and pods whose containers a test's Runtime really runs (runtime.go), with bearer-key auth, pod
// state transitions, pricing and stock, and injectable faults (429 storms, 5xx,
// slow requests, capacity errors, and a create that is applied but never answered).
//
// It follows what RunPod's public documentation and runpodctl's source say, and
// payloads recorded from the live API by other projects:
//   - GET /pods answers a bare JSON array; a pod is a flat object with id, name,
//     desiredStatus, imageName, gpuCount, costPerHr (a number; Options.CostAsString
//     sends the string form the docs' example shows), containerDiskInGb, volumeInGb,
//     volumeMountPath, networkVolumeId, ports ["22/tcp"], portMappings {"22": 35558}
//     (null until the container is up), publicIp, env {…}, createdAt and
//     lastStartedAt in Go's time.String layout ("2026-08-20 06:16:19.436 +0000 UTC"),
//     machineId, and machine: {} unless ?includeMachine=true.
//   - POST /pods answers 201 with the pod; errors are {"error": "…"}; a create without
//     capacity says "There are no longer any instances available with the requested
//     specifications. Please refresh and try again."; a start on a host without free
//     GPUs says "There are not enough free GPUs on the host machine to start this pod."
//   - DELETE /pods/{id} answers 204; a terminated pod is gone (404).
//   - GraphQL pod(input: {podId}) { id name desiredStatus imageName costPerHr gpuCount
//     machineId lastStartedAt machine { podHostId gpuDisplayName } runtime {
//     uptimeInSeconds ports { ip isIpPublic privatePort publicPort type } } }: podHostId
//     is "{podId}-{8 hex digits}" (the gateway login {podHostId}@ssh.runpod.io); runtime
//     is null unless the pod runs; an unknown pod is data.pod null with an error whose
//     path is ["pod"].
//   - GraphQL gpuTypes(input: {id, ids}) { id displayName memoryInGb secureCloud
//     communityCloud securePrice communityPrice secureSpotPrice communitySpotPrice
//     maxGpuCount manufacturer lowestPrice(input: {gpuCount, secureCloud}) {
//     uninterruptablePrice minimumBidPrice stockStatus } }; lowestPrice is the price of
//     the whole pod (gpuCount GPUs) and null, with a null stockStatus, without stock.
//
// Deliberate differences: the status reads CREATED until the pod has booted
// (Options.BootDelay), then RUNNING with publicIp and portMappings (RunPod's v1
// reports the desired status RUNNING at once, with the address missing until the
// container is up; clients must wait for the address either way). The create body
// is decoded strictly: a field RunPod's v1 create schema lacks is a 400, so client
// typos fail here. The status codes RunPod uses for capacity errors are not
// documented; this server uses 400 and clients must go by the message.
package runpodtest

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Messages RunPod answers with.
const (
	MsgNoInstances  = "There are no longer any instances available with the requested specifications. Please refresh and try again."
	MsgHostNoGPUs   = "There are not enough free GPUs on the host machine to start this pod."
	MsgSomethingBad = "Something went wrong."
)

// GPU is a GPU type the fake cloud rents.
type GPU struct {
	ID             string // "NVIDIA GeForce RTX 4090"
	DisplayName    string // "RTX 4090"
	MemoryGB       int
	SecurePrice    float64 // USD per GPU-hour; 0 = not offered in Secure Cloud
	CommunityPrice float64 // USD per GPU-hour; 0 = not offered in Community Cloud
	SecureStock    int     // free GPUs in Secure Cloud
	CommunityStock int     // free GPUs in Community Cloud
}

// DefaultGPUs is the catalogue a Server starts with when Options.GPUs is nil.
func DefaultGPUs() []GPU {
	return []GPU{
		{ID: "NVIDIA GeForce RTX 4090", DisplayName: "RTX 4090", MemoryGB: 24, SecurePrice: 0.69, CommunityPrice: 0.34, SecureStock: 16, CommunityStock: 16},
		{ID: "NVIDIA A40", DisplayName: "A40", MemoryGB: 48, SecurePrice: 0.40, CommunityPrice: 0.35, SecureStock: 8, CommunityStock: 0},
		{ID: "NVIDIA H100 80GB HBM3", DisplayName: "H100 SXM", MemoryGB: 80, SecurePrice: 2.99, CommunityPrice: 2.69, SecureStock: 8, CommunityStock: 8},
		{ID: "NVIDIA RTX A6000", DisplayName: "RTX A6000", MemoryGB: 48, SecurePrice: 0.49, CommunityPrice: 0.33, SecureStock: 0, CommunityStock: 0},
	}
}

// Options configure a Server.
type Options struct {
	APIKey       string        // the one key accepted (Bearer, or ?api_key= on GraphQL)
	GPUs         []GPU         // nil: DefaultGPUs()
	BootDelay    time.Duration // CREATED → RUNNING after create and start (0: 30ms)
	CostAsString bool          // send costPerHr as "0.69" (the docs' example) instead of 0.69
	// Runtime, if set, runs the pods' containers (see Runtime); without it pods
	// run nothing and get made-up addresses.
	Runtime Runtime
}

// FaultKind says what a Fault does to a matching request.
type FaultKind int

const (
	// RateLimit answers 429 with a Retry-After header; nothing is applied.
	RateLimit FaultKind = iota
	// ServerError answers Status (default 503) before applying anything.
	ServerError
	// ErrorAfterApply applies the request, then answers 500 {"error":"Something went
	// wrong."} (RunPod's POST /pods has done exactly this: pod created, 500 returned).
	ErrorAfterApply
	// DropAfterApply applies the request, then closes the connection without an
	// answer: the crash between request and answer.
	DropAfterApply
	// DropBeforeApply closes the connection without applying anything.
	DropBeforeApply
	// Delay waits Delay (ignoring the client going away), then handles the request
	// normally: a slow create is applied at the end of the wait.
	Delay
)

// Fault is injected into matching requests.
type Fault struct {
	// Route: "METHOD /pattern" with patterns /pods, /pods/{id}, /pods/{id}/start,
	// /pods/{id}/stop, /graphql; "" or "*" matches every request.
	Route      string
	Kind       FaultKind
	Times      int           // matching requests it hits: 0 = 1, negative = all
	Status     int           // ServerError: the status (default 503)
	RetryAfter string        // RateLimit: the Retry-After value (default "1")
	Delay      time.Duration // Delay: how long
}

// Request is one request the server saw.
type Request struct {
	Route  string // "POST /pods", "GET /pods/{id}", …
	Status int    // status written, or 0 if the connection was dropped
	Authed bool
	Body   string // request body (REST creates and GraphQL)
}

type pod struct {
	ID, Name, Image, GPUID, Cloud string
	GPUCount                      int
	ContainerDiskGB, VolumeGB     int
	VolumeMountPath               string
	NetworkVolumeID               string
	Ports                         []string
	Env                           map[string]string
	Desired                       string
	CreatedAt, LastStartedAt      time.Time
	BootAt                        time.Time
	PublicIP                      string
	PortMap                       map[string]int
	Cost                          float64
	MachineID                     string
	HostSuffix                    string // podHostId is ID-HostSuffix
	HoldsGPU                      bool
	DataCenter                    string
	SupportPublicIP               bool
	PodKey                        string     // the pod-scoped RUNPOD_API_KEY RunPod puts into the pod
	container                     *Container // what Runtime started; nil if nothing runs
	bootFailed                    bool       // Runtime failed: the pod never leaves CREATED
}

// Server is the fake RunPod API.
type Server struct {
	URL string // root: REST at URL+"/v1", GraphQL at URL+"/graphql"

	srv          *httptest.Server
	key          string
	bootDelay    time.Duration
	costAsString bool
	runtime      Runtime

	mu        sync.Mutex
	gpus      map[string]*GPU
	gpuOrder  []string
	pods      map[string]*pod
	gone      map[string]*pod // terminated
	faults    []*Fault
	log       []Request
	creates   int // pods created
	nextPort  int
	priceMult map[string]float64

	podKeyN, podKeyRefused int
	volumes                []NetworkVolume
}

// New starts a Server; it is closed when the test ends.
func New(t testing.TB, opts Options) *Server {
	s := &Server{key: opts.APIKey, bootDelay: opts.BootDelay, costAsString: opts.CostAsString, runtime: opts.Runtime,
		gpus: map[string]*GPU{}, pods: map[string]*pod{}, gone: map[string]*pod{},
		nextPort: 40000, priceMult: map[string]float64{}}
	if s.bootDelay == 0 {
		s.bootDelay = 30 * time.Millisecond
	}
	gpus := opts.GPUs
	if gpus == nil {
		gpus = DefaultGPUs()
	}
	for _, g := range gpus {
		g := g
		s.gpus[g.ID] = &g
		s.gpuOrder = append(s.gpuOrder, g.ID)
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	t.Cleanup(s.srv.Close)
	t.Cleanup(s.stopAll) // runs first: containers stop before the server closes
	return s
}

// RESTURL is the REST API base (RUNPOD_API_URL).
func (s *Server) RESTURL() string { return s.URL + "/v1" }

// GraphQLURL is the GraphQL endpoint (RUNPOD_GRAPHQL_URL).
func (s *Server) GraphQLURL() string { return s.URL + "/graphql" }

// Inject adds a fault. Faults are consulted in the order injected.
func (s *Server) Inject(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.Times == 0 {
		f.Times = 1
	}
	s.faults = append(s.faults, &f)
}

// ClearFaults removes every fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// SetStock sets the free GPUs of a type in a cloud ("SECURE" or "COMMUNITY").
func (s *Server) SetStock(gpuID, cloud string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.gpus[gpuID]
	if g == nil {
		panic("runpodtest: unknown GPU " + gpuID)
	}
	if cloud == "COMMUNITY" {
		g.CommunityStock = n
	} else {
		g.SecureStock = n
	}
}

// SetPriceDrift makes pods of gpuID cost factor times the listed price: the machine a
// create lands on may cost more than the lowest price GraphQL quoted.
func (s *Server) SetPriceDrift(gpuID string, factor float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.priceMult[gpuID] = factor
}

// PodView is a snapshot of a pod the server holds.
type PodView struct {
	ID, Name, GPUType, Cloud, Status string
	Image                            string
	GPUCount                         int
	Env                              map[string]string
	Ports                            []string
	CostPerHr                        float64
	// PodKey is the pod-scoped API key RunPod gives the pod (RUNPOD_API_KEY inside it):
	// it may read and stop this pod and nothing else.
	PodKey string
}

// ContainerEnv is the environment the pod's container gets: the pod's env plus what
// RunPod adds to every pod (RUNPOD_POD_ID, the pod-scoped RUNPOD_API_KEY,
// RUNPOD_GPU_COUNT, RUNPOD_DC_ID), as KEY=VALUE lines.
func (v PodView) ContainerEnv() []string {
	var out []string
	for k, val := range v.Env {
		out = append(out, k+"="+val)
	}
	sort.Strings(out)
	return append(out, "RUNPOD_POD_ID="+v.ID, "RUNPOD_API_KEY="+v.PodKey,
		"RUNPOD_GPU_COUNT="+strconv.Itoa(v.GPUCount), "RUNPOD_DC_ID=EU-RO-1")
}

// Pods returns the pods that exist (not terminated), oldest first.
func (s *Server) Pods() []PodView {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	var out []PodView
	for _, p := range s.pods {
		out = append(out, p.view(now))
	}
	sort.Slice(out, func(i, j int) bool { return s.pods[out[i].ID].CreatedAt.Before(s.pods[out[j].ID].CreatedAt) })
	return out
}

// Creates is how many pods the server has created in all (terminated ones included).
func (s *Server) Creates() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.creates
}

// Requests returns every request seen so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.log)
}

// Count is how many requests matched route ("POST /pods", …).
func (s *Server) Count(route string) int {
	n := 0
	for _, r := range s.Requests() {
		if r.Route == route {
			n++
		}
	}
	return n
}

func clone(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func (p *pod) view(now time.Time) PodView {
	return PodView{ID: p.ID, Name: p.Name, GPUType: p.GPUID, Cloud: p.Cloud, Image: p.Image,
		Status: p.status(now), GPUCount: p.GPUCount, Env: clone(p.Env), Ports: slices.Clone(p.Ports), CostPerHr: p.Cost,
		PodKey: p.PodKey}
}

func (p *pod) status(now time.Time) string {
	if p.Desired == "RUNNING" && (now.Before(p.BootAt) || p.bootFailed) {
		return "CREATED"
	}
	return p.Desired
}

var podPath = regexp.MustCompile(`^/v1/pods/([^/]+)(/start|/stop)?$`)

func route(r *http.Request) (string, string) {
	switch {
	case r.URL.Path == "/v1/pods":
		return r.Method + " /pods", ""
	case r.URL.Path == "/graphql":
		return r.Method + " /graphql", ""
	}
	if m := podPath.FindStringSubmatch(r.URL.Path); m != nil {
		return r.Method + " /pods/{id}" + m[2], m[1]
	}
	return r.Method + " " + r.URL.Path, ""
}

// record wraps the ResponseWriter to log the status.
type recorder struct {
	http.ResponseWriter
	status int
}

func (w *recorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (s *Server) takeFault(rt string) *Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, f := range s.faults {
		if f.Route != "" && f.Route != "*" && f.Route != rt {
			continue
		}
		cp := *f
		if f.Times > 0 {
			f.Times--
			if f.Times == 0 {
				s.faults = append(s.faults[:i], s.faults[i+1:]...)
			}
		}
		return &cp
	}
	return nil
}

func (s *Server) authed(r *http.Request, allowQuery bool) bool {
	got := s.presented(r, allowQuery)
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(s.key)) == 1
}

func (s *Server) presented(r *http.Request, allowQuery bool) string {
	if h := r.Header.Get("Authorization"); strings.HasPrefix(h, "Bearer ") {
		return strings.TrimPrefix(h, "Bearer ")
	} else if allowQuery {
		return r.URL.Query().Get("api_key")
	}
	return ""
}

// podKeyOwner is the pod whose pod-scoped key r presents ("" if none).
func (s *Server) podKeyOwner(r *http.Request) string {
	got := s.presented(r, false)
	if got == "" {
		return ""
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.pods {
		if p.PodKey != "" && subtle.ConstantTimeCompare([]byte(got), []byte(p.PodKey)) == 1 {
			return p.ID
		}
	}
	return ""
}

// PodKeyRequests is how many requests a pod-scoped key made, and how many of them
// were refused for touching another pod or another route.
func (s *Server) PodKeyRequests() (n, refused int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.podKeyN, s.podKeyRefused
}

func drop(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic("runpodtest: cannot hijack")
	}
	conn, _, err := hj.Hijack()
	if err == nil {
		conn.Close()
	}
}

func (s *Server) serve(w0 http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, proxyPrefix) {
		s.proxy(w0, r)
		return
	}
	rt, id := route(r)
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	isGQL := rt == "POST /graphql"
	authed := s.authed(r, isGQL)
	w := &recorder{ResponseWriter: w0}
	entry := Request{Route: rt, Authed: authed}
	if rt == "POST /pods" || rt == "PATCH /pods/{id}" || isGQL {
		entry.Body = string(body)
	}
	// Logged on arrival, so that a test sees a request whose connection was dropped
	// even before the handler has returned; the status is filled in at the end.
	s.mu.Lock()
	idx := len(s.log)
	s.log = append(s.log, entry)
	s.mu.Unlock()
	dropped := false
	defer func() {
		s.mu.Lock()
		if !dropped {
			s.log[idx].Status = w.status
		}
		s.mu.Unlock()
	}()

	f := s.takeFault(rt)
	if f != nil {
		switch f.Kind {
		case RateLimit:
			ra := f.RetryAfter
			if ra == "" {
				ra = "1"
			}
			w.Header().Set("Retry-After", ra)
			writeJSON(w, http.StatusTooManyRequests, map[string]string{"error": "Too many requests, please slow down."})
			return
		case ServerError:
			st := f.Status
			if st == 0 {
				st = http.StatusServiceUnavailable
			}
			writeJSON(w, st, map[string]string{"error": MsgSomethingBad})
			return
		case DropBeforeApply:
			dropped = true
			drop(w0)
			return
		case Delay:
			time.Sleep(f.Delay)
		}
	}

	if !authed {
		// A pod-scoped key (RUNPOD_API_KEY inside a pod) may read and stop its own pod.
		if owner := s.podKeyOwner(r); owner != "" {
			ok := id == owner && (rt == "GET /pods/{id}" || rt == "POST /pods/{id}/stop")
			s.mu.Lock()
			s.podKeyN++
			if !ok {
				s.podKeyRefused++
			}
			s.log[idx].Authed = ok
			s.mu.Unlock()
			if !ok {
				writeJSON(w, http.StatusForbidden, map[string]string{"error": "this API key is scoped to pod " + owner})
				return
			}
		} else {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "Unauthorized"})
			return
		}
	}

	// Apply into a buffer so a fault can replace the answer after the state changed.
	buf := &bufferedAnswer{header: http.Header{}}
	switch rt {
	case "GET /pods":
		s.list(buf, r)
	case "POST /pods":
		s.create(buf, body)
	case "GET /pods/{id}":
		s.get(buf, r, id)
	case "DELETE /pods/{id}":
		s.terminate(buf, id)
	case "PATCH /pods/{id}":
		s.update(buf, id, body)
	case "POST /pods/{id}/start":
		s.start(buf, id)
	case "POST /pods/{id}/stop":
		s.stop(buf, id)
	case "POST /graphql":
		s.graphql(buf, body)
	case "GET /v1/networkvolumes":
		s.listVolumes(buf)
	default:
		if strings.HasPrefix(r.URL.Path, "/v1/pods") {
			writeJSON(buf, http.StatusMethodNotAllowed, map[string]string{"error": "method not allowed"})
		} else {
			writeJSON(buf, http.StatusNotFound, map[string]string{"error": "not found"})
		}
	}
	if f != nil {
		switch f.Kind {
		case ErrorAfterApply:
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": MsgSomethingBad})
			return
		case DropAfterApply:
			dropped = true
			drop(w0)
			return
		}
	}
	for k, v := range buf.header {
		w.Header()[k] = v
	}
	w.WriteHeader(buf.status)
	w.Write(buf.body)
}

type bufferedAnswer struct {
	header http.Header
	status int
	body   []byte
}

func (b *bufferedAnswer) Header() http.Header { return b.header }
func (b *bufferedAnswer) WriteHeader(code int) {
	if b.status == 0 {
		b.status = code
	}
}
func (b *bufferedAnswer) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	b.body = append(b.body, p...)
	return len(p), nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}

func errorJSON(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// createBody is RunPod's v1 create schema (docs.runpod.io/api-reference/pods/POST/pods).
type createBody struct {
	AllowedCudaVersions     []string          `json:"allowedCudaVersions"`
	CloudType               string            `json:"cloudType"`
	ComputeType             string            `json:"computeType"`
	ContainerDiskInGb       *int              `json:"containerDiskInGb"`
	ContainerRegistryAuthID string            `json:"containerRegistryAuthId"`
	CountryCodes            []string          `json:"countryCodes"`
	CPUFlavorIDs            []string          `json:"cpuFlavorIds"`
	CPUFlavorPriority       string            `json:"cpuFlavorPriority"`
	DataCenterIDs           []string          `json:"dataCenterIds"`
	DataCenterPriority      string            `json:"dataCenterPriority"`
	DockerEntrypoint        []string          `json:"dockerEntrypoint"`
	DockerStartCmd          []string          `json:"dockerStartCmd"`
	Env                     map[string]string `json:"env"`
	GlobalNetworking        bool              `json:"globalNetworking"`
	GPUCount                *int              `json:"gpuCount"`
	GPUTypeIDs              []string          `json:"gpuTypeIds"`
	GPUTypePriority         string            `json:"gpuTypePriority"`
	ImageName               string            `json:"imageName"`
	Interruptible           bool              `json:"interruptible"`
	Locked                  bool              `json:"locked"`
	MinDiskBandwidthMBps    float64           `json:"minDiskBandwidthMBps"`
	MinDownloadMbps         float64           `json:"minDownloadMbps"`
	MinRAMPerGPU            int               `json:"minRAMPerGPU"`
	MinUploadMbps           float64           `json:"minUploadMbps"`
	MinVCPUPerGPU           int               `json:"minVCPUPerGPU"`
	Name                    string            `json:"name"`
	NetworkVolumeID         string            `json:"networkVolumeId"`
	Ports                   []string          `json:"ports"`
	SupportPublicIP         *bool             `json:"supportPublicIp"`
	TemplateID              *string           `json:"templateId"`
	VCPUCount               int               `json:"vcpuCount"`
	VolumeInGb              *int              `json:"volumeInGb"`
	VolumeMountPath         string            `json:"volumeMountPath"`
}

var createFields = jsonFields(createBody{})

// jsonFields is the set of JSON names of a struct's fields.
func jsonFields(v any) map[string]bool {
	m := map[string]bool{}
	t := reflect.TypeOf(v)
	for i := 0; i < t.NumField(); i++ {
		m[strings.Split(t.Field(i).Tag.Get("json"), ",")[0]] = true
	}
	return m
}

var portRE = regexp.MustCompile(`^([0-9]{1,5})/(tcp|http|udp)$`)

func (s *Server) create(w http.ResponseWriter, body []byte) {
	var b createBody
	if !decodeStrict(w, body, createFields, &b) {
		return
	}
	if b.ImageName == "" && b.TemplateID == nil {
		errorJSON(w, http.StatusBadRequest, "Invalid input: imageName is required")
		return
	}
	if b.ComputeType != "" && b.ComputeType != "GPU" {
		errorJSON(w, http.StatusBadRequest, "Invalid input: this test server rents GPU pods only")
		return
	}
	if len(b.GPUTypeIDs) == 0 {
		errorJSON(w, http.StatusBadRequest, "Invalid input: gpuTypeIds is required for a GPU Pod")
		return
	}
	cloud := b.CloudType
	if cloud == "" {
		cloud = "SECURE"
	}
	if cloud != "SECURE" && cloud != "COMMUNITY" {
		errorJSON(w, http.StatusBadRequest, "Invalid input: cloudType must be one of SECURE, COMMUNITY")
		return
	}
	count := 1
	if b.GPUCount != nil {
		count = *b.GPUCount
	}
	if count < 1 || count > 8 {
		errorJSON(w, http.StatusBadRequest, "Invalid input: gpuCount must be between 1 and 8")
		return
	}
	if len(b.Name) > 191 {
		errorJSON(w, http.StatusBadRequest, "Invalid input: name must be at most 191 characters")
		return
	}
	if !checkPorts(w, b.Ports) {
		return
	}
	disk, vol := 50, 20
	if b.ContainerDiskInGb != nil {
		disk = *b.ContainerDiskInGb
	}
	if b.VolumeInGb != nil {
		vol = *b.VolumeInGb
	}
	if disk < 0 || vol < 0 {
		errorJSON(w, http.StatusBadRequest, "Invalid input: disk sizes must not be negative")
		return
	}
	mount := b.VolumeMountPath
	if mount == "" {
		mount = "/workspace"
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	var chosen *GPU
	for _, id := range b.GPUTypeIDs {
		g := s.gpus[id]
		if g == nil {
			errorJSON(w, http.StatusBadRequest, fmt.Sprintf("Invalid input: %q is not a valid gpu type id", id))
			return
		}
		if chosen == nil && g.price(cloud) > 0 && g.stock(cloud) >= count {
			chosen = g
		}
	}
	if chosen == nil {
		errorJSON(w, http.StatusBadRequest, MsgNoInstances)
		return
	}
	chosen.take(cloud, count)
	now := time.Now()
	p := &pod{ID: newID(), Name: b.Name, Image: b.ImageName, GPUID: chosen.ID, Cloud: cloud,
		GPUCount: count, ContainerDiskGB: disk, VolumeGB: vol, VolumeMountPath: mount,
		NetworkVolumeID: b.NetworkVolumeID, Ports: slices.Clone(b.Ports), Env: clone(b.Env),
		Desired: "RUNNING", CreatedAt: now, LastStartedAt: now, BootAt: now.Add(s.bootDelay),
		MachineID: newID()[:12], HostSuffix: hexID(4), HoldsGPU: true, DataCenter: "EU-RO-1",
		SupportPublicIP: b.SupportPublicIP == nil || *b.SupportPublicIP, PodKey: "rpa_pod_" + hexID(16)}
	mult := s.priceMult[chosen.ID]
	if mult == 0 {
		mult = 1
	}
	p.Cost = math.Round(chosen.price(cloud)*float64(count)*mult*1000) / 1000
	s.boot(p)
	s.pods[p.ID] = p
	s.creates++
	writeJSON(w, http.StatusCreated, s.encode(p, now, true))
}

func (g *GPU) price(cloud string) float64 {
	if cloud == "COMMUNITY" {
		return g.CommunityPrice
	}
	return g.SecurePrice
}

func (g *GPU) stock(cloud string) int {
	if cloud == "COMMUNITY" {
		return g.CommunityStock
	}
	return g.SecureStock
}

func (g *GPU) take(cloud string, n int) {
	if cloud == "COMMUNITY" {
		g.CommunityStock -= n
	} else {
		g.SecureStock -= n
	}
}

// assignAddress gives p a public IP and fresh public ports: they change on every
// start. A container the Runtime started decides them where it says.
func (s *Server) assignAddress(p *pod) {
	p.PublicIP = fmt.Sprintf("203.0.113.%d", 1+len(s.pods)%250)
	if p.container != nil && p.container.PublicIP != "" {
		p.PublicIP = p.container.PublicIP
	}
	p.PortMap = map[string]int{}
	for _, spec := range p.Ports {
		m := portRE.FindStringSubmatch(spec)
		if m == nil || m[2] != "tcp" {
			continue // http ports go through RunPod's proxy, not a public mapping
		}
		if p.container != nil {
			if n, _ := strconv.Atoi(m[1]); p.container.TCP[n] > 0 {
				p.PortMap[m[1]] = p.container.TCP[n]
				continue
			}
		}
		s.nextPort++
		p.PortMap[m[1]] = s.nextPort
	}
}

const timeLayout = "2006-01-02 15:04:05.999 -0700 MST"

func (s *Server) encode(p *pod, now time.Time, includeMachine bool) map[string]any {
	st := p.status(now)
	m := map[string]any{
		"id": p.ID, "name": p.Name, "desiredStatus": st, "imageName": p.Image,
		"gpuCount": p.GPUCount, "containerDiskInGb": p.ContainerDiskGB, "volumeInGb": p.VolumeGB,
		"volumeMountPath": p.VolumeMountPath, "ports": p.Ports, "env": p.Env,
		"createdAt":      p.CreatedAt.UTC().Format(timeLayout),
		"lastStartedAt":  p.LastStartedAt.UTC().Format(timeLayout),
		"consumerUserId": "user_TESTUSER", "machineId": p.MachineID, "memoryInGb": 62 * p.GPUCount,
		"vcpuCount": 12 * p.GPUCount, "templateId": "", "interruptible": false, "locked": false,
		"adjustedCostPerHr": p.Cost, "machine": map[string]any{},
		"lastStatusChange": "Rented by User: " + p.LastStartedAt.UTC().Format(time.RFC1123),
	}
	if len(p.Ports) == 0 {
		m["ports"] = []string{}
	}
	if len(p.Env) == 0 {
		m["env"] = map[string]string{}
	}
	if s.costAsString {
		m["costPerHr"] = strconv.FormatFloat(p.Cost, 'f', -1, 64)
	} else {
		m["costPerHr"] = p.Cost
	}
	if p.NetworkVolumeID != "" {
		m["networkVolumeId"] = p.NetworkVolumeID
	}
	if st == "RUNNING" && p.SupportPublicIP {
		m["publicIp"] = p.PublicIP
		m["portMappings"] = p.PortMap
	} else {
		m["publicIp"] = nil
		m["portMappings"] = nil
	}
	if includeMachine {
		g := s.gpus[p.GPUID]
		m["machine"] = map[string]any{
			"gpuTypeId": p.GPUID, "gpuDisplayName": g.DisplayName, "dataCenterId": p.DataCenter,
			"location": "RO", "secureCloud": p.Cloud == "SECURE", "supportPublicIp": p.SupportPublicIP,
			"gpuType": map[string]any{"id": g.ID, "displayName": g.DisplayName,
				"securePrice": g.SecurePrice, "communityPrice": g.CommunityPrice},
		}
	}
	return m
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	inc := q.Get("includeMachine") == "true"
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	var ps []*pod
	for _, p := range s.pods {
		if n := q.Get("name"); n != "" && p.Name != n {
			continue
		}
		if d := q.Get("desiredStatus"); d != "" && p.status(now) != d {
			continue
		}
		if g := q.Get("gpuTypeId"); g != "" && p.GPUID != g {
			continue
		}
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].CreatedAt.Before(ps[j].CreatedAt) })
	out := make([]map[string]any, 0, len(ps))
	for _, p := range ps {
		out = append(out, s.encode(p, now, inc))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) get(w http.ResponseWriter, r *http.Request, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pods[id]
	if p == nil {
		errorJSON(w, http.StatusNotFound, "pod not found")
		return
	}
	writeJSON(w, http.StatusOK, s.encode(p, time.Now(), r.URL.Query().Get("includeMachine") == "true"))
}

func (s *Server) terminate(w http.ResponseWriter, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pods[id]
	if p == nil {
		errorJSON(w, http.StatusNotFound, "pod not found")
		return
	}
	if p.HoldsGPU {
		s.gpus[p.GPUID].take(p.Cloud, -p.GPUCount)
	}
	p.HoldsGPU = false
	p.Desired = "TERMINATED"
	s.halt(p)
	delete(s.pods, id)
	s.gone[id] = p
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) stop(w http.ResponseWriter, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pods[id]
	if p == nil {
		errorJSON(w, http.StatusNotFound, "pod not found")
		return
	}
	if p.Desired == "RUNNING" {
		p.Desired = "EXITED"
		if p.HoldsGPU {
			s.gpus[p.GPUID].take(p.Cloud, -p.GPUCount)
			p.HoldsGPU = false
		}
		p.PublicIP, p.PortMap = "", nil
		s.halt(p)
	}
	writeJSON(w, http.StatusOK, s.encode(p, time.Now(), false))
}

func (s *Server) start(w http.ResponseWriter, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pods[id]
	if p == nil {
		errorJSON(w, http.StatusNotFound, "pod not found")
		return
	}
	if p.Desired == "EXITED" {
		g := s.gpus[p.GPUID]
		if g.stock(p.Cloud) < p.GPUCount {
			errorJSON(w, http.StatusBadRequest, MsgHostNoGPUs)
			return
		}
		g.take(p.Cloud, p.GPUCount)
		p.HoldsGPU = true
		now := time.Now()
		p.Desired, p.LastStartedAt, p.BootAt = "RUNNING", now, now.Add(s.bootDelay)
		s.boot(p)
	}
	writeJSON(w, http.StatusOK, s.encode(p, time.Now(), false))
}

func newID() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	var b [14]byte
	rand.Read(b[:])
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b[:])
}

// graphql answers POST /graphql: the gpuTypes query.
func (s *Server) graphql(w http.ResponseWriter, body []byte) {
	var req struct {
		Query         string         `json:"query"`
		Variables     map[string]any `json:"variables"`
		OperationName string         `json:"operationName"`
	}
	if err := json.Unmarshal(body, &req); err != nil || req.Query == "" {
		writeJSON(w, http.StatusBadRequest, map[string]any{"errors": []gqlError{{Message: "Must provide query string."}}})
		return
	}
	ops, err := gqlParse(req.Query)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"errors": []gqlError{{Message: err.Error(),
			Extensions: map[string]any{"code": "GRAPHQL_PARSE_FAILED"}}}})
		return
	}
	op := ops[0]
	if req.OperationName != "" || len(ops) > 1 {
		found := false
		for _, o := range ops {
			if o.Name == req.OperationName {
				op, found = o, true
			}
		}
		if !found {
			writeJSON(w, http.StatusBadRequest, map[string]any{"errors": []gqlError{{Message: "Unknown operation named \"" + req.OperationName + "\"."}}})
			return
		}
	}
	vars := map[string]any{}
	for k, v := range op.VarDefaults {
		vars[k] = v.resolve(nil)
	}
	for k, v := range req.Variables {
		vars[k] = v
	}
	if op.Kind != "query" {
		writeJSON(w, http.StatusOK, map[string]any{"data": nil, "errors": []gqlError{
			validationError("this test server answers queries only, not %s", op.Kind)}})
		return
	}
	s.mu.Lock()
	root := &gqlObject{Type: "Query", Fields: map[string]func(map[string]any) any{
		"gpuTypes": func(args map[string]any) any { return s.gqlGPUTypes(args) },
		"pod":      func(args map[string]any) any { return s.gqlPod(args) },
	}}
	data, errs := execute(root, op.Sel, vars, nil)
	s.mu.Unlock()
	out := map[string]any{"data": data}
	if len(errs) > 0 {
		out["errors"] = errs
		if hasValidation(errs) {
			out["data"] = nil
			writeJSON(w, http.StatusBadRequest, out)
			return
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func hasValidation(errs []gqlError) bool {
	for _, e := range errs {
		if e.Extensions["code"] == "GRAPHQL_VALIDATION_FAILED" {
			return true
		}
	}
	return false
}

func (s *Server) gqlGPUTypes(args map[string]any) any {
	var want map[string]bool
	if in, ok := args["input"].(map[string]any); ok {
		if id, ok := in["id"].(string); ok {
			want = map[string]bool{id: true}
		}
		if ids, ok := in["ids"].([]any); ok {
			want = map[string]bool{}
			for _, v := range ids {
				if s, ok := v.(string); ok {
					want[s] = true
				}
			}
		}
	}
	var out []*gqlObject
	for _, id := range s.gpuOrder {
		if want != nil && !want[id] {
			continue
		}
		g := s.gpus[id]
		gg := *g // snapshot
		out = append(out, &gqlObject{Type: "GpuType", Fields: map[string]func(map[string]any) any{
			"id":                 func(map[string]any) any { return gg.ID },
			"displayName":        func(map[string]any) any { return gg.DisplayName },
			"manufacturer":       func(map[string]any) any { return "Nvidia" },
			"memoryInGb":         func(map[string]any) any { return gg.MemoryGB },
			"maxGpuCount":        func(map[string]any) any { return 8 },
			"secureCloud":        func(map[string]any) any { return gg.SecurePrice > 0 },
			"communityCloud":     func(map[string]any) any { return gg.CommunityPrice > 0 },
			"securePrice":        func(map[string]any) any { return gg.SecurePrice },
			"communityPrice":     func(map[string]any) any { return gg.CommunityPrice },
			"secureSpotPrice":    func(map[string]any) any { return round3(gg.SecurePrice / 2) },
			"communitySpotPrice": func(map[string]any) any { return round3(gg.CommunityPrice / 2) },
			"lowestPrice":        func(a map[string]any) any { return lowestPrice(&gg, a) },
		}})
	}
	return out
}

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

// lowestPrice answers GpuType.lowestPrice(input: {gpuCount, secureCloud}): the price
// of the whole pod, or nulls without stock.
func lowestPrice(g *GPU, args map[string]any) any {
	count := 1
	var secure *bool
	if in, ok := args["input"].(map[string]any); ok {
		if n, ok := in["gpuCount"].(float64); ok {
			count = int(n)
		}
		if b, ok := in["secureCloud"].(bool); ok {
			secure = &b
		}
	}
	if count < 1 {
		return gqlError{Message: "gpuCount must be at least 1"}
	}
	best := 0.0
	stock := 0
	for _, cloud := range []string{"SECURE", "COMMUNITY"} {
		if secure != nil && *secure != (cloud == "SECURE") {
			continue
		}
		if p := g.price(cloud); p > 0 && g.stock(cloud) >= count && (best == 0 || p < best) {
			best, stock = p, g.stock(cloud)
		}
	}
	var price, bid, status any
	if best > 0 {
		price = round3(best * float64(count))
		bid = round3(best * float64(count) / 2)
		switch {
		case stock >= 8:
			status = "High"
		case stock >= 3:
			status = "Medium"
		default:
			status = "Low"
		}
	}
	return &gqlObject{Type: "LowestPrice", Fields: map[string]func(map[string]any) any{
		"uninterruptablePrice": func(map[string]any) any { return price },
		"minimumBidPrice":      func(map[string]any) any { return bid },
		"stockStatus":          func(map[string]any) any { return status },
		"gpuName":              func(map[string]any) any { return g.DisplayName },
		"gpuTypeId":            func(map[string]any) any { return g.ID },
		"minVcpu":              func(map[string]any) any { return 8 },
		"minMemory":            func(map[string]any) any { return 32 },
	}}
}

// decodeStrict decodes a request body into v, answering 400 (and returning false) for bad
// JSON or a key that is not exactly one of fields. Strict: encoding/json matches names
// case-insensitively and DisallowUnknownFields does not catch "imagename".
func decodeStrict(w http.ResponseWriter, body []byte, fields map[string]bool, v any) bool {
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(body, &keys); err != nil {
		errorJSON(w, http.StatusBadRequest, "Invalid input: "+err.Error())
		return false
	}
	for k := range keys {
		if !fields[k] {
			errorJSON(w, http.StatusBadRequest, fmt.Sprintf("Invalid input: unknown field %q", k))
			return false
		}
	}
	if err := json.Unmarshal(body, v); err != nil {
		errorJSON(w, http.StatusBadRequest, "Invalid input: "+err.Error())
		return false
	}
	return true
}

// checkPorts answers 400 (and returns false) for a port that is not "N/tcp", "N/http" or
// "N/udp" with N in 1..65535.
func checkPorts(w http.ResponseWriter, ports []string) bool {
	for _, p := range ports {
		m := portRE.FindStringSubmatch(p)
		if m == nil {
			errorJSON(w, http.StatusBadRequest, fmt.Sprintf("Invalid input: port %q must look like 8888/http or 22/tcp", p))
			return false
		}
		if n, _ := strconv.Atoi(m[1]); n < 1 || n > 65535 {
			errorJSON(w, http.StatusBadRequest, fmt.Sprintf("Invalid input: port %q out of range", p))
			return false
		}
	}
	return true
}
