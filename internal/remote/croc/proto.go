package croc

// The croc v10 wire protocol, as src/croc/croc.go and src/tcp/tcp.go of croc v10.7.0
// speak it, for one file in either direction:
//
//  1. Both peers join the relay's control port: a PAKE with the relay (curve siec, fixed
//     weak key), the relay password and the room name (hex sha256 of the code phrase's
//     first 4 bytes + "croc"), all encrypted under the relay key. The relay answers with
//     its banner (the transfer ports, "9010,9011,…") and the address it sees. While a
//     peer is alone in a room the relay sends it a 1-byte keep-alive (0x01) every second;
//     once both are there it pipes the two connections together.
//  2. The receiver may first ask the sender for its LAN addresses: a PAKE ("pake1"/
//     "pake2" JSON) followed by an encrypted "ips?". It then sends "handshake".
//  3. The receiver sends a "pake" message (its PAKE bytes, its curve); the sender answers
//     with its PAKE bytes and an 8-byte salt. Both derive the session key (pbkdf2 of the
//     PAKE key and the salt); from here on every message is AES-GCM encrypted. Both
//     connect to every transfer port (room name + "-j") and exchange "externalip".
//  4. The sender sends "fileinfo" (the files, their size and hash, the hash algorithm,
//     whether chunks are compressed); the receiver answers "recipientready" with the
//     chunk ranges it wants (none listed = all).
//  5. The sender sends the chunks over the transfer connections: 8-byte little-endian
//     position + up to 32 KiB, optionally flate-compressed, encrypted. When the receiver
//     has them all it sends "close-sender"; the sender answers "close-recipient".
//  6. The receiver hashes the file it wrote; if it matches, it sends "finished" and the
//     sender answers "finished". (If not, it asks again with "recipientready".)

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/klauspost/compress/flate"
	"github.com/schollz/croc/v10/src/comm"
	"github.com/schollz/croc/v10/src/compress"
	"github.com/schollz/croc/v10/src/crypt"
	"github.com/schollz/croc/v10/src/message"
	"github.com/schollz/croc/v10/src/utils"
	"github.com/schollz/pake/v3"

	"github.com/daydreamlive/scopectl/internal/remote"
)

const (
	chunkSize     = 32 << 10 // croc's models.TCP_BUFFER_SIZE/2: chunk size and resume granularity
	curve         = "p256"   // the croc CLI's default --curve
	hashAlgorithm = "xxhash" // the croc CLI's default --hash; what Put announces
)

// Timing; variables so that tests can shorten them.
var (
	relayTimeout = 20 * time.Second        // connecting to the relay and joining a room
	stallTimeout = 2 * time.Minute         // no progress from a peer that has joined
	peekWindow   = 500 * time.Millisecond  // see senderHandshake
	firstPing    = 300 * time.Millisecond  // a peer alone in a room hears the relay at once…
	pairedQuiet  = 1600 * time.Millisecond // …and then every second until a peer joins
	finishWait   = 5 * time.Second         // the peer's last "finished"
)

var (
	// testEvent, when set, hears which way senderHandshake took.
	testEvent func(string)

	handshakeRequest = []byte("handshake")
	ipRequest        = []byte("ips?")
	relayWeakKey     = []byte{1, 2, 3}
	errDone          = errors.New("croc transfer over")
)

// Wire structures; field names and tags are croc's (src/croc/croc.go).
type simpleMessage struct {
	Bytes []byte
	Kind  string
}

type fileInfo struct {
	Name         string      `json:"n,omitempty"`
	FolderRemote string      `json:"fr,omitempty"`
	FolderSource string      `json:"fs,omitempty"`
	Hash         []byte      `json:"h,omitempty"`
	Size         int64       `json:"s,omitempty"`
	ModTime      time.Time   `json:"m,omitempty"`
	IsCompressed bool        `json:"c,omitempty"`
	IsEncrypted  bool        `json:"e,omitempty"`
	Symlink      string      `json:"sy,omitempty"`
	Mode         os.FileMode `json:"md,omitempty"`
	TempFile     bool        `json:"tf,omitempty"`
	IsIgnored    bool        `json:"ig,omitempty"`
}

type senderInfo struct {
	FilesToTransfer        []fileInfo
	EmptyFoldersToTransfer []fileInfo
	TotalNumberFolders     int
	MachineID              string
	Ask                    bool
	SendingText            bool
	NoCompress             bool
	HashAlgorithm          string
	ReconnectVersion       int
	NextReconnectRoom      string
}

type remoteFileRequest struct {
	CurrentFileChunkRanges    []int64
	FilesToTransferCurrentNum int
	MachineID                 string
	ReconnectVersion          int
}

// room is croc's relay room for the code phrase: the sha256 of its first 4 bytes and
// "croc".
func (r *Remote) room() string {
	h := sha256.Sum256([]byte(r.cfg.Secret.Reveal()[:4] + "croc"))
	return hex.EncodeToString(h[:])
}

