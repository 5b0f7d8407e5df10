//! The verifier's HTTP API: `POST /v1/verify` for services (JSON in, JSON out) and `/v1/auth`
//! for forward-auth proxies (headers in, status and headers out).
//!
//! Neither logs, echoes nor counts the presented token: only the verdict and the public key ID.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::future::Either;
use hyper::body::Incoming;
use ipnet::IpNet;
use serde_json::Value;

use super::Verifier;
use super::metrics::{Answered, Endpoint};
use crate::http::{MAX_BODY_BYTES, Respond};
use crate::judge::{Answer, Code, Request, Verdict};
use crate::scope;

/// Most required scopes one request may name.
pub const MAX_SCOPES: usize = 64;

const X_KEYWARD_KEY: HeaderName = HeaderName::from_static("x-keyward-key");
const X_KEYWARD_KEY_ID: HeaderName = HeaderName::from_static("x-keyward-key-id");
const X_KEYWARD_SCOPES: HeaderName = HeaderName::from_static("x-keyward-scopes");
/// The verdict's code on every `/v1/auth` answer, for people reading proxy logs.
const X_KEYWARD_CODE: HeaderName = HeaderName::from_static("x-keyward-code");
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
const API_KEY: HeaderName = HeaderName::from_static("apikey");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// The application a `/v1/auth` request names.
const X_KEYWARD_APP: HeaderName = HeaderName::from_static("x-keyward-app");

/// The routed part of the verifier's API: `POST /v1/verify`. `/v1/auth` is answered by
/// [`Server`] before any routing, so a route added here at or below `/v1/auth` is never reached.
pub fn routes(verifier: Arc<Verifier>) -> Router {
    Router::new()
        .route("/v1/verify", post(verify_json).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)))
        .with_state(verifier)
}

/// The verifier's server: `/v1/auth`, at any method and any path below it (Envoy's ext_authz
/// sends the original request's method and path after the prefix), judged at once; every other
/// request goes to `router`. `/v1/auth` is what a gateway asks on every request it forwards:
/// the router's matching and the request's extensions map were a sixth of its instructions
/// (callgrind), for a choice a prefix makes.
#[derive(Clone)]
pub struct Server {
    verifier: Arc<Verifier>,
    router: Router,
}

impl Server {
    pub fn new(verifier: Arc<Verifier>, router: Router) -> Self {
        Self { verifier, router }
    }
}

