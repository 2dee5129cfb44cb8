package hf

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"unicode/utf8"
)

// Ref names what to pull: a repo, a revision and optionally some paths in it.
type Ref struct {
	Repo     string   // "org/name"
	RepoType string   // model (default), dataset or space
	Revision string   // branch, tag, refs/pr/N or a 40-hex commit; default main
	Paths    []string // files or folders in the repo; empty: the whole repo
}

// DefaultRevision is the revision pulled when none is given (huggingface_hub's DEFAULT_REVISION).
const DefaultRevision = "main"

// String gives the ref back in hf:// form.
func (r Ref) String() string {
	var b strings.Builder
	b.WriteString("hf://")
	switch r.RepoType {
	case "dataset":
		b.WriteString("datasets/")
	case "space":
		b.WriteString("spaces/")
	}
	b.WriteString(r.Repo)
	if r.Revision != "" && r.Revision != DefaultRevision {
		rev := r.Revision
		if !prRefRe.MatchString(rev) {
			rev = url.PathEscape(rev)
		}
		b.WriteString("@" + rev)
	}
	if len(r.Paths) == 1 {
		b.WriteString("/" + r.Paths[0])
	}
	return b.String()
}

// ParseRef parses hf://org/name[@rev][/path/in/repo…], hf://datasets/org/name…,
// hf://spaces/org/name…, the bare org/name[@rev][/path] form, and a web address such as
// https://huggingface.co/org/name/blob/main/file.safetensors. A revision may be
// percent-encoded (refs%2Fpr%2F1), or written refs/pr/N or refs/convert/NAME.
func ParseRef(s string) (Ref, error) {
	orig := s
	bad := func(why string) (Ref, error) {
		return Ref{}, fmt.Errorf("hf: bad reference %q: %s (want hf://ORG/NAME[@REVISION][/PATH])", clip(orig), why)
	}
	if strings.ContainsAny(s, "\\") || hasControl(s) {
		return bad("backslash or control character")
	}
	web := false
	switch {
	case strings.HasPrefix(s, "hf://"):
		s = s[len("hf://"):]
	case strings.HasPrefix(s, "https://"), strings.HasPrefix(s, "http://"):
		u, err := url.Parse(s)
		if err != nil {
			return bad("not a URL")
		}
		if u.User != nil {
			return bad("credentials in the URL are not accepted")
		}
		if u.Host == "" {
			return bad("no host")
		}
		// the raw path, keeping %2F inside a revision as it was written
		raw := s[len(u.Scheme)+3:]
		if i := strings.IndexAny(raw, "?#"); i >= 0 {
			raw = raw[:i]
		}
		_, raw, _ = strings.Cut(raw, "/")
		s = raw
		web = true
	case strings.Contains(s, "://"):
		return bad("unknown scheme")
	}
	var r Ref
	segs := strings.Split(s, "/")
	switch segs[0] {
	case "datasets":
		r.RepoType, segs = "dataset", segs[1:]
	case "spaces":
		r.RepoType, segs = "space", segs[1:]
	default:
		r.RepoType = "model"
	}
	if len(segs) < 2 || segs[0] == "" || segs[1] == "" {
		return bad("no ORG/NAME")
	}
	org, name := segs[0], segs[1]
	rest := segs[2:]
	if web {
		// org/name[/(resolve|blob|tree)/REV[/PATH]]
		if len(rest) > 0 && rest[len(rest)-1] == "" {
			rest = rest[:len(rest)-1]
		}
		if len(rest) > 0 {
			switch rest[0] {
			case "resolve", "blob", "tree":
				if len(rest) < 2 {
					return bad("no revision after /" + rest[0])
				}
				r.Revision = rest[1]
				rest = rest[2:]
			default:
				return bad("unknown page /" + rest[0])
			}
		}
	} else if i := strings.IndexByte(name, '@'); i >= 0 {
		name, r.Revision = name[:i], name[i+1:]
		if r.Revision == "" {
			return bad("empty revision after @")
		}
		// refs/pr/N and refs/convert/NAME contain slashes.
		if r.Revision == "refs" && len(rest) >= 2 && (rest[0] == "pr" || rest[0] == "convert") {
			r.Revision = "refs/" + rest[0] + "/" + rest[1]
			rest = rest[2:]
		}
	}
	if r.Revision != "" {
		rev, err := url.PathUnescape(r.Revision)
		if err != nil {
			return bad("bad percent-encoding in revision")
		}
		r.Revision = rev
	} else {
		r.Revision = DefaultRevision
	}
	r.Repo = org + "/" + name
	if len(rest) > 0 {
		p := strings.Join(rest, "/")
		if web {
			u, err := url.PathUnescape(p)
			if err != nil {
				return bad("bad percent-encoding in path")
			}
			p = u
		}
		p = strings.TrimSuffix(p, "/")
		if p != "" {
			r.Paths = []string{p}
		}
	}
	if err := r.validate(); err != nil {
		return Ref{}, err
	}
	return r, nil
}

