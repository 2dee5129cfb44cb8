// Command s3server is an S3 server for benchmarks (gofakes3, the engine under rclone's
// `serve s3`, with its in-memory backend). Not part of scopectl.
package main

import (
	"flag"
	"log"
	"net/http"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:9000", "address")
	bucket := flag.String("bucket", "vol", "bucket to create")
	flag.Parse()
	be := s3mem.New()
	if err := be.CreateBucket(*bucket); err != nil {
		log.Fatal(err)
	}
	log.Printf("s3server: %s bucket %s", *addr, *bucket)
	log.Fatal(http.ListenAndServe(*addr, gofakes3.New(be).Server()))
}
