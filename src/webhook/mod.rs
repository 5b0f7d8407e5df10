//! `keyward webhook`: the API server's admission webhooks for ApiKeys and Credentials, over TLS.
//! `/validate` refuses a bad spec (the controller's own validation), a change of
//! `keyward.io/created-by`, and a scope the writer may not grant (a SubjectAccessReview of verb
//! `grant` on `scopes.keyward.io` for a covering name); `/mutate` records the creator.
//! Anything it cannot decide, it refuses: the configurations fail closed too.

pub mod access;
pub mod grant;
pub mod metrics;
pub mod review;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use tokio::sync::watch;

use crate::api::expiry::ExpiryPolicy;
use crate::error::Result;
use crate::tls::CertificateFiles;
use metrics::WebhookMetrics;
use review::{Key, Refusal};

/// Largest AdmissionReview accepted: the API server's own limit on an object is about 3 MiB,
/// and a review holds the object and its old version.
const MAX_REVIEW_BYTES: usize = 8 * 1024 * 1024;

/// Whether grants are checked (`--grants`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Grants {
    /// Every scope a change puts into use needs a `grant` permission.
    Enforce,
    /// Anyone who may write a key may grant any scope (spec checks and created-by still apply).
    Off,
}

/// How the webhook was started (`keyward webhook` flags).
#[derive(Clone, Debug)]
pub struct Settings {
    pub expiry: ExpiryPolicy,
    pub grants: Grants,
    pub cert: PathBuf,
    pub key: PathBuf,
}

struct Webhook {
    access: access::Access,
    settings: Settings,
    metrics: WebhookMetrics,
}

/// Serves until `shutdown` turns true.
pub async fn run(
    client: kube::Client,
    settings: Settings,
    listen: SocketAddr,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let tls = Arc::new(CertificateFiles::load(settings.cert.clone(), settings.key.clone())?);
    tokio::spawn(tls.clone().watch(shutdown.clone()));
    let webhook =
        Arc::new(Webhook { access: access::Access::new(client), settings, metrics: WebhookMetrics::default() });
    // Ready as soon as it serves: it needs nothing but its certificate, loaded above.
    let (_ready, ready) = watch::channel(true);
    let router = Router::new()
        .route("/validate", post(validate))
        .route("/mutate", post(mutate))
        .layer(DefaultBodyLimit::max(MAX_REVIEW_BYTES))
        .with_state(webhook.clone())
        .merge(crate::metrics::health_routes(webhook.metrics.registry(), ready));
    let listener = crate::http::bind(listen, "/healthz, /readyz, /metrics, /validate and /mutate over TLS").await?;
    crate::http::serve_tls(listener, router, shutdown, tls).await
}

/// Reads an AdmissionReview; anything else is a 400 (the API server then fails closed).
fn read_review(body: &[u8]) -> std::result::Result<AdmissionRequest<DynamicObject>, &'static str> {
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).map_err(|_| "the body must be an admission.k8s.io/v1 AdmissionReview")?;
    review.try_into().map_err(|_| "the AdmissionReview holds no request")
}

fn operation_label(operation: &Operation) -> &'static str {
    match operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

fn kind_label(kind: &str) -> &'static str {
    match kind {
        "ApiKey" => "ApiKey",
        "Credential" => "Credential",
        _ => "other",
    }
}

/// The request's object and old object as keys.
fn keys_of(request: &AdmissionRequest<DynamicObject>) -> std::result::Result<(Key, Option<Key>), Refusal> {
    let kind = request.kind.kind.as_str();
    let parse = |object: &DynamicObject| {
        let value = serde_json::to_value(object).map_err(|_| Refusal::Malformed("the object is not JSON".into()))?;
        Key::parse(kind, value)
    };
    let new = request.object.as_ref().ok_or_else(|| Refusal::Malformed("the request holds no object".into()))?;
    Ok((parse(new)?, request.old_object.as_ref().map(parse).transpose()?))
}

fn answer(response: AdmissionResponse) -> Response {
    axum::Json(response.into_review()).into_response()
}

