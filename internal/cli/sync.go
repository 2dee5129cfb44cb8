package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/daydreamlive/scopectl/internal/atomicfile"
	"github.com/daydreamlive/scopectl/internal/library"
	"github.com/daydreamlive/scopectl/internal/lorasync"
	"github.com/daydreamlive/scopectl/internal/remote"
	_ "github.com/daydreamlive/scopectl/internal/remote/agent" // http(s):// backend: scopectl agent
	_ "github.com/daydreamlive/scopectl/internal/remote/croc"  // croc:// backend
	_ "github.com/daydreamlive/scopectl/internal/remote/file"  // file:// backend
	_ "github.com/daydreamlive/scopectl/internal/remote/s3"    // s3:// backend
	_ "github.com/daydreamlive/scopectl/internal/remote/ssh"   // ssh:// backend
	"github.com/daydreamlive/scopectl/internal/secret"
	"github.com/daydreamlive/scopectl/internal/store"
)

// remoteFlags are the options every command that opens a remote takes.
type remoteFlags struct {
	acceptNewHostKey bool
	knownHosts       string
	parallel         string
	relay            string
	crocWait         string
	compress         string
	allowHTTP        bool
	kube             kubeTargetFlags // pod/status on Kubernetes (kube.go)
}

func (f *remoteFlags) add(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.acceptNewHostKey, "accept-new-host-key", false, "SSH: add an unknown host key to known_hosts (a changed key is always refused)")
	cmd.Flags().StringVar(&f.knownHosts, "known-hosts", "", "SSH: known_hosts file (default ~/.ssh/known_hosts)")
	cmd.Flags().StringVar(&f.parallel, "parallel", "", "parallel streams/chunks per file (backend default when empty)")
	cmd.Flags().StringVar(&f.relay, "relay", "", "croc: relay address host:port (default: the public croc relay; its password comes from CROC_PASS)")
	cmd.Flags().StringVar(&f.crocWait, "croc-wait", "", "croc: how long to wait for the peer (default 10m)")
	cmd.Flags().StringVar(&f.compress, "compress", "", "SSH: auto (default: large files that shrink go gzip-compressed over exec) or off")
	cmd.Flags().BoolVar(&f.allowHTTP, "allow-http", false, "allow plain http:// to a non-loopback agent or S3 endpoint (test networks only: traffic is not encrypted)")
}

// openRunner opens a remote that can run commands (ssh://, ssh+pty://).
func (a *app) openRunner(ctx context.Context, raw string, f remoteFlags) (remote.Remote, remote.Runner, error) {
	r, err := a.openRemote(ctx, raw, f)
	if err != nil {
		return nil, nil, err
	}
	run, ok := r.(remote.Runner)
	if !ok {
		r.Close()
		return nil, nil, usageError("%s cannot run commands: want ssh:// or ssh+pty://", r)
	}
	return r, run, nil
}

func (a *app) openRemote(ctx context.Context, raw string, f remoteFlags) (remote.Remote, error) {
	opts := map[string]string{}
	if f.allowHTTP {
		opts["allow_http"] = "true"
	}
	if f.crocWait != "" {
		opts["wait"] = f.crocWait
	}
	if p := os.Getenv("CROC_PASS"); p != "" { // as the croc CLI reads it; never a flag
		opts["relay_pass"] = p
	}
	for k, v := range map[string]string{"parallel": f.parallel, "relay": f.relay, "compress": f.compress, "s3_endpoint": a.cfg.S3Endpoint, "s3_region": a.cfg.S3Region} {
		if v != "" {
			opts[k] = v
		}
	}
	env := remote.Env{
		Secrets:          secret.Default,
		Lookup:           a.cfg.Secret,
		KnownHosts:       f.knownHosts,
		AcceptNewHostKey: f.acceptNewHostKey,
		Options:          opts,
	}
	return remote.Open(ctx, raw, env)
}

