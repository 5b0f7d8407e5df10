//! Verifier behaviours on the real API server: the controller issues real tokens into Secrets,
//! the test reads them there and asks the `keyward verifier` process about them.

mod support;

use std::time::Duration;

use keyward::api::Phase;
use serde_json::json;
use support::{DEADLINE, Operator, TestNamespace};

/// An issued ApiKey and its token, read from its Secret.
async fn issued_key(ns: &TestNamespace, name: &str, spec: serde_json::Value) -> String {
    ns.create_key(name, spec).await;
    ns.wait_phase(name, Phase::Active).await;
    ns.token_of(&format!("{name}-apikey")).await
}

#[tokio::test]
async fn a_good_token_is_valid_and_names_its_key_and_scopes() {
    let ns = TestNamespace::new("verify-valid").await;
    let _controller = ns.controller(&[]);
    let token = issued_key(&ns, "ci-deploy", json!({"scopes": ["orders.read", "deploy.>"]})).await;
    let verifier = ns.verifier(&[]).await;

    let (status, answer) =
        verifier.verify(json!({"token": token, "scopes": ["orders.read", "deploy.prod.write"]})).await;
    assert_eq!(status, 200);
    assert_eq!(answer["valid"], true, "{answer}");
    assert_eq!(answer["code"], "VALID");
    let key = &answer["key"];
    let status = ns.keys().get("ci-deploy").await.expect("get").status.expect("status");
    assert_eq!(key["kind"], "ApiKey");
    assert_eq!(key["namespace"], ns.name.as_str());
    assert_eq!(key["name"], "ci-deploy");
    assert_eq!(key["token"], serde_json::Value::Null);
    assert_eq!(key["keyId"], status.record.key_id.as_deref().expect("keyId"));
    assert_eq!(key["scopes"], json!(["orders.read", "deploy.>"]));
    assert_eq!(key["expiresAt"], status.record.expires_at.expect("expiresAt").0.to_string());

    assert_eq!(verifier.verify_code(&token, &["orders.write"], None).await, "INSUFFICIENT_SCOPE");
    assert_eq!(verifier.verify_code(&token, &["deploy"], None).await, "INSUFFICIENT_SCOPE", "'>' needs a segment");
    assert_eq!(verifier.verify_code(keyward::token::Token::generate("kw").expose(), &[], None).await, "NOT_FOUND");
    let mut typo = token.clone();
    typo.pop();
    typo.push(if token.ends_with('a') { 'b' } else { 'a' });
    assert_eq!(verifier.verify_code(&typo, &[], None).await, "MALFORMED", "the checksum catches a typo");
    let (_, answer) = verifier.verify(json!({"token": typo})).await;
    assert!(answer.get("key").is_none(), "no key for a malformed token: {answer}");
}

