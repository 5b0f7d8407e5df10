//! Reading a `POST /v1/token` request (RFC 6749): the form, the grant, how the client
//! authenticates (HTTP Basic or form fields, RFC 6749 2.3.1), and which scopes it asks for.
//! Pure: no key is looked at here, and no error repeats a value the client sent.

use std::fmt;

use axum::http::HeaderValue;
use base64::Engine as _;

use crate::api::names;
use crate::scope;

/// Most scopes one request may ask for (as many as `/v1/verify` may require).
pub const MAX_SCOPES: usize = crate::verifier::http::MAX_SCOPES;

/// An RFC 6749 5.2 error code, with the description sent beside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GrantError {
    InvalidRequest(String),
    /// The client could not be authenticated: `401` with `WWW-Authenticate: Basic`.
    InvalidClient(String),
    InvalidGrant(String),
    InvalidScope(String),
    UnsupportedGrantType,
}

impl GrantError {
    /// The `error` value of the answer.
    pub fn code(&self) -> &'static str {
        match self {
            GrantError::InvalidRequest(_) => "invalid_request",
            GrantError::InvalidClient(_) => "invalid_client",
            GrantError::InvalidGrant(_) => "invalid_grant",
            GrantError::InvalidScope(_) => "invalid_scope",
            GrantError::UnsupportedGrantType => "unsupported_grant_type",
        }
    }

    /// The `error_description` of the answer.
    pub fn description(&self) -> &str {
        match self {
            GrantError::InvalidRequest(d)
            | GrantError::InvalidClient(d)
            | GrantError::InvalidGrant(d)
            | GrantError::InvalidScope(d) => d,
            GrantError::UnsupportedGrantType => "grant_type must be client_credentials or refresh_token",
        }
    }
}

/// A client secret (an API token, or what a client sent as one): printed as `[redacted]`.
pub struct ClientSecret(String);

impl ClientSecret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// How the client said who it is.
#[derive(Debug)]
pub struct ClientAuth {
    /// The key ID the client claims.
    pub id: String,
    pub secret: ClientSecret,
    /// By HTTP Basic (`client_secret_basic`) rather than form fields (`client_secret_post`).
    pub basic: bool,
}

/// A refresh token as presented: printed as `[redacted]`.
pub struct RefreshToken(pub String);

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The grant asked for.
#[derive(Debug)]
pub enum Grant {
    ClientCredentials(ClientAuth),
    /// Client authentication is optional on a refresh: the refresh token names its key, and
    /// credentials, when sent, must be that key's.
    RefreshToken {
        token: RefreshToken,
        client: Option<ClientAuth>,
    },
}

impl Grant {
    /// The metrics label of the grant.
    pub fn label(&self) -> &'static str {
        match self {
            Grant::ClientCredentials(_) => "client_credentials",
            Grant::RefreshToken { .. } => "refresh_token",
        }
    }
}

/// A whole `/v1/token` request.
#[derive(Debug)]
pub struct TokenRequest {
    pub grant: Grant,
    /// The `scope` parameter, split at spaces; `None` when absent or empty.
    pub scope: Option<Vec<String>>,
    /// The `app` parameter, checked against the application name syntax.
    pub app: Option<String>,
}

/// The parameters this endpoint reads; any other is ignored (RFC 6749 3.2).
const PARAMETERS: [&str; 6] = ["grant_type", "client_id", "client_secret", "scope", "app", "refresh_token"];

/// Which grant a request asked for, for metrics, before it is read whole.
pub fn grant_label(body: &[u8]) -> &'static str {
    match form_urlencoded::parse(body).find(|(name, _)| name == "grant_type").map(|(_, v)| v) {
        Some(v) if v == "client_credentials" => "client_credentials",
        Some(v) if v == "refresh_token" => "refresh_token",
        _ => "other",
    }
}

