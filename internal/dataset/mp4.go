package dataset

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// VideoInfo is what a container says about a clip's first video track: what
// OpenCV's FFmpeg backend (ai-toolkit's reader) reports as CAP_PROP_FRAME_WIDTH,
// HEIGHT, FRAME_COUNT and FPS.
type VideoInfo struct {
	Width, Height int     // display size: a 90°/270° rotation matrix swaps them, as OpenCV's auto-orientation does
	Frames        int     // samples in the track (FFmpeg's nb_frames: the stts total)
	FPS           float64 // frames / duration (FFmpeg's avg_frame_rate)
	Duration      float64 // seconds: the sum of the sample durations
	Codec         string  // sample entry or codec name: avc1, hvc1, av01, vp09, …
	Rotation      int     // degrees, from the track header matrix (0, 90, 180, 270)
	Fragmented    bool    // frames counted from moof/trun (fragmented MP4)
}

// ErrNotMP4 means the bytes are not an ISO base media file (MP4, MOV, M4V).
var ErrNotMP4 = errors.New("not an ISO base media (MP4/MOV) file")

// mp4Limit caps the size of one sample table read into memory (a two-hour 60 fps
// clip has a 1.7 MB stsz); larger boxes are treated as damaged.
const mp4Limit = 64 << 20

type mp4Box struct {
	typ       string
	off, size int64 // the whole box
	hdr       int64 // header length: payload is [off+hdr, off+size)
}

func (b mp4Box) payload() (int64, int64) { return b.off + b.hdr, b.size - b.hdr }

// mp4Boxes calls fn for each box in [start,end). A box that runs past end is
// reported to fn with its claimed size, then the walk stops with errTruncatedBox.
func mp4Boxes(r io.ReaderAt, start, end int64, fn func(mp4Box) error) error {
	var h [16]byte
	for pos := start; pos+8 <= end; {
		if _, err := r.ReadAt(h[:8], pos); err != nil {
			return fmt.Errorf("box header at %d: %w", pos, err)
		}
		size := int64(binary.BigEndian.Uint32(h[:4]))
		typ := string(h[4:8])
		hdr := int64(8)
		switch size {
		case 1:
			if pos+16 > end {
				return fmt.Errorf("box %q at %d: %w", printable(typ), pos, errTruncatedBox)
			}
			if _, err := r.ReadAt(h[8:16], pos+8); err != nil {
				return fmt.Errorf("box header at %d: %w", pos, err)
			}
			u := binary.BigEndian.Uint64(h[8:16])
			if u > math.MaxInt64/2 {
				return fmt.Errorf("box %q at %d: size %d: %w", printable(typ), pos, u, errBadBox)
			}
			size, hdr = int64(u), 16
		case 0:
			size = end - pos
		}
		if size < hdr {
			return fmt.Errorf("box %q at %d: size %d: %w", printable(typ), pos, size, errBadBox)
		}
		b := mp4Box{typ: typ, off: pos, size: size, hdr: hdr}
		if pos+size > end {
			return fmt.Errorf("box %q at %d claims %d bytes, %d left: %w", printable(typ), pos, size, end-pos, errTruncatedBox)
		}
		if err := fn(b); err != nil {
			return err
		}
		pos += size
	}
	return nil
}

var (
	errTruncatedBox = errors.New("file is truncated")
	errBadBox       = errors.New("damaged box")
)

func printable(s string) string {
	for _, c := range []byte(s) {
		if c < 0x20 || c > 0x7e {
			return fmt.Sprintf("%x", s)
		}
	}
	return s
}

// readBox reads a box payload, refusing oversize ones.
func readBox(r io.ReaderAt, b mp4Box) ([]byte, error) {
	off, n := b.payload()
	if n > mp4Limit {
		return nil, fmt.Errorf("box %q of %d bytes: %w", b.typ, n, errBadBox)
	}
	p := make([]byte, n)
	if _, err := r.ReadAt(p, off); err != nil {
		return nil, fmt.Errorf("box %q: %w", b.typ, err)
	}
	return p, nil
}

// mp4Track is what the walk collects for one trak.
type mp4Track struct {
	id                 uint32
	handler            string
	timescale          uint32
	mdhdDuration       uint64
	codec              string
	width, height      int
	rotation           int
	sttsCount          int64
	sttsDuration       uint64
	stszCount          int64
	sampleSize         uint32   // stsz constant size, 0 = per sample
	sizes              []uint32 // stsz per-sample sizes
	chunkOffsets       []uint64
	stsc               []stscEntry
	trexDuration       uint32
	fragCount          int64
	fragDuration       uint64
	hasTables          bool
	sampleEntryWH      bool
	tkhdWidth, tkhdHei int
}

