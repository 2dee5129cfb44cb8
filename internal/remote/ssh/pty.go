package ssh

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	xssh "golang.org/x/crypto/ssh"

	"github.com/daydreamlive/scopectl/internal/remote"
)

// The ssh+pty:// backend reaches a folder through an SSH server that grants nothing but an
// interactive terminal: no exec, no SFTP, no SCP, no forwarding (RunPod's ssh.runpod.io
// gateway, which users drive with `ssh -tt`). It talks to a POSIX shell through the
// terminal itself: the terminal is put in raw mode without echo, commands end with a
// marker line carrying their exit status, and file data travels as base64 in here-documents
// (an encoding a terminal passes untouched), verified by sha256 on the far side before it
// is published with mv.

func init() {
	remote.Register("ssh+pty", func(ctx context.Context, u *url.URL, env remote.Env) (remote.Remote, error) {
		return OpenPTY(ctx, u, env)
	})
}

// ptyChunk is the raw bytes per here-document: big enough to amortise a round trip,
// small enough that an interrupted upload loses little.
var ptyChunk = 1 << 20

// PTYRemote is a folder behind a PTY-only SSH gateway.
type PTYRemote struct {
	name   string
	client *xssh.Client
	sess   *xssh.Session
	in     io.WriteCloser
	out    *bufio.Reader
	dir    string
	nonce  string
	mu     sync.Mutex // one shell conversation at a time
	broken error      // set when the conversation lost sync; every later call fails
}

// OpenPTY connects, starts the shell and prepares the terminal.
func OpenPTY(ctx context.Context, u *url.URL, env remote.Env) (*PTYRemote, error) {
	if u.User != nil {
		if _, has := u.User.Password(); has {
			return nil, fmt.Errorf("%s: passwords in ssh URLs are not supported; use a key", remote.Redact(u.String()))
		}
	}
	home := homeDir()
	su := *u
	su.Scheme = "ssh"
	t, err := resolve(&su, home)
	if err != nil {
		return nil, err
	}
	r := &PTYRemote{dir: folder(u.Path)}
	addr := net.JoinHostPort(t.host, strconv.Itoa(t.port))
	r.name = "ssh+pty://" + t.user + "@" + net.JoinHostPort(t.alias, strconv.Itoa(t.port)) + u.Path
	knownHosts := env.KnownHosts
	if knownHosts == "" {
		knownHosts = filepath.Join(home, ".ssh", "known_hosts")
	}
	if r.client, err = dial(ctx, r.name, addr, t, home, knownHosts, env.AcceptNewHostKey, connectTimeout); err != nil {
		return nil, err
	}
	if err := r.start(ctx); err != nil {
		r.client.Close()
		return nil, err
	}
	return r, nil
}

func (r *PTYRemote) String() string { return r.name }

func (r *PTYRemote) Close() error {
	if r.in != nil {
		io.WriteString(r.in, "exit 0\n")
	}
	if r.sess != nil {
		r.sess.Close()
	}
	return r.client.Close()
}

var ptyMarkerRe = regexp.MustCompile(`__SCOPECTL_([0-9a-f]{16})_(READY|DONE_(\d+))__`)

