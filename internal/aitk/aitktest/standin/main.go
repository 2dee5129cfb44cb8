// Command standin is a protocol-faithful stand-in for ostris/ai-toolkit's
// `python run.py CONFIG` (commit 27a03a91, v0.12.26), for tests of code that
// drives ai-toolkit where no GPU or Python ML stack exists. It simulates a
// Wan2.1 LoRA training run of the diffusion_trainer / sd_trainer process and
// writes what the real trainer writes, at the same moments and under the same
// names: config.yaml, step checkpoints (non-atomically, pruned by ctime),
// optimizer.pt, samples (atomically via samples/.tmp), loss_log.db, the job
// control database row, the console lines and tqdm bars, and the exit codes of
// run.py. It is an independent implementation written from ai-toolkit's
// source; it must not import scopectl's internal/aitk, which parses these
// formats, so that the two check each other.
//
// It is invoked exactly as ai-toolkit is: `python run.py CONFIG... [-r] [-n
// NAME] [-l LOG]`; every argument up to and including the first one ending in
// "run.py" is ignored, so the binary can be installed as `python` next to an
// empty run.py, or run as `standin run.py CONFIG`.
//
// Knobs (environment): STANDIN_STEP_MS (20) time per training step;
// STANDIN_SAVE_MS (40) time to write one checkpoint (written in 8 chunks);
// STANDIN_CKPT_BYTES (1 MiB) approximate tensor bytes per checkpoint, whole
// modules of Wan blocks in order, capped at the full transformer for the
// config's rank and model (1.3B when name_or_path says 1.3B, else 14B; 14B
// at linear 16 reaches ~153 MB, enough for a 147 MB benchmark);
// STANDIN_LOAD_MS (2) time per model-loading phase; STANDIN_SAMPLE_MS (5)
// time per sample image; STANDIN_OOM_AT=STEP CUDA OOM from that step on
// (STANDIN_OOM_TIMES=N consecutive OOMs only; the 4th in a row aborts, as in
// the real trainer); STANDIN_FAIL_AT=STEP a RuntimeError traceback at that
// step (exit 1); STANDIN_HANG_SAVE=1 hang forever half way through writing
// the first checkpoint; STANDIN_NO_LOSSLOG=1 behave like an image older than
// loss_log.db; STANDIN_OLD_DB=1 behave like a trainer older than the save_now
// and sample_now columns (it neither reads nor clears them).
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	aitkVersion = "0.12.26"
	aitkRepo    = "https://github.com/ostris/ai-toolkit"
)

// ---- output (print_acc, tqdm, the -l tee) ----

type console struct {
	mu       sync.Mutex
	out, err io.Writer
	logf     *os.File
	ascii    bool // tqdm draws '#' bars when the stream has no encoding (the -l Logger wrapper)
}

var con = &console{out: os.Stdout, err: os.Stderr}

func (c *console) write(toErr bool, s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.out
	if toErr {
		w = c.err
	}
	io.WriteString(w, s)
	if c.logf != nil {
		io.WriteString(c.logf, s)
	}
}

// printf is Python print(): stdout, newline added.
func printf(format string, a ...any) { con.write(false, fmt.Sprintf(format, a...)+"\n") }
func println(s string)               { con.write(false, s+"\n") }
func eprint(s string)                { con.write(true, s) }

// ---- Python exceptions ----

// pyException is a Python exception on its way up to run.py.
type pyException struct {
	typ, msg string
	frames   []string // traceback frames below run.py's job.run(), outermost first
}

func (e *pyException) Error() string { return e.msg }

func pyErr(typ, msg string, frames ...string) error {
	return &pyException{typ: typ, msg: msg, frames: frames}
}

// keyboardInterrupt is raised (panicked) where Python would deliver SIGINT.
type keyboardInterrupt struct{}

var interrupted atomic.Bool

// checkInterrupt delivers a pending SIGINT as KeyboardInterrupt, at a point
// where the Python interpreter would run its signal handler.
func checkInterrupt() {
	if interrupted.Load() {
		interrupted.Store(false)
		panic(keyboardInterrupt{})
	}
}

// sleep is time.sleep / GPU work as seen from Python: interruptible by SIGINT.
func sleep(d time.Duration) {
	end := time.Now().Add(d)
	for {
		checkInterrupt()
		left := time.Until(end)
		if left <= 0 {
			return
		}
		if left > 5*time.Millisecond {
			left = 5 * time.Millisecond
		}
		time.Sleep(left)
	}
}

// raise panics with a Python exception.
func raise(err error) { panic(err) }

var runPyPath = "run.py"

func traceback(e *pyException, viaRunPy bool) string {
	var b strings.Builder
	b.WriteString("Traceback (most recent call last):\n")
	fmt.Fprintf(&b, "  File %q, line 147, in <module>\n    main()\n", runPyPath)
	if viaRunPy {
		fmt.Fprintf(&b, "  File %q, line 132, in main\n    raise e\n", runPyPath)
		fmt.Fprintf(&b, "  File %q, line 119, in main\n    job = get_job(config_file, args.name)\n", runPyPath)
	}
	for _, f := range e.frames {
		b.WriteString(f)
		if !strings.HasSuffix(f, "\n") {
			b.WriteByte('\n')
		}
	}
	if e.msg == "" {
		b.WriteString(e.typ + "\n")
	} else {
		b.WriteString(e.typ + ": " + e.msg + "\n")
	}
	return b.String()
}

func frame(file string, line int, fn, code string) string {
	return fmt.Sprintf("  File \"%s\", line %d, in %s\n    %s", filepath.Join(toolkitRoot(), file), line, fn, code)
}

func toolkitRoot() string {
	if d := filepath.Dir(runPyPath); d != "" {
		return d
	}
	return "."
}