#[tokio::test]
async fn forward_auth_answers_with_status_and_headers() {
    let ns = TestNamespace::new("verify-auth").await;
    let _controller = ns.controller(&[]);
    let token = issued_key(&ns, "gateway", json!({"scopes": ["orders.*"]})).await;
    let verifier = ns.verifier(&[]).await;
    let bearer = format!("Bearer {token}");

    let ok = verifier.auth("/v1/auth?scope=orders.read", &[("Authorization", &bearer)]).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.header("x-keyward-key"), Some(format!("{}/gateway", ns.name).as_str()));
    let key_id = ok.header("x-keyward-key-id").expect("a key id header");
    assert!(token.starts_with(key_id) && key_id.len() == "kw_".len() + 8, "{key_id}");
    assert_eq!(ok.header("x-keyward-scopes"), Some("orders.*"));
    for header in ["X-Api-Key", "ApiKey"] {
        assert_eq!(verifier.auth("/v1/auth", &[(header, &token)]).await.status, 200, "token in {header}");
    }
    // Envoy's ext_authz sends the original method and path after the prefix.
    assert_eq!(verifier.auth("/v1/auth/orders/42?scope=orders.read", &[("X-Api-Key", &token)]).await.status, 200);
    // The original request for "/", and one of another method; a neighbour of the prefix is not it.
    assert_eq!(verifier.auth("/v1/auth/?scope=orders.read", &[("X-Api-Key", &token)]).await.status, 200);
    let addr = verifier.listen_addr().await;
    let post =
        format!("POST /v1/auth/orders HTTP/1.1\r\nHost: {addr}\r\nX-Api-Key: {token}\r\nContent-Length: 2\r\n\r\n{{}}");
    let posted = support::http::http(&addr, post.as_bytes()).await;
    assert_eq!((posted.status, posted.header("x-keyward-code")), (200, Some("VALID")), "{posted:?}");
    assert_eq!(verifier.auth("/v1/authz", &[("X-Api-Key", &token)]).await.status, 404);
    // HEAD: the answer without a body, its length stated as a GET's would be.
    let head = format!("HEAD /v1/auth HTTP/1.1\r\nHost: {addr}\r\nX-Api-Key: {token}\r\n\r\n");
    let head = support::http::http(&addr, head.as_bytes()).await;
    assert_eq!((head.status, head.header("content-length"), head.body.as_str()), (200, Some("0"), ""), "{head:?}");
    // A body sent to /v1/auth is passed over, and the connection serves the next request.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let request = |method: &str, body: &str, last: &str| {
            format!(
                "{method} /v1/auth HTTP/1.1\r\nHost: {addr}\r\nX-Api-Key: {token}\r\nContent-Length: {}\r\n{last}\r\n{body}",
                body.len()
            )
        };
        let both = request("POST", r#"{"ignored": true}"#, "") + &request("GET", "", "Connection: close\r\n");
        let mut stream = tokio::net::TcpStream::connect(&addr).await.expect("connect");
        stream.write_all(both.as_bytes()).await.expect("write");
        let mut answers = String::new();
        tokio::time::timeout(DEADLINE, stream.read_to_string(&mut answers)).await.expect("in time").expect("read");
        assert_eq!(answers.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{answers}");
    }

    let scoped = verifier.auth("/v1/auth?scope=orders.read&scope=orders.read.all", &[("Authorization", &bearer)]).await;
    assert_eq!(scoped.status, 403, "'*' is one segment: {scoped:?}");
    assert_eq!(scoped.header("x-keyward-code"), Some("INSUFFICIENT_SCOPE"));
    assert_eq!(scoped.header("x-keyward-key"), None, "no identity on a refusal");

    for (what, headers) in [
        ("no token", vec![]),
        ("an unknown token", vec![("X-Api-Key", keyward::token::Token::generate("kw").expose().to_string())]),
        ("a malformed token", vec![("Authorization", "Bearer kw_nope".to_string())]),
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let refused = verifier.auth("/v1/auth", &headers).await;
        assert_eq!(refused.status, 401, "{what}: {refused:?}");
        assert_eq!(refused.header("www-authenticate"), Some("Bearer"), "{what}");
    }
}

#[tokio::test]
async fn allowed_cidrs_use_the_client_address_and_trusted_proxies_only() {
    let ns = TestNamespace::new("verify-cidr").await;
    let _controller = ns.controller(&[]);
    let token = issued_key(&ns, "office", json!({"allowedCIDRs": ["10.0.0.0/8", "2001:db8::/32"]})).await;
    let verifier = ns.verifier(&["--trusted-proxies", "127.0.0.1/32"]).await;

    assert_eq!(verifier.verify_code(&token, &[], Some("10.1.2.3")).await, "VALID");
    assert_eq!(verifier.verify_code(&token, &[], Some("2001:db8::7")).await, "VALID");
    assert_eq!(verifier.verify_code(&token, &[], Some("192.0.2.1")).await, "IP_NOT_ALLOWED");
    assert_eq!(verifier.verify_code(&token, &[], None).await, "IP_NOT_ALLOWED", "no address given, none allowed");

    let from = |xff: &'static str| [("X-Api-Key", token.clone()), ("X-Forwarded-For", xff.to_string())];
    let through_proxy = from("10.9.8.7, 127.0.0.1");
    let through: Vec<(&str, &str)> = through_proxy.iter().map(|(n, v)| (*n, v.as_str())).collect();
    assert_eq!(verifier.auth("/v1/auth", &through).await.status, 200, "the first entry, from a trusted proxy");
    let outside = from("192.0.2.1");
    let outside: Vec<(&str, &str)> = outside.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let refused = verifier.auth("/v1/auth", &outside).await;
    assert_eq!((refused.status, refused.header("x-keyward-code")), (403, Some("IP_NOT_ALLOWED")));

    // Without trusting the proxy, X-Forwarded-For is the client's own claim and is ignored.
    let untrusting = ns.verifier(&[]).await;
    let spoofed = untrusting.auth("/v1/auth", &through).await;
    assert_eq!(spoofed.status, 403, "the peer 127.0.0.1 is not allowed: {spoofed:?}");
}

