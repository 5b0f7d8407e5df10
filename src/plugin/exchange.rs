//! `kubectl apikey exchange`: trades an API token, read from stdin, for a short-lived access
//! token at the verifier's `POST /v1/token` (OAuth 2.0 client credentials, RFC 6749 4.4), for
//! scripts. The token leaves this process only in the Basic header of that one request; what
//! the issuer answers is read as RFC 6749 5.1 and 5.2 say.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;

use super::error::{PluginError, Result};
use super::render::{self, Format};
use super::verify::read_token;
use crate::api::names;
use crate::scope;
use crate::token::Token;

/// `kubectl apikey exchange`.
#[derive(clap::Args, Debug)]
pub struct ExchangeArgs {
    /// The verifier's external URL, as given to `keyward verifier --issuer`; the token endpoint
    /// is URL/v1/token.
    #[arg(long, value_name = "URL", env = "KEYWARD_ISSUER")]
    pub issuer: Option<String>,
    /// Ask for only these scopes (repeat, or space-separate them): each one of the key's own, or
    /// a concrete scope they grant. Without it the access token carries all of the key's.
    #[arg(long = "scope", value_name = "SCOPE")]
    pub scopes: Vec<String>,
    /// The application the access token is for (its `keyward.app` claim).
    #[arg(long, value_name = "NAME")]
    pub app: Option<String>,
    /// Trust only the CA certificates in this PEM file for an https:// issuer, instead of the
    /// system's.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// How long to wait for the issuer's answer.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = crate::duration::parse)]
    pub timeout: Duration,
    /// Print the issuer's whole answer (access token, type, lifetime, scope, refresh token) as
    /// JSON or YAML instead of the bare access token.
    #[arg(short, long, value_enum)]
    pub output: Option<Format>,
}

/// The most of an answer read: far above any token answer, far below harm.
const MAX_ANSWER: usize = 64 * 1024;
/// The most of an issuer's own text (`error_description`) repeated in a message.
const MAX_SHOWN: usize = 300;

pub async fn exchange(args: ExchangeArgs) -> Result<()> {
    let issuer = args.issuer.as_deref().ok_or_else(|| {
        PluginError::Invalid("no issuer: pass --issuer URL (or set KEYWARD_ISSUER), the verifier's --issuer".into())
    })?;
    let endpoint =
        token_endpoint(issuer).map_err(|problem| PluginError::Invalid(format!("--issuer {issuer:?}: {problem}")))?;
    let scopes = requested_scopes(&args.scopes)?;
    if let Some(app) = &args.app {
        names::app_name(app).map_err(|problem| PluginError::Invalid(format!("invalid --app {app:?}: {problem}")))?;
    }
    if endpoint.scheme_str() == Some("http") && !is_loopback(&endpoint) {
        eprintln!("warning: --issuer is http://, so the token crosses the network unencrypted; use https://");
    }
    let tls = client_config(args.ca_file.as_deref())?;
    let text = read_token("exchange")?;
    let token = Token::parse(&text).map_err(|_| {
        PluginError::TokenRefused(Some(
            "the text on stdin is not a Keyward token (wrong format or checksum); nothing was sent".into(),
        ))
    })?;
    drop(text);
    let request = token_request(&endpoint, &token, &scopes, args.app.as_deref())?;
    let (status, body) = send(request, tls, args.timeout, &endpoint).await?;
    let answer = read_answer(status, &body, &endpoint, token.expose())?;
    match args.output {
        Some(format) => render::print_document(&answer.document, format),
        None => render::print_stdout(&format!("{}\n", answer.access_token)),
    }
}

