//! `spec.applications` at a terminal: the Applications section of `describe` (the policy, and
//! every application seen or named with the verdict it gets now), and `app allow|deny|forget`,
//! which edit the policy with the resourceVersion the edit was computed from.

use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use super::cluster::Cluster;
use super::error::{PluginError, Result};
use super::keys::{self, FIELD_MANAGER, KeyResource, aligned, field};
use super::render::{self, Table};
use crate::api::{AppDefault, AppState, Applications, KeyUsageStatus};

/// Said in the help of every `app` command: the edit is of spec, which GitOps tools own.
pub const GITOPS: &str = "Under Argo CD or Flux the repository owns the spec: this edit changes the live object's \
                          spec.applications (field manager kubectl-apikey), and a self-healing sync reverts it \
                          unless the same change is committed to the repository.";

/// `app allow|deny|forget`: which list of spec.applications an application goes in.
#[derive(clap::Subcommand, Debug)]
pub enum AppCommand {
    /// Let APP use the key: add it to spec.applications.allowed (and take it out of denied).
    #[command(after_help = GITOPS)]
    Allow(AppArgs),
    /// Refuse APP (APP_DENIED): add it to spec.applications.denied (and take it out of allowed).
    #[command(after_help = GITOPS)]
    Deny(AppArgs),
    /// Take APP out of both lists: spec.applications.default applies to it again.
    #[command(after_help = GITOPS)]
    Forget(AppArgs),
}

#[derive(clap::Args, Debug)]
pub struct AppArgs {
    /// The key's name.
    pub name: String,
    /// The application, as it names itself (X-Keyward-App, or the app field of /v1/verify and
    /// /v1/token).
    #[arg(value_parser = parse_app)]
    pub app: String,
}

/// Checked before anything is sent: a name the verifier would never see is a typo.
fn parse_app(name: &str) -> std::result::Result<String, String> {
    crate::api::names::app_name(name).map(|()| name.to_string())
}

/// What an `app` command does to one application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Allow,
    Deny,
    Forget,
}

impl Verb {
    fn as_str(self) -> &'static str {
        match self {
            Verb::Allow => "allow",
            Verb::Deny => "deny",
            Verb::Forget => "forget",
        }
    }

    /// The list the application ends up in, as [`Applications::with`] takes it.
    fn state(self) -> Option<AppState> {
        match self {
            Verb::Allow => Some(AppState::Allowed),
            Verb::Deny => Some(AppState::Denied),
            Verb::Forget => None,
        }
    }
}

impl AppCommand {
    fn parts(self) -> (Verb, AppArgs) {
        match self {
            AppCommand::Allow(args) => (Verb::Allow, args),
            AppCommand::Deny(args) => (Verb::Deny, args),
            AppCommand::Forget(args) => (Verb::Forget, args),
        }
    }
}

/// What an `app` command makes of a key's spec.applications.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Edit {
    /// Nothing to write: the application is where the command puts it already.
    Unchanged,
    /// The policy to write; `None` when nothing is left of it, so spec.applications goes (the
    /// same as an empty policy: every application allowed).
    Changed(Option<Applications>),
}

/// The edit of `policy` (spec.applications, absent: `None`) that `verb` makes for `app`.
pub fn edit(policy: Option<&Applications>, app: &str, verb: Verb) -> Edit {
    let current = policy.cloned().unwrap_or_default();
    let listed = |names: &[String]| names.iter().any(|n| n == app);
    let already = match verb {
        Verb::Allow => listed(&current.allowed) && !listed(&current.denied),
        Verb::Deny => listed(&current.denied) && !listed(&current.allowed),
        Verb::Forget => !listed(&current.allowed) && !listed(&current.denied),
    };
    // Compared by where the name is, not by equality: `with` moves a name to the end of its
    // list, and a reordered list is no change worth a write.
    if already {
        return Edit::Unchanged;
    }
    let changed = current.with(app, verb.state());
    Edit::Changed((changed != Applications::default()).then_some(changed))
}

/// The JSON merge patch that writes `applications` computed from the object at
/// `resource_version`: the API server refuses it (409) if the object changed since. A merge
/// patch merges objects field by field, so both lists are written whole (`null` removes an
/// empty one); `default` is left as it is, since no command changes it.
pub fn patch(applications: Option<&Applications>, resource_version: &str) -> Value {
    let list = |names: &[String]| if names.is_empty() { Value::Null } else { json!(names) };
    let applications = match applications {
        None => Value::Null,
        Some(a) => json!({"allowed": list(&a.allowed), "denied": list(&a.denied)}),
    };
    json!({"metadata": {"resourceVersion": resource_version}, "spec": {"applications": applications}})
}

/// Writes `applications` into `key` as it was read: a key changed since is refused with
/// [`PluginError::Conflict`] (exit code 13), never overwritten.
pub async fn write<K: KeyResource>(cluster: &Cluster, key: &K, applications: Option<&Applications>) -> Result<K> {
    let name = key.name_any();
    let subject = keys::subject::<K>(cluster, Some(&name));
    let Some(resource_version) = key.resource_version() else {
        // Without one the patch would have no precondition and could overwrite another edit.
        return Err(PluginError::Other(format!("{subject} was read without a resourceVersion; nothing was written")));
    };
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    let body = patch(applications, &resource_version);
    match keys::api::<K>(cluster).patch(&name, &params, &Patch::Merge(&body)).await {
        Ok(written) => Ok(written),
        Err(e) => Err(cluster.explain(e, subject).await),
    }
}

