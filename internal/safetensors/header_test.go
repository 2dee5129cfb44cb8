package safetensors

import (
	"bytes"
	"encoding/binary"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestFormatErrorMessage(t *testing.T) {
	js := `{"x.lora_A.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[0,10]}}`
	_, err := ParseHeader([]byte(js), 10)
	want := `safetensors: tensor "x.lora_A.weight": data_offsets [0,10] length 10 does not match shape [2,3] × F32 = 24 bytes`
	if err == nil || err.Error() != want {
		t.Fatalf("got %v\nwant %s", err, want)
	}
	for _, c := range []struct {
		e    FormatError
		want string
	}{
		{FormatError{"header", "m"}, "safetensors: header: m"},
		{FormatError{"__metadata__", "m"}, "safetensors: __metadata__: m"},
		{FormatError{"file", "m"}, "safetensors: m"},
		{FormatError{"", "m"}, `safetensors: tensor "": m`},
	} {
		if got := c.e.Error(); got != c.want {
			t.Errorf("got %q, want %q", got, c.want)
		}
	}
}

// f32 returns a tensor entry for an F32 tensor.
func f32(name, shape string, begin, end int) string {
	return `"` + name + `":{"dtype":"F32","shape":` + shape + `,"data_offsets":[` +
		strconv.Itoa(begin) + `,` + strconv.Itoa(end) + `]}`
}

func TestReadHeaderRules(t *testing.T) {
	lenOnly := func(n uint64, fileSize int) []byte {
		b := make([]byte, fileSize)
		binary.LittleEndian.PutUint64(b, n)
		return b
	}
	tests := []struct {
		name       string
		file       []byte
		field, msg string
	}{
		{"file shorter than prefix", []byte{1, 0, 0}, "header", "too short"},
		{"N over cap", lenOnly(MaxHeaderSize+1, 64), "header", "exceeds the maximum"},
		{"N huge u64", lenOnly(1<<63+5, 64), "header", "exceeds the maximum"},
		{"N past file", lenOnly(100, 20), "header", "exceeds the 12 bytes"},
		{"N zero", lenOnly(0, 8), "header", "empty"},
		{"leading space", stBytes(` {}`, 0), "header", "starting with '{'"},
		{"array", stBytes(`[]`, 0), "header", "starting with '{'"},
		{"invalid utf8", stBytes("{\"a\xff\":1}", 0), "header", "UTF-8"},
		{"truncated JSON", stBytes(`{"a":`, 0), "header", "invalid JSON"},
		{"trailing comma", stBytes(`{"__metadata__":{},}`, 0), "header", "invalid JSON"},
		{"missing colon", stBytes(`{"a" {}}`, 0), "header", "invalid JSON"},
		{"trailing garbage", stBytes(`{} x`, 0), "header", "after the header JSON"},
		{"second object", stBytes(`{}{}`, 0), "header", "after the header JSON"},
		{"duplicate name", stBytes(`{`+f32("a", "[1]", 0, 4)+`,`+f32("a", "[1]", 4, 8)+`}`, 8), "a", "duplicate tensor name"},
		{"duplicate metadata", stBytes(`{"__metadata__":{},"__metadata__":{}}`, 0), "__metadata__", "more than once"},
		{"unknown dtype", stBytes(`{"a":{"dtype":"F4","shape":[1],"data_offsets":[0,1]}}`, 1), "a", `unknown dtype "F4"`},
		{"lowercase dtype", stBytes(`{"a":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}}`, 4), "a", "unknown dtype"},
		{"dtype not string", stBytes(`{"a":{"dtype":4,"shape":[1],"data_offsets":[0,4]}}`, 4), "a", "dtype must be a string"},
		{"shape mismatch", stBytes(`{`+f32("a", "[2,3]", 0, 10)+`}`, 10), "a", "length 10 does not match shape [2,3] × F32 = 24"},
		{"hole", stBytes(`{`+f32("a", "[1]", 0, 4)+`,`+f32("b", "[1]", 8, 12)+`}`, 12), "b", "bytes [4,8) of the data buffer uncovered"},
		{"hole at start", stBytes(`{`+f32("a", "[1]", 4, 8)+`}`, 8), "a", "bytes [0,4)"},
		{"overlap", stBytes(`{`+f32("a", "[2]", 0, 8)+`,`+f32("b", "[1]", 4, 8)+`}`, 8), "b", `overlap tensor "a"`},
		{"past end", stBytes(`{`+f32("a", "[6]", 0, 24)+`}`, 16), "a", "past the end of the 16-byte data buffer"},
		{"trailing data", stBytes(`{`+f32("a", "[1]", 0, 4)+`}`, 8), "header", "cover 4 bytes but the data buffer has 8"},
		{"data but no tensors", stBytes(`{}`, 1), "header", "cover 0 bytes"},
		{"metadata non-string", stBytes(`{"__metadata__":{"k":1}}`, 0), "__metadata__", `value of "k" must be a string`},
		{"metadata nested", stBytes(`{"__metadata__":{"k":{}}}`, 0), "__metadata__", "must be a string"},
		{"metadata not object", stBytes(`{"__metadata__":"x"}`, 0), "__metadata__", "must be an object"},
		{"metadata duplicate key", stBytes(`{"__metadata__":{"k":"1","k":"2"}}`, 0), "__metadata__", `duplicate key "k"`},
		{"shape overflow", stBytes(`{`+f32("a", "[4294967296,4294967296]", 0, 0)+`}`, 0), "a", "overflows int64"},
		{"shape overflow times dtype", stBytes(`{`+f32("a", "[4611686018427387904]", 0, 0)+`}`, 0), "a", "overflows int64"},
		{"shape overflow before zero", stBytes(`{`+f32("a", "[1099511627776,1099511627776,0]", 0, 0)+`}`, 0), "a", "overflows int64"},
		{"shape entry too big", stBytes(`{`+f32("a", "[99999999999999999999]", 0, 0)+`}`, 0), "a", "non-negative integer"},
		{"negative shape", stBytes(`{`+f32("a", "[-1]", 0, 0)+`}`, 0), "a", "non-negative integer"},
		{"negative zero", stBytes(`{`+f32("a", "[-0]", 0, 0)+`}`, 0), "a", "non-negative integer"},
		{"negative offset", stBytes(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}`, 0), "a", "non-negative integer"},
		{"float shape", stBytes(`{`+f32("a", "[1.0]", 0, 4)+`}`, 4), "a", "non-negative integer"},
		{"exponent shape", stBytes(`{`+f32("a", "[1e0]", 0, 4)+`}`, 4), "a", "non-negative integer"},
		{"float offset", stBytes(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1.0]}}`, 1), "a", "non-negative integer"},
		{"string in shape", stBytes(`{`+f32("a", `["1"]`, 0, 4)+`}`, 4), "a", "non-negative integer"},
		{"nested shape", stBytes(`{`+f32("a", `[[1]]`, 0, 4)+`}`, 4), "a", "non-negative integer"},
		{"shape not array", stBytes(`{`+f32("a", `1`, 0, 4)+`}`, 4), "a", "must be an array"},
		{"shape null", stBytes(`{`+f32("a", `null`, 0, 4)+`}`, 4), "a", "must be an array"},
		{"three offsets", stBytes(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1,1]}}`, 1), "a", "exactly 2"},
		{"begin after end", stBytes(`{"a":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}}`, 4), "a", "begin is after end"},
		{"extra field", stBytes(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"foo":1}}`, 1), "a", `unexpected field "foo"`},
		{"missing field", stBytes(`{"a":{"dtype":"U8","shape":[1]}}`, 1), "a", `missing field "data_offsets"`},
		{"duplicate field", stBytes(`{"a":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, 1), "a", `"dtype" appears more than once`},
		{"entry not object", stBytes(`{"a":[1]}`, 0), "a", "must be an object"},
		{"lone high surrogate", stBytes(`{"__metadata__":{"\ud800":""}}`, 0), "header", "lone UTF-16 surrogate"},
		{"high surrogate at end", stBytes(`{"__metadata__":{"\ud800`, 0), "header", "lone UTF-16 surrogate"},
		{"lone low surrogate", stBytes(`{"__metadata__":{"a\uDC00":""}}`, 0), "header", "lone UTF-16 surrogate"},
		{"high then non-low", stBytes(`{"__metadata__":{"\ud800\u0041":""}}`, 0), "header", "lone UTF-16 surrogate"},
		{"entry null", stBytes(`{"a":null}`, 0), "a", "must be an object"},
		{"empty name", stBytes(`{"":{"dtype":"U8","shape":[2],"data_offsets":[0,1]}}`, 1), "", "does not match"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := ReadHeader(bytes.NewReader(tc.file), int64(len(tc.file)))
			if err == nil {
				t.Fatalf("accepted: %+v", h)
			}
			wantFormatErr(t, err, tc.field, tc.msg)
		})
	}
}

func TestParseHeaderValid(t *testing.T) {
	tests := []struct {
		name    string
		js      string
		dataLen int64
		names   []string // in data order
	}{
		{"empty", `{}`, 0, nil},
		{"padded", `{}      `, 0, nil},
		{"metadata null", `{"__metadata__":null}`, 0, nil},
		{"scalar", `{"s":{"dtype":"F64","shape":[],"data_offsets":[0,8]}}`, 8, []string{"s"}},
		{"any key order", `{"b":{"data_offsets":[4,8],"shape":[1],"dtype":"F32"},` + f32("a", "[1]", 0, 4) + `}`, 8, []string{"a", "b"}},
		{"zero-size tensors between", `{` + f32("z", "[0,7]", 4, 4) + `,` + f32("b", "[1]", 4, 8) + `,` +
			f32("a", "[1]", 0, 4) + `,` + f32("e", "[0]", 8, 8) + `}`, 8, []string{"a", "z", "b", "e"}},
		{"surrogate pair", `{"__metadata__":{"\\ud800 \ud83d\ude00":"\\"}}`, 0, nil},
		{"escaped name", `{"a\u00e9\"\n":{"dtype":"BOOL","shape":[1],"data_offsets":[0,1]}}`, 1, []string{"aé\"\n"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := ParseHeader([]byte(tc.js), tc.dataLen)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, ti := range h.Tensors {
				got = append(got, ti.Name)
				if lt, ok := h.Lookup(ti.Name); !ok || lt.Begin != ti.Begin {
					t.Errorf("Lookup(%q) = %+v, %v", ti.Name, lt, ok)
				}
			}
			if !slices.Equal(got, tc.names) {
				t.Errorf("tensor order %q, want %q", got, tc.names)
			}
			if want := slices.Sorted(slices.Values(tc.names)); !slices.Equal(h.Names(), want) {
				t.Errorf("Names() = %q, want %q", h.Names(), want)
			}
			if h.HeaderLen != int64(len(tc.js)) || h.DataLen != tc.dataLen {
				t.Errorf("HeaderLen %d DataLen %d", h.HeaderLen, h.DataLen)
			}
			checkReencode(t, h)
		})
	}
}

func TestReadHeaderReadsOnlyHeader(t *testing.T) {
	specs := []TensorSpec{
		{"a.lora_A.weight", BF16, []int64{32, 5120}},
		{"a.lora_B.weight", BF16, []int64{5120, 32}},
		{"a.alpha", F32, nil},
	}
	hb, err := HeaderBytes(specs, map[string]string{"ss_network_dim": "32"})
	if err != nil {
		t.Fatal(err)
	}
	file := append(hb, bytes.Repeat([]byte{0xAB}, 2*2*32*5120+4)...)
	cr := &countingReaderAt{r: bytes.NewReader(file)}
	h, err := ReadHeader(cr, int64(len(file)))
	if err != nil {
		t.Fatal(err)
	}
	if cr.calls != 2 {
		t.Errorf("ReadAt called %d times, want 2", cr.calls)
	}
	if cr.bytes != int64(len(hb)) || cr.maxEnd != h.DataStart() {
		t.Errorf("read %d bytes up to offset %d; header ends at %d", cr.bytes, cr.maxEnd, h.DataStart())
	}
	if h.DataStart()%8 != 0 {
		t.Errorf("DataStart %d not 8-aligned", h.DataStart())
	}
	if h.Metadata["ss_network_dim"] != "32" || len(h.Tensors) != 3 {
		t.Errorf("header %+v", h)
	}
}

func TestReadHeaderShortReader(t *testing.T) {
	file := stBytes(`{}`, 0)
	// Claim a larger size than the reader holds: the header read must fail
	// cleanly rather than parse a partly filled buffer.
	_, err := ReadHeader(bytes.NewReader(file[:5]), int64(len(file)))
	if err == nil || !strings.Contains(err.Error(), "unexpected EOF") {
		t.Fatalf("got %v", err)
	}
}
