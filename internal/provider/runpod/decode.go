package runpod

// Decoding RunPod's pod JSON. The API's documentation and its behaviour disagree in
// places (costPerHr is a string in the docs' example and a number on the wire;
// portMappings and publicIp are null until the container is up; the GPU type is only
// under machine with ?includeMachine=true; GraphQL sends env as a list of "K=V" and
// ports as one comma-separated string), so every field that has been seen in more
// than one shape is read leniently, and nothing in a pod can make decoding panic
// (FuzzDecodePod).

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/secret"
)

// flexNum is a JSON number, a string holding one, or null.
type flexNum struct {
	V   float64
	Set bool
}

func (f *flexNum) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		return nil
	}
	s := string(b)
	if len(b) > 0 && b[0] == '"' {
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		s = strings.TrimSpace(s)
		if s == "" {
			return nil
		}
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return fmt.Errorf("not a number: %.40q", s)
	}
	f.V, f.Set = v, true
	return nil
}

// int returns the value as an int in [0, limit], or an error.
func (f flexNum) int(name string, limit int) (int, error) {
	if !f.Set {
		return 0, nil
	}
	if f.V < 0 || f.V > float64(limit) || f.V != math.Trunc(f.V) {
		return 0, fmt.Errorf("%s %v out of range", name, f.V)
	}
	return int(f.V), nil
}

// flexString is a JSON string, number or bool (as text), or null.
type flexString string

func (f *flexString) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case string(b) == "null":
		return nil
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*f = flexString(s)
		return nil
	case string(b) == "true" || string(b) == "false":
		*f = flexString(b)
		return nil
	default:
		var n json.Number
		if err := json.Unmarshal(b, &n); err != nil {
			return fmt.Errorf("expected a string")
		}
		*f = flexString(n.String())
		return nil
	}
}

// flexEnv is {"K": "V", …} (REST), ["K=V", …] (GraphQL) or [{"key": K, "value": V}, …].
type flexEnv map[string]string

func (f *flexEnv) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		return nil
	}
	out := map[string]string{}
	if len(b) > 0 && b[0] == '{' {
		var m map[string]flexString
		if err := json.Unmarshal(b, &m); err != nil {
			return err
		}
		for k, v := range m {
			out[k] = string(v)
		}
		*f = out
		return nil
	}
	var list []json.RawMessage
	if err := json.Unmarshal(b, &list); err != nil {
		return fmt.Errorf("env: expected an object or a list")
	}
	for _, e := range list {
		var s string
		if json.Unmarshal(e, &s) == nil {
			k, v, _ := strings.Cut(s, "=")
			out[k] = v
			continue
		}
		var kv struct {
			Key   string     `json:"key"`
			Value flexString `json:"value"`
		}
		if err := json.Unmarshal(e, &kv); err != nil {
			return fmt.Errorf("env: bad entry")
		}
		out[kv.Key] = string(kv.Value)
	}
	*f = out
	return nil
}

// flexPorts is ["22/tcp", …] (REST) or "22/tcp,8888/http" (GraphQL).
type flexPorts []string

func (f *flexPorts) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		return nil
	}
	var s string
	if json.Unmarshal(b, &s) == nil {
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				*f = append(*f, p)
			}
		}
		return nil
	}
	var list []string
	if err := json.Unmarshal(b, &list); err != nil {
		return fmt.Errorf("ports: expected a list of strings")
	}
	*f = list
	return nil
}

type wireGPU struct {
	ID          flexString `json:"id"`
	DisplayName flexString `json:"displayName"`
	Count       flexNum    `json:"count"`
}

