package runpod

import (
	"context"
	"net/http"
	"time"

	"github.com/daydreamlive/scopectl/internal/provider"
)

// Inside a pod RunPod sets RUNPOD_POD_ID and a pod-scoped RUNPOD_API_KEY (the key the
// runpodctl in every pod uses for `runpodctl stop pod $RUNPOD_POD_ID`); with them a
// process on the pod may read and stop that pod. The guard uses a Client made with that
// key: it never holds the user's own key.
const EnvPodID = "RUNPOD_POD_ID"

// GetDated is Get, with the time the API's answer was dated (its Date header; zero if
// it had none): the clock against which the pod's StartedAt is to be read.
func (c *Client) GetDated(ctx context.Context, id string) (*provider.Pod, time.Time, error) {
	op := "get pod " + id
	if err := c.checkID(op, id); err != nil {
		return nil, time.Time{}, err
	}
	resp, _, err := c.do(ctx, http.MethodGet, c.podURL(id, ""), nil)
	if err != nil {
		return nil, time.Time{}, c.classify(op, err, "")
	}
	p, err := decodePod(resp.Body, c.red)
	if err != nil {
		return nil, time.Time{}, c.errorf("%s: %v", op, err)
	}
	return p, resp.Date, nil
}
