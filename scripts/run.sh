#!/usr/bin/env bash
# `make run`: the controller and the verifier against the current kube context, or against the
# local control plane (started here) when no context answers. Arguments go to the controller;
# KEYWARD_CONTROLLER_LISTEN, KEYWARD_VERIFIER_LISTEN and KEYWARD_WEBHOOK_LISTEN move their
# ports; with the local control plane the admission webhook runs too. KEYWARD_PROFILE=debug
# runs a debug build instead of the release one. Ctrl-C stops both; `make stop` then stops the
# local control plane.
set -euo pipefail
cd "$(dirname "$0")/.."
CP=scripts/control-plane.sh

# kubectl from the PATH, else the cached one (fetched in seconds if missing).
if command -v kubectl >/dev/null; then KUBECTL=$(command -v kubectl); else KUBECTL=$($CP tools)/kubectl; fi

local_control_plane=
# /version, which only an API server serves: with no kubeconfig kubectl asks localhost:8080,
# where another `make run`'s controller answers /readyz.
if ! "$KUBECTL" --request-timeout 5s get --raw /version >/dev/null 2>&1; then
  echo "run: no Kubernetes context answers; starting the local control plane" >&2
  $CP install
  $CP start
  eval "$($CP env)"
  KUBECTL=$(command -v kubectl)
  local_control_plane=1
fi
echo "run: installing the CRDs into context $("$KUBECTL" config current-context 2>/dev/null || echo '(in-cluster)')" >&2
"$KUBECTL" apply --server-side --force-conflicts --field-manager keyward-crds -f crds/ >&2

profile=${KEYWARD_PROFILE:-release}
case $profile in
  release) cargo build --release --bin keyward --bin kubectl-apikey; out=release ;;
  debug) cargo build --bin keyward --bin kubectl-apikey; out=debug ;;
  *) echo "run: KEYWARD_PROFILE must be release or debug, not $profile" >&2; exit 2 ;;
esac
bin=${CARGO_TARGET_DIR:-$PWD/target}/$out
controller_listen=${KEYWARD_CONTROLLER_LISTEN:-127.0.0.1:8080}
verifier_listen=${KEYWARD_VERIFIER_LISTEN:-127.0.0.1:8081}
"$bin/keyward" controller --listen "$controller_listen" "$@" &
controller=$!
# Token exchange on: the controller keeps the signing keys in the context's namespace, where the
# verifier reads them.
"$bin/keyward" verifier --listen "$verifier_listen" --issuer "http://$verifier_listen" &
verifier=$!
pids=("$controller" "$verifier")
webhook_config=keyward-make-run
# On Ctrl-C (or any process ending) stop them all, and wait until they have: when `make run`
# returns, nothing of Keyward is left running, and no webhook registration points at nothing
# (it fails closed: every key write would be refused).
stop() {
  if [ -n "$local_control_plane" ]; then
    "$KUBECTL" delete --ignore-not-found --wait=false "validatingwebhookconfiguration/$webhook_config" \
      "mutatingwebhookconfiguration/$webhook_config" >/dev/null 2>&1 || true
  fi
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap stop EXIT
trap 'exit 130' INT TERM
echo "run: controller metrics on http://$controller_listen/metrics, verifier on http://$verifier_listen/v1/auth, /v1/verify and /v1/token" >&2

if [ -n "$local_control_plane" ]; then
  # The webhook, registered by URL on loopback with a certificate of its own.
  webhook_listen=${KEYWARD_WEBHOOK_LISTEN:-127.0.0.1:8443}
  certs=$(dirname "$KUBECONFIG")/webhook
  # Made again when missing or within a day of expiring (it lasts 30 days).
  openssl x509 -checkend 86400 -noout -in "$certs/tls.crt" >/dev/null 2>&1 || $CP webhook-cert "$certs"
  "$bin/keyward" webhook --listen "$webhook_listen" --tls-cert-file "$certs/tls.crt" --tls-key-file "$certs/tls.key" &
  pids+=($!)
  # Registered once it answers: a registration with nobody behind it refuses every key write.
  for _ in $(seq 1 100); do
    curl -sfk "https://$webhook_listen/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  ca=$(base64 -w0 <"$certs/ca.crt")
  for kind in Validating Mutating; do
    path=$([ $kind = Validating ] && echo validate || echo mutate)
    cat <<YAML
apiVersion: admissionregistration.k8s.io/v1
kind: ${kind}WebhookConfiguration
metadata: {name: $webhook_config}
webhooks:
- name: $path.keyward.io
  admissionReviewVersions: ["v1"]
  clientConfig: {url: "https://$webhook_listen/$path", caBundle: "$ca"}
  rules:
  - {apiGroups: ["keyward.io"], apiVersions: ["v1alpha1"], operations: ["CREATE", "UPDATE"], resources: ["apikeys", "credentials"], scope: Namespaced}
  failurePolicy: Fail
  sideEffects: None
  timeoutSeconds: 5
---
YAML
  done | "$KUBECTL" apply -f - >&2
  echo "run: webhook on https://$webhook_listen (/validate, /mutate): scopes need a grant, bad specs are refused at apply" >&2
else
  echo "run: no admission webhook against this context: keys are not checked at kubectl apply and any writer may grant any scope (the Helm chart installs it)" >&2
fi

# Quoted: the lines below are for the reader's shell, not this one.
if [ -n "$local_control_plane" ]; then
  cat >&2 <<'MSG'

  Local control plane ready. In another terminal:

    eval "$(scripts/control-plane.sh env)"     # KUBECONFIG and kubectl on PATH
MSG
fi
cat >&2 <<'MSG'
    kubectl apply -f examples/apikey-basic.yaml
    kubectl get apikeys                           # Phase, Key ID, Expires
    TOKEN=$(kubectl get secret ci-deploy-apikey -o jsonpath='{.data.token}' | base64 -d)
MSG
printf '    curl -i -H "Authorization: Bearer $TOKEN" http://%s/v1/auth\n' "$verifier_listen" >&2
printf '    export PATH=%s:$PATH; kubectl apikey list    # the kubectl plugin\n' "$bin" >&2
printf '    echo "$TOKEN" | kubectl apikey exchange --issuer http://%s    # a 15-minute access token\n\n' "$verifier_listen" >&2
if [ -n "$local_control_plane" ]; then
  echo "  Ctrl-C stops Keyward; then \`make stop\` stops the local control plane." >&2
else
  echo "  Ctrl-C stops Keyward." >&2
fi
echo >&2
# When either stops, stop the other: a half-running Keyward would mislead.
wait -n
