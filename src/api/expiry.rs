//! Expiry arithmetic: the operator's expiry policy, and when a key or token expires given its
//! `expiresAfter` or `expiresAt` and the time its lifetime counts from.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::validate::SpecError;
use crate::duration;

/// Lifetime of a key or token that sets neither `expiresAfter` nor `expiresAt`, unless
/// `--default-expiry` (or a shorter `--max-expiry`) says otherwise: 90 days.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(90 * 86_400);

/// The operator's expiry settings (`--default-expiry`, `--max-expiry`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpiryPolicy {
    pub default: Duration,
    pub max: Option<Duration>,
}

impl Default for ExpiryPolicy {
    fn default() -> Self {
        Self { default: DEFAULT_EXPIRY, max: None }
    }
}

/// Computes expiry from `expiresAfter` or `expiresAt` (exclusive), counting from `from`.
pub fn expiry(
    path: &str,
    expires_after: Option<&str>,
    expires_at: Option<&str>,
    from: Timestamp,
    policy: &ExpiryPolicy,
) -> Result<Timestamp, SpecError> {
    let (field, lifetime_end) = match (expires_after, expires_at) {
        (Some(_), Some(at)) => {
            return Err(SpecError::new(
                format!("{path}.expiresAt"),
                at,
                "expiresAt and expiresAfter are exclusive; set only one",
            ));
        }
        (Some(after), None) => {
            let field = format!("{path}.expiresAfter");
            let lifetime = duration::parse(after).map_err(|p| SpecError::new(&field, after, p))?;
            (field, add(from, lifetime))
        }
        (None, Some(at)) => {
            let field = format!("{path}.expiresAt");
            let ts = parse_timestamp(at).map_err(|problem| SpecError::new(&field, at, problem))?;
            (field, ts)
        }
        (None, None) => return Ok(add(from, policy.default)),
    };
    if let Some(max) = policy.max
        && lifetime_end > add(from, max)
    {
        let value = expires_after.or(expires_at).unwrap_or_default();
        return Err(SpecError::new(
            field,
            value,
            format!("exceeds the operator's maximum lifetime of {} (--max-expiry)", duration::format(max)),
        ));
    }
    Ok(lifetime_end)
}

/// Parses an RFC 3339 timestamp, telling a well-formed one beyond the range this operator
/// computes with (jiff's, which ends late on 9999-12-30) from one that is not a timestamp.
pub fn parse_timestamp(text: &str) -> Result<Timestamp, String> {
    text.parse::<Timestamp>().map_err(|_| match jiff::fmt::temporal::Pieces::parse(text) {
        Ok(pieces) if pieces.time().is_some() && pieces.offset().is_some() => format!(
            "is later than the latest expiry this operator handles, {}; use an earlier time",
            Timestamp::MAX.strftime("%Y-%m-%dT%H:%M:%SZ")
        ),
        _ => "expected an RFC 3339 timestamp such as 2027-01-01T00:00:00Z".to_string(),
    })
}

/// `from + lifetime`, saturating: lifetimes are capped by `duration::parse` far below overflow.
pub fn add(from: Timestamp, lifetime: Duration) -> Timestamp {
    let lifetime = SignedDuration::try_from(lifetime).unwrap_or(SignedDuration::MAX);
    from.checked_add(lifetime).unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_expiry_is_90_days() {
        assert_eq!(duration::format(DEFAULT_EXPIRY), "12w6d");
        assert_eq!(ExpiryPolicy::default(), ExpiryPolicy { default: DEFAULT_EXPIRY, max: None });
    }
}