func (a *app) syncCmd() *cobra.Command {
	var opt lorasync.Options
	var to string
	var rf remoteFlags
	cmd := &cobra.Command{
		Use:   "sync [NAME...|--all] --to REMOTE",
		Short: "Make a remote LoRA folder hold library LoRAs, in the form Scope applies exactly",
		Long: "Sends only what is missing or different (verified by size and sha256), publishes each file\n" +
			"atomically and resumes interrupted uploads. Keeps Scope's lora_manifest.json on the remote\n" +
			"correct. --delete removes only files scopectl put there before (recorded in the folder's\n" +
			".scopectl-owned, the record lora install keeps too), and one changed since only with --force.\n\n" +
			"Remotes: " + strings.Join(remote.Schemes(), ", ") + " URLs; a plain path is a local folder.",
		RunE: func(cmd *cobra.Command, args []string) error {
			if to == "" {
				to = a.cfg.LoRADir
			}
			if len(args) > 0 && opt.All {
				return usageError("name LoRAs or use --all, not both")
			}
			opt.Names = args
			lib, err := a.library()
			if err != nil {
				return err
			}
			opt.Progress = a.progress()
			if strings.HasPrefix(to, "k8s://") {
				return a.kubeSync(cmd.Context(), to, rf, lib, opt)
			}
			r, err := a.openRemote(cmd.Context(), to, rf)
			if err != nil {
				return err
			}
			defer r.Close()
			res, err := lorasync.Sync(cmd.Context(), lib, r, opt)
			if res != nil {
				if oerr := a.out(res, func(w io.Writer) { printSync(w, res) }); oerr != nil {
					return oerr
				}
			}
			return err
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "remote URL (default: the lora_dir setting); k8s://CONTEXT/NAMESPACE/NAME syncs every ready replica of a Scope deployment through its agent sidecar")
	cmd.Flags().BoolVar(&opt.All, "all", false, "sync every library LoRA")
	cmd.Flags().BoolVar(&opt.Delete, "delete", false, "remove files scopectl put there before that are not being synced now")
	cmd.Flags().BoolVar(&opt.DryRun, "dry-run", false, "show the plan, change nothing")
	cmd.Flags().BoolVar(&opt.Force, "force", false, "replace files scopectl did not put there; pass the base-model gate")
	cmd.Flags().StringVar(&opt.Pipeline, "pipeline", "", "refuse LoRAs whose base model does not fit this Scope pipeline")
	rf.add(cmd)
	rf.kube.addTarget(cmd)
	return cmd
}

func printSync(w io.Writer, res *lorasync.Result) {
	puts, skips, dels := 0, 0, 0
	for _, a := range res.Actions {
		verb := a.Op
		if res.DryRun {
			verb = "would " + a.Op
		}
		switch a.Op {
		case "put":
			puts++
			extra := ""
			if a.Resumed > 0 {
				extra = fmt.Sprintf(", resumed after %s", humanBytes(a.Resumed))
			}
			fmt.Fprintf(w, "%-10s %s (%s, %s%s)\n", verb, a.File, humanBytes(a.Size), a.Reason, extra)
		case "skip":
			skips++
			fmt.Fprintf(w, "%-10s %s (%s)\n", verb, a.File, a.Reason)
		case "delete":
			dels++
			fmt.Fprintf(w, "%-10s %s (%s)\n", verb, a.File, a.Reason)
		}
	}
	for _, x := range res.Warnings {
		fmt.Fprintln(w, "note: "+x)
	}
	if res.DryRun {
		var size int64
		for _, a := range res.Actions {
			if a.Op == "put" {
				size += a.Size
			}
		}
		fmt.Fprintf(w, "%s (dry run): would send %d (%s), %d unchanged, would delete %d\n", res.Remote, puts, humanBytes(size), skips, dels)
		return
	}
	fmt.Fprintf(w, "%s: %d sent (%s), %d unchanged, %d deleted\n", res.Remote, puts, humanBytes(res.Sent), skips, dels)
}

func (a *app) pullCmd() *cobra.Command {
	var rf remoteFlags
	var name, forLoRA string
	cmd := &cobra.Command{
		Use:   "pull REMOTE/PATH...",
		Short: "Bring files (trained checkpoints, samples) from a remote into the library, origin recorded",
		Long: "Downloads resume after an interruption. A .safetensors file is verified as a Wan LoRA\n" +
			"before it enters the library; a sample (" + strings.Join(library.SampleExts, " ") + ")\n" +
			"is kept in the library too, with the LoRA it shows when --lora names one.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if name != "" && len(args) != 1 {
				return usageError("--name needs exactly one file")
			}
			for _, arg := range args {
				if f := path.Base(arg); !strings.HasSuffix(f, ".safetensors") && !library.IsSample(f) {
					return usageError("%s: pull takes LoRAs (.safetensors) and samples (%s)", remote.Redact(arg), strings.Join(library.SampleExts, " "))
				}
			}
			lib, err := a.library()
			if err != nil {
				return err
			}
			if forLoRA != "" {
				if _, err := lib.Store.GetLoRA(cmd.Context(), forLoRA); err != nil {
					return fmt.Errorf("--lora %s: %w", forLoRA, err)
				}
			}
			results := []*library.AddResult{}
			samples := []store.Sample{}
			for _, arg := range args {
				res, sm, err := a.pullOne(cmd.Context(), lib, arg, name, forLoRA, rf)
				if err != nil {
					return err
				}
				if sm != nil {
					samples = append(samples, *sm)
				} else {
					results = append(results, res)
				}
			}
			return a.out(map[string]any{"results": results, "samples": samples}, func(w io.Writer) {
				for _, r := range results {
					fmt.Fprintf(w, "%-7s %s  %s  %.12s\n", r.Status, r.LoRA.Name, r.LoRA.Base, r.LoRA.SHA256)
				}
				for _, sm := range samples {
					fmt.Fprintf(w, "sample  %s  %.12s  %s\n", sm.Name, sm.SHA256, sm.Path)
				}
			})
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "library name (default: the file name)")
	cmd.Flags().StringVar(&forLoRA, "lora", "", "the library LoRA the pulled samples show")
	rf.add(cmd)
	return cmd
}