type wirePod struct {
	ID                flexString  `json:"id"`
	Name              flexString  `json:"name"`
	DesiredStatus     flexString  `json:"desiredStatus"`
	ImageName         flexString  `json:"imageName"`
	Image             flexString  `json:"image"`
	GPUCount          flexNum     `json:"gpuCount"`
	GPUTypeID         flexString  `json:"gpuTypeId"`
	GPU               *wireGPU    `json:"gpu"`
	CostPerHr         flexNum     `json:"costPerHr"`
	AdjustedCostPerHr flexNum     `json:"adjustedCostPerHr"`
	PublicIP          flexString  `json:"publicIp"`
	Ports             flexPorts   `json:"ports"`
	PortMappings      portMapping `json:"portMappings"`
	VolumeInGb        flexNum     `json:"volumeInGb"`
	NetworkVolumeID   flexString  `json:"networkVolumeId"`
	NetworkVolume     *struct {
		ID flexString `json:"id"`
	} `json:"networkVolume"`
	Env           flexEnv    `json:"env"`
	CreatedAt     flexString `json:"createdAt"`
	LastStartedAt flexString `json:"lastStartedAt"`
	Runtime       *struct {
		UptimeInSeconds flexNum `json:"uptimeInSeconds"`
	} `json:"runtime"`
	Machine *struct {
		GPUTypeID      flexString `json:"gpuTypeId"`
		GPUDisplayName flexString `json:"gpuDisplayName"`
		GPUType        *wireGPU   `json:"gpuType"`
	} `json:"machine"`
}

// portMapping is {"22": 35558} with numbers or numeric strings; null is empty.
type portMapping map[string]flexNum

func (p *portMapping) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		return nil
	}
	m := map[string]flexNum{}
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("portMappings: %v", err)
	}
	*p = m
	return nil
}

// timeLayouts are the createdAt spellings seen: Go's time.String form (REST v1,
// recorded live), RFC 3339 (v2 and the docs), and bare dates-with-times.
var timeLayouts = []string{
	"2006-01-02 15:04:05.999999999 -0700 MST",
	"2006-01-02 15:04:05.999999999 -0700",
	time.RFC3339Nano,
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05.999999999",
}

func parseTime(s string) time.Time {
	s = strings.TrimSpace(s)
	if i := strings.Index(s, " m=+"); i >= 0 { // a monotonic clock reading from time.String
		s = s[:i]
	}
	for _, l := range timeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t.UTC()
		}
	}
	return time.Time{}
}

// decodePod decodes one pod. r (may be nil) masks env values holding secrets it knows.
func decodePod(data []byte, r *secret.Redactor) (*provider.Pod, error) {
	var w wirePod
	if err := json.Unmarshal(data, &w); err != nil {
		return nil, fmt.Errorf("decode pod: %v", shortJSONError(err))
	}
	return w.toPod(r)
}

// decodePods decodes GET /pods: a bare array (v1), or {"pods": [...]} to be safe.
func decodePods(data []byte, r *secret.Redactor) ([]provider.Pod, error) {
	var raw []json.RawMessage
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) > 0 && trimmed[0] == '{' {
		var env struct {
			Pods []json.RawMessage `json:"pods"`
		}
		if err := json.Unmarshal(trimmed, &env); err != nil {
			return nil, fmt.Errorf("decode pod list: %v", shortJSONError(err))
		}
		raw = env.Pods
	} else if err := json.Unmarshal(trimmed, &raw); err != nil {
		return nil, fmt.Errorf("decode pod list: %v", shortJSONError(err))
	}
	out := make([]provider.Pod, 0, len(raw))
	for i, e := range raw {
		p, err := decodePod(e, r)
		if err != nil {
			return nil, fmt.Errorf("pod %d of %d: %v", i+1, len(raw), err)
		}
		out = append(out, *p)
	}
	return out, nil
}

// shortJSONError keeps JSON errors to a line without quoting the input back.
func shortJSONError(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case asErr(err, &se):
		return fmt.Sprintf("invalid JSON at byte %d", se.Offset)
	case asErr(err, &te):
		return fmt.Sprintf("field %s: unexpected %s", te.Field, te.Value)
	}
	return oneLine(err.Error())
}

