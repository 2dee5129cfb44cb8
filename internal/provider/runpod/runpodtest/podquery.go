package runpodtest

import (
	"crypto/rand"
	"encoding/hex"
	"math"
	"strconv"
	"time"
)

func hexID(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// PodHostID is the pod's machine.podHostId ("{podId}-{suffix}"), the login of RunPod's
// SSH gateway; "" for a pod the server does not have.
func (s *Server) PodHostID(id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.pods[id]; p != nil {
		return p.ID + "-" + p.HostSuffix
	}
	return ""
}

// SetTimes backdates a pod: its createdAt and lastStartedAt (what cost so far counts from).
func (s *Server) SetTimes(id string, created, lastStarted time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.pods[id]; p != nil {
		p.CreatedAt, p.LastStartedAt = created, lastStarted
		if p.BootAt.After(lastStarted) {
			p.BootAt = lastStarted
		}
	}
}

// gqlPod answers pod(input: {podId}). Called with s.mu held.
func (s *Server) gqlPod(args map[string]any) any {
	id := ""
	if in, ok := args["input"].(map[string]any); ok {
		id, _ = in["podId"].(string)
	}
	p := s.pods[id]
	if p == nil {
		return gqlError{Message: "Pod not found", Extensions: map[string]any{"code": "NOT_FOUND"}}
	}
	now := time.Now()
	st := p.status(now)
	g := s.gpus[p.GPUID]
	leaf := func(v any) func(map[string]any) any { return func(map[string]any) any { return v } }
	var runtime *gqlObject
	if st == "RUNNING" {
		var ports []*gqlObject
		for priv, pub := range p.PortMap {
			n, _ := strconv.Atoi(priv)
			ports = append(ports, &gqlObject{Type: "PodRuntimePorts", Fields: map[string]func(map[string]any) any{
				"ip": leaf(p.PublicIP), "isIpPublic": leaf(p.SupportPublicIP), "privatePort": leaf(n),
				"publicPort": leaf(pub), "type": leaf("tcp"),
			}})
		}
		runtime = &gqlObject{Type: "PodRuntime", Fields: map[string]func(map[string]any) any{
			"uptimeInSeconds": leaf(int(math.Max(0, now.Sub(p.LastStartedAt).Seconds()))),
			"ports":           func(map[string]any) any { return ports },
		}}
	}
	return &gqlObject{Type: "Pod", Fields: map[string]func(map[string]any) any{
		"id": leaf(p.ID), "name": leaf(p.Name), "desiredStatus": leaf(st), "imageName": leaf(p.Image),
		"costPerHr": leaf(p.Cost), "gpuCount": leaf(p.GPUCount), "machineId": leaf(p.MachineID),
		"lastStartedAt": leaf(p.LastStartedAt.UTC().Format(timeLayout)),
		"machine": leaf(&gqlObject{Type: "PodMachineInfo", Fields: map[string]func(map[string]any) any{
			"podHostId": leaf(p.ID + "-" + p.HostSuffix), "gpuDisplayName": leaf(g.DisplayName),
		}}),
		"runtime": func(map[string]any) any { return runtime },
	}}
}
