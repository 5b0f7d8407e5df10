//! Token exchange on the real API server: the controller issues real tokens, the test writes the
//! signing Secret itself (as the controller's keeper would), and `keyward verifier --issuer`
//! exchanges them; third-party Python clients (Authlib, PyJWT) speak to it as users' code would.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine as _;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use keyward::api::Phase;
use keyward::signing::{self, Stored, StoredKey};
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::{DEADLINE, HttpResponse, Operator, TestNamespace, http, sample, wait_for};
use tokio::process::Command;

/// An issued ApiKey: its token (from its Secret) and key ID.
async fn issued_key(ns: &TestNamespace, name: &str, spec: Value) -> (String, String) {
    ns.create_key(name, spec).await;
    let key = ns.wait_phase(name, Phase::Active).await;
    let token = ns.token_of(&format!("{name}-apikey")).await;
    (token, key.status.and_then(|s| s.record.key_id).expect("keyId"))
}

/// The signing Secret as the controller writes it, holding `keys`.
fn signing_secret(keys: &[StoredKey]) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta { name: Some(signing::DEFAULT_SECRET_NAME.into()), ..Default::default() },
        type_: Some(signing::SECRET_TYPE.into()),
        data: Some(signing::secret_data(&Stored { keys: keys.to_vec() })),
        ..Default::default()
    }
}

