package library

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/daydreamlive/scopectl/internal/store"
)

// racyWindow: a file modified this close to (or after) the moment it was read may have
// been modified again within the same timestamp tick, so its record is not trusted and it
// is read again (git's "racily clean" rule; 2 s covers the coarsest filesystems).
const racyWindow = 2 * time.Second

// knownHash returns the sha256 recorded for path if the file, as fi describes it now, has
// the size, mtime and inode it had when it was last read in full; "" otherwise.
func (l *Library) knownHash(ctx context.Context, path string, fi os.FileInfo) string {
	rec, err := l.Store.GetFileHash(ctx, path)
	if err != nil {
		return ""
	}
	ino, _ := inode(fi)
	mt := fi.ModTime()
	if rec.Size != fi.Size() || rec.MtimeNs != mt.UnixNano() || rec.Inode != ino || !mt.Before(rec.CheckedAt.Add(-racyWindow)) {
		return ""
	}
	return rec.SHA256
}

// remember records sha as the content of path, read from start on, if the file still has
// the size, mtime and inode it had before it was read (before). A record is only a cache:
// failing to write one is not an error.
func (l *Library) remember(ctx context.Context, path string, before os.FileInfo, sha string, start time.Time) {
	now, err := os.Stat(path)
	if err != nil || before == nil || !sameStat(before, now) {
		return
	}
	ino, _ := inode(now)
	_ = l.Store.PutFileHash(ctx, store.FileHash{Path: path, Size: now.Size(), MtimeNs: now.ModTime().UnixNano(), Inode: ino, SHA256: sha, CheckedAt: start})
}

func sameStat(a, b os.FileInfo) bool {
	ia, _ := inode(a)
	ib, _ := inode(b)
	return a.Size() == b.Size() && a.ModTime().Equal(b.ModTime()) && ia == ib
}

// fileSHA returns path's sha256: the recorded one while the file is unchanged, else by
// reading it in full (and recording what it read). hashed says whether it was read.
func (l *Library) fileSHA(ctx context.Context, path, label string, fi os.FileInfo) (sha string, hashed bool, err error) {
	if sha := l.knownHash(ctx, path, fi); sha != "" {
		return sha, false, nil
	}
	start := time.Now()
	if sha, err = l.hash(path, label, fi.Size()); err != nil {
		return "", true, err
	}
	l.remember(ctx, path, fi, sha, start)
	return sha, true, nil
}

// ErrDamaged marks a library entry whose file no longer holds the content it was added
// with (missing, edited in place, truncated).
var ErrDamaged = errors.New("damaged library entry")

// DamagedError says which entry is damaged, how, and what to do about it.
type DamagedError struct {
	Name    string
	SHA256  string
	Path    string
	Missing bool
	Detail  string // what is wrong with Path
	Fix     string // what to run
}

func (d *DamagedError) Error() string {
	return fmt.Sprintf("library entry %q (sha256 %.12s) is damaged: %s %s; %s", d.Name, d.SHA256, d.Path, d.Detail, d.Fix)
}

func (d *DamagedError) Unwrap() error { return ErrDamaged }

// Check confirms that e's file still holds e's content: it exists, has e's size and e's
// sha256 (read again only when its size, mtime or inode changed since it was last read).
// A damaged entry gives a *DamagedError (errors.Is ErrDamaged) that names the fix.
func (l *Library) Check(ctx context.Context, e store.LoRA) error {
	fi, err := os.Stat(e.Path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return damaged(e, true, "does not exist")
	case err != nil:
		return fmt.Errorf("library entry %q: %w", e.Name, err)
	case !fi.Mode().IsRegular():
		return damaged(e, false, "is not a regular file")
	case fi.Size() != e.Size:
		return damaged(e, false, fmt.Sprintf("has %d bytes, not the %d it was added with", fi.Size(), e.Size))
	}
	sha, _, err := l.fileSHA(ctx, e.Path, e.Name, fi)
	if err != nil {
		return fmt.Errorf("library entry %q: %w", e.Name, err)
	}
	if sha != e.SHA256 {
		return damaged(e, false, fmt.Sprintf("was changed (its sha256 is now %.12s)", sha))
	}
	return nil
}

func damaged(e store.LoRA, missing bool, detail string) *DamagedError {
	return &DamagedError{Name: e.Name, SHA256: e.SHA256, Path: e.Path, Missing: missing, Detail: detail, Fix: Fix(e, missing)}
}

// Fix says how to repair a damaged entry: bring the original content back (lora add, a
// hub pull, scan of the folder an in-place file moved to) or forget the entry (lora rm).
func Fix(e store.LoRA, missing bool) string {
	rm := fmt.Sprintf("`scopectl lora rm %s`", quoteArg(e.Name))
	again := ""
	for _, o := range e.Origins {
		switch o.Kind {
		case "huggingface":
			ref := o.Repo
			if o.Revision != "" && o.Revision != "main" {
				ref += "@" + o.Revision
			}
			again = fmt.Sprintf("`scopectl hub pull hf://%s/%s`", ref, o.File)
		case "civitai":
			if o.VersionID != "" {
				again = "`scopectl hub pull civitai:" + o.VersionID + "`"
			}
		case "remote":
			if o.URL != "" {
				again = "`scopectl pull " + quoteArg(o.URL) + "`"
			}
		}
		if again != "" {
			break
		}
	}
	from := ""
	for _, o := range e.Origins {
		if o.Kind == "local" && o.Path != "" && o.Path != e.Path {
			from = o.Path
			break
		}
	}
	var b strings.Builder
	if !e.Managed {
		// Indexed where it lies: the file is the entry.
		if missing {
			fmt.Fprintf(&b, "if it moved, `scopectl lora scan` its new folder (the entry follows it); ")
		} else {
			fmt.Fprintf(&b, "`scopectl lora scan %s` indexes what is there now in its place; ", quoteArg(filepath.Dir(e.Path)))
		}
	}
	b.WriteString("to restore it, `scopectl lora add` a file with the original content")
	switch {
	case again != "":
		fmt.Fprintf(&b, " (or %s)", again)
	case from != "":
		fmt.Fprintf(&b, " (it was added from %s; if that file was edited since, get the original again)", from)
	}
	fmt.Fprintf(&b, "; or forget it with %s", rm)
	return b.String()
}

// quoteArg quotes s for a shell when it needs it.
func quoteArg(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\n'\"\\$`*?[]{}()<>|&;#~!") {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
