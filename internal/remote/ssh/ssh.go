// Package ssh is the ssh://user@host:port/path remote: a folder on a machine reached over
// SSH, such as a RunPod pod's /workspace/models/lora. It moves files with SFTP when the
// server offers that subsystem and with plain POSIX sh commands over exec otherwise
// (cat, sha256sum, mv -f, find/stat), verifies every upload's sha256 on the far side, and
// publishes with an atomic rename, resuming interrupted uploads.
//
// Connection settings follow OpenSSH: Host aliases of ~/.ssh/config (HostName, Port, User,
// IdentityFile, IdentitiesOnly), keys from ssh-agent first and then identity files, and
// host keys checked against known_hosts (unknown keys refused unless
// Env.AcceptNewHostKey, changed keys always refused).
//
// The URL path is the folder: ssh://root@pod:22/workspace/models/lora is absolute;
// ssh://pod/~/loras is relative to the login directory; ssh://pod is the login directory.
package ssh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/user"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kevinburke/ssh_config"
	"github.com/pkg/sftp"
	xssh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/daydreamlive/scopectl/internal/remote"
)

func init() {
	remote.Register("ssh", func(ctx context.Context, u *url.URL, env remote.Env) (remote.Remote, error) {
		return Open(ctx, u, env)
	})
}

// Tunables; tests shorten them.
var (
	// connectTimeout bounds TCP connect plus SSH handshake and authentication.
	connectTimeout = 20 * time.Second
	// A keepalive@openssh.com request goes out every keepaliveInterval; a connection
	// whose peer has not answered one within keepaliveInterval*keepaliveCountMax is
	// closed, so that a stalled peer fails every operation instead of hanging it.
	keepaliveInterval = 15 * time.Second
	keepaliveCountMax = 3
	// sftpConcurrency is the number of 32 KiB SFTP write/read requests in flight per
	// file: 2 MiB, four times the bandwidth-delay product of a 100 Mbit/s, 40 ms link
	// and equal to OpenSSH's channel window.
	sftpConcurrency = 64
	// maxIdleSFTP SFTP sessions are kept open between operations.
	maxIdleSFTP = 4
)

// Remote is a folder on an SSH server.
type Remote struct {
	name   string // String(): ssh://user@host:port/path
	addr   string // host:port dialled
	client *xssh.Client
	dir    string // the folder: absolute, or relative ("." is the login directory)

	useSFTP bool        // the server offers the sftp subsystem
	noExec  atomic.Bool // exec of sh commands found unusable (sftp-only account)

	noCompress bool      // Options["compress"] = off
	gzipOnce   sync.Once // asks once whether the server has gzip
	hasGzip    bool

	mu     sync.Mutex
	idle   []*sftpConn
	closed bool

	dead      atomic.Pointer[error] // why the connection is gone, once it is
	done      chan struct{}
	closeOnce sync.Once
}

// target is where and as whom to connect, after ~/.ssh/config.
type target struct {
	alias          string // host as written in the URL
	host           string // HostName
	port           int
	user           string
	identityFiles  []string // from ~/.ssh/config; empty means the defaults
	identitiesOnly bool
}

