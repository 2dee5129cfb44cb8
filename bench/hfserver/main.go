// Command hfserver runs the fake Hugging Face Hub of internal/hub/hf/hftest (Hub + CDN)
// on given addresses, serving one model repo with one LFS file of seeded random data, for
// bench/pull.sh. It prints KEY=VALUE lines (HF_ENDPOINT, REPO, FILE, SIZE, SHA256, CDN_URL:
// the signed CDN URL of the blob, valid for an hour, for curl/aria2c) and then READY.
//
//	hfserver -hub 10.77.77.2:8080 -cdn 10.77.77.2:8081 [-stats 127.0.0.1:8082] [-mb 1024]
//
// With -stats, GET /stats on that address answers the CDN counters as JSON
// ({"cdn_bytes":…,"cdn_requests":…,"first_cdn_unix_ns":…}) and POST /reset zeroes them.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/daydreamlive/scopectl/internal/hub/hf/hftest"
)

func main() {
	hubAddr := flag.String("hub", "127.0.0.1:8080", "Hub listen address (a concrete IP: it is in the URLs handed out)")
	cdnAddr := flag.String("cdn", "127.0.0.1:8081", "CDN listen address")
	statsAddr := flag.String("stats", "", "optional address for GET /stats and POST /reset")
	repo := flag.String("repo", "bench/blob", "repo id")
	file := flag.String("file", "blob.bin", "path of the LFS file in the repo")
	mb := flag.Int("mb", 1024, "file size in MiB")
	seed := flag.Uint64("seed", 1, "random data seed")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("hfserver: ")

	data := make([]byte, int64(*mb)<<20)
	var s [32]byte
	s[0] = byte(*seed)
	rand.NewChaCha8(s).Read(data)

	hl, err := net.Listen("tcp", *hubAddr)
	if err != nil {
		log.Fatal(err)
	}
	cl, err := net.Listen("tcp", *cdnAddr)
	if err != nil {
		log.Fatal(err)
	}
	srv := hftest.NewServerOn(hftest.Options{}, hl, cl)
	defer srv.Close()
	var mu sync.Mutex
	var first int64
	srv.CDNHook = func(*http.Request) {
		mu.Lock()
		if first == 0 {
			first = time.Now().UnixNano()
		}
		mu.Unlock()
	}
	srv.AddRepo(hftest.Repo{ID: *repo, Files: []hftest.File{
		{Path: "README.md", Data: []byte("# hfserver benchmark repo\n")},
		{Path: *file, Data: data, LFS: true},
	}})

	// The CDN URL, as the Hub's redirect gives it.
	nf := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := nf.Head(srv.URL() + "/" + *repo + "/resolve/main/" + *file)
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	cdnURL := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusFound || cdnURL == "" {
		log.Fatalf("resolve: %s, no CDN redirect", resp.Status)
	}
	srv.ResetCounts()

	if *statsAddr != "" {
		mux := http.NewServeMux()
		mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			f := first
			mu.Unlock()
			json.NewEncoder(w).Encode(map[string]int64{
				"cdn_bytes": srv.CDNBytes(""), "cdn_requests": int64(srv.Count("cdn")), "first_cdn_unix_ns": f,
			})
		})
		mux.HandleFunc("POST /reset", func(w http.ResponseWriter, r *http.Request) {
			srv.ResetCounts()
			mu.Lock()
			first = 0
			mu.Unlock()
		})
		sl, err := net.Listen("tcp", *statsAddr)
		if err != nil {
			log.Fatal(err)
		}
		go http.Serve(sl, mux)
	}

	fmt.Printf("HF_ENDPOINT=%s\nREPO=%s\nFILE=%s\nSIZE=%d\nSHA256=%s\nCDN_URL=%s\nREADY\n",
		srv.URL(), *repo, *file, len(data), hftest.SHA256(data), cdnURL)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
}