impl Respond for Server {
    fn respond(
        &self,
        request: hyper::Request<Incoming>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response> + Send + use<> {
        if !is_forward_auth(request.uri().path()) {
            return Either::Right(self.router.respond(request, peer));
        }
        let started = Instant::now();
        let (answered, mut response) = judge_forwarded(&self.verifier, peer, request.uri(), request.headers());
        if request.method() == Method::HEAD && response.status() == StatusCode::OK {
            // hyper states no length for a HEAD answer without a body: say what a GET's is.
            response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        }
        self.verifier.metrics.observe(Endpoint::Auth, answered, started.elapsed());
        Either::Left(std::future::ready(response))
    }
}

/// `/v1/auth`, or a path below it.
fn is_forward_auth(path: &str) -> bool {
    path.strip_prefix("/v1/auth").is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The body of `POST /v1/verify`.
#[derive(Debug, PartialEq)]
struct VerifyRequest {
    token: String,
    scopes: Vec<String>,
    ip: Option<IpAddr>,
    app: Option<String>,
}

impl VerifyRequest {
    /// Reads the body field by field, so that an error names the field and never repeats a
    /// value (which may be a token). Unknown fields are refused: a misspelt `scope` must not
    /// silently verify without the scope.
    fn parse(body: &[u8]) -> Result<Self, String> {
        let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
            return Err(r#"the body must be a JSON object such as {"token": "...", "scopes": ["orders.read"], "ip": "10.1.2.3", "app": "billing-worker"}"#.into());
        };
        let mut request = VerifyRequest { token: String::new(), scopes: Vec::new(), ip: None, app: None };
        let mut has_token = false;
        for (field, value) in fields {
            match (field.as_str(), value) {
                ("token", Value::String(token)) => (request.token, has_token) = (token, true),
                ("token", _) => return Err("token must be a string".into()),
                ("scopes", Value::Array(scopes)) => {
                    request.scopes = required_scopes(scopes.into_iter().map(|s| match s {
                        Value::String(s) => Ok(s),
                        _ => Err(()),
                    }))?
                }
                ("scopes", Value::Null) => {}
                ("scopes", _) => return Err("scopes must be a list of strings".into()),
                ("ip", Value::String(ip)) => {
                    let ip = ip.parse::<IpAddr>().map_err(|_| "ip must be an IPv4 or IPv6 address".to_string())?;
                    request.ip = Some(ip);
                }
                ("ip", Value::Null) => {}
                ("ip", _) => return Err("ip must be a string".into()),
                ("app", Value::String(app)) => {
                    // The problem only: the value may be anything, a token included.
                    crate::api::names::app_name(&app).map_err(|problem| format!("app: {problem}"))?;
                    request.app = Some(app);
                }
                ("app", Value::Null) => {}
                ("app", _) => return Err("app must be a string".into()),
                // The name is the caller's text, and may be a token pasted in the wrong place: it
                // is never repeated, only matched against the fields it may have meant.
                (other, _) => return Err(unknown_field(other)),
            }
        }
        if !has_token {
            return Err("token is required".into());
        }
        Ok(request)
    }
}

/// Checks required scopes: at most [`MAX_SCOPES`], each a plain scope (no wildcards).
fn required_scopes<S: AsRef<str>>(scopes: impl Iterator<Item = Result<S, ()>>) -> Result<Vec<S>, String> {
    let mut out = Vec::new();
    for (i, scope) in scopes.enumerate() {
        if i == MAX_SCOPES {
            return Err(format!("at most {MAX_SCOPES} scopes may be required at once"));
        }
        let scope = scope.map_err(|()| format!("scopes[{i}] must be a string"))?;
        scope::validate_required(scope.as_ref()).map_err(|problem| format!("scopes[{i}] is not a scope: {problem}"))?;
        out.push(scope);
    }
    Ok(out)
}

/// The error for an unknown field, naming the field it most likely meant but never itself.
fn unknown_field(name: &str) -> String {
    let meant = ["token", "scopes", "ip", "app"]
        .into_iter()
        .find(|field| name.eq_ignore_ascii_case(field) || name.eq_ignore_ascii_case(field.trim_end_matches('s')));
    match meant {
        Some(field) => format!("unknown field: the fields are token, scopes, ip and app (did you mean {field:?}?)"),
        None => "unknown field: the fields are token, scopes, ip and app".into(),
    }
}

fn answer(verdict: &Verdict) -> axum::Json<Answer<'_>> {
    axum::Json(Answer::from(verdict))
}

fn bad_request(problem: String) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(serde_json::json!({ "error": problem }))).into_response()
}

async fn verify_json(State(verifier): State<Arc<Verifier>>, body: Bytes) -> Response {
    let started = Instant::now();
    let (answered, response) = match VerifyRequest::parse(&body) {
        Err(problem) => (Answered::BadRequest, bad_request(problem)),
        Ok(request) => {
            let judged = Request { scopes: &request.scopes, client: request.ip, app: request.app.as_deref() };
            let verdict = verifier.verify(&request.token, &judged);
            log_verdict("verify", &verdict);
            (Answered::Judged(verdict.code), answer(&verdict).into_response())
        }
    };
    verifier.metrics.observe(Endpoint::Verify, answered, started.elapsed());
    response
}

