#!/usr/bin/env bash
# Builds a real node's binaries from Go modules into bin/node/<versions>-<os>-<arch> and prints
# that directory: kubelet (from k8s.io/kubernetes, via hack/build-controlplane.sh), containerd,
# ctr and the runc shim, runc (cgo + libseccomp), and the CNI plugins the node uses (bridge,
# host-local, loopback, portmap). Nothing prebuilt is downloaded: Go modules come from the module
# proxy, libseccomp-dev and iptables from Debian (installed here when missing and run as root).
# A binary already present is not rebuilt, so a warm run takes well under a second.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=hack/kube-version.sh
. "$root/hack/kube-version.sh"
containerd_version=2.4.2
runc_version=1.5.3
cni_version=1.10.0
os=$(go env GOOS)
arch=$(go env GOARCH)
out=${NODE_BIN_DIR:-$root/bin/node/k8s${k8s_version}-containerd${containerd_version}-runc${runc_version}-cni${cni_version}-${os}-${arch}}
mkdir -p "$out"

log() { echo "build-node: $*" >&2; }

# Debian packages the node needs: libseccomp-dev (runc's seccomp, cgo) and iptables (the CNI
# bridge's masquerading, kubelet's own chains).
missing=()
[ -e /usr/include/seccomp.h ] || missing+=(libseccomp-dev)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    log "missing Debian packages: ${missing[*]} (apt-get install ${missing[*]})"
    exit 1
  fi
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null
fi

# go_install <binary> <cgo> <tags> <package@version>
go_install() {
  local name=$1 cgo=$2 tags=$3 pkg=$4
  [ -x "$out/$name" ] && return 0
  log "building $name ($pkg, first time only)"
  local start=$SECONDS tmp
  tmp=$(mktemp -d)
  GOBIN=$tmp CGO_ENABLED=$cgo GOFLAGS=-mod=mod go install -trimpath -ldflags "-s -w" -tags "$tags" "$pkg"
  mv "$tmp/$(basename "${pkg%@*}")" "$out/$name"
  rm -rf "$tmp"
  log "built $name in $((SECONDS - start))s"
}

if [ ! -x "$out/kubelet" ]; then
  log "building kubelet (first time only; ~2 min when k8s.io/kubernetes is in the build cache)"
  start=$SECONDS
  (cd "$root/hack/tools/kube" && CGO_ENABLED=0 go build -trimpath -ldflags "$kube_ldflags" -o "$out/kubelet.tmp" ./cmd/kubelet)
  mv "$out/kubelet.tmp" "$out/kubelet"
  log "built kubelet in $((SECONDS - start))s"
fi
ctd="urfave_cli_no_docs no_btrfs osusergo netgo"
for c in containerd ctr containerd-shim-runc-v2; do
  go_install "$c" 0 "$ctd" "github.com/containerd/containerd/v2/cmd/$c@v$containerd_version"
done
# upstream's default tags add libpathrs, a Rust library Debian does not package
go_install runc 1 "seccomp urfave_cli_no_docs" "github.com/opencontainers/runc@v$runc_version"
mkdir -p "$out/cni"
for p in main/bridge ipam/host-local main/loopback meta/portmap; do
  go_install "cni/$(basename "$p")" 0 "" "github.com/containernetworking/plugins/plugins/$p@v$cni_version"
done
echo "$out"
