// Package sshhost is the provider for machines scopectl does not rent: any host the user
// can SSH to (a bare GPU server, a box at home). Create adds a host after checking it
// (it answers over SSH, with its host key checked; nvidia-smi says which GPUs it has;
// Docker is there or not) and records it in the store; Get and List check each host
// again. A host's "pod" is the Scope container scopectl deploys there: Stop and Start
// stop and start that container (docker stop/start), Terminate forgets the host and
// touches nothing on it.
//
// Status: RUNNING when the host answers and its Scope container is running or not made
// yet; EXITED when the container is stopped, or the host does not answer (Pod.Detail
// says why).
package sshhost

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/daydreamlive/scopectl/internal/docker"
	"github.com/daydreamlive/scopectl/internal/gpu"
	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/store"
)

// Name is the provider's name in the store.
const Name = "ssh"

// Runner is a connection that runs shell commands on a host.
type Runner interface {
	remote.Runner
	io.Closer
	String() string
}

// Records is where the provider keeps its hosts: the caller's store (store.PodStore
// is one). GetPod returns an error wrapping store.ErrNotFound for an unknown id.
type Records interface {
	GetPod(ctx context.Context, ref string) (store.Pod, error)
	PutPod(ctx context.Context, p store.Pod) error
	ListPods(ctx context.Context, liveOnly bool) ([]store.Pod, error)
}

// Provider manages the SSH hosts recorded in Store.
type Provider struct {
	Store Records
	// Dial connects to an ssh://user@host:port/ URL, checking the host key.
	Dial func(ctx context.Context, url string) (Runner, error)
	// CheckTimeout bounds the check of one host (default 20 s).
	CheckTimeout time.Duration
}

var _ provider.Provider = (*Provider)(nil)

// Name returns "ssh".
func (p *Provider) Name() string { return Name }

// HostURL checks an ssh://user@host[:port][/] URL and returns its canonical form,
// ssh://user@host:port (port 22 unless given).
func HostURL(raw string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || u.Scheme != "ssh" || u.Hostname() == "" || u.Opaque != "" {
		return "", fmt.Errorf("--host %s: want ssh://user@host:port", remote.Redact(raw))
	}
	if _, hasPass := u.User.Password(); hasPass || u.User.Username() == "" {
		return "", fmt.Errorf("--host %s: want ssh://user@host:port (a user, no password: keys or the agent log in)", remote.Redact(raw))
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("--host %s: a host, not a folder: ssh://user@host:port", remote.Redact(raw))
	}
	port := 22
	if s := u.Port(); s != "" {
		if port, err = strconv.Atoi(s); err != nil || port < 1 || port > 65535 {
			return "", fmt.Errorf("--host %s: bad port", remote.Redact(raw))
		}
	}
	return "ssh://" + u.User.Username() + "@" + net.JoinHostPort(u.Hostname(), strconv.Itoa(port)), nil
}

// ID is the pod id of the host at the canonical URL hostURL: "ssh-" and 10 hex digits.
func ID(hostURL string) string {
	sum := sha256.Sum256([]byte(hostURL))
	return "ssh-" + hex.EncodeToString(sum[:5])
}

// check is what one look at a host found.
type check struct {
	err       error // the host did not answer
	gpus      []gpu.GPU
	gpuErr    error
	docker    bool
	container *docker.Container // nil without Docker
	ctErr     error
}

func (p *Provider) check(ctx context.Context, addr, container string) check {
	t := p.CheckTimeout
	if t <= 0 {
		t = 20 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, t)
	defer cancel()
	r, err := p.Dial(ctx, addr+"/")
	if err != nil {
		return check{err: err}
	}
	defer r.Close()
	var c check
	c.gpus, c.gpuErr = gpu.Over(r, r.String()).GPUs(ctx)
	out, code, err := r.Run(ctx, "command -v docker")
	if err != nil {
		return check{err: err}
	}
	c.docker = code == 0 && strings.TrimSpace(out) != ""
	if c.docker {
		c.container, c.ctErr = docker.Inspect(ctx, r, container)
	}
	return c
}

func containerName(rec store.Pod) string {
	if rec.Container != "" {
		return rec.Container
	}
	return docker.DefaultName
}

