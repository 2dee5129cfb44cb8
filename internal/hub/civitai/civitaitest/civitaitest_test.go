package civitaitest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// noRedirect returns a client for s that shows redirects instead of following them.
func noRedirect(s *Server) *http.Client {
	c := s.HTTPClient()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return c
}

func get(t *testing.T, c *http.Client, u string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "" {
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestDownloadEndpoint(t *testing.T) {
	s := Catalog(t)
	c := noRedirect(s)
	dl := fmt.Sprintf("%s/api/download/models/%d", s.URL(), VersionAuth)
	resp, body := get(t, c, dl)
	if resp.StatusCode != 401 || !strings.Contains(body, "logged in") {
		t.Errorf("anonymous: %d %s", resp.StatusCode, body)
	}
	for _, r := range []struct{ u, h, v string }{
		{dl + "?token=" + Token, "", ""},
		{dl, "Authorization", "Bearer " + Token},
	} {
		resp, _ = get(t, c, r.u, r.h, r.v)
		loc := resp.Header.Get("Location")
		if resp.StatusCode != http.StatusTemporaryRedirect || !strings.HasPrefix(loc, s.CDN.URL) || strings.Contains(loc, Token) {
			t.Errorf("authorized: %d %s", resp.StatusCode, loc)
		}
	}
	resp, body = get(t, c, fmt.Sprintf("%s/api/download/models/%d", s.URL(), VersionEarly), "Authorization", "Bearer "+Token)
	var ea struct{ Error, Deadline string }
	if resp.StatusCode != 403 || json.Unmarshal([]byte(body), &ea) != nil || ea.Error != "Early Access" || ea.Deadline == "" {
		t.Errorf("early access: %d %s", resp.StatusCode, body)
	}
	resp, _ = get(t, c, fmt.Sprintf("%s/api/download/models/%d", s.URL(), VersionArchived))
	if resp.StatusCode != 410 {
		t.Errorf("archived: %d", resp.StatusCode)
	}
	resp, _ = get(t, c, s.URL()+"/api/download/models/999999")
	if resp.StatusCode != 404 {
		t.Errorf("missing: %d", resp.StatusCode)
	}
	s.SetMode(Mode{LoginRedirects: true})
	resp, _ = get(t, c, dl)
	if loc := resp.Header.Get("Location"); resp.StatusCode != 307 || !strings.HasPrefix(loc, "/login?") {
		t.Errorf("browser login redirect: %d %s", resp.StatusCode, loc)
	}
}

func TestCDN(t *testing.T) {
	s := Catalog(t)
	c := s.HTTPClient()
	fid := s.PrimaryFileID(VersionT2V14B)
	data := s.FileData(fid)
	link := s.SignedURL(fid, time.Hour)

	resp, body := get(t, c, link)
	if resp.StatusCode != 200 || body != string(data) || !strings.Contains(resp.Header.Get("Content-Disposition"), `filename="Wan_Big_Anime_Style_v1_0.safetensors"`) {
		t.Errorf("whole file: %d %q", resp.StatusCode, resp.Header.Get("Content-Disposition"))
	}
	resp, body = get(t, c, link, "Range", "bytes=10-19")
	if resp.StatusCode != 206 || body != string(data[10:20]) || resp.Header.Get("Content-Range") != fmt.Sprintf("bytes 10-19/%d", len(data)) {
		t.Errorf("range: %d %q", resp.StatusCode, resp.Header.Get("Content-Range"))
	}
	resp, body = get(t, c, link, "Range", "bytes=-5")
	if resp.StatusCode != 206 || body != string(data[len(data)-5:]) {
		t.Errorf("suffix range: %d", resp.StatusCode)
	}
	resp, _ = get(t, c, link, "Range", fmt.Sprintf("bytes=%d-", len(data)))
	if resp.StatusCode != 416 || resp.Header.Get("Content-Range") != fmt.Sprintf("bytes */%d", len(data)) {
		t.Errorf("unsatisfiable: %d", resp.StatusCode)
	}
	resp, body = get(t, c, link, "Authorization", "Bearer "+Token)
	if resp.StatusCode != 400 || !strings.Contains(body, "Only one auth mechanism") {
		t.Errorf("Authorization on a signed link: %d %s", resp.StatusCode, body)
	}
	u, _ := url.Parse(link)
	q := u.Query()
	q.Set("response-content-disposition", `attachment; filename="other.safetensors"`)
	u.RawQuery = q.Encode()
	resp, body = get(t, c, u.String())
	if resp.StatusCode != 403 || !strings.Contains(body, "SignatureDoesNotMatch") {
		t.Errorf("tampered link: %d %s", resp.StatusCode, body)
	}
	resp, body = get(t, c, s.SignedURL(fid, -time.Minute))
	if resp.StatusCode != 403 || !strings.Contains(body, "expired") {
		t.Errorf("expired link: %d %s", resp.StatusCode, body)
	}
}

func TestSearchEndpoint(t *testing.T) {
	s := Catalog(t)
	c := s.HTTPClient()
	resp, body := get(t, c, s.URL()+"/api/v1/models?query=anime&types=LORA&baseModels=Wan+Video+14B+t2v&baseModels=Wan+Video+1.3B+t2v&limit=1")
	var list struct {
		Items []struct {
			Name string
		}
		Metadata struct{ NextCursor *string }
	}
	if resp.StatusCode != 200 || json.Unmarshal([]byte(body), &list) != nil || len(list.Items) != 1 || list.Items[0].Name != "Wan Big Anime Style" || list.Metadata.NextCursor == nil {
		t.Errorf("search: %d %s", resp.StatusCode, body)
	}
	for _, q := range []string{"limit=0", "limit=101", "query=x&page=2", "types=NOPE"} {
		if resp, _ := get(t, c, s.URL()+"/api/v1/models?"+q); resp.StatusCode != 400 {
			t.Errorf("%s: %d", q, resp.StatusCode)
		}
	}
}
