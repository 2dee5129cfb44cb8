package dataset

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	_ "image/gif" // PIL opens by content: a .png that is really a GIF still trains
	_ "image/jpeg"
	_ "image/png"

	_ "golang.org/x/image/webp"
)

// ImageInfo is what ai-toolkit sees of an image: PIL opens by content, not by
// extension, and exif_transpose swaps width and height for EXIF orientations 5–8.
type ImageInfo struct {
	Format        string // jpeg, png, webp, gif (from the content)
	Width, Height int    // after EXIF orientation
	Orientation   int    // EXIF orientation tag, 0 when absent
	Animated      bool   // animated WebP (ANIM/ANMF) or APNG (acTL): PIL trains the first frame only
	Frames        int    // frames of an animated image
}

// ProbeImage reads an image's header and, unless the image is animated,
// decodes it fully so that a damaged file is caught here rather than skipped
// by ai-toolkit when it loads the dataset.
func ProbeImage(data []byte) (ImageInfo, error) {
	cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
	info := ImageInfo{Format: format}
	if format == "" {
		info.Format = sniffImage(data)
	}
	switch info.Format {
	case "webp":
		w, werr := parseWebP(data)
		if werr != nil {
			return info, werr
		}
		info.Width, info.Height = w.width, w.height
		info.Animated, info.Frames, info.Orientation = w.animated, w.frames, w.orientation
		if w.animated {
			return info.oriented(), nil // x/image/webp does not decode animations
		}
	case "png":
		p, perr := parsePNGChunks(data)
		if perr != nil {
			return info, perr
		}
		info.Animated, info.Frames, info.Orientation = p.frames > 1, p.frames, p.orientation
	case "jpeg":
		info.Orientation = jpegOrientation(data)
	case "":
		return info, errors.New("not an image PIL reads (unknown content)")
	}
	if err != nil {
		return info, fmt.Errorf("%s header: %w", info.Format, err)
	}
	if info.Width == 0 {
		info.Width, info.Height = cfg.Width, cfg.Height
	}
	if _, _, err := image.Decode(bytes.NewReader(data)); err != nil {
		return info, fmt.Errorf("%s decode: %w", info.Format, err)
	}
	return info.oriented(), nil
}

func (i ImageInfo) oriented() ImageInfo {
	if i.Orientation >= 5 && i.Orientation <= 8 {
		i.Width, i.Height = i.Height, i.Width
	}
	return i
}

func sniffImage(b []byte) string {
	switch {
	case len(b) >= 12 && string(b[:4]) == "RIFF" && string(b[8:12]) == "WEBP":
		return "webp"
	case len(b) >= 8 && string(b[:8]) == "\x89PNG\r\n\x1a\n":
		return "png"
	case len(b) >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff:
		return "jpeg"
	case len(b) >= 6 && (string(b[:6]) == "GIF87a" || string(b[:6]) == "GIF89a"):
		return "gif"
	}
	return ""
}

type webpInfo struct {
	width, height int
	animated      bool
	frames        int
	orientation   int
}

// parseWebP walks a WebP RIFF container: VP8X canvas size and flags, ANMF
// frames, EXIF orientation, and the VP8/VP8L bitstream size of a simple file.
func parseWebP(b []byte) (webpInfo, error) {
	var w webpInfo
	le := binary.LittleEndian
	if len(b) < 12 || string(b[:4]) != "RIFF" || string(b[8:12]) != "WEBP" {
		return w, errors.New("webp: not a RIFF WEBP file")
	}
	riff := int64(le.Uint32(b[4:])) + 8
	if riff > int64(len(b)) {
		return w, fmt.Errorf("webp: RIFF says %d bytes, file has %d: %w", riff, len(b), errTruncatedBox)
	}
	b = b[:riff]
	for p := 12; p+8 <= len(b); {
		id := string(b[p : p+4])
		n := int(le.Uint32(b[p+4:]))
		body := p + 8
		if n < 0 || body+n > len(b) || body+n < body {
			return w, fmt.Errorf("webp: chunk %q runs past the end: %w", printable(id), errTruncatedBox)
		}
		c := b[body : body+n]
		switch id {
		case "VP8X":
			if n < 10 {
				return w, errors.New("webp: short VP8X chunk")
			}
			w.animated = c[0]&0x02 != 0
			w.width = int(uint32(c[4])|uint32(c[5])<<8|uint32(c[6])<<16) + 1
			w.height = int(uint32(c[7])|uint32(c[8])<<8|uint32(c[9])<<16) + 1
		case "ANMF":
			w.frames++
		case "EXIF":
			w.orientation = exifOrientation(c)
		case "VP8 ":
			if w.width == 0 && n >= 10 {
				w.width = int(le.Uint16(c[6:]) & 0x3fff)
				w.height = int(le.Uint16(c[8:]) & 0x3fff)
			}
		case "VP8L":
			if w.width == 0 && n >= 5 {
				v := le.Uint32(c[1:])
				w.width = int(v&0x3fff) + 1
				w.height = int(v>>14&0x3fff) + 1
			}
		}
		p = body + n + n&1
	}
	if w.frames > 0 {
		w.animated = true
	}
	if w.width == 0 || w.height == 0 {
		return w, errors.New("webp: no image size")
	}
	return w, nil
}