// pod describes the host of rec as check c found it.
func pod(rec store.Pod, c check) *provider.Pod {
	u, _ := url.Parse(rec.Address)
	port, _ := strconv.Atoi(u.Port())
	p := &provider.Pod{ID: rec.ID, Name: rec.Name, GPUType: rec.GPUType, GPUCount: rec.GPUCount,
		PublicIP: u.Hostname(), Ports: map[string]int{"22/tcp": port}, SSHUser: u.User.Username(),
		CreatedAt: rec.CreatedAt, Status: provider.StatusRunning}
	if c.err != nil {
		p.Status, p.Detail = provider.StatusExited, "unreachable: "+oneLine(c.err.Error())
		return p
	}
	if len(c.gpus) > 0 {
		p.GPUType, p.GPUCount = c.gpus[0].Name, len(c.gpus)
	}
	name := containerName(rec)
	var notes []string
	switch ct := c.container; {
	case !c.docker:
		notes = append(notes, "no docker")
	case c.ctErr != nil:
		notes = append(notes, "container "+name+": "+oneLine(c.ctErr.Error()))
	case !ct.Exists:
		notes = append(notes, "no container "+name+" yet (scopectl deploy --pod "+rec.ID+")")
	default:
		p.Image = ct.Image
		// The limits deploy recorded on the container, read as a RunPod pod's env is.
		if env := provider.LimitsEnvFromLabels(ct.Labels); len(env) > 0 {
			p.Env = env
		}
		if ct.HostPort > 0 {
			p.Ports[strconv.Itoa(docker.ContainerPort)+"/http"] = ct.HostPort
		}
		if !ct.Running {
			p.Status = provider.StatusExited
		}
		if t, err := time.Parse(time.RFC3339Nano, ct.StartedAt); err == nil && ct.Running {
			p.StartedAt = t.UTC()
		}
		notes = append(notes, "container "+name+" "+ct.Status)
	}
	if errors.Is(c.gpuErr, gpu.ErrNoSMI) {
		notes = append(notes, "no nvidia-smi")
	} else if c.gpuErr != nil {
		notes = append(notes, oneLine(c.gpuErr.Error()))
	}
	p.Detail = strings.Join(notes, "; ")
	return p
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// Create adds the host spec.Host, after checking that it answers over SSH (its host
// key checked), and records it with the GPUs nvidia-smi reports there. Adding a host
// again refreshes its record (spec.Name, when given, renames it). Nothing is rented:
// the pod is the host.
func (p *Provider) Create(ctx context.Context, spec provider.CreateSpec) (*provider.Pod, error) {
	addr, err := HostURL(spec.Host)
	if err != nil {
		return nil, err
	}
	id := ID(addr)
	rec, err := p.Store.GetPod(ctx, id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	if err != nil || rec.TerminatedAt != nil {
		u, _ := url.Parse(addr)
		rec = store.Pod{RequestID: id, ID: id, Provider: Name, Name: u.Hostname(), Address: addr, CreatedAt: time.Now().UTC()}
	}
	if spec.Name != "" {
		rec.Name = spec.Name
	}
	c := p.check(ctx, addr, containerName(rec))
	if c.err != nil {
		return nil, fmt.Errorf("ssh host %s: %w", addr, c.err)
	}
	return p.save(ctx, rec, c)
}

// save records what check c found and returns the pod.
func (p *Provider) save(ctx context.Context, rec store.Pod, c check) (*provider.Pod, error) {
	pd := pod(rec, c)
	now := time.Now().UTC()
	rec.GPUType, rec.GPUCount, rec.LastSeenStatus, rec.LastSeenAt = pd.GPUType, pd.GPUCount, pd.Status, &now
	if err := p.Store.PutPod(ctx, rec); err != nil {
		return nil, err
	}
	return pd, nil
}

// record returns the live record of host id. ErrNotFound.
func (p *Provider) record(ctx context.Context, id string) (store.Pod, error) {
	rec, err := p.Store.GetPod(ctx, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && (rec.Provider != Name || rec.TerminatedAt != nil)) {
		return rec, fmt.Errorf("ssh host %s: %w (scopectl pod create --provider ssh --host ssh://user@host:port adds one)", id, provider.ErrNotFound)
	}
	return rec, err
}

// Get checks host id now.
func (p *Provider) Get(ctx context.Context, id string) (*provider.Pod, error) {
	rec, err := p.record(ctx, id)
	if err != nil {
		return nil, err
	}
	return p.save(ctx, rec, p.check(ctx, rec.Address, containerName(rec)))
}

// hosts returns the live records of this provider.
func (p *Provider) hosts(ctx context.Context) ([]store.Pod, error) {
	recs, err := p.Store.ListPods(ctx, true)
	if err != nil {
		return nil, err
	}
	var out []store.Pod
	for _, r := range recs {
		if r.Provider == Name && r.TerminatedAt == nil {
			out = append(out, r)
		}
	}
	return out, nil
}

// List checks every recorded host, all at once.
func (p *Provider) List(ctx context.Context) ([]provider.Pod, error) {
	recs, err := p.hosts(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]provider.Pod, len(recs))
	errs := make([]error, len(recs))
	var wg sync.WaitGroup
	for i, rec := range recs {
		wg.Go(func() {
			pd, err := p.save(ctx, rec, p.check(ctx, rec.Address, containerName(rec)))
			if pd != nil {
				out[i] = *pd
			}
			errs[i] = err
		})
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// container runs fn on host id's Scope container, which must exist.
func (p *Provider) container(ctx context.Context, id string, fn func(context.Context, docker.Runner, string) error) error {
	rec, err := p.record(ctx, id)
	if err != nil {
		return err
	}
	r, err := p.Dial(ctx, rec.Address+"/")
	if err != nil {
		return fmt.Errorf("ssh host %s: %w", id, err)
	}
	defer r.Close()
	name := containerName(rec)
	ct, err := docker.Inspect(ctx, r, name)
	if err != nil {
		return fmt.Errorf("ssh host %s: %w", id, err)
	}
	if !ct.Exists {
		return fmt.Errorf("ssh host %s: %w: no container %s there (scopectl deploy --pod %s)", id, provider.ErrNotFound, name, id)
	}
	return fn(ctx, r, name)
}

// Start starts the host's Scope container (docker start).
func (p *Provider) Start(ctx context.Context, id string) error {
	return p.container(ctx, id, docker.Start)
}

// Stop stops the host's Scope container (docker stop): its GPU is free again.
func (p *Provider) Stop(ctx context.Context, id string) error {
	return p.container(ctx, id, docker.Stop)
}

// Terminate forgets the host. Nothing on it is touched: its container and files stay.
func (p *Provider) Terminate(ctx context.Context, id string) error {
	rec, err := p.record(ctx, id)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	rec.TerminatedAt, rec.LastSeenStatus = &now, provider.StatusTerminated
	return p.Store.PutPod(ctx, rec)
}

// Update is not how an SSH host changes: its Scope container is deploy's
// (scopectl deploy --pod ID compares and replaces it).
func (p *Provider) Update(ctx context.Context, id string, _ provider.UpdateSpec, _ bool) ([]provider.Change, error) {
	return nil, fmt.Errorf("ssh host %s: %w: scopectl deploy --pod %s updates its Scope container", id, errors.ErrUnsupported, id)
}

// HostGPUs are the GPUs nvidia-smi reports on one recorded host.
type HostGPUs struct {
	ID    string    `json:"id"`
	Name  string    `json:"name"`
	Host  string    `json:"host"`
	GPUs  []gpu.GPU `json:"gpus"`
	Error string    `json:"error,omitempty"` // the host or nvidia-smi did not answer
}

// GPUs asks every recorded host for its GPUs, all at once.
func (p *Provider) GPUs(ctx context.Context) ([]HostGPUs, error) {
	recs, err := p.hosts(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]HostGPUs, len(recs))
	var wg sync.WaitGroup
	for i, rec := range recs {
		wg.Go(func() {
			c := p.check(ctx, rec.Address, containerName(rec))
			h := HostGPUs{ID: rec.ID, Name: rec.Name, Host: rec.Address, GPUs: c.gpus}
			if err := errors.Join(c.err, c.gpuErr); err != nil {
				h.Error = oneLine(err.Error())
			}
			if h.GPUs == nil {
				h.GPUs = []gpu.GPU{}
			}
			out[i] = h
		})
	}
	wg.Wait()
	return out, nil
}

// GPUTypes lists the GPU models of the recorded hosts that answer; they cost nothing
// per hour here, and a model is available when one of its GPUs is idle.
func (p *Provider) GPUTypes(ctx context.Context) ([]provider.GPUType, error) {
	hosts, err := p.GPUs(ctx)
	if err != nil {
		return nil, err
	}
	index := map[string]int{}
	out := []provider.GPUType{}
	for _, h := range hosts {
		for _, g := range h.GPUs {
			i, ok := index[g.Name]
			if !ok {
				i, index[g.Name] = len(out), len(out)
				out = append(out, provider.GPUType{ID: g.Name, Name: g.Name, MemoryGB: int(math.Round(float64(g.MemoryTotalMiB) / 1024))})
			}
			out[i].Available = out[i].Available || g.UtilizationPct == 0
		}
	}
	return out, nil
}
