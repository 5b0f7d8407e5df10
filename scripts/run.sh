#!/usr/bin/env bash
# `make run`: the controller against the current kube context, or against the local control
# plane (started here) when no context answers.
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
    kubectl get secret ci-deploy-apikey -o jsonpath='{.data.token}' | base64 -d

  Stop it with: scripts/control-plane.sh stop

MSG
fi
echo "run: installing the CRDs into context $("$KUBECTL" config current-context 2>/dev/null || echo '(in-cluster)')" >&2
"$KUBECTL" apply --server-side --force-conflicts --field-manager keyward-crds -f crds/ >&2
cargo build --release --bin keyward
exec target/release/keyward controller "$@"
