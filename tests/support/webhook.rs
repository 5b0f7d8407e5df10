//! `keyward webhook` for a test: started with a certificate of its own, registered by URL on
//! loopback (validating and mutating) for one test namespace only, and the RBAC of the control
//! plane's token-file users `keyward-user-1..3`, who write keys with their own identities.

use std::path::PathBuf;

use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::{DEADLINE, Operator, TestNamespace, wait_for};

/// A running webhook registered for one test namespace.
pub struct Registered {
    pub webhook: Option<Operator>,
    name: String,
    _certs: tempfile::TempDir,
}

impl Registered {
    /// The directory of its certificate files (`ca.crt`, `tls.crt`, `tls.key`).
    pub fn certs(&self) -> &std::path::Path {
        self._certs.path()
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        // kubectl, not the client: Drop cannot await, and the client's worker runs on the very
        // runtime this blocks.
        let _ = std::process::Command::new("kubectl")
            .args(["delete", "--ignore-not-found", "--wait=false"])
            .arg(format!("validatingwebhookconfiguration/{}", self.name))
            .arg(format!("mutatingwebhookconfiguration/{}", self.name))
            .stdin(std::process::Stdio::null())
            .output();
    }
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/control-plane.sh")
}

/// Starts `keyward webhook` with `extra` flags and registers it (validating and mutating) for
/// `ns` only, failing closed; returns once it admits writes.
pub async fn register(ns: &TestNamespace, extra: &[&str]) -> Registered {
    let certs = tempfile::tempdir().expect("temp dir");
    let out = std::process::Command::new(script())
        .args(["webhook-cert", certs.path().to_str().expect("UTF-8")])
        .output()
        .expect("make the webhook certificate");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (cert, key) = (certs.path().join("tls.crt"), certs.path().join("tls.key"));
    let mut args =
        vec!["--tls-cert-file", cert.to_str().expect("UTF-8"), "--tls-key-file", key.to_str().expect("UTF-8")];
    args.extend_from_slice(extra);
    let webhook = Operator::run("webhook", &ns.name, &args, &[]);
    let addr = webhook.listen_addr().await;
    let ca = std::fs::read(certs.path().join("ca.crt")).expect("the CA");

    // Only this test's namespace: its label (1.20 sets none of its own).
    let label = "keyward-webhook-test";
    Api::<Namespace>::all(ns.client.clone())
        .patch(&ns.name, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {label: ns.name}}})))
        .await
        .expect("label the namespace");
    let hook = |path: &str| {
        json!({
            "name": format!("{path}.keyward.io"),
            "clientConfig": {"url": format!("https://{addr}/{path}"), "caBundle": k8s_openapi::ByteString(ca.clone())},
            "rules": [{"apiGroups": ["keyward.io"], "apiVersions": ["v1alpha1"], "operations": ["CREATE", "UPDATE"],
                       "resources": ["apikeys", "credentials"], "scope": "Namespaced"}],
            "namespaceSelector": {"matchLabels": {label: ns.name}},
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "timeoutSeconds": 5,
            "admissionReviewVersions": ["v1"],
        })
    };
    let name = format!("keyward-test-{}", ns.name);
    let validating: ValidatingWebhookConfiguration =
        serde_json::from_value(json!({"metadata": {"name": name}, "webhooks": [hook("validate")]})).expect("config");
    let mutating: MutatingWebhookConfiguration =
        serde_json::from_value(json!({"metadata": {"name": name}, "webhooks": [hook("mutate")]})).expect("config");
    Api::<ValidatingWebhookConfiguration>::all(ns.client.clone())
        .create(&PostParams::default(), &validating)
        .await
        .expect("register /validate");
    Api::<MutatingWebhookConfiguration>::all(ns.client.clone())
        .create(&PostParams::default(), &mutating)
        .await
        .expect("register /mutate");
    let registered = Registered { webhook: Some(webhook), name, _certs: certs };
    // Both configurations must be in the path: a refused bad spec shows /validate, and a
    // created-by on a dry-run create shows /mutate.
    // The API server learns of new configurations from a watch: until a write is refused by
    // the webhook, it is not in the path yet.
    let dry_run = PostParams { dry_run: true, ..Default::default() };
    wait_for("the webhook refusing a bad spec and setting keyward.io/created-by", DEADLINE, || async {
        let probe = super::key("probe", json!({"expiresAfter": "not-a-duration"}));
        match ns.keys().create(&dry_run, &probe).await {
            Err(kube::Error::Api(status)) if status.message.contains("spec.expiresAfter") => {
                let good = super::key("probe", json!({}));
                match ns.keys().create(&dry_run, &good).await {
                    Ok(k) if k.annotations().contains_key("keyward.io/created-by") => Ok(()),
                    other => Err(format!("a good spec, not mutated: {other:?}")),
                }
            }
            other => Err(format!("a bad spec, not refused: {other:?}")),
        }
    })
    .await;
    registered
}