fn judge_forwarded(verifier: &Verifier, peer: SocketAddr, uri: &Uri, headers: &HeaderMap) -> (Answered, Response) {
    let scopes = scope_parameters(uri.query().unwrap_or_default()).map(Ok);
    let required = match required_scopes(scopes) {
        Ok(required) => required,
        Err(problem) => return (Answered::BadRequest, bad_request(problem.replace("scopes[", "scope parameter ["))),
    };
    let token = match presented_token(headers) {
        Some(token) => token,
        None => {
            let mut response = (
                StatusCode::UNAUTHORIZED,
                axum::Json(serde_json::json!({
                    "error": "no token: send it as Authorization: Bearer <token>, X-Api-Key or ApiKey"
                })),
            )
                .into_response();
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return (Answered::MissingToken, response);
        }
    };
    let client = client_ip(peer, headers.get_all(X_FORWARDED_FOR), &verifier.trusted_proxies);
    let verdict = verifier.verify(token, &Request { scopes: &required, client, app: named_app(headers) });
    log_verdict("auth", &verdict);
    let status = match verdict.code {
        Code::Valid => StatusCode::OK,
        Code::IpNotAllowed | Code::InsufficientScope | Code::AppDenied => StatusCode::FORBIDDEN,
        Code::NotFound | Code::Malformed | Code::Expired | Code::Inactive | Code::AppPending => {
            StatusCode::UNAUTHORIZED
        }
    };
    // A proxy reads the status and headers only: a granted request gets no body to build.
    let mut response = match status {
        StatusCode::OK => status.into_response(),
        _ => (status, answer(&verdict)).into_response(),
    };
    let out = response.headers_mut();
    out.insert(X_KEYWARD_CODE, HeaderValue::from_static(verdict.code.as_str()));
    if status == StatusCode::UNAUTHORIZED {
        out.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if let (StatusCode::OK, Some(entry)) = (status, verdict.entry.as_deref()) {
        let (namespace, name) = (&*entry.object.namespace, &*entry.object.name);
        let mut key = String::with_capacity(namespace.len() + 1 + name.len());
        key.extend([namespace, "/", name]);
        // Names, key IDs and validated scopes are plain ASCII; a value that is not is left out.
        for (name, value) in [
            (X_KEYWARD_KEY, HeaderValue::try_from(key)),
            (X_KEYWARD_KEY_ID, HeaderValue::from_str(&entry.key_id)),
            // An access token's own scopes, which may be narrower than its key's.
            (X_KEYWARD_SCOPES, HeaderValue::try_from(verdict.scopes().join(","))),
        ] {
            if let Ok(value) = value {
                out.insert(name, value);
            }
        }
    }
    (Answered::Judged(verdict.code), response)
}

/// The values of the `scope` parameters of `query`, decoded as `application/x-www-form-urlencoded`
/// (what [`form_urlencoded::parse`] gives), borrowed from the query when there is nothing to
/// decode, as in every request a proxy configured by hand sends.
fn scope_parameters(query: &str) -> impl Iterator<Item = Cow<'_, str>> {
    query.split('&').filter(|pair| !pair.is_empty()).filter_map(|pair| {
        if pair.bytes().any(|b| b == b'%' || b == b'+') {
            let (name, value) = form_urlencoded::parse(pair.as_bytes()).next()?;
            return (name == "scope").then_some(value);
        }
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        (name == "scope").then_some(Cow::Borrowed(value))
    })
}

/// The token, from `Authorization: Bearer`, else `X-Api-Key`, else `ApiKey`. A header that is not
/// text yields an empty token, which is malformed.
fn presented_token(headers: &HeaderMap) -> Option<&str> {
    fn text(value: &HeaderValue) -> &str {
        value.to_str().unwrap_or_default().trim()
    }
    if let Some(authorization) = headers.get(header::AUTHORIZATION) {
        if authorization.to_str().is_err() {
            return Some("");
        }
        if let Some((scheme, credentials)) = text(authorization).split_once(' ')
            && scheme.eq_ignore_ascii_case("bearer")
        {
            return Some(credentials.trim());
        }
    }
    [X_API_KEY, API_KEY].iter().find_map(|name| headers.get(name)).map(text)
}

