package server

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzLineSplitter: fed in any pieces, the splitter gives back the input's whole lines
// (cut at maxLogLine), its offset is just after the last one, and what it holds back is
// the unfinished rest.
func FuzzLineSplitter(f *testing.F) {
	f.Add([]byte("a\nbc\r\nd"), uint8(2))
	f.Add([]byte("no newline at all"), uint8(1))
	f.Add(bytes.Repeat([]byte("x"), maxLogLine+10), uint8(7))
	f.Add([]byte("\n\n\xff\xfe\n"), uint8(0))
	f.Fuzz(func(t *testing.T, in []byte, step uint8) {
		var sp lineSplitter
		var got []string
		n := int(step) + 1
		for i := 0; i < len(in); i += n {
			got = append(got, sp.feed(in[i:min(i+n, len(in))])...)
		}
		if sp.Off+int64(len(sp.part)) != int64(len(in)) {
			t.Fatalf("offset %d + held %d != %d", sp.Off, len(sp.part), len(in))
		}
		if bytes.IndexByte(sp.part, '\n') >= 0 || len(sp.part) >= maxLogLine {
			t.Fatalf("held back %d bytes with a newline or too long", len(sp.part))
		}
		// the same input in one piece gives the same lines
		var one lineSplitter
		if all := one.feed(in); strings.Join(all, "\n") != strings.Join(got, "\n") || one.Off != sp.Off {
			t.Fatalf("pieces and whole differ")
		}
		for _, l := range got {
			if len(l) > maxLogLine*3 || strings.Contains(l, "\n") {
				t.Fatalf("line of %d bytes", len(l))
			}
		}
	})
}
