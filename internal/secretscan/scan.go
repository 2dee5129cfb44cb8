// Package secretscan finds leaked credentials (Hugging Face, CivitAI,
// RunPod, AWS/S3, Context7, croc, private keys) in files and folders, and
// .env files that are tracked by git. It implements `scopectl secrets scan`.
//
// Findings carry only a redacted preview of what was found, never the raw
// value, so they are safe to print and to emit as JSON.
package secretscan

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/daydreamlive/scopectl/internal/secret"
)

// Finding is one leaked credential (or a tracked .env file).
type Finding struct {
	Path    string `json:"path"`
	Line    int    `json:"line"`   // 1-based; 0 for file-level findings
	Column  int    `json:"column"` // 1-based, in characters; 0 for file-level findings
	Kind    string `json:"kind"`
	Preview string `json:"preview"` // redacted; never the raw value
}

// DefaultMaxFileSize is used when Options.MaxFileSize is 0.
const DefaultMaxFileSize = 10 << 20

// binarySniffLen: a NUL byte in this many leading bytes marks a file binary.
const binarySniffLen = 8 << 10

// Options tunes Scan. The zero value is sensible.
type Options struct {
	// MaxFileSize skips files larger than this many bytes (0: 10 MiB,
	// negative: no limit).
	MaxFileSize int64
	// FollowSymlinks follows symbolic links found while walking
	// directories (loops are detected). Paths given to Scan directly are
	// always followed.
	FollowSymlinks bool
	// Warn, if set, is told about files and directories that could not be
	// read during the walk (they are skipped).
	Warn func(path string, err error)
}

// skipDirs are never descended into.
var skipDirs = map[string]bool{".git": true, "node_modules": true}

type scanner struct {
	ctx      context.Context
	opt      Options
	findings []Finding
	visited  map[string]bool     // real paths of directories walked
	envFiles map[string][]string // dir -> candidate .env base names
}