// pakePassword is the part of the code phrase croc feeds the PAKE: all after byte 5.
func (r *Remote) pakePassword() []byte { return []byte(r.cfg.Secret.Reveal()[5:]) }

func isPing(b []byte) bool { return len(b) == 1 && b[0] == 1 }

// checkSource hashes src once: its sha256 must be src.SHA256 (nothing is sent
// otherwise), and its xxhash is what the receiving croc checks its copy against.
func checkSource(ctx context.Context, src remote.Source) ([]byte, error) {
	sh, xx := sha256.New(), xxhash.New()
	buf := make([]byte, 1<<20)
	for off := int64(0); off < src.Size; {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n := int(min(int64(len(buf)), src.Size-off))
		if err := readFull(src.R, buf[:n], off); err != nil {
			return nil, err
		}
		sh.Write(buf[:n])
		xx.Write(buf[:n])
		off += int64(n)
	}
	if got := hex.EncodeToString(sh.Sum(nil)); got != src.SHA256 {
		return nil, fmt.Errorf("%w: got %s, expected %s", remote.ErrHashMismatch, got, src.SHA256)
	}
	return xx.Sum(nil), nil
}

func readFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

type frame struct {
	b   []byte
	err error
}

// session is one transfer: the control connection to the relay room and, after the key
// exchange, one connection per transfer port. Cancelling its context (the caller's
// context, a timeout, a failure, the end) closes them all, which ends every blocked
// read and write.
type session struct {
	r      *Remote
	ctx    context.Context
	cancel context.CancelCauseFunc
	stop   func() bool

	mu     sync.Mutex
	conns  []net.Conn
	closed bool

	ctrl    *comm.Comm
	in      chan frame
	pending []frame
	ports   []string // the relay's transfer ports
	ip      string   // our address as the relay sees it
	key     []byte   // session key after the PAKE
	trusted bool     // a message under key decrypted: the code phrases match

	noPeer   error
	stall    time.Duration // stallTimeout when the session began
	gen      int           // control connections replaced by rejoin
	alone    bool          // the relay sent us a keep-alive: we waited in the room alone
	joined   atomic.Bool   // the peer has shown up; the stall watchdog runs
	activity atomic.Int64  // unix nanoseconds of the peer's last sign of progress
}

// join connects to the relay room of the code phrase. noPeer is the error when nobody
// joins within the wait.
func (r *Remote) join(ctx context.Context, noPeer error) (*session, error) {
	s := &session{r: r, in: make(chan frame, 16), noPeer: noPeer, stall: stallTimeout}
	s.ctx, s.cancel = context.WithCancelCause(ctx)
	s.stop = context.AfterFunc(s.ctx, s.closeAll)
	rc, err := s.dialRoom(r.cfg.Relay, r.room())
	if err != nil {
		s.close()
		return nil, err
	}
	s.ctrl, s.ip, s.pending = rc.Comm, rc.ip, rc.early
	banner := rc.banner
	for _, p := range strings.Split(banner, ",") {
		if p = strings.TrimSpace(p); p != "" {
			s.ports = append(s.ports, p)
		}
	}
	if len(s.ports) == 0 {
		s.close()
		return nil, fmt.Errorf("croc relay %s announced no transfer ports (banner %q)", r.cfg.Relay, banner)
	}
	for _, p := range s.ports {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			s.close()
			return nil, fmt.Errorf("croc relay %s announced a bad transfer port %q", r.cfg.Relay, p)
		}
	}
	go s.readCtrl(rc.Comm)
	go s.watchdog()
	return s, nil
}

func (s *session) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for _, c := range s.conns {
		c.Close()
	}
	s.conns = nil
}

func (s *session) close() {
	s.cancel(errDone)
	s.stop()
	s.closeAll()
}

// track registers a connection to close with the session.
func (s *session) track(c net.Conn) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return s.fail(net.ErrClosed)
	}
	s.conns = append(s.conns, c)
	return nil
}

// abort ends the session with cause, unless it already ended.
func (s *session) abort(cause error) { s.cancel(cause) }

// fail is the error to report for err: why the session was ended, if it was.
func (s *session) fail(err error) error {
	if cause := context.Cause(s.ctx); cause != nil && cause != errDone {
		return cause
	}
	return err
}

func (s *session) touch() { s.activity.Store(time.Now().UnixNano()) }

func (s *session) peerJoined() {
	if !s.joined.Swap(true) {
		s.touch()
	}
}

// watchdog ends a session whose peer, once there, makes no progress for stallTimeout.
func (s *session) watchdog() {
	t := time.NewTicker(min(s.stall/4, time.Second))
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			if s.joined.Load() && time.Since(time.Unix(0, s.activity.Load())) > s.stall {
				s.abort(fmt.Errorf("the croc peer made no progress for %s", s.stall))
				return
			}
		}
	}
}

// roomConn is a connection that joined a relay room.
type roomConn struct {
	*comm.Comm
	banner string  // the relay's transfer ports
	ip     string  // our address as the relay sees it
	early  []frame // the peer's frames that came before the relay's last "ok"
}

