package aitk

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// maxNodes bounds alias expansion (a "billion laughs" document); real job
// configs have a few hundred nodes.
const maxNodes = 100_000

// jsonToNode parses JSON as json.loads with object_pairs_hook=OrderedDict
// does (key order kept, a later duplicate key wins) into a YAML node tree.
func jsonToNode(text string) (*yaml.Node, error) {
	dec := json.NewDecoder(strings.NewReader(text))
	dec.UseNumber()
	n, err := jsonValue(dec, 0)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("extra data after the JSON value")
	}
	return n, nil
}

func jsonValue(dec *json.Decoder, depth int) (*yaml.Node, error) {
	if depth > 1000 {
		return nil, errors.New("nested too deeply")
	}
	tok, err := dec.Token()
	if err != nil {
		if err == io.EOF {
			return nil, errors.New("unexpected end of JSON")
		}
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			m := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				k, ok := kt.(string)
				if !ok {
					return nil, errors.New("object key is not a string")
				}
				v, err := jsonValue(dec, depth+1)
				if err != nil {
					return nil, err
				}
				m.Content = append(m.Content, strNode(k), v)
			}
			if _, err := dec.Token(); err != nil {
				return nil, err
			}
			return m, nil
		case '[':
			s := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
			for dec.More() {
				v, err := jsonValue(dec, depth+1)
				if err != nil {
					return nil, err
				}
				s.Content = append(s.Content, v)
			}
			if _, err := dec.Token(); err != nil {
				return nil, err
			}
			return s, nil
		}
		return nil, fmt.Errorf("unexpected %v", t)
	case string:
		return strNode(t), nil
	case json.Number:
		tag := "!!int"
		if strings.ContainsAny(string(t), ".eE") {
			tag = "!!float"
		}
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: string(t)}, nil
	case bool:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(t)}, nil
	case nil:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}, nil
	}
	return nil, fmt.Errorf("unexpected token %v", tok)
}

// strNode is a string scalar that stays a string whatever it looks like.
func strNode(s string) *yaml.Node {
	n := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
	if pyResolve(&yaml.Node{Kind: yaml.ScalarNode, Value: s}) != any(s) || s == "" {
		n.Style = yaml.DoubleQuotedStyle
	}
	return n
}

// resolveAliases returns n with aliases replaced by copies of their anchors
// and "<<" merge keys applied, as PyYAML's SafeLoader builds its dicts.
func resolveAliases(n *yaml.Node) (*yaml.Node, error) {
	budget := maxNodes
	out := expand(n, &budget, 0)
	if budget < 0 {
		return nil, fmt.Errorf("config expands to more than %d nodes through aliases", maxNodes)
	}
	return out, nil
}

func expand(n *yaml.Node, budget *int, depth int) *yaml.Node {
	*budget--
	if depth > 200 {
		*budget = -1
	}
	if n == nil || *budget < 0 {
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}
	}
	if n.Kind == yaml.AliasNode {
		return expand(n.Alias, budget, depth+1)
	}
	c := *n
	c.Anchor = ""
	c.Content = nil
	for _, ch := range n.Content {
		c.Content = append(c.Content, expand(ch, budget, depth+1))
	}
	if c.Kind == yaml.MappingNode {
		applyMerges(&c)
	}
	return &c
}

// applyMerges folds "<<: *anchor" (or a list of them) into m; keys m defines
// itself win, as in PyYAML.
func applyMerges(m *yaml.Node) {
	var own, merged []*yaml.Node
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.Value == "<<" && (k.Tag == "!!merge" || k.Tag == "") {
			srcs := []*yaml.Node{v}
			if v.Kind == yaml.SequenceNode {
				srcs = v.Content
			}
			for _, s := range srcs {
				if s.Kind == yaml.MappingNode {
					merged = append(merged, s.Content...)
				}
			}
			continue
		}
		own = append(own, k, v)
	}
	if merged == nil {
		return
	}
	have := map[string]bool{}
	for i := 0; i < len(own); i += 2 {
		have[own[i].Value] = true
	}
	out := own
	for i := 0; i+1 < len(merged); i += 2 {
		if !have[merged[i].Value] {
			have[merged[i].Value] = true
			out = append(out, merged[i], merged[i+1])
		}
	}
	m.Content = out
}

// dedupe makes every mapping hold each key once: the first position, the
// last value (OrderedDict assignment order).
func dedupe(n *yaml.Node) {
	if n == nil {
		return
	}
	if n.Kind == yaml.MappingNode {
		pos := map[string]int{}
		var out []*yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			id := k.Tag + "\x00" + k.Value
			if k.Kind != yaml.ScalarNode {
				out = append(out, k, v)
				continue
			}
			if j, ok := pos[id]; ok {
				out[j+1] = v
				continue
			}
			pos[id] = len(out)
			out = append(out, k, v)
		}
		n.Content = out
	}
	for _, c := range n.Content {
		dedupe(c)
	}
}

