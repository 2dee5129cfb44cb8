package main

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"image"
	"image/color"
	"image/jpeg"
	"io"
	"os"
	"sort"
	"strings"
	"time"
)

// ---- safetensors ----

type tensor struct {
	name  string
	dtype string
	shape []int64
	size  int64 // bytes
}

func dtypeOf(save string) (string, int64) {
	switch strings.ToLower(save) {
	case "bf16", "bfloat16":
		return "BF16", 2
	case "fp32", "float32", "float", "32":
		return "F32", 4
	}
	return "F16", 2 // SaveConfig default float16
}

// wanArch is the shape of a Wan2.1 transformer.
type wanArch struct{ dim, ffn, layers int64 }

var (
	wan14B  = wanArch{5120, 13824, 40}
	wan1_3B = wanArch{1536, 8960, 30}
)

var wanModules = []string{
	"self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o",
	"cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o",
	"ffn.0", "ffn.2",
}

// loraTensors lists the comfy-format (ai-toolkit Wan) peft LoRA tensors, block
// by block, module by module, until about target bytes (at least one module;
// at most the whole transformer). No .alpha tensors: alpha == rank.
func loraTensors(a wanArch, rank int64, dt string, el int64, target int64) []tensor {
	var ts []tensor
	var total int64
	for b := int64(0); b < a.layers; b++ {
		for _, m := range wanModules {
			in, out := a.dim, a.dim
			switch m {
			case "ffn.0":
				out = a.ffn
			case "ffn.2":
				in = a.ffn
			}
			p := fmt.Sprintf("diffusion_model.blocks.%d.%s", b, m)
			ta := tensor{p + ".lora_A.weight", dt, []int64{rank, in}, rank * in * el}
			tb := tensor{p + ".lora_B.weight", dt, []int64{out, rank}, out * rank * el}
			ts = append(ts, ta, tb)
			total += ta.size + tb.size
			if total >= target {
				goto done
			}
		}
	}
done:
	sort.Slice(ts, func(i, j int) bool { return ts[i].name < ts[j].name })
	return ts
}

// header builds the safetensors header (8-byte length + JSON padded with
// spaces to a multiple of 8), __metadata__ first.
func stHeader(ts []tensor, meta *omap) []byte {
	var b strings.Builder
	b.WriteByte('{')
	if meta != nil && len(meta.keys) > 0 {
		b.WriteString(`"__metadata__":{`)
		for i, k := range meta.keys {
			if i > 0 {
				b.WriteByte(',')
			}
			kj, _ := json.Marshal(k)
			vj, _ := json.Marshal(meta.vals[k].(string))
			b.Write(kj)
			b.WriteByte(':')
			b.Write(vj)
		}
		b.WriteString("},")
	}
	var off int64
	for i, t := range ts {
		if i > 0 {
			b.WriteByte(',')
		}
		shape, _ := json.Marshal(t.shape)
		fmt.Fprintf(&b, `%q:{"dtype":%q,"shape":%s,"data_offsets":[%d,%d]}`, t.name, t.dtype, shape, off, off+t.size)
		off += t.size
	}
	b.WriteByte('}')
	h := b.String()
	if pad := len(h) % 8; pad != 0 {
		h += strings.Repeat(" ", 8-pad)
	}
	out := make([]byte, 8, 8+len(h))
	binary.LittleEndian.PutUint64(out, uint64(len(h)))
	return append(out, h...)
}

// gen streams deterministic small finite floats of one dtype.
type gen struct {
	s  uint64
	dt string
}

