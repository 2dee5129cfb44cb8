package kubernetes

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/url"
	"path"
	"strings"
	"sync"

	"github.com/daydreamlive/scopectl/internal/remote"
	_ "github.com/daydreamlive/scopectl/internal/remote/agent" // http:// remotes: the agent sidecar
	"github.com/daydreamlive/scopectl/internal/secret"
)

// A training Job's machine is addressed as k8s://CONTEXT/NAMESPACE/JOB; a folder on it
// is that address followed by the folder's absolute path
// (k8s://lab/studio/wan-1a2b/workspace/.scopectl/jobs/ID), as ssh://user@host:port/DIR
// is for an SSH machine. The Trainer reaches both the same way.

// MachineURL is the address of Job job's machine in t.
func MachineURL(t Target, job string) string {
	return "k8s://" + t.Context + "/" + t.Namespace + "/" + job
}

// ParseMachine splits a machine address (with or without a folder) into its target,
// Job name and folder ("" without one).
func ParseMachine(s string) (t Target, job, dir string, err error) {
	rest, ok := strings.CutPrefix(s, "k8s://")
	parts := strings.SplitN(rest, "/", 4)
	if !ok || len(parts) < 3 || parts[1] == "" || parts[2] == "" {
		return t, "", "", fmt.Errorf("kubernetes: %q: want k8s://CONTEXT/NAMESPACE/JOB[/DIR]", s)
	}
	t.Context, t.Namespace, job = parts[0], parts[1], parts[2]
	if len(parts) == 4 {
		dir = path.Clean("/" + parts[3])
	}
	return t, job, dir, nil
}

// TrainContainer is the container of a training Job's pod commands run in: the
// ai-toolkit image, where `train supervise` runs the trainer.
const TrainContainer = "train"

// Machines opens folders on training Jobs' pods: files through the pod's agent sidecar
// (a port-forward through the API server to its workspace agent), commands through
// exec in its train container. One port-forward per pod, kept until Close.
type Machines struct {
	// Kubeconfig, when set (--kubeconfig), reaches every machine.
	Kubeconfig string
	// KubeconfigOf, when set, gives the kubeconfig recorded with the job at a machine
	// address (k8s://CONTEXT/NAMESPACE/JOB) when Kubeconfig is empty ("": the default
	// loading rules): a later command reaches the cluster the job was run on from a
	// shell without the same KUBECONFIG.
	KubeconfigOf func(ctx context.Context, machine string) string
	// Env carries the agent remote's options (compress …); the token is the Job's.
	Env remote.Env
	// Forward and Exec reach the pod; nil: PortForward and Client.Exec through the API
	// server. Tests without a kubelet play the pod's containers on this machine.
	Forward func(ctx context.Context, c *Client, pod string, port int) (addr string, stop func(), err error)
	Exec    func(ctx context.Context, c *Client, pod, container string, argv []string, stdin io.Reader, stdout, stderr io.Writer) (int, error)
	// Client, when set, is used for every target (tests: envtest's config).
	Client *Client

	mu   sync.Mutex
	open map[string]*podMachine
}

type podMachine struct {
	c     *Client
	job   string
	pod   string
	addr  string
	stop  func()
	token secret.Secret
}

// Close ends the port-forwards.
func (ms *Machines) Close() {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	for k, m := range ms.open {
		if m.stop != nil {
			m.stop()
		}
		delete(ms.open, k)
	}
}

func (ms *Machines) client(ctx context.Context, t Target, job string) (*Client, error) {
	if ms.Client != nil {
		return ms.Client, nil
	}
	t.Kubeconfig = ms.Kubeconfig
	if t.Kubeconfig == "" && ms.KubeconfigOf != nil {
		t.Kubeconfig = ms.KubeconfigOf(ctx, MachineURL(t, job))
	}
	return New(t)
}