// Open connects to the server named by an ssh:// URL and opens (creating) the folder.
func Open(ctx context.Context, u *url.URL, env remote.Env) (*Remote, error) {
	if u.User != nil {
		if _, has := u.User.Password(); has {
			return nil, fmt.Errorf("%s: passwords in ssh URLs are not supported; use a key (ssh-agent or ~/.ssh/id_*)", remote.Redact(u.String()))
		}
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("ssh://%s%s: ssh URLs take no ?query or #fragment", u.Host, u.Path)
	}
	home := homeDir()
	t, err := resolve(u, home)
	if err != nil {
		return nil, err
	}
	r := &Remote{
		addr: net.JoinHostPort(t.host, strconv.Itoa(t.port)),
		dir:  folder(u.Path),
		done: make(chan struct{}),
	}
	r.name = "ssh://" + t.user + "@" + net.JoinHostPort(t.alias, strconv.Itoa(t.port)) + u.Path
	timeout := connectTimeout
	if s := env.Options["connect-timeout"]; s != "" {
		if timeout, err = time.ParseDuration(s); err != nil || timeout <= 0 {
			return nil, fmt.Errorf("%s: bad connect-timeout %q (want a duration such as 20s)", r.name, s)
		}
	}
	switch c := strings.ToLower(env.Options["compress"]); c {
	case "", "auto", "on", "true":
	case "off", "false", "no":
		r.noCompress = true
	default:
		return nil, fmt.Errorf("%s: bad compress option %q (want auto or off)", r.name, c)
	}
	knownHosts := env.KnownHosts
	if knownHosts == "" {
		knownHosts = filepath.Join(home, ".ssh", "known_hosts")
	}
	r.client, err = dial(ctx, r.name, r.addr, t, home, knownHosts, env.AcceptNewHostKey, timeout)
	if err != nil {
		return nil, err
	}
	go func() {
		err := r.client.Wait()
		r.markDead(fmt.Errorf("connection to %s closed (%v)", r.addr, err))
	}()
	go r.keepalive(keepaliveInterval, keepaliveCountMax)

	if err := r.setup(ctx); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// setup picks SFTP or exec and creates the folder.
func (r *Remote) setup(ctx context.Context) error {
	c, sErr := r.newSFTP(ctx)
	if sErr == nil {
		r.useSFTP = true
		stop := context.AfterFunc(ctx, c.close)
		if r.dir != "." && r.dir != "/" {
			if err := c.MkdirAll(r.dir); err != nil {
				if stop() {
					c.close()
				}
				return r.fail(ctx, "mkdir "+r.dir, err)
			}
		}
		if stop() {
			r.release(c, true)
		}
		return ctx.Err()
	}
	if ctx.Err() != nil || r.dead.Load() != nil {
		return r.fail(ctx, "sftp", sErr)
	}
	// No SFTP subsystem: plain exec of POSIX sh commands.
	res, err := r.run(ctx, "mkdir -p "+shq(r.execDir()), nil)
	if errors.Is(err, errNoShell) {
		return fmt.Errorf("%s: the server offers neither SFTP nor sh commands over exec (sftp: %v; exec: %v); if it only grants an interactive terminal (like ssh.runpod.io), use ssh+pty://", r, sErr, err)
	}
	if err == nil && res.code != 0 {
		err = scriptError("mkdir -p", res)
	}
	return r.fail(ctx, "mkdir -p "+r.dir, err)
}

func (r *Remote) String() string { return r.name }

// Close ends the connection. Operations still running fail.
func (r *Remote) Close() error {
	r.closeOnce.Do(func() {
		r.markDead(errors.New("remote closed"))
		close(r.done)
		r.mu.Lock()
		r.closed = true
		idle := r.idle
		r.idle = nil
		r.mu.Unlock()
		for _, c := range idle {
			c.close()
		}
		r.client.Close()
	})
	return nil
}

func (r *Remote) markDead(err error) { r.dead.CompareAndSwap(nil, &err) }

// fail words an operation's error, preferring the real cause: a cancelled context or a
// lost connection.
func (r *Remote) fail(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%s: %s: %w", r, op, ctx.Err())
	}
	if d := r.dead.Load(); d != nil {
		return fmt.Errorf("%s: %s: %w", r, op, *d)
	}
	return fmt.Errorf("%s: %s: %w", r, op, err)
}

// keepalive closes the connection when the peer stops answering.
func (r *Remote) keepalive(interval time.Duration, countMax int) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-r.done:
			return
		case <-tick.C:
		}
		reply := make(chan error, 1)
		go func() {
			// OpenSSH answers with a failure to this unknown request; any answer will do.
			_, _, err := r.client.SendRequest("keepalive@openssh.com", true, nil)
			reply <- err
		}()
		wait := interval * time.Duration(countMax)
		timer := time.NewTimer(wait)
		select {
		case <-r.done:
			timer.Stop()
			return
		case err := <-reply:
			timer.Stop()
			if err != nil {
				return // the connection is gone; Wait reports it
			}
		case <-timer.C:
			r.markDead(fmt.Errorf("connection to %s stalled: no answer to a keepalive within %s", r.addr, wait))
			r.client.Close()
			return
		}
	}
}

