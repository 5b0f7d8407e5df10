//! `keyward verifier`: answers "is this token good, for which key, with which scopes" from an
//! in-memory index fed by watches of ApiKeys and Credentials. No API call on the request path,
//! and no key's Secret is ever read: status holds every hash (with token exchange on, the one
//! signing Secret is, see [`crate::exchange::keys`]).

pub mod http;
pub mod index;
pub mod metrics;

use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};

use futures::{FutureExt, StreamExt};
use ipnet::IpNet;
use kube::Client;
use kube::runtime::watcher::Event;
use kube::runtime::{WatchStreamExt, watcher as watch_objects};
use tokio::sync::watch;

use crate::api::Kind;
use crate::api::{ApiKey, Credential};
use crate::error::Result;
use crate::exchange::Exchange;
use crate::judge::{self, Judged, ObjectKey, Request, Verdict};
use crate::usage::Recorder;
use crate::watch::{api_in, watch_scopes};
use index::{Index, ListNumber};
use metrics::VerifierMetrics;

/// How the verifier was started (`keyward verifier` flags).
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// Namespaces whose keys are indexed; empty means all.
    pub namespaces: Vec<String>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Whether watches start with a streaming list (see [`crate::watch::initial_list`]).
    pub streaming_lists: bool,
    /// Token exchange (`--issuer` and the flags beside it); off when `None`.
    pub exchange: Option<crate::exchange::Settings>,
    /// Usage recording (`--usage-flush-interval`, `--usage-resolution`); off when `None`.
    pub usage: Option<crate::usage::Settings>,
}

/// The index and what every request needs beside it.
pub struct Verifier {
    index: RwLock<Index>,
    trusted_proxies: Vec<IpNet>,
    exchange: Option<Exchange>,
    usage: Option<Arc<Recorder>>,
    pub metrics: VerifierMetrics,
}

impl Verifier {
    pub fn new(trusted_proxies: Vec<IpNet>) -> Self {
        Self::with(trusted_proxies, None, None)
    }

    /// A verifier that also exchanges tokens when `exchange` is given, and records usage when
    /// `usage` is.
    pub fn with(
        trusted_proxies: Vec<IpNet>,
        exchange: Option<crate::exchange::Settings>,
        usage: Option<crate::usage::Settings>,
    ) -> Self {
        let metrics = VerifierMetrics::default();
        let exchange = exchange.map(|settings| Exchange::new(settings, metrics.exchange.clone()));
        let usage = usage.map(|settings| Arc::new(Recorder::new(&settings)));
        Self { index: RwLock::default(), trusted_proxies, exchange, usage, metrics }
    }

    /// Judges `token` now: an API token, or (a JWT, with exchange on) an access token. The
    /// index is held only for the lookup itself.
    pub fn verify<S: AsRef<str>>(&self, token: &str, request: &Request<'_, S>) -> Verdict {
        let now = jiff::Timestamp::now();
        // An API token never holds a '.'; a JWT always does.
        if token.contains('.') {
            return match &self.exchange {
                Some(exchange) => exchange.verify_access(self, token, request, now),
                None => Verdict::of(judge::Code::Malformed, None),
            };
        }
        self.verify_api_token(token, request, now)
    }

    /// Judges an API token (never an access token) at `now`, and records the use.
    pub fn verify_api_token<S: AsRef<str>>(
        &self,
        token: &str,
        request: &Request<'_, S>,
        now: jiff::Timestamp,
    ) -> Verdict {
        let verdict = judge::verify(token, request, now, |digest| self.lookup(digest));
        self.record(&verdict, request.app, now);
        verdict
    }

    /// Records what a request for a found key was answered, naming application `app` (a
    /// sighting in memory only: see [`crate::usage`]).
    pub fn record(&self, verdict: &Verdict, app: Option<&str>, now: jiff::Timestamp) {
        if let (Some(usage), Some(entry)) = (&self.usage, verdict.entry.as_deref()) {
            usage.saw(entry, verdict.code, app, now);
        }
    }

    /// Whether a key with this `metadata.uid` is indexed.
    pub fn indexes_uid(&self, uid: &str) -> bool {
        self.index.read().unwrap_or_else(PoisonError::into_inner).has_uid(uid)
    }