/// Reads a request from its `Content-Type`, `Authorization` and body.
pub fn parse(
    content_type: Option<&HeaderValue>,
    authorization: Option<&HeaderValue>,
    body: &[u8],
) -> Result<TokenRequest, GrantError> {
    let form = content_type
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    if !form {
        return Err(GrantError::InvalidRequest("the body must be application/x-www-form-urlencoded".into()));
    }
    let mut values: [Option<String>; PARAMETERS.len()] = Default::default();
    for (name, value) in form_urlencoded::parse(body) {
        let Some(slot) = PARAMETERS.iter().position(|p| *p == name) else { continue };
        if values[slot].is_some() {
            return Err(GrantError::InvalidRequest(format!("{} is given more than once", PARAMETERS[slot])));
        }
        values[slot] = Some(value.into_owned());
    }
    let [grant_type, client_id, client_secret, scope, app, refresh_token] = values;
    let scope = match scope.as_deref() {
        None | Some("") => None,
        Some(scope) => Some(requested_scopes(scope)?),
    };
    let app = match app {
        None => None,
        Some(app) => {
            names::app_name(&app).map_err(|problem| GrantError::InvalidRequest(format!("app: {problem}")))?;
            Some(app)
        }
    };
    let basic = match authorization {
        None => None,
        Some(header) => basic_credentials(header)?,
    };
    let form_client = match (client_id, client_secret) {
        (None, None) => None,
        (Some(id), Some(secret)) => Some(ClientAuth { id, secret: ClientSecret(secret), basic: false }),
        (Some(_), None) => return Err(GrantError::InvalidClient("client_id without client_secret".into())),
        (None, Some(_)) => return Err(GrantError::InvalidClient("client_secret without client_id".into())),
    };
    let client = match (basic, form_client) {
        (Some(_), Some(_)) => {
            return Err(GrantError::InvalidRequest(
                "the client authenticates once: with HTTP Basic or with client_id and client_secret, not both".into(),
            ));
        }
        (basic, form) => basic.or(form),
    };
    let grant = match grant_type.as_deref() {
        None => return Err(GrantError::InvalidRequest("grant_type is required".into())),
        Some("client_credentials") => Grant::ClientCredentials(client.ok_or_else(|| {
            GrantError::InvalidClient(
                "no client authentication: send HTTP Basic (key ID and token) or client_id and client_secret".into(),
            )
        })?),
        Some("refresh_token") => match refresh_token {
            Some(token) if !token.is_empty() => Grant::RefreshToken { token: RefreshToken(token), client },
            _ => return Err(GrantError::InvalidRequest("refresh_token is required".into())),
        },
        Some(_) => return Err(GrantError::UnsupportedGrantType),
    };
    Ok(TokenRequest { grant, scope, app })
}

