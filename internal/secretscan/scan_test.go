package secretscan

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Token-shaped strings are built by concatenation so this source file does
// not itself look like it contains credentials.
var (
	tokHF       = "hf_" + strings.Repeat("A1b2", 9)                       // 36 chars after hf_
	tokHF2      = "hf_" + strings.Repeat("Zy9x", 9)                       //
	tokHFOrg    = "api_" + "org_" + strings.Repeat("Qw3e", 9)             //
	tokRunPod   = "rpa_" + strings.Repeat("K7Q2", 10)                     // 40 upper alnum
	tokRunPodV1 = strings.Repeat("a9B8c7D6", 4)                           // 32 alnum legacy
	tokCivitai  = strings.Repeat("0f1e2d3c", 4)                           // 32 lower hex
	tokAWSID    = "AK" + "IA" + "Q3EGRT5TZK2V7PX4"                        // 20
	tokAWSSec   = strings.Repeat("aB3/dE6+gH9k", 3) + "Zz12"              // 40 base64
	tokCtx7     = "ctx7" + "sk-" + "0b5f3c1e-7a2d-4c8b-9e6f-1d2a3b4c5d6e" //
	tokCroc     = "7731-orange-kilo-delta"                                //
	pemHeader   = "-----BEGIN " + "OPENSSH PRIVATE KEY-----"              //
	pemBody     = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW"
	rsaHeader   = "-----BEGIN " + "RSA PRIVATE KEY-----" //
	pkcs8Header = "-----BEGIN " + "PRIVATE KEY-----"     //
)

var allTokens = []string{tokHF, tokHF2, tokHFOrg, tokRunPod, tokRunPodV1, tokCivitai, tokAWSID, tokAWSSec, tokCtx7, tokCroc, pemBody}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func checkNoRaw(t *testing.T, fs []Finding) {
	t.Helper()
	b, err := json.Marshal(fs)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range allTokens {
		if strings.Contains(string(b), tok) {
			t.Errorf("raw value %q leaked into findings JSON", tok)
		}
		for _, f := range fs {
			if strings.Contains(f.String(), tok) {
				t.Errorf("raw value leaked via String(): %s", f)
			}
		}
	}
	// Previews show at most a known prefix (api_org_ is the longest) + "…" + 4 chars.
	for _, f := range fs {
		if f.Kind != KindPrivateKey && len([]rune(f.Preview)) > 13 {
			t.Errorf("preview too long: %q", f.Preview)
		}
	}
}

type want struct {
	rel  string
	line int
	col  int
	kind string
}

func match(t *testing.T, root string, got []Finding, wants []want) {
	t.Helper()
	var g []string
	for _, f := range got {
		rel, _ := filepath.Rel(root, f.Path)
		g = append(g, fmt.Sprintf("%s:%d:%d:%s", filepath.ToSlash(rel), f.Line, f.Column, f.Kind))
	}
	var w []string
	for _, x := range wants {
		w = append(w, fmt.Sprintf("%s:%d:%d:%s", x.rel, x.line, x.col, x.kind))
	}
	if strings.Join(g, "\n") != strings.Join(w, "\n") {
		t.Errorf("findings mismatch\ngot:\n  %s\nwant:\n  %s", strings.Join(g, "\n  "), strings.Join(w, "\n  "))
	}
}

