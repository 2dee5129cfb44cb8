package safetensors

import (
	"encoding/json"
	"errors"
	"io"
	"slices"
)

// parser wraps the token stream with type-checked reads.
type parser struct{ dec *json.Decoder }

// token returns the next token; a decoder error means malformed JSON.
func (p *parser) token() (json.Token, error) {
	tok, err := p.dec.Token()
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return nil, formatErr("header", "invalid JSON: %v", err)
	}
	return tok, nil
}

// delim consumes the delimiter d, or fails with a FormatError for field.
func (p *parser) delim(d json.Delim, field, msg string) error {
	tok, err := p.token()
	if err != nil {
		return err
	}
	if tok != d {
		return formatErr(field, "%s", msg)
	}
	return nil
}

// key reads an object key; the decoder guarantees it is a string.
func (p *parser) key() (string, error) {
	tok, err := p.token()
	if err != nil {
		return "", err
	}
	s, ok := tok.(string)
	if !ok {
		return "", formatErr("header", "invalid JSON: object key is not a string")
	}
	return s, nil
}

// metadata reads the __metadata__ value: null or a flat string→string object.
func (p *parser) metadata() (map[string]string, error) {
	tok, err := p.token()
	if err != nil {
		return nil, err
	}
	if tok == nil { // null, which the reference implementation treats as absent
		return nil, nil
	}
	if tok != json.Delim('{') {
		return nil, formatErr(metadataKey, "must be an object of string values")
	}
	md := make(map[string]string)
	for p.dec.More() {
		k, err := p.key()
		if err != nil {
			return nil, err
		}
		if _, dup := md[k]; dup {
			return nil, formatErr(metadataKey, "duplicate key %q", k)
		}
		tok, err := p.token()
		if err != nil {
			return nil, err
		}
		v, ok := tok.(string)
		if !ok {
			return nil, formatErr(metadataKey, "value of %q must be a string", k)
		}
		md[k] = v
	}
	return md, p.delim('}', metadataKey, "must be an object of string values")
}

// tensorFields are the fields every tensor entry must have, and the only ones.
var tensorFields = [...]string{"dtype", "shape", "data_offsets"}

// tensor reads one tensor entry and checks it on its own; checks that
// involve other tensors are in checkLayout.
func (p *parser) tensor(name string) (TensorInfo, error) {
	t := TensorInfo{Name: name}
	if err := p.delim('{', name, "entry must be an object with dtype, shape and data_offsets"); err != nil {
		return t, err
	}
	var offs []int64
	var have [len(tensorFields)]bool
	for p.dec.More() {
		k, err := p.key()
		if err != nil {
			return t, err
		}
		i := slices.Index(tensorFields[:], k)
		if i < 0 {
			return t, formatErr(name, "unexpected field %q (want only dtype, shape, data_offsets)", k)
		}
		if have[i] {
			return t, formatErr(name, "field %q appears more than once", k)
		}
		have[i] = true
		switch k {
		case "dtype":
			tok, err := p.token()
			if err != nil {
				return t, err
			}
			s, ok := tok.(string)
			if !ok {
				return t, formatErr(name, "dtype must be a string")
			}
			if t.DType = DType(s); !t.DType.Valid() {
				return t, formatErr(name, "unknown dtype %q", s)
			}
		case "shape":
			if t.Shape, err = p.ints(name, k); err != nil {
				return t, err
			}
		case "data_offsets":
			if offs, err = p.ints(name, k); err != nil {
				return t, err
			}
			if len(offs) != 2 {
				return t, formatErr(name, "data_offsets must have exactly 2 entries, got %d", len(offs))
			}
		}
	}
	if err := p.delim('}', name, "entry must be an object"); err != nil {
		return t, err
	}
	for i, k := range tensorFields {
		if !have[i] {
			return t, formatErr(name, "missing field %q", k)
		}
	}
	t.Begin, t.End = offs[0], offs[1]
	if t.Begin > t.End {
		return t, formatErr(name, "data_offsets %s: begin is after end", fmtInts(offs))
	}
	want, ok := byteLen(t.Shape, t.DType)
	if !ok {
		return t, formatErr(name, "shape %s × %s overflows int64", fmtInts(t.Shape), t.DType)
	}
	if got := t.ByteLen(); got != want {
		return t, formatErr(name, "data_offsets %s length %d does not match shape %s × %s = %d bytes",
			fmtInts(offs), got, fmtInts(t.Shape), t.DType, want)
	}
	return t, nil
}

// ints reads a JSON array of non-negative integers that fit in int64.
func (p *parser) ints(name, field string) ([]int64, error) {
	if err := p.delim('[', name, field+" must be an array of non-negative integers"); err != nil {
		return nil, err
	}
	v := []int64{} // never nil, so a scalar's shape compares equal after a round trip
	for p.dec.More() {
		tok, err := p.token()
		if err != nil {
			return nil, err
		}
		num, ok := tok.(json.Number)
		if !ok {
			return nil, formatErr(name, "%s must be an array of non-negative integers", field)
		}
		x, err := parseUint(string(num))
		if err != nil {
			return nil, formatErr(name, "%s entry %s: %v", field, num, err)
		}
		v = append(v, x)
	}
	return v, p.delim(']', name, field+" must be an array of non-negative integers")
}

// checkSurrogates rejects \u escapes that encode a lone UTF-16 surrogate.
// encoding/json turns them into U+FFFD, but the reference loader (serde_json)
// rejects the header, so accepting them would pass files Python cannot load.
// A backslash outside a string is a syntax error the decoder reports anyway,
// so a flat scan over the whole header is enough.
func checkSurrogates(js []byte) error {
	isLow := func(r int) bool { return r >= 0xDC00 && r <= 0xDFFF }
	for i := 0; i < len(js); i++ {
		if js[i] != '\\' {
			continue
		}
		start := i
		i++ // the escaped character, which may itself be a backslash
		if i == len(js) || js[i] != 'u' {
			continue
		}
		r := hex4(js[i+1 : min(i+5, len(js))])
		i += 4
		if isLow(r) {
			return formatErr("header", "lone UTF-16 surrogate in \\u escape at byte %d", start)
		}
		if r >= 0xD800 && r <= 0xDBFF { // must be followed by \uDC00-\uDFFF
			next := js[min(i+1, len(js)):min(i+7, len(js))]
			if len(next) < 6 || next[0] != '\\' || next[1] != 'u' || !isLow(hex4(next[2:])) {
				return formatErr("header", "lone UTF-16 surrogate in \\u escape at byte %d", start)
			}
			i += 6
		}
	}
	return nil
}

// hex4 decodes four hex digits, or returns -1.
func hex4(b []byte) int {
	if len(b) != 4 {
		return -1
	}
	v := 0
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9':
			v = v<<4 | int(c-'0')
		case c >= 'a' && c <= 'f':
			v = v<<4 | int(c-'a'+10)
		case c >= 'A' && c <= 'F':
			v = v<<4 | int(c-'A'+10)
		default:
			return -1
		}
	}
	return v
}

var errNotUint = errors.New("not a non-negative integer that fits in int64")

// parseUint accepts only plain digits: no sign, fraction or exponent, which
// serde (and so the reference loader) would reject for an unsigned integer.
func parseUint(s string) (int64, error) {
	if s == "" || len(s) > 19 {
		return 0, errNotUint
	}
	var x int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, errNotUint
		}
		d := int64(c - '0')
		if x > (1<<63-1-d)/10 {
			return 0, errNotUint
		}
		x = x*10 + d
	}
	return x, nil
}