    /// The entry whose token hashes to `digest`.
    pub fn lookup(&self, digest: &crate::token::Digest) -> Option<Arc<judge::Entry>> {
        // A panic while holding the lock cannot leave the maps half-changed in a way that
        // matters more than refusing every request would.
        self.index.read().unwrap_or_else(PoisonError::into_inner).lookup(digest)
    }

    /// The entry of the key with this UID (and token name, for a Credential).
    pub fn lookup_uid(&self, uid: &str, token: Option<&str>) -> Option<Arc<judge::Entry>> {
        self.index.read().unwrap_or_else(PoisonError::into_inner).lookup_uid(uid, token)
    }

    /// Token exchange, when on.
    pub fn exchange(&self) -> Option<&Exchange> {
        self.exchange.as_ref()
    }

    /// Peers whose `X-Forwarded-For` is believed.
    pub fn trusted_proxies(&self) -> &[IpNet] {
        &self.trusted_proxies
    }

    /// Changes the index and keeps the token gauge current.
    pub fn update(&self, change: impl FnOnce(&mut Index)) {
        let mut index = self.index.write().unwrap_or_else(PoisonError::into_inner);
        change(&mut index);
        self.metrics.set_indexed_tokens(index.tokens(), index.shared_hashes());
    }
}

/// Runs the verifier until `shutdown` turns true.
pub async fn run(
    client: Client,
    settings: Settings,
    listen: SocketAddr,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let verifier =
        Arc::new(Verifier::with(settings.trusted_proxies.clone(), settings.exchange.clone(), settings.usage));
    let (ready_tx, ready_rx) = watch::channel(false);
    let what = match verifier.exchange() {
        Some(_) => "/healthz, /readyz, /metrics, /v1/verify, /v1/auth, /v1/token and /.well-known",
        None => "/healthz, /readyz, /metrics, /v1/verify and /v1/auth",
    };
    let listener = crate::http::bind(listen, what).await?;
    let mut router =
        http::routes(verifier.clone()).merge(crate::metrics::health_routes(verifier.metrics.registry(), ready_rx));
    // Readiness does not wait for the signing Secret: exchange is optional, and /v1/auth and
    // /v1/verify serve API tokens without it (/v1/token answers 503 until it is there).
    let signing = match verifier.exchange() {
        Some(exchange) => {
            router = router.merge(crate::exchange::routes(verifier.clone()));
            let namespace = crate::watch::own_namespace(&client);
            tracing::info!(%namespace, secret = %exchange.settings.signing_secret, issuer = %exchange.settings.issuer, "token exchange on");
            crate::exchange::keys::follow(
                client.clone(),
                namespace,
                exchange.settings.signing_secret.clone(),
                exchange.keys.clone(),
                exchange.cache.clone(),
                exchange.metrics.clone(),
            )
            .boxed()
        }
        None => futures::future::pending().boxed(),
    };
    let usage = match (&verifier.usage, settings.usage) {
        (Some(recorder), Some(usage)) => {
            let (flush, resolution) = (usage.flush_interval, usage.resolution);
            tracing::info!(flush = ?flush, resolution = ?resolution, "recording usage in KeyUsages");
            let indexed = verifier.clone();
            crate::usage::writer::run(
                client.clone(),
                recorder.clone(),
                usage,
                verifier.metrics.usage.clone(),
                move |uid| indexed.indexes_uid(uid),
            )
            .boxed()
        }
        _ => futures::future::pending().boxed(),
    };
    let server = http::Server::new(verifier.clone(), router);
    let watches = follow_all(client, &settings, verifier, ready_tx);
    tokio::select! {
        served = crate::http::serve(listener, server, shutdown) => served,
        () = watches => Ok(()),
        () = signing => Ok(()),
        () = usage => Ok(()),
    }
}

