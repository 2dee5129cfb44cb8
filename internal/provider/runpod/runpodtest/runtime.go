package runpodtest

// What makes a fake pod "run": a Runtime the test supplies starts the pod's container
// (a local process, say Scope's stand-in), tells the server which addresses RunPod
// would report for it (publicIp, portMappings) and where the HTTP proxy forwards
// https://{pod}-{port}.proxy.runpod.net (here ProxyURL). The update endpoint (PATCH
// /pods/{id}) restarts a running pod's container, as RunPod's "update, potentially
// triggering a reset" does.

import (
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Container is what a Runtime started for a pod.
type Container struct {
	// PublicIP is the pod's publicIp while it runs ("" keeps a made-up address).
	PublicIP string
	// TCP maps the pod's private tcp ports to public ports (portMappings); a tcp
	// port it lacks gets a made-up public port that nothing answers.
	TCP map[int]int
	// HTTP maps the pod's private http ports to the base URL ProxyURL forwards to.
	HTTP map[int]string
	// Stop is called when the pod stops, is reset by an update, or is terminated.
	Stop func()
}

// Runtime starts a pod's container when the pod boots: on create, on start, and when
// an update resets a running pod. It is called with the server's lock held, so it must
// not call the server. An error leaves the pod CREATED for good: a container that
// never comes up (an image that cannot be pulled, a crash loop).
type Runtime func(p PodView) (*Container, error)

// boot (re)starts p's container and gives p its addresses. s.mu is held.
func (s *Server) boot(p *pod) {
	s.halt(p)
	p.bootFailed = false
	if s.runtime != nil {
		c, err := s.runtime(p.view(time.Now()))
		if err != nil {
			p.bootFailed = true
		} else {
			p.container = c
		}
	}
	s.assignAddress(p)
}

// halt stops p's container, if one runs. s.mu is held.
func (s *Server) halt(p *pod) {
	if c := p.container; c != nil {
		p.container = nil
		if c.Stop != nil {
			c.Stop()
		}
	}
}

func (s *Server) stopAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.pods {
		s.halt(p)
	}
}

const proxyPrefix = "/proxy/"

// ProxyURL is the template of pods' HTTP URLs through this server's proxy
// (SCOPECTL_RUNPOD_PROXY_URL), the stand-in for https://{pod}-{port}.proxy.runpod.net.
func (s *Server) ProxyURL() string { return s.URL + proxyPrefix + "{pod}-{port}" }

// proxy forwards /proxy/{pod}-{port}/… to the pod's container, the way RunPod's HTTP
// proxy does: only to a running pod, only to a port it exposes as http, and a Bad
// Gateway when nothing answers there. It needs no API key.
func (s *Server) proxy(w http.ResponseWriter, r *http.Request) {
	rest := strings.TrimPrefix(r.URL.Path, proxyPrefix)
	host, path, _ := strings.Cut(rest, "/")
	i := strings.LastIndex(host, "-")
	port, err := strconv.Atoi(host[i+1:])
	if i < 0 || err != nil {
		http.Error(w, "404 page not found", http.StatusNotFound)
		return
	}
	id := host[:i]
	s.mu.Lock()
	p := s.pods[id]
	var target string
	running := p != nil && p.status(time.Now()) == "RUNNING"
	if running && p.container != nil && slices.Contains(p.Ports, strconv.Itoa(port)+"/http") {
		target = p.container.HTTP[port]
	}
	s.mu.Unlock()
	switch {
	case p == nil:
		http.Error(w, "404: pod not found", http.StatusNotFound)
		return
	case target == "":
		http.Error(w, "502 Bad Gateway: the pod is not running or nothing serves port "+strconv.Itoa(port), http.StatusBadGateway)
		return
	}
	u, err := url.Parse(target)
	if err != nil {
		http.Error(w, "502 Bad Gateway", http.StatusBadGateway)
		return
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Path, pr.Out.URL.RawPath = "/"+path, ""
			pr.SetURL(u)
		},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			http.Error(w, "502 Bad Gateway", http.StatusBadGateway)
		},
	}
	rp.ServeHTTP(w, r)
}

// updateBody is RunPod's v1 update schema (docs.runpod.io/api-reference/pods/PATCH/pods/podId).
type updateBody struct {
	ContainerDiskInGb       *int               `json:"containerDiskInGb"`
	ContainerRegistryAuthID *string            `json:"containerRegistryAuthId"`
	DockerEntrypoint        []string           `json:"dockerEntrypoint"`
	DockerStartCmd          []string           `json:"dockerStartCmd"`
	Env                     *map[string]string `json:"env"`
	GlobalNetworking        *bool              `json:"globalNetworking"`
	ImageName               *string            `json:"imageName"`
	Locked                  *bool              `json:"locked"`
	Name                    *string            `json:"name"`
	Ports                   *[]string          `json:"ports"`
	VolumeInGb              *int               `json:"volumeInGb"`
	VolumeMountPath         *string            `json:"volumeMountPath"`
}

var updateFields = jsonFields(updateBody{})

// Updates is how many PATCH /pods/{id} requests changed a pod.
func (s *Server) Updates() int {
	n := 0
	for _, r := range s.Requests() {
		if r.Route == "PATCH /pods/{id}" && r.Status == http.StatusOK {
			n++
		}
	}
	return n
}

// update answers PATCH /pods/{id}: the fields present replace the pod's (env and
// ports as a whole). A running pod is reset: its container restarts with the new
// settings and gets new addresses.
func (s *Server) update(w http.ResponseWriter, id string, body []byte) {
	var b updateBody
	if !decodeStrict(w, body, updateFields, &b) {
		return
	}
	if b.Ports != nil && !checkPorts(w, *b.Ports) {
		return
	}
	if b.ImageName != nil && *b.ImageName == "" {
		errorJSON(w, http.StatusBadRequest, "Invalid input: imageName must not be empty")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pods[id]
	if p == nil {
		errorJSON(w, http.StatusNotFound, "pod not found")
		return
	}
	if b.ImageName != nil {
		p.Image = *b.ImageName
	}
	if b.Env != nil {
		p.Env = clone(*b.Env)
	}
	if b.Ports != nil {
		p.Ports = slices.Clone(*b.Ports)
	}
	if b.Name != nil {
		p.Name = *b.Name
	}
	if b.ContainerDiskInGb != nil {
		p.ContainerDiskGB = *b.ContainerDiskInGb
	}
	if b.VolumeInGb != nil {
		p.VolumeGB = *b.VolumeInGb
	}
	if b.VolumeMountPath != nil {
		p.VolumeMountPath = *b.VolumeMountPath
	}
	if p.Desired == "RUNNING" {
		now := time.Now()
		p.LastStartedAt, p.BootAt = now, now.Add(s.bootDelay)
		s.boot(p)
	}
	writeJSON(w, http.StatusOK, s.encode(p, time.Now(), false))
}