// ---- run.py ----

const usage = "usage: run.py [-h] [-r] [-n NAME] [-l LOG] config_file_list [config_file_list ...]\n"

func main() {
	args := os.Args[1:]
	for i, a := range args {
		if strings.HasSuffix(a, "run.py") {
			if abs, err := filepath.Abs(a); err == nil {
				runPyPath = abs
			}
			args = args[i+1:]
			break
		}
	}
	var configs []string
	var recover_ bool
	var name, logPath string
	hasName := false
	for i := 0; i < len(args); i++ {
		a := args[i]
		val := func() string {
			if v, ok := strings.CutPrefix(a, "--"); ok && strings.Contains(v, "=") {
				_, after, _ := strings.Cut(a, "=")
				return after
			}
			if len(a) > 2 && a[0] == '-' && a[1] != '-' {
				return a[2:]
			}
			if i+1 >= len(args) {
				eprint(usage + fmt.Sprintf("run.py: error: argument %s: expected one argument\n", a))
				os.Exit(2)
			}
			i++
			return args[i]
		}
		switch {
		case a == "-h" || a == "--help":
			os.Stdout.WriteString(usage)
			os.Exit(0)
		case a == "-r" || a == "--recover":
			recover_ = true
		case a == "-n" || a == "--name" || strings.HasPrefix(a, "--name=") || (strings.HasPrefix(a, "-n") && len(a) > 2):
			name, hasName = val(), true
		case a == "-l" || a == "--log" || strings.HasPrefix(a, "--log=") || (strings.HasPrefix(a, "-l") && len(a) > 2):
			logPath = val()
		case strings.HasPrefix(a, "-") && a != "-":
			eprint(usage + fmt.Sprintf("run.py: error: unrecognized arguments: %s\n", a))
			os.Exit(2)
		default:
			configs = append(configs, a)
		}
	}
	if len(configs) == 0 {
		eprint(usage + "run.py: error: the following arguments are required: config_file_list\n")
		os.Exit(2)
	}

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT)
	go func() {
		for range sigs {
			interrupted.Store(true)
		}
	}()

	if logPath != "" {
		dir := filepath.Dir(logPath)
		if strings.IndexByte(logPath, '/') < 0 {
			dir = ""
		}
		if _, err := os.Stat(dir); err != nil {
			if err := os.MkdirAll(dir, 0o777); err != nil || dir == "" {
				// os.makedirs('') raises: -l needs a path with a folder part.
				e := &pyException{typ: "FileNotFoundError", msg: fmt.Sprintf("[Errno 2] No such file or directory: '%s'", dir), frames: []string{
					fmt.Sprintf("  File %q, line 111, in main\n    setup_log_to_file(args.log)", runPyPath),
					frame("toolkit/print.py", 33, "setup_log_to_file", "os.makedirs(os.path.dirname(filename))"),
					"  File \"<frozen os>\", line 225, in makedirs"}}
				eprint(traceback(e, false))
				os.Exit(1)
			}
		}
		f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			eprint(fmt.Sprintf("Traceback (most recent call last):\nPermissionError: [Errno 13] %v\n", err))
			os.Exit(1)
		}
		con.logf = f
		con.ascii = true
	}

	plural := "s"
	if len(configs) == 1 {
		plural = ""
	}
	printf("Running %d job%s", len(configs), plural)
	completed, failed := 0, 0
	for _, cfgPath := range configs {
		var jobName *string
		if hasName {
			jobName = &name
		}
		err := runOne(cfgPath, jobName)
		switch {
		case err == nil:
			completed++
		case errors.Is(err, errInterrupted):
			if !recover_ {
				println("")
				println("========================================")
				println("Job stopped")
				println("========================================")
				exit(0)
			}
		default:
			failed++
			if !recover_ {
				printEndMessage(completed, failed)
				var pe *pyException
				if !errors.As(err, &pe) {
					pe = &pyException{typ: "Exception", msg: err.Error()}
				}
				eprint(traceback(pe, true))
				exit(1)
			}
		}
	}
	exit(0)
}

var errInterrupted = errors.New("KeyboardInterrupt")

func exit(code int) {
	if con.logf != nil {
		con.logf.Close()
	}
	os.Exit(code)
}

func printEndMessage(completed, failed int) {
	s := func(n int, word string) string {
		if n == 1 {
			return fmt.Sprintf("%d %s", n, word)
		}
		return fmt.Sprintf("%d %ss", n, word)
	}
	println("")
	println("========================================")
	println("Result:")
	println(" - " + s(completed, "completed job"))
	if failed > 0 {
		println(" - " + s(failed, "failure"))
	}
	println("========================================")
}

// runOne is the body of run.py's try block for one config: get_job, job.run,
// and the except clauses up to (not including) re-raising. It returns nil,
// errInterrupted (KeyboardInterrupt, on_error done) or the exception.
func runOne(cfgPath string, name *string) (err error) {
	var p *job
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		if _, ok := r.(keyboardInterrupt); ok {
			if p == nil {
				println("Error running on_error: cannot access local variable 'job' where it is not associated with a value")
			} else {
				p.onError(nil, true)
			}
			err = errInterrupted
			return
		}
		e, ok := r.(error)
		if !ok {
			panic(r)
		}
		err = e
		printf("Error running job: %s", e.Error())
		if p == nil {
			println("Error running on_error: cannot access local variable 'job' where it is not associated with a value")
		} else {
			p.onError(e, false)
		}
	}()
	cfg, err := getConfig(cfgPath, name)
	if err != nil {
		raise(err)
	}
	p = newJob(cfg) // raises on a config ai-toolkit rejects
	p.run()
	return nil
}
