// Command tcpceil measures what plain TCP moves across a link: the ceiling any
// TCP-based transfer (SSH, HTTP, S3, croc) can reach there, after IP and TCP headers,
// loss recovery and congestion control. bench/sync.sh and bench/pull.sh print it next
// to their rows, so that "of link" figures can be read against what the link allows.
//
//	tcpceil -listen ADDR                    # sink: reads each connection to EOF
//	tcpceil -connect ADDR -streams N -mb M  # sends M MB (10^6 B) over N connections
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

func main() {
	listen := flag.String("listen", "", "sink address")
	connect := flag.String("connect", "", "sink to send to")
	streams := flag.Int("streams", 1, "parallel TCP connections")
	mb := flag.Int64("mb", 300, "megabytes (10^6 B) to send in all")
	flag.Parse()
	if *listen != "" {
		if err := sink(*listen); err != nil {
			fmt.Fprintln(os.Stderr, "tcpceil:", err)
			os.Exit(1)
		}
		return
	}
	if *connect == "" || *streams < 1 || *mb < 1 {
		fmt.Fprintln(os.Stderr, "tcpceil: want -listen ADDR, or -connect ADDR with -streams ≥ 1 and -mb ≥ 1")
		os.Exit(2)
	}
	secs, err := send(*connect, *streams, *mb*1_000_000)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tcpceil:", err)
		os.Exit(1)
	}
	fmt.Printf("%.3f\n", secs)
}

func sink(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Minute))
			if _, err := io.Copy(io.Discard, c); err == nil {
				c.Write([]byte{1}) // everything arrived
			}
		}()
	}
}

// send moves total bytes over n connections and returns the seconds from the first
// dial until the sink confirmed the last byte of every connection.
func send(addr string, n int, total int64) (float64, error) {
	t0 := time.Now()
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		share := total / int64(n)
		if i == n-1 {
			share = total - share*int64(n-1)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- stream(addr, share)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return 0, err
		}
	}
	return time.Since(t0).Seconds(), nil
}

func stream(addr string, n int64) error {
	c, err := net.DialTimeout("tcp", addr, 30*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Minute))
	buf := make([]byte, 1<<20)
	for n > 0 {
		k, err := c.Write(buf[:min(int64(len(buf)), n)])
		if err != nil {
			return err
		}
		n -= int64(k)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return err
	}
	ack := make([]byte, 1)
	if _, err := io.ReadFull(c, ack); err != nil {
		return fmt.Errorf("the sink did not confirm: %w", err)
	}
	return nil
}
