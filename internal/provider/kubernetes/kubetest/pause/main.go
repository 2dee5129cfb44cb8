// Command pause is the pod sandbox's process on the test node (what
// registry.k8s.io/pause is on a real one): it holds the pod's namespaces and exits on
// SIGTERM or SIGINT. Built static into a FROM-scratch image by kubetest; test only.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}
