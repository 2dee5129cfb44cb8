// Package remote defines the one small interface every place LoRAs are sent to or fetched
// from implements, the way rclone backends implement fs.Fs: a local folder, SSH (SFTP or
// plain exec), an SSH gateway that only grants a PTY, croc, a RunPod volume's S3 API, and
// scopectl's own HTTPS agent. The sync engine knows nothing but this interface.
package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/daydreamlive/scopectl/internal/secret"
)

// Entry is one published file on a remote.
type Entry struct {
	Name    string    `json:"name"` // a single path element in the remote's folder
	Size    int64     `json:"size"`
	SHA256  string    `json:"sha256,omitempty"` // set when the remote knows it cheaply
	ModTime time.Time `json:"mod_time"`
}

// Source is content to put. It is random access so that backends can send chunks in
// parallel and resume from any offset.
type Source struct {
	R      io.ReaderAt
	Size   int64
	SHA256 string // lowercase hex of the whole content; verified before publishing
}

// PutOptions tunes one Put.
type PutOptions struct {
	Progress io.Writer // receives every payload byte sent (not resumed bytes)
}

// PutResult says how much was really sent.
type PutResult struct {
	Sent    int64 `json:"sent"`    // payload bytes transferred by this call
	Resumed int64 `json:"resumed"` // bytes already on the remote from an interrupted attempt
	// Compressed is what Sent took on the wire when the backend compressed it (0: sent
	// as is).
	Compressed int64 `json:"compressed,omitempty"`
}

// Remote is a folder somewhere that Scope reads LoRAs from.
//
// Put must publish atomically: on a filesystem the content goes to a temporary name that
// Scope's loader ignores (TempName), is verified against src.SHA256, made durable, and only
// then renamed to name; an object store publishes on completion of a verified upload.
// After a crash of either side at any moment, name is either absent, the old content, or
// the complete new content. A Put that finds partial state from an earlier attempt for the
// same content resumes after the bytes already there. On error, PutResult still says how
// much was sent.
type Remote interface {
	// String names the remote for messages; it never contains credentials.
	String() string
	// List returns the published regular files of the folder (not recursive); temporary
	// files are left out.
	List(ctx context.Context) ([]Entry, error)
	// Put publishes src as name (see above).
	Put(ctx context.Context, name string, src Source, opt PutOptions) (PutResult, error)
	// Get streams name from byte offset off.
	Get(ctx context.Context, name string, off int64) (io.ReadCloser, error)
	// Delete removes a published file. ErrNotFound if it does not exist.
	Delete(ctx context.Context, name string) error
	Close() error
}

// Hasher is implemented by remotes that can compute a file's sha256 on the far side
// (sha256sum over SSH exec, the agent), so that verification does not move the data.
type Hasher interface {
	Hash(ctx context.Context, name string) (string, error)
}

// TempCleaner is implemented by remotes whose interrupted uploads leave state on the far
// side that outlives them (S3: an open multipart upload, whose parts take space until
// aborted, and its marker object). CleanTemps removes what is of no further use: the
// leftovers of uploads whose file is complete anyway (a kill after the upload completed,
// before its marker went), and, when unwanted is not nil, those of every interrupted
// upload of a name for which unwanted returns true (sync --delete). It returns the
// names whose leftovers it removed.
type TempCleaner interface {
	CleanTemps(ctx context.Context, unwanted func(name string) bool) ([]string, error)
}

// Runner is implemented by remotes that can run a POSIX sh script on the far side (SSH
// exec, the PTY gateway); `scopectl agent install` uses it to start the agent.
type Runner interface {
	Run(ctx context.Context, script string) (output string, exitCode int, err error)
}

// InputRunner is a Runner that can also feed a script's standard input. Secrets go that
// way: a command line (even an ssh exec request) shows up in the far side's process list.
type InputRunner interface {
	Runner
	RunInput(ctx context.Context, script string, stdin io.Reader) (output string, exitCode int, err error)
}

var (
	ErrNotFound     = errors.New("not found")
	ErrBadName      = errors.New("bad file name")
	ErrHashMismatch = errors.New("sha256 mismatch")
)