// homeDir is $HOME (so that tests can isolate it), else the account's home.
func homeDir() string {
	if h := os.Getenv("HOME"); h != "" {
		return h
	}
	if h, err := os.UserHomeDir(); err == nil {
		return h
	}
	return "/"
}

func localUser() string {
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return "root"
}

// folder maps the URL path to the remote folder: "" and "/~" are the login directory,
// "/~/x" is x relative to it, anything else is absolute.
func folder(p string) string {
	switch {
	case p == "" || p == "/~" || p == "/~/":
		return "."
	case strings.HasPrefix(p, "/~/"):
		return path.Clean(p[3:])
	default:
		return path.Clean(p)
	}
}

// resolve applies ~/.ssh/config to the URL.
func resolve(u *url.URL, home string) (target, error) {
	t := target{alias: u.Hostname()}
	if t.alias == "" {
		return t, fmt.Errorf("ssh://%s: the URL names no host (ssh://user@host:port/path)", u.Host)
	}
	var cfg *ssh_config.Config
	cfgPath := filepath.Join(home, ".ssh", "config")
	if f, err := os.Open(cfgPath); err == nil {
		cfg, err = ssh_config.Decode(f)
		f.Close()
		if err != nil {
			return t, fmt.Errorf("%s: %v", cfgPath, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return t, err
	}
	get := func(key string) string {
		if cfg == nil {
			return ""
		}
		v, _ := cfg.Get(t.alias, key)
		return strings.TrimSpace(v)
	}
	t.host = t.alias
	if h := get("HostName"); h != "" {
		t.host = strings.ReplaceAll(h, "%h", t.alias)
	}
	t.user = u.User.Username()
	if t.user == "" {
		t.user = get("User")
	}
	if t.user == "" {
		t.user = localUser()
	}
	port := u.Port()
	if port == "" {
		port = get("Port")
	}
	if port == "" {
		port = "22"
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return t, fmt.Errorf("ssh://%s: bad port %q", u.Host, port)
	}
	t.port = p
	t.identitiesOnly = strings.EqualFold(get("IdentitiesOnly"), "yes")
	if cfg != nil {
		ids, _ := cfg.GetAll(t.alias, "IdentityFile")
		for _, id := range ids {
			id = strings.Trim(strings.TrimSpace(id), `"`)
			if id == "" || strings.EqualFold(id, "none") {
				continue
			}
			t.identityFiles = append(t.identityFiles, expandPath(id, home, t))
		}
	}
	return t, nil
}

// expandPath expands ~ and the tokens OpenSSH allows in IdentityFile.
func expandPath(p, home string, t target) string {
	if p == "~" {
		p = home
	} else if strings.HasPrefix(p, "~/") {
		p = filepath.Join(home, p[2:])
	}
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] != '%' || i+1 == len(p) {
			b.WriteByte(p[i])
			continue
		}
		i++
		switch p[i] {
		case 'd':
			b.WriteString(home)
		case 'h':
			b.WriteString(t.host)
		case 'n':
			b.WriteString(t.alias)
		case 'p':
			b.WriteString(strconv.Itoa(t.port))
		case 'r':
			b.WriteString(t.user)
		case 'u':
			b.WriteString(localUser())
		case '%':
			b.WriteByte('%')
		default:
			b.WriteByte('%')
			b.WriteByte(p[i])
		}
	}
	return b.String()
}

// auth gathers keys: the agent's first, then identity files.
type auth struct {
	signers []xssh.Signer
	tried   []string // where keys came from, for messages
	notes   []string // keys that could not be used and why
	agent   net.Conn
}

