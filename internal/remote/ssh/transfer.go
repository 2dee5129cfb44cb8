package ssh

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/pkg/sftp"
	xssh "golang.org/x/crypto/ssh"

	"github.com/daydreamlive/scopectl/internal/atomicfile"
	"github.com/daydreamlive/scopectl/internal/remote"
)

// Every sh script prints marker first, so that its output can be told from whatever the
// account's shell start-up files print, and a server that did not run it at all (an
// sftp-only account) from one whose script failed.
const marker = "@@scopectl-ssh-7f3a@@"

// Exit statuses of the scripts.
const (
	exitNotFound   = 44
	exitNoHashTool = 45
	exitMismatch   = 46
	exitIsDir      = 47
)

var (
	errNoShell    = errors.New("the server does not run sh commands for this account")
	errNoHashTool = errors.New("no sha256sum, shasum or openssl on the server")
)

// shq quotes s as one POSIX sh word.
func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// shHash defines scopectl_sha256: the sha256 of stdin, first word of its output.
// OpenSSL's is preferred: it uses the CPU's SHA extensions, often 3x as fast as
// coreutils' sha256sum.
const shHash = `scopectl_sha256() { if command -v openssl >/dev/null 2>&1 && openssl version >/dev/null 2>&1; then openssl dgst -sha256 -r; ` +
	`elif command -v sha256sum >/dev/null 2>&1; then sha256sum; elif command -v shasum >/dev/null 2>&1; then shasum -a 256; else return 45; fi; }; `

// command wraps a script for the account's login shell, whichever it is.
func command(script string) string {
	return "sh -c " + shq("printf '%s\\n' '"+marker+"'; "+script)
}

// execDir is the folder as an sh argument that cannot be taken for an option.
func (r *Remote) execDir() string {
	if strings.HasPrefix(r.dir, "/") || r.dir == "." {
		return r.dir
	}
	return "./" + r.dir
}

func (r *Remote) execPath(name string) string {
	if d := r.execDir(); d != "/" {
		return d + "/" + name
	}
	return "/" + name
}

func (r *Remote) sftpPath(name string) string { return path.Join(r.dir, name) }

type execResult struct {
	out    []byte // stdout after the marker
	code   int
	stderr string
}

// job is an sh script running on the server.
type job struct {
	r     *Remote
	s     *xssh.Session
	stop  func() bool
	stdin io.WriteCloser // when started with a stdin pipe
	out   bytes.Buffer
	se    limitedBuffer
	err   error // from starting it
}

// start starts an sh script. With pipe, its stdin is a pipe (job.stdin); otherwise it
// reads stdin, which may be nil.
func (r *Remote) start(ctx context.Context, script string, stdin io.Reader, pipe bool) *job {
	j := &job{r: r}
	if j.err = ctx.Err(); j.err != nil {
		return j
	}
	if j.s, j.err = r.client.NewSession(); j.err != nil {
		return j
	}
	j.stop = context.AfterFunc(ctx, func() { j.s.Close() })
	j.s.Stdout, j.s.Stderr = &j.out, &j.se
	if pipe {
		j.stdin, j.err = j.s.StdinPipe()
	} else {
		j.s.Stdin = stdin
	}
	if j.err == nil {
		j.err = j.s.Start(command(script))
	}
	if j.err != nil {
		j.stop()
		j.s.Close()
		if r.dead.Load() == nil && ctx.Err() == nil && strings.HasPrefix(j.err.Error(), "ssh: command") {
			j.err = errNoShell // exec refused
		}
	}
	return j
}

// wait waits for the script and returns its output and exit status. errNoShell if the
// script never ran.
func (j *job) wait(ctx context.Context) (execResult, error) {
	var res execResult
	if j.err != nil {
		return res, j.err
	}
	defer j.s.Close()
	err := j.s.Wait()
	if !j.stop() || ctx.Err() != nil {
		return res, ctx.Err()
	}
	var ee *xssh.ExitError
	switch {
	case errors.As(err, &ee) && ee.Signal() == "":
		res.code = ee.ExitStatus()
	case err != nil:
		return res, err
	}
	i := bytes.Index(j.out.Bytes(), []byte(marker+"\n"))
	if i < 0 {
		return res, fmt.Errorf("%w (exit status %d: %s)", errNoShell, res.code, firstLine(j.se.String()))
	}
	res.out, res.stderr = j.out.Bytes()[i+len(marker)+1:], j.se.String()
	return res, nil
}

