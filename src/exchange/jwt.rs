//! Access tokens (RFC 9068 JWTs, `typ: at+jwt`) and refresh tokens (JWS of their own `typ`,
//! `keyward-rt+jwt`): their claims, how they are signed with the current key of the
//! [`KeySet`], and how a presented one is checked. Pure: the clock and the keys are arguments.
//! Every signature is made and checked by `jsonwebtoken`; nothing here is cryptography.

use jiff::Timestamp;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Header, Validation};
use rand::TryRng as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::judge::Code;
use crate::signing::{ALGORITHM, KeySet};

/// `typ` of an access token (RFC 9068 2.1).
pub const ACCESS_TYP: &str = "at+jwt";
/// `typ` of a refresh token: never accepted where an access token is, nor the reverse.
pub const REFRESH_TYP: &str = "keyward-rt+jwt";
/// Longest JWT read; a longer one is malformed without being decoded.
pub const MAX_JWT_BYTES: usize = 4 * 1024;

/// The issuer and audience tokens are minted for and checked against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issuer {
    pub issuer: String,
    pub audience: String,
}

/// The `keyward` claim: the key a token stands for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyClaim {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// The Credential token's name; null for an ApiKey.
    pub token: Option<String>,
    pub uid: String,
    pub app: Option<String>,
}

impl KeyClaim {
    /// `<namespace>/<name>`, plus `/<token name>` for a Credential token.
    pub fn subject(&self) -> String {
        match &self.token {
            Some(token) => format!("{}/{}/{token}", self.namespace, self.name),
            None => format!("{}/{}", self.namespace, self.name),
        }
    }
}

/// The claims of an access token (RFC 9068 2.2, and `keyward`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub client_id: String,
    pub scope: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    pub keyward: KeyClaim,
}

/// The claims of a refresh token. It names the API token by hash, so that a re-issued token
/// (a new hash) ends the session, and carries the session's absolute end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub client_id: String,
    pub scope: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    /// The session: the same for every refresh of one client-credentials exchange.
    pub sid: String,
    /// When the session ends, whatever its refresh tokens say (`--session-max` after its start).
    pub session_end: i64,
    /// The `tokenHash` of the API token exchanged.
    pub token_hash: String,
    pub keyward: KeyClaim,
}

/// What a new token needs beside its key claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lifetimes {
    pub now: i64,
    pub access_exp: i64,
    pub refresh_exp: i64,
}

/// `exp` of an access token minted at `now`: `ttl` later, never past the key's own expiry (nor
/// the session's end), in whole seconds rounded down so it is never late.
pub fn access_exp(now: Timestamp, ttl_seconds: i64, key_expires: Timestamp, session_end: i64) -> i64 {
    let key_end = key_expires.as_second();
    now.as_second().saturating_add(ttl_seconds).min(key_end).min(session_end)
}

/// `exp` of a refresh token: `grace` after its access token's, never past the session's end.
pub fn refresh_exp(access_exp: i64, grace_seconds: i64, session_end: i64) -> i64 {
    access_exp.saturating_add(grace_seconds).min(session_end)
}

