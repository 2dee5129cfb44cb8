package secret

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"

	"gopkg.in/yaml.v3"
)

// Canary values. They are obviously fake but shaped like real tokens.
var (
	canaryHF     = "hf_" + "CANARYcanaryCANARYcanary0001"
	canaryRunPod = "rpa_" + "CANARYCANARYCANARYCANARY0002"
	canaryPlain  = "CANARYcanaryCANARY0003"
	canaries     = []string{canaryHF, canaryRunPod, canaryPlain}
)

// noCanary fails the test if any canary (or a long chunk of one) shows up.
func noCanary(t *testing.T, what, out string) {
	t.Helper()
	for _, c := range canaries {
		if strings.Contains(out, c) {
			t.Errorf("%s leaked canary %q: %q", what, c, out)
		}
		// Also catch partial leaks: any 8-char window of the body.
		body := strings.TrimPrefix(strings.TrimPrefix(c, "hf_"), "rpa_")
		for i := 0; i+8 <= len(body); i++ {
			if strings.Contains(out, body[i:i+8]) {
				t.Errorf("%s leaked part %q of canary: %q", what, body[i:i+8], out)
				break
			}
		}
	}
}

func TestRedacted(t *testing.T) {
	cases := []struct{ in, want string }{
		{"", ""},
		{"short", "****"},
		{"hf_short", "****"},
		{"elevenchars", "****"},
		{"hf_" + "abcdefghijklmnopqrstuvwxyzAB12Xy3Q", "hf_…Xy3Q"},
		{"rpa_" + strings.Repeat("A1", 20) + "WXYZ", "rpa_…WXYZ"},
		{"ctx7sk-" + "12345678-1234-1234-1234-123456789abc", "ctx7sk-…9abc"},
		{"AKIA" + "ABCDEFGHIJKL2345", "AKIA…2345"},
		{"hf_" + "abcdefghijk", "hf_…"}, // body < 12: show nothing of it
		{"0123456789abcdef0123456789abcdef", "…cdef"},
		{"sk-" + "proj-abcdefghijklmnopqrst", "sk-proj-…qrst"},
	}
	for _, c := range cases {
		got := New(c.in).Redacted()
		if got != c.want {
			t.Errorf("Redacted(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	if New("").IsSet() || (Secret{}).IsSet() {
		t.Error("empty secret reports set")
	}
	if New("").String() != "<unset>" {
		t.Errorf("unset String = %q", New("").String())
	}
	if got := New(canaryHF).Reveal(); got != canaryHF {
		t.Errorf("Reveal = %q", got)
	}
	if !New(canaryHF).Equal(New(canaryHF)) || New(canaryHF).Equal(New(canaryPlain)) {
		t.Error("Equal")
	}
}

type holder struct {
	Name    string
	Token   Secret
	Ptr     *Secret
	Omit    Secret `json:",omitzero"`
	private Secret
	nested  struct{ s Secret }
}

func newHolder() holder {
	p := New(canaryRunPod)
	h := holder{Name: "x", Token: New(canaryHF), Ptr: &p, private: New(canaryPlain)}
	h.nested.s = New(canaryPlain)
	return h
}

func TestFmtAllVerbs(t *testing.T) {
	s := New(canaryHF)
	h := newHolder()
	verbs := []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T", "%10s", "%-30q", "%.3s", "%#x", "% x", "%08d", "%t", "%p", "%#q", "%U", "%c", "%e"}
	for _, verb := range verbs {
		for _, arg := range []any{s, &s, h, &h, []Secret{s}, map[string]Secret{"k": s}, map[Secret]int{s: 1}, struct{ s Secret }{s}, []any{s}} {
			noCanary(t, "fmt "+verb, fmt.Sprintf(verb, arg))
		}
	}
	noCanary(t, "Sprint", fmt.Sprint(s, h, &h))
	noCanary(t, "Sprintln", fmt.Sprintln(s, h, &h))
	if got := fmt.Sprintf("%v|%s|%q|%x", s, s, s, s); got != `hf_…0001|hf_…0001|"hf_…0001"|hf_…0001` {
		t.Errorf("unexpected formatting %q", got)
	}
	if got := fmt.Sprintf("%#v", s); !strings.Contains(got, "hf_…0001") {
		t.Errorf("%%#v = %q", got)
	}
	if got := fmt.Sprintf("[%10s]", New("tiny")); got != "[      ****]" {
		t.Errorf("width: %q", got)
	}
}

func TestErrors(t *testing.T) {
	s := New(canaryHF)
	base := errors.New("base")
	errs := []error{
		fmt.Errorf("%v", s),
		fmt.Errorf("token %s: %w", s, base),
		fmt.Errorf("outer: %w", fmt.Errorf("inner %+v: %w", newHolder(), base)),
		errors.Join(fmt.Errorf("%q", s), base),
	}
	for _, err := range errs {
		noCanary(t, "error", err.Error())
		noCanary(t, "error %+v", fmt.Sprintf("%+v", err))
	}

	// Redactor.Error scrubs raw values from library errors and keeps Is/As.
	var r Redactor
	r.Add(s)
	r.Add(New(canaryPlain))
	lib := &fs.PathError{Op: "open", Path: "/tmp/" + canaryHF, Err: fs.ErrNotExist}
	wrapped := r.Error(fmt.Errorf("download %s?token=%s: %w", "https://x", canaryPlain, lib))
	noCanary(t, "Redactor.Error", wrapped.Error())
	noCanary(t, "Redactor.Error %v", fmt.Sprintf("%v", wrapped))
	if !errors.Is(wrapped, fs.ErrNotExist) {
		t.Error("errors.Is lost through Redactor.Error")
	}
	var pe *fs.PathError
	if !errors.As(wrapped, &pe) {
		t.Error("errors.As lost through Redactor.Error")
	}
	if !strings.Contains(wrapped.Error(), "hf_…0001") {
		t.Errorf("expected redacted preview in %q", wrapped.Error())
	}
	if r.Error(nil) != nil {
		t.Error("Error(nil) != nil")
	}
	if r.Error(wrapped) != wrapped {
		t.Error("double wrap")
	}
}

func TestJSONAndText(t *testing.T) {
	h := newHolder()
	for _, v := range []any{h, &h, New(canaryHF), []Secret{New(canaryHF)}, map[string]Secret{"a": New(canaryHF)}, map[Secret]string{New(canaryHF): "v"}, map[string]any{"s": New(canaryHF), "p": h.Ptr}} {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		noCanary(t, "json", string(b))
		b, err = json.MarshalIndent(v, "", " ")
		if err != nil {
			t.Fatal(err)
		}
		noCanary(t, "json indent", string(b))
		y, err := yaml.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		noCanary(t, "yaml", string(y))
	}
	b, _ := json.Marshal(struct {
		A Secret
		B *Secret
		C Secret `json:",omitzero"`
	}{})
	if string(b) != `{"A":null,"B":null}` {
		t.Errorf("unset json = %s", b)
	}
	b, _ = json.Marshal(New(canaryHF))
	if string(b) != `"hf_…0001"` {
		t.Errorf("json = %s", b)
	}
	txt, _ := New(canaryHF).MarshalText()
	if string(txt) != "hf_…0001" {
		t.Errorf("text = %s", txt)
	}
	// Decoding into a Secret must not populate it (no Unmarshal methods).
	var dst struct{ Token Secret }
	_ = json.Unmarshal([]byte(`{"Token":"`+canaryHF+`"}`), &dst)
	if dst.Token.IsSet() {
		t.Error("json.Unmarshal populated a Secret")
	}
}

func TestSlog(t *testing.T) {
	var r Redactor
	r.Add(New(canaryHF))
	r.Add(New(canaryRunPod))
	r.Add(New(canaryPlain))

	var buf bytes.Buffer
	opts := &slog.HandlerOptions{Level: slog.LevelDebug}
	handlers := map[string]slog.Handler{
		"json":         slog.NewJSONHandler(&buf, opts),
		"text":         slog.NewTextHandler(&buf, opts),
		"json+redact":  NewSlogHandler(slog.NewJSONHandler(&buf, opts), &r),
		"text+redact":  NewSlogHandler(slog.NewTextHandler(&buf, opts), &r),
		"group+redact": NewSlogHandler(slog.NewJSONHandler(&buf, opts), &r).WithGroup("g").WithAttrs([]slog.Attr{slog.String("pre", canaryPlain)}),
	}
	for name, h := range handlers {
		buf.Reset()
		l := slog.New(h)
		hold := newHolder()
		// Secret values are safe with any handler.
		l.Info("msg", "tok", New(canaryHF), "holder", hold, "ptr", &hold, "secrets", []Secret{New(canaryRunPod)})
		l.With("w", New(canaryHF)).WithGroup("grp").Debug("m", slog.Any("s", New(canaryPlain)))
		if strings.HasSuffix(name, "redact") {
			// Raw strings only with the redacting handler.
			l.Error("failed with "+canaryHF, "err", fmt.Errorf("GET ?token=%s", canaryPlain),
				"raw", canaryRunPod, slog.Group("grp", slog.String("inner", canaryHF)),
				"bytes", []byte(canaryPlain), "any", map[string]string{"k": canaryHF},
				"strs", []string{canaryRunPod}, canaryHF, "key-is-secret")
		}
		noCanary(t, "slog "+name, buf.String())
		if buf.Len() == 0 {
			t.Errorf("%s: no output", name)
		}
	}
}

func TestRedactorRedact(t *testing.T) {
	var r Redactor
	if got := r.Redact("nothing " + canaryHF); got != "nothing "+canaryHF {
		t.Error("empty redactor changed text")
	}
	r.Add(New(""))
	r.Add(New("abc")) // too short, ignored
	long := canaryHF + "EXTRA"
	r.Add(New(canaryHF))
	r.Add(New(long))
	r.Add(New(canaryHF)) // duplicate
	in := "a " + canaryHF + " b " + long + " c " + canaryHF + canaryHF + " abc"
	got := r.Redact(in)
	want := "a hf_…0001 b hf_…XTRA c hf_…0001hf_…0001 abc"
	if got != want {
		t.Errorf("Redact = %q, want %q", got, want)
	}
}

func TestRedactorWriterSplit(t *testing.T) {
	var r Redactor
	r.Add(New(canaryHF))
	r.Add(New(canaryRunPod))
	r.Add(New(canaryPlain))
	text := "start " + canaryHF + " mid " + canaryRunPod + canaryPlain + "\nline2 " + canaryHF + "\n" + canaryPlain
	want := r.Redact(text)
	// Every chunk size, including 1-byte writes that split every canary.
	for chunk := 1; chunk <= len(text); chunk++ {
		var out bytes.Buffer
		w := r.Writer(&out)
		for i := 0; i < len(text); i += chunk {
			end := min(i+chunk, len(text))
			n, err := w.Write([]byte(text[i:end]))
			if err != nil || n != end-i {
				t.Fatalf("Write = %d, %v", n, err)
			}
			noCanary(t, fmt.Sprintf("writer chunk=%d partial", chunk), out.String())
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		noCanary(t, fmt.Sprintf("writer chunk=%d", chunk), out.String())
		if out.String() != want {
			t.Fatalf("chunk=%d: got %q want %q", chunk, out.String(), want)
		}
	}
}

func TestRedactorWriterPassesLinesPromptly(t *testing.T) {
	var r Redactor
	r.Add(New(canaryHF))
	var out bytes.Buffer
	w := r.Writer(&out)
	fmt.Fprint(w, "progress 10%\n")
	if out.String() != "progress 10%\n" {
		t.Errorf("line held back: %q", out.String())
	}
	fmt.Fprint(w, "tail hf_CAN")
	if strings.Contains(out.String(), "hf_CAN") {
		t.Errorf("possible secret prefix emitted early: %q", out.String())
	}
	_ = w.Flush()
	if !strings.HasSuffix(out.String(), "tail hf_CAN") {
		t.Errorf("flush lost data: %q", out.String())
	}
}

func TestRedactorWriterNoSecrets(t *testing.T) {
	var r Redactor
	var out bytes.Buffer
	w := r.Writer(&out)
	fmt.Fprint(w, "abc")
	if out.String() != "abc" {
		t.Errorf("got %q", out.String())
	}
}

func TestRedactorConcurrent(t *testing.T) {
	var r Redactor
	var wg sync.WaitGroup
	var out bytes.Buffer
	w := r.Writer(&out)
	for i := 0; i < 8; i++ {
		wg.Add(2)
		go func(i int) {
			defer wg.Done()
			r.Add(New(fmt.Sprintf("%s-%02d", canaryHF, i)))
		}(i)
		go func() {
			defer wg.Done()
			_ = r.Redact("x " + canaryHF)
			fmt.Fprint(w, "y ")
		}()
	}
	wg.Wait()
	_ = w.Flush()
}

func TestDefaultAndStderr(t *testing.T) {
	if Default == nil {
		t.Fatal("Default is nil")
	}
	// Writer must satisfy io.WriteCloser for exec.Cmd usage.
	var _ interface {
		Write([]byte) (int, error)
		Close() error
	} = Default.Writer(os.Stderr)
}