// abort ends a started script.
func (j *job) abort() {
	if j.err == nil {
		j.stop()
		j.s.Close()
	}
}

// run runs an sh script and returns its output and exit status. errNoShell if the
// script never started.
func (r *Remote) run(ctx context.Context, script string, stdin io.Reader) (execResult, error) {
	return r.start(ctx, script, stdin, false).wait(ctx)
}

// scriptError words a script's unexpected exit status.
func scriptError(what string, res execResult) error {
	if res.stderr != "" {
		return fmt.Errorf("%s failed (exit status %d): %s", what, res.code, firstLine(res.stderr))
	}
	return fmt.Errorf("%s failed (exit status %d)", what, res.code)
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// List returns the folder's published regular files.
func (r *Remote) List(ctx context.Context) ([]remote.Entry, error) {
	var out []remote.Entry
	keepEntry := func(name string) bool {
		return !remote.IsTemp(name) && !atomicfile.IsTemp(name) && remote.CheckName(name) == nil
	}
	if r.useSFTP {
		c, done, err := r.acquire(ctx)
		if err != nil {
			return nil, err
		}
		fis, err := c.ReadDirContext(ctx, r.dir)
		done(err == nil)
		if err != nil {
			return nil, r.fail(ctx, "list", err)
		}
		for _, fi := range fis {
			if fi.Mode().IsRegular() && keepEntry(fi.Name()) {
				out = append(out, remote.Entry{Name: fi.Name(), Size: fi.Size(), ModTime: fi.ModTime()})
			}
		}
	} else {
		// GNU find prints size, mtime and name in one process; elsewhere a loop of stat.
		script := "cd " + shq(r.execDir()) + " || exit 1; " +
			`if find . -maxdepth 0 -printf '' >/dev/null 2>&1; then find . -maxdepth 1 -type f -printf '%s %T@ %f\0'; ` +
			`else for f in * .[!.]* ..?*; do if [ -f "$f" ] && [ ! -h "$f" ]; then m=$(stat -c '%s %Y' "./$f" 2>/dev/null) && printf '%s %s\0' "$m" "$f"; fi; done; fi`
		res, err := r.run(ctx, script, nil)
		if err == nil && res.code != 0 {
			err = scriptError("list", res)
		}
		if err != nil {
			return nil, r.fail(ctx, "list", err)
		}
		for _, rec := range bytes.Split(res.out, []byte{0}) {
			f := strings.SplitN(string(rec), " ", 3)
			if len(f) != 3 {
				continue
			}
			size, err1 := strconv.ParseInt(f[0], 10, 64)
			mt, err2 := strconv.ParseFloat(f[1], 64)
			if err1 != nil || err2 != nil || !keepEntry(f[2]) {
				continue
			}
			sec := int64(mt)
			out = append(out, remote.Entry{Name: f[2], Size: size, ModTime: time.Unix(sec, int64((mt-float64(sec))*1e9))})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// progressReader reports what is read to w and stops when ctx is done.
type progressReader struct {
	ctx context.Context
	r   io.Reader
	w   io.Writer
}

func (p *progressReader) Read(b []byte) (int, error) {
	if err := p.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := p.r.Read(b)
	if n > 0 && p.w != nil {
		p.w.Write(b[:n])
	}
	return n, err
}

// Put publishes src as name: upload to the temporary name (resuming a partial one),
// verify the sha256 on the server, make it durable, rename.
func (r *Remote) Put(ctx context.Context, name string, src remote.Source, opt remote.PutOptions) (remote.PutResult, error) {
	if err := remote.CheckName(name); err != nil {
		return remote.PutResult{}, err
	}
	src.SHA256 = strings.ToLower(src.SHA256)
	if b, err := hex.DecodeString(src.SHA256); err != nil || len(b) != sha256.Size {
		return remote.PutResult{}, fmt.Errorf("%s: put %s: the source's sha256 %q is not 64 hex digits", r, name, src.SHA256)
	}
	if err := ctx.Err(); err != nil {
		return remote.PutResult{}, r.fail(ctx, "put "+name, err)
	}
	res, err := r.put(ctx, name, src, opt)
	if errors.Is(err, remote.ErrHashMismatch) && res.Resumed > 0 && ctx.Err() == nil {
		// The partial file left by an earlier attempt was not a prefix of this content
		// (the mismatch deleted it): send everything once more.
		again, err := r.put(ctx, name, src, opt)
		again.Sent += res.Sent
		return again, err
	}
	return res, err
}

func (r *Remote) put(ctx context.Context, name string, src remote.Source, opt remote.PutOptions) (remote.PutResult, error) {
	if r.compress(ctx, src) {
		return r.putExec(ctx, name, src, opt, true)
	}
	if r.useSFTP {
		return r.putSFTP(ctx, name, src, opt)
	}
	return r.putExec(ctx, name, src, opt, false)
}

// Compressed uploads. SFTP cannot compress and x/crypto/ssh has no transport compression,
// so a large file that shrinks goes over exec as a Huffman-coded gzip stream (what croc
// does to its chunks: bf16 LoRA weights lose ~15%), which the far side's `gzip -dc`
// appends to the temporary file. A cut stream leaves a correct prefix there, so resume
// works as for plain exec uploads; the sha256 check on the far side covers the result.
var (
	compressMin      = int64(8 << 20) // smaller files: not worth a probe
	compressMaxRatio = 0.95           // a sample that shrinks less is sent as is
	compressSample   = 1 << 20
)

// compress reports whether src goes as a gzip stream: the account may run commands,
// the server has gzip (asked once), and a sample of src shrinks enough.
func (r *Remote) compress(ctx context.Context, src remote.Source) bool {
	if r.noCompress || r.noExec.Load() || src.Size < compressMin {
		return false
	}
	r.gzipOnce.Do(func() {
		res, err := r.run(ctx, "command -v gzip >/dev/null 2>&1 && printf ok", nil)
		r.hasGzip = err == nil && res.code == 0 && string(res.out) == "ok"
	})
	if !r.hasGzip {
		return false
	}
	// The sample is taken past the safetensors header (JSON, which would flatter the
	// ratio) and early in the file, which the upload reads next anyway.
	sample := make([]byte, min(int64(compressSample), src.Size))
	if _, err := src.R.ReadAt(sample, min(src.Size/2, 2<<20)); err != nil && !errors.Is(err, io.EOF) {
		return false // the upload itself will report the read error
	}
	var n countWriter
	zw, _ := gzip.NewWriterLevel(&n, gzip.HuffmanOnly)
	zw.Write(sample)
	zw.Close()
	return float64(n) < compressMaxRatio*float64(len(sample))
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) { *c += countWriter(len(p)); return len(p), nil }

// countingWriter counts what passes through to w.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func (r *Remote) putSFTP(ctx context.Context, name string, src remote.Source, opt remote.PutOptions) (res remote.PutResult, err error) {
	c, done, err := r.acquire(ctx)
	if err != nil {
		return res, err
	}
	keep := false
	defer func() { done(keep) }()
	tmpName := remote.TempName(name, src.SHA256)
	tmp := r.sftpPath(tmpName)
	fin := r.prestartFinish(ctx, name, tmpName, src.SHA256)
	defer fin.abort()
	// The size of a partial file from an earlier attempt, asked alongside the open.
	type statResult struct {
		size int64
		err  error
	}
	stat := make(chan statResult, 1)
	go func() {
		fi, err := c.Stat(tmp)
		if errors.Is(err, fs.ErrNotExist) {
			stat <- statResult{}
			return
		}
		if err == nil {
			stat <- statResult{size: fi.Size()}
			return
		}
		stat <- statResult{err: err}
	}()
	f, err := c.OpenFile(tmp, os.O_WRONLY|os.O_CREATE)
	st := <-stat
	if err == nil {
		err = st.err
	}
	if err != nil {
		if f != nil {
			f.Close()
		}
		return res, r.fail(ctx, "put "+name+": open "+tmpName, err)
	}
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	have := st.size
	if have > src.Size {
		if err := f.Truncate(0); err != nil {
			return res, r.fail(ctx, "put "+name, err)
		}
		have = 0
	}
	res.Resumed = have
	if _, err := f.Seek(have, io.SeekStart); err != nil {
		return res, r.fail(ctx, "put "+name, err)
	}
	n, err := f.ReadFromWithConcurrency(&progressReader{ctx, io.NewSectionReader(src.R, have, src.Size-have), opt.Progress}, sftpConcurrency)
	res.Sent = n
	if err != nil {
		// Concurrent writes may have landed past the first failed one: keep only the
		// part written in order, for the next attempt to resume after.
		if ctx.Err() == nil && r.dead.Load() == nil {
			if off, e := f.Seek(0, io.SeekCurrent); e == nil && f.Truncate(off) == nil {
				res.Sent = off - have
			}
		}
		return res, r.fail(ctx, "put "+name, err)
	}

	// Verify, sync and rename with one sh script where the account may run commands.
	if j := fin.take(); j != nil {
		f.Close()
		f = nil
		err := j.commit(ctx)
		switch {
		case errors.Is(err, errNoShell):
			r.noExec.Store(true)
		case errors.Is(err, errNoHashTool):
		default:
			keep = err == nil
			return res, err
		}
		if f, err = c.OpenFile(tmp, os.O_WRONLY); err != nil {
			return res, r.fail(ctx, "put "+name, err)
		}
	}
	// SFTP only: read back to verify, fsync@openssh.com, posix-rename@openssh.com.
	got, err := hashSFTP(c, tmp)
	if err != nil {
		return res, r.fail(ctx, "put "+name+": verify", err)
	}
	if got != src.SHA256 {
		f.Close()
		f = nil
		c.Remove(tmp)
		keep = true
		return res, fmt.Errorf("%s: put %s: %w: the server has %s, expected %s", r, name, remote.ErrHashMismatch, got, src.SHA256)
	}
	if err := f.Sync(); err != nil && !isUnsupported(err) {
		return res, r.fail(ctx, "put "+name+": fsync", err)
	}
	err = f.Close()
	f = nil
	if err != nil {
		return res, r.fail(ctx, "put "+name, err)
	}
	final := r.sftpPath(name)
	if _, ok := c.HasExtension("posix-rename@openssh.com"); ok {
		err = c.PosixRename(tmp, final)
	} else if err = c.Rename(tmp, final); err != nil {
		// Plain SFTP rename refuses to replace; the old file goes first (not atomic).
		if fi, e := c.Lstat(final); e == nil && fi.Mode().IsRegular() && c.Remove(final) == nil {
			err = c.Rename(tmp, final)
		}
	}
	if err != nil {
		return res, r.fail(ctx, "put "+name+": rename", err)
	}
	keep = true
	return res, nil
}

func isUnsupported(err error) bool {
	var se *sftp.StatusError
	return errors.As(err, &se) && se.FxCode() == sftp.ErrSSHFxOpUnsupported
}

// hashSFTP reads a file back and hashes it.
func hashSFTP(c *sftpConn, p string) (string, error) {
	f, err := c.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := f.WriteTo(h); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// finishJob publishes the temporary file once told to: check its sha256 (when verify),
// fsync it, rename it over name and fsync the folder, all in one script. It is started
// while the upload runs, so that publishing costs no session set-up round trips.
type finishJob struct {
	r                   *Remote
	j                   *job
	name, tmpName, want string
}

func (r *Remote) startFinish(ctx context.Context, name, tmpName, want string, verify bool) *finishJob {
	script := "t=" + shq(r.execPath(tmpName)) + "; f=" + shq(r.execPath(name)) + "; d=" + shq(r.execDir()) +
		`; read go || exit 50; [ "$go" = go ] || exit 50; [ -f "$t" ] || exit 44; `
	if verify {
		script += shHash + `s=$(scopectl_sha256 < "$t") || exit $?; s=${s%% *}; printf '%s\n' "$s"; ` +
			`if [ "$s" != ` + shq(want) + ` ]; then rm -f "$t"; exit 46; fi; `
	}
	script += `if [ -d "$f" ]; then exit 47; fi; sync "$t" 2>/dev/null || sync; mv -f "$t" "$f" || exit 1; sync "$d" 2>/dev/null || sync`
	return &finishJob{r: r, j: r.start(ctx, script, nil, true), name: name, tmpName: tmpName, want: want}
}

// abort: the upload failed; publish nothing.
func (f *finishJob) abort() {
	if f.j.err == nil {
		f.j.stdin.Close()
	}
	f.j.abort()
}

func (f *finishJob) commit(ctx context.Context) error {
	r, name := f.r, f.name
	var werr error
	if f.j.err == nil {
		_, werr = io.WriteString(f.j.stdin, "go\n")
		f.j.stdin.Close()
	}
	res, err := f.j.wait(ctx)
	if err != nil {
		if errors.Is(err, errNoShell) {
			return err
		}
		return r.fail(ctx, "put "+name, err)
	}
	if werr != nil {
		return r.fail(ctx, "put "+name, werr)
	}
	switch res.code {
	case 0:
		return nil
	case exitNoHashTool:
		return errNoHashTool
	case exitMismatch:
		return fmt.Errorf("%s: put %s: %w: the server has %s, expected %s", r, name, remote.ErrHashMismatch, strings.TrimSpace(string(res.out)), f.want)
	case exitNotFound:
		return fmt.Errorf("%s: put %s: the temporary file %s vanished", r, name, f.tmpName)
	case exitIsDir:
		return fmt.Errorf("%s: put %s: a directory of that name is in the way", r, name)
	}
	return fmt.Errorf("%s: put %s: %w", r, name, scriptError("publish", res))
}

// prestarted is a finishJob being started in the background.
type prestarted struct {
	ch    chan *finishJob
	taken bool
}

// prestartFinish starts the finishing script while the upload goes on (unless the
// account is known to run no commands).
func (r *Remote) prestartFinish(ctx context.Context, name, tmpName, want string) *prestarted {
	p := &prestarted{ch: make(chan *finishJob, 1)}
	if r.noExec.Load() {
		p.ch <- nil
	} else {
		go func() { p.ch <- r.startFinish(ctx, name, tmpName, want, true) }()
	}
	return p
}

// take returns the job (nil if none) for commit.
func (p *prestarted) take() *finishJob {
	p.taken = true
	return <-p.ch
}

// abort ends the job unless it was taken.
func (p *prestarted) abort() {
	if !p.taken {
		if j := p.take(); j != nil {
			j.abort()
		}
	}
}

func (r *Remote) putExec(ctx context.Context, name string, src remote.Source, opt remote.PutOptions, gz bool) (res remote.PutResult, err error) {
	tmpName := remote.TempName(name, src.SHA256)
	fin := r.prestartFinish(ctx, name, tmpName, src.SHA256)
	defer fin.abort()
	s, err := r.client.NewSession()
	if err != nil {
		return res, r.fail(ctx, "put "+name, err)
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	stdin, err := s.StdinPipe()
	if err != nil {
		return res, r.fail(ctx, "put "+name, err)
	}
	stdout, err := s.StdoutPipe()
	if err != nil {
		return res, r.fail(ctx, "put "+name, err)
	}
	var se limitedBuffer
	s.Stderr = &se
	// Print the temporary file's size (emptying it if it is longer than the source),
	// then append stdin (decompressed, with gz) to it.
	appendCmd := "cat"
	if gz {
		appendCmd = "gzip -dc"
	}
	script := "t=" + shq(r.execPath(tmpName)) + `; if [ ! -f "$t" ]; then : > "$t" || exit 1; fi; ` +
		`n=$(stat -c %s "$t" 2>/dev/null || wc -c < "$t") || exit 1; n=$((n)); ` +
		`if [ "$n" -gt ` + strconv.FormatInt(src.Size, 10) + ` ]; then : > "$t" || exit 1; n=0; fi; printf '%s\n' "$n"; exec ` + appendCmd + ` >> "$t"`
	if err := s.Start(command(script)); err != nil {
		return res, r.fail(ctx, "put "+name, err)
	}
	wait := func(what string) error {
		err := s.Wait()
		var ee *xssh.ExitError
		if errors.As(err, &ee) {
			return scriptError(what, execResult{code: ee.ExitStatus(), stderr: se.String()})
		}
		return err
	}
	br := bufio.NewReader(stdout)
	have, err := readSize(br)
	if err != nil {
		stdin.Close()
		if e := wait("upload"); e != nil {
			err = e
		}
		return res, r.fail(ctx, "put "+name, err)
	}
	res.Resumed = have
	buf := make([]byte, 256<<10)
	var w io.Writer = stdin
	var zw *gzip.Writer
	wire := &countingWriter{w: stdin}
	// The encoder writes in pieces of a few hundred bytes: gather them into full SSH
	// packets (32 KiB) before they reach the channel.
	bw := bufio.NewWriterSize(wire, 32<<10)
	if gz {
		zw, _ = gzip.NewWriterLevel(bw, gzip.HuffmanOnly) // a valid level: never fails
		w = zw
	}
	n, err := io.CopyBuffer(w, &progressReader{ctx, io.NewSectionReader(src.R, have, src.Size-have), opt.Progress}, buf)
	if zw != nil {
		if cerr := zw.Close(); err == nil {
			err = cerr
		}
		if ferr := bw.Flush(); err == nil {
			err = ferr
		}
	}
	res.Sent = n
	if gz {
		res.Compressed = wire.n
	}
	stdin.Close()
	// Wait even after a failed read, so that cat has written what it got before a retry
	// looks at the temporary file's size.
	if werr := wait("upload"); err == nil {
		err = werr
	}
	if err != nil {
		return res, r.fail(ctx, "put "+name, err)
	}
	stop()
	s.Close()

	j := fin.take()
	if j == nil {
		return res, fmt.Errorf("%s: put %s: %w", r, name, errNoShell)
	}
	err = j.commit(ctx)
	if !errors.Is(err, errNoHashTool) {
		return res, err
	}
	// No hash tool on the server: read the file back over exec.
	got, err := r.hashBack(ctx, tmpName)
	if err != nil {
		return res, r.fail(ctx, "put "+name+": verify", err)
	}
	if got != src.SHA256 {
		r.run(ctx, "rm -f "+shq(r.execPath(tmpName)), nil)
		return res, fmt.Errorf("%s: put %s: %w: the server has %s, expected %s", r, name, remote.ErrHashMismatch, got, src.SHA256)
	}
	j = r.startFinish(ctx, name, tmpName, src.SHA256, false)
	return res, j.commit(ctx)
}

// readSize skips to the marker and reads the decimal number on the next line.
func readSize(br *bufio.Reader) (int64, error) {
	if err := skipMarker(br); err != nil {
		return 0, err
	}
	line, err := br.ReadString('\n')
	if err != nil {
		return 0, fmt.Errorf("no size from the server: %v", err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(line), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad size %q from the server", strings.TrimSpace(line))
	}
	return n, nil
}

// skipMarker reads up to and including the marker line (after at most 1 MiB of noise).
func skipMarker(br *bufio.Reader) error {
	var skipped int
	for skipped < 1<<20 {
		line, err := br.ReadString('\n')
		if line == marker+"\n" {
			return nil
		}
		if err != nil {
			return errNoShell
		}
		skipped += len(line)
	}
	return errNoShell
}

// Get streams name from offset off.
func (r *Remote) Get(ctx context.Context, name string, off int64) (io.ReadCloser, error) {
	if err := remote.CheckName(name); err != nil {
		return nil, err
	}
	if off < 0 {
		return nil, fmt.Errorf("%s: get %s: negative offset %d", r, name, off)
	}
	if r.useSFTP {
		return r.getSFTP(ctx, name, off)
	}
	return r.getExec(ctx, name, off)
}

func (r *Remote) getSFTP(ctx context.Context, name string, off int64) (io.ReadCloser, error) {
	c, done, err := r.acquire(ctx)
	if err != nil {
		return nil, err
	}
	f, err := c.Open(r.sftpPath(name))
	if errors.Is(err, fs.ErrNotExist) {
		done(true)
		return nil, fmt.Errorf("%s: %s: %w", r, name, remote.ErrNotFound)
	}
	if err != nil {
		done(false)
		return nil, r.fail(ctx, "get "+name, err)
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("not a regular file")
	}
	if err == nil {
		_, err = f.Seek(off, io.SeekStart)
	}
	if err != nil {
		f.Close()
		done(false)
		return nil, r.fail(ctx, "get "+name, err)
	}
	pr, pw := io.Pipe()
	g := &getReader{r: pr, finished: make(chan struct{})}
	go func() {
		defer close(g.finished)
		_, err := f.WriteTo(pw) // concurrent reads, written in order
		if err == nil {
			err = io.EOF
		} else {
			err = r.fail(ctx, "get "+name, err)
		}
		g.err = err
		f.Close()
		pw.CloseWithError(err)
	}()
	g.close = func() {
		pr.Close()
		select {
		case <-g.finished:
			done(g.err == io.EOF)
		default:
			done(false) // stop reading ahead: close the session
		}
	}
	return g, nil
}

type getReader struct {
	r        io.Reader
	finished chan struct{}
	err      error
	close    func()
	closed   bool
}

func (g *getReader) Read(p []byte) (int, error) { return g.r.Read(p) }

func (g *getReader) Close() error {
	if !g.closed {
		g.closed = true
		g.close()
	}
	return nil
}

func (r *Remote) getExec(ctx context.Context, name string, off int64) (io.ReadCloser, error) {
	s, err := r.client.NewSession()
	if err != nil {
		return nil, r.fail(ctx, "get "+name, err)
	}
	stop := context.AfterFunc(ctx, func() { s.Close() })
	var se limitedBuffer
	s.Stderr = &se
	stdout, err := s.StdoutPipe()
	if err == nil {
		read := `exec cat "$p"`
		if off > 0 {
			read = `exec tail -c +` + strconv.FormatInt(off+1, 10) + ` "$p"`
		}
		err = s.Start(command("p=" + shq(r.execPath(name)) + `; if [ ! -f "$p" ]; then exit 44; fi; ` + read))
	}
	fail := func(err error) (io.ReadCloser, error) {
		stop()
		s.Close()
		return nil, err
	}
	if err != nil {
		return fail(r.fail(ctx, "get "+name, err))
	}
	br := bufio.NewReaderSize(stdout, 256<<10)
	err = skipMarker(br)
	if err == nil {
		_, err = br.Peek(1) // the first byte, or EOF at once when the file is missing or empty
	}
	if err != nil {
		werr := s.Wait()
		var ee *xssh.ExitError
		switch {
		case ctx.Err() != nil:
			return fail(r.fail(ctx, "get "+name, ctx.Err()))
		case errors.As(werr, &ee) && ee.ExitStatus() == exitNotFound:
			return fail(fmt.Errorf("%s: %s: %w", r, name, remote.ErrNotFound))
		case werr == nil && err == io.EOF:
			stop()
			return io.NopCloser(bytes.NewReader(nil)), nil
		case errors.As(werr, &ee):
			return fail(r.fail(ctx, "get "+name, scriptError("read", execResult{code: ee.ExitStatus(), stderr: se.String()})))
		}
		return fail(r.fail(ctx, "get "+name, err))
	}
	return &execReader{br: br, s: s, stop: stop, r: r, ctx: ctx, name: name, se: &se}, nil
}

// execReader streams a command's stdout and reports its failure instead of EOF.
type execReader struct {
	br   *bufio.Reader
	s    *xssh.Session
	stop func() bool
	r    *Remote
	ctx  context.Context
	name string
	se   *limitedBuffer
	err  error
}

func (e *execReader) Read(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.br.Read(p)
	if err == io.EOF {
		werr := e.s.Wait()
		var ee *xssh.ExitError
		switch {
		case e.ctx.Err() != nil:
			err = e.r.fail(e.ctx, "get "+e.name, e.ctx.Err())
		case errors.As(werr, &ee):
			err = e.r.fail(e.ctx, "get "+e.name, scriptError("read", execResult{code: ee.ExitStatus(), stderr: e.se.String()}))
		case werr != nil:
			err = e.r.fail(e.ctx, "get "+e.name, werr)
		}
	} else if err != nil {
		err = e.r.fail(e.ctx, "get "+e.name, err)
	}
	e.err = err
	return n, err
}

func (e *execReader) Close() error {
	e.stop()
	e.s.Close()
	return nil
}

// Delete removes a published file.
func (r *Remote) Delete(ctx context.Context, name string) error {
	if err := remote.CheckName(name); err != nil {
		return err
	}
	if r.useSFTP {
		c, done, err := r.acquire(ctx)
		if err != nil {
			return err
		}
		p := r.sftpPath(name)
		fi, err := c.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			done(true)
			return fmt.Errorf("%s: %s: %w", r, name, remote.ErrNotFound)
		}
		if err == nil && fi.IsDir() {
			err = fmt.Errorf("is a directory")
		}
		if err == nil {
			err = c.Remove(p)
		}
		done(err == nil)
		return r.fail(ctx, "delete "+name, err)
	}
	res, err := r.run(ctx, "p="+shq(r.execPath(name))+"; d="+shq(r.execDir())+
		`; if [ -d "$p" ] && [ ! -h "$p" ]; then exit 47; fi; if [ ! -e "$p" ] && [ ! -h "$p" ]; then exit 44; fi; rm -f "$p" || exit 1; sync "$d" 2>/dev/null; exit 0`, nil)
	if err != nil {
		return r.fail(ctx, "delete "+name, err)
	}
	switch res.code {
	case 0:
		return nil
	case exitNotFound:
		return fmt.Errorf("%s: %s: %w", r, name, remote.ErrNotFound)
	case exitIsDir:
		return fmt.Errorf("%s: delete %s: is a directory", r, name)
	}
	return fmt.Errorf("%s: delete %s: %w", r, name, scriptError("rm", res))
}

// Hash computes name's sha256 on the server (sha256sum over exec), or by reading it back
// where the account runs no commands.
func (r *Remote) Hash(ctx context.Context, name string) (string, error) {
	if err := remote.CheckName(name); err != nil {
		return "", err
	}
	if !r.noExec.Load() {
		res, err := r.run(ctx, "p="+shq(r.execPath(name))+`; if [ ! -f "$p" ]; then exit 44; fi; `+shHash+`scopectl_sha256 < "$p"`, nil)
		switch {
		case err == nil && res.code == 0:
			h := strings.ToLower(strings.Fields(string(res.out) + " x")[0])
			if b, e := hex.DecodeString(h); e == nil && len(b) == sha256.Size {
				return h, nil
			}
			return "", fmt.Errorf("%s: hash %s: unexpected output %q", r, name, firstLine(string(res.out)))
		case err == nil && res.code == exitNotFound:
			return "", fmt.Errorf("%s: %s: %w", r, name, remote.ErrNotFound)
		case err == nil && res.code == exitNoHashTool:
		case errors.Is(err, errNoShell) && r.useSFTP:
			r.noExec.Store(true)
		case err != nil:
			return "", r.fail(ctx, "hash "+name, err)
		default:
			return "", fmt.Errorf("%s: hash %s: %w", r, name, scriptError("sha256sum", res))
		}
	}
	return r.hashBack(ctx, name)
}

// hashBack reads a file back and hashes it here.
func (r *Remote) hashBack(ctx context.Context, name string) (string, error) {
	rc, err := r.Get(ctx, name, 0)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	h := sha256.New()
	if _, err := io.Copy(h, rc); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Run runs a sh script on the server (remote.Runner); stderr is appended to the output.
func (r *Remote) Run(ctx context.Context, script string) (string, int, error) {
	if r.noExec.Load() {
		return "", -1, fmt.Errorf("%s: this account cannot run commands (SFTP only)", r)
	}
	res, err := r.run(ctx, script, nil)
	if err != nil {
		return "", -1, err
	}
	return string(res.out) + res.stderr, res.code, nil
}

// RunInput runs a sh script on the server with stdin as its standard input
// (remote.InputRunner): data such as secrets never appears on a command line.
func (r *Remote) RunInput(ctx context.Context, script string, stdin io.Reader) (string, int, error) {
	if r.noExec.Load() {
		return "", -1, fmt.Errorf("%s: this account cannot run commands (SFTP only)", r)
	}
	res, err := r.run(ctx, script, stdin)
	if err != nil {
		return "", -1, err
	}
	return string(res.out) + res.stderr, res.code, nil
}