/// The application `X-Keyward-App` names; a malformed name counts as none (the contract: a
/// proxy's request is not refused for a header it may not control).
fn named_app(headers: &HeaderMap) -> Option<&str> {
    let app = headers.get(X_KEYWARD_APP)?.to_str().ok()?.trim();
    crate::api::names::app_name(app).is_ok().then_some(app)
}

/// The client's address. When the peer is a trusted proxy: the rightmost `X-Forwarded-For`
/// entry that is not itself a trusted proxy (each proxy appends the address it saw, so only the
/// entries right of the first untrusted one were written by proxies we trust; anything left of
/// it may be the client's own invention), or the leftmost entry when every one is trusted.
/// Else the peer. `None` when the entry to believe is not an address, so that
/// address-restricted keys are refused rather than judged by a proxy's own address.
///
/// Several `X-Forwarded-For` lines are one list in order (RFC 9110), as some proxies add a line
/// of their own rather than append to the client's.
pub fn client_ip<'h>(
    peer: SocketAddr,
    forwarded_for: impl IntoIterator<Item = &'h HeaderValue, IntoIter: DoubleEndedIterator>,
    trusted: &[IpNet],
) -> Option<IpAddr> {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let peer = peer.ip().to_canonical();
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let mut believed = None;
    for line in forwarded_for.into_iter().rev() {
        for entry in line.to_str().ok()?.rsplit(',') {
            let ip = forwarded_address(entry.trim())?;
            believed = Some(ip);
            if !is_trusted(&ip) {
                return believed;
            }
        }
    }
    // No header: the peer itself is the client.
    Some(believed.unwrap_or(peer))
}

/// One `X-Forwarded-For` entry: an address, optionally with a port (`[v6]:port` or `v4:port`).
fn forwarded_address(entry: &str) -> Option<IpAddr> {
    let ip = entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|addr| addr.ip()))
        .or_else(|_| entry.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>())
        .ok()?;
    Some(ip.to_canonical())
}

