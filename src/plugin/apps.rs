//! `spec.applications` at a terminal: the Applications section of `describe` (the policy, and
//! every application seen or named with the verdict it gets now).

use jiff::Timestamp;

use super::keys::{aligned, field};
use super::render::{self, Table};
use crate::api::{AppState, Applications, KeyUsageStatus};

/// The Applications section of `describe`: the policy, then every application the KeyUsage
/// lists (`seen`) or the policy names, with the verdict the policy gives it now, and how many
/// sightings the KeyUsage could not list.
pub fn section(policy: Option<&Applications>, seen: &KeyUsageStatus, now: Timestamp) -> String {
    let mut out = String::new();
    let default = match policy.and_then(|p| p.default) {
        Some(default) => format!("{default:?}"),
        None => "Allow (default)".into(),
    };
    field(&mut out, "Default", &default);
    let (allowed, denied) = policy.map_or((&[][..], &[][..]), |p| (&p.allowed[..], &p.denied[..]));
    field(&mut out, "Allowed", &render::joined(allowed).replace(',', ", "));
    field(&mut out, "Denied", &render::joined(denied).replace(',', ", "));
    let mut text = aligned(&out);
    let rows = rows(policy, seen, now);
    if rows.is_empty() {
        text.push_str("<none seen>\n");
    } else {
        let mut table = Table::new(&["NAME", "STATE", "FIRST SEEN", "LAST SEEN"]);
        rows.into_iter().for_each(|row| table.row(row));
        text.push_str(&table.render());
    }
    if seen.applications_overflow > 0 {
        text.push_str(&format!(
            "+{} sightings of other applications, not listed (a KeyUsage lists at most {})\n",
            seen.applications_overflow,
            crate::api::usage::MAX_APPLICATIONS
        ));
    }
    text
}

/// One row per application: those seen first (in the KeyUsage's order), then those only named
/// in spec, never seen.
fn rows(policy: Option<&Applications>, seen: &KeyUsageStatus, now: Timestamp) -> Vec<Vec<String>> {
    let policy = policy.cloned().unwrap_or_default();
    let ago = |at: Timestamp| format!("{} ago", render::short(now.duration_since(at)));
    let mut rows: Vec<Vec<String>> = seen
        .applications
        .iter()
        .map(|app| {
            vec![
                app.name.clone(),
                state_text(policy.state(Some(&app.name)), Some(app.state)),
                ago(app.first_seen_at.0),
                ago(app.last_seen_at.0),
            ]
        })
        .collect();
    let named = policy.allowed.iter().chain(&policy.denied);
    for name in named.filter(|name| !seen.applications.iter().any(|app| &app.name == *name)) {
        rows.push(vec![name.clone(), state_text(policy.state(Some(name)), None), "-".into(), "-".into()]);
    }
    rows
}

/// The verdict the policy gives now; the one its last request got too, when that differs (the
/// policy changed since, as `app allow` of a pending application does).
fn state_text(now: AppState, last_seen: Option<AppState>) -> String {
    match last_seen {
        Some(then) if then != now => format!("{} (was {})", now.as_str(), then.as_str()),
        _ => now.as_str().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::AppDefault;
    use serde_json::json;

    fn policy(default: Option<AppDefault>, allowed: &[&str], denied: &[&str]) -> Applications {
        Applications {
            default,
            allowed: allowed.iter().map(|s| s.to_string()).collect(),
            denied: denied.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn usage(applications: serde_json::Value, overflow: i64) -> KeyUsageStatus {
        serde_json::from_value(json!({"applications": applications, "applicationsOverflow": overflow})).unwrap()
    }

    #[test]
    fn describe_shows_the_policy_and_every_application_seen_or_named() {
        let now: Timestamp = "2026-12-01T12:00:00Z".parse().unwrap();
        let seen = usage(
            json!([
                {"name": "billing-worker", "state": "Allowed", "firstSeenAt": "2026-11-28T12:00:00Z", "lastSeenAt": "2026-12-01T11:55:00Z"},
                {"name": "new-report", "state": "Pending", "firstSeenAt": "2026-12-01T11:00:00Z", "lastSeenAt": "2026-12-01T11:00:00Z"},
            ]),
            12,
        );
        let p = policy(Some(AppDefault::Pending), &["billing-worker", "new-report"], &["legacy-cron"]);
        assert_eq!(
            section(Some(&p), &seen, now),
            "\
Default:  Pending
Allowed:  billing-worker, new-report
Denied:   legacy-cron
NAME             STATE                   FIRST SEEN   LAST SEEN
billing-worker   Allowed                 3d ago       5m ago
new-report       Allowed (was Pending)   60m ago      60m ago
legacy-cron      Denied                  -            -
+12 sightings of other applications, not listed (a KeyUsage lists at most 64)
"
        );
    }

    #[test]
    fn describe_of_a_key_without_a_policy_or_usage_says_every_application_is_allowed() {
        let text = section(None, &KeyUsageStatus::default(), Timestamp::now());
        assert_eq!(text, "Default:  Allow (default)\nAllowed:  <none>\nDenied:   <none>\n<none seen>\n");
        let seen = usage(
            json!([{"name": "a", "state": "Allowed", "firstSeenAt": "2026-12-01T11:00:00Z", "lastSeenAt": "2026-12-01T11:00:00Z"}]),
            0,
        );
        let text = section(None, &seen, "2026-12-01T12:00:00Z".parse().unwrap());
        assert!(
            text.ends_with("NAME   STATE     FIRST SEEN   LAST SEEN\na      Allowed   60m ago      60m ago\n"),
            "{text}"
        );
    }
}
