//! Shared test support: a namespace per test on the real API server named by `KUBECONFIG`
//! (`make test` starts one), the real `keyward` binary as a child process, and waits that end
//! on a condition or fail at a deadline.
#![allow(dead_code)]

pub mod webhook;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Event, Namespace, Secret};
use keyward::api::{ApiKey, ApiKeySpec, Phase};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::await_condition;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::process::{Child, Command};

/// The usual deadline for something the controller does on a change.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A client for the API server the tests run against. Fails loudly when there is none.
pub async fn client() -> Client {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "these tests need a real API server: run them with `make test`, which starts one"
    );
    Client::try_default().await.expect("a client from KUBECONFIG")
}

/// Installs the CRDs by server-side apply (idempotent; every test may call it).
pub async fn install_crds(client: &Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in keyward::crd::all() {
        let name = crd.name_any();
        crds.patch(&name, &PatchParams::apply("keyward-tests").force(), &Patch::Apply(&crd))
            .await
            .unwrap_or_else(|e| panic!("apply the CRD {name}: {e}"));
        tokio::time::timeout(
            DEADLINE,
            await_condition(crds.clone(), &name, kube::runtime::conditions::is_crd_established()),
        )
        .await
        .expect("CRD established in time")
        .expect("watch the CRD");
    }
}

/// A fresh namespace for one test, with the CRDs installed.
pub struct TestNamespace {
    pub client: Client,
    pub name: String,
}

/// The garbage collector learns of new resource types by rediscovery, every 30 s. Tests that
/// rely on it wait, once per test binary, until it has collected a probe owned by an ApiKey.
static GC_KNOWS_CRDS: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

async fn wait_until_gc_knows_crds(client: &Client) {
    use k8s_openapi::api::core::v1::ConfigMap;
    GC_KNOWS_CRDS
        .get_or_init(|| async {
            let ns = format!("gc-probe-{}", rand::random_range(0..u32::MAX));
            let namespace: Namespace =
                serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).expect("ns");
            Api::<Namespace>::all(client.clone())
                .create(&PostParams::default(), &namespace)
                .await
                .expect("probe namespace");
            let keys: Api<ApiKey> = Api::namespaced(client.clone(), &ns);
            let owner =
                keys.create(&PostParams::default(), &key("probe", serde_json::json!({}))).await.expect("probe key");
            let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
            let probe: ConfigMap =
                serde_json::from_value(serde_json::json!({"metadata": {"name": "probe", "ownerReferences": [{
                    "apiVersion": "keyward.io/v1alpha1", "kind": "ApiKey", "name": "probe", "uid": owner.uid(),
                }]}}))
                .expect("probe");
            maps.create(&PostParams::default(), &probe).await.expect("probe ConfigMap");
            keys.delete("probe", &DeleteParams::default()).await.expect("delete probe key");
            let gone = tokio::time::timeout(
                Duration::from_secs(120),
                await_condition(maps, "probe", |m: Option<&ConfigMap>| m.is_none()),
            )
            .await;
            assert!(matches!(gone, Ok(Ok(_))), "the garbage collector never collected an ApiKey's dependent");
            let _ = Api::<Namespace>::all(client.clone()).delete(&ns, &DeleteParams::default()).await;
        })
        .await;
}

impl TestNamespace {
    pub async fn new(test: &str) -> Self {
        let client = client().await;
        install_crds(&client).await;
        wait_until_gc_knows_crds(&client).await;
        Self::on(client, test).await
    }

