//! Token exchange (OAuth 2.0): `POST /v1/token` trades an API token for a short-lived signed
//! access token and a refresh token; `/.well-known/jwks.json` and the RFC 8414 metadata publish
//! what a service needs to check them offline; and `/v1/auth` and `/v1/verify` accept the access
//! tokens beside API tokens, judging the key they name by UID in the index, so that revocation
//! holds at once there.
//!
//! The parts: [`grant`] reads a request, [`jwt`] mints and checks tokens, [`keys`] follows the
//! signing Secret, [`cache`] keeps checked access tokens, [`metrics`] counts. This module joins
//! them to the verifier's index and serves the routes. Enabled by `--issuer`; without it none of
//! these paths exist (`404`).

pub mod cache;
pub mod grant;
pub mod jwt;
pub mod keys;
pub mod metrics;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jiff::Timestamp;
use serde_json::json;

use crate::judge::{self, Code, Entry, Request, Verdict};
use crate::signing::KeySet;
use crate::token::TokenHash;
use crate::verifier::Verifier;
use cache::{Cache, Verified};
use grant::{ClientAuth, Grant, GrantError, TokenRequest};
use jwt::{AccessClaims, Issuer, KeyClaim, RefreshClaims};
use keys::Keys;
use metrics::{AccessCheck, ExchangeMetrics};

/// Default `--access-token-ttl`.
pub const DEFAULT_ACCESS_TTL: Duration = Duration::from_secs(15 * 60);
/// Default `--refresh-grace`.
pub const DEFAULT_REFRESH_GRACE: Duration = Duration::from_secs(3_600);
/// Default `--session-max`.
pub const DEFAULT_SESSION_MAX: Duration = Duration::from_secs(24 * 3_600);

/// The exchange's flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// `--issuer`: the external URL clients use (`iss` of every token).
    pub issuer: String,
    /// `--audience` (`aud` of access tokens); the issuer when not given.
    pub audience: String,
    pub access_ttl: Duration,
    pub refresh_grace: Duration,
    pub session_max: Duration,
    /// `--signing-secret`, in `POD_NAMESPACE` (else the client's default namespace).
    pub signing_secret: String,
}

impl Settings {
    /// Refuses flags the contract does not allow, naming the flag and its value.
    pub fn check(&self) -> Result<(), String> {
        let url = self.issuer.as_str();
        let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
        let rest = url.split_once("://").map_or("", |(_, rest)| rest);
        if !scheme_ok || rest.is_empty() || rest.starts_with('/') || url.contains(['?', '#', ' ']) {
            return Err(format!(
                "--issuer {url:?} must be an http(s) URL with a host and no query or fragment, such as https://keyward.example.com"
            ));
        }
        if self.audience.is_empty() || self.audience == self.token_endpoint() {
            return Err(format!(
                "--audience {:?} must be neither empty nor the token endpoint (the audience of refresh tokens)",
                self.audience
            ));
        }
        let fmt = crate::duration::format;
        if self.access_ttl.is_zero() || self.access_ttl > crate::signing::MAX_ACCESS_TTL {
            return Err(format!(
                "--access-token-ttl {} must be between 1s and {}",
                fmt(self.access_ttl),
                fmt(crate::signing::MAX_ACCESS_TTL)
            ));
        }
        if self.refresh_grace > crate::signing::MAX_REFRESH_GRACE {
            return Err(format!(
                "--refresh-grace {} must be at most {}",
                fmt(self.refresh_grace),
                fmt(crate::signing::MAX_REFRESH_GRACE)
            ));
        }
        if self.session_max.is_zero() {
            return Err(format!("--session-max {} must be at least 1s", fmt(self.session_max)));
        }
        crate::api::names::dns_subdomain(&self.signing_secret)
            .map_err(|problem| format!("--signing-secret {:?} {problem}", self.signing_secret))?;
        Ok(())
    }

    /// The issuer without a trailing `/`, to which the endpoint paths are appended.
    fn base(&self) -> &str {
        self.issuer.trim_end_matches('/')
    }

