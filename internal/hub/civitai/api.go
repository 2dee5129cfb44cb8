package civitai

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/daydreamlive/scopectl/internal/lora"
)

// Version is one CivitAI model version, as scopectl uses it.
type Version struct {
	ID, ModelID  int64
	Name         string // version name, e.g. "v1.0"
	ModelName    string
	ModelType    string // CivitAI ModelType: LORA, LoCon, DoRA, Checkpoint, …
	BaseModel    string // CivitAI's label, e.g. "Wan Video 14B t2v"
	TrainedWords []string
	ModelPage    string // https://civitai.com/models/M?modelVersionId=V
	Files        []FileInfo
	Base         string // our base id via MapBaseModel (lora.BaseUnknown when unmapped)
	BaseNote     string // why Base is unknown ("" when mapped), see BaseNote
	EarlyAccess  bool   // in early access now (downloads need an unlocked account)
	PinnedFileID int64  // from an AIR "+fileId": PrimarySafetensors returns that file
	Downloads    int64
}

// FileInfo is one file of a version.
type FileInfo struct {
	ID          int64
	Name        string // untrusted; Download sanitizes it
	SizeKB      float64
	Type        string // Model, Pruned Model, Training Data, …
	Primary     bool
	Format      string // SafeTensor, PickleTensor, GGUF, Diffusers, Other, …
	SHA256      string // lower-case hex, "" when CivitAI publishes none
	DownloadURL string
}

// SizeBytes is the size CivitAI lists (sizeKB×1024, rounded).
func (f FileInfo) SizeBytes() int64 { return int64(math.Round(f.SizeKB * 1024)) }

// wire types: what CivitAI sends.
type apiFile struct {
	ID       int64   `json:"id"`
	Name     string  `json:"name"`
	SizeKB   float64 `json:"sizeKB"`
	Type     string  `json:"type"`
	Primary  bool    `json:"primary"`
	Metadata struct {
		Format string `json:"format"`
	} `json:"metadata"`
	Hashes      map[string]string `json:"hashes"`
	DownloadURL string            `json:"downloadUrl"`
}

type apiVersion struct {
	ID                int64     `json:"id"`
	ModelID           int64     `json:"modelId"`
	Name              string    `json:"name"`
	BaseModel         string    `json:"baseModel"`
	TrainedWords      []string  `json:"trainedWords"`
	Availability      string    `json:"availability"`
	EarlyAccessEndsAt *string   `json:"earlyAccessEndsAt"`
	Model             *apiModel `json:"model"`
	Files             []apiFile `json:"files"`
	DownloadURL       string    `json:"downloadUrl"`
	Stats             struct {
		DownloadCount int64 `json:"downloadCount"`
	} `json:"stats"`
}

type apiModel struct {
	ID            int64        `json:"id"`
	Name          string       `json:"name"`
	Type          string       `json:"type"`
	ModelVersions []apiVersion `json:"modelVersions"`
	Stats         struct {
		DownloadCount int64 `json:"downloadCount"`
	} `json:"stats"`
}

type apiModelList struct {
	Items    []apiModel `json:"items"`
	Metadata struct {
		NextCursor any `json:"nextCursor"`
	} `json:"metadata"`
}

// maxNameLen bounds strings scopectl keeps from CivitAI answers.
const maxNameLen = 512

// cleanText makes untrusted display text safe: no control characters, bounded length.
func cleanText(s string) string {
	if len(s) > 4*maxNameLen {
		s = s[:4*maxNameLen]
	}
	return clip(s)
}

// normSHA256 returns the lower-case hex digest, or "" unless s is 64 hex characters.
func normSHA256(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	if len(s) != 64 {
		return ""
	}
	for i := 0; i < len(s); i++ {
		if !(s[i] >= '0' && s[i] <= '9' || s[i] >= 'a' && s[i] <= 'f') {
			return ""
		}
	}
	return s
}

