#!/usr/bin/env bash
# `make run`: the operator against the current kube context, or against the local control
# plane (started here) when no context answers.
set -euo pipefail
cd "$(dirname "$0")/.."
CP=scripts/control-plane.sh

kubectl_bin() {
  if command -v kubectl >/dev/null; then command -v kubectl; else $CP env >/dev/null; echo "${KEYWARD_CACHE:-$HOME/.cache/keyward}/bin/kubectl"; fi
}

if [ -z "${KUBECONFIG:-}" ] && [ ! -f "$HOME/.kube/config" ] || ! "$(kubectl_bin)" --request-timeout 5s get --raw /readyz >/dev/null 2>&1; then
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
KUBECTL=$(kubectl_bin)
echo "run: installing the CRDs into $("$KUBECTL" config current-context 2>/dev/null || echo the current context)" >&2
"$KUBECTL" apply --server-side --force-conflicts --field-manager keyward-crds -f crds/ >&2
cargo build --release --bin keyward
exec target/release/keyward controller "$@"