    /// A fresh namespace on the API server of `client` (which has the CRDs installed); no wait
    /// for its garbage collector.
    pub async fn on(client: Client, test: &str) -> Self {
        let suffix: String = (0..6).map(|_| (b'a' + rand::random_range(0..26u8)) as char).collect();
        let name =
            format!("{}-{suffix}", test.replace('_', "-").chars().take(40).collect::<String>().trim_end_matches('-'));
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).expect("namespace");
        namespaces.create(&PostParams::default(), &ns).await.expect("create the test namespace");
        Self { client, name }
    }

    pub fn keys(&self) -> Api<ApiKey> {
        Api::namespaced(self.client.clone(), &self.name)
    }

    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.name)
    }

    pub fn events(&self) -> Api<Event> {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Starts a controller watching only this namespace, with extra flags.
    pub fn controller(&self, extra: &[&str]) -> Operator {
        Operator::start(&self.name, extra, &[])
    }

    /// Starts a verifier indexing only this namespace, with extra flags, and waits until it is
    /// ready (its initial lists are indexed).
    pub async fn verifier(&self, extra: &[&str]) -> Operator {
        let verifier = Operator::run("verifier", &self.name, extra, &[]);
        verifier.wait_ready().await;
        verifier
    }

    /// Creates a key from a spec given as JSON.
    pub async fn create_key(&self, name: &str, spec: serde_json::Value) -> ApiKey {
        let key = key(name, spec);
        self.keys().create(&PostParams::default(), &key).await.unwrap_or_else(|e| panic!("create ApiKey {name}: {e}"))
    }

    pub async fn patch_spec(&self, name: &str, spec: serde_json::Value) -> ApiKey {
        self.keys()
            .patch(name, &PatchParams::default(), &Patch::Merge(serde_json::json!({ "spec": spec })))
            .await
            .unwrap_or_else(|e| panic!("patch ApiKey {name}: {e}"))
    }

    /// Waits until the key is in `phase` and its status describes its current generation.
    pub async fn wait_phase(&self, name: &str, phase: Phase) -> ApiKey {
        self.wait_key(name, &format!("phase {phase:?}"), move |k| {
            k.status
                .as_ref()
                .is_some_and(|s| s.record.phase == Some(phase) && s.observed_generation == k.metadata.generation)
        })
        .await
    }

    /// Waits until `condition` holds for the key, or fails at the deadline.
    pub async fn wait_key(&self, name: &str, what: &str, condition: impl Fn(&ApiKey) -> bool) -> ApiKey {
        let api = self.keys();
        let found = tokio::time::timeout(
            DEADLINE,
            await_condition(api.clone(), name, move |k: Option<&ApiKey>| k.is_some_and(&condition)),
        )
        .await;
        match found {
            Ok(Ok(Some(key))) => key,
            Ok(Err(e)) => panic!("watching ApiKey {name}: {e}"),
            _ => {
                let now = api.get_opt(name).await.ok().flatten();
                panic!(
                    "ApiKey {name} did not reach {what} within {DEADLINE:?}; status now: {:?}",
                    now.and_then(|k| k.status)
                )
            }
        }
    }

    /// Waits until the key is Active with a token hash other than `old`; returns its status.
    pub async fn wait_new_token(&self, name: &str, old: &Option<String>) -> keyward::api::ApiKeyStatus {
        let key = self
            .wait_key(name, "a new token", |k| {
                k.status.as_ref().is_some_and(|s| s.record.phase == Some(Phase::Active) && &s.record.token_hash != old)
            })
            .await;
        key.status.expect("status")
    }

    /// Waits until the named Secret is gone.
    pub async fn wait_secret_gone(&self, name: &str) {
        let done =
            tokio::time::timeout(DEADLINE, await_condition(self.secrets(), name, |s: Option<&Secret>| s.is_none()))
                .await;
        assert!(matches!(done, Ok(Ok(_))), "Secret {name} still exists after {DEADLINE:?}");
    }

    /// Waits until the named Secret exists and `condition` holds for it.
    pub async fn wait_secret(&self, name: &str, what: &str, condition: impl Fn(&Secret) -> bool) -> Secret {
        let found = tokio::time::timeout(
            DEADLINE,
            await_condition(self.secrets(), name, move |s: Option<&Secret>| s.is_some_and(&condition)),
        )
        .await;
        match found {
            Ok(Ok(Some(secret))) => secret,
            _ => panic!("Secret {name} did not reach {what} within {DEADLINE:?}"),
        }
    }

    /// The token written in a Secret.
    pub async fn token_of(&self, secret: &str) -> String {
        let secret = self.secrets().get(secret).await.unwrap_or_else(|e| panic!("read Secret {secret}: {e}"));
        token_in(&secret).expect("a token in the Secret")
    }

    /// Events about one object, newest last.
    pub async fn events_for(&self, name: &str) -> Vec<Event> {
        let mut events: Vec<Event> = self
            .events()
            .list(&ListParams::default())
            .await
            .expect("list events")
            .items
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(name))
            .collect();
        events.sort_by_key(|e| e.metadata.creation_timestamp.clone().map(|t| t.0));
        events
    }

    /// Waits until an event with `reason` exists for the named object.
    pub async fn wait_event(&self, name: &str, reason: &str) -> Event {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let mut events = watcher(self.events(), watcher::Config::default()).default_backoff().applied_objects().boxed();
        loop {
            if let Some(found) = self.events_for(name).await.into_iter().find(|e| e.reason.as_deref() == Some(reason)) {
                return found;
            }
            match tokio::time::timeout_at(deadline, events.try_next()).await {
                Ok(Ok(Some(_))) => {}
                Ok(other) => panic!("event watch ended: {:?}", other.err()),
                Err(_) => panic!("no {reason} event for {name} within {DEADLINE:?}"),
            }
        }
    }

    pub async fn delete_key(&self, name: &str) {
        self.keys()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("delete ApiKey {name}: {e}"));
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Best effort: the control plane is thrown away after the run anyway.
        let client = self.client.clone();
        let name = self.name.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = Api::<Namespace>::all(client).delete(&name, &DeleteParams::default()).await;
            });
        }
    }
}

