package runpodtest

import (
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

const key = "rpa_TESTKEY0000000000000000000000000"

func call(t *testing.T, method, url, auth, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestAuth(t *testing.T) {
	s := New(t, Options{APIKey: key})
	if st, _ := call(t, "GET", s.RESTURL()+"/pods", "", ""); st != 401 {
		t.Errorf("no key: %d", st)
	}
	if st, _ := call(t, "GET", s.RESTURL()+"/pods", "rpa_wrong", ""); st != 401 {
		t.Errorf("wrong key: %d", st)
	}
	if st, body := call(t, "GET", s.RESTURL()+"/pods", key, ""); st != 200 || strings.TrimSpace(body) != "[]" {
		t.Errorf("list: %d %s", st, body)
	}
	// GraphQL also takes ?api_key= (REST does not).
	if st, _ := call(t, "POST", s.GraphQLURL()+"?api_key="+key, "", `{"query":"{ gpuTypes { id } }"}`); st != 200 {
		t.Errorf("graphql api_key: %d", st)
	}
	if st, _ := call(t, "GET", s.RESTURL()+"/pods?api_key="+key, "", ""); st != 401 {
		t.Errorf("REST api_key: %d", st)
	}
}

func TestGraphQL(t *testing.T) {
	s := New(t, Options{APIKey: key})
	q := `query Q($id: String, $n: Int = 2) { gpuTypes(input: {id: $id}) { id __typename
	  s: lowestPrice(input: {gpuCount: $n, secureCloud: true}) { uninterruptablePrice stockStatus }
	  c: lowestPrice(input: {gpuCount: 1, secureCloud: false}) { uninterruptablePrice stockStatus } } }`
	body, _ := json.Marshal(map[string]any{"query": q, "variables": map[string]any{"id": "NVIDIA A40"}})
	st, out := call(t, "POST", s.GraphQLURL(), key, string(body))
	if st != 200 {
		t.Fatalf("%d %s", st, out)
	}
	var r struct {
		Data struct {
			GPUTypes []struct {
				ID       string `json:"id"`
				Typename string `json:"__typename"`
				S, C     struct {
					Price *float64 `json:"uninterruptablePrice"`
					Stock *string  `json:"stockStatus"`
				}
			} `json:"gpuTypes"`
		}
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil || len(r.Data.GPUTypes) != 1 {
		t.Fatalf("%v %s", err, out)
	}
	g := r.Data.GPUTypes[0]
	if g.ID != "NVIDIA A40" || g.Typename != "GpuType" || g.S.Price == nil || *g.S.Price != 0.8 || *g.S.Stock != "High" || g.C.Price != nil || g.C.Stock != nil {
		t.Errorf("%s", out)
	}

	for _, bad := range []string{
		`{ gpuTypes { id nosuchField } }`,
		`{ gpuTypes }`,
		`{ gpuTypes { id lowestPrice } }`,
		`{ nosuchRoot { id } }`,
		`{ gpuTypes { id `,
		`mutation { podTerminate(input: {podId: "x"}) }`,
	} {
		body, _ := json.Marshal(map[string]string{"query": bad})
		st, out := call(t, "POST", s.GraphQLURL(), key, string(body))
		if !strings.Contains(out, `"errors"`) {
			t.Errorf("%s: %d %s", bad, st, out)
		}
	}
}

func TestCreateValidation(t *testing.T) {
	s := New(t, Options{APIKey: key, BootDelay: 10 * time.Millisecond})
	for _, body := range []string{
		`{"imageName":"x"}`,
		`{"gpuTypeIds":["NVIDIA A40"]}`,
		`{"imageName":"x","gpuTypeIds":["NVIDIA Nope"]}`,
		`{"imageName":"x","gpuTypeIds":["NVIDIA A40"],"cloudType":"MOON"}`,
		`{"imageName":"x","gpuTypeIds":["NVIDIA A40"],"ports":["22"]}`,
		`{"imageName":"x","gpuTypeIds":["NVIDIA A40"],"imagename":"typo"}`,
		`{"imageName":"x","gpuTypeIds":["NVIDIA A40"],"env":{"A":1}}`,
	} {
		if st, out := call(t, "POST", s.RESTURL()+"/pods", key, body); st != 400 || !strings.Contains(out, `"error"`) {
			t.Errorf("%s: %d %s", body, st, out)
		}
	}
	st, out := call(t, "POST", s.RESTURL()+"/pods", key, `{"imageName":"x","gpuTypeIds":["NVIDIA A6000","NVIDIA A40"],"ports":["22/tcp"]}`)
	if st != 400 {
		t.Errorf("unknown first type: %d %s", st, out)
	}
	st, out = call(t, "POST", s.RESTURL()+"/pods", key, `{"imageName":"x","gpuTypeIds":["NVIDIA RTX A6000"]}`)
	if st != 400 || !strings.Contains(out, "no longer any instances") {
		t.Errorf("no stock: %d %s", st, out)
	}
	st, out = call(t, "POST", s.RESTURL()+"/pods", key, `{"imageName":"x","gpuTypeIds":["NVIDIA RTX A6000","NVIDIA A40"],"ports":["22/tcp"],"volumeInGb":0}`)
	if st != 201 {
		t.Fatalf("create: %d %s", st, out)
	}
	var p map[string]any
	json.Unmarshal([]byte(out), &p)
	if p["desiredStatus"] != "CREATED" || p["publicIp"] != nil || p["portMappings"] != nil || p["costPerHr"] != 0.4 || p["volumeInGb"] != 0.0 {
		t.Errorf("new pod: %s", out)
	}
	time.Sleep(20 * time.Millisecond)
	_, out = call(t, "GET", s.RESTURL()+"/pods/"+p["id"].(string)+"?includeMachine=true", key, "")
	json.Unmarshal([]byte(out), &p)
	if p["desiredStatus"] != "RUNNING" || p["publicIp"] == nil || p["portMappings"].(map[string]any)["22"] == nil ||
		p["machine"].(map[string]any)["gpuTypeId"] != "NVIDIA A40" {
		t.Errorf("booted pod: %s", out)
	}
	if st, _ := call(t, "DELETE", s.RESTURL()+"/pods/"+p["id"].(string), key, ""); st != 204 {
		t.Errorf("delete: %d", st)
	}
	if st, _ := call(t, "GET", s.RESTURL()+"/pods/"+p["id"].(string), key, ""); st != 404 {
		t.Errorf("get deleted: %d", st)
	}
}

// The pod query answers in RunPod's shape: data.pod.machine.podHostId "{podId}-{suffix}",
// runtime.uptimeInSeconds from the last start; an unknown pod is data.pod null with an
// error at path ["pod"].
func TestGraphQLPod(t *testing.T) {
	s := New(t, Options{APIKey: key, BootDelay: time.Millisecond})
	body := `{"name":"p","imageName":"img","gpuTypeIds":["NVIDIA A40"],"gpuCount":1,"cloudType":"SECURE","computeType":"GPU","volumeInGb":10,"env":{}}`
	st, out := call(t, "POST", s.RESTURL()+"/pods", key, body)
	if st != 201 {
		t.Fatalf("%d %s", st, out)
	}
	var created struct{ ID string }
	json.Unmarshal([]byte(out), &created)
	time.Sleep(5 * time.Millisecond)
	s.SetTimes(created.ID, time.Now().Add(-10*time.Hour), time.Now().Add(-90*time.Second))
	q := `query Pod($input: PodFilter!) { pod(input: $input) { id desiredStatus machine { podHostId } runtime { uptimeInSeconds } } }`
	ask := func(id string) (int, string) {
		b, _ := json.Marshal(map[string]any{"query": q, "variables": map[string]any{"input": map[string]any{"podId": id}}})
		return call(t, "POST", s.GraphQLURL(), key, string(b))
	}
	st, out = ask(created.ID)
	var r struct {
		Data struct {
			Pod struct {
				ID, DesiredStatus string
				Machine           struct{ PodHostID string }
				Runtime           struct{ UptimeInSeconds int }
			}
		}
		Errors []any
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil || st != 200 || len(r.Errors) > 0 {
		t.Fatalf("%d %v %s", st, err, out)
	}
	p := r.Data.Pod
	if p.ID != created.ID || p.DesiredStatus != "RUNNING" || p.Machine.PodHostID != s.PodHostID(created.ID) ||
		!regexp.MustCompile(`^`+created.ID+`-[0-9a-f]{8}$`).MatchString(p.Machine.PodHostID) || p.Runtime.UptimeInSeconds < 89 || p.Runtime.UptimeInSeconds > 95 {
		t.Fatalf("%s", out)
	}
	st, out = ask("nosuchpod")
	if st != 200 || !strings.Contains(out, `"data":{"pod":null}`) || !strings.Contains(out, `"path":["pod"]`) {
		t.Fatalf("unknown pod: %d %s", st, out)
	}
}
