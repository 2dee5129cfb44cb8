//go:build tools

// Package tools pins k8s.io/kubernetes so that build.sh can build kube-apiserver (and,
// with "all", kube-scheduler and kube-controller-manager; with "node", the kubelet too)
// for the tests. It lives in its
// own module: scopectl's go.mod never pulls k8s.io/kubernetes.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
