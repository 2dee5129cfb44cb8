// Package trainpod runs `scopectl train run --new` and `--pod` against the fake
// RunPod, whose pods' port 22 is a real sshd on this machine and whose container is
// the job's processes: a pod stopped or terminated kills them.
package trainpod

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/aitk/aitktest"
	"github.com/daydreamlive/scopectl/internal/library"
	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/provider/runpod/runpodtest"
	"github.com/daydreamlive/scopectl/internal/store"
	"github.com/daydreamlive/scopectl/internal/testkit"
	"github.com/daydreamlive/scopectl/internal/train"
	. "github.com/daydreamlive/scopectl/internal/train/traintest"
)

func TestMain(m *testing.M) { testkit.Main(m) }

const (
	rpKey = "rpa_" + "TRAINPODKEYTRAINPODKEYTRAINPODKEY0001"
	gpu   = "NVIDIA GeForce RTX 4090"
)

// killUnder ends this test's processes on the "pod": those whose command line names
// the job folders (the supervisor and the trainer it started; not the laptop side,
// whose flags name the workspace itself).
func killUnder(dirs ...string) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		for _, d := range dirs {
			if bytes.Contains(b, []byte(d)) {
				syscall.Kill(pid, syscall.SIGKILL)
				break
			}
		}
	}
}

func TestTrainNewAndPodTerminated(t *testing.T) {
	w := NewWorld(t, aitktest.Config{Name: "podlora", Steps: 30, SaveEvery: 10, Keep: 2})
	sshPort, _ := strconv.Atoi(w.Host[strings.LastIndexByte(w.Host, ':')+1:])
	rt := func(p runpodtest.PodView) (*runpodtest.Container, error) {
		port, stop, err := podPort(sshPort)
		if err != nil {
			return nil, err
		}
		return &runpodtest.Container{PublicIP: "127.0.0.1", TCP: map[int]int{22: port},
			Stop: func() { stop(); killUnder(filepath.Join(w.WS, ".scopectl") + "/") }}, nil
	}
	srv := runpodtest.New(t, runpodtest.Options{APIKey: rpKey, BootDelay: 50 * time.Millisecond, Runtime: rt})
	w.Env = append(w.Env, "RUNPOD_API_URL="+srv.RESTURL(), "RUNPOD_GRAPHQL_URL="+srv.GraphQLURL(),
		"SCOPECTL_RUNPOD_PROXY_URL="+srv.ProxyURL(), "RUNPOD_API_KEY="+rpKey)
	common := []string{"--aitk-dir", w.Checkout, "--workspace", w.WS, "--force", "--compress", "off",
		"--poll", "100ms", "--interval", "300ms", "--json", "--no-prepull"} // the base model is the trainer's here

	// --new: the pinned image on CUDA 13 hosts, stopped at the job's end.
	out := w.Scopectl(append([]string{"train", "run", w.Config, "--new", "--gpu", gpu, "--env", aitktest.EnvStepMS + "=50"}, common...)...)
	var res train.CollectResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Phase != train.PhaseDone {
		t.Fatalf("--new: %v\n%s", err, out)
	}
	pods := srv.Pods()
	if len(pods) != 1 {
		t.Fatalf("pods: %+v", pods)
	}
	p := pods[0]
	if p.Image != train.DefaultImage || p.Env[provider.EnvStopOnJobEnd] == "" || p.Status != provider.StatusExited {
		t.Fatalf("pod: image %s, env %v, status %s; want %s, %s set, EXITED", p.Image, p.Env, p.Status, train.DefaultImage, provider.EnvStopOnJobEnd)
	}
	created := false
	for _, r := range srv.Requests() {
		if r.Route == "POST /pods" {
			created = true
			if !strings.Contains(r.Body, `"allowedCudaVersions":["13.0"`) {
				t.Errorf("create without CUDA 13: %s", r.Body)
			}
		}
	}
	if !created {
		t.Fatal("no POST /pods")
	}
	CheckLibrary(t, w, res.JobID, 3)

	// --pod: the same pod started again; terminated mid-run.
	w.Scopectl("pod", "start", p.ID, "--json")
	// --keep: the job ends, its final LoRA is collected, and the pod stays up for the user.
	out = w.Scopectl(append([]string{"train", "run", w.Config, "--pod", p.ID, "--keep", "--env", aitktest.EnvStepMS + "=20"}, common...)...)
	var kept train.CollectResult
	if err := json.Unmarshal([]byte(out), &kept); err != nil || kept.Phase != train.PhaseDone {
		t.Fatalf("--keep: %v\n%s", err, out)
	}
	for _, q := range srv.Pods() {
		if q.ID == p.ID && q.Status != provider.StatusRunning {
			t.Fatalf("--keep: the pod is %s after the job's end, want %s", q.Status, provider.StatusRunning)
		}
	}
	CheckLibrary(t, w, kept.JobID, 3)

	cmd := exec.Command(w.Bin, append([]string{"train", "run", w.Config, "--pod", p.ID, "--env", aitktest.EnvStepMS + "=600"}, common...)...)
	cmd.Env = w.Env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var id string
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) && id == "" {
		time.Sleep(300 * time.Millisecond)
		var jobs []store.TrainJob
		json.Unmarshal([]byte(w.Scopectl("train", "ls", "--json")), &jobs)
		for _, j := range jobs {
			if j.ID != res.JobID && j.ID != kept.JobID && j.PodID == p.ID {
				id = j.ID
			}
		}
	}
	if id == "" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("no second job\n%s", stderr.String())
	}
	// once a checkpoint is in the library, terminate the pod
	for time.Now().Before(deadline) && collected(t, w, id) == 0 {
		time.Sleep(200 * time.Millisecond)
	}
	req, _ := http.NewRequest("DELETE", srv.RESTURL()+"/pods/"+p.ID, nil)
	req.Header.Set("Authorization", "Bearer "+rpKey)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode/100 != 2 {
		t.Fatalf("terminate: %v %v", err, resp)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatalf("train run ended well on a terminated pod\n%s", stderr.String())
		}
	case <-time.After(40 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("train run went on after the pod was terminated\n%s", stderr.String())
	}
	last := strings.TrimSpace(stderr.String())
	last = last[strings.LastIndexByte(last, '\n')+1:]
	if !strings.Contains(last, "pod "+p.ID+" was terminated mid-run") || !strings.Contains(last, "train resume "+id) {
		t.Errorf("last line: %s", last)
	}
	t.Logf("terminated: %s", last)
	CheckLibrary(t, w, id, 1)
}

// collected is how many of the job's checkpoints the library holds.
func collected(t *testing.T, w *World, id string) int {
	lib, err := library.Open(w.Data)
	if err != nil {
		return 0
	}
	defer lib.Close()
	cps, _ := lib.Store.(store.TrainStore).ListTrainCheckpoints(context.Background(), id)
	return len(cps)
}

// podPort is the pod's public SSH port: a TCP relay to the sshd that stop closes,
// with every connection through it, as a pod that stops or is terminated does.
func podPort(to int) (int, func(), error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, nil, err
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			d, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(to))
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, d)
			mu.Unlock()
			go func() { io.Copy(d, c); d.Close() }()
			go func() { io.Copy(c, d); c.Close() }()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port, func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}, nil
}
