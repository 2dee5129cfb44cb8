// Package httpx holds small HTTP helpers shared by the hub clients.
package httpx

import (
	"strconv"
	"strings"
)

// ParseContentRange reads a Content-Range header "bytes START-END/TOTAL" (RFC 9110 §14.4).
// TOTAL may be "*", reported as -1. ok is false for anything malformed, including an end
// before the start or a total not beyond the end.
func ParseContentRange(s string) (start, end, total int64, ok bool) {
	rest, found := strings.CutPrefix(strings.TrimSpace(s), "bytes ")
	if !found {
		return 0, 0, 0, false
	}
	rng, tot, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, 0, false
	}
	a, b, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, 0, false
	}
	var err error
	if start, err = strconv.ParseInt(a, 10, 64); err != nil || start < 0 {
		return 0, 0, 0, false
	}
	if end, err = strconv.ParseInt(b, 10, 64); err != nil || end < start {
		return 0, 0, 0, false
	}
	if tot == "*" {
		return start, end, -1, true
	}
	if total, err = strconv.ParseInt(tot, 10, 64); err != nil || total <= end {
		return 0, 0, 0, false
	}
	return start, end, total, true
}
