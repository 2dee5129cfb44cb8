package runpodtest

// A small GraphQL engine: enough of the language (operations, variables, aliases,
// arguments with literal or variable values, nested selections) to answer the
// queries RunPod clients send for gpuTypes, and strict about fields — a query for a
// field RunPod's schema lacks fails the way a real GraphQL server fails, so a typo in
// the client shows up in tests. Fragments and directives are not supported.

import (
	"fmt"
	"strconv"
	"strings"
)

type gqlTokKind int

const (
	tokEOF gqlTokKind = iota
	tokPunct
	tokName
	tokInt
	tokFloat
	tokString
)

type gqlTok struct {
	kind gqlTokKind
	s    string
	pos  int
}

func gqlLex(src string) ([]gqlTok, error) {
	var toks []gqlTok
	i := 0
	for i < len(src) {
		c := src[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ',' || c == 0xEF || c == 0xBB || c == 0xBF:
			i++
		case c == '#':
			for i < len(src) && src[i] != '\n' {
				i++
			}
		case strings.IndexByte("{}()[]:=!$@|&", c) >= 0:
			toks = append(toks, gqlTok{tokPunct, string(c), i})
			i++
		case c == '.':
			if strings.HasPrefix(src[i:], "...") {
				toks = append(toks, gqlTok{tokPunct, "...", i})
				i += 3
			} else {
				return nil, fmt.Errorf("Syntax Error: Unexpected character \".\" at %d", i)
			}
		case c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z':
			j := i + 1
			for j < len(src) && (src[j] == '_' || src[j] >= 'A' && src[j] <= 'Z' || src[j] >= 'a' && src[j] <= 'z' || src[j] >= '0' && src[j] <= '9') {
				j++
			}
			toks = append(toks, gqlTok{tokName, src[i:j], i})
			i = j
		case c == '-' || c >= '0' && c <= '9':
			j := i + 1
			float := false
			for j < len(src) && (src[j] >= '0' && src[j] <= '9' || src[j] == '.' || src[j] == 'e' || src[j] == 'E' || src[j] == '+' || src[j] == '-') {
				if src[j] == '.' || src[j] == 'e' || src[j] == 'E' {
					float = true
				}
				j++
			}
			k := tokInt
			if float {
				k = tokFloat
			}
			toks = append(toks, gqlTok{k, src[i:j], i})
			i = j
		case c == '"':
			if strings.HasPrefix(src[i:], `"""`) {
				end := strings.Index(src[i+3:], `"""`)
				if end < 0 {
					return nil, fmt.Errorf("Syntax Error: Unterminated string at %d", i)
				}
				toks = append(toks, gqlTok{tokString, src[i+3 : i+3+end], i})
				i += 6 + end
				continue
			}
			j := i + 1
			for j < len(src) && src[j] != '"' {
				if src[j] == '\\' {
					j++
				}
				if j < len(src) && src[j] == '\n' {
					return nil, fmt.Errorf("Syntax Error: Unterminated string at %d", i)
				}
				j++
			}
			if j >= len(src) {
				return nil, fmt.Errorf("Syntax Error: Unterminated string at %d", i)
			}
			s, err := strconv.Unquote(src[i : j+1])
			if err != nil {
				return nil, fmt.Errorf("Syntax Error: Invalid string at %d", i)
			}
			toks = append(toks, gqlTok{tokString, s, i})
			i = j + 1
		default:
			return nil, fmt.Errorf("Syntax Error: Unexpected character %q at %d", c, i)
		}
	}
	return append(toks, gqlTok{kind: tokEOF, pos: len(src)}), nil
}

// gqlField is one selection: alias: name(args) { sub }.
type gqlField struct {
	Alias, Name string
	Args        map[string]gqlValue
	Sub         []gqlField // nil for a leaf
}

func (f gqlField) key() string {
	if f.Alias != "" {
		return f.Alias
	}
	return f.Name
}

// gqlValue is a literal (any JSON-ish Go value) or a variable reference.
type gqlValue struct {
	Var string // variable name when a reference
	Lit any    // nil, bool, int64, float64, string, enum (gqlEnum), []gqlValue, map[string]gqlValue
}

type gqlEnum string

type gqlOp struct {
	Kind, Name  string
	VarDefaults map[string]gqlValue
	Sel         []gqlField
}

type gqlParser struct {
	toks []gqlTok
	i    int
}

func (p *gqlParser) peek() gqlTok { return p.toks[p.i] }
func (p *gqlParser) next() gqlTok { t := p.toks[p.i]; p.i++; return t }

func (p *gqlParser) isPunct(s string) bool { t := p.peek(); return t.kind == tokPunct && t.s == s }

