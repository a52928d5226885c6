#!/usr/bin/env bash
# Makes sure the Debian packages named on the command line are installed: a package counts as
# present when a command of its name is on PATH (tmux, iptables) or dpkg has it installed
# (libseccomp-dev). Missing ones are installed when run as root (apt-get update first only if the
# install fails, e.g. on an image without package lists); otherwise it says what to run and
# exits 1, so that tests needing them fail clearly instead of skipping.
#
#   hack/debian-packages.sh PKG...
set -euo pipefail

log() { echo "debian-packages: $*" >&2; }

missing=()
for pkg in "$@"; do
  command -v "$pkg" >/dev/null 2>&1 && continue
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null)" = installed ] && continue
  missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

install=(apt-get install -y --no-install-recommends "${missing[@]}")
if [ "$(id -u)" != 0 ]; then
  log "missing Debian packages: ${missing[*]}; install them as root with:"
  log "  sudo DEBIAN_FRONTEND=noninteractive ${install[*]}"
  exit 1
fi
log "installing ${missing[*]}"
if ! DEBIAN_FRONTEND=noninteractive "${install[@]}" >/dev/null 2>&1; then
  log "apt-get install failed; running apt-get update and trying again"
  apt-get update >/dev/null
  DEBIAN_FRONTEND=noninteractive "${install[@]}" >/dev/null
fi
