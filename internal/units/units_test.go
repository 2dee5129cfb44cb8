package units

import "testing"

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
