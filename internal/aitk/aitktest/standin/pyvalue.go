package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Config values are held the way Python holds them after json.loads(...,
// object_pairs_hook=OrderedDict) or an oyaml load: ordered mappings (*omap),
// lists ([]any), str, int64, float64, bool and nil.

type omap struct {
	keys []string
	vals map[string]any
}

func newOmap() *omap { return &omap{vals: map[string]any{}} }

func (m *omap) set(k string, v any) {
	if _, ok := m.vals[k]; !ok {
		m.keys = append(m.keys, k)
	}
	m.vals[k] = v
}

func (m *omap) get(k string) (any, bool) {
	if m == nil {
		return nil, false
	}
	v, ok := m.vals[k]
	return v, ok
}

// sub returns the mapping under k, or an empty one.
func (m *omap) sub(k string) *omap {
	if v, ok := m.get(k); ok {
		if o, ok := v.(*omap); ok {
			return o
		}
	}
	return newOmap()
}

// kwargs.get(k, def) semantics: a present key wins even when null.
func (m *omap) str(k, def string) string {
	v, ok := m.get(k)
	if !ok {
		return def
	}
	switch x := v.(type) {
	case string:
		return x
	case nil:
		return ""
	}
	return pyStr(v)
}

func (m *omap) num(k string, def float64) float64 {
	v, ok := m.get(k)
	if !ok {
		return def
	}
	switch x := v.(type) {
	case int64:
		return float64(x)
	case float64:
		return x
	case bool:
		if x {
			return 1
		}
		return 0
	case string:
		f, err := strconv.ParseFloat(strings.TrimSpace(x), 64)
		if err == nil {
			return f
		}
	}
	return def
}

func (m *omap) int(k string, def int) int {
	v, ok := m.get(k)
	if !ok || v == nil {
		return def
	}
	return int(m.num(k, float64(def)))
}

func (m *omap) has(k string) bool { _, ok := m.get(k); return ok }

// truthy is Python truthiness of kwargs.get(k, def).
func (m *omap) truthy(k string, def bool) bool {
	v, ok := m.get(k)
	if !ok {
		return def
	}
	return pyTruthy(v)
}

func pyTruthy(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case bool:
		return x
	case int64:
		return x != 0
	case float64:
		return x != 0
	case string:
		return x != ""
	case []any:
		return len(x) > 0
	case *omap:
		return len(x.keys) > 0
	}
	return true
}

// ---- loading ----

var envRe = regexp.MustCompile(`\$\{([^}]+)\}`)

// replaceEnvVars is toolkit/config.py replace_env_vars_in_string.
func replaceEnvVars(s string) (string, error) {
	var err error
	out := envRe.ReplaceAllStringFunc(s, func(m string) string {
		name := envRe.FindStringSubmatch(m)[1]
		v, ok := os.LookupEnv(name)
		if !ok {
			if err == nil {
				err = pyErr("ValueError", fmt.Sprintf("Environment variable %s not set. Please ensure it's defined before proceeding.", name))
			}
			return m
		}
		return v
	})
	return out, err
}

func parseJSONOrdered(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	v, err := decodeJSONValue(dec)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("Extra data")
	}
	return v, nil
}

func decodeJSONValue(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			m := newOmap()
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				k, _ := kt.(string)
				v, err := decodeJSONValue(dec)
				if err != nil {
					return nil, err
				}
				m.set(k, v)
			}
			_, err := dec.Token()
			return m, err
		case '[':
			l := []any{}
			for dec.More() {
				v, err := decodeJSONValue(dec)
				if err != nil {
					return nil, err
				}
				l = append(l, v)
			}
			_, err := dec.Token()
			return l, err
		}
	case json.Number:
		if i, err := strconv.ParseInt(string(t), 10, 64); err == nil {
			return i, nil
		}
		f, err := strconv.ParseFloat(string(t), 64)
		return f, err
	case string, bool, nil:
		return t, nil
	}
	return nil, fmt.Errorf("unexpected token %v", tok)
}