type stscEntry struct{ firstChunk, perChunk uint32 }

// ProbeMP4 reads the metadata of an MP4/MOV/M4V file: the first video track's
// size, frame count, rate and codec. It reads only box headers and sample
// tables, never media data. A file whose last sample lies past its end, or
// whose top-level boxes overrun it, is reported with errTruncated; the
// VideoInfo read so far is returned with it.
func ProbeMP4(r io.ReaderAt, size int64) (VideoInfo, error) {
	var head [12]byte
	if size < 8 {
		return VideoInfo{}, ErrNotMP4
	}
	if _, err := r.ReadAt(head[:8], 0); err != nil {
		return VideoInfo{}, err
	}
	switch string(head[4:8]) {
	case "ftyp", "moov", "mdat", "free", "skip", "wide", "pnot", "uuid", "styp", "sidx":
	default:
		return VideoInfo{}, ErrNotMP4
	}
	var (
		tracks    []*mp4Track
		trex      = map[uint32]uint32{}
		sawMoov   bool
		truncated error
	)
	byID := func(id uint32) *mp4Track {
		for _, t := range tracks {
			if t.id == id {
				return t
			}
		}
		return nil
	}
	err := mp4Boxes(r, 0, size, func(b mp4Box) error {
		switch b.typ {
		case "moov":
			sawMoov = true
			return parseMoov(r, b, &tracks, trex)
		case "moof":
			return parseMoof(r, b, byID, trex)
		}
		return nil
	})
	if errors.Is(err, errTruncatedBox) {
		truncated, err = err, nil
	}
	if err != nil {
		return VideoInfo{}, err
	}
	if !sawMoov {
		if truncated != nil {
			return VideoInfo{}, fmt.Errorf("no moov box (metadata) before the end: %w", truncated)
		}
		return VideoInfo{}, fmt.Errorf("no moov box (metadata): %w", errBadBox)
	}
	var v *mp4Track
	for _, t := range tracks {
		if t.handler == "vide" {
			v = t
			break
		}
	}
	if v == nil {
		return VideoInfo{}, fmt.Errorf("no video track: %w", errBadBox)
	}
	info := VideoInfo{Codec: v.codec, Rotation: v.rotation, Width: v.width, Height: v.height}
	if !v.sampleEntryWH {
		info.Width, info.Height = v.tkhdWidth, v.tkhdHei
	}
	if v.rotation == 90 || v.rotation == 270 {
		info.Width, info.Height = info.Height, info.Width
	}
	frames, dur := v.sttsCount, v.sttsDuration
	if frames == 0 && v.fragCount > 0 {
		frames, dur, info.Fragmented = v.fragCount, v.fragDuration, true
	}
	if frames > math.MaxInt32 {
		return info, fmt.Errorf("%d frames: %w", frames, errBadBox)
	}
	info.Frames = int(frames)
	if v.timescale > 0 {
		if dur == 0 {
			dur = v.mdhdDuration
		}
		info.Duration = float64(dur) / float64(v.timescale)
		if dur > 0 {
			info.FPS = float64(frames) * float64(v.timescale) / float64(dur)
		}
	}
	if truncated == nil && !info.Fragmented {
		if end, ok := v.lastSampleEnd(); ok && end > uint64(size) {
			truncated = fmt.Errorf("media data ends at byte %d, file has %d: %w", end, size, errTruncatedBox)
		}
	}
	return info, truncated
}

// lastSampleEnd is the byte just past the furthest sample, from stsc/stco/stsz.
func (t *mp4Track) lastSampleEnd() (uint64, bool) {
	if !t.hasTables || len(t.chunkOffsets) == 0 || len(t.stsc) == 0 {
		return 0, false
	}
	var maxEnd uint64
	sample := int64(0)
	for i := range t.stsc {
		first := uint64(t.stsc[i].firstChunk)
		last := uint64(len(t.chunkOffsets))
		if i+1 < len(t.stsc) {
			last = uint64(t.stsc[i+1].firstChunk) - 1
		}
		if first == 0 || last > uint64(len(t.chunkOffsets)) {
			return 0, false
		}
		for c := first; c <= last && sample < t.stszCount; c++ {
			off := t.chunkOffsets[c-1]
			for k := uint32(0); k < t.stsc[i].perChunk && sample < t.stszCount; k++ {
				sz := uint64(t.sampleSize)
				if sz == 0 {
					sz = uint64(t.sizes[sample])
				}
				off += sz
				sample++
			}
			maxEnd = max(maxEnd, off)
		}
	}
	return maxEnd, true
}

