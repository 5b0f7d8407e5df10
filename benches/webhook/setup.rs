//! The webhook bench's set-up: its webhook started and registered (and the no-op one), the
//! ClusterRole, a namespace per round with the user bound in it, and the waits until the API
//! server, its authorizer and the webhooks have caught up.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
use keyward::api::{ApiKey, ApiKeySpec};
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::process::Command;

use super::{
    ADMITTED_LABEL, ADMITTED_VALUE, BENCH_LABEL_VALUE, Bench, CATCH_UP, CONFIGURATION, GRANTED, NOOP_CONFIGURATION,
    Route, USER,
};
use crate::common::Result;
use crate::common::process::Process;

impl Bench {
    /// What an interrupted run left: its configurations first (they fail closed on a webhook
    /// that is gone), its ClusterRole, its namespaces.
    pub async fn remove_leftovers(&self) -> Result<()> {
        for name in [CONFIGURATION, NOOP_CONFIGURATION] {
            delete_if_there::<ValidatingWebhookConfiguration>(&self.client, name).await;
            delete_if_there::<MutatingWebhookConfiguration>(&self.client, name).await;
        }
        delete_if_there::<ClusterRole>(&self.client, CONFIGURATION).await;
        crate::common::remove_leftovers(&self.client, BENCH_LABEL_VALUE, |m| self.progress.say(m)).await
    }

