package runpodtest

import (
	"net/http"
	"slices"
)

// NetworkVolume is a network volume the server lists (GET /networkvolumes, RunPod's
// v1 schema: id, name, size in GB, dataCenterId).
type NetworkVolume struct {
	ID, Name, DataCenterID string
	SizeGB                 int
}

// SetNetworkVolumes replaces the account's network volumes (a resize, a deletion).
func (s *Server) SetNetworkVolumes(vols []NetworkVolume) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.volumes = slices.Clone(vols)
}

func (s *Server) listVolumes(w http.ResponseWriter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []map[string]any{}
	for _, v := range s.volumes {
		out = append(out, map[string]any{"id": v.ID, "name": v.Name, "size": v.SizeGB, "dataCenterId": v.DataCenterID})
	}
	writeJSON(w, http.StatusOK, out)
}