// splitRemotePath turns REMOTE/PATH into the folder URL and the file name.
func splitRemotePath(raw string) (dir, file string, err error) {
	if !strings.Contains(raw, "://") {
		abs, err := filepath.Abs(raw)
		if err != nil {
			return "", "", err
		}
		return "file://" + filepath.Dir(abs), filepath.Base(abs), nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", "", usageError("%s: %v", remote.Redact(raw), err)
	}
	file = path.Base(u.Path)
	if u.Path == "" || file == "/" || file == "." {
		return "", "", usageError("%s: name a file (REMOTE/PATH/file.safetensors)", remote.Redact(raw))
	}
	u.Path = path.Dir(u.Path)
	return u.String(), file, nil
}

func (a *app) pullOne(ctx context.Context, lib *library.Library, raw, name, forLoRA string, rf remoteFlags) (*library.AddResult, *store.Sample, error) {
	dir, file, err := splitRemotePath(raw)
	if err != nil {
		return nil, nil, err
	}
	if err := remote.CheckName(file); err != nil {
		return nil, nil, err
	}
	r, err := a.openRemote(ctx, dir, rf)
	if err != nil {
		return nil, nil, err
	}
	defer r.Close()
	size := int64(-1)
	if es, err := r.List(ctx); err == nil {
		for _, e := range es {
			if e.Name == file {
				size = e.Size
			}
		}
	}
	// Download into the data dir, resuming a partial file from an earlier attempt.
	incoming := filepath.Join(a.cfg.DataDir, "incoming")
	if err := os.MkdirAll(incoming, 0o700); err != nil {
		return nil, nil, err
	}
	part := filepath.Join(incoming, atomicfile.TempMarker+strings.NewReplacer("/", "_", ":", "_").Replace(remote.Redact(dir))+"_"+file)
	f, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	defer func() {
		// A failed pull keeps a partial file to resume from, but never an empty one (after
		// the rename below, part is gone and this does nothing).
		if fi, err := os.Stat(part); err == nil && fi.Size() == 0 {
			os.Remove(part)
		}
	}()
	have, _ := f.Seek(0, io.SeekEnd)
	if size >= 0 && have > size {
		f.Truncate(0)
		have, _ = f.Seek(0, io.SeekStart)
	}
	if size < 0 || have < size {
		rc, err := r.Get(ctx, file, have)
		if err != nil {
			if errors.Is(err, remote.ErrNotFound) {
				os.Remove(part) // nothing left to resume from
			}
			return nil, nil, fmt.Errorf("%s: %w", remote.Redact(raw), err)
		}
		t := a.progress().Start("pull", file, size)
		t.Add(have)
		_, err = io.Copy(io.MultiWriter(f, t), rc)
		rc.Close()
		t.Finish()
		if err != nil {
			return nil, nil, fmt.Errorf("pulling %s (run again to resume): %w", remote.Redact(raw), err)
		}
	}
	if err := f.Sync(); err != nil {
		return nil, nil, err
	}
	f.Close()
	final := filepath.Join(incoming, file)
	if err := os.Rename(part, final); err != nil {
		return nil, nil, err
	}
	defer os.Remove(final)
	if library.IsSample(file) {
		if name != "" && filepath.Ext(name) == "" {
			name += filepath.Ext(file)
		}
		sm, err := lib.AddSample(ctx, final, name, forLoRA, remote.Redact(raw))
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", remote.Redact(raw), err)
		}
		return nil, &sm, nil
	}
	// The downloaded file is scopectl's own and removed below: a hardlink is as good as a copy.
	res, err := lib.Add(ctx, final, library.AddOptions{Name: name, Origin: store.Origin{Kind: "remote", URL: remote.Redact(raw)}, Link: true})
	if err != nil && errors.Is(err, library.ErrNotLoRA) {
		return nil, nil, fmt.Errorf("%s: %w", remote.Redact(raw), err)
	}
	return res, nil, err
}
