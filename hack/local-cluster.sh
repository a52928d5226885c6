#!/usr/bin/env bash
# A real, local Kubernetes cluster run as plain processes on 127.0.0.1, every binary built from Go
# modules (nothing prebuilt is downloaded): etcd, kube-apiserver (TLS, RBAC, service-account
# tokens, front-proxy/aggregation flags), kube-controller-manager (Job, garbage collector, TTL,
# service-account controllers...), kube-scheduler, and kwok simulating one node (kwok-node-0).
#
#   hack/local-cluster.sh build           build the missing binaries (also done by `up`)
#   hack/local-cluster.sh up              start everything, wait until healthy (idempotent)
#   hack/local-cluster.sh down [--purge]  stop everything; --purge also deletes the data dir
#   hack/local-cluster.sh env             prints: export KUBECONFIG=<datadir>/kubeconfig
#   hack/local-cluster.sh status          each component running/healthy (exit 1 if not all are)
#
#   eval "$(hack/local-cluster.sh env)"; kubectl get nodes
#
# Pods on the kwok node become Running and stay Running until annotated (see
# hack/local-cluster/kwok-stages.yaml):
#   kubectl annotate pod <pod> workflow.taskops.dev/simulate=complete   # -> Succeeded, exit 0
#   kubectl annotate pod <pod> workflow.taskops.dev/simulate=fail       # -> Failed, exit 1
# The same annotation on a Job's pod template completes (fails) its pods as soon as they run.
#
# API aggregation: the apiserver has the front-proxy flags and client cert. An aggregated API server
# run on this host is reached through a Service of type ExternalName (externalName: localhost,
# port: its port) named by the APIService; there is no kube-proxy, so ClusterIPs do not route. Its
# serving cert must be valid for <service>.<namespace>.svc (or use insecureSkipTLSVerify), and it
# should trust front-proxy-ca.crt for the X-Remote-User/X-Remote-Group headers.
#
# Data dir (LOCAL_CLUSTER_DIR, default <repo>/.local/cluster): certificates and keys (made once
# with openssl; ca.crt, front-proxy-ca.crt, front-proxy-client.crt, sa.pub, ... for other tools),
# kubeconfig (admin, system:masters), etcd/ data, logs/<component>.log, run/<component>.pid and
# cluster.env (the ports of the running cluster).
#
# Ports (127.0.0.1 only), overridable by environment when the cluster is started:
#   LOCAL_CLUSTER_ETCD_PORT=32379 LOCAL_CLUSTER_ETCD_PEER_PORT=32380
#   LOCAL_CLUSTER_ETCD_METRICS_PORT=32381 LOCAL_CLUSTER_APISERVER_PORT=6443
#   LOCAL_CLUSTER_KCM_PORT=32257 LOCAL_CLUSTER_SCHEDULER_PORT=32259 LOCAL_CLUSTER_KWOK_PORT=32247
# LOCAL_CLUSTER_AGGREGATOR_ROUTING=true makes kube-apiserver dial an APIService's endpoint (pod)
# IPs instead of its Service (with a real node: hack/real-node.sh; ExternalName Services then do
# not route). Other knobs: LOCAL_CLUSTER_TIMEOUT (seconds to wait for each component, default 90),
# LOCAL_CLUSTER_STOP_TIMEOUT (seconds between SIGTERM and SIGKILL, default 5),
# LOCAL_CLUSTER_NODE_PODS / LOCAL_CLUSTER_NODE_CPU (the kwok node's capacity, default 110 / 32),
# LOCAL_CLUSTER_KEEP_ON_FAILURE=1 (leave the processes running when `up` fails, to debug),
# CONTROLPLANE_DIR (where the binaries are, as for hack/build-controlplane.sh).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=hack/kube-version.sh
. "$root/hack/kube-version.sh"

case "$(uname -m)" in
  x86_64 | amd64) arch=amd64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *) arch=$(uname -m) ;;
