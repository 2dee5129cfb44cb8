package progress

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestRetry(t *testing.T) {
	var b bytes.Buffer
	Reporter{W: &b}.Retry("civitai", 2, 8, "civitai.com answered 503", 1500*time.Millisecond)
	if got := b.String(); got != "scopectl: civitai: attempt 2/8 failed (civitai.com answered 503); retrying in 1.5s\n" {
		t.Errorf("text: %q", got)
	}
	b.Reset()
	Reporter{Mode: JSON, W: &b}.Retry("hf: a.safetensors", 1, 0, "reset", time.Second)
	var ev map[string]any
	if err := json.Unmarshal(b.Bytes(), &ev); err != nil || ev["event"] != "retry" || ev["attempt"] != 1.0 || ev["wait_s"] != 1.0 || ev["reason"] != "reset" || strings.Count(b.String(), "\n") != 1 {
		t.Errorf("json: %q %v", b.String(), err)
	}
	Reporter{}.Retry("x", 1, 1, "y", 0) // no writer: nothing, no panic
}