func hashOf(h map[string]string, name string) string {
	for k, v := range h {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return ""
}

// decodeVersion parses a model-version answer (GET /model-versions/{id} or /by-hash/{h}).
// siteBase is the base URL used to build the model page link.
func decodeVersion(data []byte, siteBase string, now time.Time) (*Version, error) {
	var av apiVersion
	if err := json.Unmarshal(data, &av); err != nil {
		return nil, fmt.Errorf("civitai: the model-version answer is not the expected JSON: %w", ErrProtocol)
	}
	return convertVersion(&av, nil, siteBase, now)
}

// convertVersion checks and converts a wire version. m, when set, is the model it came
// from (the models endpoint nests versions without modelId or model).
func convertVersion(av *apiVersion, m *apiModel, siteBase string, now time.Time) (*Version, error) {
	if av.ID <= 0 {
		return nil, fmt.Errorf("civitai: the model-version answer has no valid id: %w", ErrProtocol)
	}
	v := &Version{
		ID:        av.ID,
		ModelID:   av.ModelID,
		Name:      cleanText(av.Name),
		BaseModel: cleanText(av.BaseModel),
		Downloads: max(av.Stats.DownloadCount, 0),
	}
	if m != nil {
		if v.ModelID == 0 {
			v.ModelID = m.ID
		}
		v.ModelName, v.ModelType = cleanText(m.Name), cleanText(m.Type)
	}
	if av.Model != nil {
		if av.Model.Name != "" {
			v.ModelName = cleanText(av.Model.Name)
		}
		if av.Model.Type != "" {
			v.ModelType = cleanText(av.Model.Type)
		}
	}
	if v.ModelID <= 0 {
		return nil, fmt.Errorf("civitai: model version %d: the answer has no valid modelId: %w", av.ID, ErrProtocol)
	}
	for i, w := range av.TrainedWords {
		if i >= 64 {
			break
		}
		if w = cleanText(w); w != "" {
			v.TrainedWords = append(v.TrainedWords, w)
		}
	}
	v.Base = MapBaseModel(v.BaseModel)
	v.BaseNote = BaseNote(v.BaseModel)
	v.ModelPage = modelPage(siteBase, v.ModelID, v.ID)
	v.EarlyAccess = strings.EqualFold(av.Availability, "EarlyAccess")
	if av.EarlyAccessEndsAt != nil {
		if t, err := time.Parse(time.RFC3339, *av.EarlyAccessEndsAt); err == nil && t.After(now) {
			v.EarlyAccess = true
		}
	}
	for i, af := range av.Files {
		if i >= 256 {
			break
		}
		size := af.SizeKB
		if math.IsNaN(size) || math.IsInf(size, 0) || size < 0 || size > 1<<40 {
			size = 0
		}
		v.Files = append(v.Files, FileInfo{
			ID:          af.ID,
			Name:        cleanText(af.Name),
			SizeKB:      size,
			Type:        cleanText(af.Type),
			Primary:     af.Primary,
			Format:      cleanText(af.Metadata.Format),
			SHA256:      normSHA256(hashOf(af.Hashes, "SHA256")),
			DownloadURL: strings.TrimSpace(af.DownloadURL),
		})
	}
	return v, nil
}

func modelPage(siteBase string, model, version int64) string {
	p := fmt.Sprintf("%s/models/%d", strings.TrimRight(siteBase, "/"), model)
	if version > 0 {
		p += fmt.Sprintf("?modelVersionId=%d", version)
	}
	return p
}

func (c *Client) siteBase() string {
	b, err := c.base()
	if err != nil {
		return DefaultBaseURL
	}
	return b.String()
}

// Version fetches a version's metadata. A Ref with only ModelID resolves to the model's
// latest version (the first CivitAI lists).
func (c *Client) Version(ctx context.Context, ref Ref) (*Version, error) {
	v, err := c.version(ctx, ref)
	return v, c.guard(err)
}

func (c *Client) version(ctx context.Context, ref Ref) (*Version, error) {
	if ref.ModelID < 0 || ref.VersionID < 0 || ref.ModelID == 0 && ref.VersionID == 0 {
		return nil, fmt.Errorf("civitai: empty reference: %w", ErrBadRef)
	}
	site := c.siteBase()
	vid := ref.VersionID
	var model *apiModel
	if vid == 0 {
		var m apiModel
		w := what{desc: fmt.Sprintf("model %d", ref.ModelID), page: modelPage(site, ref.ModelID, 0)}
		if err := c.getJSON(ctx, fmt.Sprintf("/api/v1/models/%d", ref.ModelID), nil, w, &m); err != nil {
			return nil, err
		}
		if m.ID != ref.ModelID {
			return nil, fmt.Errorf("civitai: asked for model %d, CivitAI answered model %d: %w", ref.ModelID, m.ID, ErrProtocol)
		}
		if len(m.ModelVersions) == 0 || m.ModelVersions[0].ID <= 0 {
			return nil, fmt.Errorf("civitai: model %d (%s) has no published version to download: %w", m.ID, cleanText(m.Name), ErrNotFound)
		}
		vid = m.ModelVersions[0].ID
		model = &m
	}
	w := what{desc: fmt.Sprintf("model version %d", vid), page: modelPage(site, ref.ModelID, vid)}
	if ref.ModelID == 0 {
		w.page = ""
	}
	var raw json.RawMessage
	if err := c.getJSON(ctx, fmt.Sprintf("/api/v1/model-versions/%d", vid), nil, w, &raw); err != nil {
		return nil, err
	}
	v, err := decodeVersion(raw, site, c.clock())
	if err != nil {
		return nil, err
	}
	if v.ID != vid {
		return nil, fmt.Errorf("civitai: asked for model version %d, CivitAI answered version %d: %w", vid, v.ID, ErrProtocol)
	}
	if ref.ModelID != 0 && v.ModelID != ref.ModelID {
		return nil, fmt.Errorf("civitai: version %d belongs to model %d, not model %d: check the URL or AIR: %w", v.ID, v.ModelID, ref.ModelID, ErrNotFound)
	}
	if model != nil {
		if v.ModelName == "" {
			v.ModelName = cleanText(model.Name)
		}
		if v.ModelType == "" {
			v.ModelType = cleanText(model.Type)
		}
	}
	if ref.FileID != 0 {
		found := false
		for _, f := range v.Files {
			found = found || f.ID == ref.FileID
		}
		if !found {
			return nil, fmt.Errorf("civitai: version %d has no public file %d: %w", v.ID, ref.FileID, ErrNotFound)
		}
		v.PinnedFileID = ref.FileID
	}
	return v, nil
}

// ByHash identifies a file by its SHA256 (or CivitAI's AutoV2, the first 10 hex digits):
// it returns the version the file belongs to, ErrNotFound when CivitAI does not know it.
func (c *Client) ByHash(ctx context.Context, sha256 string) (*Version, error) {
	v, err := c.byHash(ctx, sha256)
	return v, c.guard(err)
}

func (c *Client) byHash(ctx context.Context, h string) (*Version, error) {
	h = strings.ToUpper(strings.TrimSpace(h))
	ok := len(h) == 64 || len(h) == 10
	for i := 0; ok && i < len(h); i++ {
		ok = h[i] >= '0' && h[i] <= '9' || h[i] >= 'A' && h[i] <= 'F'
	}
	if !ok {
		return nil, fmt.Errorf("civitai: %q is not a SHA256 (64 hex digits) or AutoV2 (10 hex digits) hash: %w", clip(h), ErrBadRef)
	}
	short := h
	if len(short) > 12 {
		short = short[:12] + "…"
	}
	w := what{desc: "file with hash " + strings.ToLower(short)}
	var raw json.RawMessage
	err := c.getJSON(ctx, "/api/v1/model-versions/by-hash/"+h, nil, w, &raw)
	if err != nil {
		if isNotFound(err) {
			return nil, fmt.Errorf("civitai: CivitAI knows no published file with hash %s: the file is not from CivitAI, was changed after download, or its version is unpublished: %w", strings.ToLower(short), ErrNotFound)
		}
		return nil, err
	}
	return decodeVersion(raw, c.siteBase(), c.clock())
}

// SearchResult is one model found by Search, with its newest version on the wanted base.
type SearchResult struct {
	ModelID, VersionID int64
	Name               string // model name
	VersionName        string
	BaseModel          string // CivitAI's label
	Base               string // our id
	SizeBytes          int64  // primary file
	Downloads          int64  // model downloads
	URL                string // model page of that version
	EarlyAccess        bool
}

// Search finds LoRAs on CivitAI by text. base filters by base model: one of our ids
// (lora.BaseT2V14B, …) maps to CivitAI's labels; "" means any Wan 2.1 base scopectl
// supports; "any" disables the filter; anything else is passed as a CivitAI baseModel
// label. limit is clamped to 1..100 (default 20).
func (c *Client) Search(ctx context.Context, query string, base string, limit int) ([]SearchResult, error) {
	r, err := c.search(ctx, query, base, limit)
	return r, c.guard(err)
}

func (c *Client) search(ctx context.Context, query, base string, limit int) ([]SearchResult, error) {
	switch {
	case limit <= 0:
		limit = 20
	case limit > 100:
		limit = 100
	}
	query = strings.TrimSpace(query)
	if len(query) > 256 {
		return nil, fmt.Errorf("civitai: search query longer than 256 bytes: %w", ErrBadRef)
	}
	var labels []string
	switch b := strings.TrimSpace(base); {
	case b == "":
		for _, id := range []string{lora.BaseT2V14B, lora.BaseT2V1_3B, lora.BaseI2V14B} {
			labels = append(labels, CivitaiBases(id)...)
		}
	case strings.EqualFold(b, "any"), strings.EqualFold(b, "all"):
	case CivitaiBases(b) != nil:
		labels = CivitaiBases(b)
	default:
		labels = []string{b}
	}
	q := url.Values{}
	if query != "" {
		q.Set("query", query)
	}
	q.Set("types", "LORA")
	q.Set("limit", strconv.Itoa(limit))
	for _, l := range labels {
		q.Add("baseModels", l)
	}
	var list apiModelList
	w := what{desc: fmt.Sprintf("search %q", clip(query))}
	if err := c.getJSON(ctx, "/api/v1/models", q, w, &list); err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, l := range labels {
		want[normBase(l)] = true
	}
	site := c.siteBase()
	var out []SearchResult
	for i := range list.Items {
		m := &list.Items[i]
		if m.ID <= 0 {
			continue
		}
		for j := range m.ModelVersions {
			av := &m.ModelVersions[j]
			if av.ID <= 0 || len(want) > 0 && !want[normBase(av.BaseModel)] {
				continue
			}
			v, err := convertVersion(av, m, site, c.clock())
			if err != nil {
				continue
			}
			r := SearchResult{
				ModelID: v.ModelID, VersionID: v.ID, Name: v.ModelName, VersionName: v.Name,
				BaseModel: v.BaseModel, Base: v.Base, Downloads: max(m.Stats.DownloadCount, 0),
				URL: v.ModelPage, EarlyAccess: v.EarlyAccess,
			}
			if f, ok := primaryFile(v); ok {
				r.SizeBytes = f.SizeBytes()
			}
			out = append(out, r)
			break
		}
		if len(out) >= limit {
			break
		}
	}
	return out, nil
}

func isNotFound(err error) bool { return errors.Is(err, ErrNotFound) }
