#!/usr/bin/env bash
# A real node for the local cluster (hack/local-cluster.sh): kubelet + containerd + runc + CNI
# bridge, every binary built from Go modules (hack/build-node.sh), images built here without a
# registry (make node-images), pods running real containers. Linux and root only.
#
#   hack/real-node.sh up      start containerd and kubelet, join the running local cluster
#   hack/real-node.sh down    stop them, remove every pod, and undo every change to the host
#   hack/real-node.sh check   compare the host with the snapshot taken before `up` (exit 1 on a difference)
#   hack/real-node.sh route SERVICE_IP:PORT [ENDPOINT_IP:PORT...]
#                             kube-proxy's part for one Service port, for this node's pods: their
#                             TCP connections to SERVICE_IP:PORT go to one of the endpoints (none:
#                             not routed); run it again whenever the Service's EndpointSlices change
#
# The node is the machine's hostname, its kubelet listens on 127.0.0.1 only, with webhook
# authentication and authorization (kube-apiserver presents the kubelet client certificate
# local-cluster.sh makes); pods get 10.88.0.0/16 on the bridge wft0 and can reach this machine
# only: kube-apiserver at https://10.96.0.1:443 (a DNAT to 127.0.0.1), other pods, the Services
# `route` was given (DNATs to their endpoints), nothing beyond (a FORWARD drop). There is no
# kube-proxy and no cluster DNS: a pod names a routed Service by its ClusterIP, or maps its DNS
# name to it in hostAliases. Host changes (sysctls kubelet and the bridge set, iptables chains, mounts,
# directories outside the data dir, pod cgroups) are recorded before `up` and undone by `down`;
# `check` proves it.
#
# Data: <LOCAL_CLUSTER_DIR>/node (configs, certificates, containerd and kubelet state, logs).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=hack/kube-version.sh
. "$root/hack/kube-version.sh"
kubectl_bin=${CONTROLPLANE_DIR:-$root/bin/k8s/${k8s_version}-$(go env GOOS)-$(go env GOARCH)}/kubectl
kubectl() { "$kubectl_bin" "$@"; }
data=${LOCAL_CLUSTER_DIR:-$root/.local/cluster}
case "$data" in /*) ;; *) data=$PWD/$data ;; esac
node=$data/node
logs=$data/logs
run=$data/run
kubeconfig=$data/kubeconfig
bridge=wft0
pod_cidr=10.88.0.0/16
service_ip=10.96.0.1
kubelet_port=${LOCAL_CLUSTER_KUBELET_PORT:-10250}
node_name=$(hostname)
snapshot_before=$node/host-before
sysctls=(vm.overcommit_memory kernel.panic kernel.panic_on_oops net.ipv4.ip_forward
  net.ipv4.conf.all.route_localnet net.bridge.bridge-nf-call-iptables)
# Paths kubelet and containerd use outside the data dir, whatever they are told.
outside=(/var/lib/kubelet /var/log/containers /var/log/pods /opt/containerd /run/containerd
  /var/lib/cni /etc/cni /opt/cni)

log() { echo "real-node: $*" >&2; }
die() { log "$*"; exit 1; }

# --- the host, before and after ----------------------------------------------------------------

iptables_rules() { # every table's rules, without counters
  local t
  for t in filter nat mangle raw; do
    { iptables-save -t "$t" 2>/dev/null | grep -v '^#' || true; } | sed -e 's/\[[0-9]*:[0-9]*\]//'
  done
}

# snapshot <dir>: what `down` must give back.
snapshot() {
  local dir=$1 s p
  rm -rf "$dir" && mkdir -p "$dir"
  for s in "${sysctls[@]}"; do
    echo "$s=$(sysctl -n "$s" 2>/dev/null || echo absent)"
  done >"$dir/sysctls"
  iptables_rules >"$dir/iptables"
  { awk '{print $5}' /proc/self/mountinfo | grep -v "^$data" || true; } | sort >"$dir/mounts"
  ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | sort >"$dir/links"
  for p in "${outside[@]}"; do [ -e "$p" ] && echo "$p"; done >"$dir/paths"
  find /sys/fs/cgroup -maxdepth 2 -type d -name kubepods\* 2>/dev/null | sort >"$dir/cgroups"
}

cmd_check() {
  [ -d "$snapshot_before" ] || die "no snapshot: run up first"
  local now=$node/host-now differ=0 f
  snapshot "$now"
  for f in sysctls iptables mounts links paths cgroups; do
    if ! diff -u "$snapshot_before/$f" "$now/$f" >"$now/$f.diff"; then
      log "the host differs from before up: $f"
      cat "$now/$f.diff" >&2
      differ=1
    fi
  done
  [ $differ = 0 ] && log "the host is as it was before up"
  return $differ
}

# --- processes -----------------------------------------------------------------------------------

pid_of() { [ -f "$run/$1.pid" ] && kill -0 "$(cat "$run/$1.pid")" 2>/dev/null && cat "$run/$1.pid"; }

start() { # start <name> <command...>
  local name=$1
  shift
  [ -n "$(pid_of "$name" || true)" ] && return 0
  setsid "$@" >>"$logs/$name.log" 2>&1 </dev/null &
  echo $! >"$run/$name.pid"
}

stop() { # stop <name>
  local pid
  pid=$(pid_of "$1" || true)
  [ -n "$pid" ] || { rm -f "$run/$1.pid"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$run/$1.pid"
}

# --- up ----------------------------------------------------------------------------------------

sign() { # sign <name> <subject> <extensions>: a key and certificate signed by the cluster CA
  local name=$1 subj=$2 ext=$3
  [ -s "$node/pki/$name.crt" ] && return 0
  mkdir -p "$node/pki"
  openssl genrsa -out "$node/pki/$name.key" 2048 2>/dev/null
  openssl req -new -key "$node/pki/$name.key" -subj "$subj" -out "$node/pki/$name.csr"
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n%s\n' "$ext" >"$node/pki/$name.ext"
  openssl x509 -req -in "$node/pki/$name.csr" -CA "$data/ca.crt" -CAkey "$data/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 3650 -sha256 -extfile "$node/pki/$name.ext" \
    -out "$node/pki/$name.crt" 2>/dev/null
  rm -f "$node/pki/$name.csr" "$node/pki/$name.ext"
  chmod 600 "$node/pki/$name.key"
}

write_configs() {
  local apiserver_port=$1
  mkdir -p "$node/containerd" "$node/kubelet" "$node/cni/net.d" "$node/pod-logs" "$node/volume-plugins" "$node/runc"
  cat >"$node/containerd/config.toml" <<EOF
version = 3
root = '$node/containerd/root'
state = '$node/containerd/state'
disabled_plugins = ['io.containerd.nri.v1.nri']
[grpc]
  address = '$node/containerd/containerd.sock'
[ttrpc]
  address = '$node/containerd/containerd.sock.ttrpc'
[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = 'docker.io/library/pause:dev'
  [plugins.'io.containerd.cri.v1.runtime']
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = '$bin/runc'
        Root = '$node/runc'
        SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ['$bin/cni']
      conf_dir = '$node/cni/net.d'
  [plugins.'io.containerd.image-verifier.v1.bindir']
    bin_dir = '$node/containerd/image-verifier'
EOF
  cat >"$node/cni/net.d/10-wft.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "wft", "plugins": [
  {"type": "bridge", "bridge": "$bridge", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$pod_cidr"}]], "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": "$node/cni/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
EOF
  local b64=(base64 -w0)
  cat >"$node/kubelet/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local-cluster
  cluster: {server: 'https://127.0.0.1:$apiserver_port', certificate-authority-data: $("${b64[@]}" <"$data/ca.crt")}
users:
- name: node
  user: {client-certificate: '$node/pki/kubelet-client.crt', client-key: '$node/pki/kubelet-client.key'}
contexts:
- name: node
  context: {cluster: local-cluster, user: node}
current-context: node
EOF
  cat >"$node/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: $kubelet_port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
tlsCertFile: $node/pki/kubelet-serving.crt
tlsPrivateKeyFile: $node/pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $data/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$node/containerd/containerd.sock
imageServiceEndpoint: unix://$node/containerd/containerd.sock
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
enforceNodeAllocatable: []
podLogsDir: $node/pod-logs
volumePluginDir: $node/volume-plugins
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "1Mi", nodefs.available: "1%", imagefs.available: "1%"}
serializeImagePulls: false
resolvConf: /etc/resolv.conf
EOF
}

host_network() { # the bridge, its route_localnet, the DNAT to kube-apiserver, the FORWARD drop
  local apiserver_port=$1
  ip link show "$bridge" >/dev/null 2>&1 || ip link add "$bridge" type bridge
  ip link set "$bridge" up
  sysctl -qw "net.ipv4.conf.$bridge.route_localnet=1"
  # A routed Service's endpoint is a pod on the same bridge: its answers are bridged, not routed,
  # and only pass netfilter (to be un-DNATed) with this on — kube-proxy needs it too.
  sysctl -qw net.bridge.bridge-nf-call-iptables=1 ||
    die "net.bridge.bridge-nf-call-iptables: the br_netfilter module is needed (modprobe br_netfilter)"
  iptables -t nat -N WFT-NODE 2>/dev/null || iptables -t nat -F WFT-NODE
  iptables -t nat -N WFT-SERVICES 2>/dev/null || iptables -t nat -F WFT-SERVICES # filled by `route`
  iptables -t nat -A WFT-NODE -d "$service_ip/32" -p tcp --dport 443 -j DNAT --to-destination "127.0.0.1:$apiserver_port"
  iptables -t nat -A WFT-NODE -j WFT-SERVICES
  iptables -t nat -C PREROUTING -s "$pod_cidr" -j WFT-NODE 2>/dev/null || iptables -t nat -I PREROUTING -s "$pod_cidr" -j WFT-NODE
  iptables -N WFT-NODE 2>/dev/null || iptables -F WFT-NODE
  iptables -A WFT-NODE -s "$pod_cidr" -d "$pod_cidr" -j ACCEPT
  iptables -A WFT-NODE -s "$pod_cidr" -j DROP # pod traffic never leaves this machine
  iptables -C FORWARD -j WFT-NODE 2>/dev/null || iptables -I FORWARD -j WFT-NODE
}

cmd_up() {
  [ "$(uname -s)" = Linux ] && [ "$(id -u)" = 0 ] || die "a real node needs Linux and root"
  [ -s "$data/cluster.env" ] || die "no local cluster in $data: hack/local-cluster.sh up first"
  local apiserver_port
  apiserver_port=$(sed -n 's/^apiserver_port=//p' "$data/cluster.env")
  [ -n "$apiserver_port" ] || die "no apiserver_port in $data/cluster.env"
  bin=$("$root/hack/build-node.sh")
  mkdir -p "$node" "$logs" "$run"
  [ -d "$snapshot_before" ] || { snapshot "$snapshot_before"; log "recorded the host in $snapshot_before"; }
  sign kubelet-client "/O=system:nodes/CN=system:node:$node_name" "extendedKeyUsage=clientAuth"
  sign kubelet-serving "/CN=$node_name" "extendedKeyUsage=serverAuth
subjectAltName=DNS:$node_name,IP:127.0.0.1"
  write_configs "$apiserver_port"
  host_network "$apiserver_port"

  PATH=$bin:$PATH start containerd "$bin/containerd" --config "$node/containerd/config.toml"
  local ctr=("$bin/ctr" --address "$node/containerd/containerd.sock" -n k8s.io)
  for _ in $(seq 100); do "${ctr[@]}" version >/dev/null 2>&1 && break; sleep 0.1; done
  "${ctr[@]}" version >/dev/null 2>&1 || die "containerd did not start (log: $logs/containerd.log)"
  # the images built here (make node-images, make image): every tarball of this platform
  local tar
  while IFS= read -r tar; do
    "${ctr[@]}" images import "$tar" >>"$logs/containerd.log" 2>&1 || die "importing $tar (log: $logs/containerd.log)"
  done < <(find "${REAL_NODE_IMAGES:-$root/bin/image}" -name "*-linux-$(go env GOARCH).tar" 2>/dev/null)
  PATH=$bin:$PATH start kubelet "$bin/kubelet" --config "$node/kubelet/config.yaml" \
    --kubeconfig "$node/kubelet/kubeconfig" --root-dir "$node/kubelet/root" --cert-dir "$node/pki" \
    --hostname-override "$node_name"
  for _ in $(seq 120); do
    kubectl --kubeconfig "$kubeconfig" wait --for=condition=Ready "node/$node_name" --timeout=1s >/dev/null 2>&1 && break
    sleep 0.5
  done
  kubectl --kubeconfig "$kubeconfig" wait --for=condition=Ready "node/$node_name" --timeout=1s >/dev/null ||
    die "node $node_name not Ready (logs: $logs/kubelet.log, $logs/containerd.log)"
  # the simulated node takes no pods while the real one is there
  kubectl --kubeconfig "$kubeconfig" cordon kwok-node-0 >/dev/null 2>&1 || true
  log "node $node_name is Ready (kubelet on 127.0.0.1:$kubelet_port, pods on $pod_cidr)"
}

# --- down --------------------------------------------------------------------------------------

cmd_down() {
  bin=$("$root/hack/build-node.sh" 2>/dev/null || true)
  kubectl --kubeconfig "$kubeconfig" delete node "$node_name" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  kubectl --kubeconfig "$kubeconfig" uncordon kwok-node-0 >/dev/null 2>&1 || true
  stop kubelet
  if [ -n "$(pid_of containerd || true)" ] && [ -n "$bin" ]; then
    local ctr=("$bin/ctr" --address "$node/containerd/containerd.sock" -n k8s.io) id
    for id in $("${ctr[@]}" tasks ls -q 2>/dev/null); do "${ctr[@]}" tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
    sleep 0.5
    for id in $("${ctr[@]}" tasks ls -q 2>/dev/null); do "${ctr[@]}" tasks delete -f "$id" >/dev/null 2>&1 || true; done
    for id in $("${ctr[@]}" containers ls -q 2>/dev/null); do "${ctr[@]}" containers rm "$id" >/dev/null 2>&1 || true; done
  fi
  stop containerd
  # shims outlive containerd by design
  pkill -KILL -f "containerd-shim-runc-v2 .*-address $node/containerd" 2>/dev/null || true
  # mounts under the data dir (netns, overlays, kubelet's bind mount of its root), deepest first
  { awk '{print $5}' /proc/self/mountinfo | grep "^$node" || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  # the network: bridge (veths went with their netns), our chains, kubelet's and CNI's chains
  ip link del "$bridge" 2>/dev/null || true
  iptables -D FORWARD -j WFT-NODE 2>/dev/null || true
  iptables -F WFT-NODE 2>/dev/null && iptables -X WFT-NODE 2>/dev/null || true
  iptables -t nat -D PREROUTING -s "$pod_cidr" -j WFT-NODE 2>/dev/null || true
  iptables -t nat -F WFT-NODE 2>/dev/null && iptables -t nat -X WFT-NODE 2>/dev/null || true
  iptables -t nat -F WFT-SERVICES 2>/dev/null && iptables -t nat -X WFT-SERVICES 2>/dev/null || true
  if [ -d "$snapshot_before" ]; then
    restore_iptables
    restore_sysctls
    remove_new_paths
  fi
  remove_pod_cgroups
  log "node stopped"
}

# restore_iptables removes the chains and rules that were not there before up (kubelet's
# KUBE-*, CNI's), table by table.
restore_iptables() {
  local t chain rule
  for t in filter nat mangle raw; do
    # rules added to built-in or pre-existing chains
    { iptables-save -t "$t" 2>/dev/null | grep '^-A ' || true; } | sed -e 's/\[[0-9]*:[0-9]*\]//' | while read -r rule; do
      grep -qxF -- "$rule" "$snapshot_before/iptables" && continue
      eval "iptables -t $t ${rule/-A /-D }" 2>/dev/null || true
    done
    # chains that did not exist
    iptables-save -t "$t" 2>/dev/null | sed -n 's/^:\([^ ]*\) .*/\1/p' | while read -r chain; do
      grep -q "^:$chain " "$snapshot_before/iptables" && continue
      iptables -t "$t" -F "$chain" 2>/dev/null || true
    done
    iptables-save -t "$t" 2>/dev/null | sed -n 's/^:\([^ ]*\) .*/\1/p' | while read -r chain; do
      grep -q "^:$chain " "$snapshot_before/iptables" && continue
      iptables -t "$t" -X "$chain" 2>/dev/null || true
    done
  done
}

