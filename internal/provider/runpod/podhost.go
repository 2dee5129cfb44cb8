package runpod

import (
	"context"
	"fmt"
	"strings"

	"github.com/daydreamlive/scopectl/internal/provider"
)

// REST has no podHostId, the login of RunPod's SSH gateway ({podHostId}@ssh.runpod.io):
// it comes from GraphQL's pod(input: {podId}) { machine { podHostId } }.
const podHostQuery = `query Pod($input: PodFilter!) {
  pod(input: $input) { id machine { podHostId } }
}`

// PodHostID returns the pod's machine.podHostId, "{podId}-{suffix}": the login of
// RunPod's PTY-only SSH gateway. The suffix names the pod's host, so it cannot be derived
// from the pod id, and a pod that has not been placed on a host yet has none.
// ErrNotFound for a pod RunPod does not know.
func (c *Client) PodHostID(ctx context.Context, id string) (string, error) {
	op := "podHostId of pod " + id
	if err := c.checkID(op, id); err != nil {
		return "", err
	}
	var data struct {
		Pod *struct {
			ID      string `json:"id"`
			Machine *struct {
				PodHostID flexString `json:"podHostId"`
			} `json:"machine"`
		} `json:"pod"`
	}
	if err := c.graphql(ctx, op, podHostQuery, map[string]any{"input": map[string]any{"podId": id}}, &data); err != nil {
		return "", err
	}
	if data.Pod == nil {
		return "", c.errorf("%s: %w", op, provider.ErrNotFound)
	}
	if data.Pod.Machine == nil || strings.TrimSpace(string(data.Pod.Machine.PodHostID)) == "" {
		return "", c.errorf("%s: RunPod has not placed the pod on a host yet (no machine.podHostId)", op)
	}
	h := strings.TrimSpace(string(data.Pod.Machine.PodHostID))
	if !strings.HasPrefix(h, id+"-") {
		return "", c.errorf("%s: %s", op, fmt.Sprintf("RunPod gave %.80q, not {podId}-{suffix}", h))
	}
	return h, nil
}