// dialRoom joins a relay room (croc's tcp.ConnectToTCPServer). A relay that pairs us
// with a peer already waiting starts piping the peer's buffered bytes to us before it
// writes its last "ok"; those frames are kept, in order, in early.
func (s *session) dialRoom(addr, room string) (*roomConn, error) {
	d := net.Dialer{Timeout: relayTimeout}
	nc, err := d.DialContext(s.ctx, "tcp", addr)
	if err != nil {
		return nil, s.fail(fmt.Errorf("croc relay %s: %w", addr, err))
	}
	if err := s.track(nc); err != nil {
		return nil, err
	}
	timedOut := atomic.Bool{}
	t := time.AfterFunc(relayTimeout, func() { timedOut.Store(true); nc.Close() })
	defer t.Stop()
	c := comm.New(nc)
	wrap := func(err error) error {
		if timedOut.Load() {
			err = fmt.Errorf("no answer within %s", relayTimeout)
		}
		return s.fail(fmt.Errorf("croc relay %s: %w", addr, err))
	}
	a, err := pake.InitCurve(relayWeakKey, 0, "siec")
	if err != nil {
		return nil, wrap(err)
	}
	if err := c.Send(a.Bytes()); err != nil {
		return nil, wrap(err)
	}
	b, err := c.Receive()
	if err != nil {
		return nil, wrap(err)
	}
	if err := a.Update(b); err != nil {
		return nil, wrap(fmt.Errorf("not a croc relay? %w", err))
	}
	strong, err := a.SessionKey()
	if err != nil {
		return nil, wrap(err)
	}
	key, salt, err := crypt.New(strong, nil)
	if err != nil {
		return nil, wrap(err)
	}
	if err := c.Send(salt); err != nil {
		return nil, wrap(err)
	}
	exchange := func(out []byte) ([]byte, error) {
		enc, err := crypt.Encrypt(out, key)
		if err != nil {
			return nil, err
		}
		if err := c.Send(enc); err != nil {
			return nil, err
		}
		in, err := c.Receive()
		if err != nil {
			return nil, err
		}
		return crypt.Decrypt(in, key)
	}
	reply, err := exchange([]byte(s.r.cfg.RelayPassword))
	if err != nil {
		return nil, wrap(err)
	}
	if string(reply) == "bad password" {
		return nil, wrap(errors.New("the relay refused the relay password (relay_pass; croc's --pass)"))
	}
	banner, ip, ok := strings.Cut(string(reply), "|||")
	if !ok {
		return nil, wrap(fmt.Errorf("unexpected answer %q", clip(reply)))
	}
	enc, err := crypt.Encrypt([]byte(room), key)
	if err != nil {
		return nil, wrap(err)
	}
	if err := c.Send(enc); err != nil {
		return nil, wrap(err)
	}
	var early []frame
	for {
		in, err := c.Receive()
		if err != nil {
			return nil, wrap(err)
		}
		reply, err := crypt.Decrypt(in, key)
		if err != nil {
			// Not the relay's: the peer's, piped to us ahead of the relay's "ok".
			if len(early) == 64 {
				return nil, wrap(errors.New("no room confirmation"))
			}
			early = append(early, frame{b: in})
			continue
		}
		switch string(reply) {
		case "ok":
			return &roomConn{c, banner, ip, early}, nil
		case "room full":
			return nil, wrap(errors.New("two peers already use this code phrase on the relay (another transfer in progress?)"))
		default:
			return nil, wrap(fmt.Errorf("unexpected answer %q", clip(reply)))
		}
	}
}

func clip(b []byte) string {
	if len(b) > 60 {
		b = b[:60]
	}
	return string(b)
}

