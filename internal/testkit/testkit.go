// Package testkit is what scopectl's test packages share to run real programs: Go binaries
// built once per test process with the user's real Go environment, and the rule for tools
// a test needs (sshd, docker-registry, Docker, root) — skip with the reason on a developer's
// machine, fail under CI=true, where .ci/run provides them.
//
// It is imported by tests only, never by the product.
//
// Why the environment is captured at init: tests move HOME and the XDG dirs into
// t.TempDir() (so nothing touches the user's files), and a `go build` run after that gets
// an empty build cache, an empty module cache and none of the user's `go env` settings. It
// then compiles the world, downloads modules (failing offline), and leaves read-only module
// files in the test's temp dir that a non-root user cannot remove. Builds here always run
// with the environment the test process started with.
package testkit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// startEnv is the environment before any test changed it.
var startEnv = os.Environ()

// moduleRoot is the folder of go.mod, found from this file's path.
var moduleRoot = func() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}()

// ModuleRoot returns the folder of scopectl's go.mod.
func ModuleRoot() string { return moduleRoot }

// CI reports whether the tests run under CI (CI=true), where every tool the tests need is
// installed by .ci/run and a missing one is a failure, not a skip.
func CI() bool { return os.Getenv("CI") == "true" || os.Getenv("CI") == "1" }

// Need skips t (outside CI) or fails it (under CI) with why, when ok is false.
func Need(t testing.TB, ok bool, why string) {
	t.Helper()
	if ok {
		return
	}
	if CI() {
		t.Fatalf("%s; .ci/run provides it, so under CI=true this is a failure", why)
	}
	t.Skip("skipping: " + why)
}

// NeedFile needs an executable file at path (e.g. /usr/sbin/sshd), installed by pkg.
func NeedFile(t testing.TB, path, pkg string) {
	t.Helper()
	_, err := os.Stat(path)
	Need(t, err == nil, fmt.Sprintf("no %s (apt-get install %s)", path, pkg))
}

// NeedCommand needs name on PATH, installed by pkg.
func NeedCommand(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	Need(t, err == nil, fmt.Sprintf("no %s on PATH (apt-get install %s)", name, pkg))
	return p
}

// NeedRoot needs uid 0; why says what needs it.
func NeedRoot(t testing.TB, why string) {
	t.Helper()
	Need(t, os.Geteuid() == 0, why+" needs root")
}

// Build is one Go program to build.
type Build struct {
	Pkg    string   // package path relative to the module root ("./cmd/scopectl") or an import path
	Static bool     // CGO_ENABLED=0, for FROM-scratch images and pods
	Tags   []string // build tags
}

func (b Build) key() string {
	h := sha256.Sum256([]byte(fmt.Sprintf("%s|%v|%s", b.Pkg, b.Static, strings.Join(b.Tags, ","))))
	return hex.EncodeToString(h[:6])
}

var (
	mu     sync.Mutex
	dir    string
	builds = map[string]*buildResult{}
)

type buildResult struct {
	once sync.Once
	path string
	err  error
}

// binDir is this process's folder for built programs: scopectl-testbin-PID under the
// system temp dir (taken from the starting environment, not a test's). Folders left by
// earlier processes that are gone (a test binary killed by go test's timeout) are removed.
func binDir() (string, error) {
	mu.Lock()
	defer mu.Unlock()
	if dir != "" {
		return dir, nil
	}
	tmp := envFrom(startEnv, "TMPDIR")
	if tmp == "" {
		tmp = "/tmp"
	}
	if olds, _ := filepath.Glob(filepath.Join(tmp, "scopectl-testbin-*")); len(olds) > 0 {
		for _, old := range olds {
			pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(old), "scopectl-testbin-"))
			if err != nil || pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
				continue
			}
			os.RemoveAll(old)
		}
	}
	d := filepath.Join(tmp, "scopectl-testbin-"+strconv.Itoa(os.Getpid()))
	if err := os.MkdirAll(d, 0o755); err != nil {
		return "", err
	}
	dir = d
	return d, nil
}

