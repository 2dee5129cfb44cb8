package kubernetes

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"

	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
)

// PortForward forwards a loopback port of this machine to port of pod through the API
// server (as kubectl port-forward does: WebSocket, falling back to SPDY), so that the
// agent sidecar and Scope are reached without exposing either. It returns
// "127.0.0.1:PORT" and a stop function; ctx bounds only the setup.
func (c *Client) PortForward(ctx context.Context, pod string, port int) (string, func(), error) {
	if c.cfg == nil {
		return "", nil, fmt.Errorf("kubernetes: port-forward to %s: no REST config", pod)
	}
	transport, upgrader, err := spdy.RoundTripperFor(c.cfg)
	if err != nil {
		return "", nil, fmt.Errorf("kubernetes: port-forward to %s: %w", pod, err)
	}
	u := c.CS.CoreV1().RESTClient().Post().Resource("pods").Namespace(c.Namespace).Name(pod).SubResource("portforward").URL()
	var dialer httpstream.Dialer = spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, u)
	if ws, err := portforward.NewSPDYOverWebsocketDialer(u, c.cfg); err == nil {
		dialer = portforward.NewFallbackDialer(ws, dialer, func(err error) bool {
			return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
		})
	}
	stopCh, ready := make(chan struct{}), make(chan struct{})
	var once sync.Once
	stop := func() { once.Do(func() { close(stopCh) }) }
	pf, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{"0:" + strconv.Itoa(port)}, stopCh, ready, io.Discard, io.Discard)
	if err != nil {
		return "", nil, fmt.Errorf("kubernetes: port-forward to %s: %w", pod, err)
	}
	errc := make(chan error, 1)
	go func() { errc <- pf.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-errc:
		if err == nil {
			err = fmt.Errorf("ended before it was ready")
		}
		return "", nil, c.explain(err, fmt.Sprintf("port-forward to %s:%d", pod, port))
	case <-ctx.Done():
		stop()
		return "", nil, c.explain(ctx.Err(), fmt.Sprintf("port-forward to %s:%d", pod, port))
	}
	ports, err := pf.GetPorts()
	if err != nil || len(ports) == 0 {
		stop()
		return "", nil, fmt.Errorf("kubernetes: port-forward to %s:%d: no local port", pod, port)
	}
	return "127.0.0.1:" + strconv.Itoa(int(ports[0].Local)), stop, nil
}