func asErr[T error](err error, target *T) bool {
	for err != nil {
		if t, ok := err.(T); ok {
			*target = t
			return true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}

func (w *wirePod) toPod(r *secret.Redactor) (*provider.Pod, error) {
	p := &provider.Pod{
		ID:     string(w.ID),
		Name:   string(w.Name),
		Status: strings.ToUpper(strings.TrimSpace(string(w.DesiredStatus))),
		Image:  firstNonEmpty(string(w.ImageName), string(w.Image)),
	}
	if p.ID == "" {
		return nil, fmt.Errorf("pod without an id")
	}
	var err error
	if p.GPUCount, err = w.GPUCount.int("gpuCount", 1024); err != nil {
		return nil, err
	}
	if w.GPU != nil {
		if p.GPUCount == 0 {
			if p.GPUCount, err = w.GPU.Count.int("gpu.count", 1024); err != nil {
				return nil, err
			}
		}
		p.GPUType = string(w.GPU.ID)
	}
	if p.GPUType == "" {
		p.GPUType = string(w.GPUTypeID)
	}
	if p.GPUType == "" && w.Machine != nil {
		p.GPUType = string(w.Machine.GPUTypeID)
		if p.GPUType == "" && w.Machine.GPUType != nil {
			p.GPUType = string(w.Machine.GPUType.ID)
		}
	}
	cost := w.CostPerHr
	if !cost.Set {
		cost = w.AdjustedCostPerHr
	}
	if cost.V < 0 {
		return nil, fmt.Errorf("costPerHr %v is negative", cost.V)
	}
	p.CostPerHr = cost.V
	if p.VolumeGB, err = w.VolumeInGb.int("volumeInGb", 1<<30); err != nil {
		return nil, err
	}
	p.NetworkVolumeID = string(w.NetworkVolumeID)
	if p.NetworkVolumeID == "" && w.NetworkVolume != nil {
		p.NetworkVolumeID = string(w.NetworkVolume.ID)
	}
	p.PublicIP = strings.TrimSpace(string(w.PublicIP))
	p.Ports = portsOf(w.Ports, w.PortMappings)
	p.CreatedAt = parseTime(string(w.CreatedAt))
	p.StartedAt = parseTime(string(w.LastStartedAt))
	if up, err := w.runtimeUptime(); err != nil {
		return nil, err
	} else if p.StartedAt.IsZero() && up > 0 {
		// GraphQL gives the running container's uptime instead.
		p.StartedAt = time.Now().UTC().Add(-up).Truncate(time.Second)
	}
	if w.Env != nil {
		if tag := w.Env[provider.EnvRequestID]; provider.CheckRequestID(tag) == nil {
			p.Tag = tag
		}
		p.Env = provider.MaskEnv(w.Env, nil, r)
	}
	return p, nil
}

// portsOf maps "22/tcp" → public port from the declared ports and the mappings
// (keyed by private port). A mapped port the declaration lacks is taken as tcp.
// Entries outside 1..65535 are dropped.
func portsOf(declared []string, mapped portMapping) map[string]int {
	if len(mapped) == 0 {
		return nil
	}
	proto := map[string]string{}
	for _, d := range declared {
		port, pr, ok := strings.Cut(strings.TrimSpace(d), "/")
		if !ok {
			continue
		}
		pr = strings.ToLower(pr)
		if old, seen := proto[port]; !seen || (old != "tcp" && pr == "tcp") {
			proto[port] = pr
		}
	}
	out := map[string]int{}
	keys := make([]string, 0, len(mapped))
	for k := range mapped {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		priv, err := strconv.Atoi(strings.TrimSpace(k))
		if err != nil || priv < 1 || priv > 65535 {
			continue
		}
		pub, err := mapped[k].int("port", 65535)
		if err != nil || pub < 1 {
			continue
		}
		pr := proto[strconv.Itoa(priv)]
		if pr == "" {
			pr = "tcp"
		}
		out[strconv.Itoa(priv)+"/"+pr] = pub
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// runtimeUptime is GraphQL's runtime.uptimeInSeconds (0 when absent).
func (w *wirePod) runtimeUptime() (time.Duration, error) {
	if w.Runtime == nil {
		return 0, nil
	}
	n, err := w.Runtime.UptimeInSeconds.int("runtime.uptimeInSeconds", 100*365*24*3600)
	return time.Duration(n) * time.Second, err
}