// machine is the pod of Job job, with its agent forwarded; an earlier forward is
// reused while that pod is still the Job's.
func (ms *Machines) machine(ctx context.Context, t Target, job string) (*podMachine, error) {
	key := t.String() + "/" + job
	ms.mu.Lock()
	m := ms.open[key]
	ms.mu.Unlock()
	if m != nil {
		return m, nil
	}
	c, err := ms.client(ctx, t, job)
	if err != nil {
		return nil, err
	}
	pod, err := c.JobPod(ctx, job)
	if err != nil {
		return nil, err
	}
	tok, err := c.JobAgentToken(ctx, job)
	if err != nil {
		return nil, err
	}
	secret.Default.Add(tok)
	fwd := ms.Forward
	if fwd == nil {
		fwd = func(ctx context.Context, c *Client, pod string, port int) (string, func(), error) {
			return c.PortForward(ctx, pod, port)
		}
	}
	addr, stop, err := fwd(ctx, c, pod, AgentPort)
	if err != nil {
		return nil, err
	}
	m = &podMachine{c: c, job: job, pod: pod, addr: addr, stop: stop, token: tok}
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if ms.open == nil {
		ms.open = map[string]*podMachine{}
	}
	if o := ms.open[key]; o != nil {
		if stop != nil {
			stop()
		}
		return o, nil
	}
	ms.open[key] = m
	return m, nil
}

// Forget drops the forward to Job job's pod (the pod is gone; the next Open looks again).
func (ms *Machines) forget(t Target, job string) {
	key := t.String() + "/" + job
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if m := ms.open[key]; m != nil {
		if m.stop != nil {
			m.stop()
		}
		delete(ms.open, key)
	}
}

// Open opens the folder of a machine address k8s://CONTEXT/NAMESPACE/JOB/DIR, creating
// it on the pod's volume when missing. The remote runs sh scripts in the train
// container (remote.Runner, remote.InputRunner).
func (ms *Machines) Open(ctx context.Context, raw string) (remote.Remote, error) {
	t, job, dir, err := ParseMachine(raw)
	if err != nil {
		return nil, err
	}
	if dir == "" {
		dir = "/"
	}
	m, err := ms.machine(ctx, t, job)
	if err != nil {
		return nil, err
	}
	env := ms.Env
	env.Lookup = func(key string) secret.Secret {
		if key == "agent_token" {
			return m.token
		}
		if ms.Env.Lookup != nil {
			return ms.Env.Lookup(key)
		}
		return secret.Secret{}
	}
	r, err := remote.Open(ctx, "http://"+m.addr+"/d/"+url.PathEscape(dir), env)
	if err != nil {
		return nil, err
	}
	// The agent makes the folder on the first request to it.
	if _, err := r.List(ctx); err != nil {
		r.Close()
		// A forward that broke (the laptop slept, the API server restarted) is made
		// again by the next Open; a pod that is gone is said so.
		ms.forget(t, job)
		if _, perr := m.c.JobPod(ctx, job); perr != nil {
			return nil, perr
		}
		return nil, fmt.Errorf("kubernetes: job %s: the agent sidecar of pod %s: %w", job, m.pod, err)
	}
	exec := ms.Exec
	if exec == nil {
		exec = func(ctx context.Context, c *Client, pod, container string, argv []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
			return c.Exec(ctx, pod, container, argv, stdin, stdout, stderr)
		}
	}
	return &PodDir{Remote: r, name: "k8s://" + t.Context + "/" + t.Namespace + "/" + job + dir, m: m, exec: exec}, nil
}

// PodDir is a folder on a training Job's pod: the agent's files, and sh in the train
// container.
type PodDir struct {
	remote.Remote
	name string
	m    *podMachine
	exec func(ctx context.Context, c *Client, pod, container string, argv []string, stdin io.Reader, stdout, stderr io.Writer) (int, error)
}

var (
	_ remote.InputRunner = (*PodDir)(nil)
	_ remote.Hasher      = (*PodDir)(nil)
)

// String names the folder as k8s://CONTEXT/NAMESPACE/JOB/DIR.
func (p *PodDir) String() string { return p.name }

// Pod is the pod's name.
func (p *PodDir) Pod() string { return p.m.pod }

// Run runs a sh script in the train container; stderr is appended to the output.
func (p *PodDir) Run(ctx context.Context, script string) (string, int, error) {
	return p.RunInput(ctx, script, nil)
}

// RunInput runs a sh script in the train container with stdin as its standard input.
func (p *PodDir) RunInput(ctx context.Context, script string, stdin io.Reader) (string, int, error) {
	var out, errb bytes.Buffer
	code, err := p.exec(ctx, p.m.c, p.m.pod, TrainContainer, []string{"sh", "-c", script}, stdin, &out, &errb)
	if err != nil {
		return "", -1, err
	}
	return out.String() + errb.String(), code, nil
}

// Hash is the agent's sha256 of name.
func (p *PodDir) Hash(ctx context.Context, name string) (string, error) {
	if h, ok := p.Remote.(remote.Hasher); ok {
		return h.Hash(ctx, name)
	}
	return "", fmt.Errorf("%s: no remote hashing", p.name)
}