func (r *PTYRemote) start(ctx context.Context) error {
	var nb [8]byte
	rand.Read(nb[:])
	r.nonce = hex.EncodeToString(nb[:])
	sess, err := r.client.NewSession()
	if err != nil {
		return fmt.Errorf("%s: %w", r.name, err)
	}
	modes := xssh.TerminalModes{xssh.ECHO: 0, xssh.TTY_OP_ISPEED: 115200, xssh.TTY_OP_OSPEED: 115200}
	if err := sess.RequestPty("dumb", 50, 200, modes); err != nil {
		sess.Close()
		return fmt.Errorf("%s: the server refused a terminal: %w", r.name, err)
	}
	if r.in, err = sess.StdinPipe(); err != nil {
		return err
	}
	stdout, err := sess.StdoutPipe()
	if err != nil {
		return err
	}
	r.out = bufio.NewReaderSize(stdout, 256<<10)
	if err := sess.Shell(); err != nil {
		sess.Close()
		return fmt.Errorf("%s: the server refused a shell: %w", r.name, err)
	}
	r.sess = sess
	// Raw mode without echo, then a plain sh that reads commands without a prompt (its
	// stderr is not a terminal, so it is not interactive). The marker is spelled with
	// quotes so that an echo of this very line does not look like the answer.
	init := "stty raw -echo -opost 2>/dev/null; exec env PS1= PS2= HISTFILE= LC_ALL=C sh 2>/dev/null\n" +
		"echo __SCOPECTL_'" + r.nonce + "'_READY__\n"
	if _, err := io.WriteString(r.in, init); err != nil {
		return err
	}
	_, _, err = r.readUntilMarker(ctx, nil, 30*time.Second)
	if err != nil {
		return fmt.Errorf("%s: no shell answered on the terminal: %w", r.name, err)
	}
	if _, err := r.run(ctx, "mkdir -p -- "+shq(r.execDir())); err != nil {
		return err
	}
	return nil
}

func (r *PTYRemote) execDir() string {
	if r.dir == "." || filepath.IsAbs(r.dir) {
		return r.dir
	}
	return "./" + r.dir
}

func (r *PTYRemote) path(name string) string { return r.execDir() + "/" + name }

// readUntilMarker reads terminal output until the next marker line, handing each line
// before it to line (if set). It returns the marker's exit status.
func (r *PTYRemote) readUntilMarker(ctx context.Context, line func([]byte) error, idle time.Duration) (int, []byte, error) {
	type res struct {
		code int
		err  error
	}
	var collected bytes.Buffer
	done := make(chan res, 1)
	go func() {
		for {
			b, err := r.out.ReadSlice('\n')
			if err == bufio.ErrBufferFull {
				collected.Write(b) // a long line (not ours): keep reading
				continue
			}
			if err != nil {
				done <- res{-1, fmt.Errorf("terminal closed: %w", err)}
				return
			}
			b = bytes.TrimRight(b, "\r\n")
			if m := ptyMarkerRe.FindSubmatch(b); m != nil && string(m[1]) == r.nonce {
				code := 0
				if len(m[3]) > 0 {
					code, _ = strconv.Atoi(string(m[3]))
				}
				done <- res{code, nil}
				return
			}
			if line != nil {
				if err := line(b); err != nil {
					done <- res{-1, err}
					return
				}
			} else if collected.Len() < 64<<10 {
				collected.Write(b)
				collected.WriteByte('\n')
			}
		}
	}()
	timer := time.NewTimer(idle)
	defer timer.Stop()
	select {
	case x := <-done:
		return x.code, collected.Bytes(), x.err
	case <-ctx.Done():
		r.broken = fmt.Errorf("%s: a command was cancelled mid-way; reconnect", r.name)
		r.sess.Close()
		return -1, nil, ctx.Err()
	case <-timer.C:
		r.broken = fmt.Errorf("%s: the shell stopped answering", r.name)
		r.sess.Close()
		return -1, nil, fmt.Errorf("no answer within %s", idle)
	}
}

// send writes a command line followed by the status marker.
func (r *PTYRemote) send(script string) error {
	_, err := io.WriteString(r.in, "{ "+script+"\n} 2>&1; echo __SCOPECTL_'"+r.nonce+"'_DONE_$?__\n")
	return err
}

type ptyResult struct {
	code int
	out  []byte
}

// run executes a shell command and collects its output.
func (r *PTYRemote) run(ctx context.Context, script string) (ptyResult, error) {
	if r.broken != nil {
		return ptyResult{}, r.broken
	}
	if err := r.send(script); err != nil {
		return ptyResult{}, err
	}
	code, out, err := r.readUntilMarker(ctx, nil, 5*time.Minute)
	return ptyResult{code, out}, err
}