func (p *gqlParser) expect(s string) error {
	t := p.next()
	if t.kind != tokPunct || t.s != s {
		return fmt.Errorf("Syntax Error: Expected %q, found %q at %d", s, t.s, t.pos)
	}
	return nil
}

func (p *gqlParser) name() (string, error) {
	t := p.next()
	if t.kind != tokName {
		return "", fmt.Errorf("Syntax Error: Expected Name, found %q at %d", t.s, t.pos)
	}
	return t.s, nil
}

func gqlParse(src string) ([]gqlOp, error) {
	toks, err := gqlLex(src)
	if err != nil {
		return nil, err
	}
	p := &gqlParser{toks: toks}
	var ops []gqlOp
	for p.peek().kind != tokEOF {
		op, err := p.operation()
		if err != nil {
			return nil, err
		}
		ops = append(ops, op)
	}
	if len(ops) == 0 {
		return nil, fmt.Errorf("Syntax Error: Unexpected <EOF>")
	}
	return ops, nil
}

func (p *gqlParser) operation() (gqlOp, error) {
	op := gqlOp{Kind: "query", VarDefaults: map[string]gqlValue{}}
	if t := p.peek(); t.kind == tokName {
		switch t.s {
		case "query", "mutation", "subscription":
			op.Kind = t.s
			p.next()
		case "fragment":
			return op, fmt.Errorf("fragments are not supported by this test server")
		default:
			return op, fmt.Errorf("Syntax Error: Unexpected Name %q at %d", t.s, t.pos)
		}
		if p.peek().kind == tokName {
			op.Name = p.next().s
		}
		if p.isPunct("(") {
			p.next()
			for !p.isPunct(")") {
				if err := p.expect("$"); err != nil {
					return op, err
				}
				n, err := p.name()
				if err != nil {
					return op, err
				}
				if err := p.expect(":"); err != nil {
					return op, err
				}
				if err := p.typeRef(); err != nil {
					return op, err
				}
				if p.isPunct("=") {
					p.next()
					v, err := p.value(true)
					if err != nil {
						return op, err
					}
					op.VarDefaults[n] = v
				}
			}
			p.next()
		}
	}
	if p.isPunct("@") {
		return op, fmt.Errorf("directives are not supported by this test server")
	}
	sel, err := p.selectionSet()
	op.Sel = sel
	return op, err
}

func (p *gqlParser) typeRef() error {
	if p.isPunct("[") {
		p.next()
		if err := p.typeRef(); err != nil {
			return err
		}
		if err := p.expect("]"); err != nil {
			return err
		}
	} else if _, err := p.name(); err != nil {
		return err
	}
	if p.isPunct("!") {
		p.next()
	}
	return nil
}

func (p *gqlParser) selectionSet() ([]gqlField, error) {
	if err := p.expect("{"); err != nil {
		return nil, err
	}
	var out []gqlField
	for !p.isPunct("}") {
		if p.peek().kind == tokEOF {
			return nil, fmt.Errorf("Syntax Error: Expected Name, found <EOF>")
		}
		if p.isPunct("...") {
			return nil, fmt.Errorf("fragments are not supported by this test server")
		}
		n, err := p.name()
		if err != nil {
			return nil, err
		}
		f := gqlField{Name: n}
		if p.isPunct(":") {
			p.next()
			if f.Name, err = p.name(); err != nil {
				return nil, err
			}
			f.Alias = n
		}
		if p.isPunct("(") {
			p.next()
			f.Args = map[string]gqlValue{}
			for !p.isPunct(")") {
				an, err := p.name()
				if err != nil {
					return nil, err
				}
				if err := p.expect(":"); err != nil {
					return nil, err
				}
				v, err := p.value(false)
				if err != nil {
					return nil, err
				}
				f.Args[an] = v
			}
			p.next()
		}
		if p.isPunct("@") {
			return nil, fmt.Errorf("directives are not supported by this test server")
		}
		if p.isPunct("{") {
			if f.Sub, err = p.selectionSet(); err != nil {
				return nil, err
			}
			if len(f.Sub) == 0 {
				return nil, fmt.Errorf("Syntax Error: Expected Name, found \"}\"")
			}
		}
		out = append(out, f)
	}
	p.next()
	if len(out) == 0 {
		return nil, fmt.Errorf("Syntax Error: Expected Name, found \"}\"")
	}
	return out, nil
}