// TempPrefix starts every temporary name. Scope lists only *.safetensors and skips
// nothing else by name, so temporary names start with a dot and end in neither
// .safetensors nor .json.
const TempPrefix = ".scopectl-part-"

// TempName is the temporary name a backend uploads name to. It includes a prefix of the
// content hash, so a resumed upload only ever continues bytes of the same content.
func TempName(name, sha256hex string) string {
	h := sha256hex
	if len(h) > 16 {
		h = h[:16]
	}
	return TempPrefix + h + "-" + name + ".tmp"
}

// IsTemp reports whether a file name is one of scopectl's temporary names.
func IsTemp(name string) bool { return strings.HasPrefix(name, TempPrefix) }

// CheckName refuses names that could leave the folder or confuse a terminal: anything but
// a single, printable path element. Names from remote listings go through it too.
func CheckName(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return fmt.Errorf("%w %q: empty, . or ..", ErrBadName, name)
	case len(name) > 200: // leaves room for TempName's prefix within the 255-byte limit
		return fmt.Errorf("%w %q: longer than 200 bytes", ErrBadName, name[:40]+"…")
	case !utf8.ValidString(name):
		return fmt.Errorf("%w %q: not UTF-8", ErrBadName, name)
	case strings.ContainsAny(name, `/\`):
		return fmt.Errorf("%w %q: contains a path separator", ErrBadName, name)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return fmt.Errorf("%w %q: contains control characters", ErrBadName, name)
		}
	}
	return nil
}

// Env is what constructors may need beyond the URL: credentials and policy.
type Env struct {
	Secrets *secret.Redactor // register every credential a backend learns of
	// Credentials, looked up by the backend that needs them.
	Lookup func(key string) secret.Secret
	// KnownHosts is the known_hosts file for SSH; AcceptNewHostKey adds unknown keys to it.
	KnownHosts       string
	AcceptNewHostKey bool
	Options          map[string]string // backend-specific options (--relay, --parallel, …)
}

// Constructor opens a remote for a parsed URL.
type Constructor func(ctx context.Context, u *url.URL, env Env) (Remote, error)

var (
	mu       sync.RWMutex
	backends = map[string]Constructor{}
)

// Register makes a URL scheme available to Open. Backends call it from init.
func Register(scheme string, c Constructor) {
	mu.Lock()
	defer mu.Unlock()
	backends[scheme] = c
}

// Schemes lists the registered URL schemes.
func Schemes() []string {
	mu.RLock()
	defer mu.RUnlock()
	var out []string
	for s := range backends {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// Open parses a remote URL and opens it with the backend of its scheme. A plain path is
// a file:// URL.
func Open(ctx context.Context, raw string, env Env) (Remote, error) {
	var u *url.URL
	if !strings.Contains(raw, "://") {
		// A plain path is a local folder, taken as it is: relative to the working
		// directory, and with '#', '?', '%' or spaces in it.
		p, err := filepath.Abs(raw)
		if err != nil {
			return nil, fmt.Errorf("local folder %q: %v", raw, err)
		}
		u = &url.URL{Scheme: "file", Path: filepath.ToSlash(p)}
	} else {
		var err error
		if u, err = url.Parse(raw); err != nil {
			return nil, fmt.Errorf("remote %q: %v", Redact(raw), err)
		}
	}
	mu.RLock()
	c, ok := backends[u.Scheme]
	mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("remote %s: unknown scheme %q (known: %s)", Redact(raw), u.Scheme, strings.Join(Schemes(), ", "))
	}
	return c(ctx, u, env)
}

// Redact removes a password or token from a URL string for messages.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<unparsable URL>"
	}
	if u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
	}
	q := u.Query()
	for k := range q {
		lk := strings.ToLower(k)
		if strings.Contains(lk, "token") || strings.Contains(lk, "secret") || strings.Contains(lk, "key") || strings.Contains(lk, "sig") {
			q.Set(k, "xxxxx")
		}
	}
	u.RawQuery = q.Encode()
	return u.String()
}
