package hftest

import (
	"net"
	"net/http"
	"net/http/httptest"
)

// NewServerOn is NewServer with the Hub and the CDN on the given listeners instead of
// httptest's loopback ones, for a standalone fake Hub (bench/hfserver) that clients on
// another host or network namespace can reach. URLs the servers hand out (the CDN
// redirect, tree paging links) use the listeners' addresses, so listen on a concrete IP,
// not a wildcard one. Options.TLS and PlainCDN apply as in NewServer. Close it when done;
// Close also closes the listeners.
func NewServerOn(opt Options, hub, cdn net.Listener) *Server {
	// NewServer sets up all the state; its two loopback servers are swapped for servers on
	// the given listeners before anything can learn their addresses.
	s := NewServer(opt)
	s.Hub.Close()
	s.CDN.Close()
	start := func(l net.Listener, h http.HandlerFunc, tls bool) *httptest.Server {
		ts := httptest.NewUnstartedServer(h)
		ts.Listener.Close()
		ts.Listener = l
		if tls {
			ts.StartTLS()
		} else {
			ts.Start()
		}
		return ts
	}
	s.Hub = start(hub, s.serveHub, opt.TLS)
	s.CDN = start(cdn, s.serveCDN, opt.TLS && !opt.PlainCDN)
	return s
}
