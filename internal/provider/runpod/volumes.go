package runpod

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// NetworkVolume is a RunPod network volume (REST GET /networkvolumes): storage billed
// by its size for as long as it exists, whether or not a pod mounts it.
type NetworkVolume struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	SizeGB     int    `json:"size_gb"`
	DataCenter string `json:"data_center,omitempty"`
}

// NetworkVolumes lists the account's network volumes.
func (c *Client) NetworkVolumes(ctx context.Context) ([]NetworkVolume, error) {
	resp, _, err := c.do(ctx, http.MethodGet, c.apiURL+"/networkvolumes", nil)
	if err != nil {
		return nil, c.classify("list network volumes", err, "")
	}
	vols, err := decodeVolumes(resp.Body)
	if err != nil {
		return nil, c.errorf("list network volumes: %v", err)
	}
	return vols, nil
}

// decodeVolumes reads GET /networkvolumes: a list of {id, name, size, dataCenterId},
// size in GB (a number or a string holding one). A volume without an id, or with a size
// that is not a whole number of GB in [0, 1e6], is an error, not a guess.
func decodeVolumes(b []byte) ([]NetworkVolume, error) {
	var raw []struct {
		ID           flexString `json:"id"`
		Name         flexString `json:"name"`
		Size         flexNum    `json:"size"`
		DataCenterID flexString `json:"dataCenterId"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("want a list of network volumes: %v", err)
	}
	out := make([]NetworkVolume, 0, len(raw))
	for i, r := range raw {
		id := strings.TrimSpace(string(r.ID))
		if id == "" {
			return nil, fmt.Errorf("network volume %d has no id", i)
		}
		size, err := r.Size.int("size", 1_000_000)
		if err != nil {
			return nil, fmt.Errorf("network volume %s: %v", id, err)
		}
		out = append(out, NetworkVolume{ID: id, Name: string(r.Name), SizeGB: size, DataCenter: string(r.DataCenterID)})
	}
	return out, nil
}