func (g *gen) next() uint64 {
	g.s += 0x9e3779b97f4a7c15
	z := g.s
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func (g *gen) fill(p []byte) {
	for i := 0; i < len(p); {
		r := g.next()
		switch g.dt {
		case "F32":
			for k := 0; k < 2 && i+4 <= len(p); k++ {
				w := uint32(r >> (32 * k))
				v := (w & 0x807fffff) | (118+w>>23%5)<<23 // |x| in [2^-9, 2^-4)
				binary.LittleEndian.PutUint32(p[i:], v)
				i += 4
			}
		case "BF16":
			for k := 0; k < 4 && i+2 <= len(p); k++ {
				w := uint16(r >> (16 * k))
				v := (w & 0x807f) | uint16(118+(w>>7)%5)<<7
				binary.LittleEndian.PutUint16(p[i:], v)
				i += 2
			}
		default: // F16
			for k := 0; k < 4 && i+2 <= len(p); k++ {
				w := uint16(r >> (16 * k))
				v := (w & 0x83ff) | uint16(6+(w>>10)%5)<<10
				binary.LittleEndian.PutUint16(p[i:], v)
				i += 2
			}
		}
		if i+1 == len(p) {
			p[i] = 0
			i++
		}
	}
}

func dataSize(ts []tensor) int64 {
	var n int64
	for _, t := range ts {
		n += t.size
	}
	return n
}

// streamData writes every tensor's bytes (seeded by seed) to w in chunks.
func streamData(w io.Writer, ts []tensor, seed uint64, each func(written int64)) error {
	buf := make([]byte, 1<<20)
	var written int64
	for i, t := range ts {
		g := gen{s: seed*1000003 + uint64(i), dt: t.dtype}
		left := t.size
		for left > 0 {
			n := int64(len(buf))
			if n > left {
				n = left
			}
			g.fill(buf[:n])
			if _, err := w.Write(buf[:n]); err != nil {
				return err
			}
			left -= n
			written += n
			if each != nil {
				each(written)
			}
		}
	}
	return nil
}

// addnetHashes are ai-toolkit's sshs_model_hash (sha256 of the data after the
// header) and sshs_legacy_hash (sha256 of 64 KiB at 1 MiB of a serialization
// with only the ss_ metadata), from toolkit/metadata.py add_model_hash_to_meta.
func addnetHashes(ts []tensor, seed uint64, meta *omap) (string, string) {
	ss := newOmap()
	for _, k := range meta.keys {
		if strings.HasPrefix(k, "ss_") {
			ss.set(k, meta.vals[k])
		}
	}
	hdr := stHeader(ts, ss)
	full := sha256.New()
	legacy := sha256.New()
	pos := int64(len(hdr))
	feed := func(p []byte, pos int64, h hash.Hash) {
		lo, hi := int64(0x100000), int64(0x110000)
		s, e := max(pos, lo), min(pos+int64(len(p)), hi)
		if s < e {
			h.Write(p[s-pos : e-pos])
		}
	}
	feed(hdr, 0, legacy)
	w := writerFunc(func(p []byte) (int, error) {
		full.Write(p)
		feed(p, pos, legacy)
		pos += int64(len(p))
		return len(p), nil
	})
	streamData(w, ts, seed, nil)
	return hex.EncodeToString(full.Sum(nil)), hex.EncodeToString(legacy.Sum(nil))[:8]
}

type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// writeCheckpoint writes the LoRA to its final name non-atomically, as
// safetensors' save_file does, spread over `dur` in 8 chunks. With hang set
// it stops forever half way (a process stuck in the Rust writer).
func writeCheckpoint(path string, ts []tensor, seed uint64, meta *omap, dur time.Duration, hang bool) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Write(stHeader(ts, meta)); err != nil {
		return err
	}
	total := dataSize(ts)
	chunk := total/8 + 1
	next := chunk
	return streamData(f, ts, seed, func(written int64) {
		for written >= next {
			next += chunk
			if hang && next > total/2+chunk {
				f.Sync()
				select {} // until SIGTERM/SIGKILL: SIGINT is not handled inside save_file
			}
			time.Sleep(dur / 8)
		}
	})
}

// readSafetensorsMeta reads the metadata of a checkpoint as safetensors'
// load_file would validate it first; a torn file raises SafetensorError.
func readSafetensorsMeta(path string) (map[string]string, error) {
	bad := func(kind string) error {
		return pyErr("safetensors_rust.SafetensorError", "Error while deserializing header: "+kind)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, pyErr("FileNotFoundError", fmt.Sprintf("[Errno 2] No such file or directory: '%s'", path))
	}
	defer f.Close()
	st, _ := f.Stat()
	var lb [8]byte
	if _, err := io.ReadFull(f, lb[:]); err != nil {
		return nil, bad("HeaderTooSmall")
	}
	n := binary.LittleEndian.Uint64(lb[:])
	if n > 100_000_000 {
		return nil, bad("HeaderTooLarge")
	}
	if int64(n)+8 > st.Size() {
		return nil, bad("InvalidHeaderLength")
	}
	hb := make([]byte, n)
	if _, err := io.ReadFull(f, hb); err != nil {
		return nil, bad("InvalidHeaderLength")
	}
	var hdr map[string]json.RawMessage
	if err := json.Unmarshal(bytes.TrimRight(hb, " "), &hdr); err != nil {
		return nil, bad("InvalidHeaderDeserialization")
	}
	meta := map[string]string{}
	var end int64
	for k, raw := range hdr {
		if k == "__metadata__" {
			json.Unmarshal(raw, &meta)
			continue
		}
		var ti struct {
			Offsets [2]int64 `json:"data_offsets"`
		}
		if json.Unmarshal(raw, &ti) != nil {
			return nil, bad("InvalidHeaderDeserialization")
		}
		end = max(end, ti.Offsets[1])
	}
	if 8+int64(n)+end != st.Size() {
		return nil, bad("MetadataIncompleteBuffer")
	}
	return meta, nil
}

// ---- optimizer.pt: a torch.save zip of {'state': {}, 'param_groups': [...]} ----

