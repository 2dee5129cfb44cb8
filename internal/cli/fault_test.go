package cli_test

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/hub/hf/hftest"
	"github.com/daydreamlive/scopectl/internal/lora"
	"github.com/daydreamlive/scopectl/internal/lora/loratest"
	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/scope"
)

// TestKill9DuringSync kills `scopectl sync` with SIGKILL at random moments, a bounded
// number of times, and checks after each kill that the target holds only complete,
// correct files, and that running the command again finishes the job, resuming.
func TestKill9DuringSync(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	e := newEnv(t)
	bin := buildBinary(t)
	var want = map[string]bool{}
	for i, base := range []string{lora.BaseT2V14B, lora.BaseT2V14B, lora.BaseT2V14B} {
		name := []string{"one", "two", "three"}[i]
		// 40 blocks × q,k,v,o at rank 32: ~42 MB each, big enough to be caught mid-write.
		p := e.lora(name+".safetensors", loratest.Spec{Base: base, Rank: 32, Seed: uint64(i + 1),
			Family: []lora.Family{lora.Comfy, lora.Kohya, lora.Diffusers}[i], Alpha: []float64{0, 16, 8}[i],
			Blocks: seq(40), Modules: []string{"self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o"}})
		e.mustRun("lora", "add", p)
		want[name+".safetensors"] = true
	}
	target := filepath.Join(e.root, "target")
	rng := rand.New(rand.NewPCG(42, 1))
	env := os.Environ()
	check := func(round int) {
		m, err := scope.LoadManifest(target)
		if err != nil {
			t.Fatalf("round %d: manifest unreadable after kill: %v", round, err)
		}
		ents, _ := os.ReadDir(target)
		for _, de := range ents {
			n := de.Name()
			if !strings.HasSuffix(n, ".safetensors") {
				continue
			}
			if !want[n] {
				t.Fatalf("round %d: unexpected file %s visible to Scope", round, n)
			}
			rep, err := lora.Inspect(filepath.Join(target, n), lora.InspectOptions{Hash: true})
			if err != nil || !rep.ScopeReady {
				t.Fatalf("round %d: %s is not a complete LoRA: %v", round, n, err)
			}
			if en, ok := m.Get(n); ok && en.SHA256 != rep.SHA256 {
				t.Fatalf("round %d: manifest sha256 of %s does not match the file", round, n)
			}
		}
	}
	kills, partial := 0, 0
	for round := 0; round < 8; round++ {
		cmd := exec.Command(bin, "sync", "--all", "--to", target)
		cmd.Env = env
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill at a random moment once an upload is under way (a temporary file shows),
		// so that a slow start on a loaded machine does not make every kill land early.
		waitFor(5*time.Second, func() bool { return hasTemp(target) })
		time.Sleep(time.Duration(rng.IntN(150)) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err == nil {
			kills++
		}
		cmd.Wait()
		check(round)
		ents, _ := os.ReadDir(target)
		complete := 0
		for _, de := range ents {
			if strings.HasPrefix(de.Name(), remote.TempPrefix) {
				partial++
			}
			if want[de.Name()] {
				complete++
			}
		}
		if complete == len(want) { // it finished before the kill: start over, so every round is a real test
			os.RemoveAll(target)
		}
	}
	if partial == 0 {
		t.Fatal("no kill landed during an upload; the test proved nothing (raise the file size)")
	}
	// Finish: one uninterrupted run completes everything.
	out := e.mustRunBin(bin, "sync", "--all", "--to", target, "--json")
	var res struct {
		Actions []struct {
			Op      string `json:"op"`
			Resumed int64  `json:"resumed"`
		} `json:"actions"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	check(99)
	for n := range want {
		if _, err := os.Stat(filepath.Join(target, n)); err != nil {
			t.Fatalf("%s missing after the final run", n)
		}
	}
	again := e.mustRunBin(bin, "sync", "--all", "--to", target, "--json")
	if !strings.Contains(again, `"sent_bytes": 0`) {
		t.Fatalf("a sync after completion sent data: %s", again)
	}
	t.Logf("%d kills, %d partial uploads left behind and resumed; final run actions %+v", kills, partial, res.Actions)
}

func (e *env) mustRunBin(bin string, args ...string) string {
	e.t.Helper()
	cmd := exec.Command(bin, args...)
	out, err := cmd.Output()
	if err != nil {
		e.t.Fatalf("%s %v: %v\n%s", bin, args, err, out)
	}
	return string(out)
}

func seq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

// TestKill9DuringHubPull kills `scopectl hub pull` with SIGKILL at random moments, a
// bounded number of times, over a slow CDN. After each kill the cache shows nothing
// partial to its readers (no snapshot link, no blob that is not the exact file), and the
// final run finishes by resuming: it fetches less than the whole file again.
func TestKill9DuringHubPull(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	e := newEnv(t)
	bin := buildBinary(t)
	data, err := hftest.LoRA(loratest.Spec{Base: lora.BaseT2V14B, Rank: 8, Seed: 9, Blocks: seq(20),
		Modules: []string{"self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o"}})
	if err != nil {
		t.Fatal(err)
	}
	const file = "lora_big.safetensors"
	size := int64(len(data))
	srv := hftest.Start(t, hftest.Options{})
	commit := srv.AddRepo(hftest.Repo{ID: "daydream/kill", Files: []hftest.File{{Path: file, Data: data, LFS: true}}})
	srv.SlowAt(file, -1, 16*time.Millisecond) // 32 KiB per 16 ms per connection: ~2 s in all
	cache := filepath.Join(e.root, "hf", "hub")
	repo := filepath.Join(cache, "models--daydream--kill")
	blob := filepath.Join(repo, "blobs", hftest.SHA256(data))
	snap := filepath.Join(repo, "snapshots", commit, file)
	t.Setenv("HF_ENDPOINT", srv.URL())
	t.Setenv("HF_HUB_CACHE", cache)
	args := []string{"hub", "pull", "hf://daydream/kill", "--connections", "4", "--chunk-size", "1M", "--json"}

	check := func(round int) {
		if b, err := os.ReadFile(blob); err == nil && !bytes.Equal(b, data) {
			t.Fatalf("round %d: the blob is visible but not the exact file", round)
		}
		if b, err := os.ReadFile(snap); err == nil && !bytes.Equal(b, data) {
			t.Fatalf("round %d: the snapshot shows a partial file", round)
		} else if err == nil && round < 99 {
			t.Logf("round %d: finished before the kill", round)
		}
	}
	rng := rand.New(rand.NewPCG(7, 7))
	kills, recorded := 0, 0
	// Five rounds, and more (at most 10 in all) while the last one finished before its
	// kill: the final run must have a partial download to resume.
	for round := 0; round < 10; round++ {
		if round >= 5 {
			if _, err := os.Stat(blob + ".incomplete"); err == nil {
				break
			}
		}
		cmd := exec.Command(bin, args...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// A random moment once a chunk more than the last round's is on record (polled,
		// bounded): on a loaded machine a fixed delay after the start could land every
		// kill before the first chunk, and the test would prove nothing.
		chunks := func() int {
			side, err := os.ReadFile(blob + ".incomplete.chunks")
			if err != nil {
				return 0
			}
			return strings.Count(string(side), "\n") - 1
		}
		done := chunks()
		waitFor(20*time.Second, func() bool { return chunks() > done })
		time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
		if cmd.Process.Signal(syscall.SIGKILL) == nil {
			kills++
		}
		cmd.Wait()
		check(round)
		if side, err := os.ReadFile(blob + ".incomplete.chunks"); err == nil {
			recorded = max(recorded, strings.Count(string(side), "\n")-1)
		}
		if _, err := os.Stat(snap); err == nil {
			os.RemoveAll(repo) // it finished: start over, so that every round is a real test
		}
	}
	if kills == 0 || recorded == 0 {
		t.Fatalf("no kill landed mid-download (%d kills, at most %d chunks recorded); the test proved nothing", kills, recorded)
	}
	before := srv.CDNBytes(file)
	out := e.mustRunBin(bin, args...)
	again := srv.CDNBytes(file) - before
	check(99)
	if b, err := os.ReadFile(snap); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("the final run did not leave the exact file: %v\n%s", err, out)
	}
	if _, err := os.Stat(blob + ".incomplete"); err == nil {
		t.Fatal(".incomplete left after the final run")
	}
	if again >= size {
		t.Fatalf("the final run fetched %d of %d bytes: it did not resume", again, size)
	}
	t.Logf("%d kills; final run fetched %d of %d bytes", kills, again, size)
}

// waitFor polls cond every 2 ms until it holds or d has passed.
func waitFor(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(2 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return false
}

// hasTemp reports whether dir holds one of scopectl's temporary files.
func hasTemp(dir string) bool {
	ents, _ := os.ReadDir(dir)
	for _, de := range ents {
		if strings.HasPrefix(de.Name(), remote.TempPrefix) {
			return true
		}
	}
	return false
}
