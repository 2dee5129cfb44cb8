package kubernetes

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/client-go/util/exec"
)

// Exec runs argv in container of pod through the API server (as kubectl exec does:
// WebSocket, falling back to SPDY), with stdin when not nil, and returns its exit
// code. A command that ran and failed is a code, not an error.
func (c *Client) Exec(ctx context.Context, pod, container string, argv []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	if c.cfg == nil {
		return -1, fmt.Errorf("kubernetes: exec in %s: no REST config", pod)
	}
	req := c.CS.CoreV1().RESTClient().Post().Resource("pods").Namespace(c.Namespace).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: container, Command: argv, Stdin: stdin != nil, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	spdyExec, err := remotecommand.NewSPDYExecutor(c.cfg, "POST", req.URL())
	if err != nil {
		return -1, fmt.Errorf("kubernetes: exec in %s: %w", pod, err)
	}
	var ex remotecommand.Executor = spdyExec
	if ws, err := remotecommand.NewWebSocketExecutor(c.cfg, "GET", req.URL().String()); err == nil {
		if fb, err := remotecommand.NewFallbackExecutor(ws, spdyExec, func(err error) bool {
			return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
		}); err == nil {
			ex = fb
		}
	}
	err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: stdin, Stdout: stdout, Stderr: stderr})
	var ce utilexec.CodeExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &ce):
		return ce.ExitStatus(), nil
	}
	return -1, c.explain(err, fmt.Sprintf("exec in %s/%s", pod, container))
}

// LogOptions choose what Logs prints.
type LogOptions struct {
	Container string
	Tail      int64 // last lines; 0 = all
	Follow    bool  // keep streaming until the container ends or ctx does
	Since     time.Duration
}

// Logs streams container's log of pod through the API server (GetLogs), line by line
// to line, until the log ends (with Follow: until the container ends or ctx ends).
func (c *Client) Logs(ctx context.Context, pod string, opt LogOptions, line func(string) error) error {
	po := &corev1.PodLogOptions{Container: opt.Container, Follow: opt.Follow}
	if opt.Tail > 0 {
		po.TailLines = &opt.Tail
	}
	if opt.Since > 0 {
		s := int64(opt.Since.Seconds())
		po.SinceSeconds = &s
	}
	rc, err := c.CS.CoreV1().Pods(c.Namespace).GetLogs(pod, po).Stream(ctx)
	if err != nil {
		return c.explain(err, "logs of "+pod+"/"+opt.Container)
	}
	defer rc.Close()
	sc := bufio.NewScanner(rc)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if err := line(sc.Text()); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return c.explain(err, "logs of "+pod+"/"+opt.Container)
	}
	return ctx.Err()
}