    /// Makes the certificate and starts `keyward webhook`; returns once `/readyz` answers.
    pub async fn start_webhook(&mut self) -> Result<()> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/control-plane.sh");
        let output = Command::new(&script)
            .arg("webhook-cert")
            .arg(self.certs.path())
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| format!("run {} webhook-cert: {e}", script.display()))?;
        if !output.status.success() {
            return Err(format!(
                "control-plane.sh webhook-cert failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )
            .into());
        }
        let log = self.out_dir.join("webhook.log");
        self.progress.say(&format!("starting keyward webhook (log {})", log.display()));
        let certs = self.certs.path();
        let file = |name: &str| certs.join(name).display().to_string();
        let args = [
            "webhook",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert-file",
            &file("tls.crt"),
            "--tls-key-file",
            &file("tls.key"),
        ];
        let mut webhook =
            Process::keyward(&self.keyward, &args.map(String::from), &log)?.with_tls(&certs.join("ca.crt"))?;
        webhook.wait_ready(Duration::from_secs(30)).await?;
        self.webhook = Some(webhook);
        self.progress.say(&format!("keyward webhook serves on {}", self.webhook_addr()?));
        Ok(())
    }

    /// The ClusterRole the user is bound to in every namespace: create keys, grant `orders.>`.
    pub async fn create_role(&mut self) -> Result<()> {
        let role: ClusterRole = serde_json::from_value(json!({
            "metadata": {"name": CONFIGURATION, "labels": {crate::common::BENCH_LABEL: BENCH_LABEL_VALUE}},
            "rules": [
                {"apiGroups": ["keyward.io"], "resources": ["apikeys"], "verbs": ["create"]},
                {"apiGroups": ["keyward.io"], "resources": ["scopes"], "verbs": ["grant"], "resourceNames": [GRANTED]},
            ],
        }))?;
        Api::<ClusterRole>::all(self.client.clone())
            .create(&PostParams::default(), &role)
            .await
            .map_err(|e| format!("create ClusterRole {CONFIGURATION}: {e}"))?;
        self.role = true;
        Ok(())
    }

    /// Registers keyward's `/validate` and `/mutate` for the namespaces labelled as admitted.
    pub async fn register(&mut self) -> Result<()> {
        let addr = self.webhook_addr()?;
        self.registered = true;
        register(&self.client, CONFIGURATION, "keyward.io", addr, &self.certs.path().join("ca.crt"), ADMITTED_VALUE)
            .await
    }

    /// A fresh namespace for `path`, the user bound in it, and (through the webhook) the webhook
    /// in the path of its writes: every step waited for, so that the round measures none of it.
    pub async fn prepare(&mut self, ns: &str, route: Route) -> Result<()> {
        let mut labels = BTreeMap::from([(crate::common::BENCH_LABEL.to_string(), BENCH_LABEL_VALUE.to_string())]);
        if let Some(value) = route.admitted() {
            labels.insert(ADMITTED_LABEL.into(), value.into());
        }
        let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": ns, "labels": labels}}))?;
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .map_err(|e| format!("create namespace {ns}: {e}"))?;
        self.namespaces.push(ns.to_string());
        let binding: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": CONFIGURATION, "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": CONFIGURATION},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": USER}],
        }))?;
        Api::<RoleBinding>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &binding)
            .await
            .map_err(|e| format!("create RoleBinding in {ns}: {e}"))?;
        self.wait_authorized(ns).await?;
        match route {
            Route::Webhook => self.wait_admitted(ns).await?,
            Route::Noop => self.wait_noop_admitted(ns).await?,
            Route::Direct => {}
        }
        Ok(())
    }

    /// Waits until the authorizer, which reads bindings from a cache, lets the user create keys
    /// and grant `orders.>` in `ns`.
    async fn wait_authorized(&self, ns: &str) -> Result<()> {
        let deadline = Instant::now() + CATCH_UP;
        let reviews: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let ask = |resource: &str, verb: &str, name: Option<&str>| -> Result<SubjectAccessReview> {
            Ok(serde_json::from_value(json!({"spec": {"user": USER, "resourceAttributes": {
                "group": "keyward.io", "resource": resource, "verb": verb, "namespace": ns, "name": name,
            }}}))?)
        };
        let questions = [ask("apikeys", "create", None)?, ask("scopes", "grant", Some(GRANTED))?];
        loop {
            let mut allowed = true;
            for question in &questions {
                let answer = reviews.create(&PostParams::default(), question).await?;
                allowed &= answer.status.is_some_and(|s| s.allowed);
            }
            if allowed {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{USER} was not allowed to create keys and grant {GRANTED} in {ns} within {CATCH_UP:?}"
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until a write in `ns` goes through the webhook: a dry-run create with a bad spec,
    /// which the CRD schema lets through and the webhook refuses naming the field.
    async fn wait_admitted(&self, ns: &str) -> Result<()> {
        let deadline = Instant::now() + CATCH_UP;
        let keys: Api<ApiKey> = Api::namespaced(self.client.clone(), ns);
        let probe =
            ApiKey::new("probe", ApiKeySpec { expires_after: Some("not-a-duration".into()), ..ApiKeySpec::default() });
        loop {
            match keys.create(&PostParams { dry_run: true, ..PostParams::default() }, &probe).await {
                Err(kube::Error::Api(status)) if status.message.contains("spec.expiresAfter") => return Ok(()),
                other if Instant::now() >= deadline => {
                    return Err(format!(
                        "the webhook did not refuse a bad spec in {ns} within {CATCH_UP:?}; the last answer: {other:?}"
                    )
                    .into());
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Waits until a write in `ns` goes through the no-op webhook: a dry-run create it reviews
    /// twice (mutate, validate).
    async fn wait_noop_admitted(&self, ns: &str) -> Result<()> {
        let deadline = Instant::now() + CATCH_UP;
        let keys: Api<ApiKey> = Api::namespaced(self.client.clone(), ns);
        let probe = ApiKey::new("probe", ApiKeySpec::default());
        loop {
            let before = self.noop()?.reviews();
            let answer = keys.create(&PostParams { dry_run: true, ..PostParams::default() }, &probe).await;
            if answer.is_ok() && self.noop()?.reviews() >= before + 2 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the no-op webhook did not review a create in {ns} within {CATCH_UP:?}; the last answer: {answer:?}"
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Registers the `/validate` and `/mutate` of the webhook at `addr` (its certificate signed by
/// the CA in `ca`), as the Validating and Mutating configurations `name` with the hooks
/// `validate.<hooks>` and `mutate.<hooks>`, for the namespaces whose `ADMITTED_LABEL` is
/// `admitted`.
pub async fn register(
    client: &Client,
    name: &str,
    hooks: &str,
    addr: SocketAddr,
    ca: &Path,
    admitted: &str,
) -> Result<()> {
    let ca = std::fs::read(ca)?;
    let hook = |path: &str| {
        json!({
            "name": format!("{path}.{hooks}"),
            "clientConfig": {"url": format!("https://{addr}/{path}"), "caBundle": k8s_openapi::ByteString(ca.clone())},
            "rules": [{"apiGroups": ["keyward.io"], "apiVersions": ["v1alpha1"], "operations": ["CREATE", "UPDATE"],
                       "resources": ["apikeys", "credentials"], "scope": "Namespaced"}],
            "namespaceSelector": {"matchLabels": {ADMITTED_LABEL: admitted}},
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "timeoutSeconds": 5,
            "admissionReviewVersions": ["v1"],
        })
    };
    let metadata = json!({"name": name, "labels": {crate::common::BENCH_LABEL: BENCH_LABEL_VALUE}});
    let validating: ValidatingWebhookConfiguration =
        serde_json::from_value(json!({"metadata": metadata, "webhooks": [hook("validate")]}))?;
    let mutating: MutatingWebhookConfiguration =
        serde_json::from_value(json!({"metadata": metadata, "webhooks": [hook("mutate")]}))?;
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .create(&PostParams::default(), &validating)
        .await
        .map_err(|e| format!("register {name} /validate: {e}"))?;
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .create(&PostParams::default(), &mutating)
        .await
        .map_err(|e| format!("register {name} /mutate: {e}"))?;
    Ok(())
}

/// Deletes the cluster-scoped object `name` of kind `K`, when it is there (best effort).
pub async fn delete_if_there<K>(client: &Client, name: &str)
where
    K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    match Api::<K>::all(client.clone()).delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(error) => eprintln!("cannot delete {} {name}: {error}", K::kind(&K::DynamicType::default())),
    }
}

/// A client from a kubeconfig file.
pub async fn client_of(path: &Path) -> Result<Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}