// validate checks every field and fills defaults; Pull calls it too.
func (r *Ref) validate() error {
	if r.RepoType == "" {
		r.RepoType = "model"
	}
	switch r.RepoType {
	case "model", "dataset", "space":
	default:
		return fmt.Errorf("hf: unknown repo type %q (want model, dataset or space)", clip(r.RepoType))
	}
	if r.Revision == "" {
		r.Revision = DefaultRevision
	}
	if err := validRepoID(r.Repo); err != nil {
		return err
	}
	if err := validRevision(r.Revision); err != nil {
		return err
	}
	for i, p := range r.Paths {
		p = strings.TrimSuffix(p, "/")
		if err := safePath(p); err != nil {
			return fmt.Errorf("hf: path %q: %v", clip(p), err)
		}
		r.Paths[i] = p
	}
	return nil
}

var prRefRe = regexp.MustCompile(`^refs/(pr|convert)/[^/%]+$`)

var repoIDRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// validRepoID follows huggingface_hub's validate_repo_id, but requires the ORG/NAME form.
func validRepoID(id string) error {
	switch {
	case len(id) > 96+1+96:
		return fmt.Errorf("hf: repo id %q is too long", clip(id))
	case !repoIDRe.MatchString(id):
		return fmt.Errorf("hf: repo id %q must be ORG/NAME using letters, digits, '-', '_' and '.'", clip(id))
	case strings.Contains(id, "--") || strings.Contains(id, ".."):
		return fmt.Errorf("hf: repo id %q cannot contain '--' or '..'", clip(id))
	case strings.HasSuffix(id, ".git") || strings.HasSuffix(id, "-") || strings.HasSuffix(id, "."):
		return fmt.Errorf("hf: repo id %q cannot end with '.git', '-' or '.'", clip(id))
	}
	return nil
}

// validRevision accepts branch, tag and refs/… names that are safe as the relative file
// name refs/<revision> in the cache.
func validRevision(rev string) error {
	if len(rev) > 255 {
		return fmt.Errorf("hf: revision is too long")
	}
	if err := safePath(rev); err != nil {
		return fmt.Errorf("hf: revision %q: %v", clip(rev), err)
	}
	if strings.ContainsAny(rev, ":?*[~^ ") {
		return fmt.Errorf("hf: revision %q contains a character git does not allow", clip(rev))
	}
	return nil
}

var errUnsafe = errors.New("unsafe path")

// safePath accepts a relative, forward-slash path whose every segment is a plain name: no
// "..", ".", empty segments, absolute or drive paths, backslashes, colons or control
// characters, valid UTF-8, at most 1024 bytes and 255 bytes a segment. Paths from the
// server pass through it before they touch the file system.
func safePath(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("%w: empty", errUnsafe)
	case len(p) > 1024:
		return fmt.Errorf("%w: longer than 1024 bytes", errUnsafe)
	case !utf8.ValidString(p):
		return fmt.Errorf("%w: not UTF-8", errUnsafe)
	case hasControl(p):
		return fmt.Errorf("%w: control character", errUnsafe)
	case strings.ContainsRune(p, '\\'):
		return fmt.Errorf("%w: backslash", errUnsafe)
	case strings.ContainsRune(p, ':'):
		return fmt.Errorf("%w: colon (drive or stream name)", errUnsafe)
	case strings.HasPrefix(p, "/"):
		return fmt.Errorf("%w: absolute", errUnsafe)
	}
	for _, seg := range strings.Split(p, "/") {
		switch {
		case seg == "":
			return fmt.Errorf("%w: empty segment", errUnsafe)
		case seg == "." || seg == "..":
			return fmt.Errorf("%w: %q segment", errUnsafe, seg)
		case len(seg) > 255:
			return fmt.Errorf("%w: segment longer than 255 bytes", errUnsafe)
		}
	}
	return nil
}

func hasControl(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == utf8.RuneError {
			return true
		}
	}
	return false
}

// clip makes untrusted text safe for a one-line message: control characters become '?',
// and it is cut to 120 bytes.
func clip(s string) string {
	const max = 120
	var b strings.Builder
	for i, r := range s {
		if i >= max {
			b.WriteString("…")
			break
		}
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			r = '?'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// RepoFolder is the repo's folder name in the cache: models--ORG--NAME, datasets--…, spaces--….
func RepoFolder(repoType, repo string) string {
	if repoType == "" {
		repoType = "model"
	}
	return repoType + "s--" + strings.ReplaceAll(repo, "/", "--")
}

// urlPrefix is the resolve-URL prefix of the repo type ("" for models).
func urlPrefix(repoType string) string {
	switch repoType {
	case "dataset":
		return "datasets/"
	case "space":
		return "spaces/"
	}
	return ""
}