/// 128 bits from the OS RNG, base64url: `jti` and session IDs.
pub fn random_id() -> Result<String, String> {
    use base64::Engine as _;
    let mut bytes = [0u8; 16];
    rand::rngs::SysRng
        .try_fill_bytes(&mut bytes)
        .map_err(|error| format!("the OS random number generator failed: {error}"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("no signing keys yet")]
    NoKeys,
    #[error("cannot sign: {0}")]
    Sign(String),
}

/// Signs `claims` as a JWS of `typ` with the key that signs at `now`.
pub fn mint<T: Serialize>(keys: &KeySet, now: Timestamp, typ: &str, claims: &T) -> Result<(String, String), MintError> {
    let key = keys.current(now).ok_or(MintError::NoKeys)?;
    let mut header = Header::new(ALGORITHM);
    header.typ = Some(typ.to_string());
    header.kid = Some(key.kid.clone());
    crate::signing::signer::install();
    // jsonwebtoken's errors name the failure, never key material.
    let token = jsonwebtoken::encode(&header, claims, key.encoding()).map_err(|e| MintError::Sign(e.to_string()))?;
    Ok((token, key.kid.clone()))
}

/// A checked token: its claims and the `kid` that signed it.
#[derive(Debug)]
pub struct Checked<T> {
    pub claims: T,
    pub kid: String,
}

/// Whether a `typ` header is `want` (RFC 9068 also allows the `application/` form).
fn typ_is(typ: Option<&str>, want: &str) -> bool {
    typ.is_some_and(|typ| {
        let typ = typ.strip_prefix("application/").unwrap_or(typ);
        typ.eq_ignore_ascii_case(want)
    })
}

/// Checks a presented JWS of `typ`: size, header (`alg` ES256 only, `typ`, a known `kid`), the
/// signature, `iss`, `aud` (`audience`), `sub`, and the claims' shape. `exp` is left to the
/// caller, which compares it with its own clock (and may still want the claims to say whose
/// token expired).
///
/// Refused with `MALFORMED` when it is no JWS of ours in form (too long, not three base64url
/// parts, JSON that does not parse, another `alg`), `NOT_FOUND` when it is well formed but not
/// a token we issued of this `typ` (unknown `kid`, bad signature, other `iss` or `aud`, other
/// `typ`, missing claims).
pub fn check<T: DeserializeOwned>(
    keys: &KeySet,
    token: &str,
    typ: &str,
    issuer: &str,
    audience: &str,
) -> Result<Checked<T>, Code> {
    if token.len() > MAX_JWT_BYTES || token.bytes().filter(|&b| b == b'.').count() != 2 {
        return Err(Code::Malformed);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| Code::Malformed)?;
    if header.alg != ALGORITHM {
        return Err(Code::Malformed);
    }
    if !typ_is(header.typ.as_deref(), typ) {
        return Err(Code::NotFound);
    }
    let kid = header.kid.ok_or(Code::NotFound)?;
    let key = keys.get(&kid).ok_or(Code::NotFound)?;
    let mut validation = Validation::new(ALGORITHM);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.leeway = 0;
    validation.validate_exp = false;
    validation.validate_nbf = false;
    match jsonwebtoken::decode::<T>(token, &key.decoding, &validation) {
        Ok(data) => Ok(Checked { claims: data.claims, kid }),
        Err(error) => Err(match error.kind() {
            ErrorKind::InvalidSignature
            | ErrorKind::InvalidIssuer
            | ErrorKind::InvalidAudience
            | ErrorKind::InvalidSubject
            | ErrorKind::MissingRequiredClaim(_)
            | ErrorKind::ExpiredSignature
            | ErrorKind::ImmatureSignature => Code::NotFound,
            _ => Code::Malformed,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::{Stored, StoredKey};
    use base64::Engine as _;

    const ISS: &str = "https://keyward.example";

    fn keys() -> (KeySet, StoredKey) {
        let key = StoredKey::generate("2026-01-01T00:00:00Z".parse().unwrap()).unwrap();
        (KeySet::from_stored("s", &Stored { keys: vec![key.clone()] }).unwrap(), key)
    }

    fn claim() -> KeyClaim {
        KeyClaim {
            kind: "ApiKey".into(),
            namespace: "team-a".into(),
            name: "ci".into(),
            token: None,
            uid: "u-1".into(),
            app: Some("billing".into()),
        }
    }

    fn access(exp: i64) -> AccessClaims {
        AccessClaims {
            iss: ISS.into(),
            sub: claim().subject(),
            aud: ISS.into(),
            client_id: "kw_abcdefgh".into(),
            scope: "orders.read".into(),
            iat: 1_767_225_600,
            exp,
            jti: random_id().unwrap(),
            keyward: claim(),
        }
    }

    fn now() -> Timestamp {
        "2026-02-01T00:00:00Z".parse().unwrap()
    }

    fn b64(json: &serde_json::Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json.to_string())
    }

    #[test]
    fn an_access_token_round_trips_with_its_header_and_claims() {
        let (set, key) = keys();
        let claims = access(1_900_000_000);
        let (token, kid) = mint(&set, now(), ACCESS_TYP, &claims).unwrap();
        assert_eq!(kid, key.kid);
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(
            (header.alg, header.typ.as_deref(), header.kid.as_deref()),
            (ALGORITHM, Some("at+jwt"), Some(key.kid.as_str()))
        );
        let checked: Checked<AccessClaims> = check(&set, &token, ACCESS_TYP, ISS, ISS).unwrap();
        assert_eq!(checked.claims, claims);
        assert_eq!(claims.jti.len(), 22, "128 bits in base64url");
        assert_ne!(claims.jti, access(0).jti);
    }

    #[test]
    fn an_access_token_is_no_refresh_token_and_the_reverse() {
        let (set, _) = keys();
        let (token, _) = mint(&set, now(), ACCESS_TYP, &access(1_900_000_000)).unwrap();
        assert_eq!(check::<RefreshClaims>(&set, &token, REFRESH_TYP, ISS, ISS).unwrap_err(), Code::NotFound);
        let refresh = RefreshClaims {
            iss: ISS.into(),
            sub: "team-a/ci".into(),
            aud: ISS.into(),
            client_id: "kw_abcdefgh".into(),
            scope: String::new(),
            iat: 0,
            exp: 1_900_000_000,
            jti: "j".into(),
            sid: "s".into(),
            session_end: 1_900_000_000,
            token_hash: "sha256:00".into(),
            keyward: claim(),
        };
        let (token, _) = mint(&set, now(), REFRESH_TYP, &refresh).unwrap();
        assert_eq!(check::<AccessClaims>(&set, &token, ACCESS_TYP, ISS, ISS).unwrap_err(), Code::NotFound);
        assert!(check::<RefreshClaims>(&set, &token, REFRESH_TYP, ISS, ISS).is_ok());
    }

    #[test]
    fn hostile_tokens_are_refused_cleanly() {
        let (set, _) = keys();
        let (good, kid) = mint(&set, now(), ACCESS_TYP, &access(1_900_000_000)).unwrap();
        let parts: Vec<&str> = good.split('.').collect();
        let payload = parts[1];
        let header = |h: serde_json::Value| b64(&h);
        let forged_payload = b64(&serde_json::json!({"iss": ISS, "aud": ISS, "sub": "x", "exp": 1_900_000_000}));
        let (other_set, _) = keys();
        let (other_signed, _) = mint(&other_set, now(), ACCESS_TYP, &access(1_900_000_000)).unwrap();
        let cases: Vec<(&str, String, Code)> = vec![
            ("empty", String::new(), Code::Malformed),
            ("one part", "abc".into(), Code::Malformed),
            ("four parts", format!("{good}.x"), Code::Malformed),
            ("too long", format!("{}.{}.{}", "a".repeat(MAX_JWT_BYTES), payload, parts[2]), Code::Malformed),
            ("header not base64", format!("!!!.{payload}.{}", parts[2]), Code::Malformed),
            (
                "header not JSON",
                format!(
                    "{}.{payload}.{}",
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("{not json"),
                    parts[2]
                ),
                Code::Malformed,
            ),
            (
                "alg none",
                format!("{}.{payload}.", header(serde_json::json!({"alg": "none", "typ": "at+jwt", "kid": kid}))),
                Code::Malformed,
            ),
            (
                "alg HS256",
                format!(
                    "{}.{payload}.{}",
                    header(serde_json::json!({"alg": "HS256", "typ": "at+jwt", "kid": kid})),
                    parts[2]
                ),
                Code::Malformed,
            ),
            (
                "unknown kid",
                format!(
                    "{}.{payload}.{}",
                    header(serde_json::json!({"alg": "ES256", "typ": "at+jwt", "kid": "nope"})),
                    parts[2]
                ),
                Code::NotFound,
            ),
            (
                "no kid",
                format!("{}.{payload}.{}", header(serde_json::json!({"alg": "ES256", "typ": "at+jwt"})), parts[2]),
                Code::NotFound,
            ),
            (
                "wrong typ",
                format!(
                    "{}.{payload}.{}",
                    header(serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": kid})),
                    parts[2]
                ),
                Code::NotFound,
            ),
            ("forged payload", format!("{}.{forged_payload}.{}", parts[0], parts[2]), Code::NotFound),
            ("signature cut", format!("{}.{payload}.{}", parts[0], &parts[2][..12]), Code::NotFound),
            ("signature not base64", format!("{}.{payload}.!!!", parts[0]), Code::Malformed),
            (
                "signed by a stranger's key under our kid",
                {
                    let p: Vec<&str> = other_signed.split('.').collect();
                    format!("{}.{}.{}", parts[0], p[1], p[2])
                },
                Code::NotFound,
            ),
        ];
        for (what, token, want) in cases {
            let got = check::<AccessClaims>(&set, &token, ACCESS_TYP, ISS, ISS).map(|_| ());
            assert_eq!(got, Err(want), "{what}");
        }
        assert_eq!(
            check::<AccessClaims>(&set, &good, ACCESS_TYP, "https://other", ISS).unwrap_err(),
            Code::NotFound,
            "iss"
        );
        assert_eq!(check::<AccessClaims>(&set, &good, ACCESS_TYP, ISS, "other").unwrap_err(), Code::NotFound, "aud");
        assert_eq!(
            check::<AccessClaims>(&KeySet::default(), &good, ACCESS_TYP, ISS, ISS).unwrap_err(),
            Code::NotFound,
            "no keys"
        );
        // Claims of the wrong shape under a good signature.
        let (odd, _) =
            mint(&set, now(), ACCESS_TYP, &serde_json::json!({"iss": ISS, "aud": ISS, "sub": "x", "exp": 1})).unwrap();
        assert_eq!(check::<AccessClaims>(&set, &odd, ACCESS_TYP, ISS, ISS).unwrap_err(), Code::Malformed);
    }

    #[test]
    fn exp_is_never_past_the_key_nor_the_session() {
        let now: Timestamp = "2026-02-01T00:00:00Z".parse().unwrap();
        let far: Timestamp = "2027-01-01T00:00:00Z".parse().unwrap();
        let n = now.as_second();
        assert_eq!(access_exp(now, 900, far, i64::MAX), n + 900);
        let soon: Timestamp = "2026-02-01T00:05:00.900Z".parse().unwrap();
        assert_eq!(access_exp(now, 900, soon, i64::MAX), n + 300, "rounded down: never late");
        assert_eq!(access_exp(now, 900, far, n + 60), n + 60);
        assert_eq!(refresh_exp(n + 900, 3_600, i64::MAX), n + 4_500);
        assert_eq!(refresh_exp(n + 900, 3_600, n + 1_000), n + 1_000);
    }

    #[test]
    fn the_subject_names_the_credential_token() {
        let mut claim = claim();
        assert_eq!(claim.subject(), "team-a/ci");
        claim.token = Some("primary".into());
        assert_eq!(claim.subject(), "team-a/ci/primary");
    }
}
