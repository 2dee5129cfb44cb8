// Package croc is the croc:// remote: it moves one file at a time between this machine
// and a peer running the plain croc v10 CLI (https://github.com/schollz/croc), through a
// croc relay, the way users do by hand with `croc send` on one side and
// `CROC_SECRET=… croc --yes --overwrite` on the other.
//
// Configuration (remote.Env):
//
//	Lookup("croc_secret")     the code phrase (at least 6 bytes; croc derives the relay
//	                          room from its first 4 bytes and the PAKE password from
//	                          the bytes after the 5th, so byte 5 does not matter)
//	Options["relay"]          relay host[:port] (default croc.schollz.com:9009, croc's
//	                          public relay); a croc://HOST[:PORT] URL names it as well
//	Options["relay_pass"]     relay password (default croc's "pass123")
//	Options["wait"]           how long to wait for the peer to show up (default 10m)
//	Options["parallel"]       Put: relay transfer connections to use (default: all the
//	                          relay offers, 4 on the public relay)
//
// The code phrase is revealed only to derive the room name and the PAKE password in
// this process. It never reaches a command line, a log, an error or String(); it is
// registered with env.Secrets so that any text scopectl prints is scrubbed of it too.
//
// croc is one-shot and peer-to-peer, and this remote is honest about it:
//
//   - Put(name) offers exactly one file, named name, to a peer that waits with
//     `croc --yes --overwrite` (croc v10). The peer decides where it lands: its working
//     directory. A croc receive takes one transfer and exits, so every Put needs the
//     peer to run croc again (e.g. in a loop). The peer's croc writes straight to the
//     final name while receiving (it creates the file, truncates it to the full size up
//     front and fills chunks in as they arrive, without fsync), so unlike other remotes
//     a Put is NOT atomic on the peer: a file read mid-transfer, or left by an
//     interrupted one, has the full size with zero-filled holes. A later Put of the
//     same name to a `croc --overwrite` receiver sends only the all-zero chunks (and
//     nothing if the file already hashes right); PutResult.Resumed counts the rest.
//     What Put verifies: the source against src.SHA256 before anything is sent and
//     again while sending (the last chunk is held back until the whole source has
//     hashed right), and croc's own end-to-end check: after the last chunk the
//     receiving croc hashes the file it wrote (xxhash, which Put announces) and only
//     then reports "finished", which Put waits for. (On a mismatch croc asks for the
//     file again; Put gives up after 3 rounds.) Chunks travel AES-GCM encrypted under
//     the PAKE key, so the relay can neither read nor alter them.
//   - Get(name) receives from a peer that runs `croc send NAME` (CROC_SECRET set) and
//     refuses any other offer: more than one file, a folder, a symlink, text, a name
//     that is not a single clean path element (remote.CheckName) or is not name. The
//     bytes go to a temporary file of this process (never under the offered name), are
//     checked against the hash the sender announced (its --hash: xxhash by default;
//     imohash only samples the file), and Get returns once all is there; the reader
//     streams from that file and Close removes it.
//   - List and Delete return ErrNotSupported: croc cannot look at or change the peer's
//     folder.
//
// Either side may start first. (croc CLI to croc CLI, v10.7.0, fails when the receiver
// starts first; see senderHandshake.) Everything goes through the relay: no LAN
// discovery, no local relay, and neither this machine's id nor its paths are sent.
// croc's relay keeps rooms by name and tidies them up asynchronously, so a transfer
// that starts within a moment of an earlier one with the same code phrase can meet
// that one's leftovers; waiting for the peer copes with the common case (see
// nextWithin), but back-to-back transfers are best a few seconds apart.
//
// croc's Go packages are used for the wire format (framing, encryption, compression)
// rather than its Client: croc.Client prints the code phrase to os.Stderr, writes
// received files into the process's working directory, replaces os.Stderr in quiet
// mode, runs a local relay and LAN multicast discovery, and importing src/croc or
// src/tcp runs DNS look-ups of croc's public relay at program start. The protocol
// (proto.go) is croc v10.7.0's (src/croc/croc.go, src/tcp/tcp.go), checked against
// the real croc CLI in this package's tests.
package croc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	log "github.com/schollz/logger"

	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/secret"
)

// Scheme is the URL scheme this package registers.
const Scheme = "croc"

// Credential and option keys read from remote.Env.
const (
	KeySecret    = "croc_secret"
	OptRelay     = "relay"
	OptRelayPass = "relay_pass"
	OptWait      = "wait"
	OptParallel  = "parallel"
)

// Defaults, as the croc CLI has them.
const (
	DefaultRelay         = "croc.schollz.com:9009"
	DefaultRelayPort     = "9009"
	DefaultRelayPassword = "pass123"
	DefaultWait          = 10 * time.Minute
)

