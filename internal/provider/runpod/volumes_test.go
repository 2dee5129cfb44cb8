package runpod

import (
	"strings"
	"testing"
)

func TestDecodeVolumes(t *testing.T) {
	got, err := decodeVolumes([]byte(`[{"id":"agv6w2qcg7","name":"models","size":50,"dataCenterId":"EU-RO-1"},{"id":"x2","name":"big","size":"2000"}]`))
	if err != nil || len(got) != 2 || got[0] != (NetworkVolume{ID: "agv6w2qcg7", Name: "models", SizeGB: 50, DataCenter: "EU-RO-1"}) || got[1].SizeGB != 2000 {
		t.Fatalf("%+v %v", got, err)
	}
	for in, want := range map[string]string{
		`{"id":"a"}`:              "want a list",
		`[{"name":"n","size":1}]`: "no id",
		`[{"id":"a","size":-1}]`:  "out of range",
		`[{"id":"a","size":1.5}]`: "out of range",
		`[{"id":"a","size":"x"}]`: "not a number",
	} {
		if _, err := decodeVolumes([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", in, err, want)
		}
	}
}

// FuzzDecodeVolumes: nothing in the API's answer makes decoding panic, and what it
// accepts has an id and a size in range.
func FuzzDecodeVolumes(f *testing.F) {
	f.Add([]byte(`[{"id":"agv6w2qcg7","name":"models","size":50,"dataCenterId":"EU-RO-1"}]`))
	f.Add([]byte(`[{"id":1,"size":"7"},null]`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		vols, err := decodeVolumes(b)
		if err != nil {
			return
		}
		for _, v := range vols {
			if v.ID == "" || v.SizeGB < 0 || v.SizeGB > 1_000_000 {
				t.Fatalf("accepted %+v", v)
			}
		}
	})
}