/// `app allow|deny|forget NAME APP`: reads the key, edits its spec.applications, and writes it
/// with the resourceVersion it read; no write when nothing changes.
pub async fn run<K: KeyResource>(cluster: &Cluster, command: AppCommand) -> Result<()> {
    let (verb, AppArgs { name, app }) = command.parts();
    let key: K = keys::get_for(cluster, &name, &format!("app {} {name} {app}", verb.as_str())).await?;
    let shown = format!("{}.keyward.io/{name}", K::NOUN);
    let policy = key.policy().applications.as_ref();
    let line = match edit(policy, &app, verb) {
        Edit::Unchanged => format!("{shown} unchanged ({})\n", unchanged(&app, verb)),
        Edit::Changed(changed) => {
            if let Some(changed) = &changed {
                changed
                    .validate()
                    .map_err(|e| PluginError::Invalid(format!("cannot {} {app:?}: {e}", verb.as_str())))?;
            }
            write(cluster, &key, changed.as_ref()).await?;
            format!("{shown}: {}\n", done(&app, verb, changed.as_ref()))
        }
    };
    render::print_stdout(&line)?;
    if verb == Verb::Allow && default_of(policy) == AppDefault::Allow {
        eprintln!("{}", open_door_note::<K>(cluster, &name, policy));
    }
    Ok(())
}

fn default_of(policy: Option<&Applications>) -> AppDefault {
    policy.and_then(|p| p.default).unwrap_or_default()
}

/// Why nothing was written.
fn unchanged(app: &str, verb: Verb) -> String {
    match verb {
        Verb::Allow => format!("application {app:?} is already allowed"),
        Verb::Deny => format!("application {app:?} is already denied"),
        Verb::Forget => format!("application {app:?} is in neither spec.applications.allowed nor denied"),
    }
}

/// What was written, as kubectl confirms a change.
fn done(app: &str, verb: Verb, policy: Option<&Applications>) -> String {
    match verb {
        Verb::Allow => format!("application {app:?} allowed"),
        Verb::Deny => format!("application {app:?} denied"),
        Verb::Forget => {
            let now = policy.cloned().unwrap_or_default().state(Some(app));
            format!("application {app:?} forgotten; the default applies to it again ({})", now.as_str())
        }
    }
}

/// Allowing under the default Allow changes nothing for anyone yet: says how to make the list
/// mean something.
fn open_door_note<K: KeyResource>(cluster: &Cluster, name: &str, policy: Option<&Applications>) -> String {
    let default = match policy.and_then(|p| p.default) {
        Some(_) => "Allow",
        None => "Allow (unset)",
    };
    format!(
        "note: spec.applications.default is {default}, so every application not denied passes already; to let in \
         only allowed ones, set it to Pending or Deny: kubectl patch {} {name} -n {} --type merge -p \
         '{{\"spec\":{{\"applications\":{{\"default\":\"Pending\"}}}}}}'",
        K::NOUN,
        cluster.namespace
    )
}

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
    use crate::api::applications::policy;

    #[test]
    fn allow_on_a_key_without_a_policy_lists_it_and_leaves_the_default_absent() {
        assert_eq!(edit(None, "worker", Verb::Allow), Edit::Changed(Some(policy(None, &["worker"], &[]))));
        assert_eq!(edit(None, "worker", Verb::Deny), Edit::Changed(Some(policy(None, &[], &["worker"]))));
        assert_eq!(edit(None, "worker", Verb::Forget), Edit::Unchanged);
    }

    #[test]
    fn an_edit_moves_one_name_and_nothing_changes_when_it_is_there_already() {
        let p = policy(Some(AppDefault::Pending), &["a", "b"], &["c"]);
        assert_eq!(edit(Some(&p), "a", Verb::Allow), Edit::Unchanged, "a reorder is no change");
        assert_eq!(edit(Some(&p), "c", Verb::Deny), Edit::Unchanged);
        assert_eq!(edit(Some(&p), "d", Verb::Forget), Edit::Unchanged);
        let moved = Edit::Changed(Some(policy(Some(AppDefault::Pending), &["b"], &["c", "a"])));
        assert_eq!(edit(Some(&p), "a", Verb::Deny), moved);
        let allowed = Edit::Changed(Some(policy(Some(AppDefault::Pending), &["a", "b", "c"], &[])));
        assert_eq!(edit(Some(&p), "c", Verb::Allow), allowed);
        let forgotten = Edit::Changed(Some(policy(Some(AppDefault::Pending), &["a", "b"], &[])));
        assert_eq!(edit(Some(&p), "c", Verb::Forget), forgotten);
    }

    #[test]
    fn forgetting_the_last_name_of_a_policy_without_a_default_removes_it() {
        assert_eq!(edit(Some(&policy(None, &["a"], &[])), "a", Verb::Forget), Edit::Changed(None));
        let kept = Edit::Changed(Some(policy(Some(AppDefault::Deny), &[], &[])));
        assert_eq!(edit(Some(&policy(Some(AppDefault::Deny), &["a"], &[])), "a", Verb::Forget), kept);
    }

    #[test]
    fn the_patch_carries_the_resource_version_and_both_lists_whole() {
        let p = policy(Some(AppDefault::Pending), &["a"], &[]);
        assert_eq!(
            patch(Some(&p), "42"),
            json!({"metadata": {"resourceVersion": "42"}, "spec": {"applications": {"allowed": ["a"], "denied": null}}})
        );
        assert_eq!(patch(None, "7"), json!({"metadata": {"resourceVersion": "7"}, "spec": {"applications": null}}));
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
