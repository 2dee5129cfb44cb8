package scope

import (
	"fmt"
	"strings"
	"time"
)

// FormatPyTime formats t like Python's datetime.isoformat() on an aware UTC
// datetime: microsecond precision, the fraction omitted when it is zero, and
// "+00:00" as the offset, e.g. "2026-11-25T12:00:00.123456+00:00".
func FormatPyTime(t time.Time) string {
	t = t.UTC().Truncate(time.Microsecond)
	if t.Nanosecond() == 0 {
		return t.Format("2006-01-02T15:04:05-07:00")
	}
	return t.Format("2006-01-02T15:04:05.000000-07:00")
}

// ParsePyTime parses the ISO 8601 forms Python and pydantic write and accept:
// "T" or " " between date and time, an optional fraction of any length, and
// an offset of "Z", "+HH:MM", "+HHMM" or none (taken as UTC). The result is in UTC.
// Times whose UTC year falls outside Python's 1..9999 are refused: FormatPyTime
// could not write them back in a form Python (or ParsePyTime) reads.
func ParsePyTime(s string) (time.Time, error) {
	t, err := parsePyTime(s)
	if err == nil && (t.Year() < 1 || t.Year() > 9999) {
		return time.Time{}, fmt.Errorf("datetime %q is outside years 1 to 9999 in UTC", s)
	}
	return t, err
}

func parsePyTime(s string) (time.Time, error) {
	in := s
	if len(s) > 10 && s[10] == ' ' {
		s = s[:10] + "T" + s[11:]
	}
	// Go accepts a fractional second after the seconds even when the
	// layout has none, so these layouts cover every fraction length.
	for _, layout := range []string{
		"2006-01-02T15:04:05Z07:00",
		"2006-01-02T15:04:05Z0700",
		"2006-01-02T15:04:05",
	} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	if strings.HasSuffix(s, "z") {
		if t, err := time.Parse("2006-01-02T15:04:05", s[:len(s)-1]); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("invalid ISO 8601 datetime %q", in)
}