fn refused(request: &AdmissionRequest<DynamicObject>, refusal: &Refusal) -> AdmissionResponse {
    let mut response = AdmissionResponse::from(request).deny(refusal.message());
    response.result.code = refusal.code();
    response.result.reason = match refusal {
        Refusal::Grant(_) => "Forbidden",
        Refusal::Spec(_) | Refusal::CreatedBy(_) => "Invalid",
        Refusal::Malformed(_) => "BadRequest",
        Refusal::Unavailable(_) => "InternalError",
    }
    .into();
    response
}

async fn validate(State(webhook): State<Arc<Webhook>>, body: Bytes) -> Response {
    let request = match read_review(&body) {
        Ok(request) => request,
        Err(problem) => return (StatusCode::BAD_REQUEST, problem).into_response(),
    };
    let (kind, operation) = (kind_label(&request.kind.kind), operation_label(&request.operation));
    let verdict = match request.operation {
        Operation::Create | Operation::Update => webhook.judge(&request).await,
        Operation::Delete | Operation::Connect => Ok(()),
    };
    let response = match &verdict {
        Ok(()) => AdmissionResponse::from(&request),
        Err(refusal) => {
            tracing::info!(
                kind,
                operation,
                namespace = request.namespace.as_deref().unwrap_or_default(),
                name = request.name,
                user = request.user_info.username.as_deref().unwrap_or_default(),
                refusal = refusal.message(),
                "refused"
            );
            refused(&request, refusal)
        }
    };
    webhook.metrics.observe_admission(kind, operation, verdict.as_ref().map_or_else(Refusal::label, |()| "allowed"));
    answer(response)
}

impl Webhook {
    /// The whole check of a create or update.
    async fn judge(&self, request: &AdmissionRequest<DynamicObject>) -> std::result::Result<(), Refusal> {
        let (new, old) = keys_of(request)?;
        let user = request.user_info.username.clone().unwrap_or_default();
        let scopes = review::validate(&user, &new, old.as_ref(), jiff::Timestamp::now(), &self.settings.expiry)?;
        if self.settings.grants == Grants::Off {
            return Ok(());
        }
        let namespace = request.namespace.clone().unwrap_or_default();
        for scope in &scopes {
            match self.access.may_grant(&request.user_info, &namespace, scope, &self.metrics).await {
                Ok(true) => {}
                Ok(false) => return Err(Refusal::Grant(grant::refusal(&user, scope, &namespace))),
                Err(error) => {
                    tracing::warn!(%error, "cannot ask the API server whether a scope may be granted");
                    return Err(Refusal::Unavailable(format!(
                        "cannot check whether user {user:?} may grant scope {scope:?}: the SubjectAccessReview failed; try again"
                    )));
                }
            }
        }
        Ok(())
    }
}

async fn mutate(State(webhook): State<Arc<Webhook>>, body: Bytes) -> Response {
    let request = match read_review(&body) {
        Ok(request) => request,
        Err(problem) => return (StatusCode::BAD_REQUEST, problem).into_response(),
    };
    let (kind, operation) = (kind_label(&request.kind.kind), operation_label(&request.operation));
    let user = request.user_info.username.clone().unwrap_or_default();
    let patch = match (&request.operation, &request.object) {
        (Operation::Create | Operation::Update, Some(object)) => {
            review::created_by_patch(&user, &object.metadata, request.old_object.as_ref().map(|o| &o.metadata))
        }
        _ => None,
    };
    let response = AdmissionResponse::from(&request);
    let response = match patch.map(serde_json::from_value::<json_patch::Patch>) {
        None => response,
        Some(Ok(patch)) => match response.with_patch(patch) {
            Ok(patched) => patched,
            Err(_) => refused(&request, &Refusal::Malformed("cannot write the created-by patch".into())),
        },
        Some(Err(_)) => refused(&request, &Refusal::Malformed("cannot write the created-by patch".into())),
    };
    webhook.metrics.observe_admission(kind, operation, if response.allowed { "mutated" } else { "error" });
    answer(response)
}