/// `<issuer>/v1/token`, as the verifier's metadata names it: the issuer must be an absolute
/// http(s) URL without query or fragment.
fn token_endpoint(issuer: &str) -> Result<Uri, String> {
    let uri: Uri = issuer.parse().map_err(|e| format!("not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("https" | "http") => {}
        _ => return Err("the issuer must start with https:// (or http://)".into()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("the issuer names no host".into());
    }
    if uri.query().is_some() || issuer.contains('#') {
        return Err("the issuer must have no query or fragment".into());
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err("the issuer must hold no user name or password: the token is the only credential".into());
    }
    let base = issuer.trim_end_matches('/');
    format!("{base}/v1/token").parse().map_err(|e| format!("not a URL: {e}"))
}

fn is_loopback(uri: &Uri) -> bool {
    let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The `--scope` values as one list: each may hold several, space-separated; each must be a
/// scope in form (a key's own may hold wildcards, so those are allowed); duplicates once.
fn requested_scopes(values: &[String]) -> Result<Vec<String>> {
    let mut scopes: Vec<String> = Vec::new();
    for value in values {
        if value.trim().is_empty() {
            return Err(PluginError::Invalid("invalid --scope \"\": name a scope such as orders.read".into()));
        }
        for requested in value.split_whitespace() {
            scope::validate_granted(requested)
                .map_err(|problem| PluginError::Invalid(format!("invalid --scope {requested:?}: {problem}")))?;
            if !scopes.iter().any(|s| s == requested) {
                scopes.push(requested.to_string());
            }
        }
    }
    Ok(scopes)
}

/// `Authorization: Basic base64(urlencode(client_id) ":" urlencode(client_secret))`, each half
/// form-urlencoded first (RFC 6749 2.3.1), marked sensitive so that no `Debug` shows it.
fn basic_authorization(client_id: &str, client_secret: &str) -> HeaderValue {
    use base64::Engine as _;
    let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", encode(client_id), encode(client_secret)));
    // Base64 and "Basic " are visible ASCII, always a valid header value.
    let mut value = HeaderValue::try_from(format!("Basic {credentials}")).expect("base64 is a valid header value");
    value.set_sensitive(true);
    value
}

/// The form: `grant_type=client_credentials`, and `scope` (space-separated) and `app` when
/// given. It holds no secret: the client authenticates in the Basic header.
fn form_body(scopes: &[String], app: Option<&str>) -> String {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "client_credentials");
    if !scopes.is_empty() {
        form.append_pair("scope", &scopes.join(" "));
    }
    if let Some(app) = app {
        form.append_pair("app", app);
    }
    form.finish()
}

/// The whole exchange request; the client ID is the token's key ID.
fn token_request(endpoint: &Uri, token: &Token, scopes: &[String], app: Option<&str>) -> Result<Request<Full<Bytes>>> {
    Request::builder()
        .method(Method::POST)
        .uri(endpoint.clone())
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::ACCEPT, "application/json")
        .header(header::USER_AGENT, concat!("kubectl-apikey/", env!("CARGO_PKG_VERSION")))
        .header(header::AUTHORIZATION, basic_authorization(&token.key_id(), token.expose()))
        .body(Full::new(Bytes::from(form_body(scopes, app))))
        .map_err(|e| PluginError::Other(format!("cannot build the request to {endpoint}: {e}")))
}

/// TLS for an https:// issuer: the system's roots, or only the CAs of `--ca-file`.
fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let problem = |problem: String| PluginError::Invalid(format!("--ca-file {}: {problem}", path.display()));
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| problem(format!("cannot read PEM certificates: {e}")))?;
            if certs.is_empty() {
                return Err(problem("holds no certificate".into()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| problem(format!("not a CA certificate: {e}")))?;
            }
        }
        None => {
            // Unreadable system certificates are skipped: any that load may be the one needed.
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| PluginError::Other(format!("cannot set up TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Sends the request (no redirect is followed: the credentials go to the endpoint named and
/// nowhere else) and reads at most [`MAX_ANSWER`] of the answer.
async fn send(
    request: Request<Full<Bytes>>,
    tls: rustls::ClientConfig,
    timeout: Duration,
    endpoint: &Uri,
) -> Result<(StatusCode, Bytes)> {
    let connector =
        hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let unavailable = |why: String| PluginError::IssuerUnavailable(format!("cannot exchange at {endpoint}: {why}"));
    let exchange = async {
        let response = client.request(request).await.map_err(|e| unavailable(error_chain(&e)))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| unavailable(format!("reading the answer: {e}")))?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| unavailable(format!("no answer within {} (--timeout)", humantime::format_duration(timeout))))?
}

/// An error and its causes, as one line: hyper's own says little ("client error (Connect)").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A successful exchange: the access token, and the whole answer for `-o`.
#[derive(Debug)]
struct Answer {
    access_token: String,
    document: Value,
}

/// Reads the issuer's answer: a `200` JSON object with an `access_token`, or an RFC 6749 5.2
/// error, each refusal its own [`PluginError`]. Text from the issuer is shown cleaned, and never
/// with `token` in it.
fn read_answer(status: StatusCode, body: &[u8], endpoint: &Uri, token: &str) -> Result<Answer> {
    let document: Option<Value> = serde_json::from_slice(body).ok();
    if status == StatusCode::OK {
        let access_token = document.as_ref().and_then(|d| d["access_token"].as_str()).filter(|t| !t.is_empty());
        return match access_token {
            Some(access_token) => {
                Ok(Answer { access_token: access_token.to_string(), document: document.clone().unwrap_or_default() })
            }
            None => Err(PluginError::IssuerUnavailable(format!(
                "{endpoint} answered 200 without an access_token: is --issuer the URL of a Keyward verifier?"
            ))),
        };
    }
    let error = document.as_ref().and_then(|d| d["error"].as_str()).map(|e| shown(e, token));
    let description = document.as_ref().and_then(|d| d["error_description"].as_str()).map(|d| shown(d, token));
    let detail = match &description {
        Some(description) if !description.is_empty() => format!(": {description}"),
        _ => String::new(),
    };
    match error.as_deref() {
        Some("invalid_client") => Err(PluginError::TokenRefused(Some(format!(
            "the issuer refused the token (invalid_client{detail}); `kubectl apikey verify` says why"
        )))),
        Some("temporarily_unavailable") => Err(PluginError::IssuerUnavailable(format!(
            "the issuer cannot issue access tokens yet (temporarily_unavailable{detail}); try again later"
        ))),
        Some(error) if status.is_client_error() => {
            Err(PluginError::ExchangeRefused(format!("the issuer refused the exchange: {error}{detail}")))
        }
        _ if status == StatusCode::NOT_FOUND => Err(PluginError::IssuerUnavailable(format!(
            "{endpoint} answered 404: is the verifier started with --issuer, and is this its URL?"
        ))),
        _ => Err(PluginError::IssuerUnavailable(format!(
            "{endpoint} answered {status}{}",
            error.map(|e| format!(" ({e}{detail})")).unwrap_or_default()
        ))),
    }
}

/// An issuer's text fit for one line on a terminal: control characters dropped, at most
/// [`MAX_SHOWN`] characters, and the token (should an issuer echo it) replaced.
fn shown(text: &str, token: &str) -> String {
    let text = if token.is_empty() { text.to_string() } else { text.replace(token, "[redacted]") };
    let mut out: String = text.chars().filter(|c| !c.is_control()).take(MAX_SHOWN).collect();
    if text.chars().filter(|c| !c.is_control()).count() > MAX_SHOWN {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "kw_zt0w61pRs2Hk8QmWcV4bTn3YxLfG2dJ0aE7u";

    fn endpoint() -> Uri {
        token_endpoint("https://keys.example.com").unwrap()
    }

    #[test]
    fn basic_credentials_are_form_urlencoded_before_base64() {
        // Vector from Python: base64(quote_plus(id) + ":" + quote_plus(secret)).
        let value = basic_authorization("kw_ab:c d", "p%w&=+/é");
        assert_eq!(value.to_str().unwrap(), "Basic a3dfYWIlM0FjK2Q6cCUyNXclMjYlM0QlMkIlMkYlQzMlQTk=");
        assert!(value.is_sensitive());
        assert!(!format!("{value:?}").contains("a3df"), "Debug shows the credentials");
    }

    #[test]
    fn the_request_names_the_key_id_and_holds_the_token_only_in_the_basic_header() {
        let token = Token::generate("kw");
        let scopes = vec!["orders.read".to_string(), "deploy.prod.write".to_string()];
        let request = token_request(&endpoint(), &token, &scopes, Some("billing")).unwrap();
        assert_eq!(request.method(), Method::POST);
        assert_eq!(request.uri(), "https://keys.example.com/v1/token");
        assert_eq!(request.headers()[header::CONTENT_TYPE], "application/x-www-form-urlencoded");
        let expected = basic_authorization(&token.key_id(), token.expose());
        assert_eq!(request.headers()[header::AUTHORIZATION], expected);
        assert!(!format!("{request:?}").contains(token.expose()), "Debug shows the token");
        assert_eq!(
            form_body(&scopes, Some("billing")),
            "grant_type=client_credentials&scope=orders.read+deploy.prod.write&app=billing"
        );
        assert_eq!(form_body(&[], None), "grant_type=client_credentials");
    }

    #[test]
    fn the_endpoint_is_below_the_issuer() {
        for (issuer, endpoint) in [
            ("https://keys.example.com", "https://keys.example.com/v1/token"),
            ("https://keys.example.com/", "https://keys.example.com/v1/token"),
            ("https://example.com/keyward/", "https://example.com/keyward/v1/token"),
            ("http://127.0.0.1:8081", "http://127.0.0.1:8081/v1/token"),
        ] {
            assert_eq!(token_endpoint(issuer).unwrap(), endpoint, "{issuer}");
        }
        for bad in [
            "keys.example.com",
            "ftp://keys.example.com",
            "https://",
            "https://k.example/?a=b",
            "https://k.example/#x",
            "https://u:p@k.example",
            "",
        ] {
            assert!(token_endpoint(bad).is_err(), "{bad:?}");
        }
        assert!(is_loopback(&token_endpoint("http://127.0.0.1:1").unwrap()));
        assert!(is_loopback(&token_endpoint("http://[::1]:1").unwrap()));
        assert!(is_loopback(&token_endpoint("http://localhost:1").unwrap()));
        assert!(!is_loopback(&token_endpoint("http://10.0.0.1").unwrap()));
    }

    #[test]
    fn scopes_may_be_repeated_or_space_separated_and_are_checked() {
        let values = ["orders.read deploy.>".to_string(), "orders.read".to_string(), "billing.*".to_string()];
        assert_eq!(requested_scopes(&values).unwrap(), ["orders.read", "deploy.>", "billing.*"]);
        for bad in ["", " ", "orders..read", "orders.read,deploy"] {
            let error = requested_scopes(&[bad.to_string()]).unwrap_err();
            assert_eq!(error.exit_code(), 2, "{bad:?}");
            assert!(error.to_string().contains("--scope"), "{error}");
        }
    }

    #[test]
    fn a_good_answer_gives_the_access_token_and_the_whole_document() {
        let body = br#"{"access_token":"eyJ.a.b","token_type":"Bearer","expires_in":900,"scope":"orders.read","refresh_token":"eyJ.c.d"}"#;
        let answer = read_answer(StatusCode::OK, body, &endpoint(), TOKEN).unwrap();
        assert_eq!(answer.access_token, "eyJ.a.b");
        assert_eq!(answer.document["refresh_token"], "eyJ.c.d");
        assert_eq!(answer.document["expires_in"], 900);
        for bad in [&br#"{"token_type":"Bearer"}"#[..], br#"{"access_token":""}"#, b"<html>", b""] {
            let error = read_answer(StatusCode::OK, bad, &endpoint(), TOKEN).unwrap_err();
            assert_eq!(error.exit_code(), 12, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn each_refusal_has_its_exit_code_and_says_error_and_description() {
        let cases: [(u16, &str, u8, &[&str]); 7] = [
            (401, r#"{"error":"invalid_client","error_description":"INACTIVE"}"#, 10, &["invalid_client", "INACTIVE"]),
            (
                400,
                r#"{"error":"invalid_scope","error_description":"payments.write is not granted"}"#,
                11,
                &["invalid_scope", "payments.write is not granted"],
            ),
            (400, r#"{"error":"invalid_request"}"#, 11, &["invalid_request"]),
            (400, r#"{"error":"unsupported_grant_type"}"#, 11, &["unsupported_grant_type"]),
            (
                503,
                r#"{"error":"temporarily_unavailable","error_description":"no signing keys yet"}"#,
                12,
                &["temporarily_unavailable", "no signing keys yet", "try again"],
            ),
            (404, "", 12, &["404", "--issuer"]),
            (502, "<html>bad gateway</html>", 12, &["502"]),
        ];
        for (status, body, code, says) in cases {
            let error =
                read_answer(StatusCode::from_u16(status).unwrap(), body.as_bytes(), &endpoint(), TOKEN).unwrap_err();
            assert_eq!(error.exit_code(), code, "{status} {body}: {error}");
            for part in says {
                assert!(error.to_string().contains(part), "{status} {body}: {error} lacks {part:?}");
            }
        }
    }

    #[test]
    fn an_issuers_text_is_cleaned_and_never_repeats_the_token() {
        let body =
            format!(r#"{{"error":"invalid_client","error_description":"bad {TOKEN}\u001b[2J{}"}}"#, "x".repeat(1000));
        let error = read_answer(StatusCode::UNAUTHORIZED, body.as_bytes(), &endpoint(), TOKEN).unwrap_err().to_string();
        assert!(!error.contains(TOKEN) && error.contains("[redacted]"), "{error}");
        assert!(!error.contains('\u{1b}'), "{error}");
        assert!(error.len() < 2 * MAX_SHOWN, "{error}");
    }

    #[test]
    fn a_ca_file_must_hold_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let error = client_config(Some(&empty)).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert!(error.to_string().contains("--ca-file"), "{error}");
        assert!(client_config(Some(&dir.path().join("missing.pem"))).is_err());
        assert!(client_config(None).is_ok());
    }
}