/// Grants `user` (keyward-user-N) in `ns`: writing keys, and `grant` on the scope names given
/// (`None`: a rule without resourceNames, every scope; none: no grant at all). Returns once
/// the authorizer says so.
pub async fn grant(ns: &TestNamespace, user: u8, role: &str, scopes: Option<&[&str]>) {
    let mut rules = vec![json!({"apiGroups": ["keyward.io"], "resources": ["apikeys", "credentials"],
                                "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]})];
    // An empty resourceNames means every name to RBAC: no names, no grant rule at all.
    match scopes {
        Some([]) => {}
        Some(scopes) => rules.push(
            json!({"apiGroups": ["keyward.io"], "resources": ["scopes"], "verbs": ["grant"], "resourceNames": scopes}),
        ),
        None => rules.push(json!({"apiGroups": ["keyward.io"], "resources": ["scopes"], "verbs": ["grant"]})),
    }
    let name = format!("{}-{role}", ns.name);
    let role: ClusterRole = serde_json::from_value(json!({"metadata": {"name": name}, "rules": rules})).expect("role");
    Api::<ClusterRole>::all(ns.client.clone()).create(&PostParams::default(), &role).await.expect("ClusterRole");
    bind(ns, &ns.name, user, &name).await;
}

pub async fn bind(ns: &TestNamespace, namespace: &str, user: u8, role: &str) {
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": format!("{role}-user-{user}"), "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": format!("keyward-user-{user}")}],
    }))
    .expect("binding");
    Api::<RoleBinding>::namespaced(ns.client.clone(), namespace)
        .create(&PostParams::default(), &binding)
        .await
        .expect("RoleBinding");
    // The authorizer reads bindings from a cache: wait until it allows the user to create keys.
    wait_for(format!("keyward-user-{user} getting {role} in {namespace}"), DEADLINE, || async {
        let review: SubjectAccessReview = serde_json::from_value(json!({"spec": {
            "user": format!("keyward-user-{user}"),
            "resourceAttributes": {"group": "keyward.io", "resource": "apikeys", "verb": "create", "namespace": namespace},
        }}))
        .expect("review");
        let answer = Api::<SubjectAccessReview>::all(ns.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .expect("SubjectAccessReview");
        answer.status.is_some_and(|s| s.allowed)
    })
    .await;
}

/// A client that acts as `keyward-user-<n>`.
pub async fn user_client(n: u8) -> Client {
    super::client_of(super::user_kubeconfig(n).to_str().expect("UTF-8")).await
}

/// The contract's refusal of a scope `user` may not grant, with the covering names it lists.
pub fn grant_refusal(user: &str, scope: &str, namespace: &str, covering: &[&str]) -> String {
    let covering: Vec<String> = covering.iter().map(|c| format!("{c:?}")).collect();
    format!(
        "user {user:?} may not grant scope {scope:?} in namespace {namespace:?}: needs verb grant on scopes.keyward.io \
         named {scope:?} or a covering pattern ({})",
        covering.join(", ")
    )
}
