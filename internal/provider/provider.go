// Package provider defines the one small interface every place scopectl rents GPU
// machines from implements, the way rclone backends implement fs.Fs: RunPod today,
// a plain SSH host or another cloud later. Commands and the deploy/train code know
// nothing but this interface; a provider knows nothing about transports or LoRAs.
//
// scopectl must own every pod it creates so that nobody pays for an idle GPU: each
// pod carries the scopectl request id that created it (Pod.Tag), Create is
// idempotent on that id, and callers record the id before calling Create so that a
// crashed run can find its pod again.
package provider

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/daydreamlive/scopectl/internal/secret"
)

// Errors a Provider returns, wrapped with details (which GPU type, which pod).
// Test them with errors.Is.
var (
	// ErrNotFound: no such pod (or it has been terminated and is gone).
	ErrNotFound = errors.New("not found")
	// ErrNoCapacity: the cloud has no machine for the GPU type right now (create),
	// or the pod's host has no free GPU for it (start). The message names the GPU type.
	ErrNoCapacity = errors.New("no capacity")
	// ErrUnauthorized: the API key is missing, wrong, or lacks permission.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrPriceTooHigh: the GPU's hourly price is above CreateSpec.MaxPrice.
	ErrPriceTooHigh = errors.New("price above maximum")
	// ErrOutcomeUnknown: a create may or may not have been applied and scopectl could
	// not find out before giving up (context cancelled, retries exhausted). A pod may
	// exist: call Create again with the same RequestID (it finds the pod instead of
	// making a second one), or FindByTag / List and look for the tag.
	ErrOutcomeUnknown = errors.New("outcome unknown")
)

// Pod statuses. Providers report their own strings; these are RunPod's, which the
// rest of scopectl compares against.
const (
	StatusCreated    = "CREATED"    // accepted, not yet running (no public IP yet)
	StatusRunning    = "RUNNING"    // desired state running; check PublicIP/Ports for readiness
	StatusExited     = "EXITED"     // stopped: GPU released, volume kept (and billed)
	StatusTerminated = "TERMINATED" // gone: billing ended
)

// SecretValue replaces the value of every environment variable in Pod.Env that holds
// a secret: Pod is printed, logged and stored, so it never carries one.
const SecretValue = "<secret>"

// Environment variables scopectl sets on every pod it creates.
const (
	// EnvRequestID carries the scopectl request id (Pod.Tag).
	EnvRequestID = "SCOPECTL_REQUEST_ID"
	// EnvSecretNames lists (comma-separated) the names of the variables that hold
	// secrets, so that any later reader of the pod masks them, not only the process
	// that created it.
	EnvSecretNames = "SCOPECTL_SECRET_ENV"
)

// Pod is a rented machine as the provider reports it. IP and ports change when a
// pod restarts: read them fresh before connecting.
type Pod struct {
	ID              string            `json:"id"`
	Name            string            `json:"name"`
	Status          string            `json:"status"` // RUNNING | EXITED | TERMINATED | CREATED …
	GPUType         string            `json:"gpu_type"`
	GPUCount        int               `json:"gpu_count"`
	CostPerHr       float64           `json:"cost_per_hr"` // USD per hour for the whole pod
	Image           string            `json:"image"`
	PublicIP        string            `json:"public_ip,omitempty"`
	Ports           map[string]int    `json:"ports,omitempty"` // "22/tcp" → public port
	VolumeGB        int               `json:"volume_gb"`
	NetworkVolumeID string            `json:"network_volume_id,omitempty"`
	Env             map[string]string `json:"env,omitempty"`      // secret values replaced by SecretValue
	CreatedAt       time.Time         `json:"created_at"`         // zero when the provider did not say
	StartedAt       time.Time         `json:"started_at"`         // the last start (a stopped pod's GPU is not billed); zero when unknown
	Tag             string            `json:"tag,omitempty"`      // scopectl request id; "" for pods scopectl did not create
	SSHUser         string            `json:"ssh_user,omitempty"` // login for direct SSH; "" is root
	Detail          string            `json:"detail,omitempty"`   // the provider's word on the state (an SSH host: unreachable and why)
}