#[tokio::test]
async fn a_key_turned_inactive_is_refused_and_can_be_reactivated() {
    let ns = TestNamespace::new("verify-inactive").await;
    let _controller = ns.controller(&[]);
    let token = issued_key(&ns, "toggle", json!({})).await;
    let verifier = ns.verifier(&[]).await;
    assert_eq!(verifier.verify_code(&token, &[], None).await, "VALID");

    ns.patch_spec("toggle", json!({"state": "Inactive"})).await;
    verifier.wait_code(&token, "INACTIVE", DEADLINE).await;
    let refused = verifier.auth("/v1/auth", &[("X-Api-Key", &token)]).await;
    assert_eq!((refused.status, refused.header("x-keyward-code")), (401, Some("INACTIVE")));

    ns.patch_spec("toggle", json!({"state": "Active"})).await;
    verifier.wait_code(&token, "VALID", DEADLINE).await;
}

#[tokio::test]
async fn a_key_is_expired_at_its_expiry_second_without_the_controller() {
    let ns = TestNamespace::new("verify-expiry").await;
    let mut controller = ns.controller(&[]);
    let expires_at = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() + 4).expect("a time");
    let token = issued_key(&ns, "brief", json!({"expiresAt": expires_at.to_string()})).await;
    let verifier = ns.verifier(&[]).await;
    assert_eq!(verifier.verify_code(&token, &[], None).await, "VALID");
    // Nobody is left to delete the Secret or mark the key Expired: the verifier judges alone.
    controller.kill().await;

    let until_expiry = expires_at.duration_since(jiff::Timestamp::now());
    if until_expiry.is_positive() {
        tokio::time::sleep(until_expiry.unsigned_abs()).await;
    }
    assert_eq!(verifier.verify_code(&token, &[], None).await, "EXPIRED");
    let refused = verifier.auth("/v1/auth", &[("X-Api-Key", &token)]).await;
    assert_eq!((refused.status, refused.header("x-keyward-code")), (401, Some("EXPIRED")));
    let key = ns.keys().get("brief").await.expect("get");
    assert_eq!(key.status.and_then(|s| s.record.phase), Some(Phase::Active), "the controller never saw the expiry");
    assert!(ns.secrets().get_opt("brief-apikey").await.expect("get").is_some(), "the Secret is still there");
}

#[tokio::test]
async fn a_deleted_key_is_not_found_within_a_second() {
    let ns = TestNamespace::new("verify-delete").await;
    let _controller = ns.controller(&[]);
    let token = issued_key(&ns, "doomed", json!({})).await;
    let verifier = ns.verifier(&[]).await;
    assert_eq!(verifier.verify_code(&token, &[], None).await, "VALID");
    ns.delete_key("doomed").await;
    let took = verifier.wait_code(&token, "NOT_FOUND", Duration::from_secs(1)).await;
    eprintln!("NOT_FOUND {took:?} after the delete returned");
}

/// Waits until a verifier metric is `want`, or fails at the deadline.
async fn wait_metric(verifier: &Operator, series: &str, want: f64) {
    verifier.wait_metric(series, &format!("{want}"), |found| found == Some(want)).await;
}

#[tokio::test]
async fn a_hash_two_keys_claim_is_refused_for_both_logged_and_counted() {
    use kube::api::{Patch, PatchParams};
    let ns = TestNamespace::new("verify-shared-hash").await;
    let mut controller = ns.controller(&[]);
    let genuine = issued_key(&ns, "genuine", json!({})).await;
    let other = issued_key(&ns, "other", json!({})).await;
    // Only someone who may write status can do this; the controller, which would not, is away.
    controller.kill().await;
    let verifier = ns.verifier(&[]).await;
    assert_eq!(verifier.verify_code(&genuine, &[], None).await, "VALID");
    let hash = |token: &str| keyward::token::TokenHash::of(token.as_bytes()).to_string();
    let claim = |token: String| {
        let keys = ns.keys();
        async move {
            keys.patch_status("other", &PatchParams::default(), &Patch::Merge(json!({"status": {"tokenHash": token}})))
                .await
                .expect("write other's status")
        }
    };
    claim(hash(&genuine)).await;
    verifier.wait_code(&genuine, "NOT_FOUND", DEADLINE).await;
    wait_metric(&verifier, "keyward_verifier_shared_token_hashes", 1.0).await;
    assert!(verifier.logs().contains("two keys claim the same token hash"), "{}", verifier.logs());
    assert!(!verifier.logs().contains(&genuine), "the log holds the token");

    claim(hash(&other)).await;
    verifier.wait_code(&genuine, "VALID", DEADLINE).await;
    assert_eq!(verifier.verify_code(&other, &[], None).await, "VALID");
    wait_metric(&verifier, "keyward_verifier_shared_token_hashes", 0.0).await;
}

