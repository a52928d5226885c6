#!/usr/bin/env bash
# Builds the kubectl plugin (make plugin): bin/kubectl-workflowtask for this machine, and for each
# platform in PLUGIN_PLATFORMS (default: this machine's) a krew archive
# dist/plugin/kubectl-workflowtask_<os>_<arch>.tar.gz, plus the krew manifest rendered from
# hack/krew/workflowtask.yaml with their sha256 (dist/plugin/workflowtask.yaml).
#
#   PLUGIN_PLATFORMS="linux/amd64 linux/arm64 darwin/arm64" VERSION=v0.1.0 \
#     PLUGIN_URI_BASE=https://github.com/taskops/workflowtask-operator/releases/download/v0.1.0 hack/build-plugin.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bin=${BIN:-$root/bin}
dist=${PLUGIN_DIST:-$root/dist/plugin}
version=${VERSION:-v0.0.0-dev}
platforms=${PLUGIN_PLATFORMS:-$(go env GOOS)/$(go env GOARCH)}
uri_base=${PLUGIN_URI_BASE:-file://$dist}

mkdir -p "$bin" "$dist"
ldflags="-s -w -X github.com/taskops/workflowtask-operator/internal/plugin.Version=$version"
CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$bin/kubectl-workflowtask" ./cmd/kubectl-workflowtask
# kubectl (≥ 1.26) completes `kubectl workflowtask …` by running kubectl_complete-workflowtask
# from PATH: the shim, beside the plugin.
shim() { install -m 0755 hack/krew/kubectl_complete-workflowtask "$1"; }
shim "$bin/kubectl_complete-workflowtask"

template=hack/krew/workflowtask.yaml
head=$(sed -n '/^  # PLATFORM$/q;p' "$template")
block=$(sed -n '/^  # PLATFORM$/,/^  # END PLATFORM$/{/# PLATFORM$/d;/# END PLATFORM$/d;p}' "$template")
manifest="${head//\{\{VERSION\}\}/$version}"$'\n'
for platform in $platforms; do
  os=${platform%/*} arch=${platform#*/}
  stage=$(mktemp -d)
  exe=kubectl-workflowtask
  CGO_ENABLED=0 GOOS=$os GOARCH=$arch go build -trimpath -ldflags "$ldflags" -o "$stage/$exe" ./cmd/kubectl-workflowtask
  shim "$stage/kubectl_complete-workflowtask"
  cp docs/plugin.md "$stage/README.md"
  cp LICENSE "$stage/LICENSE"
  archive=kubectl-workflowtask_${os}_${arch}.tar.gz
  # Reproducible: fixed owner, order and times.
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$stage" -cf - "$exe" kubectl_complete-workflowtask README.md LICENSE | gzip -n >"$dist/$archive"
  rm -rf "$stage"
  sum=$(sha256sum "$dist/$archive" | cut -d' ' -f1)
  entry=${block//\{\{OS\}\}/$os}
  entry=${entry//\{\{ARCH\}\}/$arch}
  entry=${entry//\{\{URI\}\}/$uri_base/$archive}
  entry=${entry//\{\{SHA256\}\}/$sum}
  manifest+="$entry"$'\n'
done
printf '%s' "$manifest" >"$dist/workflowtask.yaml"
echo "build-plugin: $bin/kubectl-workflowtask; krew archives and manifest in $dist" >&2
