package main

import (
	"bytes"
	"encoding/binary"
	"testing"

	"golang.org/x/image/webp"
)

// The frames of the animated sample WebPs are valid lossless bitstreams.
func TestVP8LDecodes(t *testing.T) {
	body := append([]byte("WEBP"), riffChunk("VP8L", vp8l(64, 48, 0xff204080))...)
	file := append([]byte("RIFF"), 0, 0, 0, 0)
	binary.LittleEndian.PutUint32(file[4:], uint32(len(body)))
	img, err := webp.Decode(bytes.NewReader(append(file, body...)))
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 64 || b.Dy() != 48 {
		t.Fatalf("bounds %v", b)
	}
	r, g, bl, a := img.At(10, 10).RGBA()
	if r>>8 != 0x20 || g>>8 != 0x40 || bl>>8 != 0x80 || a>>8 != 0xff {
		t.Errorf("pixel %x %x %x %x", r>>8, g>>8, bl>>8, a>>8)
	}
	anim := animatedWebP(64, 48, 5, 16, 1)
	if string(anim[:4]) != "RIFF" || string(anim[8:12]) != "WEBP" || int(binary.LittleEndian.Uint32(anim[4:])) != len(anim)-8 {
		t.Error("bad RIFF container")
	}
	if n := bytes.Count(anim, []byte("ANMF")); n != 5 {
		t.Errorf("%d frames", n)
	}
}