async fn write_signing_keys(ns: &TestNamespace, keys: &[StoredKey]) {
    let secret = signing_secret(keys);
    match ns.secrets().get_opt(signing::DEFAULT_SECRET_NAME).await.expect("read the signing Secret") {
        None => {
            ns.secrets().create(&PostParams::default(), &secret).await.expect("create the signing Secret");
        }
        Some(_) => {
            let patch = json!({"data": secret.data});
            ns.secrets()
                .patch(signing::DEFAULT_SECRET_NAME, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .expect("edit the signing Secret");
        }
    }
}

fn new_key(signs_from: Timestamp) -> StoredKey {
    StoredKey::generate(signs_from).expect("a signing key")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("its address").port()
}

/// `keyward verifier --issuer http://127.0.0.1:<port>` on that port, reading the signing Secret
/// of the test's namespace.
struct ExchangeVerifier {
    process: Operator,
    issuer: String,
    addr: String,
}

impl ExchangeVerifier {
    async fn start(ns: &TestNamespace, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_as(ns, None, extra, env).await
    }

    /// [`ExchangeVerifier::start`], as another replica of `issuer` when given.
    async fn start_as(ns: &TestNamespace, issuer: Option<&str>, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let issuer = issuer.map_or_else(|| format!("http://{addr}"), String::from);
        let mut args = vec!["--listen", &addr, "--issuer", &issuer];
        args.extend_from_slice(extra);
        let mut env = env.to_vec();
        env.push(("POD_NAMESPACE", &ns.name));
        let process = Operator::run("verifier", &ns.name, &args, &env);
        process.wait_ready().await;
        Self { process, issuer, addr }
    }

    /// `POST /v1/token` with `form` and optional HTTP Basic credentials (sent as a client
    /// library sends them: each half form-urlencoded).
    async fn token(&self, form: &[(&str, &str)], basic: Option<(&str, &str)>) -> (HttpResponse, Value) {
        let body: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let mut request = format!(
            "POST /v1/token HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        if let Some((id, secret)) = basic {
            let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", enc(id), enc(secret)));
            request.push_str(&format!("Authorization: Basic {credentials}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(&body);
        let response = http(&self.addr, request.as_bytes()).await;
        let json = serde_json::from_str(&response.body).unwrap_or(Value::Null);
        (response, json)
    }

    /// A client-credentials exchange by HTTP Basic that must succeed.
    async fn exchange(&self, key_id: &str, token: &str, extra: &[(&str, &str)]) -> Value {
        let mut form = vec![("grant_type", "client_credentials")];
        form.extend_from_slice(extra);
        let (response, answer) = self.token(&form, Some((key_id, token))).await;
        assert_eq!(response.status, 200, "{response:?}");
        answer
    }

    async fn refresh(&self, refresh_token: &str) -> (u16, Value) {
        let (response, answer) =
            self.token(&[("grant_type", "refresh_token"), ("refresh_token", refresh_token)], None).await;
        (response.status, answer)
    }

    async fn auth(&self, token: &str, scopes: &[&str]) -> HttpResponse {
        let query: String = scopes.iter().map(|s| format!("scope={s}")).collect::<Vec<_>>().join("&");
        let bearer = format!("Bearer {token}");
        self.process.auth(&format!("/v1/auth?{query}"), &[("Authorization", &bearer)]).await
    }
}

/// A JWT's header and claims, read without checking (the verifier and PyJWT check).
fn jwt_parts(token: &str) -> (Value, Value) {
    let part = |i: usize| -> Value {
        let text = token.split('.').nth(i).expect("three parts");
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).expect("base64url"))
            .expect("JSON")
    };
    (part(0), part(1))
}

/// Waits until the verifier signs with `kid`, exchanging as it goes; returns that answer.
async fn wait_signing_kid(verifier: &ExchangeVerifier, key_id: &str, token: &str, kid: &str) -> Value {
    wait_for(format!("access tokens signed by {kid}"), DEADLINE, || async {
        let (response, answer) = verifier.token(&[("grant_type", "client_credentials")], Some((key_id, token))).await;
        if response.status != 200 {
            return Err(format!("{response:?}"));
        }
        let (header, _) = jwt_parts(answer["access_token"].as_str().unwrap_or_default());
        if header["kid"] == kid { Ok(answer) } else { Err(header.to_string()) }
    })
    .await
}

/// The Python libraries, installed once per test binary by `scripts/python-clients.sh`.
static PYTHON_CLIENTS: tokio::sync::OnceCell<PathBuf> = tokio::sync::OnceCell::const_new();

async fn python_clients() -> PathBuf {
    PYTHON_CLIENTS
        .get_or_init(|| async {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/python-clients.sh");
            let output = tokio::time::timeout(Duration::from_secs(600), Command::new(script).output())
                .await
                .expect("python-clients.sh in time")
                .expect("run python-clients.sh");
            assert!(output.status.success(), "python-clients.sh: {}", String::from_utf8_lossy(&output.stderr));
            PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
        })
        .await
        .clone()
}

#[tokio::test]
async fn an_oauth_library_exchanges_and_a_jwt_library_verifies_against_the_jwks() {
    let ns = TestNamespace::new("exchange-python").await;
    let _controller = ns.controller(&[]);
    let (token, key_id) = issued_key(&ns, "ci", json!({"scopes": ["orders.read", "deploy.>"]})).await;
    let key = new_key(Timestamp::now());
    write_signing_keys(&ns, std::slice::from_ref(&key)).await;
    let verifier = ExchangeVerifier::start(&ns, &[], &[]).await;
    wait_signing_kid(&verifier, &key_id, &token, &key.kid).await;
    let pythonpath = python_clients().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/oauth_client.py");
    let output = tokio::time::timeout(
        DEADLINE,
        Command::new("python3")
            .arg(script)
            .args([&verifier.issuer, &key_id, &token, "orders.read deploy.prod.write"])
            .env("PYTHONPATH", &pythonpath)
            .output(),
    )
    .await
    .expect("the Python client in time")
    .expect("run python3");
    assert!(
        output.status.success(),
        "the Python client failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        verifier.process.logs()
    );
    let got: Value = serde_json::from_slice(&output.stdout).expect("the client's JSON line");
    assert_eq!(got["token_type"], "Bearer");
    assert_eq!(got["scope"], "orders.read deploy.prod.write");
    assert_eq!(got["has_refresh_token"], true);
    assert_eq!(got["forged_verified"], false, "PyJWT refuses a tampered signature");
    assert_eq!(got["header"]["alg"], "ES256");
    assert_eq!(got["header"]["typ"], "at+jwt");
    let claims = &got["claims"];
    let uid = ns.keys().get("ci").await.expect("the key").metadata.uid.expect("uid");
    assert_eq!(claims["iss"], verifier.issuer.as_str());
    assert_eq!(claims["aud"], verifier.issuer.as_str());
    assert_eq!(claims["sub"], format!("{}/ci", ns.name));
    assert_eq!(claims["client_id"], key_id.as_str());
    assert_eq!(
        claims["keyward"],
        json!({"kind": "ApiKey", "namespace": ns.name, "name": "ci", "token": null, "uid": uid, "app": null})
    );
    let (iat, exp) = (claims["iat"].as_i64().unwrap(), claims["exp"].as_i64().unwrap());
    assert_eq!(exp - iat, 900, "--access-token-ttl 15m");
    assert!((got["expires_in"].as_i64().unwrap() - 900).abs() <= 1);

    // The same access token passes /v1/auth, with the scopes it was narrowed to and no other.
    let access = got["access_token"].as_str().unwrap();
    let ok = verifier.auth(access, &["deploy.prod.write"]).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.header("x-keyward-key"), Some(format!("{}/ci", ns.name).as_str()));
    assert_eq!(ok.header("x-keyward-key-id"), Some(key_id.as_str()));
    let narrowed = verifier.auth(access, &["deploy.staging.write"]).await;
    assert_eq!((narrowed.status, narrowed.header("x-keyward-code")), (403, Some("INSUFFICIENT_SCOPE")));
}

#[tokio::test]
async fn the_metadata_and_jwks_are_published_and_tokens_wait_for_the_signing_secret() {
    let ns = TestNamespace::new("exchange-published").await;
    let _controller = ns.controller(&[]);
    let (token, key_id) = issued_key(&ns, "ci", json!({})).await;
    let verifier = ExchangeVerifier::start(&ns, &[], &[]).await;

    // Ready without the Secret; the exchange says why it cannot issue yet.
    let (response, answer) = verifier.token(&[("grant_type", "client_credentials")], Some((&key_id, &token))).await;
    assert_eq!(response.status, 503, "{response:?}");
    assert_eq!(answer["error"], "temporarily_unavailable");
    assert_eq!(response.header("cache-control"), Some("no-store"));
    let (status, jwks) = verifier.process.http_get("/.well-known/jwks.json").await;
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(serde_json::from_str::<Value>(&jwks).unwrap(), json!({"keys": []}));

    let key = new_key(Timestamp::now());
    write_signing_keys(&ns, std::slice::from_ref(&key)).await;
    let answer = wait_signing_kid(&verifier, &key_id, &token, &key.kid).await;
    assert_eq!(answer["token_type"], "Bearer");
    let (response, _) = verifier.token(&[("grant_type", "client_credentials")], Some((&key_id, &token))).await;
    assert_eq!(response.header("cache-control"), Some("no-store"));
    assert_eq!(response.header("pragma"), Some("no-cache"));

    let (_, jwks) = verifier.process.http_get("/.well-known/jwks.json").await;
    let jwks: Value = serde_json::from_str(&jwks).unwrap();
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(1));
    assert_eq!(jwks["keys"][0]["kid"], key.kid.as_str());
    assert!(jwks["keys"][0].get("d").is_none(), "no private part: {jwks}");

    for path in ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"] {
        let (status, body) = verifier.process.http_get(path).await;
        assert!(status.contains(" 200 "), "{path}: {status}");
        let issuer = &verifier.issuer;
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({
                "issuer": issuer,
                "token_endpoint": format!("{issuer}/v1/token"),
                "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
                "grant_types_supported": ["client_credentials", "refresh_token"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "response_types_supported": ["token"],
            }),
            "{path}"
        );
    }

    // Without --issuer, none of it exists, and a JWT is no token at all.
    let plain = ns.verifier(&[]).await;
    for path in ["/.well-known/jwks.json", "/.well-known/oauth-authorization-server"] {
        assert!(plain.http_get(path).await.0.contains(" 404 "), "{path}");
    }
    let addr = plain.listen_addr().await;
    let body = "grant_type=client_credentials";
    let request = format!(
        "POST /v1/token HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(http(&addr, request.as_bytes()).await.status, 404);
    let access = answer["access_token"].as_str().unwrap();
    let refused = plain.auth("/v1/auth", &[("Authorization", &format!("Bearer {access}"))]).await;
    assert_eq!((refused.status, refused.header("x-keyward-code")), (401, Some("MALFORMED")));
}

