#!/usr/bin/env bash
# `make run`: the controller and the verifier against the current kube context, or against the
# local control plane (started here) when no context answers. Arguments go to the controller;
# KEYWARD_CONTROLLER_LISTEN and KEYWARD_VERIFIER_LISTEN move their ports.
set -euo pipefail
cd "$(dirname "$0")/.."
CP=scripts/control-plane.sh

# kubectl from the PATH, else the cached one (fetched in seconds if missing).
if command -v kubectl >/dev/null; then KUBECTL=$(command -v kubectl); else KUBECTL=$($CP tools)/kubectl; fi

if ! "$KUBECTL" --request-timeout 5s get --raw /readyz >/dev/null 2>&1; then
  echo "run: no Kubernetes context answers; starting the local control plane" >&2
  $CP install
  $CP start
  eval "$($CP env)"
  cat >&2 <<MSG

  Local control plane ready. In another terminal:

    eval "\$(scripts/control-plane.sh env)"     # KUBECONFIG and kubectl on PATH
    kubectl apply -f examples/apikey-basic.yaml
    kubectl get apikeys                           # Phase, Key ID, Expires
    TOKEN=$(kubectl get secret ci-deploy-apikey -o jsonpath='{.data.token}' | base64 -d)
    curl -i -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8081/v1/auth
    export PATH=$PWD/target/release:\$PATH; kubectl apikey list    # the kubectl plugin

  Stop it with: scripts/control-plane.sh stop

MSG
fi
echo "run: installing the CRDs into context $("$KUBECTL" config current-context 2>/dev/null || echo '(in-cluster)')" >&2
"$KUBECTL" apply --server-side --force-conflicts --field-manager keyward-crds -f crds/ >&2
cargo build --release --bin keyward --bin kubectl-apikey
controller_listen=${KEYWARD_CONTROLLER_LISTEN:-127.0.0.1:8080}
verifier_listen=${KEYWARD_VERIFIER_LISTEN:-127.0.0.1:8081}
target/release/keyward controller --listen "$controller_listen" "$@" &
controller=$!
target/release/keyward verifier --listen "$verifier_listen" &
verifier=$!
trap 'kill "$controller" "$verifier" 2>/dev/null || true' EXIT INT TERM
echo "run: controller metrics on http://$controller_listen/metrics, verifier on http://$verifier_listen/v1/auth and /v1/verify" >&2
echo "run: the kubectl plugin: export PATH=$PWD/target/release:\$PATH; kubectl apikey --help" >&2
# When either stops, stop the other: a half-running Keyward would mislead.
wait -n
