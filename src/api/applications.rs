//! `spec.applications`: which applications may present a key's tokens. Shared by both kinds,
//! judged by the verifier (see [`crate::judge`]) after the token itself is found good.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::names::{MAX_APP_NAME, app_name};
use super::validate::SpecError;

/// The most names one list (`allowed` or `denied`) holds.
pub const MAX_LISTED_APPS: usize = 256;

/// Which applications may use the key. Absent: every application (and a request naming none)
/// is allowed.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Applications {
    /// What an application in neither list gets: Allow (also when absent), Pending (401
    /// APP_PENDING until it is allowed) or Deny (403 APP_DENIED). A request that names no
    /// application gets the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "default_schema")]
    pub default: Option<AppDefault>,

    /// Applications that pass (names of 1 to 63 characters of A-Z, a-z, 0-9, '.', '_' and '-',
    /// starting with a letter or digit; at most 256).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_LISTED_APPS), inner(length(min = 1, max = MAX_APP_NAME), regex(pattern = APP_PATTERN)))]
    pub allowed: Vec<String>,

    /// Applications refused with APP_DENIED (same names; at most 256; never also in allowed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_LISTED_APPS), inner(length(min = 1, max = MAX_APP_NAME), regex(pattern = APP_PATTERN)))]
    pub denied: Vec<String>,
}

/// The schema's form of [`app_name`], so that `kubectl apply` refuses a bad name at once.
const APP_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]*$";

/// What an application named in neither list gets.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum AppDefault {
    #[default]
    Allow,
    Pending,
    Deny,
}

/// A plain string enum: schemars would add `null` to the enum of an `Option`.
fn default_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "enum": ["Allow", "Pending", "Deny"]})
}

/// The verdict on one application presenting a key, as the KeyUsage records it.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema)]
pub enum AppState {
    // In this order: a tie between two sightings in one resolution step (two verifier replicas)
    // goes to the later state in the usual edit, Pending, then Allowed or Denied.
    Pending,
    Allowed,
    Denied,
}

impl AppState {
    pub fn as_str(self) -> &'static str {
        match self {
            AppState::Pending => "Pending",
            AppState::Allowed => "Allowed",
            AppState::Denied => "Denied",
        }
    }
}

impl Applications {
    /// The verdict on `app` (`None`: the request named no application).
    pub fn state(&self, app: Option<&str>) -> AppState {
        if let Some(app) = app {
            if self.denied.iter().any(|d| d == app) {
                return AppState::Denied;
            }
            if self.allowed.iter().any(|a| a == app) {
                return AppState::Allowed;
            }
        }
        match self.default.unwrap_or_default() {
            AppDefault::Allow => AppState::Allowed,
            AppDefault::Pending => AppState::Pending,
            AppDefault::Deny => AppState::Denied,
        }
    }

    /// Whether every application passes: no policy at all, or one that names no denial and
    /// defaults to Allow (the verifier then skips the check).
    pub fn allows_all(&self) -> bool {
        self.denied.is_empty() && self.default.unwrap_or_default() == AppDefault::Allow
    }

    /// Checks every name, the list lengths, and that no name is in both lists or twice in one.
    pub fn validate(&self) -> Result<(), SpecError> {
        for (list, names) in [("allowed", &self.allowed), ("denied", &self.denied)] {
            if names.len() > MAX_LISTED_APPS {
                return Err(SpecError::new(
                    format!("spec.applications.{list}"),
                    &format!("{} names", names.len()),
                    format!("at most {MAX_LISTED_APPS} applications"),
                ));
            }
            for (i, name) in names.iter().enumerate() {
                let field = format!("spec.applications.{list}[{i}]");
                app_name(name).map_err(|problem| SpecError::new(&field, name, problem))?;
                if names[..i].contains(name) {
                    return Err(SpecError::new(field, name, "listed twice"));
                }
            }
        }
        for (i, name) in self.denied.iter().enumerate() {
            if self.allowed.contains(name) {
                return Err(SpecError::new(
                    format!("spec.applications.denied[{i}]"),
                    name,
                    "is also in spec.applications.allowed: an application is either allowed or denied",
                ));
            }
        }
        Ok(())
    }

    /// This policy with `app` allowed (`AppState::Allowed`), denied, or in neither list
    /// (`None`: forgotten, so the default applies again). What `kubectl apikey app` writes.
    pub fn with(&self, app: &str, state: Option<AppState>) -> Applications {
        let mut changed = self.clone();
        changed.allowed.retain(|a| a != app);
        changed.denied.retain(|d| d != app);
        match state {
            Some(AppState::Allowed) => changed.allowed.push(app.to_string()),
            Some(AppState::Denied) => changed.denied.push(app.to_string()),
            Some(AppState::Pending) | None => {}
        }
        changed
    }
}

/// Policies for tests, here and in the plugin's.
#[cfg(test)]
pub(crate) fn policy(default: Option<AppDefault>, allowed: &[&str], denied: &[&str]) -> Applications {
    Applications {
        default,
        allowed: allowed.iter().map(|s| s.to_string()).collect(),
        denied: denied.iter().map(|s| s.to_string()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denied_then_allowed_then_the_default() {
        for (default, other) in [
            (None, AppState::Allowed),
            (Some(AppDefault::Allow), AppState::Allowed),
            (Some(AppDefault::Pending), AppState::Pending),
            (Some(AppDefault::Deny), AppState::Denied),
        ] {
            let p = policy(default, &["billing-worker"], &["legacy-cron"]);
            assert_eq!(p.state(Some("legacy-cron")), AppState::Denied);
            assert_eq!(p.state(Some("billing-worker")), AppState::Allowed);
            assert_eq!(p.state(Some("new-report")), other, "{default:?}");
            assert_eq!(p.state(None), other, "no name follows the default");
        }
        assert!(Applications::default().allows_all());
        assert!(policy(None, &["a"], &[]).allows_all());
        assert!(!policy(None, &[], &["a"]).allows_all());
        assert!(!policy(Some(AppDefault::Pending), &[], &[]).allows_all());
    }

    #[test]
    fn a_bad_policy_names_the_field_and_value() {
        let error = |p: Applications| p.validate().unwrap_err().to_string();
        assert!(
            error(policy(None, &["ok", "-bad"], &[]))
                .starts_with("spec.applications.allowed[1]: invalid value \"-bad\"")
        );
        assert!(
            error(policy(None, &[], &["a", "a"]))
                .contains("spec.applications.denied[1]: invalid value \"a\": listed twice")
        );
        assert!(
            error(policy(None, &["x"], &["x"]))
                .contains("spec.applications.denied[0]: invalid value \"x\": is also in")
        );
        let many: Vec<String> = (0..=MAX_LISTED_APPS).map(|i| format!("app{i}")).collect();
        let too_many = Applications { allowed: many, ..Default::default() };
        assert!(error(too_many).contains("at most 256"));
        assert_eq!(policy(Some(AppDefault::Deny), &["a"], &["b"]).validate(), Ok(()));
    }

    #[test]
    fn allow_deny_and_forget_move_one_name_between_the_lists() {
        let p = policy(Some(AppDefault::Pending), &["a"], &["b"]);
        assert_eq!(p.with("b", Some(AppState::Allowed)), policy(Some(AppDefault::Pending), &["a", "b"], &[]));
        assert_eq!(p.with("a", Some(AppState::Denied)), policy(Some(AppDefault::Pending), &[], &["b", "a"]));
        assert_eq!(p.with("a", None), policy(Some(AppDefault::Pending), &[], &["b"]));
        assert_eq!(p.with("a", Some(AppState::Allowed)), p, "already allowed: unchanged");
    }
}