/// An ApiKey object with a spec given as JSON.
pub fn key(name: &str, spec: serde_json::Value) -> ApiKey {
    let spec: ApiKeySpec = serde_json::from_value(spec).expect("a valid ApiKeySpec");
    ApiKey::new(name, spec)
}

pub fn token_in(secret: &Secret) -> Option<String> {
    let bytes = secret.data.as_ref()?.get("token")?;
    String::from_utf8(bytes.0.clone()).ok()
}

/// `keyward controller` (or `keyward verifier`) as a child process, killed when dropped.
pub struct Operator {
    subcommand: &'static str,
    child: Option<Child>,
    pub log: PathBuf,
    /// Where in the log the current process's output starts.
    started_at: usize,
    namespace: String,
    extra: Vec<String>,
    env: Vec<(String, String)>,
    _dir: std::sync::Arc<tempfile::TempDir>,
}

impl Operator {
    pub fn start(namespace: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::run("controller", namespace, extra, env)
    }

    pub fn run(subcommand: &'static str, namespace: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = std::sync::Arc::new(tempfile::tempdir().expect("temp dir"));
        let mut operator = Operator {
            subcommand,
            child: None,
            log: dir.path().join(format!("{subcommand}.log")),
            started_at: 0,
            namespace: namespace.to_string(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            _dir: dir,
        };
        operator.spawn();
        operator
    }

    fn spawn(&mut self) {
        self.started_at = self.logs().len();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("open the log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_keyward"));
        command.arg(self.subcommand);
        // The webhook serves whatever the API server sends it: it has no namespaces to watch.
        if self.subcommand != "webhook" {
            command.args(["--namespaces", &self.namespace]);
        }
        command
            .args(["--listen", "127.0.0.1:0"])
            .args(&self.extra)
            .env("RUST_LOG", std::env::var("KEYWARD_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .kill_on_drop(true);
        for (k, v) in &self.env {
            command.env(k, v);
        }
        self.child = Some(command.spawn().unwrap_or_else(|e| panic!("start keyward {}: {e}", self.subcommand)));
    }

    /// SIGKILL, no goodbye.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap_or_else(|e| panic!("kill keyward {}: {e}", self.subcommand));
        }
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "kill before restart");
        self.spawn();
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Records every token value each Secret in a namespace ever held, from a watch.
pub struct TokenHistory {
    pub seen: std::sync::Arc<std::sync::Mutex<BTreeMap<String, Vec<String>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TokenHistory {
    /// Starts watching; returns once the watch has listed what exists.
    pub async fn start(secrets: Api<Secret>) -> Self {
        let seen: std::sync::Arc<std::sync::Mutex<BTreeMap<String, Vec<String>>>> = Default::default();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let record = seen.clone();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut stream =
                watcher(secrets, watcher::Config::default()).backoff(keyward::retry::WatchBackoff::default()).boxed();
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::InitDone) => {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(watcher::Event::Apply(secret) | watcher::Event::InitApply(secret)) => {
                        let id = format!("{}/{}", secret.name_any(), secret.uid().unwrap_or_default());
                        if let Some(token) = token_in(&secret) {
                            let mut seen = record.lock().expect("history lock");
                            let tokens = seen.entry(id).or_default();
                            if tokens.last() != Some(&token) {
                                tokens.push(token);
                            }
                        }
                    }
                    _ => {}
                }
            }
        });
        tokio::time::timeout(DEADLINE, ready_rx).await.expect("Secret watch listed in time").expect("watch task alive");
        Self { seen, task }
    }

    /// Every token any Secret held.
    pub fn all_tokens(&self) -> Vec<String> {
        self.seen.lock().expect("history lock").values().flatten().cloned().collect()
    }

    /// Secrets (name/uid) whose token changed after it was first written.
    pub fn rewritten(&self) -> Vec<String> {
        self.seen.lock().expect("history lock").iter().filter(|(_, t)| t.len() > 1).map(|(id, _)| id.clone()).collect()
    }

    /// Asserts no Secret's token ever changed and exactly `count` Secret objects held a token.
    pub fn assert_one_token_per_secret(&self, count: usize) {
        assert!(self.rewritten().is_empty(), "tokens changed after they were written: {:?}", self.rewritten());
        assert_eq!(self.secret_objects(), count, "some key got more than one Secret over the run");
    }

    /// How many distinct Secret objects (name/uid) held a token.
    pub fn secret_objects(&self) -> usize {
        self.seen.lock().expect("history lock").len()
    }
}