#[tokio::test]
async fn invalid_client_for_a_wrong_secret_or_a_mismatched_client_id() {
    let ns = TestNamespace::new("exchange-client").await;
    let _controller = ns.controller(&[]);
    let (token, key_id) = issued_key(&ns, "ci", json!({})).await;
    let (other_token, other_id) = issued_key(&ns, "other", json!({"state": "Active"})).await;
    let key = new_key(Timestamp::now());
    write_signing_keys(&ns, std::slice::from_ref(&key)).await;
    let verifier = ExchangeVerifier::start(&ns, &[], &[]).await;
    wait_signing_kid(&verifier, &key_id, &token, &key.kid).await;

    let grant = [("grant_type", "client_credentials")];
    let unknown = keyward::token::Token::generate("kw");
    for (what, id, secret, code) in [
        ("an unknown token", key_id.as_str(), unknown.expose(), "NOT_FOUND"),
        ("a token with a typo", key_id.as_str(), &token[..token.len() - 1], "MALFORMED"),
        ("another key's ID", other_id.as_str(), token.as_str(), "client_id is not the key ID of the token"),
        ("another key's token", key_id.as_str(), other_token.as_str(), "client_id is not the key ID of the token"),
    ] {
        let (response, answer) = verifier.token(&grant, Some((id, secret))).await;
        assert_eq!(response.status, 401, "{what}: {response:?}");
        assert_eq!(response.header("www-authenticate"), Some("Basic"), "{what}");
        assert_eq!(answer["error"], "invalid_client", "{what}");
        assert_eq!(answer["error_description"], code, "{what}");
    }
    // client_secret_post works too; both ways at once is invalid_request.
    let form =
        [("grant_type", "client_credentials"), ("client_id", key_id.as_str()), ("client_secret", token.as_str())];
    let (response, _) = verifier.token(&form, None).await;
    assert_eq!(response.status, 200, "{response:?}");
    let (response, answer) = verifier.token(&form, Some((&key_id, &token))).await;
    assert_eq!((response.status, answer["error"].as_str()), (400, Some("invalid_request")));
    let (response, answer) = verifier.token(&[("grant_type", "password")], Some((&key_id, &token))).await;
    assert_eq!((response.status, answer["error"].as_str()), (400, Some("unsupported_grant_type")));
    let (response, answer) =
        verifier.token(&[("grant_type", "client_credentials"), ("app", "-bad")], Some((&key_id, &token))).await;
    assert_eq!((response.status, answer["error"].as_str()), (400, Some("invalid_request")));

    // A refused key: the verifier's code in error_description.
    ns.patch_spec("ci", json!({"state": "Inactive"})).await;
    wait_for("the exchange refusing an inactive key", DEADLINE, || async {
        let (response, answer) = verifier.token(&grant, Some((&key_id, &token))).await;
        if response.status == 401 && answer["error_description"] == "INACTIVE" { Ok(()) } else { Err(response.body) }
    })
    .await;
    let metrics = verifier.process.metrics().await;
    for series in [
        r#"keyward_verifier_token_exchanges_total{grant="client_credentials",result="issued"}"#,
        r#"keyward_verifier_token_exchanges_total{grant="client_credentials",result="invalid_client"}"#,
        r#"keyward_verifier_token_exchanges_total{grant="other",result="unsupported_grant_type"}"#,
    ] {
        assert!(sample(&metrics, series).is_some_and(|v| v >= 1.0), "{series} in\n{metrics}");
    }
}