// SSH returns the public address of the pod's port 22, if it has one.
func (p *Pod) SSH() (host string, port int, ok bool) {
	port, ok = p.Ports["22/tcp"]
	if !ok || p.PublicIP == "" || port <= 0 {
		return "", 0, false
	}
	return p.PublicIP, port, true
}

// SSHURL is ssh://user@host:port/ for the pod's port 22, if it has a public one.
func (p *Pod) SSHURL() (string, bool) {
	host, port, ok := p.SSH()
	if !ok {
		return "", false
	}
	user := p.SSHUser
	if user == "" {
		user = "root"
	}
	return "ssh://" + user + "@" + net.JoinHostPort(host, strconv.Itoa(port)) + "/", true
}

// Uptime is how long the pod has been running at now: since its last start (else since
// its creation when the provider gives no start); 0 unless it is RUNNING. Its GPU is
// billed for this time at CostPerHr.
func (p *Pod) Uptime(now time.Time) time.Duration {
	start := p.StartedAt
	if start.IsZero() {
		start = p.CreatedAt
	}
	if p.Status != StatusRunning || start.IsZero() {
		return 0
	}
	return max(0, now.Sub(start))
}

// CostSoFar is the GPU cost of the current run at now: Uptime × CostPerHr, in USD.
func (p *Pod) CostSoFar(now time.Time) float64 {
	return p.CostPerHr * p.Uptime(now).Hours()
}

// CreateSpec describes a pod to create.
type CreateSpec struct {
	Name            string // human part of the pod name; the request id is appended
	GPUType         string // provider GPU type id, e.g. "NVIDIA GeForce RTX 4090"
	Cloud           string // SECURE | COMMUNITY ("" = SECURE)
	Image           string
	GPUCount        int // 0 = 1
	VolumeGB        int // pod volume at /workspace (kept on stop, billed while it exists)
	ContainerDiskGB int // lost on stop
	NetworkVolumeID string
	Ports           []string          // "22/tcp", "8000/http"
	Env             map[string]string // plain values
	SecretEnv       map[string]secret.Secret
	MaxPrice        float64 // USD per hour for the whole pod; 0 = no limit
	SSHPublicKey    string  // authorized_keys line for root
	RequestID       string  // scopectl request id: the idempotency key (see CheckRequestID)
	Host            string  // a provider of machines that already exist (ssh): the one to add, ssh://user@host:port
	// AllowedCUDA limits the machines to these CUDA versions (RunPod allowedCudaVersions,
	// e.g. "13.0"): an image built on a newer CUDA does not start on an older driver.
	AllowedCUDA []string
}

// UpdateSpec says what an existing pod must have. It only adds and replaces: an empty
// Image keeps the pod's image, Ports are added to the pod's ports (none is removed),
// and Env/SecretEnv set those variables while every other variable is kept.
type UpdateSpec struct {
	Image     string
	Ports     []string
	Env       map[string]string
	SecretEnv map[string]secret.Secret // also listed in EnvSecretNames
}

// Change is one difference between a pod and an UpdateSpec. Secret values never
// appear in it: they read SecretValue.
type Change struct {
	Field string `json:"field"` // "image", "ports" or "env NAME"
	From  string `json:"from"`
	To    string `json:"to"`
}

func (c Change) String() string {
	from := c.From
	if from == "" {
		from = "(none)"
	}
	return c.Field + ": " + from + " → " + c.To
}

// GPUType is a GPU model a provider rents, with its current on-demand price per GPU.
type GPUType struct {
	ID             string  `json:"id"`
	Name           string  `json:"name"`
	MemoryGB       int     `json:"memory_gb"`
	SecurePrice    float64 `json:"secure_price"`    // USD/hr per GPU; 0 = not offered
	CommunityPrice float64 `json:"community_price"` // USD/hr per GPU; 0 = not offered
	Available      bool    `json:"available"`       // some stock reported (a hint, not a promise)
}

