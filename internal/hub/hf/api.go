package hf

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// The Hub's JSON answers are untrusted input: decoders below check every field the
// client later uses to name files, and refuse the whole answer when one is unsafe.

var (
	commitRe = regexp.MustCompile(`^[0-9a-f]{40}$`)
	sha1Re   = regexp.MustCompile(`^[0-9a-f]{40}$`)
	sha256Re = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// maxEntries bounds one listing (all pages together).
const maxEntries = 1 << 20

// repoInfo is the part of GET /api/{type}s/{repo}/revision/{rev} that scopectl uses.
type repoInfo struct {
	ID       string    `json:"id"`
	SHA      string    `json:"sha"`
	Private  bool      `json:"private"`
	Gated    any       `json:"gated"` // false, "auto" or "manual"
	Siblings []sibling `json:"siblings"`
}

type sibling struct {
	RFilename string `json:"rfilename"`
	Size      *int64 `json:"size"`
	BlobID    string `json:"blobId"`
	LFS       *struct {
		SHA256      string `json:"sha256"`
		Size        int64  `json:"size"`
		PointerSize int64  `json:"pointerSize"`
	} `json:"lfs"`
}

// decodeRepoInfo parses a model/dataset/space info answer. The commit must be 40 hex
// digits; siblings, when present, must have safe, distinct names.
func decodeRepoInfo(data []byte) (repoInfo, error) {
	var ri repoInfo
	if err := strictJSON(data, &ri); err != nil {
		return repoInfo{}, fmt.Errorf("repo info: %w", err)
	}
	if !commitRe.MatchString(ri.SHA) {
		return repoInfo{}, fmt.Errorf("repo info: commit %q is not 40 lowercase hex digits", clip(ri.SHA))
	}
	if len(ri.Siblings) > maxEntries {
		return repoInfo{}, errors.New("repo info: too many files")
	}
	seen := make(map[string]bool, len(ri.Siblings))
	for _, s := range ri.Siblings {
		if err := safePath(s.RFilename); err != nil {
			return repoInfo{}, fmt.Errorf("repo info: the server listed an unsafe file name %q (%v); refusing the whole repo", clip(s.RFilename), err)
		}
		if seen[s.RFilename] {
			return repoInfo{}, fmt.Errorf("repo info: file %q listed twice", clip(s.RFilename))
		}
		seen[s.RFilename] = true
		if s.Size != nil && *s.Size < 0 {
			return repoInfo{}, fmt.Errorf("repo info: negative size for %q", clip(s.RFilename))
		}
		if s.LFS != nil && (!sha256Re.MatchString(s.LFS.SHA256) || s.LFS.Size < 0) {
			return repoInfo{}, fmt.Errorf("repo info: bad LFS metadata for %q", clip(s.RFilename))
		}
	}
	return ri, nil
}

// treeEntry is one element of GET /api/{type}s/{repo}/tree/{rev}?recursive=true.
type treeEntry struct {
	Type string `json:"type"` // "file" or "directory"
	OID  string `json:"oid"`  // git blob sha1 (of the LFS pointer for LFS files)
	Size int64  `json:"size"`
	Path string `json:"path"`
	LFS  *struct {
		OID         string `json:"oid"` // sha256 of the content
		Size        int64  `json:"size"`
		PointerSize int64  `json:"pointerSize"`
	} `json:"lfs"`
	XetHash string `json:"xetHash"`
}

// remoteFile is a checked file from a listing.
type remoteFile struct {
	Path    string
	Size    int64
	BlobID  string // git blob sha1
	SHA256  string // LFS oid; "" for a file stored in git
	XetHash string
}

// etag is what the Hub sends as the file's (linked) ETag: the sha256 for LFS files, the
// git blob sha1 otherwise. Cache blobs are named by it.
func (f remoteFile) etag() string {
	if f.SHA256 != "" {
		return f.SHA256
	}
	return f.BlobID
}

// decodeTreePage parses one page of a tree listing into files (directories are dropped
// after their names are checked).
func decodeTreePage(data []byte) ([]remoteFile, error) {
	var entries []treeEntry
	if err := strictJSON(data, &entries); err != nil {
		return nil, fmt.Errorf("tree listing: %w", err)
	}
	if len(entries) > maxEntries {
		return nil, errors.New("tree listing: too many entries")
	}
	var files []remoteFile
	for _, e := range entries {
		if err := safePath(e.Path); err != nil {
			return nil, fmt.Errorf("tree listing: the server listed an unsafe file name %q (%v); refusing the whole repo", clip(e.Path), err)
		}
		switch e.Type {
		case "directory":
			continue
		case "file":
		default:
			return nil, fmt.Errorf("tree listing: %q has unknown type %q", clip(e.Path), clip(e.Type))
		}
		f := remoteFile{Path: e.Path, Size: e.Size, BlobID: e.OID}
		if !sha1Re.MatchString(e.OID) {
			return nil, fmt.Errorf("tree listing: %q has a bad git oid %q", clip(e.Path), clip(e.OID))
		}
		if e.Size < 0 {
			return nil, fmt.Errorf("tree listing: %q has a negative size", clip(e.Path))
		}
		if e.LFS != nil {
			if !sha256Re.MatchString(e.LFS.OID) || e.LFS.Size < 0 {
				return nil, fmt.Errorf("tree listing: %q has bad LFS metadata", clip(e.Path))
			}
			f.SHA256, f.Size = e.LFS.OID, e.LFS.Size
		}
		if sha256Re.MatchString(e.XetHash) {
			f.XetHash = e.XetHash
		}
		files = append(files, f)
	}
	return files, nil
}

// checkListing refuses duplicate names and a file that is also a folder of another one
// (snapshots/<commit>/a cannot be both), and sorts the files by path.
func checkListing(files []remoteFile) error {
	if len(files) > maxEntries {
		return errors.New("tree listing: too many entries")
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	names := make(map[string]bool, len(files))
	for i, f := range files {
		if i > 0 && files[i-1].Path == f.Path {
			return fmt.Errorf("tree listing: file %q listed twice", clip(f.Path))
		}
		names[f.Path] = true
	}
	for _, f := range files {
		for d := f.Path; ; {
			i := strings.LastIndexByte(d, '/')
			if i < 0 {
				break
			}
			d = d[:i]
			if names[d] {
				return fmt.Errorf("tree listing: %q is both a file and a folder", clip(d))
			}
		}
	}
	return nil
}

// strictJSON decodes exactly one JSON value into v.
func strictJSON(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("bad JSON: %v", clipErr(err))
	}
	if dec.More() {
		return errors.New("bad JSON: trailing data")
	}
	return nil
}

func clipErr(err error) string { return clip(err.Error()) }

// treeCache is huggingface_hub's trees/<commit>.json (format_version 1), written so that
// its offline snapshot_download can tell a complete snapshot from a partial one.
type treeCache struct {
	FormatVersion int                       `json:"format_version"`
	Files         map[string]treeCacheEntry `json:"files"`
}

type treeCacheEntry struct {
	Size      int64  `json:"size"`
	BlobID    string `json:"blob_id"`
	LFSSHA256 string `json:"lfs_sha256,omitempty"`
	LFSSize   *int64 `json:"lfs_size,omitempty"`
	XetHash   string `json:"xet_hash,omitempty"`
}

func encodeTreeCache(files []remoteFile) ([]byte, error) {
	tc := treeCache{FormatVersion: 1, Files: make(map[string]treeCacheEntry, len(files))}
	for _, f := range files {
		e := treeCacheEntry{Size: f.Size, BlobID: f.BlobID, XetHash: f.XetHash}
		if f.SHA256 != "" {
			size := f.Size
			e.LFSSHA256, e.LFSSize = f.SHA256, &size
		}
		tc.Files[f.Path] = e
	}
	return json.MarshalIndent(tc, "", " ")
}