// GoBuild builds b once per test process and returns the binary's path; a failed build
// fails t. It is safe to call from parallel tests and after a test moved HOME.
func GoBuild(t testing.TB, b Build) string {
	t.Helper()
	p, err := goBuild(b)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func goBuild(b Build) (string, error) {
	d, err := binDir()
	if err != nil {
		return "", err
	}
	mu.Lock()
	r := builds[b.key()]
	if r == nil {
		r = &buildResult{}
		builds[b.key()] = r
	}
	mu.Unlock()
	r.once.Do(func() {
		out := filepath.Join(d, filepath.Base(strings.TrimSuffix(b.Pkg, "/"))+"-"+b.key())
		args := []string{"build", "-o", out}
		if len(b.Tags) > 0 {
			args = append(args, "-tags", strings.Join(b.Tags, ","))
		}
		args = append(args, b.Pkg)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, goTool(), args...)
		cmd.Dir = moduleRoot
		cmd.Env = startEnv
		if b.Static {
			cmd.Env = append(append([]string(nil), startEnv...), "CGO_ENABLED=0")
		}
		if msg, err := cmd.CombinedOutput(); err != nil {
			r.err = fmt.Errorf("go build %s: %v\n%s", b.Pkg, err, msg)
			return
		}
		r.path = out
	})
	return r.path, r.err
}

// goTool is the go command that runs these tests (GOROOT of this test binary), else PATH's.
func goTool() string {
	if p := filepath.Join(runtime.GOROOT(), "bin", "go"); fileExists(p) {
		return p
	}
	return "go"
}

// GoEnv returns the starting environment, for a test that runs the go tool itself.
func GoEnv() []string { return append([]string(nil), startEnv...) }

// Scopectl builds the scopectl binary (static, as it is copied onto pods).
func Scopectl(t testing.TB) string {
	t.Helper()
	return GoBuild(t, Build{Pkg: "./cmd/scopectl", Static: true})
}

// Main runs a test package's tests and removes what GoBuild built. Use it from TestMain:
//
//	func TestMain(m *testing.M) { testkit.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	Cleanup()
	os.Exit(code)
}

// Cleanup removes this process's built programs.
func Cleanup() {
	mu.Lock()
	defer mu.Unlock()
	if dir != "" {
		os.RemoveAll(dir)
		dir = ""
		builds = map[string]*buildResult{}
	}
}

// KillWithParent makes cmd's process die with the test process (Linux: PR_SET_PDEATHSIG), so
// a server a test started never outlives a test binary that go test killed at its timeout.
// Call it before cmd.Start.
func KillWithParent(cmd *exec.Cmd) {
	setPdeathsig(cmd)
}

func envFrom(env []string, key string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], key+"="); ok {
			return v
		}
	}
	return ""
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// SSHDHome is an sshd_config line that sets HOME for the sessions of a test sshd to dir.
// sshd runs every command through the user's login shell, and Debian's bash sources
// ~/.bashrc for commands run by sshd: a developer's rc file (pyenv or conda init) then
// costs about a second per SSH session, which turned minutes of the SSH tests into
// waiting. Tests serve absolute paths, so the home they see does not matter.
//
// sshd takes the first SetEnv line only, so extra (more sshd_config lines) has HOME
// added to its SetEnv line when it has one; the result replaces extra.
func SSHDHome(dir, extra string) string {
	lines := strings.Split(extra, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "SetEnv ") {
			lines[i] = l + " HOME=" + dir
			return strings.Join(lines, "\n")
		}
	}
	return "SetEnv HOME=" + dir + "\n" + extra
}

// SyncBuffer is a buffer safe for a process's (or goroutines') writes and a test's reads.
type SyncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// RunCode runs bin with args in env (nil: this process's) and returns its stdout,
// stderr and exit code; a command that could not run at all fails t.
func RunCode(t testing.TB, bin string, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}