#[tokio::test]
async fn credential_tokens_verify_by_name_and_a_removed_token_is_refused_at_once() {
    let ns = TestNamespace::new("verify-cred").await;
    let _controller = ns.controller(&[]);
    ns.create_credential(
        "billing",
        json!({"scopes": ["orders.read"], "tokens": [{"name": "primary"}, {"name": "next"}]}),
    )
    .await;
    ns.wait_credential("billing", "two active tokens", |s| s.active_tokens == Some(2)).await;
    let primary = ns.token_of("billing-primary").await;
    let next = ns.token_of("billing-next").await;
    let verifier = ns.verifier(&[]).await;
    for (name, token) in [("primary", &primary), ("next", &next)] {
        let (_, answer) = verifier.verify(json!({"token": token, "scopes": ["orders.read"]})).await;
        assert_eq!(answer["code"], "VALID", "{answer}");
        assert_eq!(answer["key"]["kind"], "Credential");
        assert_eq!(answer["key"]["name"], "billing");
        assert_eq!(answer["key"]["token"], name);
    }
    assert_eq!(verifier.verify_code(&next, &["orders.write"], None).await, "INSUFFICIENT_SCOPE");

    ns.set_tokens("billing", json!([{"name": "next"}])).await;
    verifier.wait_code(&primary, "NOT_FOUND", DEADLINE).await;
    assert_eq!(verifier.verify_code(&next, &[], None).await, "VALID");

    ns.credentials()
        .patch(
            "billing",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"state": "Inactive"}})),
        )
        .await
        .expect("deactivate");
    verifier.wait_code(&next, "INACTIVE", DEADLINE).await;
}

