// Package mediatest builds small, valid media files for tests: MP4/MOV files
// assembled box by box, PNG and JPEG from the standard library, and WebP
// (still VP8L and animated ANIM/ANMF) assembled by hand. Nothing is downloaded.
package mediatest

import (
	"bytes"
	"encoding/binary"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
)

// MP4 describes a clip to assemble. Zero fields take the defaults noted.
type MP4 struct {
	Width, Height int    // 64×48
	Frames        int    // 16
	Timescale     uint32 // 16000
	Delta         uint32 // per-frame duration in timescale units: 1000 (16 fps)
	Codec         string // avc1
	Rotation      int    // 0, 90, 180, 270: written into the tkhd matrix
	SampleSize    int    // bytes per sample: 8
	Brand         string // isom ("qt  " makes a MOV)
	// Fragmented writes an empty sample table and the samples in one moof/trun.
	Fragmented bool
	// NoAudio false adds no audio track; AudioTrack adds one before the video
	// track so the parser must pick the video one.
	AudioTrack bool
	// MdatFirst puts mdat before moov (camera order).
	MdatFirst bool
}

func (m MP4) defaults() MP4 {
	if m.Width == 0 {
		m.Width, m.Height = 64, 48
	}
	if m.Frames == 0 {
		m.Frames = 16
	}
	if m.Timescale == 0 {
		m.Timescale = 16000
	}
	if m.Delta == 0 {
		m.Delta = 1000
	}
	if m.Codec == "" {
		m.Codec = "avc1"
	}
	if m.SampleSize == 0 {
		m.SampleSize = 8
	}
	if m.Brand == "" {
		m.Brand = "isom"
	}
	return m
}

// Box assembles one box from a type and payload parts.
func Box(typ string, parts ...[]byte) []byte {
	n := 8
	for _, p := range parts {
		n += len(p)
	}
	b := make([]byte, 0, n)
	b = binary.BigEndian.AppendUint32(b, uint32(n))
	b = append(b, typ...)
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// FullBox is Box with version 0 and flags.
func FullBox(typ string, flags uint32, parts ...[]byte) []byte {
	return Box(typ, append([][]byte{u32(flags & 0xffffff)}, parts...)...)
}

func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
func u16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// matrix returns a tkhd transformation matrix for a rotation.
func matrix(rot int) []byte {
	one, neg := uint32(0x00010000), uint32(0xffff0000)
	a, b, c, d := one, uint32(0), uint32(0), one
	switch rot {
	case 90:
		a, b, c, d = 0, one, neg, 0
	case 180:
		a, d = neg, neg
	case 270:
		a, b, c, d = 0, neg, one, 0
	}
	return cat(u32(a), u32(b), u32(0), u32(c), u32(d), u32(0), u32(0), u32(0), u32(0x40000000))
}

func trak(id uint32, handler string, m MP4, stbl []byte, w, h int) []byte {
	tkhd := FullBox("tkhd", 3, u32(0), u32(0), u32(id), u32(0), u32(uint32(m.Frames)*m.Delta),
		make([]byte, 8), u16(0), u16(0), u16(0), u16(0), matrix(m.Rotation), u32(uint32(w)<<16), u32(uint32(h)<<16))
	mdhd := FullBox("mdhd", 0, u32(0), u32(0), u32(m.Timescale), u32(uint32(m.Frames)*m.Delta), u16(0x55c4), u16(0))
	hdlr := FullBox("hdlr", 0, u32(0), []byte(handler), make([]byte, 12), []byte("h\x00"))
	return Box("trak", tkhd, Box("mdia", mdhd, hdlr, Box("minf", Box("stbl", stbl))))
}

func visualEntry(codec string, w, h int) []byte {
	return Box(codec, make([]byte, 6), u16(1), make([]byte, 16), u16(uint16(w)), u16(uint16(h)),
		u32(0x00480000), u32(0x00480000), u32(0), u16(1), make([]byte, 32), u16(0x18), u16(0xffff))
}

// Bytes assembles the MP4.
func (m MP4) Bytes() []byte {
	m = m.defaults()
	ftyp := Box("ftyp", []byte(m.Brand), u32(0x200), []byte(m.Brand), []byte("mp41"))
	samples := bytes.Repeat([]byte{0xAB}, m.Frames*m.SampleSize)
	mdatHdr := 8
	mvhd := FullBox("mvhd", 0, u32(0), u32(0), u32(m.Timescale), u32(uint32(m.Frames)*m.Delta), u32(0x00010000), u16(0x0100), make([]byte, 10), matrix(0), make([]byte, 24), u32(3))
	build := func(mdatOff int) []byte {
		stsd := FullBox("stsd", 0, u32(1), visualEntry(m.Codec, m.Width, m.Height))
		var stbl []byte
		if m.Fragmented {
			stbl = cat(stsd, FullBox("stts", 0, u32(0)), FullBox("stsc", 0, u32(0)), FullBox("stsz", 0, u32(0), u32(0)), FullBox("stco", 0, u32(0)))
		} else {
			stbl = cat(stsd,
				FullBox("stts", 0, u32(1), u32(uint32(m.Frames)), u32(m.Delta)),
				FullBox("stsc", 0, u32(1), u32(1), u32(uint32(m.Frames)), u32(1)),
				FullBox("stsz", 0, u32(uint32(m.SampleSize)), u32(uint32(m.Frames))),
				FullBox("stco", 0, u32(1), u32(uint32(mdatOff+mdatHdr))))
		}
		var traks []byte
		id := uint32(1)
		if m.AudioTrack {
			audio := cat(FullBox("stsd", 0, u32(1), Box("mp4a", make([]byte, 28))),
				FullBox("stts", 0, u32(1), u32(10), u32(1024)),
				FullBox("stsc", 0, u32(1), u32(1), u32(10), u32(1)),
				FullBox("stsz", 0, u32(4), u32(10)),
				FullBox("stco", 0, u32(1), u32(uint32(mdatOff+mdatHdr))))
			am := m
			am.Rotation = 0
			traks = append(traks, trak(id, "soun", am, audio, 0, 0)...)
			id++
		}
		traks = append(traks, trak(id, "vide", m, stbl, m.Width, m.Height)...)
		moovParts := [][]byte{mvhd, traks}
		if m.Fragmented {
			moovParts = append(moovParts, Box("mvex", FullBox("trex", 0, u32(id), u32(1), u32(m.Delta), u32(uint32(m.SampleSize)), u32(0))))
		}
		return Box("moov", moovParts...)
	}
	if m.Fragmented {
		moov := build(0)
		id := uint32(1)
		if m.AudioTrack {
			id = 2
		}
		// trun with per-sample durations (flags 0x100|0x200) and a data offset.
		var per []byte
		for range m.Frames {
			per = append(per, cat(u32(m.Delta), u32(uint32(m.SampleSize)))...)
		}
		traf := Box("traf", FullBox("tfhd", 0x020000, u32(id)), FullBox("tfdt", 0, u32(0)), FullBox("trun", 0x000301, u32(uint32(m.Frames)), u32(0), per))
		moof := Box("moof", FullBox("mfhd", 0, u32(1)), traf)
		return cat(ftyp, moov, moof, Box("mdat", samples))
	}
	if m.MdatFirst {
		mdat := Box("mdat", samples)
		return cat(ftyp, mdat, build(len(ftyp)))
	}
	moovLen := len(build(0))
	return cat(ftyp, build(len(ftyp)+moovLen), Box("mdat", samples))
}

// PNG encodes a w×h PNG.
func PNG(w, h int) []byte {
	var b bytes.Buffer
	if err := png.Encode(&b, gradient(w, h)); err != nil {
		panic(err)
	}
	return b.Bytes()
}

// JPEG encodes a w×h JPEG; orientation > 0 adds an Exif APP1 segment with
// that orientation tag.
func JPEG(w, h, orientation int) []byte {
	var b bytes.Buffer
	if err := jpeg.Encode(&b, gradient(w, h), &jpeg.Options{Quality: 80}); err != nil {
		panic(err)
	}
	out := b.Bytes()
	if orientation == 0 {
		return out
	}
	exif := cat([]byte("Exif\x00\x00"), TIFFOrientation(orientation))
	app1 := cat([]byte{0xff, 0xe1}, u16(uint16(len(exif)+2)), exif)
	return cat(out[:2], app1, out[2:])
}

// TIFFOrientation is a big-endian TIFF block whose IFD0 holds one
// orientation tag.
func TIFFOrientation(v int) []byte {
	return cat([]byte("MM\x00*"), u32(8), u16(1), u16(0x0112), u16(3), u32(1), u16(uint16(v)), u16(0), u32(0))
}

func gradient(w, h int) image.Image {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), 128, 255})
		}
	}
	return img
}