// replaceName substitutes "[name]" in every string key and value, as
// preprocess_config does on the JSON text of the config.
func replaceName(n *yaml.Node, name string) {
	if n.Kind == yaml.ScalarNode {
		if strings.Contains(n.Value, "[name]") {
			if _, isStr := pyResolve(n).(string); isStr {
				n.Value = strings.ReplaceAll(n.Value, "[name]", name)
				n.Tag = "!!str"
				n.Style = yaml.DoubleQuotedStyle
			}
		}
		return
	}
	for _, c := range n.Content {
		replaceName(c, name)
	}
}

func deepCopy(n *yaml.Node) *yaml.Node {
	if n == nil {
		return nil
	}
	c := *n
	c.Content = make([]*yaml.Node, len(n.Content))
	for i, ch := range n.Content {
		c.Content[i] = deepCopy(ch)
	}
	return &c
}

// merge writes the freshly encoded typed view f over the parsed document o:
// o's order, comments and scalar spelling stay where the value is unchanged;
// keys f lacks are dropped unless o held null or "" there (the typed view
// omits those); keys only f has are appended.
func merge(o, f *yaml.Node) *yaml.Node {
	switch {
	case o.Kind == yaml.MappingNode && f.Kind == yaml.MappingNode:
		fv := map[string]*yaml.Node{}
		for i := 0; i+1 < len(f.Content); i += 2 {
			fv[f.Content[i].Value] = f.Content[i+1]
		}
		seen := map[string]bool{}
		var out []*yaml.Node
		for i := 0; i+1 < len(o.Content); i += 2 {
			k, v := o.Content[i], o.Content[i+1]
			seen[k.Value] = true
			nv, ok := fv[k.Value]
			if !ok {
				if isEmptyScalar(v) {
					out = append(out, k, v)
				}
				continue
			}
			out = append(out, k, merge(v, nv))
		}
		for i := 0; i+1 < len(f.Content); i += 2 {
			if !seen[f.Content[i].Value] {
				out = append(out, f.Content[i], f.Content[i+1])
			}
		}
		o.Content = out
		return o
	case o.Kind == yaml.SequenceNode && f.Kind == yaml.SequenceNode:
		var out []*yaml.Node
		for i, fc := range f.Content {
			if i < len(o.Content) {
				out = append(out, merge(o.Content[i], fc))
			} else {
				out = append(out, fc)
			}
		}
		o.Content = out
		return o
	case o.Kind == yaml.ScalarNode && f.Kind == yaml.ScalarNode:
		if sameScalar(o, f) {
			return o
		}
		f.HeadComment, f.LineComment, f.FootComment = o.HeadComment, o.LineComment, o.FootComment
		return f
	}
	f.HeadComment, f.LineComment, f.FootComment = o.HeadComment, o.LineComment, o.FootComment
	return f
}

func isEmptyScalar(n *yaml.Node) bool {
	if n.Kind != yaml.ScalarNode {
		return false
	}
	v := pyResolve(n)
	return v == nil || v == ""
}

// sameScalar compares two scalars as yaml.v3 reads them (the view the typed
// fields were decoded from).
func sameScalar(a, b *yaml.Node) bool {
	var va, vb any
	if a.Decode(&va) != nil || b.Decode(&vb) != nil {
		return false
	}
	if fa, ok := num(va); ok {
		if fb, ok := num(vb); ok {
			return fa == fb || (math.IsNaN(fa) && math.IsNaN(fb))
		}
	}
	return reflect.DeepEqual(va, vb)
}

func num(v any) (float64, bool) {
	switch x := v.(type) {
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	case uint64:
		return float64(x), true
	case float64:
		return x, true
	}
	return 0, false
}

var (
	pyNull  = regexp.MustCompile(`^(?:~|null|Null|NULL|)$`)
	pyBool  = regexp.MustCompile(`^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$`)
	pyInt   = regexp.MustCompile(`^[-+]?(?:0b[0-1_]+|0[0-7_]+|(?:0|[1-9][0-9_]*)|0x[0-9a-fA-F_]+)$`)
	pyFloat = regexp.MustCompile(`^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)|\.[0-9_]+(?:[eE][-+][0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$`)
)