// Provider rents and manages pods.
type Provider interface {
	// Create makes the pod described by spec, or returns the existing pod already
	// created with spec.RequestID: retrying a Create (after a crash, a timeout, an
	// error) never leaves two pods. ErrPriceTooHigh, ErrNoCapacity, ErrUnauthorized,
	// ErrOutcomeUnknown.
	Create(ctx context.Context, spec CreateSpec) (*Pod, error)
	// Get returns the pod with id. ErrNotFound.
	Get(ctx context.Context, id string) (*Pod, error)
	// List returns every pod of the account, scopectl's or not.
	List(ctx context.Context) ([]Pod, error)
	// Start resumes a stopped pod. ErrNotFound, ErrNoCapacity.
	Start(ctx context.Context, id string) error
	// Stop stops a pod: GPU billing ends, the volume stays (and is billed). ErrNotFound.
	Stop(ctx context.Context, id string) error
	// Terminate deletes the pod and its volume: all billing ends. ErrNotFound.
	Terminate(ctx context.Context, id string) error
	// GPUTypes lists the GPU types with their current prices.
	GPUTypes(ctx context.Context) ([]GPUType, error)
	// Update compares the pod with spec and, unless dryRun, applies the differences
	// in one request. Nothing differs: no request. On a running pod an applied
	// update restarts the container (its IP and ports change: read them again).
	// The changes come back either way. ErrNotFound.
	Update(ctx context.Context, id string, spec UpdateSpec, dryRun bool) ([]Change, error)
}

// MaxRequestIDLen bounds request ids (they go into pod names, which RunPod caps at
// 191 characters).
const MaxRequestIDLen = 64

// CheckRequestID reports whether id can tag a pod: 1..64 characters of ASCII
// letters, digits, '-' and '_'.
func CheckRequestID(id string) error {
	if id == "" {
		return fmt.Errorf("request id is empty")
	}
	if len(id) > MaxRequestIDLen {
		return fmt.Errorf("request id is %d characters long (at most %d)", len(id), MaxRequestIDLen)
	}
	for _, r := range id {
		if r > unicode.MaxASCII || !(r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r)) {
			return fmt.Errorf("request id %q: only letters, digits, '-' and '_' are allowed", id)
		}
	}
	return nil
}

// secretWords mark environment variable names whose values are secrets even when
// scopectl did not set them (a user's template, RunPod's own RUNPOD_API_KEY).
var secretWords = []string{"TOKEN", "SECRET", "PASSWORD", "PASSWD", "API_KEY", "APIKEY",
	"ACCESS_KEY", "PRIVATE", "CREDENTIAL", "AUTH", "SESSION", "COOKIE"}

// IsSecretEnvName reports whether an environment variable of this name holds a
// secret by its name alone. Public keys and scopectl's own variables are not secrets.
func IsSecretEnvName(name string) bool {
	u := strings.ToUpper(name)
	if u == "PUBLIC_KEY" || strings.HasSuffix(u, "_PUBLIC_KEY") || name == EnvSecretNames || name == EnvRequestID {
		return false
	}
	for _, w := range secretWords {
		if strings.Contains(u, w) {
			return true
		}
	}
	return false
}

// MaskEnv returns a copy of env with every secret value replaced by SecretValue:
// names listed in env[EnvSecretNames], names in extra, names IsSecretEnvName
// recognises, and values that contain a secret r knows (r may be nil).
func MaskEnv(env map[string]string, extra []string, r *secret.Redactor) map[string]string {
	if env == nil {
		return nil
	}
	listed := map[string]bool{}
	for _, n := range strings.Split(env[EnvSecretNames], ",") {
		if n = strings.TrimSpace(n); n != "" {
			listed[n] = true
		}
	}
	for _, n := range extra {
		listed[n] = true
	}
	out := make(map[string]string, len(env))
	for k, v := range env {
		switch {
		case v == "":
			out[k] = v
		case listed[k]:
			out[k] = SecretValue
		case IsSecretEnvName(k):
			out[k] = SecretValue
		case r != nil && r.Redact(v) != v:
			out[k] = SecretValue
		default:
			out[k] = v
		}
	}
	return out
}