func writeOptimizer(path string, lr float64) error {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	put := func(name string, data []byte) {
		w, _ := zw.CreateHeader(&zip.FileHeader{Name: "optimizer/" + name, Method: zip.Store})
		w.Write(data)
	}
	// pickle protocol 2: {'state': {}, 'param_groups': [{'lr': lr}]}
	var p bytes.Buffer
	p.WriteString("\x80\x02}(")
	pstr := func(s string) {
		p.WriteByte('X')
		binary.Write(&p, binary.LittleEndian, uint32(len(s)))
		p.WriteString(s)
	}
	pstr("state")
	p.WriteString("}")
	pstr("param_groups")
	p.WriteString("]}")
	pstr("lr")
	p.WriteByte('G')
	binary.Write(&p, binary.BigEndian, lr)
	p.WriteString("sau.")
	put("data.pkl", p.Bytes())
	put("byteorder", []byte("little"))
	put(".format_version", []byte("1"))
	put(".storage_alignment", []byte("64"))
	put("version", []byte("3\n"))
	zw.Close()
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// ---- sample media ----

func sampleImage(w, h int, seed int64) image.Image {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	r0 := uint8(seed * 37)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, color.RGBA{r0 + uint8(x*255/max(w, 1)), uint8(y * 255 / max(h, 1)), uint8(seed * 91), 255})
		}
	}
	return img
}

func writeJPEG(path string, img image.Image, q int) error {
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: q}); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

func thumb(img image.Image) image.Image {
	b := img.Bounds()
	side := min(b.Dx(), b.Dy())
	left, top := (b.Dx()-side)/2, (b.Dy()-side)/2
	out := image.NewRGBA(image.Rect(0, 0, 300, 300))
	for y := 0; y < 300; y++ {
		for x := 0; x < 300; x++ {
			out.Set(x, y, img.At(left+x*side/300, top+y*side/300))
		}
	}
	return out
}

// vp8l is a lossless WebP bitstream of a w×h image of one ARGB colour: five
// single-symbol prefix codes, so the pixels take no bits.
func vp8l(w, h int, argb uint32) []byte {
	var bits []bool
	put := func(v uint32, n int) {
		for i := 0; i < n; i++ {
			bits = append(bits, v>>i&1 == 1)
		}
	}
	put(uint32(w-1), 14)
	put(uint32(h-1), 14)
	put(1, 1) // alpha_is_used
	put(0, 3) // version
	put(0, 1) // no transform
	put(0, 1) // no colour cache
	put(0, 1) // no meta prefix codes
	sym := func(v uint32) {
		put(1, 1) // simple code
		put(0, 1) // one symbol
		put(1, 1) // 8-bit symbol
		put(v, 8)
	}
	sym(argb >> 8 & 0xff)  // green
	sym(argb >> 16 & 0xff) // red
	sym(argb & 0xff)       // blue
	sym(argb >> 24)        // alpha
	put(1, 1)              // distance: simple code
	put(0, 1)              // one symbol
	put(0, 1)              // 1-bit symbol
	put(0, 1)              // symbol 0
	out := []byte{0x2f}
	for i := 0; i < len(bits); i += 8 {
		var b byte
		for k := 0; k < 8 && i+k < len(bits); k++ {
			if bits[i+k] {
				b |= 1 << k
			}
		}
		out = append(out, b)
	}
	return out
}

func riffChunk(fourcc string, data []byte) []byte {
	out := append([]byte(fourcc), 0, 0, 0, 0)
	binary.LittleEndian.PutUint32(out[4:], uint32(len(data)))
	out = append(out, data...)
	if len(data)%2 == 1 {
		out = append(out, 0)
	}
	return out
}

func u24(v int) []byte { return []byte{byte(v), byte(v >> 8), byte(v >> 16)} }

// animatedWebP is what PIL writes for a list of frames (save_all, loop 0,
// duration 1000//fps): VP8X + ANIM + one ANMF per frame.
func animatedWebP(w, h, frames, fps int, seed int64) []byte {
	var body []byte
	vp8x := append([]byte{0x12, 0, 0, 0}, u24(w-1)...) // animation + alpha flags
	vp8x = append(vp8x, u24(h-1)...)
	body = append(body, riffChunk("VP8X", vp8x)...)
	body = append(body, riffChunk("ANIM", []byte{0, 0, 0, 0, 0, 0})...)
	dur := 1000 / max(fps, 1)
	for i := 0; i < frames; i++ {
		fr := append([]byte{}, u24(0)...)
		fr = append(fr, u24(0)...)
		fr = append(fr, u24(w-1)...)
		fr = append(fr, u24(h-1)...)
		fr = append(fr, u24(dur)...)
		fr = append(fr, 0x02) // no blend, no dispose
		c := uint32(0xff000000) | uint32(seed*37+int64(i)*8)&0xff<<16 | 0x80<<8 | uint32(seed*91)&0xff
		fr = append(fr, riffChunk("VP8L", vp8l(w, h, c))...)
		body = append(body, riffChunk("ANMF", fr)...)
	}
	out := append([]byte("RIFF"), 0, 0, 0, 0)
	binary.LittleEndian.PutUint32(out[4:], uint32(4+len(body)))
	out = append(out, "WEBP"...)
	return append(out, body...)
}