func TestScanPositives(t *testing.T) {
	root := t.TempDir()
	write(t, filepath.Join(root, "a.sh"), "#!/bin/sh\nexport HF_TOKEN="+tokHF+"\n")
	write(t, filepath.Join(root, "b", "notes.md"), strings.Join([]string{
		"two on a line: " + tokHF + " " + tokHF2,   // 1
		"org: " + tokHFOrg,                         // 2
		"RUNPOD_API_KEY=" + tokRunPod,              // 3
		"runpod.api_key = \"" + tokRunPodV1 + "\"", // 4
		"CIVITAI_API_KEY=" + tokCivitai,            // 5
		"wget 'https://civitai.com/api/download/models/1234?type=Model&token=" + tokCivitai + "'", // 6
		`  "civitai_token": "` + tokCivitai + `",`,                                                // 7
		"curl -H 'Authorization: Bearer " + tokCivitai + "' https://civitai.com/api/v1/models",    // 8
		"[default]",                                         // 9
		"aws_access_key_id = " + tokAWSID,                   // 10
		"aws_secret_access_key = " + tokAWSSec,              // 11
		"SCOPECTL_S3_SECRET_ACCESS_KEY='" + tokAWSSec + "'", // 12
		"CONTEXT7_API_KEY=" + tokCtx7,                       // 13
		"CROC_SECRET=" + tokCroc,                            // 14
		`export CROC_SECRET="` + tokCroc + `"`,              // 15
		"croc_secret: " + tokCroc + " # for sync",           // 16
		pemHeader,                           // 17
		pemBody,                             // 18
		"-----END OPENSSH PRIVATE KEY-----", // 19
		`{"private_key": "` + pkcs8Header + `\n` + pemBody + `\n"}`, // 20
		"ünïcödé " + tokHF, // 21
	}, "\n")+"\n")
	// CRLF line endings.
	write(t, filepath.Join(root, "c.env.bat"), "set X=1\r\nset HF_TOKEN="+tokHF+"\r\n")

	got, err := Scan(context.Background(), []string{root}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkNoRaw(t, got)
	match(t, root, got, []want{
		{"a.sh", 2, 17, KindHuggingFace},
		{"b/notes.md", 1, 16, KindHuggingFace},
		{"b/notes.md", 1, 16 + len(tokHF) + 1, KindHuggingFace},
		{"b/notes.md", 2, 6, KindHuggingFace},
		{"b/notes.md", 3, 16, KindRunPod},
		{"b/notes.md", 4, 19, KindRunPod},
		{"b/notes.md", 5, 17, KindCivitAI},
		{"b/notes.md", 6, 69, KindCivitAI},
		{"b/notes.md", 7, 21, KindCivitAI},
		{"b/notes.md", 8, 32, KindCivitAI},
		{"b/notes.md", 10, 21, KindAWSAccessKey},
		{"b/notes.md", 11, 25, KindAWSSecretKey},
		{"b/notes.md", 12, 32, KindAWSSecretKey},
		{"b/notes.md", 13, 18, KindContext7},
		{"b/notes.md", 14, 13, KindCrocSecret},
		{"b/notes.md", 15, 21, KindCrocSecret},
		{"b/notes.md", 16, 14, KindCrocSecret},
		{"b/notes.md", 17, 1, KindPrivateKey},
		{"b/notes.md", 20, 18, KindPrivateKey},
		{"b/notes.md", 21, 9, KindHuggingFace},
		{"c.env.bat", 2, 14, KindHuggingFace},
	})
	for _, f := range got {
		switch f.Kind {
		case KindHuggingFace:
			if !strings.HasPrefix(f.Preview, "hf_…") && !strings.HasPrefix(f.Preview, "api_org_…") {
				t.Errorf("preview %q", f.Preview)
			}
		case KindPrivateKey:
			if !strings.HasPrefix(f.Preview, "-----BEGIN") {
				t.Errorf("preview %q", f.Preview)
			}
		}
		if f.Preview == "" {
			t.Errorf("empty preview: %+v", f)
		}
	}
	if got[0].Preview != "hf_…A1b2" {
		t.Errorf("preview = %q", got[0].Preview)
	}
}

func TestScanNegatives(t *testing.T) {
	root := t.TempDir()
	sha := strings.Repeat("9a8b7c6d", 4) // lone 32-hex on a non-civitai line
	write(t, filepath.Join(root, "neg.txt"), strings.Join([]string{
		"HF_TOKEN=hf_" + strings.Repeat("x", 36),
		"HF_TOKEN=<your token>",
		"HF_TOKEN=hf_REDACTED" + strings.Repeat("a1", 15),
		"HF_TOKEN=your_hf_token_here",
		"HF_TOKEN=hf_…Xy3Q",
		"from huggingface_hub import hf_hub_download",
		"CIVITAI_API_KEY=${CIVITAI_API_KEY}",
		"CIVITAI_API_KEY=",
		"commit " + sha,
		"md5sum: " + sha,
		"civitai model sha256 " + sha + sha,
		"CROC_SECRET=",
		"CROC_SECRET=changeme",
		"CROC_SECRET=xxx",
		"CROC_SECRET=${CROC}",
		`CROC_SECRET="<secret>"`,
		`	cmd.Env = append(env, "CROC_SECRET="+s)`,
		`	"croc_secret: " + tok + " # x",`,
		`CROC_SECRET = os.environ["X"]`,
		`val := os.Getenv("CROC_SECRET")`,
		"aws_access_key_id = AKIA" + "IOSFODNN7EXAMPLE",
		"aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCY" + "EXAMPLEKEY",
		"some_other_key = " + tokAWSSec,
		"RUNPOD_API_KEY=rpa_" + strings.Repeat("X", 40),
		"RUNPOD_API_KEY=" + strings.Repeat("0", 32),
		"pattern := `" + "-----BEGIN " + "RSA PRIVATE KEY-----`",
		rsaHeader,
		"...",
		"-----END RSA PRIVATE KEY-----",
		"id: AKIA" + "PACIFIC",
	}, "\n"))
	write(t, filepath.Join(root, ".env.example"), "HF_TOKEN=\nCIVITAI_API_KEY=your_civitai_key\nCROC_SECRET=<generate one>\n")
	write(t, filepath.Join(root, "node_modules", "pkg", "x.js"), "HF_TOKEN="+tokHF+"\n")
	write(t, filepath.Join(root, ".git", "config"), "HF_TOKEN="+tokHF+"\n")
	write(t, filepath.Join(root, "bin.dat"), "\x00\x01HF_TOKEN="+tokHF+"\n")
	got, err := Scan(context.Background(), []string{root}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		for _, f := range got {
			t.Errorf("unexpected finding %s", f)
		}
	}
}

func TestScanSizeLimitAndFiles(t *testing.T) {
	root := t.TempDir()
	big := filepath.Join(root, "big.txt")
	write(t, big, strings.Repeat("x", 100)+"\nHF_TOKEN="+tokHF+"\n")
	got, err := Scan(context.Background(), []string{big}, Options{MaxFileSize: 50})
	if err != nil || len(got) != 0 {
		t.Fatalf("size limit: %v %v", got, err)
	}
	got, err = Scan(context.Background(), []string{big, big}, Options{MaxFileSize: -1})
	if err != nil || len(got) != 1 || got[0].Path != big {
		t.Fatalf("file arg: %v %v", got, err)
	}
	_, err = Scan(context.Background(), []string{filepath.Join(root, "missing")}, Options{})
	if err == nil {
		t.Fatal("expected error for missing path")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Scan(ctx, []string{root}, Options{}); err == nil {
		t.Error("expected context error")
	}
}

func TestScanSymlinks(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	write(t, filepath.Join(outside, "leak.txt"), "HF_TOKEN="+tokHF+"\n")
	if err := os.Symlink(filepath.Join(outside, "leak.txt"), filepath.Join(root, "link.txt")); err != nil {
		t.Skip("symlinks unsupported:", err)
	}
	if err := os.Symlink(root, filepath.Join(root, "loop")); err != nil {
		t.Fatal(err)
	}
	got, err := Scan(context.Background(), []string{root}, Options{})
	if err != nil || len(got) != 0 {
		t.Fatalf("no-follow: %v %v", got, err)
	}
	got, err = Scan(context.Background(), []string{root}, Options{FollowSymlinks: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || filepath.Base(got[0].Path) != "link.txt" {
		t.Fatalf("follow: %v", got)
	}
}

func TestScanTrackedEnv(t *testing.T) {
	git, err := exec.LookPath("git")
	if err != nil {
		t.Skip("git not installed")
	}
	root := t.TempDir()
	repo := filepath.Join(root, "repo")
	write(t, filepath.Join(repo, ".env"), "HF_TOKEN="+tokHF+"\n")
	write(t, filepath.Join(repo, ".env.local"), "OTHER=1\n")         // untracked
	write(t, filepath.Join(repo, ".env.example"), "HF_TOKEN=\n")     // tracked but a template
	write(t, filepath.Join(repo, "sub", ".env.production"), "A=1\n") // tracked, in a subdir
	write(t, filepath.Join(root, "norepo", ".env"), "A=1\n")         // not in a repo
	runGit := func(args ...string) {
		t.Helper()
		cmd := exec.Command(git, append([]string{"-C", repo}, args...)...)
		cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	runGit("init", "-q")
	runGit("add", ".env", ".env.example", "sub/.env.production")

	got, err := Scan(context.Background(), []string{root}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkNoRaw(t, got)
	match(t, root, got, []want{
		{"repo/.env", 0, 0, KindEnvFileInGit},
		{"repo/.env", 1, 10, KindHuggingFace},
		{"repo/sub/.env.production", 0, 0, KindEnvFileInGit},
	})
}

func TestIsEnvFile(t *testing.T) {
	for name, want := range map[string]bool{
		".env": true, ".env.local": true, ".env.production": true,
		".env.example": false, ".env.sample": false, ".env.template": false,
		".env.local.example": false, "env": false, ".envrc": false, "x.env": false,
	} {
		if isEnvFile(name) != want {
			t.Errorf("isEnvFile(%q) != %v", name, want)
		}
	}
}