#[tokio::test]
async fn scopes_narrow_to_what_the_key_grants_and_else_invalid_scope() {
    let ns = TestNamespace::new("exchange-scope").await;
    let _controller = ns.controller(&[]);
    let (token, key_id) = issued_key(&ns, "ci", json!({"scopes": ["orders.read", "deploy.>"]})).await;
    let key = new_key(Timestamp::now());
    write_signing_keys(&ns, std::slice::from_ref(&key)).await;
    let verifier = ExchangeVerifier::start(&ns, &[], &[]).await;
    let whole = wait_signing_kid(&verifier, &key_id, &token, &key.kid).await;
    assert_eq!(whole["scope"], "orders.read deploy.>", "no scope asked: the key's");

    let narrow = verifier.exchange(&key_id, &token, &[("scope", "deploy.prod.write")]).await;
    assert_eq!(narrow["scope"], "deploy.prod.write");
    let access = narrow["access_token"].as_str().unwrap();
    assert_eq!(jwt_parts(access).1["scope"], "deploy.prod.write");
    let ok = verifier.auth(access, &["deploy.prod.write"]).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.header("x-keyward-scopes"), Some("deploy.prod.write"), "the token's scopes, not the key's");
    assert_eq!(verifier.auth(access, &["orders.read"]).await.status, 403, "not in the token's scope");
    let whole_access = whole["access_token"].as_str().unwrap();
    assert_eq!(verifier.auth(whole_access, &["deploy.prod.write", "orders.read"]).await.status, 200);

    for refused in ["orders.write", "deploy", "deploy.prod.>", "orders.read.all"] {
        let (response, answer) =
            verifier.token(&[("grant_type", "client_credentials"), ("scope", refused)], Some((&key_id, &token))).await;
        assert_eq!((response.status, answer["error"].as_str()), (400, Some("invalid_scope")), "{refused}");
    }

    // The key stops granting a scope: tokens that hold it stop passing at once.
    ns.patch_spec("ci", json!({"scopes": ["orders.read"]})).await;
    wait_for("the narrowed access token refused", DEADLINE, || async {
        let refused = verifier.auth(access, &["deploy.prod.write"]).await;
        if refused.status == 403 { Ok(()) } else { Err(format!("{refused:?}")) }
    })
    .await;
    let (status, answer) = verifier.refresh(narrow["refresh_token"].as_str().unwrap()).await;
    assert_eq!((status, answer["error"].as_str()), (400, Some("invalid_grant")), "{answer}");
}

#[tokio::test]
async fn the_application_is_judged_at_the_exchange_and_again_for_its_access_token() {
    let ns = TestNamespace::new("exchange-apps").await;
    let _controller = ns.controller(&[]);
    let spec = json!({"applications": {"default": "Pending", "allowed": ["worker"]}});
    let (token, key_id) = issued_key(&ns, "gated", spec).await;
    let key = new_key(Timestamp::now());
    write_signing_keys(&ns, std::slice::from_ref(&key)).await;
    let fast = ["--usage-flush-interval", "1s", "--usage-resolution", "1s"];
    let verifier = ExchangeVerifier::start(&ns, &fast, &[]).await;
    wait_for("the signing keys", DEADLINE, || async {
        let (response, _) =
            verifier.token(&[("grant_type", "client_credentials"), ("app", "worker")], Some((&key_id, &token))).await;
        if response.status == 200 { Ok(()) } else { Err(format!("{response:?}")) }
    })
    .await;

    // An application not approved gets no access token; the code says why.
    let client_credentials = |app: &'static str| [("grant_type", "client_credentials"), ("app", app)];
    let (response, answer) = verifier.token(&client_credentials("report"), Some((&key_id, &token))).await;
    assert_eq!((response.status, answer["error"].as_str()), (401, Some("invalid_client")), "{answer}");
    assert_eq!(answer["error_description"], "APP_PENDING", "{answer}");
    let (response, _) = verifier.token(&[("grant_type", "client_credentials")], Some((&key_id, &token))).await;
    assert_eq!(response.status, 401, "no app: the default, Pending");

    // The access token carries its application, judged again at each use: a denial later
    // refuses it at once, whatever header the client sends.
    let answer = verifier.exchange(&key_id, &token, &[("app", "worker")]).await;
    let access = answer["access_token"].as_str().unwrap().to_string();
    assert_eq!(jwt_parts(&access).1["keyward"]["app"], "worker");
    assert_eq!(verifier.auth(&access, &[]).await.status, 200);
    ns.patch_spec("gated", json!({"applications": {"default": "Pending", "allowed": [], "denied": ["worker"]}})).await;
    wait_for("the access token of a denied application refused", DEADLINE, || async {
        let bearer = format!("Bearer {access}");
        let answer = verifier.process.auth("/v1/auth", &[("Authorization", &bearer), ("X-Keyward-App", "other")]).await;
        if answer.status == 403 && answer.header("x-keyward-code") == Some("APP_DENIED") {
            Ok(())
        } else {
            Err(format!("{answer:?}"))
        }
    })
    .await;
    let (status, answer) = verifier.refresh(answer["refresh_token"].as_str().unwrap()).await;
    assert_eq!((status, answer["error"].as_str()), (400, Some("invalid_grant")), "{answer}");
    assert_eq!(answer["error_description"], "APP_DENIED", "{answer}");

    // Exchanges and access-token uses are uses of the key, and the applications are seen.
    let usages: kube::Api<keyward::api::KeyUsage> = kube::Api::namespaced(ns.client.clone(), &ns.name);
    let usage = support::wait::wait_object(
        &usages,
        "apikey.gated",
        "worker Denied and report Pending",
        |u| {
            u.and_then(|u| u.status.as_ref()).is_some_and(|s| {
                s.last_used_at.is_some()
                    && s.applications.iter().any(|a| a.name == "worker" && a.state == keyward::api::AppState::Denied)
                    && s.applications.iter().any(|a| a.name == "report" && a.state == keyward::api::AppState::Pending)
            })
        },
        |u| format!("{u:?}"),
    )
    .await;
    assert!(usage.is_some());
}