var (
	yaml11Bool = regexp.MustCompile(`^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$`)
	// the float resolver ai-toolkit adds (fixed_loader) + YAML 1.1 ints
	yamlFloat = regexp.MustCompile(`^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)|\.[0-9_]+(?:[eE][-+][0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$`)
	yamlInt   = regexp.MustCompile(`^[-+]?(?:0|[1-9][0-9_]*)$`)
)

func parseYAMLOrdered(data []byte) (any, error) {
	var n yaml.Node
	if err := yaml.Unmarshal(data, &n); err != nil {
		return nil, err
	}
	if n.Kind == 0 {
		return nil, nil
	}
	return fromYAML(&n)
}

func fromYAML(n *yaml.Node) (any, error) {
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil, nil
		}
		return fromYAML(n.Content[0])
	case yaml.AliasNode:
		return fromYAML(n.Alias)
	case yaml.MappingNode:
		m := newOmap()
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, err := fromYAML(n.Content[i])
			if err != nil {
				return nil, err
			}
			if n.Content[i].Value == "<<" {
				if mm, ok := mustYAML(n.Content[i+1]).(*omap); ok {
					for _, kk := range mm.keys {
						if !m.has(kk) {
							m.set(kk, mm.vals[kk])
						}
					}
				}
				continue
			}
			v, err := fromYAML(n.Content[i+1])
			if err != nil {
				return nil, err
			}
			m.set(pyStr(k), v)
		}
		return m, nil
	case yaml.SequenceNode:
		l := []any{}
		for _, c := range n.Content {
			v, err := fromYAML(c)
			if err != nil {
				return nil, err
			}
			l = append(l, v)
		}
		return l, nil
	case yaml.ScalarNode:
		s := n.Value
		if n.Style != 0 && n.Style != yaml.TaggedStyle { // quoted, literal, folded
			return s, nil
		}
		switch n.Tag {
		case "!!str", "!!binary", "!!timestamp":
			if n.Style == yaml.TaggedStyle || n.Tag != "!!str" {
				return s, nil
			}
		case "!!null":
			return nil, nil
		case "!!bool":
			return strings.EqualFold(s, "true"), nil
		}
		if yaml11Bool.MatchString(s) {
			switch strings.ToLower(s) {
			case "yes", "true", "on":
				return true, nil
			}
			return false, nil
		}
		if s == "" || s == "~" || s == "null" || s == "Null" || s == "NULL" {
			return nil, nil
		}
		if yamlInt.MatchString(s) {
			if i, err := strconv.ParseInt(strings.ReplaceAll(s, "_", ""), 10, 64); err == nil {
				return i, nil
			}
		}
		if yamlFloat.MatchString(s) {
			t := strings.ReplaceAll(s, "_", "")
			switch strings.ToLower(strings.TrimLeft(t, "+-")) {
			case ".inf":
				if strings.HasPrefix(t, "-") {
					return math.Inf(-1), nil
				}
				return math.Inf(1), nil
			case ".nan":
				return math.NaN(), nil
			}
			if f, err := strconv.ParseFloat(t, 64); err == nil {
				return f, nil
			}
		}
		return s, nil
	}
	return nil, nil
}

func mustYAML(n *yaml.Node) any { v, _ := fromYAML(n); return v }

// replaceTag replaces old with new in every key and string, like ai-toolkit's
// json.dumps / str.replace / json.loads round trip does for "[name]".
func replaceTag(v any, old, new string) any {
	switch x := v.(type) {
	case string:
		return strings.ReplaceAll(x, old, new)
	case []any:
		for i := range x {
			x[i] = replaceTag(x[i], old, new)
		}
		return x
	case *omap:
		m := newOmap()
		for _, k := range x.keys {
			m.set(strings.ReplaceAll(k, old, new), replaceTag(x.vals[k], old, new))
		}
		return m
	}
	return v
}

// ---- Python-style rendering ----

func pyFloat(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	case math.IsNaN(f):
		return "NaN"
	}
	return pyRepr(f)
}