esac
os=$(uname -s | tr '[:upper:]' '[:lower:]')
bin=${CONTROLPLANE_DIR:-$root/bin/k8s/${k8s_version}-${os}-${arch}}
data=${LOCAL_CLUSTER_DIR:-$root/.local/cluster}
case "$data" in /*) ;; *) data=$PWD/$data ;; esac
logs=$data/logs
run=$data/run
kubeconfig=$data/kubeconfig
stages=$root/hack/local-cluster/kwok-stages.yaml

service_cidr=10.96.0.0/16
service_ip=10.96.0.1 # the first address of service_cidr: the `kubernetes` Service
node_name=kwok-node-0
# The simulated node's capacity: a scale run (test/scale) needs room for thousands of pods.
node_pods=${LOCAL_CLUSTER_NODE_PODS:-110}
node_cpu=${LOCAL_CLUSTER_NODE_CPU:-32}
timeout=${LOCAL_CLUSTER_TIMEOUT:-90}
stop_timeout=${LOCAL_CLUSTER_STOP_TIMEOUT:-5}

components=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

log() { echo "local-cluster: $*" >&2; }
die() {
  log "error: $*"
  exit 1
}

now() { echo "${EPOCHREALTIME/,/.}"; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# --- processes -------------------------------------------------------------------------------

# pid_of <name>: the pid recorded for a component if that process is still the component
# (argv[0] is our binary), else nothing.
pid_of() {
  local name=$1 pid argv=()
  [ -f "$run/$name.pid" ] || return 0
  pid=$(<"$run/$name.pid")
  [[ $pid =~ ^[0-9]+$ ]] || return 0
  mapfile -d '' -t argv <"/proc/$pid/cmdline" 2>/dev/null || return 0
  if [ "${argv[0]:-}" = "$bin/$name" ]; then echo "$pid"; fi
}

running() { [ -n "$(pid_of "$1")" ]; }

# stray_pids <name>: processes running our binary for this data dir without a pid file (e.g.
# the pid file was removed by hand); `down` stops them too.
stray_pids() {
  local name=$1 p argv
  for p in /proc/[0-9]*; do
    argv=()
    mapfile -d '' -t argv <"$p/cmdline" 2>/dev/null || continue
    [ "${argv[0]:-}" = "$bin/$name" ] || continue
    if [[ " ${argv[*]} " == *"$data/"* ]]; then echo "${p#/proc/}"; fi
  done
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start <name> <port> <args...>: runs the component in the background in its own session (so it
# outlives this script and a Ctrl-C in the terminal), output to logs/<name>.log.
start() {
  local name=$1 port=$2
  shift 2
  if running "$name"; then
    return 0
  fi
  [ -x "$bin/$name" ] || die "$bin/$name is missing: run $0 build"
  if port_in_use "$port"; then
    die "cannot start $name: 127.0.0.1:$port is already in use (set the LOCAL_CLUSTER_*_PORT variables to move the cluster)"
  fi
  [ -f "$logs/$name.log" ] && mv -f "$logs/$name.log" "$logs/$name.previous.log"
  setsid "$bin/$name" "$@" </dev/null >"$logs/$name.log" 2>&1 &
  local pid=$!
  disown "$pid"
  echo "$pid" >"$run/$name.pid"
  started+=("$name")
  # Until the forked shell has exec'd the binary, pid_of does not recognise the process.
  local i
  for ((i = 0; i < 200; i++)); do
    [ -n "$(pid_of "$name")" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.01
  done
}

# stop_group <name...>: SIGTERM the components, SIGKILL those still running stop_timeout later.
stop_group() {
  local name pid i pids=() names=()
  for name in "$@"; do
    for pid in $(pid_of "$name") $(stray_pids "$name"); do
      [[ " ${pids[*]} " == *" $pid "* ]] && continue
      if kill -TERM "$pid" 2>/dev/null; then
        pids+=("$pid")
        names+=("$name")
      fi
    done
  done
  [ ${#pids[@]} -gt 0 ] || return 0
  log "stopping ${names[*]}"
  local deadline=$((SECONDS + stop_timeout)) alive
  while :; do
    alive=()
    for ((i = 0; i < ${#pids[@]}; i++)); do
      if kill -0 "${pids[i]}" 2>/dev/null; then alive+=("${names[i]}:${pids[i]}"); fi
    done
    [ ${#alive[@]} -gt 0 ] || return 0
    if [ $SECONDS -ge $deadline ]; then
      log "killing ${alive[*]} (still running ${stop_timeout}s after SIGTERM)"
      kill -KILL "${alive[@]#*:}" 2>/dev/null || true
      sleep 0.2
      return 0
    fi
    sleep 0.1
  done
}

# etcd last: an apiserver whose etcd is gone hangs in its graceful shutdown (until SIGKILL), and
# etcd waits for the apiserver's streams to close.
stop_all() {
  stop_group kwok kube-scheduler kube-controller-manager kube-apiserver
  stop_group etcd
  rm -f "$run"/*.pid
}

# --- configuration ----------------------------------------------------------------------------

set_ports() {
  etcd_port=${LOCAL_CLUSTER_ETCD_PORT:-32379}
  etcd_peer_port=${LOCAL_CLUSTER_ETCD_PEER_PORT:-32380}
  etcd_metrics_port=${LOCAL_CLUSTER_ETCD_METRICS_PORT:-32381}
  apiserver_port=${LOCAL_CLUSTER_APISERVER_PORT:-6443}
  kcm_port=${LOCAL_CLUSTER_KCM_PORT:-32257}
  scheduler_port=${LOCAL_CLUSTER_SCHEDULER_PORT:-32259}
  kwok_port=${LOCAL_CLUSTER_KWOK_PORT:-32247}
  # While any component runs, the ports it was started with win over the environment.
  if [ -f "$data/cluster.env" ]; then
    local name
    for name in "${components[@]}"; do
      if running "$name"; then
        # shellcheck source=/dev/null
        . "$data/cluster.env"
        break
      fi
    done
  fi
}

save_ports() {
  cat >"$data/cluster.env" <<EOF
# Written by hack/local-cluster.sh up: the ports of the running local cluster.
etcd_port=$etcd_port
etcd_peer_port=$etcd_peer_port
etcd_metrics_port=$etcd_metrics_port
apiserver_port=$apiserver_port
kcm_port=$kcm_port
scheduler_port=$scheduler_port
kwok_port=$kwok_port
EOF
}

port_of() {
  case $1 in
    etcd) echo "$etcd_port" ;;
    kube-apiserver) echo "$apiserver_port" ;;
    kube-controller-manager) echo "$kcm_port" ;;
    kube-scheduler) echo "$scheduler_port" ;;
    kwok) echo "$kwok_port" ;;
  esac
}

# --- health -----------------------------------------------------------------------------------

curl_() { curl --silent --show-error --fail --max-time 2 "$@" 2>/dev/null; }

healthy() {
  local out
  case $1 in
    etcd)
      out=$(curl_ "http://127.0.0.1:$etcd_port/health") || return 1
      [[ $out == *'"health":"true"'* ]]
      ;;
    kube-apiserver)
      [ "$(curl_ --cacert "$data/ca.crt" --cert "$data/admin.crt" --key "$data/admin.key" \
        "https://127.0.0.1:$apiserver_port/readyz")" = ok ]
      ;;
    # /healthz turns ok a few seconds before the controllers run; they are listed once started.
    kube-controller-manager)
      out=$(curl_ -k "https://127.0.0.1:$kcm_port/healthz?verbose") || return 1
      [[ $out == *"job-controller ok"* ]]
      ;;
    kube-scheduler) [ "$(curl_ -k "https://127.0.0.1:$scheduler_port/healthz")" = ok ] ;;
    kwok) [ "$(curl_ "http://127.0.0.1:$kwok_port/healthz")" = ok ] ;;
  esac
}

fail_with_log() { # fail_with_log <name> <message>
  log "error: $1 $2; last lines of $logs/$1.log:"
  tail -n 25 "$logs/$1.log" 2>/dev/null | sed 's/^/    /' >&2 || true
  exit 1
}

wait_healthy() {
  local name=$1 deadline=$((SECONDS + timeout))
  until healthy "$name"; do
    running "$name" || fail_with_log "$name" "exited"
    [ $SECONDS -lt $deadline ] || fail_with_log "$name" "is not healthy after ${timeout}s"
    sleep 0.1
  done
  timings+=("$name $(elapsed "$t0")s")
}

kubectl_() { "$bin/kubectl" --kubeconfig "$kubeconfig" "$@"; }

# --- build ------------------------------------------------------------------------------------

build() {
  local b missing=()
  for b in etcd kube-apiserver kubectl kube-controller-manager kube-scheduler; do
    [ -x "$bin/$b" ] || missing+=("$b")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "building ${missing[*]}"
    CONTROLPLANE_DIR=$bin "$root/hack/build-controlplane.sh" kube-controller-manager kube-scheduler >/dev/null
  fi
  if [ ! -x "$bin/kwok" ]; then
    log "building kwok (first time only; about a minute)"
    local start=$SECONDS
    mkdir -p "$bin"
    CGO_ENABLED=0 go -C "$root/hack/tools/kwok" build -trimpath -ldflags "-s -w" -o "$bin/kwok.tmp" .
    mv "$bin/kwok.tmp" "$bin/kwok"
    log "built kwok in $((SECONDS - start))s"
  fi
}

# --- certificates -----------------------------------------------------------------------------

pki_files=(ca.crt ca.key apiserver.crt apiserver.key admin.crt admin.key front-proxy-ca.crt
  front-proxy-ca.key front-proxy-client.crt front-proxy-client.key sa.key sa.pub kubeconfig)

# sign <name> <subject> <ca> <extensions>: RSA 2048 key <name>.key and certificate <name>.crt,
# signed by <ca>.crt/<ca>.key (self-signed when <ca> is <name>).
sign() {
  local name=$1 subj=$2 ca=$3 ext=$4 dir=$5
  openssl genrsa -out "$dir/$name.key" 2048 2>/dev/null
  openssl req -new -key "$dir/$name.key" -subj "$subj" -out "$dir/$name.csr"
  printf '%s\n' "$ext" >"$dir/$name.ext"
  local signer=(-CA "$dir/$ca.crt" -CAkey "$dir/$ca.key")
  [ "$ca" = "$name" ] && signer=(-signkey "$dir/$name.key")
  openssl x509 -req -in "$dir/$name.csr" "${signer[@]}" -set_serial "0x$(openssl rand -hex 16)" \
    -days 3650 -sha256 -extfile "$dir/$name.ext" -out "$dir/$name.crt" 2>/dev/null
  rm -f "$dir/$name.csr" "$dir/$name.ext"
}

gen_pki() {
  local f complete=1
  for f in "${pki_files[@]}"; do [ -s "$data/$f" ] || complete=0; done
  [ $complete = 1 ] && return 0
  log "generating certificates and keys in $data"
  local tmp
  tmp=$(mktemp -d "$data/.pki.XXXXXX")
  local ca_ext='basicConstraints=critical,CA:TRUE
keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign,cRLSign
subjectKeyIdentifier=hash'
  local leaf='basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
authorityKeyIdentifier=keyid'
  sign ca "/CN=local-cluster-ca" ca "$ca_ext" "$tmp"
  sign apiserver "/CN=kube-apiserver" ca "$leaf
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:$service_ip" "$tmp"
  sign admin "/O=system:masters/CN=kubernetes-admin" ca "$leaf
extendedKeyUsage=clientAuth" "$tmp"
  sign front-proxy-ca "/CN=local-cluster-front-proxy-ca" front-proxy-ca "$ca_ext" "$tmp"
  sign front-proxy-client "/CN=front-proxy-client" front-proxy-ca "$leaf
extendedKeyUsage=clientAuth" "$tmp"
  openssl genrsa -out "$tmp/sa.key" 2048 2>/dev/null
  openssl rsa -in "$tmp/sa.key" -pubout -out "$tmp/sa.pub" 2>/dev/null

  local b64=(base64 -w0)
  cat >"$tmp/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local-cluster
  cluster:
    server: https://127.0.0.1:$apiserver_port
    certificate-authority-data: $("${b64[@]}" <"$tmp/ca.crt")
users:
- name: kubernetes-admin
  user:
    client-certificate-data: $("${b64[@]}" <"$tmp/admin.crt")
    client-key-data: $("${b64[@]}" <"$tmp/admin.key")
contexts:
- name: local-cluster
  context:
    cluster: local-cluster
    user: kubernetes-admin
current-context: local-cluster
EOF
  chmod 600 "$tmp"/*.key "$tmp/kubeconfig"
  for f in "${pki_files[@]}"; do mv -f "$tmp/$f" "$data/$f"; done
  rmdir "$tmp"
}

# kube-apiserver's client certificate for kubelets (logs, exec, port-forward on a real node,
# whose kubelet authenticates callers by webhook): made once, signed by the cluster CA — also in
# a data dir made before this certificate existed.
gen_kubelet_client_cert() {
  [ -s "$data/apiserver-kubelet-client.crt" ] && [ -s "$data/apiserver-kubelet-client.key" ] && return 0
  sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" ca 'basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth' "$data"
  chmod 600 "$data/apiserver-kubelet-client.key"
}

# The kubeconfig names the API server port; rewrite it if the port changed since it was made.
sync_kubeconfig_port() {
  local want="    server: https://127.0.0.1:$apiserver_port"
  grep -qxF "$want" "$kubeconfig" && return 0
  sed -i "s#^    server: https://127.0.0.1:.*#$want#" "$kubeconfig"
}

# --- commands ---------------------------------------------------------------------------------

cmd_up() {
  local t0 name all=1
  set_ports
  for name in "${components[@]}"; do
    running "$name" && healthy "$name" || all=0
  done
  if [ $all = 1 ]; then
    log "already up (apiserver https://127.0.0.1:$apiserver_port); $0 env prints the KUBECONFIG"
    return 0
  fi

  build
  mkdir -p "$data" "$logs" "$run" "$data/etcd" "$data/kube-apiserver" "$data/kube-controller-manager/flexvolume"
  chmod 700 "$data/etcd"
  touch "$data/.local-cluster" # marks the directory as ours for `down --purge`
  gen_pki
  gen_kubelet_client_cert
  sync_kubeconfig_port
  save_ports

  started=()
  timings=()
  t0=$(now) # start-up time is counted from here: binaries built, certificates made
  trap 'on_up_exit $?' EXIT

  start etcd "$etcd_port" \
    --name=local --data-dir="$data/etcd" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" \
    --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$etcd_peer_port" \
    --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster="local=http://127.0.0.1:$etcd_peer_port" \
    --listen-metrics-urls="http://127.0.0.1:$etcd_metrics_port" \
    --unsafe-no-fsync=true --log-level=warn
  start kube-apiserver "$apiserver_port" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address=127.0.0.1 --secure-port="$apiserver_port" --advertise-address=127.0.0.1 \
    --endpoint-reconciler-type=none \
    --cert-dir="$data/kube-apiserver" \
    --tls-cert-file="$data/apiserver.crt" --tls-private-key-file="$data/apiserver.key" \
    --client-ca-file="$data/ca.crt" \
    --authorization-mode=Node,RBAC \
    --service-cluster-ip-range="$service_cidr" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$data/sa.pub" \
    --service-account-signing-key-file="$data/sa.key" \
    --requestheader-client-ca-file="$data/front-proxy-ca.crt" \
    --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User \
    --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$data/front-proxy-client.crt" \
    --proxy-client-key-file="$data/front-proxy-client.key" \
    --kubelet-client-certificate="$data/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$data/apiserver-kubelet-client.key" \
    --enable-aggregator-routing="${LOCAL_CLUSTER_AGGREGATOR_ROUTING:-false}"
  wait_healthy etcd
  wait_healthy kube-apiserver

  start kube-controller-manager "$kcm_port" \
    --kubeconfig="$kubeconfig" \
    --authentication-kubeconfig="$kubeconfig" --authorization-kubeconfig="$kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$kcm_port" --leader-elect=false \
    --controllers='*' --use-service-account-credentials \
    --service-account-private-key-file="$data/sa.key" \
    --root-ca-file="$data/ca.crt" \
    --cluster-signing-cert-file="$data/ca.crt" --cluster-signing-key-file="$data/ca.key" \
    --service-cluster-ip-range="$service_cidr" \
    --flex-volume-plugin-dir="$data/kube-controller-manager/flexvolume" \
    --kube-api-qps=100 --kube-api-burst=200
  start kube-scheduler "$scheduler_port" \
    --kubeconfig="$kubeconfig" \
    --authentication-kubeconfig="$kubeconfig" --authorization-kubeconfig="$kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$scheduler_port" --leader-elect=false

  kubectl_ apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $node_name
  annotations:
    kwok.x-k8s.io/node: fake
  labels:
    type: kwok
    kubernetes.io/hostname: $node_name
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
status:
  capacity: {pods: "$node_pods", cpu: "$node_cpu", memory: 256Gi}
  allocatable: {pods: "$node_pods", cpu: "$node_cpu", memory: 256Gi}
EOF
  if ! running kwok; then
    # A new kwok waits out (~40 s) node leases still held by its previous run.
    kubectl_ delete leases -n kube-node-lease --all --ignore-not-found >/dev/null
  fi
  start kwok "$kwok_port" \
    --kubeconfig="$kubeconfig" --config="$stages" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --node-lease-duration-seconds=40 --cidr=10.0.0.1/16 --node-ip=10.0.0.1 \
    --server-address="127.0.0.1:$kwok_port"

  wait_healthy kube-scheduler
  wait_healthy kwok
  wait_healthy kube-controller-manager

  local deadline=$((SECONDS + timeout))
  # The node may still say Ready from a previous run: the lease (deleted above) shows that this
  # kwok has taken the node over.
  until kubectl_ get lease -n kube-node-lease "$node_name" >/dev/null 2>&1; do
    running kwok || fail_with_log kwok "exited"
    [ $SECONDS -lt $deadline ] || fail_with_log kwok "did not take a lease for node $node_name within ${timeout}s"
    sleep 0.1
  done
  until kubectl_ wait --for=condition=Ready "node/$node_name" --timeout=2s >/dev/null 2>&1; do
    running kwok || fail_with_log kwok "exited"
    [ $SECONDS -lt $deadline ] || fail_with_log kwok "did not make node $node_name Ready within ${timeout}s"
  done
  timings+=("node $(elapsed "$t0")s")
  # Pods are refused until the service-account controller has made the namespace's default SA.
  until kubectl_ get serviceaccount default -n default >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || fail_with_log kube-controller-manager "did not create serviceaccount default/default within ${timeout}s"
    sleep 0.1
  done
  trap - EXIT
  log "up in $(elapsed "$t0")s: apiserver https://127.0.0.1:$apiserver_port, node $node_name Ready"
  local t at=""
  for t in "${timings[@]}"; do at+="${at:+, }$t"; done
  log "  healthy at: $at"
  log "  eval \"\$($0 env)\"   # then kubectl as usual; logs in $logs"
}

on_up_exit() {
  [ "$1" = 0 ] && return 0
  if [ "${LOCAL_CLUSTER_KEEP_ON_FAILURE:-0}" = 1 ]; then
    log "up failed; leaving the components running (LOCAL_CLUSTER_KEEP_ON_FAILURE=1); stop them with $0 down"
  elif [ ${#started[@]} -gt 0 ]; then
    log "up failed; stopping what it started"
    stop_all
  fi
}

cmd_down() {
  local purge=0
  case "${1:-}" in
    "") ;;
    --purge) purge=1 ;;
    *) die "usage: $0 down [--purge]" ;;
  esac
  if [ -d "$run" ] || [ -d "$data" ]; then
    stop_all
  fi
  if [ $purge = 1 ] && [ -d "$data" ]; then
    case "$data" in
      / | "$root" | "$root/" | "$HOME" | "$HOME/") die "refusing to purge $data" ;;
    esac
    [ -f "$data/.local-cluster" ] || die "refusing to purge $data: it has no .local-cluster marker"
    rm -rf "$data"
    log "purged $data"
  fi
  log "down"
}

cmd_status() {
  set_ports
  local name pid state rc=0
  for name in "${components[@]}"; do
    pid=$(pid_of "$name")
    if [ -z "$pid" ]; then
      state=stopped
      rc=1
    elif healthy "$name"; then
      state="running (pid $pid), healthy"
    else
      state="running (pid $pid), NOT healthy"
      rc=1
    fi
    printf '%-24s 127.0.0.1:%-6s %s\n' "$name" "$(port_of "$name")" "$state"
  done
  if [ $rc = 0 ]; then
    echo "KUBECONFIG=$kubeconfig"
  fi
  return $rc
}

cmd_env() {
  printf 'export KUBECONFIG=%q\n' "$kubeconfig"
}

case "${1:-}" in
  build) build ;;
  up) cmd_up ;;
  down) cmd_down "${2:-}" ;;
  env) cmd_env ;;
  status) cmd_status ;;
  *)
    echo "usage: $0 build|up|down [--purge]|env|status" >&2
    exit 2
    ;;
esac