func (r *PTYRemote) List(ctx context.Context) ([]remote.Entry, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	res, err := r.run(ctx, "(cd -- "+shq(r.execDir())+" && for f in * .[!.]*; do [ -f \"$f\" ] && [ ! -L \"$f\" ] && printf '%s %s\\n' \"$(wc -c < \"$f\")\" \"$f\"; done; true)")
	if err != nil {
		return nil, err
	}
	if res.code != 0 {
		return nil, fmt.Errorf("%s: listing failed: %s", r.name, strings.TrimSpace(string(res.out)))
	}
	var out []remote.Entry
	for _, ln := range strings.Split(string(res.out), "\n") {
		sizeS, name, ok := strings.Cut(strings.TrimSpace(ln), " ")
		if !ok {
			continue
		}
		size, err := strconv.ParseInt(strings.TrimSpace(sizeS), 10, 64)
		if err != nil || remote.CheckName(name) != nil || remote.IsTemp(name) {
			continue
		}
		out = append(out, remote.Entry{Name: name, Size: size})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (r *PTYRemote) size(ctx context.Context, p string) (int64, error) {
	res, err := r.run(ctx, "if [ -f "+shq(p)+" ]; then wc -c < "+shq(p)+"; else echo -1; fi")
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(res.out)), 10, 64)
}

func (r *PTYRemote) hash(ctx context.Context, p string) (string, error) {
	res, err := r.run(ctx, "sha256sum -- "+shq(p)+" 2>/dev/null || shasum -a 256 -- "+shq(p))
	if err != nil {
		return "", err
	}
	f := strings.Fields(string(res.out))
	if res.code != 0 || len(f) == 0 || len(f[0]) != 64 {
		return "", fmt.Errorf("%s: no sha256sum on the far side: %s", r.name, strings.TrimSpace(string(res.out)))
	}
	return f[0], nil
}