// pyResolve returns the Python value ai-toolkit gets for a scalar: PyYAML's
// YAML 1.1 resolver for plain scalars (yes/no/on/off are booleans, 010 is
// octal) plus ai-toolkit's float fix (1e-4 is a float), the tag for tagged
// or JSON-born scalars, a string for quoted ones.
func pyResolve(n *yaml.Node) any {
	plain := n.Style&(yaml.SingleQuotedStyle|yaml.DoubleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle|yaml.TaggedStyle) == 0
	if !plain {
		switch n.Tag {
		case "!!int", "!!float", "!!bool", "!!null":
			var v any
			if n.Decode(&v) == nil {
				return v
			}
		}
		return n.Value
	}
	s := n.Value
	switch {
	case pyNull.MatchString(s):
		return nil
	case pyBool.MatchString(s):
		switch s[0] {
		case 'y', 'Y', 't', 'T':
			return true
		case 'o', 'O':
			return s == "on" || s == "On" || s == "ON"
		}
		return false
	case pyInt.MatchString(s):
		t := strings.ReplaceAll(s, "_", "")
		neg := strings.HasPrefix(t, "-")
		t = strings.TrimLeft(t, "+-")
		base := 10
		switch {
		case strings.HasPrefix(t, "0b"):
			base, t = 2, t[2:]
		case strings.HasPrefix(t, "0x"):
			base, t = 16, t[2:]
		case len(t) > 1 && t[0] == '0':
			base = 8
		}
		v, err := strconv.ParseInt(t, base, 64)
		if err != nil {
			f, _ := strconv.ParseFloat(strings.ReplaceAll(s, "_", ""), 64)
			return f
		}
		if neg {
			v = -v
		}
		return v
	case pyFloat.MatchString(s):
		t := strings.ToLower(strings.ReplaceAll(s, "_", ""))
		switch strings.TrimLeft(t, "+-") {
		case ".inf":
			if strings.HasPrefix(t, "-") {
				return math.Inf(-1)
			}
			return math.Inf(1)
		case ".nan":
			return math.NaN()
		}
		f, _ := strconv.ParseFloat(t, 64)
		return f
	}
	return s
}

// writeJSON writes n as Python's json module would write the value PyYAML
// loaded (key order kept, floats always with a point or exponent, Infinity
// and NaN as Python spells them), indented two spaces like the UI's files.
func writeJSON(w *bytes.Buffer, n *yaml.Node, indent string) error {
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			w.WriteString("null")
			return nil
		}
		return writeJSON(w, n.Content[0], indent)
	case yaml.AliasNode:
		return writeJSON(w, n.Alias, indent)
	case yaml.MappingNode:
		if len(n.Content) == 0 {
			w.WriteString("{}")
			return nil
		}
		w.WriteString("{\n")
		in := indent + "  "
		for i := 0; i+1 < len(n.Content); i += 2 {
			if i > 0 {
				w.WriteString(",\n")
			}
			w.WriteString(in)
			k := pyResolve(n.Content[i])
			writeString(w, keyString(k))
			w.WriteString(": ")
			if err := writeJSON(w, n.Content[i+1], in); err != nil {
				return err
			}
		}
		w.WriteString("\n" + indent + "}")
		return nil
	case yaml.SequenceNode:
		if len(n.Content) == 0 {
			w.WriteString("[]")
			return nil
		}
		w.WriteString("[\n")
		in := indent + "  "
		for i, c := range n.Content {
			if i > 0 {
				w.WriteString(",\n")
			}
			w.WriteString(in)
			if err := writeJSON(w, c, in); err != nil {
				return err
			}
		}
		w.WriteString("\n" + indent + "]")
		return nil
	case yaml.ScalarNode:
		writeScalar(w, pyResolve(n))
		return nil
	}
	return fmt.Errorf("cannot write YAML node kind %d as JSON", n.Kind)
}

// keyString is json.dumps' conversion of a dict key.
func keyString(k any) string {
	switch x := k.(type) {
	case nil:
		return "null"
	case bool:
		if x {
			return "true"
		}
		return "false"
	case string:
		return x
	}
	var b bytes.Buffer
	writeScalar(&b, k)
	return b.String()
}

func writeScalar(w *bytes.Buffer, v any) {
	switch x := v.(type) {
	case nil:
		w.WriteString("null")
	case bool:
		w.WriteString(strconv.FormatBool(x))
	case int:
		w.WriteString(strconv.Itoa(x))
	case int64:
		w.WriteString(strconv.FormatInt(x, 10))
	case uint64:
		w.WriteString(strconv.FormatUint(x, 10))
	case float64:
		switch {
		case math.IsNaN(x):
			w.WriteString("NaN")
		case math.IsInf(x, 1):
			w.WriteString("Infinity")
		case math.IsInf(x, -1):
			w.WriteString("-Infinity")
		default:
			s := strconv.FormatFloat(x, 'g', -1, 64)
			if !strings.ContainsAny(s, ".e") {
				s += ".0"
			}
			w.WriteString(s)
		}
	case string:
		writeString(w, x)
	default:
		writeString(w, fmt.Sprint(x))
	}
}

func writeString(w *bytes.Buffer, s string) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	w.Write(bytes.TrimSuffix(b.Bytes(), []byte("\n")))
}