#[tokio::test]
async fn refresh_gives_a_new_pair_for_the_session_until_deactivation_or_reissue() {
    let ns = TestNamespace::new("exchange-refresh").await;
    let _controller = ns.controller(&[]);
    let (token, key_id) = issued_key(&ns, "ci", json!({"scopes": ["orders.read"]})).await;
    let key = new_key(Timestamp::now());
    write_signing_keys(&ns, std::slice::from_ref(&key)).await;
    let verifier = ExchangeVerifier::start(&ns, &[], &[]).await;
    let first = wait_signing_kid(&verifier, &key_id, &token, &key.kid).await;
    let refresh_token = first["refresh_token"].as_str().unwrap();
    let (header, claims) = jwt_parts(refresh_token);
    assert_eq!(header["typ"], "keyward-rt+jwt");
    assert_eq!(claims["aud"], format!("{}/v1/token", verifier.issuer), "never the access tokens' audience");
    let access_exp = jwt_parts(first["access_token"].as_str().unwrap()).1["exp"].as_i64().unwrap();
    assert_eq!(claims["exp"].as_i64().unwrap(), access_exp + 3_600, "--refresh-grace 1h after the access token");

    let (status, second) = verifier.refresh(refresh_token).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["scope"], "orders.read");
    let second_access = second["access_token"].as_str().unwrap();
    assert_eq!(verifier.auth(second_access, &["orders.read"]).await.status, 200);
    let second_refresh = jwt_parts(second["refresh_token"].as_str().unwrap()).1;
    assert_eq!(second_refresh["sid"], claims["sid"], "the same session");
    assert_eq!(second_refresh["session_end"], claims["session_end"]);
    assert_ne!(second_refresh["jti"], claims["jti"]);

    // Each token of its own typ only.
    let (status, answer) = verifier.refresh(second_access).await;
    assert_eq!((status, answer["error"].as_str()), (400, Some("invalid_grant")), "an access token is no refresh token");
    let as_access = verifier.auth(second["refresh_token"].as_str().unwrap(), &[]).await;
    assert_eq!((as_access.status, as_access.header("x-keyward-code")), (401, Some("NOT_FOUND")));

    // Deactivation refuses the refresh; reactivation lets the session go on.
    ns.patch_spec("ci", json!({"state": "Inactive"})).await;
    let latest = second["refresh_token"].as_str().unwrap().to_string();
    wait_for("the refresh refused as INACTIVE", DEADLINE, || async {
        let (status, answer) = verifier.refresh(&latest).await;
        if status == 400 && answer["error"] == "invalid_grant" && answer["error_description"] == "INACTIVE" {
            Ok(())
        } else {
            Err(answer.to_string())
        }
    })
    .await;
    ns.patch_spec("ci", json!({"state": "Active"})).await;
    wait_for("the refresh good again", DEADLINE, || async { verifier.refresh(&latest).await.0 == 200 }).await;

    // The key's Secret re-issued: a new hash, and the session over.
    let old_hash = ns.keys().get("ci").await.unwrap().status.unwrap().record.token_hash;
    ns.secrets().delete("ci-apikey", &Default::default()).await.expect("delete the key's Secret");
    ns.wait_new_token("ci", &old_hash).await;
    wait_for("the refresh refused after the re-issue", DEADLINE, || async {
        let (status, answer) = verifier.refresh(&latest).await;
        if status == 400 && answer["error"] == "invalid_grant" { Ok(()) } else { Err(answer.to_string()) }
    })
    .await;
    let new_token = ns.token_of("ci-apikey").await;
    assert_eq!(verifier.exchange(&key_id_of(&ns, "ci").await, &new_token, &[]).await["token_type"], "Bearer");
}

async fn key_id_of(ns: &TestNamespace, name: &str) -> String {
    ns.keys().get(name).await.unwrap().status.unwrap().record.key_id.unwrap()
}