func le32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

func riffChunk(id string, body []byte) []byte {
	c := cat([]byte(id), le32(uint32(len(body))), body)
	if len(body)%2 == 1 {
		c = append(c, 0)
	}
	return c
}

func riff(chunks ...[]byte) []byte {
	body := cat(append([][]byte{[]byte("WEBP")}, chunks...)...)
	return cat([]byte("RIFF"), le32(uint32(len(body))), body)
}

// vp8l1x1 is a lossless 1×1 bitstream: no transforms, no colour cache, and
// five single-symbol prefix codes, so the one pixel costs no bits.
func vp8l1x1() []byte {
	hdr := []byte{0x2f, 0, 0, 0, 0} // 14-bit width-1 = 0, height-1 = 0, alpha 0, version 0
	// bits (LSB first): transform 0, colour cache 0, meta prefix 0, then five
	// codes of: simple 1, num_symbols-1 0, is_first_8bits 0, symbol 0.
	var bits []int
	bits = append(bits, 0, 0, 0)
	for range 5 {
		bits = append(bits, 1, 0, 0, 0)
	}
	out := make([]byte, (len(bits)+7)/8)
	for i, b := range bits {
		out[i/8] |= byte(b << (i % 8))
	}
	return cat(hdr, out)
}

// WebP is a still, lossless 1×1 WebP.
func WebP() []byte { return riff(riffChunk("VP8L", vp8l1x1())) }

// AnimatedWebP is a w×h WebP animation of n ANMF frames.
func AnimatedWebP(w, h, n int) []byte {
	vp8x := cat([]byte{0x02, 0, 0, 0}, u24(w-1), u24(h-1))
	chunks := [][]byte{riffChunk("VP8X", vp8x), riffChunk("ANIM", cat(le32(0), []byte{0, 0}))}
	for range n {
		frame := cat(u24(0), u24(0), u24(0), u24(0), u24(100), []byte{0}, riffChunk("VP8L", vp8l1x1()))
		chunks = append(chunks, riffChunk("ANMF", frame))
	}
	return riff(chunks...)
}

func u24(v int) []byte { return []byte{byte(v), byte(v >> 8), byte(v >> 16)} }
