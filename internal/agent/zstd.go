package agent

import (
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// Chunks may arrive zstd-compressed (Content-Encoding: zstd): trained LoRA weights in
// bf16 compress by about a fifth, which is a fifth more LoRA per second over a slow link.

var zdec = sync.OnceValue(func() *zstd.Decoder {
	d, _ := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(MaxChunkSize+1<<20))
	return d
})

// readZstd decompresses a body into data, which it must fill exactly.
func readZstd(w http.ResponseWriter, body io.ReadCloser, data []byte) error {
	length := int64(len(data))
	// zstd's worst case expansion is tiny; anything bigger than this is not our chunk.
	comp, err := io.ReadAll(http.MaxBytesReader(w, body, length+length/64+4096))
	if err != nil {
		return fmt.Errorf("reading the compressed body: %v", err)
	}
	out, err := zdec().DecodeAll(comp, data[:0])
	if err != nil {
		return fmt.Errorf("bad zstd data: %v", err)
	}
	if int64(len(out)) != length || (length > 0 && &out[0] != &data[0]) {
		return fmt.Errorf("decompresses to %d bytes, not %d", len(out), length)
	}
	return nil
}