    /// `<issuer>/v1/token`.
    pub fn token_endpoint(&self) -> String {
        format!("{}/v1/token", self.base())
    }
}

/// The exchange's state: its settings, the signing keys, the checked-token cache, metrics.
#[derive(Debug)]
pub struct Exchange {
    pub settings: Settings,
    issuer: Issuer,
    /// `aud` of refresh tokens: the token endpoint, the one place that takes them. Never the
    /// access tokens' audience, so that an offline verifier that forgets to check `typ` still
    /// refuses a refresh token.
    refresh_audience: String,
    pub keys: Arc<Keys>,
    pub cache: Arc<Cache>,
    pub metrics: Arc<ExchangeMetrics>,
}

fn seconds(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

/// The scopes of a token that its key still grants: shared as they are when it grants them all
/// (no copy per request), filtered when the key was narrowed since the token was issued.
fn held_scopes(token: &Arc<[Box<str>]>, key: &[Box<str>]) -> Arc<[Box<str>]> {
    let still = |scope: &str| key.iter().any(|k| crate::scope::grants(k, scope));
    if token.iter().all(|s| still(s)) { token.clone() } else { token.iter().filter(|s| still(s)).cloned().collect() }
}

fn scopes_of(claim: &str) -> Vec<String> {
    claim.split(' ').filter(|s| !s.is_empty()).map(String::from).collect()
}

/// Why `/v1/token` gave no tokens.
#[derive(Debug)]
enum Refusal {
    Grant(GrantError),
    /// No signing keys (yet), or the OS RNG failed: `503`.
    Unavailable(String),
}

impl From<GrantError> for Refusal {
    fn from(error: GrantError) -> Self {
        Refusal::Grant(error)
    }
}

/// What every token of one session carries: its ID, its absolute end, the API token it began
/// with (by hash), and the application named at its start.
struct Session {
    sid: String,
    end: i64,
    token_hash: String,
    app: Option<String>,
}

/// A successful exchange.
struct Issued {
    access_token: String,
    refresh_token: String,
    expires_in: i64,
    scope: String,
    key_id: Box<str>,
}

impl Exchange {
    pub fn new(settings: Settings, metrics: Arc<ExchangeMetrics>) -> Self {
        let issuer = Issuer { issuer: settings.issuer.clone(), audience: settings.audience.clone() };
        let refresh_audience = settings.token_endpoint();
        Self { settings, issuer, refresh_audience, keys: Arc::default(), cache: Arc::default(), metrics }
    }

    /// Judges a presented access token: checked once (then cached until `exp`), then the key it
    /// names judged in the index as an API token's would be, with the required scopes granted
    /// only by both the token's `scope` and the key.
    ///
    /// The application is the one the token was exchanged for (`keyward.app`); only a token
    /// exchanged without one takes the request's.
    pub fn verify_access<S: AsRef<str>>(
        &self,
        verifier: &Verifier,
        token: &str,
        request: &Request<'_, S>,
        now: Timestamp,
    ) -> Verdict {
        let digest = crate::token::digest_of(token);
        let verified = match self.cache.get(&digest, now.as_second()) {
            Some(verified) => {
                self.metrics.checked(AccessCheck::Hit);
                verified
            }
            None => match self.check_access(verifier, token, now) {
                Ok(verified) => {
                    self.metrics.checked(AccessCheck::Miss);
                    self.cache.insert(digest, verified.clone(), now.as_second());
                    verified
                }
                Err(verdict) => {
                    self.metrics.checked(AccessCheck::Refused);
                    return verdict;
                }
            },
        };
        let Some(entry) = verifier.lookup_uid(&verified.uid, verified.token.as_deref()) else {
            return Verdict::of(Code::NotFound, None);
        };
        let request = Request { app: verified.app.as_deref().or(request.app), ..*request };
        let mut code = entry.judge(&request, now);
        if code == Code::Valid && !crate::scope::grants_all(&verified.scopes, request.scopes) {
            code = Code::InsufficientScope;
        }
        let scopes = held_scopes(&verified.scopes, &entry.policy.scopes);
        let verdict = Verdict { code, entry: Some(entry), scopes: Some(scopes) };
        verifier.record(&verdict, request.app, now);
        verdict
    }

    fn check_access(&self, verifier: &Verifier, token: &str, now: Timestamp) -> Result<Arc<Verified>, Verdict> {
        let refused = |code| Verdict::of(code, None);
        let keys = self.keys.get().ok_or_else(|| refused(Code::NotFound))?;
        let checked =
            jwt::check::<AccessClaims>(&keys, token, jwt::ACCESS_TYP, &self.issuer.issuer, &self.issuer.audience)
                .map_err(refused)?;
        let claims = checked.claims;
        if claims.exp <= now.as_second() {
            // Whose token expired is worth saying, when that key is still there.
            let entry = verifier.lookup_uid(&claims.keyward.uid, claims.keyward.token.as_deref());
            let code = if entry.is_some() { Code::Expired } else { Code::NotFound };
            return Err(Verdict::of(code, entry));
        }
        Ok(Arc::new(Verified {
            uid: claims.keyward.uid.into(),
            token: claims.keyward.token.map(Into::into),
            scopes: scopes_of(&claims.scope).into_iter().map(Into::into).collect(),
            app: claims.keyward.app.map(Into::into),
            exp: claims.exp,
        }))
    }

    /// Answers one `/v1/token` request.
    fn exchange(
        &self,
        verifier: &Verifier,
        request: TokenRequest,
        client_ip: Option<IpAddr>,
        now: Timestamp,
    ) -> Result<Issued, Refusal> {
        let keys = self.keys.get().filter(|keys| !keys.keys.is_empty()).ok_or_else(|| {
            Refusal::Unavailable(format!(
                "no signing keys yet: the Secret {} has not been written by the controller",
                self.settings.signing_secret
            ))
        })?;
        match request.grant {
            Grant::ClientCredentials(client) => {
                let entry = self.authenticate(verifier, &client, client_ip, request.app.as_deref(), now)?;
                let scopes = grant::narrow(&entry.policy.scopes, request.scope.as_deref())?;
                let session = Session {
                    sid: jwt::random_id().map_err(Refusal::Unavailable)?,
                    end: now.as_second().saturating_add(seconds(self.settings.session_max)),
                    token_hash: TokenHash::of(client.secret.expose().as_bytes()).as_str().to_string(),
                    app: request.app,
                };
                self.issue(&keys, &entry, scopes, session, now)
            }
            Grant::RefreshToken { token, client } => {
                let invalid = |why: &str| Refusal::Grant(GrantError::InvalidGrant(why.to_string()));
                let claims = jwt::check::<RefreshClaims>(
                    &keys,
                    &token.0,
                    jwt::REFRESH_TYP,
                    &self.issuer.issuer,
                    &self.refresh_audience,
                )
                .map_err(|_| invalid("the refresh token is not one this issuer gave"))?
                .claims;
                if claims.exp <= now.as_second() {
                    return Err(invalid("the refresh token expired"));
                }
                if claims.session_end <= now.as_second() {
                    return Err(invalid(
                        "the session passed its absolute lifetime (--session-max); exchange the API token again",
                    ));
                }
                if let Some(client) = &client {
                    let same_token = TokenHash::of(client.secret.expose().as_bytes()).as_str() == claims.token_hash;
                    if client.id != claims.client_id || !same_token {
                        return Err(GrantError::InvalidClient(
                            "the client is not the one the refresh token was given to".into(),
                        )
                        .into());
                    }
                }
                let digest =
                    TokenHash::parse(&claims.token_hash).map(|h| h.digest()).ok_or_else(|| invalid("NOT_FOUND"))?;
                // By hash: a re-issued token (a new hash) ends the session.
                let entry = verifier
                    .lookup(&digest)
                    .filter(|e| {
                        e.uid.as_deref() == Some(claims.keyward.uid.as_str())
                            && e.token.as_deref() == claims.keyward.token.as_deref()
                    })
                    .ok_or_else(|| invalid("NOT_FOUND: the key or its token is gone or was re-issued"))?;
                let app = claims.keyward.app.as_deref();
                let code = entry.judge(&Request { app, ..Request::from(client_ip) }, now);
                verifier.record(&Verdict::of(code, Some(entry.clone())), app, now);
                if code != Code::Valid {
                    return Err(invalid(code.as_str()));
                }
                let held = scopes_of(&claims.scope);
                grant::narrow(&entry.policy.scopes, Some(&held))
                    .map_err(|_| invalid("INSUFFICIENT_SCOPE: the key no longer grants the session's scopes"))?;
                let scopes = grant::narrow(&held, request.scope.as_deref())?;
                if request.app.is_some() && request.app != claims.keyward.app {
                    return Err(GrantError::InvalidRequest("app must be the session's application".into()).into());
                }
                let session = Session {
                    sid: claims.sid,
                    end: claims.session_end,
                    token_hash: claims.token_hash,
                    app: claims.keyward.app,
                };
                self.issue(&keys, &entry, scopes, session, now)
            }
        }
    }

    /// The key of a client-credentials request, judged as `/v1/verify` judges it.
    fn authenticate(
        &self,
        verifier: &Verifier,
        client: &ClientAuth,
        client_ip: Option<IpAddr>,
        app: Option<&str>,
        now: Timestamp,
    ) -> Result<Arc<Entry>, Refusal> {
        let refused = |why: &str| Refusal::Grant(GrantError::InvalidClient(why.to_string()));
        // API tokens only: an access token is never a client secret.
        let request = Request { app, ..Request::from(client_ip) };
        let verdict = judge::verify(client.secret.expose(), &request, now, |digest| verifier.lookup(digest));
        let Some(entry) = verdict.entry.clone() else { return Err(refused(verdict.code.as_str())) };
        if *entry.key_id != *client.id {
            return Err(refused("client_id is not the key ID of the token"));
        }
        // Recorded once the client is known to be the key's own.
        verifier.record(&verdict, app, now);
        if verdict.code != Code::Valid {
            return Err(refused(verdict.code.as_str()));
        }
        if entry.uid.is_none() {
            return Err(refused(Code::NotFound.as_str()));
        }
        Ok(entry)
    }

    /// Mints an access token and a refresh token for `entry`.
    fn issue(
        &self,
        keys: &KeySet,
        entry: &Entry,
        scopes: Vec<String>,
        session: Session,
        now: Timestamp,
    ) -> Result<Issued, Refusal> {
        let Session { sid, end: session_end, token_hash, app } = session;
        let claim = KeyClaim {
            kind: entry.object.kind.as_str().to_string(),
            namespace: entry.object.namespace.to_string(),
            name: entry.object.name.to_string(),
            token: entry.token.as_deref().map(String::from),
            uid: entry.uid.as_deref().unwrap_or_default().to_string(),
            app,
        };
        let iat = now.as_second();
        let access_exp = jwt::access_exp(now, seconds(self.settings.access_ttl), entry.expires_at, session_end);
        let scope = scopes.join(" ");
        let access = AccessClaims {
            iss: self.issuer.issuer.clone(),
            sub: claim.subject(),
            aud: self.issuer.audience.clone(),
            client_id: entry.key_id.to_string(),
            scope: scope.clone(),
            iat,
            exp: access_exp,
            jti: jwt::random_id().map_err(Refusal::Unavailable)?,
            keyward: claim.clone(),
        };
        let refresh = RefreshClaims {
            iss: self.issuer.issuer.clone(),
            sub: claim.subject(),
            aud: self.refresh_audience.clone(),
            client_id: entry.key_id.to_string(),
            scope: scope.clone(),
            iat,
            exp: jwt::refresh_exp(access_exp, seconds(self.settings.refresh_grace), session_end),
            jti: jwt::random_id().map_err(Refusal::Unavailable)?,
            sid,
            session_end,
            token_hash,
            keyward: claim,
        };
        let mint_error = |e: jwt::MintError| Refusal::Unavailable(e.to_string());
        let (access_token, _) = jwt::mint(keys, now, jwt::ACCESS_TYP, &access).map_err(mint_error)?;
        let (refresh_token, _) = jwt::mint(keys, now, jwt::REFRESH_TYP, &refresh).map_err(mint_error)?;
        Ok(Issued { access_token, refresh_token, expires_in: access_exp - iat, scope, key_id: entry.key_id.clone() })
    }

    /// `/.well-known/oauth-authorization-server` (and `openid-configuration`): exactly the
    /// contract's fields.
    fn metadata(&self) -> serde_json::Value {
        let base = self.settings.base();
        json!({
            "issuer": self.settings.issuer,
            "token_endpoint": self.settings.token_endpoint(),
            "jwks_uri": format!("{base}/.well-known/jwks.json"),
            "grant_types_supported": ["client_credentials", "refresh_token"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "response_types_supported": ["token"],
        })
    }
}

/// `POST /v1/token` and the well-known documents.
pub fn routes(verifier: Arc<Verifier>) -> Router {
    Router::new()
        .route("/v1/token", post(token_endpoint))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .route("/.well-known/openid-configuration", get(metadata))
        .with_state(verifier)
}

const PRAGMA: HeaderName = HeaderName::from_static("pragma");

fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

fn error_response(error: &GrantError) -> Response {
    let status = match error {
        GrantError::InvalidClient(_) => StatusCode::UNAUTHORIZED,
        _ => StatusCode::BAD_REQUEST,
    };
    let body = json!({"error": error.code(), "error_description": error.description()});
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
    }
    no_store(response)
}

async fn token_endpoint(State(verifier): State<Arc<Verifier>>, request: axum::extract::Request) -> Response {
    let Some(exchange) = verifier.exchange() else { return StatusCode::NOT_FOUND.into_response() };
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(peer)| *peer);
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, crate::http::MAX_BODY_BYTES).await else {
        exchange.metrics.exchanged("other", "too_large");
        return no_store(
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                axum::Json(json!({"error": "invalid_request", "error_description": "the body is too large"})),
            )
                .into_response(),
        );
    };
    let label = grant::grant_label(&body);
    let parsed = grant::parse(parts.headers.get(header::CONTENT_TYPE), parts.headers.get(header::AUTHORIZATION), &body);
    let client_ip = peer.and_then(|peer| {
        crate::verifier::http::client_ip(
            peer,
            parts.headers.get_all(HeaderName::from_static("x-forwarded-for")),
            verifier.trusted_proxies(),
        )
    });
    let outcome = match parsed {
        Err(error) => Err(Refusal::Grant(error)),
        Ok(request) => exchange.exchange(&verifier, request, client_ip, Timestamp::now()),
    };
    match outcome {
        Ok(issued) => {
            exchange.metrics.exchanged(label, "issued");
            tracing::debug!(grant = label, key_id = %issued.key_id, expires_in = issued.expires_in, "exchanged");
            no_store(
                axum::Json(json!({
                    "access_token": issued.access_token,
                    "token_type": "Bearer",
                    "expires_in": issued.expires_in,
                    "scope": issued.scope,
                    "refresh_token": issued.refresh_token,
                }))
                .into_response(),
            )
        }
        Err(Refusal::Grant(error)) => {
            exchange.metrics.exchanged(label, error.code());
            tracing::debug!(grant = label, error = error.code(), description = error.description(), "exchange refused");
            error_response(&error)
        }
        Err(Refusal::Unavailable(why)) => {
            exchange.metrics.exchanged(label, "temporarily_unavailable");
            tracing::warn!(grant = label, "exchange unavailable: {why}");
            no_store(
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    axum::Json(json!({"error": "temporarily_unavailable", "error_description": why})),
                )
                    .into_response(),
            )
        }
    }
}