func loadAuth(t target, home string, timeout time.Duration) *auth {
	a := &auth{}
	seen := map[string]bool{}
	var agentKeys []xssh.Signer
	if sock := os.Getenv("SSH_AUTH_SOCK"); sock != "" {
		conn, err := net.DialTimeout("unix", sock, timeout)
		if err != nil {
			a.notes = append(a.notes, fmt.Sprintf("ssh-agent at SSH_AUTH_SOCK=%s unreachable (%v)", sock, err))
		} else {
			conn.SetDeadline(time.Now().Add(timeout))
			a.agent = conn
			ss, err := agent.NewClient(conn).Signers()
			if err != nil {
				a.notes = append(a.notes, fmt.Sprintf("ssh-agent: %v", err))
			}
			agentKeys = ss
			for _, s := range ss {
				seen[string(s.PublicKey().Marshal())] = true
			}
		}
	}
	files := t.identityFiles
	explicit := len(files) > 0
	if !explicit {
		for _, n := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
			files = append(files, filepath.Join(home, ".ssh", n))
		}
	}
	wanted := map[string]bool{} // public keys of the identity files, for IdentitiesOnly
	var fileKeys []xssh.Signer
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			if explicit || !errors.Is(err, os.ErrNotExist) {
				a.notes = append(a.notes, fmt.Sprintf("IdentityFile %s: %v", f, err))
			}
			continue
		}
		s, err := xssh.ParsePrivateKey(b)
		var pm *xssh.PassphraseMissingError
		switch {
		case errors.As(err, &pm):
			pub := pm.PublicKey
			if pub == nil {
				pub = readPub(f + ".pub")
			}
			if pub != nil {
				wanted[string(pub.Marshal())] = true
				if seen[string(pub.Marshal())] {
					continue // the agent holds it
				}
			}
			a.notes = append(a.notes, fmt.Sprintf("%s is passphrase-protected and not in ssh-agent; skipped (load it with: ssh-add %s)", f, f))
		case err != nil:
			a.notes = append(a.notes, fmt.Sprintf("%s: %v", f, err))
		default:
			k := string(s.PublicKey().Marshal())
			wanted[k] = true
			if !seen[k] {
				seen[k] = true
				fileKeys = append(fileKeys, s)
				a.tried = append(a.tried, f)
			}
		}
	}
	if t.identitiesOnly {
		var keep []xssh.Signer
		for _, s := range agentKeys {
			if wanted[string(s.PublicKey().Marshal())] {
				keep = append(keep, s)
			}
		}
		agentKeys = keep
	}
	if len(agentKeys) > 0 {
		a.tried = append([]string{fmt.Sprintf("%d ssh-agent key(s)", len(agentKeys))}, a.tried...)
	}
	a.signers = append(agentKeys, fileKeys...)
	return a
}

func readPub(p string) xssh.PublicKey {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil
	}
	k, _, _, _, err := xssh.ParseAuthorizedKey(b)
	if err != nil {
		return nil
	}
	return k
}

func (a *auth) describe() string {
	var s string
	if len(a.tried) == 0 {
		s = "no key to offer (no ssh-agent keys, no ~/.ssh/id_ed25519, id_ecdsa or id_rsa)"
	} else {
		s = "tried " + strings.Join(a.tried, ", ")
	}
	if len(a.notes) > 0 {
		s += "; " + strings.Join(a.notes, "; ")
	}
	return s
}

