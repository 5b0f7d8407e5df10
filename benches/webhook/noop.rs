//! The floor under the webhook's cost: an admission webhook that allows every review with its
//! uid and nothing else (no patch from `/mutate`), served by the bench itself on keyward's own
//! TLS server. What the API server spends calling it, any webhook costs; the rest is ours.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use keyward::tls::CertificateFiles;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;

use crate::common::Result;
use crate::common::process::stat_cpu_secs;

/// The name of its runtime's threads: their CPU time is the no-op webhook's.
const THREAD_NAME: &str = "noop-webhook";

/// The no-op webhook, on a runtime and threads of its own in the bench's process.
pub struct NoopWebhook {
    pub addr: SocketAddr,
    /// Reviews answered.
    reviews: Arc<AtomicU64>,
    shutdown: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NoopWebhook {
    /// Serves `/mutate` and `/validate` on a loopback port with the certificate in `certs`
    /// (`tls.crt`, `tls.key`).
    pub fn start(certs: &Path) -> Result<Self> {
        let tls = Arc::new(CertificateFiles::load(certs.join("tls.crt"), certs.join("tls.key"))?);
        // As many workers as `keyward webhook` has (`#[tokio::main]`: one a core).
        let runtime = tokio::runtime::Builder::new_multi_thread().thread_name(THREAD_NAME).enable_all().build()?;
        let reviews = Arc::new(AtomicU64::new(0));
        let (shutdown, stop) = watch::channel(false);
        let (bound_tx, bound) = std::sync::mpsc::channel();
        let router =
            Router::new().route("/mutate", post(allow)).route("/validate", post(allow)).with_state(reviews.clone());
        let thread = std::thread::Builder::new().name(THREAD_NAME.into()).spawn(move || {
            runtime.block_on(async move {
                let listener = match keyward::http::bind(([127, 0, 0, 1], 0).into(), "the no-op webhook").await {
                    Ok(listener) => listener,
                    Err(error) => return drop(bound_tx.send(Err(error.to_string()))),
                };
                let _ = bound_tx.send(listener.local_addr().map_err(|e| e.to_string()));
                if let Err(error) = keyward::http::serve_tls(listener, router, stop, tls).await {
                    eprintln!("the no-op webhook stopped: {error}");
                }
            })
        })?;
        let addr = bound
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| "the no-op webhook did not bind within 10 s")?
            .map_err(|e| format!("the no-op webhook cannot listen: {e}"))?;
        Ok(Self { addr, reviews, shutdown, thread: Some(thread) })
    }

    /// Reviews answered so far.
    pub fn reviews(&self) -> u64 {
        self.reviews.load(Ordering::Relaxed)
    }

    /// CPU seconds its threads have used, from `/proc/self/task`.
    pub fn cpu_secs(&self) -> f64 {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0.0 };
        tasks
            .flatten()
            .filter(|task| {
                std::fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.trim() == THREAD_NAME)
            })
            .filter_map(|task| stat_cpu_secs(&std::fs::read_to_string(task.path().join("stat")).ok()?))
            .sum()
    }

    pub fn stop(mut self) {
        self.shutdown.send_replace(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Just enough of an AdmissionReview to answer it.
#[derive(Deserialize)]
struct Review {
    request: ReviewRequest,
}

#[derive(Deserialize)]
struct ReviewRequest {
    uid: String,
}

/// Allows the review, naming its uid: nothing else.
async fn allow(State(reviews): State<Arc<AtomicU64>>, body: Bytes) -> Response {
    let Ok(review) = serde_json::from_slice::<Review>(&body) else {
        return (StatusCode::BAD_REQUEST, "the body must be an admission.k8s.io/v1 AdmissionReview").into_response();
    };
    reviews.fetch_add(1, Ordering::Relaxed);
    axum::Json(json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": review.request.uid, "allowed": true},
    }))
    .into_response()
}