func (r *PTYRemote) Put(ctx context.Context, name string, src remote.Source, opt remote.PutOptions) (remote.PutResult, error) {
	var pr remote.PutResult
	if err := remote.CheckName(name); err != nil {
		return pr, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	tmp := r.path(remote.TempName(name, src.SHA256))
	have, err := r.size(ctx, tmp)
	if err != nil {
		return pr, err
	}
	if have < 0 || have > src.Size {
		if _, err := r.run(ctx, ": > "+shq(tmp)); err != nil {
			return pr, err
		}
		have = 0
	}
	pr.Resumed = have
	buf := make([]byte, ptyChunk)
	enc := make([]byte, base64.StdEncoding.EncodedLen(ptyChunk)+ptyChunk/57+16)
	for off := have; off < src.Size; {
		n := int64(len(buf))
		if rem := src.Size - off; rem < n {
			n = rem
		}
		if _, err := src.R.ReadAt(buf[:n], off); err != nil && !(errors.Is(err, io.EOF) && n > 0) {
			return pr, err
		}
		// base64 lines of 76 characters, as base64(1) writes them.
		var w bytes.Buffer
		w.Grow(len(enc))
		w.WriteString("base64 -d >> " + shq(tmp) + " <<'__SCOPECTL_EOF__'\n")
		for i := int64(0); i < n; i += 57 {
			j := min(i+57, n)
			w.WriteString(base64.StdEncoding.EncodeToString(buf[i:j]))
			w.WriteByte('\n')
		}
		w.WriteString("__SCOPECTL_EOF__")
		if err := r.send(w.String()); err != nil {
			return pr, err
		}
		code, out, err := r.readUntilMarker(ctx, nil, 2*time.Minute)
		if err != nil {
			return pr, err
		}
		if code != 0 {
			return pr, fmt.Errorf("%s: writing %s failed: %s", r.name, name, strings.TrimSpace(string(out)))
		}
		off += n
		pr.Sent += n
		if opt.Progress != nil {
			opt.Progress.Write(buf[:n])
		}
	}
	got, err := r.hash(ctx, tmp)
	if err != nil {
		return pr, err
	}
	if got != src.SHA256 {
		r.run(ctx, "rm -f -- "+shq(tmp))
		return pr, fmt.Errorf("%s: %w: the far side has %s, expected %s", name, remote.ErrHashMismatch, got, src.SHA256)
	}
	res, err := r.run(ctx, "[ ! -d "+shq(r.path(name))+" ] && mv -f -- "+shq(tmp)+" "+shq(r.path(name))+" && sync")
	if err != nil {
		return pr, err
	}
	if res.code != 0 {
		return pr, fmt.Errorf("%s: publishing %s failed: %s", r.name, name, strings.TrimSpace(string(res.out)))
	}
	return pr, nil
}

func (r *PTYRemote) Get(ctx context.Context, name string, off int64) (io.ReadCloser, error) {
	if err := remote.CheckName(name); err != nil {
		return nil, err
	}
	r.mu.Lock()
	size, err := r.size(ctx, r.path(name))
	if err != nil {
		r.mu.Unlock()
		return nil, err
	}
	if size < 0 {
		r.mu.Unlock()
		return nil, fmt.Errorf("%s: %w", name, remote.ErrNotFound)
	}
	if err := r.send("tail -c +" + strconv.FormatInt(off+1, 10) + " -- " + shq(r.path(name)) + " | base64"); err != nil {
		r.mu.Unlock()
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() {
		defer r.mu.Unlock()
		h := sha256.New()
		dec := make([]byte, 0, 64)
		code, _, err := r.readUntilMarker(ctx, func(line []byte) error {
			var derr error
			dec = dec[:base64.StdEncoding.DecodedLen(len(line))]
			n, derr := base64.StdEncoding.Decode(dec, line)
			if derr != nil {
				return fmt.Errorf("%s: garbled data from the terminal: %w", r.name, derr)
			}
			h.Write(dec[:n])
			_, werr := pw.Write(dec[:n]) // a reader that closed early: keep draining
			_ = werr
			return nil
		}, 2*time.Minute)
		if err == nil && code != 0 {
			err = fmt.Errorf("%s: reading %s failed", r.name, name)
		}
		pw.CloseWithError(err)
	}()
	return &drainCloser{pr}, nil
}

// drainCloser closes the pipe; the reading goroutine then drains the rest of the output
// (writes to a closed pipe fail fast), keeping the conversation in step.
type drainCloser struct{ *io.PipeReader }

func (d *drainCloser) Close() error { return d.PipeReader.Close() }

func (r *PTYRemote) Delete(ctx context.Context, name string) error {
	if err := remote.CheckName(name); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	res, err := r.run(ctx, "if [ -f "+shq(r.path(name))+" ]; then rm -f -- "+shq(r.path(name))+" && echo deleted; else echo absent; fi")
	if err != nil {
		return err
	}
	switch strings.TrimSpace(string(res.out)) {
	case "deleted":
		return nil
	case "absent":
		return fmt.Errorf("%s: %w", name, remote.ErrNotFound)
	}
	return fmt.Errorf("%s: deleting %s failed: %s", r.name, name, strings.TrimSpace(string(res.out)))
}

// Hash computes a file's sha256 on the far side.
func (r *PTYRemote) Hash(ctx context.Context, name string) (string, error) {
	if err := remote.CheckName(name); err != nil {
		return "", err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if s, err := r.size(ctx, r.path(name)); err != nil {
		return "", err
	} else if s < 0 {
		return "", fmt.Errorf("%s: %w", name, remote.ErrNotFound)
	}
	return r.hash(ctx, r.path(name))
}

// Run runs a sh script through the terminal (remote.Runner).
func (r *PTYRemote) Run(ctx context.Context, script string) (string, int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	res, err := r.run(ctx, script)
	return string(res.out), res.code, err
}
