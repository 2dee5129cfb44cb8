package atomicfile

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func TestCommitNoPartialVisible(t *testing.T) {
	dir := t.TempDir()
	f, err := Create(dir, "a.safetensors", 0o644)
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Base(f.Name())
	if !strings.HasPrefix(base, ".a.safetensors"+TempMarker) || strings.HasSuffix(base, ".safetensors") || strings.HasSuffix(base, ".json") {
		t.Fatalf("bad temp name %q", base)
	}
	if !IsTemp(base) {
		t.Fatalf("IsTemp(%q) = false", base)
	}
	if _, err := f.Write([]byte("hello ")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "a.safetensors")); !os.IsNotExist(err) {
		t.Fatalf("final name visible before Commit: %v", err)
	}
	f.Write([]byte("world"))
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "a.safetensors"))
	if err != nil || string(b) != "hello world" {
		t.Fatalf("got %q, %v", b, err)
	}
	if got := names(t, dir); len(got) != 1 {
		t.Fatalf("leftovers: %v", got)
	}
	if err := f.Abort(); err != nil {
		t.Fatalf("Abort after Commit: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "a.safetensors")); err != nil {
		t.Fatal("Abort after Commit removed the file")
	}
	if err := f.Commit(); err == nil {
		t.Fatal("second Commit should fail")
	}
}

func TestReplaceExisting(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "m.json")
	os.WriteFile(p, []byte("old"), 0o644)
	f, err := Create(dir, "m.json", 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("new content"))
	if b, _ := os.ReadFile(p); string(b) != "old" {
		t.Fatalf("target changed before commit: %q", b)
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "new content" {
		t.Fatalf("got %q", b)
	}
}

func TestAbortLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	f, err := Create(dir, "x.safetensors", 0o600)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("partial"))
	if err := f.Abort(); err != nil {
		t.Fatal(err)
	}
	if err := f.Abort(); err != nil {
		t.Fatal(err)
	}
	if got := names(t, dir); len(got) != 0 {
		t.Fatalf("leftovers: %v", got)
	}
}

func TestSubdirName(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	f, err := Create(dir, "sub/y.safetensors", 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(f.Name()) != filepath.Join(dir, "sub") {
		t.Fatalf("temp not next to target: %s", f.Name())
	}
	f.Write([]byte("y"))
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "sub", "y.safetensors")); err != nil {
		t.Fatal(err)
	}
}

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f.txt")
	if err := WriteFile(p, []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(p, []byte("22"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "22" {
		t.Fatalf("got %q", b)
	}
	if got := names(t, dir); len(got) != 1 {
		t.Fatalf("leftovers: %v", got)
	}
	if err := SyncDir(dir); err != nil {
		t.Fatal(err)
	}
}

// TestCrashBeforeCommit runs a child process that writes to a temp file and
// is killed before Commit: only the dot-temp must remain.
func TestCrashBeforeCommit(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("uses SIGKILL")
	}
	if dir := os.Getenv("ATOMICFILE_CRASH_DIR"); dir != "" {
		f, err := Create(dir, "crash.safetensors", 0o644)
		if err != nil {
			os.Exit(3)
		}
		f.Write([]byte(strings.Repeat("x", 1<<16)))
		os.Stdout.WriteString("ready\n")
		select {} // wait to be killed
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashBeforeCommit$")
	cmd.Env = append(os.Environ(), "ATOMICFILE_CRASH_DIR="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child: %q %v", line, err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	got := names(t, dir)
	if len(got) != 1 || !IsTemp(got[0]) || !strings.HasPrefix(got[0], ".crash.safetensors"+TempMarker) {
		t.Fatalf("after crash dir has %v, want only the dot-temp", got)
	}
}
