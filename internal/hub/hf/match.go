package hf

import (
	"regexp"
	"strings"
)

// matcher filters repo paths the way huggingface_hub's filter_repo_objects does: patterns
// are Python fnmatchcase globs, where '*' also matches '/', a pattern ending in '/' gets a
// trailing '*', and backslashes count as '/'.
type matcher struct {
	include, exclude []*regexp.Regexp
}

func newMatcher(include, exclude []string) (*matcher, error) {
	m := &matcher{}
	for _, p := range include {
		re, err := fnmatchRegexp(p)
		if err != nil {
			return nil, err
		}
		m.include = append(m.include, re)
	}
	for _, p := range exclude {
		re, err := fnmatchRegexp(p)
		if err != nil {
			return nil, err
		}
		m.exclude = append(m.exclude, re)
	}
	return m, nil
}

func (m *matcher) match(path string) bool {
	path = strings.ReplaceAll(path, "\\", "/")
	if len(m.include) > 0 {
		ok := false
		for _, re := range m.include {
			if re.MatchString(path) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	for _, re := range m.exclude {
		if re.MatchString(path) {
			return false
		}
	}
	return true
}

// fnmatchRegexp translates a glob the way Python's fnmatch.translate does.
func fnmatchRegexp(pat string) (*regexp.Regexp, error) {
	pat = strings.ReplaceAll(pat, "\\", "/")
	if strings.HasSuffix(pat, "/") {
		pat += "*"
	}
	var b strings.Builder
	b.WriteString(`^(?s:`)
	rs := []rune(pat)
	for i := 0; i < len(rs); i++ {
		c := rs[i]
		switch c {
		case '*':
			b.WriteString(".*")
			for i+1 < len(rs) && rs[i+1] == '*' {
				i++
			}
		case '?':
			b.WriteString(".")
		case '[':
			j := i + 1
			if j < len(rs) && rs[j] == '!' {
				j++
			}
			if j < len(rs) && rs[j] == ']' {
				j++
			}
			for j < len(rs) && rs[j] != ']' {
				j++
			}
			if j >= len(rs) {
				b.WriteString(`\[`)
				continue
			}
			stuff := rs[i+1 : j]
			i = j
			neg := false
			if len(stuff) > 0 && stuff[0] == '!' {
				neg, stuff = true, stuff[1:]
			}
			if len(stuff) == 0 {
				if neg {
					b.WriteString(".") // [!] matches any one character
				} else {
					b.WriteString(`[^\x00-\x{10FFFF}]`) // [] matches nothing
				}
				continue
			}
			b.WriteString("[")
			if neg {
				b.WriteString("^")
			}
			for k, r := range stuff {
				if r == '-' && k > 0 && k < len(stuff)-1 {
					b.WriteRune('-')
					continue
				}
				b.WriteString(regexp.QuoteMeta(string(r))) // a leading or trailing '-' stays literal
			}
			b.WriteString("]")
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString(`)$`)
	re, err := regexp.Compile(b.String())
	if err != nil {
		// e.g. a reversed range [z-a], which Python drops; match the pattern literally
		return regexp.MustCompile("^" + regexp.QuoteMeta(pat) + "$"), nil
	}
	return re, nil
}
