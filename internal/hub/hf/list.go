package hf

import "context"

// Entry is one file of a repo listing.
type Entry struct {
	Path string `json:"path"`
	Size int64  `json:"size"`
}

// List resolves ref's revision and lists every file of the repo at that commit (ref.Paths
// is ignored), so that a caller can pick the files to Pull. It sends what Pull sends first
// and fails the same way (ErrNotFound, ErrAuth, ErrGated…).
func (c *Client) List(ctx context.Context, ref Ref) (commit string, files []Entry, err error) {
	ref.Paths = nil
	if err := ref.validate(); err != nil {
		return "", nil, err
	}
	p, err := c.newSession(ref, defaultHTTP)
	if err != nil {
		return "", nil, err
	}
	if commitRe.MatchString(ref.Revision) {
		p.commit = ref.Revision
	} else if p.commit, err = p.resolveCommit(ctx); err != nil {
		return "", nil, err
	}
	listing, err := p.listTree(ctx)
	if err != nil {
		return "", nil, err
	}
	for _, f := range listing {
		files = append(files, Entry{Path: f.Path, Size: f.Size})
	}
	return p.commit, files, nil
}