// pyRepr is Python's repr(float).
func pyRepr(f float64) string {
	e := strconv.FormatFloat(f, 'e', -1, 64) // d.ddde±XX
	mant, expS, _ := strings.Cut(e, "e")
	exp, _ := strconv.Atoi(expS)
	if exp >= -5 && exp < 16 {
		s := strconv.FormatFloat(f, 'f', -1, 64)
		if !strings.Contains(s, ".") {
			s += ".0"
		}
		return s
	}
	sign := "+"
	if exp < 0 {
		sign = "-"
		exp = -exp
	}
	return fmt.Sprintf("%se%s%02d", mant, sign, exp)
}

// pyStr is Python's str() of a config value.
func pyStr(v any) string {
	switch x := v.(type) {
	case nil:
		return "None"
	case bool:
		if x {
			return "True"
		}
		return "False"
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return pyRepr(x)
	case string:
		return x
	}
	return pyJSON(v, -1)
}

// pyJSON is json.dumps(v) (indent < 0) or json.dumps(v, indent=n).
func pyJSON(v any, indent int) string {
	var b strings.Builder
	writePyJSON(&b, v, indent, 0)
	return b.String()
}

func writePyJSON(b *strings.Builder, v any, indent, depth int) {
	nl := func(d int) {
		if indent >= 0 {
			b.WriteByte('\n')
			b.WriteString(strings.Repeat(" ", indent*d))
		}
	}
	sep := ", "
	if indent >= 0 {
		sep = ","
	}
	switch x := v.(type) {
	case nil:
		b.WriteString("null")
	case bool:
		if x {
			b.WriteString("true")
		} else {
			b.WriteString("false")
		}
	case int64:
		b.WriteString(strconv.FormatInt(x, 10))
	case int:
		b.WriteString(strconv.Itoa(x))
	case float64:
		b.WriteString(pyFloat(x))
	case string:
		b.WriteString(pyQuote(x))
	case []any:
		if len(x) == 0 {
			b.WriteString("[]")
			return
		}
		b.WriteByte('[')
		for i, e := range x {
			if i > 0 {
				b.WriteString(sep)
			}
			nl(depth + 1)
			writePyJSON(b, e, indent, depth+1)
		}
		nl(depth)
		b.WriteByte(']')
	case *omap:
		if len(x.keys) == 0 {
			b.WriteString("{}")
			return
		}
		b.WriteByte('{')
		for i, k := range x.keys {
			if i > 0 {
				b.WriteString(sep)
			}
			nl(depth + 1)
			b.WriteString(pyQuote(k))
			b.WriteString(": ")
			writePyJSON(b, x.vals[k], indent, depth+1)
		}
		nl(depth)
		b.WriteByte('}')
	default:
		b.WriteString(pyQuote(fmt.Sprint(x)))
	}
}

// pyQuote is json.dumps of a str with ensure_ascii=True.
func pyQuote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		default:
			if r < 0x20 || r > 0x7e {
				if r > 0xffff {
					r -= 0x10000
					fmt.Fprintf(&b, `\u%04x\u%04x`, 0xd800+(r>>10), 0xdc00+(r&0x3ff))
				} else {
					fmt.Fprintf(&b, `\u%04x`, r)
				}
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}

// toYAML renders v as block YAML (oyaml keeps the mapping order).
func toYAML(v any) ([]byte, error) {
	return yaml.Marshal(toYAMLNode(v))
}

func toYAMLNode(v any) *yaml.Node {
	switch x := v.(type) {
	case *omap:
		n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		for _, k := range x.keys {
			n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: k}, toYAMLNode(x.vals[k]))
		}
		return n
	case []any:
		n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		for _, e := range x {
			n.Content = append(n.Content, toYAMLNode(e))
		}
		return n
	case string:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: x}
	case nil:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}
	case bool:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(x)}
	case int64:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.FormatInt(x, 10)}
	case float64:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!float", Value: pyFloat(x)}
	}
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: fmt.Sprint(v)}
}
