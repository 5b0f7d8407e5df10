//! `kubectl apikey exchange` as a script runs it: the token on stdin, a real `keyward verifier
//! --issuer` reading a signing Secret the test writes (as the controller's keeper would), the
//! controller issuing real tokens, each test in its own namespace. Its stdout, stderr and exit
//! code are checked, and the API token must show in neither.

mod support;

use std::path::Path;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use keyward::api::Phase;
use keyward::signing::{self, Stored, StoredKey};
use keyward::token::Token;
use kube::api::PostParams;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use support::command::{CommandLine, PLUGIN, Run};
use support::{DEADLINE, Operator, TestNamespace, wait_for};

/// An issued ApiKey: its token (from its Secret).
async fn issued_key(ns: &TestNamespace, name: &str, spec: Value) -> String {
    ns.create_key(name, spec).await;
    ns.wait_phase(name, Phase::Active).await;
    ns.token_of(&format!("{name}-apikey")).await
}

/// Writes the signing Secret, one P-256 key signing from now, as the controller does.
async fn write_signing_key(ns: &TestNamespace) {
    let secret = Secret {
        metadata: kube::api::ObjectMeta { name: Some(signing::DEFAULT_SECRET_NAME.into()), ..Default::default() },
        type_: Some(signing::SECRET_TYPE.into()),
        data: Some(signing::secret_data(&Stored {
            keys: vec![StoredKey::generate(Timestamp::now()).expect("a signing key")],
        })),
        ..Default::default()
    };
    ns.secrets().create(&PostParams::default(), &secret).await.expect("create the signing Secret");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("its address").port()
}

/// `keyward verifier` on a port of its own, with `--issuer http://127.0.0.1:<port>` unless
/// `exchange` is false, reading the signing Secret of the test's namespace.
async fn verifier(ns: &TestNamespace, exchange: bool) -> (Operator, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let issuer = format!("http://{addr}");
    let mut args = vec!["--listen", &addr];
    if exchange {
        args.extend(["--issuer", &issuer]);
    }
    let process = Operator::run("verifier", &ns.name, &args, &[("POD_NAMESPACE", &ns.name)]);
    process.wait_ready().await;
    (process, issuer)
}

/// `kubectl-apikey exchange ARGS...` with `stdin`.
fn exchange(args: &[&str], stdin: &str) -> CommandLine {
    CommandLine::new(PLUGIN).args(&[&["exchange"], args].concat()).stdin(stdin)
}

/// Runs the exchange until the verifier has read the signing Secret (exit 12 until then).
async fn first_exchange(issuer: &str, token: &str) -> Run {
    wait_for("the verifier exchanging with its signing key", DEADLINE, || async {
        let run = exchange(&["--issuer", issuer], token).run().await;
        if run.success() { Ok(run) } else { Err(run.to_string()) }
    })
    .await
}