fn log_verdict(endpoint: &'static str, verdict: &Verdict) {
    match verdict.entry.as_deref() {
        Some(entry) => tracing::debug!(
            endpoint,
            code = verdict.code.as_str(),
            namespace = %entry.object.namespace,
            name = %entry.object.name,
            key_id = %entry.key_id,
            "verified"
        ),
        None => tracing::debug!(endpoint, code = verdict.code.as_str(), "verified"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<VerifyRequest, String> {
        VerifyRequest::parse(body.as_bytes())
    }

    #[test]
    fn a_verify_body_has_a_token_and_optional_scopes_and_ip() {
        let full =
            parse(r#"{"token": "kw_x", "scopes": ["orders.read"], "ip": "10.1.2.3", "app": "billing"}"#).unwrap();
        assert_eq!(full.scopes, ["orders.read"]);
        assert_eq!(full.ip, Some("10.1.2.3".parse().unwrap()));
        assert_eq!(full.app.as_deref(), Some("billing"));
        let nulls = parse(r#"{"token": "kw_x", "scopes": null, "ip": null, "app": null}"#).unwrap();
        assert_eq!((nulls.scopes, nulls.app), (Vec::<String>::new(), None));
    }

    #[test]
    fn a_bad_verify_body_is_named_without_repeating_values() {
        let secret = "kw_0123456789ABCDEFGHIJabcdefghij4Us3aw";
        for (body, names) in [
            (String::new(), "JSON object"),
            ("[1]".to_string(), "JSON object"),
            (format!(r#"{{"token": "{secret}""#), "JSON object"),
            (r#"{"scopes": []}"#.to_string(), "token is required"),
            (r#"{"token": 5}"#.to_string(), "token must be a string"),
            (format!(r#"{{"token": "x", "scopes": "{secret}"}}"#), "scopes must be a list"),
            (r#"{"token": "x", "scopes": [1]}"#.to_string(), "scopes[0] must be a string"),
            (r#"{"token": "x", "scopes": ["orders.*"]}"#.to_string(), "scopes[0] is not a scope"),
            (format!(r#"{{"token": "x", "ip": "{secret}"}}"#), "ip must be an IPv4 or IPv6 address"),
            (format!(r#"{{"token": "x", "app": "-{secret}"}}"#), "app: application names are"),
            (r#"{"token": "x", "app": 7}"#.to_string(), "app must be a string"),
            (
                r#"{"token": "x", "scope": "admin"}"#.to_string(),
                "unknown field: the fields are token, scopes, ip and app (did you mean \"scopes\"?)",
            ),
            (r#"{"token": "x", "APP": "a"}"#.to_string(), "(did you mean \"app\"?)"),
            (format!(r#"{{"token": "x", "{secret}": 1}}"#), "unknown field: the fields are token, scopes, ip and app"),
        ] {
            let error = parse(&body).expect_err(&body);
            assert!(error.contains(names), "{body:?} gave {error:?}");
            assert!(!error.contains(secret), "{error:?} repeats a value");
        }
        let many = format!(r#"{{"token": "x", "scopes": [{}]}}"#, vec![r#""a""#; MAX_SCOPES + 1].join(","));
        assert!(parse(&many).unwrap_err().contains("at most 64"));
        assert!(VerifyRequest::parse(b"{\"token\": \"\xff\"}").is_err(), "invalid UTF-8");
    }

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| (name.parse::<HeaderName>().unwrap(), HeaderValue::from_bytes(value).unwrap()))
            .collect()
    }

    #[test]
    fn forward_auth_is_its_path_and_every_path_below_it() {
        for path in ["/v1/auth", "/v1/auth/", "/v1/auth/orders/42"] {
            assert!(is_forward_auth(path), "{path}");
        }
        for path in ["/v1/authz", "/v1/auth.json", "/v1/verify", "/", "/v1", "/V1/auth", "/x/v1/auth"] {
            assert!(!is_forward_auth(path), "{path}");
        }
    }

    #[test]
    fn scope_parameters_are_decoded_as_form_urlencoded_does() {
        for query in [
            "",
            "scope=orders.read",
            "scope=orders.read&scope=deploy.prod",
            "&&scope=a&&x=1&scope&scope=&=b&scope==c",
            "sc%6Fpe=orders.read&scope=a%2Eb&scope=a+b&scope%3Dx=y&scope=%ff&scope=%zz",
            "scope=a;scope=b&Scope=c&scopes=d&scope=a=b",
        ] {
            let expected: Vec<String> = form_urlencoded::parse(query.as_bytes())
                .filter(|(name, _)| name == "scope")
                .map(|(_, value)| value.into_owned())
                .collect();
            let got: Vec<String> = scope_parameters(query).map(Cow::into_owned).collect();
            assert_eq!(got, expected, "{query:?}");
        }
        assert!(matches!(scope_parameters("scope=orders.read").next(), Some(Cow::Borrowed("orders.read"))));
    }

    #[test]
    fn the_token_comes_from_bearer_then_x_api_key_then_apikey() {
        let h = headers(&[("authorization", b"Bearer kw_a"), ("x-api-key", b"kw_b"), ("apikey", b"kw_c")]);
        assert_eq!(presented_token(&h), Some("kw_a"));
        let h = headers(&[("authorization", b"bearer  kw_a ")]);
        assert_eq!(presented_token(&h), Some("kw_a"));
        let h = headers(&[("authorization", b"Basic dXNlcjpwYXNz"), ("x-api-key", b"kw_b"), ("apikey", b"kw_c")]);
        assert_eq!(presented_token(&h), Some("kw_b"));
        assert_eq!(presented_token(&headers(&[("apikey", b"kw_c")])), Some("kw_c"));
        assert_eq!(presented_token(&headers(&[("x-api-key", b"\xffkw")])), Some(""), "not text: malformed");
        assert_eq!(presented_token(&headers(&[("authorization", b"Bearer \xff")])), Some(""), "not text: malformed");
        assert_eq!(presented_token(&headers(&[("authorization", b"Basic x")])), None);
        assert_eq!(presented_token(&HeaderMap::new()), None);
    }

    #[test]
    fn the_application_header_counts_only_when_well_formed() {
        assert_eq!(named_app(&headers(&[("x-keyward-app", b"billing-worker")])), Some("billing-worker"));
        assert_eq!(named_app(&headers(&[("x-keyward-app", b" billing ")])), Some("billing"));
        for bad in [&b""[..], b"-x", b"a b", b"\xff", &[b'a'; 64]] {
            assert_eq!(named_app(&headers(&[("x-keyward-app", bad)])), None, "{bad:?}");
        }
        assert_eq!(named_app(&HeaderMap::new()), None);
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()];
        let proxy: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let stranger: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        let xff = |v: &'static str| HeaderValue::from_static(v);
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(client_ip(proxy, Some(&xff("10.1.2.3")), &trusted), ip("10.1.2.3"));
        assert_eq!(client_ip(proxy, Some(&xff("10.1.2.3:4711")), &trusted), ip("10.1.2.3"));
        assert_eq!(client_ip(proxy, Some(&xff("[2001:db8::1]:443")), &trusted), ip("2001:db8::1"));
        assert_eq!(client_ip(proxy, Some(&xff("2001:db8::1")), &trusted), ip("2001:db8::1"));
        assert_eq!(client_ip(proxy, Some(&xff("unknown")), &trusted), None, "not an address");
        assert_eq!(client_ip(proxy, None, &trusted), ip("127.0.0.1"));
        assert_eq!(client_ip(stranger, Some(&xff("10.1.2.3")), &trusted), ip("192.0.2.7"), "not a proxy");
        assert_eq!(client_ip(proxy, Some(&xff("10.1.2.3")), &[]), ip("127.0.0.1"), "no proxy trusted");
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5000".parse().unwrap();
        assert_eq!(client_ip(mapped, Some(&xff("10.1.2.3")), &trusted), ip("10.1.2.3"), "IPv4 on an IPv6 socket");
    }

    #[test]
    fn several_forwarded_for_lines_are_one_list_in_order() {
        let trusted: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap()];
        let proxy: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        // The client's forged line first, then the line its proxy added.
        let lines = [HeaderValue::from_static("10.9.9.9"), HeaderValue::from_static("192.0.2.50, 127.0.0.2")];
        assert_eq!(client_ip(proxy, &lines, &trusted), Some("192.0.2.50".parse().unwrap()));
        let all_trusted = [HeaderValue::from_static("127.0.0.7"), HeaderValue::from_static("127.0.0.2")];
        assert_eq!(client_ip(proxy, &all_trusted, &trusted), Some("127.0.0.7".parse().unwrap()));
    }

    #[test]
    fn a_client_cannot_choose_its_address_by_sending_forwarded_for() {
        let trusted: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()];
        let proxy: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let xff = |v: &'static str| HeaderValue::from_static(v);
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        // NGINX's $proxy_add_x_forwarded_for appends what it saw to what the client sent.
        assert_eq!(client_ip(proxy, Some(&xff("10.9.9.9, 192.0.2.50")), &trusted), ip("192.0.2.50"));
        // Several trusted hops are walked over, right to left.
        assert_eq!(
            client_ip(proxy, Some(&xff("10.9.9.9, 192.0.2.50, fd00::1, 127.0.0.2")), &trusted),
            ip("192.0.2.50")
        );
        // A forged entry that is not an address, left of the real one, is never reached.
        assert_eq!(client_ip(proxy, Some(&xff("garbage, 192.0.2.50")), &trusted), ip("192.0.2.50"));
        // Every hop trusted: the leftmost is the client (a client inside the trusted network).
        assert_eq!(client_ip(proxy, Some(&xff("127.0.0.5, 127.0.0.9")), &trusted), ip("127.0.0.5"));
        // A trusted proxy that wrote garbage on the right is not believed past.
        assert_eq!(client_ip(proxy, Some(&xff("192.0.2.50, nonsense")), &trusted), None);
        assert_eq!(client_ip(proxy, Some(&xff("")), &trusted), None, "an empty entry is not an address");
    }
}