async fn jwks(State(verifier): State<Arc<Verifier>>) -> Response {
    let Some(exchange) = verifier.exchange() else { return StatusCode::NOT_FOUND.into_response() };
    let set = exchange.keys.get().map(|keys| keys.jwks()).unwrap_or(jsonwebtoken::jwk::JwkSet { keys: Vec::new() });
    let mut response = axum::Json(set).into_response();
    // Short: a key published ahead must reach offline verifiers before it signs.
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=60"));
    response
}

async fn metadata(State(verifier): State<Arc<Verifier>>) -> Response {
    let Some(exchange) = verifier.exchange() else { return StatusCode::NOT_FOUND.into_response() };
    axum::Json(exchange.metadata()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            issuer: "https://keyward.example/".into(),
            audience: "https://keyward.example/".into(),
            access_ttl: DEFAULT_ACCESS_TTL,
            refresh_grace: DEFAULT_REFRESH_GRACE,
            session_max: DEFAULT_SESSION_MAX,
            signing_secret: crate::signing::DEFAULT_SECRET_NAME.into(),
        }
    }

    #[test]
    fn flags_are_checked_naming_the_flag_and_value() {
        assert_eq!(settings().check(), Ok(()));
        let with = |change: fn(&mut Settings)| {
            let mut s = settings();
            change(&mut s);
            s.check().unwrap_err()
        };
        assert!(with(|s| s.issuer = "keyward.example".into()).contains("--issuer \"keyward.example\""));
        assert!(with(|s| s.issuer = "https://".into()).contains("--issuer"));
        assert!(with(|s| s.issuer = "https://a/?x".into()).contains("--issuer"));
        assert!(with(|s| s.access_ttl = Duration::from_secs(7_201)).contains("--access-token-ttl 2h1s"));
        assert!(with(|s| s.access_ttl = Duration::ZERO).contains("--access-token-ttl"));
        assert!(with(|s| s.refresh_grace = Duration::from_secs(25 * 3_600)).contains("--refresh-grace 1d1h"));
        assert!(with(|s| s.session_max = Duration::ZERO).contains("--session-max"));
        assert!(with(|s| s.signing_secret = "Bad_Name".into()).contains("--signing-secret \"Bad_Name\""));
    }

    #[test]
    fn a_tokens_scopes_are_those_its_key_still_grants() {
        let token: Arc<[Box<str>]> = ["orders.read", "deploy.prod.write", "deploy.>"].map(Box::from).into();
        let key: Vec<Box<str>> = ["orders.read", "deploy.>"].map(Box::from).into();
        assert!(Arc::ptr_eq(&held_scopes(&token, &key), &token), "all held: shared, not copied");
        let narrowed: Vec<Box<str>> = ["deploy.prod.>"].map(Box::from).into();
        assert_eq!(&*held_scopes(&token, &narrowed), &[Box::from("deploy.prod.write")][..]);
        assert!(held_scopes(&token, &[]).is_empty());
    }

    #[test]
    fn the_metadata_holds_exactly_the_contracts_fields() {
        let exchange = Exchange::new(settings(), Arc::default());
        let metadata = exchange.metadata();
        let mut fields: Vec<&String> = metadata.as_object().unwrap().keys().collect();
        fields.sort();
        assert_eq!(
            fields,
            [
                "grant_types_supported",
                "issuer",
                "jwks_uri",
                "response_types_supported",
                "token_endpoint",
                "token_endpoint_auth_methods_supported"
            ]
        );
        assert_eq!(metadata["issuer"], "https://keyward.example/", "the issuer as given");
        assert_eq!(metadata["token_endpoint"], "https://keyward.example/v1/token");
        assert_eq!(metadata["jwks_uri"], "https://keyward.example/.well-known/jwks.json");
    }
}