func parseMoov(r io.ReaderAt, moov mp4Box, tracks *[]*mp4Track, trex map[uint32]uint32) error {
	start, n := moov.payload()
	return mp4Boxes(r, start, start+n, func(b mp4Box) error {
		switch b.typ {
		case "trak":
			t := &mp4Track{}
			if err := parseTrak(r, b, t); err != nil {
				return err
			}
			*tracks = append(*tracks, t)
			if d, ok := trex[t.id]; ok {
				t.trexDuration = d
			}
		case "mvex":
			s, n := b.payload()
			return mp4Boxes(r, s, s+n, func(b mp4Box) error {
				if b.typ != "trex" {
					return nil
				}
				p, err := readBox(r, b)
				if err != nil {
					return err
				}
				if len(p) < 24 {
					return fmt.Errorf("trex: %w", errBadBox)
				}
				id := binary.BigEndian.Uint32(p[4:])
				trex[id] = binary.BigEndian.Uint32(p[12:])
				for _, t := range *tracks {
					if t.id == id {
						t.trexDuration = trex[id]
					}
				}
				return nil
			})
		}
		return nil
	})
}

// containers the walk descends into below trak.
var trakContainers = map[string]bool{"mdia": true, "minf": true, "stbl": true}

func parseTrak(r io.ReaderAt, trak mp4Box, t *mp4Track) error {
	var walk func(b mp4Box) error
	walk = func(b mp4Box) error {
		if trakContainers[b.typ] {
			s, n := b.payload()
			return mp4Boxes(r, s, s+n, walk)
		}
		switch b.typ {
		case "tkhd", "mdhd", "hdlr", "stsd", "stts", "stsz", "stsc", "stco", "co64":
		default:
			return nil
		}
		p, err := readBox(r, b)
		if err != nil {
			return err
		}
		if err := parseTrakLeaf(b.typ, p, t); err != nil {
			return fmt.Errorf("%s: %w", b.typ, err)
		}
		return nil
	}
	s, n := trak.payload()
	return mp4Boxes(r, s, s+n, walk)
}

// fullBox checks a full box's payload length (after version/flags) and returns
// the version and the rest.
func fullBox(p []byte, need int) (byte, []byte, error) {
	if len(p) < 4+need {
		return 0, nil, errBadBox
	}
	return p[0], p[4:], nil
}

func parseTrakLeaf(typ string, p []byte, t *mp4Track) error {
	be := binary.BigEndian
	switch typ {
	case "tkhd":
		v, q, err := fullBox(p, 80)
		if err != nil {
			return err
		}
		if v == 1 {
			if len(q) < 92 {
				return errBadBox
			}
			t.id = be.Uint32(q[16:])
			q = q[32:]
		} else {
			t.id = be.Uint32(q[8:])
			q = q[20:]
		}
		// q: reserved(8) layer(2) group(2) volume(2) reserved(2) matrix(36) width(4) height(4)
		m := q[16:52]
		a := float64(int32(be.Uint32(m[0:])))
		b := float64(int32(be.Uint32(m[4:])))
		t.rotation = matrixRotation(a, b)
		t.tkhdWidth = int(be.Uint32(q[52:]) >> 16)
		t.tkhdHei = int(be.Uint32(q[56:]) >> 16)
	case "mdhd":
		v, q, err := fullBox(p, 16)
		if err != nil {
			return err
		}
		if v == 1 {
			if len(q) < 28 {
				return errBadBox
			}
			t.timescale = be.Uint32(q[16:])
			t.mdhdDuration = be.Uint64(q[20:])
		} else {
			t.timescale = be.Uint32(q[8:])
			t.mdhdDuration = uint64(be.Uint32(q[12:]))
		}
	case "hdlr":
		_, q, err := fullBox(p, 8)
		if err != nil {
			return err
		}
		t.handler = string(q[4:8])
	case "stsd":
		_, q, err := fullBox(p, 4)
		if err != nil {
			return err
		}
		if be.Uint32(q) == 0 || len(q) < 12 {
			return nil
		}
		e := q[4:]
		t.codec = printable(string(e[4:8]))
		if len(e) >= 36 {
			t.width, t.height = int(be.Uint16(e[32:])), int(be.Uint16(e[34:]))
			t.sampleEntryWH = true
		}
	case "stts":
		_, q, err := fullBox(p, 4)
		if err != nil {
			return err
		}
		n := int64(be.Uint32(q))
		if n*8 > int64(len(q)-4) {
			return fmt.Errorf("%d entries in %d bytes: %w", n, len(q)-4, errBadBox)
		}
		t.sttsCount, t.sttsDuration = 0, 0
		for i := range n {
			e := q[4+8*i:]
			c, d := uint64(be.Uint32(e)), uint64(be.Uint32(e[4:]))
			t.sttsCount += int64(c)
			t.sttsDuration += c * d
		}
	case "stsz":
		_, q, err := fullBox(p, 8)
		if err != nil {
			return err
		}
		t.sampleSize = be.Uint32(q)
		t.stszCount = int64(be.Uint32(q[4:]))
		if t.sampleSize == 0 {
			if t.stszCount*4 > int64(len(q)-8) {
				return fmt.Errorf("%d sizes in %d bytes: %w", t.stszCount, len(q)-8, errBadBox)
			}
			t.sizes = make([]uint32, t.stszCount)
			for i := range t.sizes {
				t.sizes[i] = be.Uint32(q[8+4*i:])
			}
		}
		t.hasTables = true
	case "stsc":
		_, q, err := fullBox(p, 4)
		if err != nil {
			return err
		}
		n := int64(be.Uint32(q))
		if n*12 > int64(len(q)-4) {
			return fmt.Errorf("%d entries in %d bytes: %w", n, len(q)-4, errBadBox)
		}
		t.stsc = make([]stscEntry, n)
		for i := range t.stsc {
			e := q[4+12*i:]
			t.stsc[i] = stscEntry{be.Uint32(e), be.Uint32(e[4:])}
			if i > 0 && t.stsc[i].firstChunk <= t.stsc[i-1].firstChunk {
				return fmt.Errorf("chunk runs out of order: %w", errBadBox)
			}
		}
	case "stco", "co64":
		_, q, err := fullBox(p, 4)
		if err != nil {
			return err
		}
		w := int64(4)
		if typ == "co64" {
			w = 8
		}
		n := int64(be.Uint32(q))
		if n*w > int64(len(q)-4) {
			return fmt.Errorf("%d offsets in %d bytes: %w", n, len(q)-4, errBadBox)
		}
		t.chunkOffsets = make([]uint64, n)
		for i := range t.chunkOffsets {
			if w == 4 {
				t.chunkOffsets[i] = uint64(be.Uint32(q[4+4*i:]))
			} else {
				t.chunkOffsets[i] = be.Uint64(q[4+8*i:])
			}
		}
	}
	return nil
}