/// A JWT's claims, read without checking (the verifier checks).
fn claims(jwt: &str) -> Value {
    use base64::Engine as _;
    let part = jwt.split('.').nth(1).unwrap_or_else(|| panic!("not a JWT: {jwt:?}"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).expect("base64url claims");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

#[tokio::test]
async fn exchange_prints_an_access_token_alone_that_the_verifier_accepts() {
    let ns = TestNamespace::new("plugin-exchange").await;
    let _controller = ns.controller(&[]);
    let token = issued_key(&ns, "ci", json!({"scopes": ["orders.read", "deploy.>"]})).await;
    write_signing_key(&ns).await;
    let (verifier, issuer) = verifier(&ns, true).await;

    // As a script reads it: the token piped in with its line end, the access token alone out.
    let run = first_exchange(&issuer, &format!("{token}\n")).await;
    run.never_shows(&token);
    assert!(run.stdout.lines().count() == 1 && run.stdout.ends_with('\n'), "stdout is not one line\n{run}");
    assert!(run.stderr.is_empty(), "a quiet success has nothing on stderr\n{run}");
    let access = run.stdout.trim_end();
    let got = claims(access);
    assert_eq!(got["client_id"], Token::parse(&token).expect("a token").key_id(), "{got}");
    assert_eq!(
        (got["sub"].as_str(), got["scope"].as_str()),
        (Some(&*format!("{}/ci", ns.name)), Some("orders.read deploy.>"))
    );
    let answer = verifier.auth("/v1/auth?scope=orders.read", &[("Authorization", &format!("Bearer {access}"))]).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.header("x-keyward-key"), Some(format!("{}/ci", ns.name).as_str()), "{answer:?}");

    // Scopes repeated or space-separated, the issuer from the environment, the whole answer.
    let run = exchange(&["--scope", "orders.read deploy.prod.write", "--scope", "orders.read", "-o", "json"], &token)
        .env("KEYWARD_ISSUER", &issuer)
        .run()
        .await
        .exits(0);
    run.never_shows(&token);
    let answer = run.json();
    assert_eq!(
        (answer["token_type"].as_str(), answer["scope"].as_str()),
        (Some("Bearer"), Some("orders.read deploy.prod.write")),
        "{answer}"
    );
    assert!(answer["expires_in"].as_u64().is_some_and(|s| s > 0 && s <= 900), "{answer}");
    assert!(answer["refresh_token"].as_str().is_some_and(|t| !t.is_empty()), "{answer}");
    assert_eq!(
        claims(answer["access_token"].as_str().expect("access_token"))["scope"],
        "orders.read deploy.prod.write"
    );

    // An application named, in YAML.
    let run = exchange(&["--issuer", &issuer, "--app", "billing-worker", "-o", "yaml"], &token).run().await.exits(0);
    let answer: Value = serde_yaml::from_str(&run.stdout).expect("YAML");
    assert_eq!(claims(answer["access_token"].as_str().expect("access_token"))["keyward"]["app"], "billing-worker");
    assert!(!verifier.logs().contains(&token), "the verifier logged the token");
}

#[tokio::test]
async fn exchange_refusals_say_the_oauth_error_with_their_own_exit_codes() {
    let ns = TestNamespace::new("plugin-exchange-refusals").await;
    let _controller = ns.controller(&[]);
    let token = issued_key(&ns, "ci", json!({"scopes": ["orders.read"]})).await;
    let (_verifier, issuer) = verifier(&ns, true).await;
    let args = ["--issuer", issuer.as_str()];

    // No signing key yet: the issuer cannot issue; worth trying again.
    let run = exchange(&args, &token).run().await.exits(12).says("stderr", &["temporarily_unavailable", "try again"]);
    run.never_shows(&token);
    write_signing_key(&ns).await;
    first_exchange(&issuer, &token).await;

    // Refused by the issuer: the token (10), the request (11).
    let unknown = Token::generate("kw");
    let run = exchange(&args, unknown.expose()).run().await.exits(10).says("stderr", &["invalid_client", "NOT_FOUND"]);
    run.never_shows(unknown.expose());
    let run = exchange(&["--issuer", &issuer, "--scope", "payments.write"], &token).run().await.exits(11);
    run.says("stderr", &["invalid_scope"]).never_shows(&token);
    ns.patch_spec("ci", json!({"state": "Inactive"})).await;
    let run = wait_for("the exchange refused for an inactive key", DEADLINE, || async {
        let run = exchange(&args, &token).run().await;
        if run.code == Some(10) { Ok(run) } else { Err(run.to_string()) }
    })
    .await;
    run.says("stderr", &["invalid_client", "INACTIVE"]).never_shows(&token);

    // Refused here, before anything is sent.
    exchange(&args, "kw_not-a-token")
        .run()
        .await
        .exits(10)
        .says("stderr", &["not a Keyward token", "nothing was sent"]);
    exchange(&args, "").run().await.exits(2).says("stderr", &["no token on stdin", "kubectl apikey exchange"]);
    exchange(&[], &token).run().await.exits(2).says("stderr", &["--issuer", "KEYWARD_ISSUER"]).never_shows(&token);
    exchange(&["--issuer", "keys.example.com"], &token).run().await.exits(2).says("stderr", &["--issuer"]);
    exchange(&["--issuer", &issuer, "--scope", "orders..read"], &token)
        .run()
        .await
        .exits(2)
        .says("stderr", &["--scope"]);
    // A bad argument is refused before stdin is read, however much waits there (more than a
    // pipe holds, so the plugin exits with most of it unwritten).
    let flood = format!("{token}\n{}", "x".repeat(1 << 20));
    exchange(&["--issuer", &issuer, "--app", "a b"], &flood).run().await.exits(2).says("stderr", &["--app"]);

    // No issuer there (a closed port), or a verifier without --issuer (404): exit 12.
    let closed = format!("http://127.0.0.1:{}", free_port());
    exchange(&["--issuer", &closed], &token)
        .run()
        .await
        .exits(12)
        .says("stderr", &["cannot exchange at"])
        .never_shows(&token);
    let (_plain, plain_issuer) = verifier(&ns, false).await;
    exchange(&["--issuer", &plain_issuer], &token).run().await.exits(12).says("stderr", &["404", "--issuer"]);
}

/// A TLS front for `backend` on a port of its own, with the certificate (for 127.0.0.1) and CA
/// that `scripts/control-plane.sh webhook-cert` makes in `certs`; returns its https:// URL.
async fn tls_front(backend: String, certs: &Path) -> String {
    let out = std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/control-plane.sh"))
        .args(["webhook-cert", certs.to_str().expect("UTF-8")])
        .output()
        .expect("make a certificate");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let chain = CertificateDer::pem_file_iter(certs.join("tls.crt"))
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .expect("the certificate");
    let key = PrivateKeyDer::from_pem_file(certs.join("tls.key")).expect("the key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("a server identity");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, backend) = (acceptor.clone(), backend.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let Ok(mut upstream) = tokio::net::TcpStream::connect(&backend).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
            });
        }
    });
    format!("https://{addr}")
}

#[tokio::test]
async fn exchange_speaks_https_trusting_the_ca_file_or_else_the_system_roots() {
    let ns = TestNamespace::new("plugin-exchange-https").await;
    let _controller = ns.controller(&[]);
    let token = issued_key(&ns, "ci", json!({"scopes": ["orders.read"]})).await;
    write_signing_key(&ns).await;
    let (_verifier, issuer) = verifier(&ns, true).await;
    first_exchange(&issuer, &token).await;
    let certs = tempfile::tempdir().expect("temp dir");
    let https = tls_front(issuer.trim_start_matches("http://").to_string(), certs.path()).await;
    let ca = certs.path().join("ca.crt");

    let run = exchange(&["--issuer", &https, "--ca-file", ca.to_str().expect("UTF-8")], &token).run().await.exits(0);
    run.never_shows_on_stderr(&token);
    assert_eq!(run.stdout.trim_end().split('.').count(), 3, "not a JWT\n{run}");
    // The system roots do not hold the test's CA: the certificate is refused, nothing is sent.
    let run = exchange(&["--issuer", &https], &token).run().await.exits(12).says("stderr", &["certificate"]);
    run.never_shows(&token);
    // A CA file that is no certificate is refused before anything is sent.
    let key = certs.path().join("tls.key");
    exchange(&["--issuer", &https, "--ca-file", key.to_str().expect("UTF-8")], &token)
        .run()
        .await
        .exits(2)
        .says("stderr", &["--ca-file"]);
}