impl Drop for TokenHistory {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits until every named key is Active for its current generation (one watch, one deadline).
pub async fn wait_all_active(keys: Api<ApiKey>, names: &[String], deadline: Duration) {
    use std::collections::HashSet;
    let mut pending: HashSet<String> = names.iter().cloned().collect();
    let mut stream = watcher(keys, watcher::Config::default()).backoff(keyward::retry::WatchBackoff::default()).boxed();
    let until = tokio::time::Instant::now() + deadline;
    while !pending.is_empty() {
        match tokio::time::timeout_at(until, stream.next()).await {
            Ok(Some(Ok(watcher::Event::Apply(key) | watcher::Event::InitApply(key)))) => {
                let active = key.status.as_ref().is_some_and(|s| {
                    s.record.phase == Some(Phase::Active) && s.observed_generation == key.metadata.generation
                });
                if active {
                    pending.remove(&key.name_any());
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("ApiKey watch ended"),
            Err(_) => panic!(
                "{} keys not Active within {deadline:?}, e.g. {:?}",
                pending.len(),
                pending.iter().take(5).collect::<Vec<_>>()
            ),
        }
    }
}

/// Creates keys named `<prefix>-<i>` for `i` in `0..count`, `concurrency` at a time.
pub async fn create_keys(keys: Api<ApiKey>, prefix: &str, count: usize, concurrency: usize) -> Vec<String> {
    let names: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
    futures::stream::iter(names.clone())
        .for_each_concurrent(concurrency, |name| {
            let keys = keys.clone();
            async move {
                keys.create(&PostParams::default(), &key(&name, serde_json::json!({})))
                    .await
                    .unwrap_or_else(|e| panic!("create {name}: {e}"));
            }
        })
        .await;
    names
}

/// Checks every named key's Secret holds a token hashing to the key's `status.tokenHash`, and
/// returns the tokens.
pub async fn assert_tokens_match_status(ns: &TestNamespace, names: &[String]) -> Vec<String> {
    let keys = ns.keys().list(&ListParams::default()).await.expect("list keys").items;
    let secrets = ns
        .secrets()
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=keyward"))
        .await
        .expect("list")
        .items;
    assert_eq!(secrets.len(), names.len(), "exactly one Secret per key");
    let by_name: BTreeMap<String, &Secret> = secrets.iter().map(|s| (s.name_any(), s)).collect();
    let mut tokens = Vec::new();
    for key in keys.iter().filter(|k| names.contains(&k.name_any())) {
        let status = key.status.as_ref().expect("status");
        let secret = by_name
            .get(&format!("{}-apikey", key.name_any()))
            .unwrap_or_else(|| panic!("no Secret for {}", key.name_any()));
        let token = token_in(secret).expect("token");
        assert_eq!(
            status.record.token_hash.as_deref(),
            Some(keyward::token::TokenHash::of(token.as_bytes()).as_str()),
            "{}: the Secret's token does not hash to status.tokenHash",
            key.name_any()
        );
        tokens.push(token);
    }
    assert_eq!(tokens.len(), names.len());
    tokens
}

impl Operator {
    /// The address the controller serves /metrics on (it listens on port 0), from its log.
    pub async fn listen_addr(&self) -> String {
        let until = tokio::time::Instant::now() + DEADLINE;
        loop {
            let logs = self.logs();
            let found = logs[self.started_at.min(logs.len())..]
                .lines()
                .filter(|l| l.contains("serving /healthz"))
                .find_map(|line| {
                    let start = line.find("127.0.0.1:")?;
                    let rest = &line[start..];
                    let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':')).unwrap_or(rest.len());
                    Some(rest[..end].to_string())
                });
            if let Some(addr) = found {
                return addr;
            }
            assert!(tokio::time::Instant::now() < until, "the controller never said where it listens:\n{logs}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// GET `path` from the process's HTTP endpoint; returns the status line and body.
    pub async fn http_get(&self, path: &str) -> (String, String) {
        let addr = self.listen_addr().await;
        let response = http(&addr, format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await;
        (response.status_line, response.body)
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        let until = tokio::time::Instant::now() + DEADLINE;
        while !self.http_get("/readyz").await.0.contains(" 200 ") {
            assert!(
                tokio::time::Instant::now() < until,
                "keyward {} never got ready:\n{}",
                self.subcommand,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `POST /v1/verify` with `body`; returns the status code and the JSON answer.
    pub async fn verify(&self, body: serde_json::Value) -> (u16, serde_json::Value) {
        let addr = self.listen_addr().await;
        let body = body.to_string();
        let request = format!(
            "POST /v1/verify HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let response = http(&addr, request.as_bytes()).await;
        let json = serde_json::from_str(&response.body).unwrap_or_else(|e| {
            panic!("/v1/verify answered {} with no JSON ({e}): {:?}", response.status, response.body)
        });
        (response.status, json)
    }

    /// The verdict code `POST /v1/verify` gives for `token` with `scopes` from `ip`.
    pub async fn verify_code(&self, token: &str, scopes: &[&str], ip: Option<&str>) -> String {
        let (status, answer) = self.verify(serde_json::json!({"token": token, "scopes": scopes, "ip": ip})).await;
        assert_eq!(status, 200, "{answer}");
        answer["code"].as_str().unwrap_or_else(|| panic!("no code in {answer}")).to_string()
    }

    /// Asks `/v1/verify` until it answers `want` for `token`, or fails after `within`; returns
    /// how long the change took to show.
    pub async fn wait_code(&self, token: &str, want: &str, within: Duration) -> Duration {
        let started = tokio::time::Instant::now();
        loop {
            let code = self.verify_code(token, &[], None).await;
            if code == want {
                return started.elapsed();
            }
            assert!(started.elapsed() < within, "the verifier still answers {code}, not {want}, after {within:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `GET` `path_and_query` from `/v1/auth` with extra header lines.
    pub async fn auth(&self, path_and_query: &str, headers: &[(&str, &str)]) -> HttpResponse {
        let addr = self.listen_addr().await;
        let mut request = format!("GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        http(&addr, request.as_bytes()).await
    }
}

/// The value of the series `name{labels}` in a Prometheus text exposition.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// An HTTP/1.1 answer, as read off the wire.
#[derive(Debug)]
pub struct HttpResponse {
    pub status_line: String,
    pub status: u16,
    /// Header names in lowercase.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Sends `request` (the bytes of one HTTP/1.1 request, sent as they are apart from a
/// `Connection: close` added after the request line) to `addr`, and reads the whole answer.
pub async fn http(addr: &str, request: &[u8]) -> HttpResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let line_end = request.windows(2).position(|w| w == b"\r\n").expect("a request line") + 2;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let mut bytes = request[..line_end].to_vec();
    bytes.extend_from_slice(b"Connection: close\r\n");
    bytes.extend_from_slice(&request[line_end..]);
    // The server may answer (431, 413) and close before reading everything: a failed write is
    // fine as long as an answer comes.
    let _ = stream.write_all(&bytes).await;
    let mut response = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut response))
        .await
        .expect("an answer in time")
        .or_else(|e| if response.is_empty() { Err(e) } else { Ok(0) })
        .expect("read the answer");
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default().to_string();
    let status = status_line.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    HttpResponse { status_line, status, headers, body: body.to_string() }
}

impl TestNamespace {
    pub fn credentials(&self) -> Api<keyward::api::Credential> {
        Api::namespaced(self.client.clone(), &self.name)
    }

    pub async fn create_credential(&self, name: &str, spec: serde_json::Value) -> keyward::api::Credential {
        let spec = serde_json::from_value(spec).expect("a valid CredentialSpec");
        let credential = keyward::api::Credential::new(name, spec);
        self.credentials()
            .create(&PostParams::default(), &credential)
            .await
            .unwrap_or_else(|e| panic!("create Credential {name}: {e}"))
    }

    /// Replaces the Credential's token list (a JSON merge patch replaces lists whole).
    pub async fn set_tokens(&self, name: &str, tokens: serde_json::Value) {
        self.credentials()
            .patch(name, &PatchParams::default(), &Patch::Merge(serde_json::json!({"spec": {"tokens": tokens}})))
            .await
            .unwrap_or_else(|e| panic!("patch Credential {name}: {e}"));
    }

    /// Waits until `condition` holds for the Credential's status at its current generation.
    pub async fn wait_credential(
        &self,
        name: &str,
        what: &str,
        condition: impl Fn(&keyward::api::CredentialStatus) -> bool,
    ) -> keyward::api::CredentialStatus {
        let api = self.credentials();
        let found = tokio::time::timeout(
            DEADLINE,
            await_condition(api.clone(), name, move |c: Option<&keyward::api::Credential>| {
                c.is_some_and(|c| {
                    c.status.as_ref().is_some_and(|s| s.observed_generation == c.metadata.generation && condition(s))
                })
            }),
        )
        .await;
        match found {
            Ok(Ok(Some(credential))) => credential.status.expect("status"),
            _ => {
                let now = api.get_opt(name).await.ok().flatten().and_then(|c| c.status);
                panic!("Credential {name} did not reach {what} within {DEADLINE:?}; status now: {now:?}")
            }
        }
    }
}

/// The token statuses of a Credential by name: (tokenHash, phase).
pub fn token_states(status: &keyward::api::CredentialStatus) -> BTreeMap<String, (Option<String>, Option<Phase>)> {
    status.tokens.iter().map(|t| (t.name.clone(), (t.record.token_hash.clone(), t.record.phase))).collect()
}

/// The directory of the control plane the tests run against: `admin.kubeconfig` (the
/// `KUBECONFIG`) and `user-1.kubeconfig`..`user-3.kubeconfig` for users without any RBAC binding.
pub fn control_plane_dir() -> PathBuf {
    let kubeconfig = PathBuf::from(std::env::var_os("KUBECONFIG").expect("KUBECONFIG is set"));
    kubeconfig.parent().expect("KUBECONFIG names a file in a directory").to_path_buf()
}

/// The kubeconfig of the unprivileged user `keyward-user-<n>` (n = 1..=3).
pub fn user_kubeconfig(n: u8) -> PathBuf {
    control_plane_dir().join(format!("user-{n}.kubeconfig"))
}

/// A second API server with no Keyward CRDs (`control-plane.sh bare`, started once and shared);
/// returns the path of its kubeconfig.
pub async fn bare_kubeconfig() -> PathBuf {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/control-plane.sh");
    let output =
        Command::new(script).arg("bare").arg(control_plane_dir()).stdin(Stdio::null()).kill_on_drop(true).output();
    // The script waits up to 180 s for another caller's lock, then up to 90 s for readiness.
    let output = tokio::time::timeout(Duration::from_secs(300), output)
        .await
        .expect("control-plane.sh bare finished in time")
        .expect("run control-plane.sh bare");
    assert!(
        output.status.success(),
        "control-plane.sh bare failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    assert!(path.is_file(), "control-plane.sh bare printed {path:?}, which is not a file");
    path
}

/// A control plane of a test's own, in a temporary directory, for tests that stop and start its
/// API server: the shared one must stay up for every other test.
pub struct OwnControlPlane {
    pub dir: tempfile::TempDir,
}

fn control_plane_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/control-plane.sh")
}

/// Runs `control-plane.sh ARGS` to completion and returns its stdout; fails the test on error.
fn control_plane(args: &[&str]) -> String {
    let out = std::process::Command::new(control_plane_script())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run control-plane.sh");
    assert!(out.status.success(), "control-plane.sh {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl OwnControlPlane {
    /// Starts etcd, an API server and a controller-manager, and installs the CRDs.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().to_str().expect("UTF-8 path").to_string();
        tokio::task::spawn_blocking(move || control_plane(&["start", &path])).await.expect("start task");
        let plane = Self { dir };
        install_crds(&plane.client().await).await;
        plane
    }

    pub fn kubeconfig(&self) -> String {
        self.dir.path().join("admin.kubeconfig").to_str().expect("UTF-8 path").to_string()
    }

    /// A client of this control plane's API server.
    pub async fn client(&self) -> Client {
        client_of(&self.kubeconfig()).await
    }

    fn path(&self) -> String {
        self.dir.path().to_str().expect("UTF-8 path").to_string()
    }

    /// SIGKILLs the API server.
    pub async fn kill_apiserver(&self) {
        let path = self.path();
        tokio::task::spawn_blocking(move || control_plane(&["apiserver-kill", &path])).await.expect("kill task");
    }

    /// Starts the API server again; returns when it answers `/readyz`.
    pub async fn start_apiserver(&self) {
        let path = self.path();
        tokio::task::spawn_blocking(move || control_plane(&["apiserver-start", &path])).await.expect("start task");
    }

    /// Another API server on the same etcd and data, to change objects while the first is down;
    /// dropped with [`OwnControlPlane::stop_twin`].
    pub async fn twin(&self) -> Client {
        let path = self.path();
        let kubeconfig = tokio::task::spawn_blocking(move || control_plane(&["twin", &path])).await.expect("twin task");
        client_of(&kubeconfig).await
    }

    pub async fn stop_twin(&self) {
        let path = self.path();
        tokio::task::spawn_blocking(move || control_plane(&["twin-stop", &path])).await.expect("twin-stop task");
    }

    /// A keyward process (`controller` or `verifier`) of this control plane, in `namespace`.
    pub fn operator(&self, subcommand: &'static str, namespace: &str, extra: &[&str]) -> Operator {
        Operator::run(subcommand, namespace, extra, &[("KUBECONFIG", &self.kubeconfig())])
    }
}

impl Drop for OwnControlPlane {
    fn drop(&mut self) {
        let path = self.path();
        let _ = std::process::Command::new(control_plane_script()).args(["stop", &path]).stdin(Stdio::null()).output();
    }
}

/// A client from a kubeconfig file.
pub async fn client_of(kubeconfig: &str) -> Client {
    let config = kube::config::Kubeconfig::read_from(kubeconfig).expect("read the kubeconfig");
    let options = kube::config::KubeConfigOptions::default();
    let config = kube::Config::from_custom_kubeconfig(config, &options).await.expect("a config from the kubeconfig");
    Client::try_from(config).expect("a client")
}