restore_sysctls() {
  local line key value
  while IFS= read -r line; do
    key=${line%%=*} value=${line#*=}
    [ "$value" = absent ] && continue
    [ "$(sysctl -n "$key" 2>/dev/null)" = "$value" ] || sysctl -qw "$key=$value" 2>/dev/null || true
  done <"$snapshot_before/sysctls"
}

remove_new_paths() {
  local p
  for p in "${outside[@]}"; do
    grep -qxF "$p" "$snapshot_before/paths" && continue
    [ -e "$p" ] || continue
    { awk '{print $5}' /proc/self/mountinfo | grep "^$p" || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$p"
  done
}

remove_pod_cgroups() { # kubelet's cgroups at the root of every hierarchy, deepest first
  local d
  find /sys/fs/cgroup -mindepth 2 -maxdepth 2 -type d -name 'kubepods*' 2>/dev/null | while read -r d; do
    find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}

# --- Services ------------------------------------------------------------------------------------

# cmd_route <service-ip:port> [<endpoint-ip:port>...]: what kube-proxy does for one Service port,
# for this node's pods only (WFT-SERVICES is reached from PREROUTING for the pod network): each
# new TCP connection to the Service's address goes to one of the endpoints, picked at random as
# kube-proxy's iptables mode does; without endpoints the address is not routed (the FORWARD drop
# answers). The chain is replaced in one iptables-restore, the other Services' rules kept: a
# connection never sees half an update. The caller keeps the rules in step with the Service's
# EndpointSlices (ready endpoints only); `down` removes them with the chain.
cmd_route() {
  [ $# -ge 1 ] || die "usage: $0 route SERVICE_IP:PORT [ENDPOINT_IP:PORT...]"
  local ipv4='[0-9]{1,3}(\.[0-9]{1,3}){3}' a vip vport n i=0 rules
  for a in "$@"; do
    [[ $a =~ ^$ipv4:[0-9]{1,5}$ ]] || die "route: $a is not IPv4:PORT"
  done
  vip=${1%:*} vport=${1##*:}
  shift
  [ "$vip" != "$service_ip" ] || die "route: $service_ip is kube-apiserver's, routed by up"
  iptables -t nat -S WFT-SERVICES >/dev/null 2>&1 || die "route: no WFT-SERVICES chain: up first"
  # the chain's rules for other addresses, then this address's, one per endpoint: the i-th taken
  # with probability 1/(n-i) when the ones before it were not, the last always
  rules=$(iptables -t nat -S WFT-SERVICES | grep '^-A ' | grep -vF -- "-d $vip/32 -p tcp -m tcp --dport $vport " || true)
  n=$#
  for a in "$@"; do
    local pick=""
    [ $((n - i)) -gt 1 ] && pick=$(awk -v k=$((n - i)) 'BEGIN { printf "-m statistic --mode random --probability %.5f ", 1 / k }')
    rules+=$'\n'"-A WFT-SERVICES -d $vip/32 -p tcp -m tcp --dport $vport ${pick}-j DNAT --to-destination $a"
    i=$((i + 1))
  done
  printf '*nat\n:WFT-SERVICES - [0:0]\n%s\nCOMMIT\n' "$(grep -v '^$' <<<"$rules" || true)" | iptables-restore --noflush ||
    die "route: iptables-restore failed"
  log "pods' connections to $vip:$vport go to ${*:-nothing}"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  check) cmd_check ;;
  route) shift; cmd_route "$@" ;;
  *) echo "usage: $0 up|down|check|route SERVICE_IP:PORT [ENDPOINT_IP:PORT...]" >&2; exit 2 ;;
esac
