#!/bin/sh
# Builds kube-apiserver and etcd for envtest from the Go module proxy, cached by version:
# only the first run on a machine pays (~22 min cold on 2 cores for kube-apiserver, ~1 min etcd).
# Prints the folder holding both binaries (use it as KUBEBUILDER_ASSETS).
#
#   KUBEBUILDER_ASSETS=$(tools/k8s-lab/build.sh)      # kube-apiserver + etcd (envtest)
#   tools/k8s-lab/build.sh all                        # + kube-scheduler, kube-controller-manager
#   tools/k8s-lab/build.sh node                       # + kubelet (the single-node e2e)
#
# Cache: $SCOPECTL_K8S_CACHE, else $XDG_CACHE_HOME/scopectl-k8s, else ~/.cache/scopectl-k8s;
# binaries land in <cache>/v<K8S_VERSION>/ under their own names, written atomically.
# Each wrapper folder has its own go.mod, so scopectl's module never pulls k8s.io/kubernetes
# (k8s' replace directives break a plain `go install`; the wrapper restates them).
set -eu
K8S_VERSION=1.34.4
ETCD_VERSION=3.6.8
here=$(cd "$(dirname "$0")" && pwd)
cache=${SCOPECTL_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/scopectl-k8s}
out=$cache/v$K8S_VERSION
mkdir -p "$out"
nice=""
command -v nice >/dev/null 2>&1 && nice="nice -n 19"

build() { # build NAME DIR PKG LDFLAGS
	name=$1 dir=$2 pkg=$3 ldflags=$4
	if [ -x "$out/$name" ]; then return 0; fi
	echo "k8s-lab: building $name into $out (once per machine)" >&2
	start=$(date +%s)
	(cd "$here/$dir" && CGO_ENABLED=0 GOFLAGS=-mod=mod $nice go build -trimpath \
		-ldflags "$ldflags" -o "$out/.$name.tmp" "$pkg")
	mv "$out/.$name.tmp" "$out/$name"
	echo "k8s-lab: $name built in $(( $(date +%s) - start )) s" >&2
}

build etcd etcd go.etcd.io/etcd/server/v3 "-s -w"
vpkg=k8s.io/component-base/version
build kube-apiserver apiserver k8s.io/kubernetes/cmd/kube-apiserver \
	"-s -w -X $vpkg.gitVersion=v$K8S_VERSION -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=34 -X $vpkg.gitTreeState=clean -X $vpkg.buildDate=1970-01-01T00:00:00Z"
# With "all": the scheduler and the controller manager too (the optional tests that run
# the real StatefulSet/Job controllers and scheduler against the same API server).
# With "node": the kubelet as well (the single-node end-to-end test runs real pods).
case "${1:-}" in
all) extra="kube-scheduler kube-controller-manager" ;;
node) extra="kube-scheduler kube-controller-manager kubelet" ;;
*) extra="" ;;
esac
if [ -n "$extra" ]; then
	for b in $extra; do
		build $b apiserver k8s.io/kubernetes/cmd/$b \
			"-s -w -X $vpkg.gitVersion=v$K8S_VERSION -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=34 -X $vpkg.gitTreeState=clean -X $vpkg.buildDate=1970-01-01T00:00:00Z"
	done
fi
echo "$out"
