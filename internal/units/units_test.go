package units

import (
	"strconv"
	"testing"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"5242880": 5 << 20, "5MiB": 5 << 20, "16M": 16 << 20, "16mb": 16 << 20, "1GiB": 1 << 30, "64k": 64 << 10, "7 MiB": 7 << 20, "12B": 12} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "x", "-5M", "5T", "1.5M", "99999999999999999999"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
}

// FuzzParseSize: any input either fails or gives a non-negative size that prints back
// to the same number of bytes, and never panics or overflows.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"0", "16M", "5MiB", "1GiB", " 7 kb ", "99999999999999999999", "-1", "1.5M", "4611686018427387904", "4194304G"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("ParseSize(%q) = %d", s, n)
		}
		if m, err := ParseSize(strconv.FormatInt(n, 10)); err != nil || m != n {
			t.Fatalf("ParseSize(%q) = %d, which reads back as %d, %v", s, n, m, err)
		}
	})
}