#[tokio::test]
async fn a_session_ends_at_session_max_whatever_its_refresh_tokens_say() {
    let ns = TestNamespace::new("exchange-session").await;
    let _controller = ns.controller(&[]);
    let (token, key_id) = issued_key(&ns, "ci", json!({})).await;
    let key = new_key(Timestamp::now());
    write_signing_keys(&ns, std::slice::from_ref(&key)).await;
    let verifier = ExchangeVerifier::start(&ns, &["--session-max", "4s", "--access-token-ttl", "1m"], &[]).await;
    let first = wait_signing_kid(&verifier, &key_id, &token, &key.kid).await;
    let session_end = jwt_parts(first["refresh_token"].as_str().unwrap()).1["session_end"].as_i64().unwrap();
    let iat = jwt_parts(first["access_token"].as_str().unwrap()).1["iat"].as_i64().unwrap();
    assert_eq!(session_end - iat, 4);
    assert!(first["expires_in"].as_i64().unwrap() <= 4, "the access token ends with the session: {first}");
    let (status, answer) = verifier.refresh(first["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{answer}");
    let latest = std::sync::Mutex::new(answer["refresh_token"].as_str().unwrap().to_string());
    let (latest, verifier) = (&latest, &verifier);
    let refused_at = wait_for("the refresh refused at the session's end", Duration::from_secs(15), || async move {
        let current = latest.lock().unwrap().clone();
        let (status, answer) = verifier.refresh(&current).await;
        match status {
            200 => {
                *latest.lock().unwrap() = answer["refresh_token"].as_str().unwrap_or_default().to_string();
                Err("refreshed".to_string())
            }
            _ => Ok((Timestamp::now().as_second(), answer)),
        }
    })
    .await;
    let (at, answer) = refused_at;
    assert_eq!(answer["error"], "invalid_grant", "{answer}");
    assert!(at >= session_end - 1, "refused at {at}, before the session's end {session_end}");
}

#[tokio::test]
async fn an_access_token_is_refused_within_a_second_of_deactivation_and_never_outlives_its_key() {
    let ns = TestNamespace::new("exchange-revoke").await;
    let _controller = ns.controller(&[]);
    let expires_at = Timestamp::now().checked_add(jiff::SignedDuration::from_secs(300)).unwrap();
    let expires_at = Timestamp::from_second(expires_at.as_second()).unwrap();
    let (token, key_id) = issued_key(&ns, "ci", json!({"expiresAt": expires_at.to_string()})).await;
    let key = new_key(Timestamp::now());
    write_signing_keys(&ns, std::slice::from_ref(&key)).await;
    let verifier = ExchangeVerifier::start(&ns, &[], &[]).await;
    let answer = wait_signing_kid(&verifier, &key_id, &token, &key.kid).await;
    let access = answer["access_token"].as_str().unwrap().to_string();
    let exp = jwt_parts(&access).1["exp"].as_i64().unwrap();
    assert!(exp <= expires_at.as_second(), "exp {exp} past the key's expiresAt {expires_at}");
    assert!(answer["expires_in"].as_i64().unwrap() <= 300, "{answer}");
    assert_eq!(verifier.auth(&access, &[]).await.status, 200);
    assert_eq!(verifier.auth(&access, &[]).await.status, 200, "twice: the second from the cache");
    let metrics = verifier.process.metrics().await;
    assert!(sample(&metrics, r#"keyward_verifier_access_token_checks_total{result="hit"}"#).is_some_and(|v| v >= 1.0));
    assert_eq!(
        sample(&metrics, r#"keyward_verifier_access_token_checks_total{result="miss"}"#),
        Some(1.0),
        "{metrics}"
    );

    let (_, verdict) = verifier.process.verify(json!({"token": access})).await;
    assert_eq!(verdict["code"], "VALID", "{verdict}");
    assert_eq!(verdict["key"]["name"], "ci");

    ns.patch_spec("ci", json!({"state": "Inactive"})).await;
    let started = Instant::now();
    let refused = support::wait::wait_for_every(
        "/v1/auth refusing the access token",
        Duration::from_secs(1),
        Duration::from_millis(10),
        || async {
            let response = verifier.auth(&access, &[]).await;
            if response.status == 401 { Ok(response) } else { Err(format!("{response:?}")) }
        },
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    assert_eq!(refused.header("x-keyward-code"), Some("INACTIVE"));
    assert_eq!(refused.header("www-authenticate"), Some("Bearer"));
    assert_eq!(verifier.process.verify_code(&access, &[], None).await, "INACTIVE");

    // Deleted: the UID names nothing.
    ns.delete_key("ci").await;
    wait_for("the access token of a deleted key refused", DEADLINE, || async {
        let code = verifier.process.verify_code(&access, &[], None).await;
        if code == "NOT_FOUND" { Ok(()) } else { Err(code) }
    })
    .await;
}

#[tokio::test]
async fn a_key_set_change_keeps_old_tokens_verifying_and_new_ones_carry_the_new_kid() {
    let ns = TestNamespace::new("exchange-rotation").await;
    let _controller = ns.controller(&[]);
    let (token, key_id) = issued_key(&ns, "ci", json!({})).await;
    let old = new_key(Timestamp::now().checked_sub(jiff::SignedDuration::from_secs(3_600)).unwrap());
    write_signing_keys(&ns, std::slice::from_ref(&old)).await;
    let verifier = ExchangeVerifier::start(&ns, &[], &[]).await;
    let before = wait_signing_kid(&verifier, &key_id, &token, &old.kid).await;
    let old_access = before["access_token"].as_str().unwrap().to_string();
    assert_eq!(verifier.auth(&old_access, &[]).await.status, 200);

    // A second key, current from now: the controller's rotation, done by hand.
    let next = new_key(Timestamp::now());
    write_signing_keys(&ns, &[old.clone(), next.clone()]).await;
    let after = wait_signing_kid(&verifier, &key_id, &token, &next.kid).await;
    assert_eq!(jwt_parts(after["access_token"].as_str().unwrap()).0["kid"], next.kid.as_str());
    assert_eq!(verifier.auth(&old_access, &[]).await.status, 200, "signed by the old key, still good");
    assert_eq!(verifier.auth(after["access_token"].as_str().unwrap(), &[]).await.status, 200);
    let (status, refreshed) = verifier.refresh(before["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "a refresh token of the old key: {refreshed}");
    assert_eq!(jwt_parts(refreshed["access_token"].as_str().unwrap()).0["kid"], next.kid.as_str());
    let (_, jwks) = verifier.process.http_get("/.well-known/jwks.json").await;
    let kids: Vec<String> = serde_json::from_str::<Value>(&jwks).unwrap()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kids, vec![old.kid.clone(), next.kid.clone()]);

    // A Secret that is no key set: refused, counted, and the last good set kept.
    let patch = json!({"data": {signing::DATA_KEY: base64::engine::general_purpose::STANDARD.encode("{not json")}});
    ns.secrets().patch(signing::DEFAULT_SECRET_NAME, &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
    verifier
        .process
        .wait_metric("keyward_verifier_signing_secret_refused_total", "one refused version", |v| v == Some(1.0))
        .await;
    assert_eq!(verifier.auth(&old_access, &[]).await.status, 200);
    wait_signing_kid(&verifier, &key_id, &token, &next.kid).await;

    // A verifier started now (nothing cached) checks the old key's signature itself.
    let fresh = ExchangeVerifier::start_as(&ns, Some(&verifier.issuer), &[], &[]).await;
    write_signing_keys(&ns, &[old.clone(), next.clone()]).await;
    wait_signing_kid(&fresh, &key_id, &token, &next.kid).await;
    assert_eq!(fresh.auth(&old_access, &[]).await.status, 200);
}

/// The kid of an access token.
fn kid_of(answer: &Value) -> String {
    jwt_parts(answer["access_token"].as_str().unwrap_or_default()).0["kid"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn the_controllers_own_rotation_keeps_old_tokens_verifying_and_new_ones_carry_the_new_kid() {
    let ns = TestNamespace::new("exchange-keeper").await;
    // The real keeper, in this namespace: a new key every 8 s, published 4 s before it signs.
    let flags = ["--signing-key-rotation", "8s", "--signing-key-publish-ahead", "4s", "--signing-key-retain", "2m"];
    let _controller = Operator::start(&ns.name, &flags, &[("POD_NAMESPACE", &ns.name)]);
    let (token, key_id) = issued_key(&ns, "ci", json!({})).await;
    let verifier = ExchangeVerifier::start(&ns, &[], &[]).await;
    let exchange = || async {
        let (response, answer) = verifier.token(&[("grant_type", "client_credentials")], Some((&key_id, &token))).await;
        if response.status == 200 { Ok(answer) } else { Err(format!("{response:?}")) }
    };
    let first = wait_for("an access token signed by the controller's first key", DEADLINE, exchange).await;
    let first_kid = kid_of(&first);
    let first_access = first["access_token"].as_str().expect("access token").to_string();
    let second = wait_for("an access token signed by the controller's next key", DEADLINE, || async {
        let answer = exchange().await?;
        if kid_of(&answer) == first_kid { Err(format!("still {first_kid}")) } else { Ok(answer) }
    })
    .await;
    let second_kid = kid_of(&second);
    assert_eq!(verifier.auth(&first_access, &[]).await.status, 200, "signed by the retired key, still good");
    assert_eq!(verifier.auth(second["access_token"].as_str().expect("access token"), &[]).await.status, 200);
    let (status, refreshed) = verifier.refresh(first["refresh_token"].as_str().expect("refresh token")).await;
    assert_eq!(status, 200, "a refresh token of the retired key: {refreshed}");
    let secret = ns.secrets().get(signing::DEFAULT_SECRET_NAME).await.expect("the controller's signing Secret");
    let stored = signing::read_stored(signing::DEFAULT_SECRET_NAME, &secret).expect("a key set");
    let kids: Vec<&str> = stored.keys.iter().map(|key| key.kid.as_str()).collect();
    assert!(kids.contains(&first_kid.as_str()) && kids.contains(&second_kid.as_str()), "{kids:?}");
    let (_, jwks) = verifier.process.http_get("/.well-known/jwks.json").await;
    for kid in [&first_kid, &second_kid] {
        assert!(jwks.contains(kid.as_str()), "{kid} published: {jwks}");
    }
}

#[tokio::test]
async fn hostile_bearer_values_are_clean_refusals() {
    let ns = TestNamespace::new("exchange-hostile").await;
    let _controller = ns.controller(&[]);
    let (token, key_id) = issued_key(&ns, "ci", json!({})).await;
    let key = new_key(Timestamp::now());
    write_signing_keys(&ns, std::slice::from_ref(&key)).await;
    let verifier = ExchangeVerifier::start(&ns, &[], &[]).await;
    let good =
        wait_signing_kid(&verifier, &key_id, &token, &key.kid).await["access_token"].as_str().unwrap().to_string();
    let (head, rest) = good.split_once('.').unwrap();
    let (payload, _) = rest.split_once('.').unwrap();
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!("{}.{payload}.", b64(json!({"alg": "none", "typ": "at+jwt", "kid": key.kid})));
    let foreign = new_key(Timestamp::now());
    let foreign_set = signing::KeySet::from_stored("t", &Stored { keys: vec![foreign] }).unwrap();
    let claims = jwt_parts(&good).1;
    let forged = keyward::exchange::jwt::mint(&foreign_set, Timestamp::now(), "at+jwt", &claims).unwrap().0;
    let forged_under_our_kid = format!("{head}.{}", forged.split_once('.').unwrap().1);
    for (what, bearer, code) in [
        ("alg none", none, "MALFORMED"),
        ("not base64", "a.b.c".to_string(), "MALFORMED"),
        ("huge", format!("{head}.{}.x", "A".repeat(8_000)), "MALFORMED"),
        ("a stranger's key", forged, "NOT_FOUND"),
        ("a stranger's signature under our kid", forged_under_our_kid, "NOT_FOUND"),
    ] {
        let refused = verifier.auth(&bearer, &[]).await;
        assert_eq!((refused.status, refused.header("x-keyward-code")), (401, Some(code)), "{what}: {refused:?}");
    }
    assert_eq!(verifier.auth(&good, &[]).await.status, 200, "still serving");
    let (status, answer) = verifier.refresh("a.b.c").await;
    assert_eq!((status, answer["error"].as_str()), (400, Some("invalid_grant")));
    let big = "x".repeat(20_000);
    let (response, _) = verifier.token(&[("grant_type", "client_credentials"), ("pad", &big)], None).await;
    assert_eq!(response.status, 413);
}

#[tokio::test]
async fn no_private_key_or_token_in_trace_logs_metrics_or_the_jwks() {
    let ns = TestNamespace::new("exchange-secrets").await;
    let _controller = ns.controller(&[]);
    let (token, key_id) = issued_key(&ns, "ci", json!({"scopes": ["orders.read"]})).await;
    let key = new_key(Timestamp::now());
    write_signing_keys(&ns, std::slice::from_ref(&key)).await;
    let verifier = ExchangeVerifier::start(&ns, &[], &[("RUST_LOG", "trace")]).await;
    let answer = wait_signing_kid(&verifier, &key_id, &token, &key.kid).await;
    let access = answer["access_token"].as_str().unwrap().to_string();
    let refresh = answer["refresh_token"].as_str().unwrap().to_string();
    let form =
        [("grant_type", "client_credentials"), ("client_id", key_id.as_str()), ("client_secret", token.as_str())];
    assert_eq!(verifier.token(&form, None).await.0.status, 200);
    assert_eq!(verifier.refresh(&refresh).await.0, 200);
    assert_eq!(verifier.auth(&access, &[]).await.status, 200);
    let (wrong, _) =
        verifier.token(&[("grant_type", "client_credentials")], Some((&key_id, &token[..token.len() - 1]))).await;
    assert_eq!(wrong.status, 401);
    // A Secret it refuses, for the refusal's log line.
    let bad_key = json!({"keys": [{"kid": "wrong", "signsFrom": "2026-01-01T00:00:00Z", "privateKey": key_pem(&key)}]});
    let patch =
        json!({"data": {signing::DATA_KEY: base64::engine::general_purpose::STANDARD.encode(bad_key.to_string())}});
    ns.secrets().patch(signing::DEFAULT_SECRET_NAME, &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
    verifier
        .process
        .wait_metric("keyward_verifier_signing_secret_refused_total", "the refusal", |v| v == Some(1.0))
        .await;

    let metrics = verifier.process.metrics().await;
    let (_, jwks) = verifier.process.http_get("/.well-known/jwks.json").await;
    let logs = verifier.process.logs();
    assert!(logs.contains("TRACE") || logs.contains("trace"), "trace logging was on");
    let pem = key_pem(&key);
    let pem_lines: Vec<&str> = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!pem_lines.is_empty());
    for (place, text) in [("the log", &logs), ("/metrics", &metrics), ("the JWKS", &jwks)] {
        assert!(!text.contains("PRIVATE KEY"), "{place} holds a PEM");
        for line in &pem_lines {
            assert!(!text.contains(line), "{place} holds a line of the private key");
        }
        for (what, secret) in [("the API token", token.as_str()), ("the refresh token", refresh.as_str())] {
            assert!(!text.contains(secret), "{place} holds {what}");
        }
        assert!(!text.contains(&token[3..20]), "{place} holds part of the API token");
    }
    assert!(!metrics.contains(&access) && !logs.contains(&access), "the access token");
}

/// The private key's PEM, as stored (read back from the Secret's document).
fn key_pem(key: &StoredKey) -> String {
    serde_json::to_value(key).unwrap()["privateKey"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_credential_token_exchanges_under_its_own_name_and_its_removal_refuses_its_tokens_at_once() {
    let ns = TestNamespace::new("exchange-credential").await;
    let _controller = ns.controller(&[]);
    ns.create_credential(
        "billing",
        json!({"scopes": ["orders.read"], "tokens": [{"name": "primary"}, {"name": "next"}]}),
    )
    .await;
    let status = ns
        .wait_credential("billing", "two active tokens", |s| {
            s.tokens.len() == 2 && s.tokens.iter().all(|t| t.record.phase == Some(Phase::Active))
        })
        .await;
    let key_id = |name: &str| {
        status.tokens.iter().find(|t| t.name == name).and_then(|t| t.record.key_id.clone()).expect("a key ID")
    };
    let (primary, next) = (ns.token_of("billing-primary").await, ns.token_of("billing-next").await);
    let key = new_key(Timestamp::now());
    write_signing_keys(&ns, std::slice::from_ref(&key)).await;
    let verifier = ExchangeVerifier::start(&ns, &[], &[]).await;
    let answer = wait_signing_kid(&verifier, &key_id("primary"), &primary, &key.kid).await;
    let access = answer["access_token"].as_str().unwrap().to_string();
    let claims = jwt_parts(&access).1;
    assert_eq!(claims["sub"], format!("{}/billing/primary", ns.name));
    assert_eq!(claims["keyward"]["kind"], "Credential");
    assert_eq!(claims["keyward"]["token"], "primary");
    let next_access = verifier.exchange(&key_id("next"), &next, &[("app", "billing-worker")]).await;
    let next_access = next_access["access_token"].as_str().unwrap().to_string();
    assert_eq!(jwt_parts(&next_access).1["keyward"]["app"], "billing-worker");
    let (_, verdict) = verifier.process.verify(json!({"token": access, "scopes": ["orders.read"]})).await;
    assert_eq!((verdict["code"].as_str(), verdict["key"]["token"].as_str()), (Some("VALID"), Some("primary")));

    // One Credential token's key ID is not another's client_id.
    let (response, answer) =
        verifier.token(&[("grant_type", "client_credentials")], Some((&key_id("next"), &primary))).await;
    assert_eq!((response.status, answer["error"].as_str()), (401, Some("invalid_client")));

    ns.set_tokens("billing", json!([{"name": "next"}])).await;
    wait_for("the removed token's access token refused", DEADLINE, || async {
        let code = verifier.process.verify_code(&access, &[], None).await;
        if code == "NOT_FOUND" { Ok(()) } else { Err(code) }
    })
    .await;
    assert_eq!(verifier.auth(&next_access, &["orders.read"]).await.status, 200, "the other token's still good");
}
