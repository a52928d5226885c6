#!/usr/bin/env bash
# Builds the test control plane (etcd, kube-apiserver, and kubectl when none is on PATH) from Go
# modules into bin/k8s/<version>-<os>-<arch>, the layout setup-envtest uses, and prints that
# directory. Nothing prebuilt is downloaded: only Go modules come from the module proxy.
# A binary already present is not rebuilt, so a warm run takes well under a second.
#
#   hack/build-controlplane.sh [extra kube binaries...]   e.g. kube-controller-manager kube-scheduler
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=hack/kube-version.sh
. "$root/hack/kube-version.sh"
etcd_version=3.6.16
os=$(go env GOOS)
arch=$(go env GOARCH)
out=${CONTROLPLANE_DIR:-$root/bin/k8s/${k8s_version}-${os}-${arch}}
mkdir -p "$out"

log() { echo "build-controlplane: $*" >&2; }

build() { # build <name> <module dir> <package> <ldflags>
  local name=$1 dir=$2 pkg=$3 ldflags=$4
  [ -x "$out/$name" ] && return 0
  log "building $name (first time only; kube-apiserver takes ~8 min cold on 2 cores)"
  local start=$SECONDS
  (cd "$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out/$name.tmp" "$pkg")
  mv "$out/$name.tmp" "$out/$name"
  log "built $name in $((SECONDS - start))s"
}

build etcd "$root/hack/tools/etcd" . \
  "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=v${etcd_version}"
build kube-apiserver "$root/hack/tools/kube" ./cmd/kube-apiserver "$kube_ldflags"

if [ ! -x "$out/kubectl" ]; then
  if command -v kubectl >/dev/null 2>&1; then
    ln -sf "$(command -v kubectl)" "$out/kubectl"
  else
    build kubectl "$root/hack/tools/kube" ./cmd/kubectl "$kube_ldflags"
  fi
fi

for extra in "$@"; do
  build "$extra" "$root/hack/tools/kube" "./cmd/$extra" "$kube_ldflags"
done

echo "$out"