type pngInfo struct{ frames, orientation int }

// parsePNGChunks finds APNG's acTL (frame count) and the eXIf orientation.
func parsePNGChunks(b []byte) (pngInfo, error) {
	var pi pngInfo
	be := binary.BigEndian
	if len(b) < 8 {
		return pi, errors.New("png: short file")
	}
	for p := 8; p+8 <= len(b); {
		n := int64(be.Uint32(b[p:]))
		id := string(b[p+4 : p+8])
		end := int64(p) + 12 + n
		if end > int64(len(b)) {
			return pi, fmt.Errorf("png: chunk %q runs past the end: %w", printable(id), errTruncatedBox)
		}
		c := b[p+8 : int64(p)+8+n]
		switch id {
		case "acTL":
			if n >= 4 {
				pi.frames = int(be.Uint32(c) & 0x7fffffff)
			}
		case "eXIf":
			pi.orientation = exifOrientation(c)
		case "IEND":
			return pi, nil
		}
		p = int(end)
	}
	return pi, nil
}

// jpegOrientation reads the orientation from a JPEG's Exif APP1 segment.
func jpegOrientation(b []byte) int {
	for p := 2; p+4 <= len(b); {
		if b[p] != 0xff {
			return 0
		}
		m := b[p+1]
		if m == 0xd8 || (m >= 0xd0 && m <= 0xd7) || m == 0x01 || m == 0xff {
			p++
			continue
		}
		if m == 0xda || m == 0xd9 { // image data starts: no more metadata
			return 0
		}
		n := int(binary.BigEndian.Uint16(b[p+2:]))
		if n < 2 || p+2+n > len(b) {
			return 0
		}
		seg := b[p+4 : p+2+n]
		if m == 0xe1 && len(seg) >= 6 && string(seg[:6]) == "Exif\x00\x00" {
			return exifOrientation(seg[6:])
		}
		p += 2 + n
	}
	return 0
}

// exifOrientation reads tag 0x0112 from IFD0 of a TIFF-structured Exif block.
// It returns 0 when the block is damaged or has no orientation.
func exifOrientation(t []byte) int {
	if len(t) >= 6 && string(t[:6]) == "Exif\x00\x00" { // WebP EXIF chunks sometimes keep the JPEG prefix
		t = t[6:]
	}
	if len(t) < 8 {
		return 0
	}
	var bo binary.ByteOrder
	switch string(t[:4]) {
	case "II*\x00":
		bo = binary.LittleEndian
	case "MM\x00*":
		bo = binary.BigEndian
	default:
		return 0
	}
	ifd := int64(bo.Uint32(t[4:]))
	if ifd+2 > int64(len(t)) {
		return 0
	}
	n := int64(bo.Uint16(t[ifd:]))
	for i := range n {
		e := ifd + 2 + 12*i
		if e+12 > int64(len(t)) {
			return 0
		}
		if bo.Uint16(t[e:]) == 0x0112 && bo.Uint16(t[e+2:]) == 3 {
			if v := int(bo.Uint16(t[e+8:])); v >= 1 && v <= 8 {
				return v
			}
			return 0
		}
	}
	return 0
}