#[tokio::test]
async fn hostile_requests_get_clean_answers_and_the_verifier_stays_up() {
    let ns = TestNamespace::new("verify-hostile").await;
    let _controller = ns.controller(&[]);
    let token = issued_key(&ns, "sturdy", json!({"scopes": ["orders.read"]})).await;
    let verifier = ns.verifier(&[]).await;
    let addr = verifier.listen_addr().await;
    let post = |body: &[u8]| {
        let mut request =
            format!("POST /v1/verify HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        request.extend_from_slice(body);
        request
    };

    let huge_header = format!("GET /v1/auth HTTP/1.1\r\nHost: x\r\nX-Api-Key: {}\r\n\r\n", "a".repeat(64 * 1024));
    assert_eq!(support::http(&addr, huge_header.as_bytes()).await.status, 431);
    let many_headers: String = (0..200).map(|i| format!("X-Filler-{i}: {i}\r\n")).collect();
    let many_headers = format!("GET /v1/auth HTTP/1.1\r\nHost: x\r\n{many_headers}\r\n");
    assert_eq!(support::http(&addr, many_headers.as_bytes()).await.status, 431);
    // Above the verifier's limit of 64 but below hyper's own of 100.
    let some_too_many: String = (0..70).map(|i| format!("X-Filler-{i}: {i}\r\n")).collect();
    let some_too_many = format!("GET /v1/auth HTTP/1.1\r\nHost: x\r\n{some_too_many}\r\n");
    assert_eq!(support::http(&addr, some_too_many.as_bytes()).await.status, 431);
    let huge_body = format!(r#"{{"token": "{token}", "scopes": ["{}"]}}"#, "a".repeat(1024 * 1024));
    assert_eq!(support::http(&addr, &post(huge_body.as_bytes())).await.status, 413);
    let chunked = format!(
        "POST /v1/verify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{}0\r\n\r\n",
        format!("4000\r\n{}\r\n", "a".repeat(0x4000)).repeat(4)
    );
    assert_eq!(support::http(&addr, chunked.as_bytes()).await.status, 413, "a body without a length is cut off too");

    let many_scopes: Vec<String> = (0..10_000).map(|i| format!("s{i}")).collect();
    let many_scopes = serde_json::to_vec(&json!({"token": token, "scopes": many_scopes[..1000]})).expect("json");
    for (what, body) in [
        ("not JSON", b"{\"token\": ".to_vec()),
        ("invalid UTF-8", b"{\"token\": \"\xff\xfe\"}".to_vec()),
        ("not an object", b"[\"kw_x\"]".to_vec()),
        ("a number for a token", b"{\"token\": 7}".to_vec()),
        ("an unknown field", format!(r#"{{"token": "{token}", "scope": "admin"}}"#).into_bytes()),
        ("the token as a field name", format!(r#"{{"{token}": 1}}"#).into_bytes()),
        ("the token as a field name beside a token", format!(r#"{{"token": "kw_x", "{token}": 1}}"#).into_bytes()),
        ("a wildcard in a required scope", format!(r#"{{"token": "{token}", "scopes": ["orders.*"]}}"#).into_bytes()),
        ("too many scopes", many_scopes),
        ("deep nesting", format!(r#"{{"token": {}{}}}"#, "[".repeat(5_000), "]".repeat(5_000)).into_bytes()),
    ] {
        let answer = support::http(&addr, &post(&body)).await;
        assert_eq!(answer.status, 400, "{what}: {answer:?}");
        let error: serde_json::Value = serde_json::from_str(&answer.body).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(error["error"].is_string(), "{what}: {error}");
        assert!(!answer.body.contains(&token), "{what}: the answer repeats the token");
    }
    let query: String = (0..100).map(|i| format!("scope=s{i}&")).collect();
    assert_eq!(verifier.auth(&format!("/v1/auth?{query}"), &[("X-Api-Key", &token)]).await.status, 400);
    let invalid_utf8 = b"GET /v1/auth HTTP/1.1\r\nHost: x\r\nX-Api-Key: \xff\xfe\xfd\r\n\r\n";
    assert_eq!(support::http(&addr, invalid_utf8).await.status, 401);
    assert_eq!(support::http(&addr, b"BREW /v1/verify HTTP/1.1\r\nHost: x\r\n\r\n").await.status, 405);
    assert_eq!(support::http(&addr, b"\x16\x03\x01 garbage\r\n\r\n").await.status, 400);

    assert_eq!(verifier.verify_code(&token, &["orders.read"], None).await, "VALID", "still answering");
}

#[tokio::test]
async fn the_token_never_reaches_logs_or_metrics() {
    let ns = TestNamespace::new("verify-secrecy").await;
    let _controller = ns.controller(&[]);
    let token = issued_key(&ns, "quiet", json!({"scopes": ["orders.read"]})).await;
    let verifier = Operator::run("verifier", &ns.name, &["--log-format", "json"], &[("RUST_LOG", "trace")]);
    verifier.wait_ready().await;
    let bearer = format!("Bearer {token}");
    for scopes in [&["orders.read"][..], &["orders.write"]] {
        verifier.verify_code(&token, scopes, None).await;
    }
    verifier.auth("/v1/auth?scope=orders.read", &[("Authorization", &bearer)]).await;
    verifier.auth("/v1/auth", &[("X-Api-Key", &token), ("X-Forwarded-For", &token)]).await;
    verifier.verify(json!({"token": token, "ip": token})).await;
    let mut token_as_field = serde_json::Map::new();
    token_as_field.insert(token.clone(), json!(1));
    verifier.verify(serde_json::Value::Object(token_as_field)).await;

    let (_, metrics) = verifier.http_get("/metrics").await;
    assert!(metrics.contains(r#"keyward_verifier_requests_total{endpoint="verify",code="VALID"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"code="INSUFFICIENT_SCOPE""#), "{metrics}");
    assert!(metrics.contains("keyward_verifier_indexed_tokens 1"), "{metrics}");
    assert!(!metrics.contains(&token), "the token is in /metrics");
    let logs = verifier.logs();
    assert!(logs.contains("verified"), "trace logging shows each verdict:\n{logs}");
    assert!(!logs.contains(&token), "the token is in the verifier's trace logs");
    assert!(!logs.contains(&token[token.len() - 12..]), "part of the token is in the verifier's logs");
}