/// Feeds the index from a watch of each kind in each namespace; `ready` turns true once every
/// initial list is in.
pub async fn follow_all(client: Client, settings: &Settings, verifier: Arc<Verifier>, ready: watch::Sender<bool>) {
    let config = crate::watch::initial_list(settings.streaming_lists);
    let mut watches = Vec::new();
    let mut synced = Vec::new();
    for namespace in watch_scopes(&settings.namespaces) {
        for kind in [Kind::ApiKey, Kind::Credential] {
            let (listed_tx, listed_rx) = tokio::sync::oneshot::channel();
            let (client, namespace, verifier, config) =
                (client.clone(), namespace.clone(), verifier.clone(), config.clone());
            watches.push(match kind {
                Kind::ApiKey => follow::<ApiKey>(client, namespace, config, verifier, listed_tx).boxed(),
                Kind::Credential => follow::<Credential>(client, namespace, config, verifier, listed_tx).boxed(),
            });
            synced.push(listed_rx);
        }
    }
    let ready_when_listed = async move {
        if futures::future::join_all(synced).await.into_iter().all(|listed| listed.is_ok()) {
            ready.send_replace(true);
            tracing::info!("initial lists indexed; ready");
        }
    };
    tokio::join!(ready_when_listed, futures::future::join_all(watches));
}

/// Changes a watch may hold taken from the API server but not yet indexed: a page of the initial
/// list (`watcher::Config`'s 500) and the next one.
const WATCH_BUFFER: usize = 1000;

/// Changes indexed under one write lock at most: a page of the initial list goes in a few locks
/// instead of one per object, and a lookup waits for no more than this many.
const BATCH: usize = 256;

/// Keeps the index in step with one kind in one namespace (or all), forever.
///
/// The watch runs in a task of its own, a page or two ahead: the API server makes (and the client
/// parses) the next page of the initial list while this one is being indexed, which the watcher
/// alone would ask for only once every object of the page was taken. That task also turns each
/// object into its entries at once, so what waits to be indexed is entries, not whole objects.
/// The changes are indexed in order, in batches of what is already there.
async fn follow<K: Judged>(
    client: Client,
    namespace: Option<String>,
    config: kube::runtime::watcher::Config,
    verifier: Arc<Verifier>,
    listed: tokio::sync::oneshot::Sender<()>,
) {
    let mut listed = Some(listed);
    let events = watch_objects(api_in::<K>(&client, namespace.as_deref()), config)
        .backoff(crate::retry::WatchBackoff::default());
    let (changes_tx, mut changes_rx) = tokio::sync::mpsc::channel(WATCH_BUFFER);
    let _watch = AbortOnDrop(tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        // The number of the list under way: after it, the objects it did not show were deleted
        // while unwatched.
        let mut list: ListNumber = 0;
        while let Some(event) = events.next().await {
            let change = match event {
                Ok(Event::Init) => {
                    list = list.wrapping_add(1).max(1);
                    continue;
                }
                Ok(Event::InitApply(object) | Event::Apply(object)) => {
                    Change::Replace(ObjectKey::of(K::KIND, &object), object.entries(), list)
                }
                Ok(Event::InitDone) => Change::RetainListed(list),
                Ok(Event::Delete(object)) => Change::Remove(ObjectKey::of(K::KIND, &object)),
                Err(error) => {
                    tracing::warn!(kind = K::KIND.as_str(), %error, "watch failed; retrying with backoff");
                    continue;
                }
            };
            if changes_tx.send(change).await.is_err() {
                break;
            }
        }
    }));
    let mut changes = Vec::with_capacity(BATCH);
    while changes_rx.recv_many(&mut changes, BATCH).await > 0 {
        let list_done = changes.iter().any(|change| matches!(change, Change::RetainListed(_)));
        verifier.update(|index| {
            for change in changes.drain(..) {
                match change {
                    Change::Replace(key, entries, list) => index.replace_listed(key, entries, list),
                    Change::Remove(key) => index.remove(&key),
                    Change::RetainListed(list) => index.retain_listed(K::KIND, namespace.as_deref(), list),
                }
            }
        });
        // Ready only once the whole list is in the index, never while part of it waits in a batch.
        if list_done && let Some(listed) = listed.take() {
            let _ = listed.send(());
        }
    }
}

/// One event of a watch, as the index takes it.
enum Change {
    /// The object's entries now, shown by (or after) the list of this number.
    Replace(ObjectKey, Vec<judge::Entry>, ListNumber),
    Remove(ObjectKey),
    /// The list of this number is done.
    RetainListed(ListNumber),
}

/// Ends the watch task when the follow that reads it ends (at shutdown, or when dropped).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