// matrixRotation turns the first row of a track header matrix into a rotation
// in degrees, snapped to a quarter turn.
func matrixRotation(a, b float64) int {
	if a == 0 && b == 0 {
		return 0
	}
	deg := math.Atan2(b, a) * 180 / math.Pi
	q := int(math.Round(deg/90)) % 4
	if q < 0 {
		q += 4
	}
	return q * 90
}

func parseMoof(r io.ReaderAt, moof mp4Box, byID func(uint32) *mp4Track, trex map[uint32]uint32) error {
	be := binary.BigEndian
	s, n := moof.payload()
	return mp4Boxes(r, s, s+n, func(b mp4Box) error {
		if b.typ != "traf" {
			return nil
		}
		var t *mp4Track
		var defDur uint32
		s, n := b.payload()
		return mp4Boxes(r, s, s+n, func(b mp4Box) error {
			switch b.typ {
			case "tfhd":
				p, err := readBox(r, b)
				if err != nil {
					return err
				}
				_, q, err := fullBox(p, 4)
				if err != nil {
					return fmt.Errorf("tfhd: %w", err)
				}
				flags := be.Uint32(p) & 0xffffff
				id := be.Uint32(q)
				t = byID(id)
				defDur = trex[id]
				o := 4
				if flags&0x1 != 0 {
					o += 8
				}
				if flags&0x2 != 0 {
					o += 4
				}
				if flags&0x8 != 0 {
					if len(q) < o+4 {
						return fmt.Errorf("tfhd: %w", errBadBox)
					}
					defDur = be.Uint32(q[o:])
				}
			case "trun":
				if t == nil {
					return nil
				}
				p, err := readBox(r, b)
				if err != nil {
					return err
				}
				_, q, err := fullBox(p, 4)
				if err != nil {
					return fmt.Errorf("trun: %w", err)
				}
				flags := be.Uint32(p) & 0xffffff
				count := int64(be.Uint32(q))
				o := 4
				if flags&0x1 != 0 {
					o += 4
				}
				if flags&0x4 != 0 {
					o += 4
				}
				per := 0
				for _, f := range []uint32{0x100, 0x200, 0x400, 0x800} {
					if flags&f != 0 {
						per += 4
					}
				}
				if int64(o)+count*int64(per) > int64(len(q)) {
					return fmt.Errorf("trun: %d samples in %d bytes: %w", count, len(q), errBadBox)
				}
				t.fragCount += count
				if flags&0x100 == 0 {
					t.fragDuration += uint64(count) * uint64(defDur)
					return nil
				}
				for i := range count {
					t.fragDuration += uint64(be.Uint32(q[int64(o)+i*int64(per):]))
				}
			}
			return nil
		})
	})
}