// readCtrl feeds the control connection's frames to s.in.
func (s *session) readCtrl(c *comm.Comm) {
	for {
		b, err := c.Receive()
		select {
		case s.in <- frame{b, err}:
		case <-s.ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}

// next returns the next control frame, keep-alives included. Until the peer has joined,
// it fails with s.noPeer at deadline; after that the watchdog bounds the wait.
func (s *session) next(deadline time.Time) (frame, error) {
	f, _, err := s.nextWithin(0, deadline)
	return f, err
}

// nextWithin is next that also returns, with quiet set, after d without a frame (d > 0).
func (s *session) nextWithin(d time.Duration, deadline time.Time) (f frame, quiet bool, err error) {
	var timeout, soft <-chan time.Time
	if !s.joined.Load() {
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		timeout = t.C
	}
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		soft = t.C
	}
	for {
		if len(s.pending) > 0 {
			f, s.pending = s.pending[0], s.pending[1:]
		} else {
			select {
			case f = <-s.in:
			case <-soft:
				return frame{}, true, nil
			case <-timeout:
				s.abort(s.noPeer)
				return frame{}, false, s.noPeer
			case <-s.ctx.Done():
				return frame{}, false, s.fail(net.ErrClosed)
			}
		}
		if f.err != nil {
			if !s.joined.Load() && s.ctx.Err() == nil && time.Until(deadline) > time.Second {
				// Nobody spoke yet: the relay paired us with the dead connection of an
				// abandoned room (it notices those only at its next keep-alive) and
				// closed ours. Join again.
				if err := s.rejoin(); err != nil {
					return f, false, err
				}
				continue
			}
			return f, false, s.fail(f.err)
		}
		if isPing(f.b) {
			s.alone = true
		} else {
			s.peerJoined()
			s.touch()
		}
		return f, false, nil
	}
}

// rejoin replaces the control connection with a fresh one in the same room.
func (s *session) rejoin() error {
	select {
	case <-time.After(300 * time.Millisecond):
	case <-s.ctx.Done():
		return s.fail(net.ErrClosed)
	}
	rc, err := s.dialRoom(s.r.cfg.Relay, s.r.room())
	if err != nil {
		return err
	}
	s.ctrl, s.ip, s.alone, s.pending = rc.Comm, rc.ip, false, rc.early
	s.gen++
	go s.readCtrl(rc.Comm)
	return nil
}

// peek waits up to d for a frame that is already on its way.
func (s *session) peek(d time.Duration) (frame, bool) {
	if len(s.pending) > 0 {
		f := s.pending[0]
		s.pending = s.pending[1:]
		return f, true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case f := <-s.in:
		return f, true
	case <-t.C:
		return frame{}, false
	case <-s.ctx.Done():
		return frame{err: s.fail(net.ErrClosed)}, true
	}
}

// lost explains a control connection that ended.
func (s *session) lost(err error) error {
	if cause := s.fail(nil); cause != nil {
		return cause
	}
	if s.key != nil && !s.trusted {
		// The peer hung up right after the key exchange: what croc does when it cannot
		// decrypt our first message.
		return fmt.Errorf("%w (the peer hung up after the key exchange: %v)", ErrCodeMismatch, err)
	}
	return fmt.Errorf("the croc peer or relay closed the connection: %w", err)
}

// recv returns the next encrypted control message.
func (s *session) recv() (message.Message, error) {
	for {
		f, err := s.next(time.Time{})
		if err != nil {
			return message.Message{}, s.lost(err)
		}
		if isPing(f.b) {
			continue
		}
		m, err := message.Decode(s.key, f.b)
		if err != nil {
			if !s.trusted {
				return m, ErrCodeMismatch
			}
			return m, fmt.Errorf("undecodable croc message: %w", err)
		}
		s.trusted = true
		if m.Type == message.TypeError {
			return m, fmt.Errorf("%w: %q", ErrPeerAborted, clip([]byte(m.Message)))
		}
		return m, nil
	}
}

func (s *session) sendMsg(m message.Message) error {
	if err := message.Send(s.ctrl, s.key, m); err != nil {
		return s.fail(fmt.Errorf("croc relay connection: %w", err))
	}
	return nil
}

// refuse tells the peer to stop (croc prints "peer error: refusing files" and exits).
func (s *session) refuse(why string) {
	if s.key != nil {
		message.Send(s.ctrl, s.key, message.Message{Type: message.TypeError, Message: why})
	}
}

// dialData connects the first n transfer ports (rooms room-0 … room-(n-1)).
func (s *session) dialData(n int) ([]*comm.Comm, error) {
	host, _, err := net.SplitHostPort(s.r.cfg.Relay)
	if err != nil {
		return nil, err
	}
	room := s.r.room()
	out := make([]*comm.Comm, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for j := range n {
		wg.Go(func() {
			// Nothing comes early here: the peer sends chunks only when asked.
			var rc *roomConn
			if rc, errs[j] = s.dialRoom(net.JoinHostPort(host, s.ports[j]), fmt.Sprintf("%s-%d", room, j)); rc != nil {
				out[j] = rc.Comm
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("connecting the relay's transfer ports: %w", err)
	}
	return out, nil
}

// keyExchange derives the session key from a PAKE with the peer's bytes and the salt.
func (s *session) keyExchange(p *pake.Pake, salt []byte) error {
	k, err := p.SessionKey()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCodeMismatch, err)
	}
	s.key, _, err = crypt.New(k, salt)
	return err
}

// finish waits briefly for the peer's closing "finished"; its absence is harmless.
func (s *session) finish() {
	t := time.NewTimer(finishWait)
	defer t.Stop()
	for {
		select {
		case f := <-s.in:
			if f.err != nil {
				return
			}
			if isPing(f.b) {
				continue
			}
			if m, err := message.Decode(s.key, f.b); err != nil || m.Type == message.TypeFinished {
				return
			}
		case <-t.C:
			return
		case <-s.ctx.Done():
			return
		}
	}
}

// --- sending (Put) ---

func (s *session) send(name string, src remote.Source, xx []byte, opt remote.PutOptions) (remote.PutResult, error) {
	var res remote.PutResult
	if err := s.senderHandshake(time.Now().Add(s.r.cfg.Wait)); err != nil {
		return res, err
	}
	// The receiver opens the key exchange with its PAKE bytes and curve.
	var m message.Message
	for {
		f, err := s.next(time.Time{})
		if err != nil {
			return res, s.lost(err)
		}
		if isPing(f.b) {
			continue
		}
		if m, err = message.Decode(nil, f.b); err != nil || m.Type != message.TypePAKE {
			return res, fmt.Errorf("unexpected croc message instead of the key exchange")
		}
		break
	}
	crv := string(m.Bytes2)
	if !validCurve(crv) {
		return res, fmt.Errorf("the croc receiver asks for an unknown curve %q", clip(m.Bytes2))
	}
	p, err := pake.InitCurve(s.r.pakePassword(), 1, crv)
	if err != nil {
		return res, err
	}
	if err := p.Update(m.Bytes); err != nil {
		return res, fmt.Errorf("%w: %v", ErrCodeMismatch, err)
	}
	salt := make([]byte, 8)
	if _, err := rand.Read(salt); err != nil {
		return res, err
	}
	if err := s.sendMsg(message.Message{Type: message.TypePAKE, Bytes: p.Bytes(), Bytes2: salt}); err != nil {
		return res, err
	}
	if err := s.keyExchange(p, salt); err != nil {
		return res, err
	}
	n := len(s.ports)
	if s.r.cfg.Parallel > 0 {
		n = min(n, s.r.cfg.Parallel)
	}
	data, err := s.dialData(n)
	if err != nil {
		return res, err
	}
	if m, err = s.recv(); err != nil {
		return res, err
	}
	if m.Type != message.TypeExternalIP {
		return res, fmt.Errorf("unexpected croc message %q instead of %q", m.Type, message.TypeExternalIP)
	}
	if err := s.sendMsg(message.Message{Type: message.TypeExternalIP, Message: s.ip}); err != nil {
		return res, err
	}
	info, err := json.Marshal(senderInfo{
		FilesToTransfer: []fileInfo{{
			Name:         name,
			FolderRemote: "./",
			FolderSource: ".", // croc sends the sender's folder; the receiver ignores it
			Hash:         xx,
			Size:         src.Size,
			Mode:         0o644,
		}},
		// Chunks are Huffman-coded, as the croc CLI sends them: cheap, and it pays on
		// LoRAs (bf16's sign/exponent bytes are far from uniform: ~15% smaller).
		NoCompress:    false,
		HashAlgorithm: hashAlgorithm,
		// ReconnectVersion 0: no croc reconnects; an interrupted Put is simply redone.
	})
	if err != nil {
		return res, err
	}
	if err := s.sendMsg(message.Message{Type: message.TypeFileInfo, Bytes: info}); err != nil {
		return res, err
	}
	for rounds := 0; ; {
		m, err := s.recv()
		if err != nil {
			return res, err
		}
		switch m.Type {
		case message.TypeRecipientReady:
			// croc asks again when its copy does not hash right; not forever.
			if rounds++; rounds > 3 {
				s.refuse("the received file keeps failing its hash check")
				return res, fmt.Errorf("%w: the receiving croc's copy failed its hash check %d times", remote.ErrHashMismatch, rounds-1)
			}
			var req remoteFileRequest
			if err := json.Unmarshal(m.Bytes, &req); err != nil || req.FilesToTransferCurrentNum != 0 {
				return res, fmt.Errorf("bad croc request for the file")
			}
			want, err := wantedChunks(req.CurrentFileChunkRanges, src.Size)
			if err != nil {
				return res, err
			}
			sent, err := s.sendChunks(data, src, want, opt)
			res.Sent += sent
			if err != nil {
				return res, err
			}
		case message.TypeCloseSender:
			if err := s.sendMsg(message.Message{Type: message.TypeCloseRecipient}); err != nil {
				return res, err
			}
		case message.TypeFinished:
			// The receiver re-hashed its copy and found it equal.
			s.sendMsg(message.Message{Type: message.TypeFinished})
			res.Resumed = max(0, src.Size-res.Sent)
			return res, nil
		}
	}
}

func event(e string) {
	if testEvent != nil {
		testEvent(e)
	}
}

func validCurve(c string) bool {
	for _, a := range pake.AvailableCurves() {
		if c == a {
			return true
		}
	}
	return false
}

// senderHandshake waits for the receiver's "handshake", answering its optional LAN
// address query ("pake1", then an encrypted "ips?") with no addresses.
//
// A croc CLI receiver that joined the room first reads the relay's keep-alive as the
// answer to its "pake1", gives up on the query and goes on with "handshake" at once;
// answering its stale "pake1" would then land in the middle of its key exchange and
// break it (croc CLI to croc CLI fails that way when the receiver starts first). So:
// if the relay kept us waiting alone, the receiver came after us and waits for the
// answer; otherwise answer only if nothing follows the "pake1" within peekWindow.
func (s *session) senderHandshake(deadline time.Time) error {
	var kB []byte
	for {
		f, err := s.next(deadline)
		if err != nil {
			return s.lost(err)
		}
		switch {
		case isPing(f.b):
			continue
		case bytes.Equal(f.b, handshakeRequest):
			return nil
		case kB != nil:
			b, err := crypt.Decrypt(f.b, kB)
			if err != nil {
				return ErrCodeMismatch
			}
			if !bytes.Equal(b, ipRequest) {
				return fmt.Errorf("unexpected croc message before the handshake")
			}
			enc, err := crypt.Encrypt([]byte("[]"), kB)
			if err != nil {
				return err
			}
			if err := s.ctrl.Send(enc); err != nil {
				return s.lost(err)
			}
			continue
		}
		var sm simpleMessage
		if err := json.Unmarshal(f.b, &sm); err != nil || sm.Kind != "pake1" {
			return fmt.Errorf("unexpected croc message before the handshake")
		}
		if !s.alone {
			if nf, ok := s.peek(peekWindow); ok {
				s.pending = append([]frame{nf}, s.pending...) // stale query: the receiver moved on
				event("stale address query")
				continue
			}
		}
		event("answered address query")
		b, err := pake.InitCurve(s.r.pakePassword(), 1, curve)
		if err != nil {
			return err
		}
		if err := b.Update(sm.Bytes); err != nil {
			return fmt.Errorf("%w: %v", ErrCodeMismatch, err)
		}
		if kB, err = b.SessionKey(); err != nil {
			return fmt.Errorf("%w: %v", ErrCodeMismatch, err)
		}
		reply, err := json.Marshal(simpleMessage{Bytes: b.Bytes(), Kind: "pake2"})
		if err != nil {
			return err
		}
		if err := s.ctrl.Send(reply); err != nil {
			return s.lost(err)
		}
	}
}

// wantedChunks turns croc's chunk ranges ([chunk size, start, count, start, count…])
// into a set of chunk positions; nil means all.
func wantedChunks(ranges []int64, size int64) (map[int64]bool, error) {
	if len(ranges) == 0 {
		return nil, nil
	}
	bad := fmt.Errorf("unsupported croc resume request")
	if ranges[0] != chunkSize || len(ranges)%2 != 1 {
		return nil, bad
	}
	want := map[int64]bool{}
	for i := 1; i+1 < len(ranges); i += 2 {
		start, count := ranges[i], ranges[i+1]
		if start < 0 || start%chunkSize != 0 || count < 0 || count > size/chunkSize+1 {
			return nil, bad
		}
		for j := range count {
			pos := start + j*chunkSize
			if pos >= size {
				return nil, bad
			}
			want[pos] = true
		}
	}
	return want, nil
}

// sendChunks sends the wanted chunks over the transfer connections. It reads the whole
// source in order and hashes it again; the last chunk goes out only once the source has
// hashed to src.SHA256, so a receiver never completes other content.
func (s *session) sendChunks(data []*comm.Comm, src remote.Source, want map[int64]bool, opt remote.PutOptions) (int64, error) {
	jobs := make(chan []byte, 2*len(data))
	var sent atomic.Int64
	var pmu sync.Mutex
	var wg sync.WaitGroup
	for _, dc := range data {
		wg.Go(func() {
			hc := newHuffman()
			for buf := range jobs {
				enc, err := crypt.Encrypt(hc.compress(buf), s.key)
				if err == nil {
					err = dc.Send(enc)
				}
				if err != nil {
					s.abort(s.fail(fmt.Errorf("croc transfer connection: %w", err)))
					for range jobs {
					}
					return
				}
				s.touch()
				sent.Add(int64(len(buf) - 8))
				if opt.Progress != nil {
					pmu.Lock()
					opt.Progress.Write(buf[8:])
					pmu.Unlock()
				}
			}
		})
	}
	push := func(buf []byte) bool {
		select {
		case jobs <- buf:
			return true
		case <-s.ctx.Done():
			return false
		}
	}
	err := func() error {
		h := sha256.New()
		var held []byte
		for pos := int64(0); pos < src.Size; pos += chunkSize {
			if err := s.ctx.Err(); err != nil {
				return s.fail(err)
			}
			n := min(chunkSize, src.Size-pos)
			buf := make([]byte, 8+n)
			binary.LittleEndian.PutUint64(buf, uint64(pos))
			if err := readFull(src.R, buf[8:], pos); err != nil {
				return err
			}
			h.Write(buf[8:])
			if want != nil && !want[pos] {
				continue
			}
			if held != nil && !push(held) {
				return s.fail(net.ErrClosed)
			}
			held = buf
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != src.SHA256 {
			s.refuse("source changed while sending")
			return fmt.Errorf("%w: the source changed while sending (got %s)", remote.ErrHashMismatch, got)
		}
		if held != nil && !push(held) {
			return s.fail(net.ErrClosed)
		}
		return nil
	}()
	close(jobs)
	wg.Wait()
	if err != nil {
		s.abort(err)
		return sent.Load(), err
	}
	return sent.Load(), s.fail(nil)
}

// --- receiving (Get) ---

// recvState is the file being received.
type recvState struct {
	f          *os.File
	size       int64
	noCompress bool
	progress   func()

	mu       sync.Mutex
	have     map[int64]int64 // chunk position → length
	total    int64
	sealed   bool
	complete chan struct{}
}

func (st *recvState) write(pos int64, b []byte) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.sealed {
		return nil
	}
	if pos < 0 || int64(len(b)) > st.size || pos > st.size-int64(len(b)) {
		return fmt.Errorf("croc sender sent a chunk outside the file (%d+%d of %d)", pos, len(b), st.size)
	}
	if _, dup := st.have[pos]; dup || len(b) == 0 {
		return nil
	}
	if _, err := st.f.WriteAt(b, pos); err != nil {
		return err
	}
	st.have[pos] = int64(len(b))
	st.total += int64(len(b))
	st.progress()
	if st.total >= st.size {
		st.sealed = true
		close(st.complete)
	}
	return nil
}

func (st *recvState) seal() {
	st.mu.Lock()
	st.sealed = true
	st.mu.Unlock()
}

func (s *session) readData(dc *comm.Comm, st *recvState) {
	for {
		b, err := dc.Receive()
		if err != nil {
			select {
			case <-st.complete:
			default:
				s.abort(s.fail(fmt.Errorf("croc transfer connection: %w", err)))
			}
			return
		}
		if isPing(b) {
			continue
		}
		p, err := crypt.Decrypt(b, s.key)
		if err != nil {
			s.abort(fmt.Errorf("undecryptable croc data chunk: %w", err))
			return
		}
		if !st.noCompress {
			p = compress.Decompress(p)
		}
		if len(p) < 8 {
			s.abort(errors.New("short croc data chunk"))
			return
		}
		if err := st.write(int64(binary.LittleEndian.Uint64(p[:8])), p[8:]); err != nil {
			s.abort(err)
			return
		}
	}
}

func (s *session) receive(name string) (_ *tempFile, err error) {
	a, err := pake.InitCurve(s.r.pakePassword(), 0, curve)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(s.r.cfg.Wait)
	var m message.Message
	said := -1 // the connection generation we sent "handshake" and our PAKE bytes on
	for {
		if said != s.gen {
			// Speak only once the relay has paired us with the sender. Bytes left in
			// the relay while we wait alone reach a sender that joins later ahead of
			// the relay's last "ok" to it (the relay starts piping first), and croc's
			// client then fails to join ("incorrect passphrase"). The relay's
			// keep-alives tell: one at once while alone, then every second, none
			// once paired.
			window := firstPing
			if s.alone {
				window = pairedQuiet
			}
			f, quiet, err := s.nextWithin(window, deadline)
			if err != nil {
				return nil, s.lost(err)
			}
			if !quiet {
				if isPing(f.b) {
					continue
				}
				s.pending = append([]frame{f}, s.pending...) // the sender spoke first
			}
			// A failed write shows up at the next read, which joins again.
			s.ctrl.Send(handshakeRequest)
			message.Send(s.ctrl, nil, message.Message{Type: message.TypePAKE, Bytes: a.Bytes(), Bytes2: []byte(curve)})
			said = s.gen
			continue
		}
		fr, err := s.next(deadline)
		if err != nil {
			return nil, s.lost(err)
		}
		if isPing(fr.b) {
			continue
		}
		if said != s.gen { // joined again meanwhile: say it again
			s.pending = append([]frame{fr}, s.pending...)
			continue
		}
		if m, err = message.Decode(nil, fr.b); err != nil || m.Type != message.TypePAKE || len(m.Bytes2) == 0 {
			return nil, fmt.Errorf("unexpected croc message instead of the key exchange")
		}
		break
	}
	if err := a.Update(m.Bytes); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCodeMismatch, err)
	}
	if err := s.keyExchange(a, m.Bytes2); err != nil {
		return nil, err
	}
	data, err := s.dialData(len(s.ports)) // the sender uses them all
	if err != nil {
		return nil, err
	}
	if err := s.sendMsg(message.Message{Type: message.TypeExternalIP, Message: s.ip, Bytes: m.Bytes}); err != nil {
		return nil, err
	}
	var info senderInfo
	for {
		if m, err = s.recv(); err != nil {
			return nil, err
		}
		if m.Type == message.TypeExternalIP {
			continue
		}
		if m.Type != message.TypeFileInfo {
			return nil, fmt.Errorf("unexpected croc message %q instead of %q", m.Type, message.TypeFileInfo)
		}
		if err := json.Unmarshal(m.Bytes, &info); err != nil {
			return nil, fmt.Errorf("bad croc file list: %w", err)
		}
		break
	}
	fi, algo, err := checkOffer(info, name)
	if err != nil {
		s.refuse("refusing files")
		return nil, err
	}

	tf, err := os.CreateTemp(s.r.cfg.TempDir, ".scopectl-croc-*.part")
	if err != nil {
		s.refuse("refusing files")
		return nil, err
	}
	defer func() {
		if err != nil {
			tempFile{tf}.Close()
		}
	}()
	if fi.Size > 0 {
		st := &recvState{f: tf, size: fi.Size, noCompress: info.NoCompress, progress: s.touch, have: map[int64]int64{}, complete: make(chan struct{})}
		for _, dc := range data {
			go s.readData(dc, st)
		}
		req, _ := json.Marshal(remoteFileRequest{CurrentFileChunkRanges: []int64{}})
		if err := s.sendMsg(message.Message{Type: message.TypeRecipientReady, Bytes: req}); err != nil {
			return nil, err
		}
		if err := s.await(st.complete); err != nil {
			return nil, err
		}
		st.seal()
		if err := s.sendMsg(message.Message{Type: message.TypeCloseSender}); err != nil {
			return nil, err
		}
		for {
			if m, err = s.recv(); err != nil {
				return nil, err
			}
			if m.Type == message.TypeCloseRecipient {
				break
			}
		}
		if err := tf.Sync(); err != nil {
			return nil, err
		}
		got, err := utils.HashFileCtx(s.ctx, tf.Name(), algo, false)
		if err != nil {
			return nil, s.fail(err)
		}
		if !bytes.Equal(got, fi.Hash) {
			s.refuse("hash mismatch")
			return nil, fmt.Errorf("%w: the received bytes do not match the sender's %s", remote.ErrHashMismatch, algo)
		}
	}
	if err := s.sendMsg(message.Message{Type: message.TypeFinished}); err != nil {
		return nil, err
	}
	s.finish()
	return &tempFile{tf}, nil
}

// await waits for the last chunk, watching the control connection for the peer giving
// up.
func (s *session) await(done <-chan struct{}) error {
	for {
		select {
		case <-done:
			return nil
		case <-s.ctx.Done():
			return s.fail(net.ErrClosed)
		case fr := <-s.in:
			if fr.err == nil && isPing(fr.b) {
				continue
			}
			s.pending = append(s.pending, fr)
			m, err := s.recv()
			if err != nil {
				return err
			}
			return fmt.Errorf("unexpected croc message %q during the transfer", m.Type)
		}
	}
}

// checkOffer accepts exactly one regular file named name in the sender's top folder.
func checkOffer(info senderInfo, name string) (fileInfo, string, error) {
	if len(info.FilesToTransfer) != 1 || len(info.EmptyFoldersToTransfer) != 0 {
		return fileInfo{}, "", fmt.Errorf("the croc sender offers %d files and %d empty folders; send exactly one file: %w",
			len(info.FilesToTransfer), len(info.EmptyFoldersToTransfer), remote.ErrNotFound)
	}
	fi := info.FilesToTransfer[0]
	if err := remote.CheckName(fi.Name); err != nil {
		return fi, "", fmt.Errorf("the croc sender offers a file name that is not allowed: %w", err)
	}
	if dir := path.Clean(strings.ReplaceAll(fi.FolderRemote, `\`, "/")); dir != "." && dir != "" {
		return fi, "", fmt.Errorf("the croc sender offers %s inside folder %q: %w", fi.Name, clip([]byte(fi.FolderRemote)), remote.ErrBadName)
	}
	switch {
	case info.SendingText:
		return fi, "", fmt.Errorf("the croc sender offers text, not a file: %w", remote.ErrNotFound)
	case fi.Symlink != "":
		return fi, "", fmt.Errorf("the croc sender offers %s as a symlink: %w", fi.Name, remote.ErrBadName)
	case fi.TempFile:
		return fi, "", fmt.Errorf("the croc sender offers a zipped folder: %w", remote.ErrNotFound)
	case fi.Name != name:
		return fi, "", fmt.Errorf("the croc sender offers %q, not %q: %w", fi.Name, name, remote.ErrNotFound)
	case fi.Size < 0:
		return fi, "", fmt.Errorf("the croc sender offers a negative size")
	}
	algo := info.HashAlgorithm
	if algo == "" {
		algo = "xxhash"
	}
	switch algo {
	case "xxhash", "imohash", "md5", "highway":
	default:
		return fi, "", fmt.Errorf("the croc sender uses an unknown hash %q", clip([]byte(algo)))
	}
	if fi.Size > 0 && len(fi.Hash) == 0 {
		return fi, "", fmt.Errorf("the croc sender sent no hash for %s", fi.Name)
	}
	return fi, algo, nil
}

// huffman Huffman-codes chunks the way croc's compress.Compress does (a raw deflate
// stream at flate.HuffmanOnly, so croc's Decompress reads it), reusing one encoder.
type huffman struct {
	out bytes.Buffer
	w   *flate.Writer
}

func newHuffman() *huffman {
	h := &huffman{}
	h.w, _ = flate.NewWriter(&h.out, flate.HuffmanOnly) // a valid level: never fails
	return h
}

// compress returns p deflated, in a new slice.
func (h *huffman) compress(p []byte) []byte {
	h.out.Reset()
	h.w.Reset(&h.out)
	h.w.Write(p) // writes to a bytes.Buffer do not fail
	h.w.Close()
	return bytes.Clone(h.out.Bytes())
}