var (
	// ErrNotSupported is returned by List and Delete. It matches errors.ErrUnsupported.
	ErrNotSupported = fmt.Errorf("not supported by the croc remote: %w", errors.ErrUnsupported)
	// ErrNoPeer: nobody joined the relay room within the wait.
	ErrNoPeer = errors.New("no croc peer")
	// ErrCodeMismatch: a peer joined the room but the key exchange failed, which is what
	// a different code phrase (with the same first 4 bytes) looks like.
	ErrCodeMismatch = errors.New("croc key exchange failed: the peer's code phrase differs")
	// ErrPeerAborted: the peer stopped the transfer (refused it, was interrupted).
	ErrPeerAborted = errors.New("croc peer stopped the transfer")
)

func init() {
	remote.Register(Scheme, open)
}

// Config is a croc remote's configuration.
type Config struct {
	Relay         string        // host:port of the relay; DefaultRelay when empty
	RelayPassword string        // DefaultRelayPassword when empty
	Secret        secret.Secret // the code phrase
	Wait          time.Duration // how long Put and Get wait for the peer; DefaultWait when 0
	Parallel      int           // Put: transfer connections to use; 0 = all the relay offers
	TempDir       string        // where Get keeps received bytes; os.TempDir() when empty
	// Redactor gets the code phrase registered and scrubs errors; a private one when nil.
	Redactor *secret.Redactor
}

// Remote is a croc peer reached through a relay.
type Remote struct {
	cfg  Config        // cfg.Secret is revealed only where croc's protocol needs it
	busy chan struct{} // one transfer at a time: a code phrase names a single relay room
}

// quiet silences croc's logger (github.com/schollz/logger, used by nothing else in
// scopectl), which writes to stdout at trace level unless told otherwise.
var quiet sync.Once

func silenceLogs() {
	quiet.Do(func() {
		log.SetOutput(io.Discard)
		log.SetLevel("error")
	})
}

// New opens a croc remote.
func New(cfg Config) (*Remote, error) {
	silenceLogs()
	if cfg.Redactor == nil {
		cfg.Redactor = &secret.Redactor{}
	}
	cfg.Redactor.Add(cfg.Secret)
	code := cfg.Secret.Reveal()
	switch {
	case code == "":
		return nil, fmt.Errorf("croc: no code phrase: set %s (CROC_SECRET), the same one the peer's croc gets", KeySecret)
	case len(code) < 6:
		return nil, fmt.Errorf("croc: the code phrase in %s is too short (croc needs at least 6 characters)", KeySecret)
	}
	relay, err := normalizeRelay(cfg.Relay)
	if err != nil {
		return nil, err
	}
	cfg.Relay = relay
	if cfg.RelayPassword == "" {
		cfg.RelayPassword = DefaultRelayPassword
	}
	if cfg.Wait <= 0 {
		cfg.Wait = DefaultWait
	}
	if cfg.Parallel < 0 {
		return nil, fmt.Errorf("croc: parallel must not be negative")
	}
	if cfg.TempDir == "" {
		cfg.TempDir = os.TempDir()
	}
	return &Remote{cfg: cfg, busy: make(chan struct{}, 1)}, nil
}

// open is the remote.Constructor: croc:// or croc://RELAYHOST[:PORT].
func open(_ context.Context, u *url.URL, env remote.Env) (remote.Remote, error) {
	if u.User != nil {
		return nil, errors.New("croc: put the code phrase in the croc_secret setting (CROC_SECRET), not in the URL")
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return nil, fmt.Errorf("croc://%s: a croc URL names at most a relay (croc:// or croc://HOST[:PORT]); the peer decides where files land (its working directory)", u.Host)
	}
	opt := func(k string) string { return strings.TrimSpace(env.Options[k]) }
	cfg := Config{Relay: opt(OptRelay), RelayPassword: opt(OptRelayPass), Redactor: env.Secrets}
	if u.Host != "" {
		if cfg.Relay != "" && !sameRelay(cfg.Relay, u.Host) {
			return nil, fmt.Errorf("croc: the URL names relay %s but --relay says %s", u.Host, cfg.Relay)
		}
		cfg.Relay = u.Host
	}
	if env.Lookup == nil {
		return nil, fmt.Errorf("croc: no credential lookup to find %s", KeySecret)
	}
	cfg.Secret = env.Lookup(KeySecret)
	if v := opt(OptWait); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("croc: wait %q: want a positive duration such as 5m", v)
		}
		cfg.Wait = d
	}
	if v := opt(OptParallel); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("croc: parallel %q: want a positive number", v)
		}
		cfg.Parallel = n
	}
	return New(cfg)
}