// Scan scans files and directories (recursively) for leaked credentials.
// Findings are sorted by path, line and column. Paths that do not exist or
// cannot be read are reported in err (joined); findings from the other
// paths are still returned. Unreadable entries found while walking are
// skipped (see Options.Warn). Scan stops early if ctx is cancelled.
func Scan(ctx context.Context, paths []string, opt Options) ([]Finding, error) {
	if opt.MaxFileSize == 0 {
		opt.MaxFileSize = DefaultMaxFileSize
	}
	s := &scanner{
		ctx:      ctx,
		opt:      opt,
		visited:  map[string]bool{},
		envFiles: map[string][]string{},
	}
	var errs []error
	for _, p := range paths {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		p = filepath.Clean(p)
		fi, err := os.Stat(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if fi.IsDir() {
			if err := s.walkDir(p); err != nil {
				errs = append(errs, err)
			}
		} else if fi.Mode().IsRegular() {
			if err := s.scanFile(p, fi); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if ctx.Err() == nil {
		s.checkGitTracked()
	}
	sortFindings(s.findings)
	return dedupe(s.findings), errors.Join(errs...)
}

func (s *scanner) warn(path string, err error) {
	if s.opt.Warn != nil {
		s.opt.Warn(path, err)
	}
}

func (s *scanner) walkDir(dir string) error {
	if err := s.ctx.Err(); err != nil {
		return err
	}
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		if abs, err := filepath.Abs(real); err == nil {
			real = abs
		}
		if s.visited[real] {
			return nil
		}
		s.visited[real] = true
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		s.warn(dir, err)
		return nil
	}
	for _, e := range entries {
		if err := s.ctx.Err(); err != nil {
			return err
		}
		name := e.Name()
		p := filepath.Join(dir, name)
		typ := e.Type()
		if typ&fs.ModeSymlink != 0 {
			if !s.opt.FollowSymlinks {
				continue
			}
			fi, err := os.Stat(p)
			if err != nil {
				s.warn(p, err)
				continue
			}
			typ = fi.Mode().Type()
		}
		switch {
		case typ.IsDir():
			if skipDirs[name] {
				continue
			}
			if err := s.walkDir(p); err != nil {
				return err
			}
		case typ.IsRegular():
			fi, err := os.Stat(p)
			if err != nil {
				s.warn(p, err)
				continue
			}
			if err := s.scanFile(p, fi); err != nil {
				s.warn(p, err)
			}
		}
	}
	return nil
}

// isEnvFile reports whether base names a dotenv file that should never be
// committed (.env, .env.local, .env.production, ...) as opposed to a
// template (.env.example, .env.sample, .env.template, .env.dist).
func isEnvFile(base string) bool {
	if base == ".env" {
		return true
	}
	if !strings.HasPrefix(base, ".env.") {
		return false
	}
	l := strings.ToLower(base)
	for _, suf := range []string{".example", ".sample", ".template", ".dist"} {
		if strings.HasSuffix(l, suf) {
			return false
		}
	}
	return true
}

func (s *scanner) scanFile(path string, fi fs.FileInfo) error {
	base := filepath.Base(path)
	if isEnvFile(base) {
		dir := filepath.Dir(path)
		s.envFiles[dir] = append(s.envFiles[dir], base)
	}
	if s.opt.MaxFileSize > 0 && fi.Size() > s.opt.MaxFileSize {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var r io.Reader = f
	if s.opt.MaxFileSize > 0 {
		r = io.LimitReader(f, s.opt.MaxFileSize)
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if bytes.IndexByte(data[:min(len(data), binarySniffLen)], 0) >= 0 {
		return nil
	}
	s.findings = append(s.findings, scanText(path, string(data))...)
	return nil
}

// scanText applies every rule to every line of text.
func scanText(path, text string) []Finding {
	var out []Finding
	lines := strings.Split(text, "\n")
	add := func(lineNo int, line string, off int, kind, preview string) {
		out = append(out, Finding{
			Path:    path,
			Line:    lineNo,
			Column:  utf8.RuneCountInString(line[:off]) + 1,
			Kind:    kind,
			Preview: preview,
		})
	}
	for i, line := range lines {
		line = strings.TrimSuffix(line, "\r")
		lineNo := i + 1
		lower := strings.ToLower(line)
		for _, r := range rules {
			if !r.applies(line, lower) {
				continue
			}
			for _, m := range r.re.FindAllStringSubmatchIndex(line, -1) {
				start, end := m[2*r.group], m[2*r.group+1]
				if start < 0 {
					continue
				}
				v := line[start:end]
				if end < len(line) && strings.IndexByte(r.notAfter, line[end]) >= 0 {
					continue
				}
				if isPlaceholder(v) || (r.valid != nil && !r.valid(v)) {
					continue
				}
				add(lineNo, line, start, r.kind, secret.New(v).Redacted())
			}
		}
		if strings.Contains(lower, "croc_secret") {
			if m := crocRE.FindStringSubmatchIndex(line); m != nil {
				rhs := line[m[2]:m[3]]
				if v, off, ok := crocValue(rhs); ok && !isPlaceholder(v) {
					add(lineNo, line, m[2]+off, KindCrocSecret, secret.New(v).Redacted())
				}
			}
		}
		if strings.Contains(line, "PRIVATE KEY") {
			for _, m := range privateKeyRE.FindAllStringIndex(line, -1) {
				if hasKeyBody(line[m[1]:], lines[i+1:]) {
					add(lineNo, line, m[0], KindPrivateKey, line[m[0]:m[1]])
				}
			}
		}
	}
	return out
}

func (r *rule) applies(line, lower string) bool {
	for _, k := range r.keywords {
		if strings.Contains(lower, k) {
			return true
		}
	}
	for _, k := range r.caseSensitiveKeywords {
		if strings.Contains(line, k) {
			return true
		}
	}
	return false
}

// hasKeyBody reports whether a PEM header is followed by key material (on
// the same line, as in JSON "\n"-escaped keys, or within the next few
// lines, allowing for Proc-Type/Version headers), so that documentation
// and code mentioning the header are not reported.
func hasKeyBody(rest string, next []string) bool {
	if base64Body.MatchString(rest) {
		return true
	}
	for i, l := range next {
		if i >= 5 {
			break
		}
		l = strings.TrimSpace(l)
		if base64Body.MatchString(l) && !isPlaceholder(l) {
			return true
		}
	}
	return false
}

// checkGitTracked reports candidate .env files that git tracks, running
// `git ls-files` once per directory that holds any. It does nothing when
// git is not installed; directories outside a work tree are skipped.
func (s *scanner) checkGitTracked() {
	if len(s.envFiles) == 0 {
		return
	}
	gitPath, err := exec.LookPath("git")
	if err != nil {
		return
	}
	for dir, bases := range s.envFiles {
		if s.ctx.Err() != nil {
			return
		}
		args := append([]string{"-C", dir, "ls-files", "-z", "--"}, bases...)
		cmd := exec.CommandContext(s.ctx, gitPath, args...)
		cmd.Env = append(os.Environ(), "GIT_OPTIONAL_LOCKS=0", "GIT_TERMINAL_PROMPT=0")
		out, err := cmd.Output()
		if err != nil {
			continue // not a repository, dubious ownership, ...
		}
		tracked := map[string]bool{}
		for _, f := range strings.Split(string(out), "\x00") {
			if f != "" {
				tracked[filepath.FromSlash(f)] = true
			}
		}
		for _, b := range bases {
			if tracked[b] {
				s.findings = append(s.findings, Finding{
					Path: filepath.Join(dir, b),
					Kind: KindEnvFileInGit,
				})
			}
		}
	}
}

func sortFindings(fs []Finding) {
	sort.SliceStable(fs, func(i, j int) bool {
		a, b := fs[i], fs[j]
		if a.Path != b.Path {
			return a.Path < b.Path
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		if a.Column != b.Column {
			return a.Column < b.Column
		}
		return a.Kind < b.Kind
	})
}

// dedupe drops exact duplicates from sorted findings (a file reached twice
// through different roots or several rules matching the same value).
func dedupe(fs []Finding) []Finding {
	if len(fs) == 0 {
		return fs
	}
	out := fs[:1]
	for _, f := range fs[1:] {
		last := out[len(out)-1]
		if f.Path == last.Path && f.Line == last.Line && f.Column == last.Column && f.Kind == last.Kind {
			continue
		}
		out = append(out, f)
	}
	return out
}

// String formats a finding as "path:line:column: kind preview".
func (f Finding) String() string {
	if f.Line == 0 {
		return fmt.Sprintf("%s: %s", f.Path, f.Kind)
	}
	return fmt.Sprintf("%s:%d:%d: %s %s", f.Path, f.Line, f.Column, f.Kind, f.Preview)
}
