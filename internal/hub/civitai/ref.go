package civitai

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// Ref names a CivitAI model version, or a model (whose latest version is meant) when
// VersionID is 0. FileID, set only by an AIR with "+fileId", pins one file of the version.
type Ref struct {
	ModelID, VersionID int64
	FileID             int64
}

// String is the canonical short form: civitai:V, civitai:model/M or civitai:model/M@V.
func (r Ref) String() string {
	switch {
	case r.ModelID != 0 && r.VersionID != 0:
		return fmt.Sprintf("civitai:model/%d@%d", r.ModelID, r.VersionID)
	case r.VersionID != 0:
		return fmt.Sprintf("civitai:%d", r.VersionID)
	case r.ModelID != 0:
		return fmt.Sprintf("civitai:model/%d", r.ModelID)
	}
	return "civitai:?"
}

// civitaiHosts are the site hosts whose model page URLs ParseRef reads.
var civitaiHosts = map[string]bool{
	"civitai.com": true, "www.civitai.com": true, "civitai.green": true, "www.civitai.green": true,
}

// ParseRef reads a CivitAI reference:
//
//	civitai:VERSION_ID
//	civitai:model/MODEL_ID            (latest version)
//	civitai:model/MODEL_ID@VERSION_ID
//	https://civitai.com/models/MODEL_ID[/slug][?modelVersionId=VERSION_ID]
//	https://civitai.com/model-versions/VERSION_ID
//	https://civitai.com/api/download/models/VERSION_ID
//	urn:air:<ecosystem>:<type>:civitai:MODEL_ID[@VERSION_ID][+FILE_ID][.format]
//
// (also the AIR forms without "urn:" or "urn:air:", and civitai.green URLs).
func ParseRef(s string) (Ref, error) {
	in := strings.TrimSpace(s)
	bad := func(why string) (Ref, error) {
		return Ref{}, fmt.Errorf("civitai: %q is not a CivitAI reference (%s); use civitai:VERSION_ID, a https://civitai.com/models/… URL or an AIR urn:air:…:civitai:MODEL@VERSION: %w",
			clip(in), why, ErrBadRef)
	}
	if in == "" {
		return bad("empty")
	}
	if len(in) > 2048 {
		return bad("too long")
	}
	low := strings.ToLower(in)
	switch {
	case strings.HasPrefix(low, "civitai:"):
		rest := in[len("civitai:"):]
		if m, ok := strings.CutPrefix(rest, "model/"); ok {
			mid, vid, found := strings.Cut(m, "@")
			model, err := parseID(mid)
			if err != nil {
				return bad("model id: " + err.Error())
			}
			r := Ref{ModelID: model}
			if found {
				if r.VersionID, err = parseID(vid); err != nil {
					return bad("version id: " + err.Error())
				}
			}
			return r, nil
		}
		v, err := parseID(rest)
		if err != nil {
			return bad("version id: " + err.Error())
		}
		return Ref{VersionID: v}, nil
	case strings.HasPrefix(low, "http://"), strings.HasPrefix(low, "https://"), strings.HasPrefix(low, "civitai.com/"),
		strings.HasPrefix(low, "www.civitai.com/"):
		return parseURLRef(in, bad)
	}
	if strings.Contains(low, ":civitai:") || strings.HasPrefix(low, "urn:air:") || strings.HasPrefix(low, "air:") {
		return parseAIR(in, bad)
	}
	return bad("unknown form")
}

func parseURLRef(in string, bad func(string) (Ref, error)) (Ref, error) {
	raw := in
	if !strings.Contains(raw, "://") {
		raw = "https://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return bad("unparsable URL")
	}
	if u.User != nil {
		return bad("URL with user info")
	}
	if !civitaiHosts[strings.ToLower(u.Hostname())] || u.Port() != "" {
		return bad("not a civitai.com URL")
	}
	parts := strings.Split(strings.Trim(u.EscapedPath(), "/"), "/")
	q := u.Query()
	versionFromQuery := func() (int64, error) {
		vs := q["modelVersionId"]
		if len(vs) == 0 {
			return 0, nil
		}
		if len(vs) > 1 {
			return 0, fmt.Errorf("modelVersionId given %d times", len(vs))
		}
		return parseID(vs[0])
	}
	switch {
	case len(parts) >= 2 && parts[0] == "models":
		model, err := parseID(parts[1])
		if err != nil {
			return bad("model id: " + err.Error())
		}
		if len(parts) > 3 {
			return bad("unexpected path after the model slug")
		}
		v, err := versionFromQuery()
		if err != nil {
			return bad("modelVersionId: " + err.Error())
		}
		return Ref{ModelID: model, VersionID: v}, nil
	case len(parts) == 2 && parts[0] == "model-versions":
		v, err := parseID(parts[1])
		if err != nil {
			return bad("version id: " + err.Error())
		}
		return Ref{VersionID: v}, nil
	case len(parts) == 4 && parts[0] == "api" && parts[1] == "download" && parts[2] == "models":
		v, err := parseID(parts[3])
		if err != nil {
			return bad("version id: " + err.Error())
		}
		return Ref{VersionID: v}, nil
	}
	return bad("not a model page URL")
}

// parseAIR reads [urn:][air:]{ecosystem}:{type}:civitai:{id}[@{version}][+{fileId}][.{format}].
func parseAIR(in string, bad func(string) (Ref, error)) (Ref, error) {
	s := in
	if len(s) >= 4 && strings.EqualFold(s[:4], "urn:") {
		s = s[4:]
	}
	if len(s) >= 4 && strings.EqualFold(s[:4], "air:") {
		s = s[4:]
	}
	segs := strings.Split(s, ":")
	// ecosystem and type are optional, source and id are required
	if len(segs) < 2 || len(segs) > 4 {
		return bad("AIR needs {ecosystem}:{type}:civitai:{id}")
	}
	src := segs[len(segs)-2]
	if !strings.EqualFold(src, "civitai") {
		return bad("AIR source is " + clip(src) + ", not civitai")
	}
	for _, seg := range segs[:len(segs)-2] {
		if seg == "" || !isAIRWord(seg) {
			return bad("malformed AIR ecosystem or type")
		}
	}
	id := segs[len(segs)-1]
	// strip .format (it never contains '@' or '+')
	if i := strings.LastIndexByte(id, '.'); i >= 0 {
		if !isAIRWord(id[i+1:]) || id[i+1:] == "" {
			return bad("malformed AIR format")
		}
		id = id[:i]
	}
	var r Ref
	var err error
	if i := strings.IndexByte(id, '+'); i >= 0 {
		if r.FileID, err = parseID(id[i+1:]); err != nil {
			return bad("AIR file id: " + err.Error())
		}
		id = id[:i]
	}
	mid, vid, found := strings.Cut(id, "@")
	if r.ModelID, err = parseID(mid); err != nil {
		return bad("AIR model id: " + err.Error())
	}
	if found {
		if r.VersionID, err = parseID(vid); err != nil {
			return bad("AIR version id: " + err.Error())
		}
	}
	if r.FileID != 0 && r.VersionID == 0 {
		return bad("AIR pins a file but no version")
	}
	return r, nil
}

func isAIRWord(s string) bool {
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// parseID reads a positive decimal id (no sign, no leading zeros games beyond what
// strconv accepts, at most 18 digits so it fits int64 with room).
func parseID(s string) (int64, error) {
	if s == "" {
		return 0, fmt.Errorf("missing")
	}
	if len(s) > 18 {
		return 0, fmt.Errorf("too long")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("%q is not a number", clip(s))
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%q is not a positive number", clip(s))
	}
	return n, nil
}