// dial connects, checks the host key and authenticates, all within timeout.
func dial(ctx context.Context, name, addr string, t target, home, knownHosts string, acceptNew bool, timeout time.Duration) (*xssh.Client, error) {
	deadline := time.Now().Add(timeout)
	a := loadAuth(t, home, timeout)
	if a.agent != nil {
		defer a.agent.Close()
	}
	if len(a.signers) == 0 {
		return nil, fmt.Errorf("%s: no usable SSH key: %s", name, a.describe())
	}
	hk, err := newHostKeys(knownHosts, acceptNew)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	cfg := &xssh.ClientConfig{
		User:              t.user,
		Auth:              []xssh.AuthMethod{xssh.PublicKeysCallback(func() ([]xssh.Signer, error) { return a.signers, nil })},
		HostKeyCallback:   hk.callback,
		HostKeyAlgorithms: hk.algorithms(addr),
	}

	dctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	d := net.Dialer{KeepAlive: 30 * time.Second}
	conn, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s: %w", name, ctx.Err())
		}
		if dctx.Err() != nil {
			return nil, fmt.Errorf("%s: connect to %s: no answer within %s", name, addr, timeout)
		}
		return nil, fmt.Errorf("%s: connect to %s: %w", name, addr, err)
	}
	conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	c, chans, reqs, err := xssh.NewClientConn(conn, addr, cfg)
	cancelled := !stop()
	if err == nil && cancelled {
		c.Close()
		err = ctx.Err()
	}
	if err != nil {
		conn.Close()
		switch {
		case hk.err != nil:
			return nil, fmt.Errorf("%s: %w", name, hk.err)
		case cancelled || ctx.Err() != nil:
			return nil, fmt.Errorf("%s: %w", name, ctx.Err())
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil, fmt.Errorf("%s: timeout: no SSH handshake with %s within %s (the server accepted the connection but does not answer; stalled, or not an SSH server)", name, addr, timeout)
		case strings.Contains(err.Error(), "unable to authenticate"):
			return nil, fmt.Errorf("%s: the server accepted none of our keys as user %q: %s", name, t.user, a.describe())
		case strings.Contains(err.Error(), "Too many authentication failures"):
			return nil, fmt.Errorf("%s: the server gave up after too many keys as user %q (%s); name the right key for this host with IdentityFile and IdentitiesOnly yes in ~/.ssh/config", name, t.user, a.describe())
		case strings.Contains(err.Error(), "no common algorithm for host key"):
			return nil, fmt.Errorf("%s: %w: the server offers no host key of the type(s) %s lists for %s (%v); refusing", name, ErrHostKeyChanged, knownHosts, knownHostsName(addr), err)
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	conn.SetDeadline(time.Time{})
	return xssh.NewClient(c, chans, reqs), nil
}

// sftpConn is an SFTP client on its own session, so that cancelling one operation
// closes that session only.
type sftpConn struct {
	*sftp.Client
	s *xssh.Session
}

func (c *sftpConn) close() {
	c.s.Close()
	go c.Client.Close() // waits for the server's close; must not hold up the caller
}

func (r *Remote) newSFTP(ctx context.Context) (*sftpConn, error) {
	s, err := r.client.NewSession()
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	w, err := s.StdinPipe()
	if err != nil {
		s.Close()
		return nil, err
	}
	rd, err := s.StdoutPipe()
	if err != nil {
		s.Close()
		return nil, err
	}
	if err := s.RequestSubsystem("sftp"); err != nil {
		s.Close()
		return nil, err
	}
	c, err := sftp.NewClientPipe(rd, w,
		sftp.UseConcurrentWrites(true),
		sftp.UseConcurrentReads(true),
		sftp.MaxConcurrentRequestsPerFile(sftpConcurrency),
	)
	if err != nil {
		s.Close()
		return nil, err
	}
	return &sftpConn{Client: c, s: s}, nil
}

// acquire returns an idle SFTP session or opens one. It is closed if ctx is cancelled
// before release.
func (r *Remote) acquire(ctx context.Context) (*sftpConn, func(keep bool), error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, r.fail(ctx, "sftp", err)
	}
	r.mu.Lock()
	var c *sftpConn
	if n := len(r.idle); n > 0 {
		c = r.idle[n-1]
		r.idle = r.idle[:n-1]
	}
	r.mu.Unlock()
	if c == nil {
		var err error
		if c, err = r.newSFTP(ctx); err != nil {
			return nil, nil, r.fail(ctx, "sftp session", err)
		}
	}
	stop := context.AfterFunc(ctx, c.close)
	return c, func(keep bool) {
		if stop() {
			r.release(c, keep)
		}
	}, nil
}

func (r *Remote) release(c *sftpConn, keep bool) {
	r.mu.Lock()
	if keep && !r.closed && len(r.idle) < maxIdleSFTP && r.dead.Load() == nil {
		r.idle = append(r.idle, c)
		c = nil
	}
	r.mu.Unlock()
	if c != nil {
		c.close()
	}
}

// limitedBuffer keeps the first bytes written (for error messages) and drops the rest.
type limitedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := 2048 - l.b.Len(); room > 0 {
		l.b.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.TrimSpace(l.b.String())
}
