//go:build tools

// Package tools pins etcd's server so that build.sh can build etcd for envtest.
package tools

import _ "go.etcd.io/etcd/server/v3"