/// HTTP Basic credentials: `None` for another scheme; the user and password are each
/// form-urlencoded (RFC 6749 2.3.1).
fn basic_credentials(header: &HeaderValue) -> Result<Option<ClientAuth>, GrantError> {
    let bad =
        || GrantError::InvalidClient("the Authorization header is not Basic base64(client_id:client_secret)".into());
    let text = header.to_str().map_err(|_| bad())?.trim();
    let Some((scheme, encoded)) = text.split_once(' ') else { return Ok(None) };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(bad)?;
    let unescape = |s: &str| -> String {
        form_urlencoded::parse(format!("v={s}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
    };
    Ok(Some(ClientAuth { id: unescape(id), secret: ClientSecret(unescape(secret)), basic: true }))
}

/// The `scope` parameter's scopes (space-separated), each a scope in form.
fn requested_scopes(scope: &str) -> Result<Vec<String>, GrantError> {
    let mut out: Vec<String> = Vec::new();
    for (i, requested) in scope.split(' ').enumerate() {
        if i == MAX_SCOPES {
            return Err(GrantError::InvalidScope(format!("at most {MAX_SCOPES} scopes may be asked for at once")));
        }
        scope::validate_granted(requested).map_err(|problem| {
            GrantError::InvalidScope(format!("scope {} of the request is not a scope: {problem}", i + 1))
        })?;
        if !out.iter().any(|s| s == requested) {
            out.push(requested.to_string());
        }
    }
    Ok(out)
}

/// The scopes a token gets: all of `granted` when none were asked for; else each asked-for
/// scope, which must equal one of `granted` or be a concrete scope one of them grants.
pub fn narrow<G: AsRef<str>>(granted: &[G], requested: Option<&[String]>) -> Result<Vec<String>, GrantError> {
    let Some(requested) = requested else {
        return Ok(granted.iter().map(|g| g.as_ref().to_string()).collect());
    };
    for (i, want) in requested.iter().enumerate() {
        let exact = granted.iter().any(|g| g.as_ref() == want);
        let covered = scope::validate_required(want).is_ok() && granted.iter().any(|g| scope::grants(g.as_ref(), want));
        if !(exact || covered) {
            return Err(GrantError::InvalidScope(format!(
                "scope {} of the request is not one the key grants (the key's scopes: {})",
                i + 1,
                granted.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(" ")
            )));
        }
    }
    Ok(requested.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORM: &str = "application/x-www-form-urlencoded";

    fn request(body: &str, authorization: Option<&str>) -> Result<TokenRequest, GrantError> {
        let content_type = HeaderValue::from_static(FORM);
        let authorization = authorization.map(|a| HeaderValue::from_str(a).unwrap());
        parse(Some(&content_type), authorization.as_ref(), body.as_bytes())
    }

    fn basic(id: &str, secret: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}")))
    }

    #[test]
    fn client_credentials_come_from_basic_or_the_form_but_not_both() {
        let Grant::ClientCredentials(client) =
            request("grant_type=client_credentials", Some(&basic("kw_abc", "kw_secret"))).unwrap().grant
        else {
            panic!("client credentials")
        };
        assert_eq!((client.id.as_str(), client.secret.expose(), client.basic), ("kw_abc", "kw_secret", true));
        // RFC 6749 2.3.1: both halves are form-urlencoded before Basic encoding.
        let Grant::ClientCredentials(client) =
            request("grant_type=client_credentials", Some(&basic("kw%5Fabc", "a%3Ab+c"))).unwrap().grant
        else {
            panic!("client credentials")
        };
        assert_eq!((client.id.as_str(), client.secret.expose()), ("kw_abc", "a:b c"));
        let Grant::ClientCredentials(client) =
            request("grant_type=client_credentials&client_id=kw_abc&client_secret=kw_s", None).unwrap().grant
        else {
            panic!("client credentials")
        };
        assert_eq!((client.id.as_str(), client.secret.expose(), client.basic), ("kw_abc", "kw_s", false));
        let both = request("grant_type=client_credentials&client_id=a&client_secret=b", Some(&basic("a", "b")));
        assert!(matches!(both, Err(GrantError::InvalidRequest(_))), "{both:?}");
        let none = request("grant_type=client_credentials", None);
        assert!(matches!(none, Err(GrantError::InvalidClient(_))), "{none:?}");
        let half = request("grant_type=client_credentials&client_id=a", None);
        assert!(matches!(half, Err(GrantError::InvalidClient(_))));
        for broken in ["Basic !!!", "Basic a2V5", "Basic /w==", "Basic"] {
            let refused = request("grant_type=client_credentials", Some(broken));
            assert!(matches!(refused, Err(GrantError::InvalidClient(_))), "{broken}: {refused:?}");
        }
        // Another scheme is no client authentication at all.
        let bearer = request("grant_type=client_credentials", Some("Bearer x"));
        assert!(matches!(bearer, Err(GrantError::InvalidClient(_))));
    }

    #[test]
    fn grants_parameters_and_content_type_are_checked() {
        assert!(matches!(request("", None), Err(GrantError::InvalidRequest(_))));
        assert_eq!(request("grant_type=password&username=a", None).unwrap_err(), GrantError::UnsupportedGrantType);
        assert!(matches!(request("grant_type=refresh_token", None), Err(GrantError::InvalidRequest(_))));
        assert!(matches!(request("grant_type=refresh_token&refresh_token=", None), Err(GrantError::InvalidRequest(_))));
        let refresh = request("grant_type=refresh_token&refresh_token=abc&unknown=1", None).unwrap();
        assert!(matches!(refresh.grant, Grant::RefreshToken { ref token, client: None } if token.0 == "abc"));
        let twice = request("grant_type=client_credentials&scope=a&scope=b", Some(&basic("a", "b")));
        assert!(matches!(twice, Err(GrantError::InvalidRequest(ref d)) if d.contains("scope")), "{twice:?}");
        let json = HeaderValue::from_static("application/json");
        assert!(matches!(parse(Some(&json), None, b"{}"), Err(GrantError::InvalidRequest(_))));
        assert!(matches!(parse(None, None, b"grant_type=client_credentials"), Err(GrantError::InvalidRequest(_))));
        let charset = HeaderValue::from_static("application/x-www-form-urlencoded; charset=UTF-8");
        assert!(parse(Some(&charset), None, b"grant_type=refresh_token&refresh_token=x").is_ok());
    }

    #[test]
    fn app_and_scope_are_checked_without_echoing_them() {
        let auth = basic("a", "b");
        let ok = request("grant_type=client_credentials&app=billing-worker&scope=orders.read+deploy.%3E", Some(&auth))
            .unwrap();
        assert_eq!(ok.app.as_deref(), Some("billing-worker"));
        assert_eq!(ok.scope, Some(vec!["orders.read".to_string(), "deploy.>".to_string()]));
        assert_eq!(request("grant_type=client_credentials&scope=", Some(&auth)).unwrap().scope, None);
        let bad_app = request("grant_type=client_credentials&app=-kw_secretlooking", Some(&auth)).unwrap_err();
        assert!(matches!(bad_app, GrantError::InvalidRequest(ref d) if !d.contains("secretlooking")), "{bad_app:?}");
        let bad_scope = request("grant_type=client_credentials&scope=a..b", Some(&auth)).unwrap_err();
        assert!(matches!(bad_scope, GrantError::InvalidScope(ref d) if !d.contains("a..b")), "{bad_scope:?}");
        let double_space = request("grant_type=client_credentials&scope=a++b", Some(&auth)).unwrap_err();
        assert!(matches!(double_space, GrantError::InvalidScope(_)));
        let many = format!("grant_type=client_credentials&scope={}", vec!["a"; MAX_SCOPES + 1].join("+"));
        assert!(matches!(request(&many, Some(&auth)), Err(GrantError::InvalidScope(_))));
    }

    #[test]
    fn scopes_narrow_to_the_keys_own_or_concrete_scopes_they_grant() {
        let granted = ["orders.read", "deploy.>", "reports.*"];
        let ask = |scopes: &[&str]| narrow(&granted, Some(&scopes.iter().map(|s| s.to_string()).collect::<Vec<_>>()));
        assert_eq!(narrow(&granted, None).unwrap(), vec!["orders.read", "deploy.>", "reports.*"]);
        assert_eq!(ask(&["orders.read"]).unwrap(), vec!["orders.read"]);
        assert_eq!(ask(&["deploy.prod.write", "reports.daily"]).unwrap(), vec!["deploy.prod.write", "reports.daily"]);
        assert_eq!(ask(&["deploy.>"]).unwrap(), vec!["deploy.>"], "a key's own pattern, exactly");
        for refused in [&["orders.write"][..], &["deploy.prod.>"], &["deploy"], &["reports.daily.all"], &["*"]] {
            assert!(matches!(ask(refused), Err(GrantError::InvalidScope(_))), "{refused:?}");
        }
        assert!(matches!(narrow::<&str>(&[], Some(&["a".to_string()])), Err(GrantError::InvalidScope(_))));
    }

    #[test]
    fn secrets_never_print() {
        let request = request("grant_type=client_credentials", Some(&basic("kw_abc", "kw_topsecret"))).unwrap();
        assert!(!format!("{request:?}").contains("topsecret"));
        let refresh = RefreshToken("eyJ.secret.sig".into());
        assert!(!format!("{refresh:?}").contains("secret"));
    }
}