func (p *gqlParser) value(constant bool) (gqlValue, error) {
	t := p.next()
	switch t.kind {
	case tokPunct:
		switch t.s {
		case "$":
			if constant {
				return gqlValue{}, fmt.Errorf("Syntax Error: Unexpected \"$\" at %d", t.pos)
			}
			n, err := p.name()
			return gqlValue{Var: n}, err
		case "[":
			var list []gqlValue
			for !p.isPunct("]") {
				if p.peek().kind == tokEOF {
					return gqlValue{}, fmt.Errorf("Syntax Error: Unexpected <EOF>")
				}
				v, err := p.value(constant)
				if err != nil {
					return gqlValue{}, err
				}
				list = append(list, v)
			}
			p.next()
			return gqlValue{Lit: list}, nil
		case "{":
			obj := map[string]gqlValue{}
			for !p.isPunct("}") {
				n, err := p.name()
				if err != nil {
					return gqlValue{}, err
				}
				if err := p.expect(":"); err != nil {
					return gqlValue{}, err
				}
				v, err := p.value(constant)
				if err != nil {
					return gqlValue{}, err
				}
				obj[n] = v
			}
			p.next()
			return gqlValue{Lit: obj}, nil
		}
	case tokInt:
		n, err := strconv.ParseInt(t.s, 10, 64)
		if err != nil {
			return gqlValue{}, fmt.Errorf("Syntax Error: Invalid number %q", t.s)
		}
		return gqlValue{Lit: n}, nil
	case tokFloat:
		f, err := strconv.ParseFloat(t.s, 64)
		if err != nil {
			return gqlValue{}, fmt.Errorf("Syntax Error: Invalid number %q", t.s)
		}
		return gqlValue{Lit: f}, nil
	case tokString:
		return gqlValue{Lit: t.s}, nil
	case tokName:
		switch t.s {
		case "true":
			return gqlValue{Lit: true}, nil
		case "false":
			return gqlValue{Lit: false}, nil
		case "null":
			return gqlValue{Lit: nil}, nil
		}
		return gqlValue{Lit: gqlEnum(t.s)}, nil
	}
	return gqlValue{}, fmt.Errorf("Syntax Error: Unexpected %q at %d", t.s, t.pos)
}

// resolve turns v into plain Go values (JSON-decoded variables: float64 numbers,
// map[string]any objects), substituting variables.
func (v gqlValue) resolve(vars map[string]any) any {
	if v.Var != "" {
		return vars[v.Var]
	}
	switch x := v.Lit.(type) {
	case []gqlValue:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = e.resolve(vars)
		}
		return out
	case map[string]gqlValue:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = e.resolve(vars)
		}
		return out
	case int64:
		return float64(x)
	case gqlEnum:
		return string(x)
	default:
		return x
	}
}

// gqlError is one entry of a GraphQL "errors" array.
type gqlError struct {
	Message    string         `json:"message"`
	Path       []string       `json:"path,omitempty"`
	Extensions map[string]any `json:"extensions,omitempty"`
}

func validationError(format string, args ...any) gqlError {
	return gqlError{Message: fmt.Sprintf(format, args...),
		Extensions: map[string]any{"code": "GRAPHQL_VALIDATION_FAILED"}}
}

// gqlObject resolves the fields of one object type. Each field maps to a function of
// the field's resolved arguments that returns a leaf value, or — for object fields —
// a gqlObject (or a list of them, or nil).
type gqlObject struct {
	Type   string
	Fields map[string]func(args map[string]any) any
}

// execute evaluates sel against obj.
func execute(obj *gqlObject, sel []gqlField, vars map[string]any, path []string) (map[string]any, []gqlError) {
	out := map[string]any{}
	var errs []gqlError
	for _, f := range sel {
		if f.Name == "__typename" {
			out[f.key()] = obj.Type
			continue
		}
		fn, ok := obj.Fields[f.Name]
		if !ok {
			errs = append(errs, validationError("Cannot query field %q on type %q.", f.Name, obj.Type))
			continue
		}
		args := map[string]any{}
		for k, v := range f.Args {
			args[k] = v.resolve(vars)
		}
		val := fn(args)
		p := append(append([]string(nil), path...), f.key())
		switch x := val.(type) {
		case *gqlObject:
			if f.Sub == nil {
				errs = append(errs, validationError("Field %q of type %q must have a selection of subfields.", f.Name, x.Type))
				continue
			}
			if x == nil {
				out[f.key()] = nil
				continue
			}
			o, e := execute(x, f.Sub, vars, p)
			out[f.key()], errs = o, append(errs, e...)
		case []*gqlObject:
			if f.Sub == nil {
				errs = append(errs, validationError("Field %q must have a selection of subfields.", f.Name))
				continue
			}
			list := make([]any, 0, len(x))
			for _, o := range x {
				r, e := execute(o, f.Sub, vars, p)
				list = append(list, r)
				errs = append(errs, e...)
			}
			out[f.key()] = list
		case gqlError:
			x.Path = p
			errs = append(errs, x)
			out[f.key()] = nil
		default:
			if f.Sub != nil {
				errs = append(errs, validationError("Field %q must not have a selection since it has no subfields.", f.Name))
				continue
			}
			out[f.key()] = val
		}
	}
	return out, errs
}