func normalizeRelay(s string) (string, error) {
	if s == "" {
		return DefaultRelay, nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		// No port: croc's default.
		host, port = strings.Trim(s, "[]"), DefaultRelayPort
	}
	if host == "" || strings.ContainsAny(host, "/@?# ") {
		return "", fmt.Errorf("croc: relay %q: want host or host:port", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("croc: relay %q: bad port", s)
	}
	return net.JoinHostPort(host, port), nil
}

func sameRelay(a, b string) bool {
	na, err1 := normalizeRelay(a)
	nb, err2 := normalizeRelay(b)
	return err1 == nil && err2 == nil && na == nb
}

// String names the relay, never the code phrase.
func (r *Remote) String() string { return "croc://" + r.cfg.Relay }

// Close releases nothing: every transfer opens and closes its own connections.
func (r *Remote) Close() error { return nil }

// List is not possible with croc: the peer's folder cannot be looked at.
func (r *Remote) List(ctx context.Context) ([]remote.Entry, error) {
	return nil, fmt.Errorf("croc: listing the peer's folder: %w", ErrNotSupported)
}

// Delete is not possible with croc: the peer's folder cannot be changed.
func (r *Remote) Delete(ctx context.Context, name string) error {
	if err := remote.CheckName(name); err != nil {
		return err
	}
	return fmt.Errorf("croc: deleting %s on the peer: %w", name, ErrNotSupported)
}

// Put offers src as name to a peer receiving with croc (see the package comment for
// what that guarantees). PutResult.Resumed counts the bytes the peer already had: it
// asks only for missing chunks of a same-size file under name, and for nothing when that
// file already hashes right.
func (r *Remote) Put(ctx context.Context, name string, src remote.Source, opt remote.PutOptions) (remote.PutResult, error) {
	if err := remote.CheckName(name); err != nil {
		return remote.PutResult{}, err
	}
	if src.Size < 0 || src.R == nil {
		return remote.PutResult{}, fmt.Errorf("croc: %s: no content", name)
	}
	xx, err := checkSource(ctx, src)
	if err != nil {
		return remote.PutResult{}, r.scrub(fmt.Errorf("%s: %w", name, err))
	}
	if err := r.acquire(ctx); err != nil {
		return remote.PutResult{}, err
	}
	defer r.release()
	s, err := r.join(ctx, fmt.Errorf("%w within %s on relay %s: run `croc --yes --overwrite%s` in the destination folder on the other machine, with the same CROC_SECRET",
		ErrNoPeer, r.cfg.Wait, r.cfg.Relay, r.relayFlags()))
	if err != nil {
		return remote.PutResult{}, r.scrub(err)
	}
	defer s.close()
	res, err := s.send(name, src, xx, opt)
	if err != nil {
		return res, r.scrub(fmt.Errorf("croc: sending %s: %w", name, err))
	}
	return res, nil
}

// Get receives name from a peer sending it with `croc send` and streams it from byte
// off. The bytes are verified against the sender's hash before Get returns.
func (r *Remote) Get(ctx context.Context, name string, off int64) (io.ReadCloser, error) {
	if err := remote.CheckName(name); err != nil {
		return nil, err
	}
	if off < 0 {
		return nil, fmt.Errorf("croc: %s: negative offset", name)
	}
	if err := r.acquire(ctx); err != nil {
		return nil, err
	}
	defer r.release()
	s, err := r.join(ctx, fmt.Errorf("%w within %s on relay %s: run `croc%s send %s` on the other machine, with the same CROC_SECRET",
		ErrNoPeer, r.cfg.Wait, r.cfg.Relay, r.relayFlags(), name))
	if err != nil {
		return nil, r.scrub(err)
	}
	defer s.close()
	f, err := s.receive(name)
	if err != nil {
		return nil, r.scrub(fmt.Errorf("croc: receiving %s: %w", name, err))
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// relayFlags is what the peer's croc command line needs to reach the same relay.
func (r *Remote) relayFlags() string {
	var b strings.Builder
	if r.cfg.Relay != DefaultRelay {
		b.WriteString(" --relay " + r.cfg.Relay)
	}
	if r.cfg.RelayPassword != DefaultRelayPassword {
		b.WriteString(" --pass …")
	}
	return b.String()
}

func (r *Remote) acquire(ctx context.Context) error {
	select {
	case r.busy <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *Remote) release() { <-r.busy }

// scrub makes sure no error text carries the code phrase (none of ours does; this
// guards library messages).
func (r *Remote) scrub(err error) error {
	if err == nil {
		return nil
	}
	if strings.Contains(err.Error(), r.cfg.Secret.Reveal()) {
		return r.cfg.Redactor.Error(err)
	}
	return err
}

// tempFile is the received content; Close removes it.
type tempFile struct {
	*os.File
}

func (t tempFile) Close() error {
	err := t.File.Close()
	if rerr := os.Remove(t.File.Name()); err == nil && !errors.Is(rerr, os.ErrNotExist) {
		err = rerr
	}
	return err
}
