package ssh

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"

	xssh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

var (
	// ErrUnknownHostKey: the server's host key is not in known_hosts (and
	// Env.AcceptNewHostKey was not set).
	ErrUnknownHostKey = errors.New("unknown ssh host key")
	// ErrHostKeyChanged: known_hosts holds another key for the server. Always refused.
	ErrHostKeyChanged = errors.New("ssh host key changed")
)

// HostKeyError tells why a server's host key was refused. It unwraps to
// ErrUnknownHostKey or ErrHostKeyChanged.
type HostKeyError struct {
	Host        string   // as known_hosts names it: host, or [host]:port
	KeyType     string   // e.g. ssh-ed25519
	Fingerprint string   // SHA256:…, as ssh-keygen -lf prints it
	KnownHosts  string   // the file consulted
	Changed     bool     // known_hosts holds other keys for Host
	Known       []string // file:line of those keys
}

func (e *HostKeyError) Error() string {
	if e.Changed {
		return fmt.Sprintf("HOST KEY OF %s HAS CHANGED: the server now shows %s key %s but %s holds another key for it; "+
			"this may be a man-in-the-middle attack, so nothing was sent (--accept-new-host-key never replaces a known key). "+
			"If the server was really reinstalled, remove the old key with: ssh-keygen -R %s -f %s",
			e.Host, e.KeyType, e.Fingerprint, strings.Join(e.Known, ", "), shq(e.Host), shq(e.KnownHosts))
	}
	return fmt.Sprintf("host key of %s is unknown (%s key %s); if that fingerprint is the server's "+
		"(ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub on it), rerun with --accept-new-host-key to add it to %s",
		e.Host, e.KeyType, e.Fingerprint, e.KnownHosts)
}

func (e *HostKeyError) Unwrap() error {
	if e.Changed {
		return ErrHostKeyChanged
	}
	return ErrUnknownHostKey
}

// hostKeys checks server keys against one known_hosts file, like OpenSSH with
// StrictHostKeyChecking=yes, or =accept-new when acceptNew.
type hostKeys struct {
	file      string
	acceptNew bool
	db        xssh.HostKeyCallback // nil while the file does not exist
	err       error                // the refusal, so that it is not lost in the handshake's words
}

var writeMu sync.Mutex // serialises appends to known_hosts within this process

func newHostKeys(file string, acceptNew bool) (*hostKeys, error) {
	h := &hostKeys{file: file, acceptNew: acceptNew}
	if _, err := os.Stat(file); err == nil {
		db, err := knownhosts.New(file)
		if err != nil {
			return nil, fmt.Errorf("known_hosts: %v", err)
		}
		h.db = db
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("known_hosts: %v", err)
	}
	return h, nil
}

func (h *hostKeys) check(hostname string, addr net.Addr, key xssh.PublicKey) error {
	if h.db == nil {
		return &knownhosts.KeyError{}
	}
	return h.db(hostname, addr, key)
}

func (h *hostKeys) callback(hostname string, addr net.Addr, key xssh.PublicKey) error {
	err := h.check(hostname, addr, key)
	if err == nil {
		return nil
	}
	var ke *knownhosts.KeyError
	var re *knownhosts.RevokedError
	e := &HostKeyError{Host: knownHostsName(hostname), KeyType: key.Type(), Fingerprint: xssh.FingerprintSHA256(key), KnownHosts: h.file}
	switch {
	case errors.As(err, &re):
		h.err = fmt.Errorf("host key of %s (%s %s) is marked @revoked in %s:%d; refusing", e.Host, e.KeyType, e.Fingerprint, re.Revoked.Filename, re.Revoked.Line)
	case errors.As(err, &ke) && len(ke.Want) == 0:
		if !h.acceptNew {
			h.err = e
			break
		}
		if err := h.add(hostname, key); err != nil {
			h.err = fmt.Errorf("adding the host key of %s to %s: %v", e.Host, h.file, err)
			break
		}
		return nil
	case errors.As(err, &ke):
		e.Changed = true
		for _, k := range ke.Want {
			e.Known = append(e.Known, fmt.Sprintf("%s:%d", k.Filename, k.Line))
		}
		h.err = e
	default:
		h.err = fmt.Errorf("checking the host key of %s: %v", e.Host, err)
	}
	return h.err
}

// add appends the key to known_hosts, creating the file (and its folder) if needed.
func (h *hostKeys) add(hostname string, key xssh.PublicKey) error {
	writeMu.Lock()
	defer writeMu.Unlock()
	if err := os.MkdirAll(filepath.Dir(h.file), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(h.file, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	line := knownhosts.Line([]string{knownhosts.Normalize(hostname)}, key) + "\n"
	if st, err := f.Stat(); err == nil && st.Size() > 0 {
		last := make([]byte, 1)
		if _, err := f.ReadAt(last, st.Size()-1); err != nil && err != io.EOF {
			return err
		}
		if last[0] != '\n' {
			line = "\n" + line
		}
	}
	if _, err := f.WriteString(line); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}

var probeKey, _ = xssh.NewPublicKey(ed25519.PublicKey(make([]byte, ed25519.PublicKeySize)))

// algorithms restricts the host key algorithms to the types known_hosts holds for addr,
// as OpenSSH does, so that a server that also has another type of key is not taken for
// one whose key changed. nil (the defaults) when none is known.
func (h *hostKeys) algorithms(addr string) []string {
	var ke *knownhosts.KeyError
	if err := h.check(addr, &net.TCPAddr{IP: net.IPv4zero}, probeKey); !errors.As(err, &ke) {
		return nil
	}
	var out []string
	seen := map[string]bool{}
	for _, k := range ke.Want {
		algos := []string{k.Key.Type()}
		if k.Key.Type() == xssh.KeyAlgoRSA {
			algos = []string{xssh.KeyAlgoRSASHA512, xssh.KeyAlgoRSASHA256, xssh.KeyAlgoRSA}
		}
		for _, a := range algos {
			if !seen[a] {
				seen[a] = true
				out = append(out, a)
			}
		}
	}
	return out
}

// knownHostsName is how known_hosts names host:port: host for port 22, else [host]:port.
func knownHostsName(addr string) string { return knownhosts.Normalize(addr) }
