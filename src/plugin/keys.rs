//! What `kubectl apikey` does alike for ApiKeys and Credentials: list, describe, activate,
//! deactivate, delete. Each kind says only how its rows and details read.

use std::fmt::Write as _;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::apps;
use super::cluster::{Cluster, Subject};
use super::error::{PluginError, Result};
use super::render::{self, Format, Table};
use super::usage;
use crate::api::{ANNOTATION_CREATED_BY, ApiKey, Credential, Key, KeyState, KeyUsageStatus, Phase};

/// The field manager of every change the plugin makes, as `kubectl` is of its own.
pub const FIELD_MANAGER: &str = "kubectl-apikey";

/// An ApiKey or a Credential, as the commands see it.
pub trait KeyResource: Key {
    /// kubectl's singular name of the resource.
    const NOUN: &'static str;
    /// What comes between `kubectl apikey` and a command for this kind: `credential `, or
    /// nothing for an ApiKey.
    const COMMANDS: &'static str;
    /// The other kind of key, which a name given to the wrong command may be.
    type Other: KeyResource;
    /// The Secret of the token `token` names (a Credential's), when status names none.
    fn default_secret_name(&self, token: Option<&str>) -> String;
    /// Columns of `list` after NAME (and before CREATED BY and AGE).
    fn columns() -> &'static [&'static str];
    fn cells(&self, now: Timestamp) -> Vec<String>;
    /// The lines of `describe` that only this kind has; `seen` is what its KeyUsage recorded.
    fn details(&self, out: &mut String, seen: &KeyUsageStatus, now: Timestamp);
}

impl KeyResource for ApiKey {
    const NOUN: &'static str = "apikey";
    const COMMANDS: &'static str = "";
    type Other = Credential;

    fn default_secret_name(&self, _: Option<&str>) -> String {
        self.secret_name()
    }

    fn columns() -> &'static [&'static str] {
        &["PHASE", "KEY ID", "SCOPES", "EXPIRES IN"]
    }

    fn cells(&self, now: Timestamp) -> Vec<String> {
        let status = self.status.clone().unwrap_or_default();
        vec![
            phase_text(status.record.phase),
            status.record.key_id.unwrap_or_else(|| "-".into()),
            render::joined(&self.spec.policy.scopes),
            // A refused key has no usable token, whatever its status recorded.
            match status.record.phase {
                Some(Phase::Failed) => "-".into(),
                _ => render::expires_in(status.record.expires_at.map(|t| t.0), now),
            },
        ]
    }

    fn details(&self, out: &mut String, _: &KeyUsageStatus, now: Timestamp) {
        let status = self.status.clone().unwrap_or_default();
        field(out, "Key ID", status.record.key_id.as_deref().unwrap_or("-"));
        field(out, "Token hash", status.record.token_hash.as_deref().unwrap_or("-"));
        field(out, "Secret", status.record.secret_name.as_deref().unwrap_or(&self.secret_name()));
        field(out, "Issued", &status.record.issued_at.map_or("-".into(), |t| render::when(t.0, now)));
        let expiry = match (&status.record.expires_at, &self.spec.expires_after, &self.spec.expires_at) {
            (Some(at), _, _) => render::when(at.0, now),
            (None, Some(after), _) => format!("{after} after creation"),
            (None, None, Some(at)) => at.clone(),
            (None, None, None) => "the operator's default lifetime after creation".into(),
        };
        field(out, "Expires", &expiry);
    }
}

impl KeyResource for Credential {
    const NOUN: &'static str = "credential";
    const COMMANDS: &'static str = "credential ";
    type Other = ApiKey;

    fn default_secret_name(&self, token: Option<&str>) -> String {
        self.secret_name(token.unwrap_or_default())
    }

    fn columns() -> &'static [&'static str] {
        &["PHASE", "TOKENS", "SCOPES", "NEXT EXPIRY"]
    }

    fn cells(&self, now: Timestamp) -> Vec<String> {
        let status = self.status.clone().unwrap_or_default();
        let active = status.tokens.iter().filter(|t| t.record.phase == Some(Phase::Active)).count();
        let next_expiry = status
            .tokens
            .iter()
            .filter(|t| t.record.phase == Some(Phase::Active))
            .filter_map(|t| t.record.expires_at.as_ref().map(|at| at.0))
            .min();
        vec![
            phase_text(status.phase),
            format!("{active}/{}", self.spec.tokens.len()),
            render::joined(&self.spec.policy.scopes),
            render::expires_in(next_expiry, now),
        ]
    }

    fn details(&self, out: &mut String, seen: &KeyUsageStatus, now: Timestamp) {
        let status = self.status.clone().unwrap_or_default();
        if self.spec.tokens.is_empty() {
            field(out, "Tokens", "<none>");
            return;
        }
        out.push_str("Tokens:\n");
        let mut table = Table::new(&["NAME", "PHASE", "KEY ID", "SECRET", "ISSUED", "EXPIRES IN", "LAST USED"]);
        for token in &self.spec.tokens {
            let issued = status.tokens.iter().find(|t| t.name == token.name).cloned().unwrap_or_default();
            let used = seen.tokens.iter().find(|t| t.name == token.name).map(|t| t.last_used_at.0);
            table.row(vec![
                token.name.clone(),
                phase_text(issued.record.phase),
                issued.record.key_id.unwrap_or_else(|| "-".into()),
                issued.record.secret_name.unwrap_or_else(|| self.secret_name(&token.name)),
                issued.record.issued_at.map_or("-".into(), |t| render::age(Some(t.0), now) + " ago"),
                render::expires_in(issued.record.expires_at.map(|t| t.0), now),
                used.map_or("-".into(), |at| render::age(Some(at), now) + " ago"),
            ]);
        }
        indent(out, &table.render());
    }
}

/// A last use as an age, as kubectl shows when things happened in a table; `-` for none recorded.
fn last_used_text(last_used: Option<Timestamp>, now: Timestamp) -> String {
    last_used.map_or_else(|| "-".into(), |at| render::age(Some(at), now))
}

fn phase_text(phase: Option<Phase>) -> String {
    phase.map_or("-", Phase::as_str).to_string()
}

/// A `Label:  value` line of `describe`; the labels are padded by [`aligned`] afterwards.
pub(super) fn field(out: &mut String, label: &str, value: &str) {
    let _ = writeln!(out, "{label}:\t{value}");
}

fn indent(out: &mut String, block: &str) {
    for line in block.lines() {
        let _ = writeln!(out, "  {line}");
    }
}

/// What a request about `name` (or the whole collection) of kind `K` is about.
pub fn subject<'a, K: KeyResource>(cluster: &'a Cluster, name: Option<&'a str>) -> Subject<'a> {
    Subject { resource: K::NOUN, name, namespace: Some(&cluster.namespace), ours: true }
}

pub fn api<K: KeyResource>(cluster: &Cluster) -> Api<K> {
    Api::namespaced(cluster.client.clone(), &cluster.namespace)
}

pub async fn get<K: KeyResource>(cluster: &Cluster, name: &str) -> Result<K> {
    match api::<K>(cluster).get(name).await {
        Ok(object) => Ok(object),
        Err(e) => Err(cluster.explain(e, subject::<K>(cluster, Some(name))).await),
    }
}

/// `error` of a command about `name`; when `name` is not found as a `K` but a key of the other
/// kind has it (a Credential given to `describe`), the error says which command to use instead:
/// `kubectl apikey` and the other kind's prefix, then `command` (`describe ci`). Still not found,
/// so still exit code 6.
async fn or_other_kind<K: KeyResource>(
    cluster: &Cluster,
    name: &str,
    command: &str,
    error: PluginError,
) -> PluginError {
    let PluginError::NotFound(message) = error else { return error };
    match api::<K::Other>(cluster).get_opt(name).await {
        Ok(Some(_)) => PluginError::NotFound(format!(
            "{message}, but there is a {} of that name: use `kubectl apikey {}{command}`",
            <K::Other as Resource>::kind(&()),
            K::Other::COMMANDS
        )),
        _ => PluginError::NotFound(message),
    }
}

/// [`get`] for `command` (as [`or_other_kind`] takes it), pointing at the other kind's command
/// when the name is one.
pub(super) async fn get_for<K: KeyResource>(cluster: &Cluster, name: &str, command: &str) -> Result<K> {
    match get::<K>(cluster, name).await {
        Ok(object) => Ok(object),
        Err(error) => Err(or_other_kind::<K>(cluster, name, command, error).await),
    }
}

/// Objects listed per page: a big namespace is never one response held whole.
const PAGE: u32 = 500;

/// Lists the keys of kind `K` in the namespace (or every namespace) a page at a time, in the
/// API server's order (namespace, then name), handing each to `each`.
pub async fn each_page<K: KeyResource>(
    cluster: &Cluster,
    all_namespaces: bool,
    selector: Option<&str>,
    each: impl FnMut(K),
) -> Result<()> {
    let api: Api<K> = if all_namespaces { Api::all(cluster.client.clone()) } else { api(cluster) };
    let mut params = ListParams::default();
    if let Some(selector) = selector {
        params = params.labels(selector);
    }
    if let Err(e) = pages(&api, params, each).await {
        let namespace = (!all_namespaces).then_some(cluster.namespace.as_str());
        return Err(cluster.explain(e, Subject { resource: K::NOUN, name: None, namespace, ours: true }).await);
    }
    Ok(())
}

/// Lists `api` with `params` a page of [`PAGE`] objects at a time, handing each to `each`; a
/// failure is the API server's error as it came, for the caller to explain or tolerate.
pub async fn pages<R>(api: &Api<R>, params: ListParams, mut each: impl FnMut(R)) -> Result<(), kube::Error>
where
    R: Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut params = params.limit(PAGE);
    loop {
        let page = api.list(&params).await?;
        page.items.into_iter().for_each(&mut each);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(()),
        }
    }
}

/// Who created the key, as the admission webhook recorded it; `None` for a key made before the
/// webhook ran, or on a cluster without it.
pub fn created_by<K: Resource>(key: &K) -> Option<&str> {
    key.meta().annotations.as_ref()?.get(ANNOTATION_CREATED_BY).map(String::as_str)
}

/// Which keys `list` shows, besides the label selector the API server applies.
#[derive(Clone, Copy, Debug, Default)]
pub struct Filter<'a> {
    /// `--created-by`: exactly this creator; a key without a recorded creator never matches.
    pub created_by: Option<&'a str>,
}

impl Filter<'_> {
    pub fn matches<K: Resource>(&self, key: &K) -> bool {
        self.created_by.is_none_or(|wanted| created_by(key) == Some(wanted))
    }
}

/// The header of `list`'s table.
fn list_headers<K: KeyResource>(all_namespaces: bool) -> Vec<&'static str> {
    let mut headers = Vec::new();
    if all_namespaces {
        headers.push("NAMESPACE");
    }
    headers.push("NAME");
    headers.extend_from_slice(K::columns());
    headers.extend(["LAST USED", "CREATED BY", "AGE"]);
    headers
}

/// One row of `list`'s table, under [`list_headers`]; `last_used` from the key's KeyUsage.
fn list_row<K: KeyResource>(
    key: &K,
    all_namespaces: bool,
    last_used: Option<Timestamp>,
    now: Timestamp,
) -> Vec<String> {
    let mut row = Vec::new();
    if all_namespaces {
        row.push(key.namespace().unwrap_or_default());
    }
    row.push(key.name_any());
    row.extend(key.cells(now));
    row.push(last_used_text(last_used, now));
    row.push(created_by(key).unwrap_or("-").to_string());
    row.push(render::age(key.meta().creation_timestamp.as_ref().map(|t| t.0), now));
    row
}

/// `list`: a table of the keys in the namespace, or in every namespace with `-A`; with `-o`, a
/// kubectl `List` of them. Only the keys `filter` matches either way.
pub async fn list<K: KeyResource>(
    cluster: &Cluster,
    all_namespaces: bool,
    selector: Option<&str>,
    filter: Filter<'_>,
    output: Option<Format>,
) -> Result<()> {
    if let Some(format) = output {
        let mut items = Vec::new();
        each_page::<K>(cluster, all_namespaces, selector, |key| {
            if filter.matches(&key) {
                items.push(render::shown(key));
            }
        })
        .await?;
        return render::print_document(&render::List::of(&items), format);
    }
    // One list of the KeyUsages beside the keys, not one read per key.
    let last_use = usage::last_use::<K>(cluster, all_namespaces).await?;
    let now = Timestamp::now();
    let mut table = Table::new(&list_headers::<K>(all_namespaces));
    // Only the rows are kept, not the objects.
    each_page::<K>(cluster, all_namespaces, selector, |key| {
        if filter.matches(&key) {
            table.row(list_row(&key, all_namespaces, last_use.of(&key), now));
        }
    })
    .await?;
    if table.is_empty() {
        let by = filter.created_by.map(|by| format!(" created by {by:?}")).unwrap_or_default();
        match all_namespaces {
            true => eprintln!("No {}s{by} found.", K::NOUN),
            false => eprintln!("No {}s{by} found in {} namespace.", K::NOUN, cluster.namespace),
        }
        return Ok(());
    }
    table.print()
}

/// What `describe` shows before the events: the key's spec and status, its last use and its
/// applications from `recorded` (its KeyUsage's status, empty when it has none, or why it could
/// not be read), and its conditions.
fn summary<K: KeyResource>(key: &K, recorded: Result<&KeyUsageStatus, &str>, now: Timestamp) -> String {
    let policy = key.policy();
    let unread = KeyUsageStatus::default();
    let seen = recorded.unwrap_or(&unread);
    let mut out = String::new();
    field(&mut out, "Name", &key.name_any());
    field(&mut out, "Namespace", &key.namespace().unwrap_or_default());
    field(&mut out, "Kind", &K::kind(&()));
    field(&mut out, "Description", policy.description.as_deref().unwrap_or("<none>"));
    let state = match policy.state {
        Some(state) => format!("{state:?}"),
        None => "Active (default)".into(),
    };
    field(&mut out, "State", &state);
    field(&mut out, "Phase", &phase_text(key.phase()));
    field(&mut out, "Scopes", &render::joined(&policy.scopes).replace(',', ", "));
    let cidrs = if policy.allowed_cidrs.is_empty() { "<any address>".into() } else { policy.allowed_cidrs.join(", ") };
    field(&mut out, "Allowed CIDRs", &cidrs);
    field(&mut out, "Token prefix", policy.token_prefix.as_deref().unwrap_or("kw (default)"));
    let created = key.meta().creation_timestamp.as_ref().map_or("-".into(), |t| render::when(t.0, now));
    field(&mut out, "Created", &created);
    let last_used = match recorded {
        Ok(seen) => seen.last_used_at.as_ref().map_or("-".into(), |t| render::when(t.0, now)),
        Err(problem) => format!("<cannot read its KeyUsage: {problem}>"),
    };
    field(&mut out, "Last used", &last_used);
    key.details(&mut out, seen, now);
    let mut text = aligned(&out);

    text.push_str("Applications:\n");
    indent(&mut text, &apps::section(policy.applications.as_ref(), seen, now));
    if let Err(problem) = recorded {
        let _ = writeln!(text, "  <applications seen are not shown: cannot read its KeyUsage: {problem}>");
    }
    text.push_str("Conditions:\n");
    if key.conditions().is_empty() {
        text.push_str("  <none>\n");
    } else {
        let mut table = Table::new(&["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"]);
        for c in key.conditions() {
            let age = render::age(Some(c.last_transition_time.0), now);
            table.row(vec![c.type_.clone(), c.status.clone(), c.reason.clone(), age, c.message.clone()]);
        }
        indent(&mut text, &table.render());
    }
    text
}

/// `describe`: spec, status, last use, applications, conditions and recent events; never the
/// token.
pub async fn describe<K: KeyResource>(cluster: &Cluster, name: &str) -> Result<()> {
    let key: K = get_for(cluster, name, &format!("describe {name}")).await?;
    let usage = usage::usage_of(cluster, &key).await;
    let recorded = match &usage {
        Ok(usage) => Ok(usage.as_ref().and_then(|u| u.status.clone()).unwrap_or_default()),
        Err(problem) => Err(problem.as_str()),
    };
    let now = Timestamp::now();
    let mut text = summary(&key, recorded.as_ref().map_err(|p| *p), now);
    text.push_str("Events:\n");
    match events(cluster, &key).await {
        Ok(events) if events.is_empty() => text.push_str("  <none>\n"),
        Ok(events) => indent(&mut text, &events_table(&events, now)),
        Err(problem) => {
            let _ = writeln!(text, "  <cannot list events: {problem}>");
        }
    }
    render::print_stdout(&text)
}

/// Aligns the values of `Label:\tvalue` lines, leaving other lines (tables) as they are.
pub(super) fn aligned(block: &str) -> String {
    let width = block.lines().filter_map(|l| l.split_once('\t')).map(|(label, _)| label.len()).max().unwrap_or(0);
    block
        .lines()
        .map(|line| match line.split_once('\t') {
            Some((label, value)) => format!("{label:width$}  {value}\n"),
            None => format!("{line}\n"),
        })
        .collect()
}

/// Events about this very object (by UID, so a deleted namesake's events are left out).
async fn events<K: KeyResource>(cluster: &Cluster, key: &K) -> Result<Vec<Event>, String> {
    let api: Api<Event> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let params = ListParams::default().fields(&format!("involvedObject.uid={}", key.uid().unwrap_or_default()));
    let mut events = match api.list(&params).await {
        Ok(list) => list.items,
        Err(kube::Error::Api(status)) if status.code == 403 => return Err("forbidden".into()),
        Err(e) => return Err(format!("{e}")),
    };
    events.sort_by_key(last_seen);
    Ok(events)
}

fn last_seen(event: &Event) -> Option<Timestamp> {
    event
        .series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref().map(|t| t.0))
        .or(event.last_timestamp.as_ref().map(|t| t.0))
        .or(event.event_time.as_ref().map(|t| t.0))
        .or(event.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

fn events_table(events: &[Event], now: Timestamp) -> String {
    let mut table = Table::new(&["TYPE", "REASON", "AGE", "FROM", "MESSAGE"]);
    for event in events {
        let count = event.series.as_ref().and_then(|s| s.count).or(event.count).unwrap_or(1);
        let mut age = render::age(last_seen(event), now);
        if count > 1 {
            let first = event.first_timestamp.as_ref().or(event.metadata.creation_timestamp.as_ref()).map(|t| t.0);
            age = format!("{age} (x{count} over {})", render::age(first, now));
        }
        let from = event
            .reporting_component
            .clone()
            .filter(|c| !c.is_empty())
            .or_else(|| event.source.as_ref().and_then(|s| s.component.clone()))
            .unwrap_or_default();
        table.row(vec![
            event.type_.clone().unwrap_or_default(),
            event.reason.clone().unwrap_or_default(),
            age,
            from,
            event.message.clone().unwrap_or_default(),
        ]);
    }
    table.render()
}

/// `activate` and `deactivate`: sets `spec.state`. An expired key is not brought back.
pub async fn set_state<K: KeyResource>(cluster: &Cluster, name: &str, state: KeyState) -> Result<()> {
    let verb = match state {
        KeyState::Active => "activate",
        KeyState::Inactive => "deactivate",
    };
    let key: K = get_for(cluster, name, &format!("{verb} {name}")).await?;
    let shown = format!("{}.keyward.io/{name}", K::NOUN);
    if state == KeyState::Active && key.phase() == Some(Phase::Expired) {
        return Err(PluginError::Unusable(format!(
            "{} has expired; activating does not renew it: set a new expiresAfter or expiresAt to issue a new token",
            subject::<K>(cluster, Some(name))
        )));
    }
    if key.policy().state.unwrap_or_default() == state {
        return render::print_stdout(&format!("{shown} unchanged (already {state:?})\n"));
    }
    let patch = serde_json::json!({"spec": {"state": state}});
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    if let Err(e) = api::<K>(cluster).patch(name, &params, &Patch::Merge(&patch)).await {
        return Err(cluster.explain(e, subject::<K>(cluster, Some(name))).await);
    }
    let done = match state {
        KeyState::Active => "activated",
        KeyState::Inactive => "deactivated",
    };
    render::print_stdout(&format!("{shown} {done}\n"))
}

/// `delete`: the Secrets go with the key, by garbage collection.
pub async fn delete<K: KeyResource>(cluster: &Cluster, name: &str) -> Result<()> {
    if let Err(e) = api::<K>(cluster).delete(name, &DeleteParams::background()).await {
        let error = cluster.explain(e, subject::<K>(cluster, Some(name))).await;
        return Err(or_other_kind::<K>(cluster, name, &format!("delete {name}"), error).await);
    }
    render::print_stdout(&format!("{}.keyward.io \"{name}\" deleted\n", K::NOUN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_labels_line_up_and_tables_stay_as_they_are() {
        let text = aligned("Name:\tci\nKey ID:\tkw_1\n  NAME   PHASE\n");
        assert_eq!(text, "Name:    ci\nKey ID:  kw_1\n  NAME   PHASE\n");
    }

    #[test]
    fn a_credential_row_counts_active_tokens_and_the_next_expiry() {
        let credential: Credential = serde_json::from_value(serde_json::json!({
            "apiVersion": "keyward.io/v1alpha1", "kind": "Credential",
            "metadata": {"name": "billing"},
            "spec": {"scopes": ["orders.read"], "tokens": [{"name": "a"}, {"name": "b"}, {"name": "c"}]},
            "status": {"phase": "Active", "tokens": [
                {"name": "a", "phase": "Active", "expiresAt": "2026-12-23T00:00:00Z"},
                {"name": "b", "phase": "Active", "expiresAt": "2026-11-30T00:00:00Z"},
                {"name": "c", "phase": "Expired", "expiresAt": "2026-11-01T00:00:00Z"},
            ]},
        }))
        .unwrap();
        let now: Timestamp = "2026-11-23T00:00:00Z".parse().unwrap();
        assert_eq!(credential.cells(now), ["Active", "2/3", "orders.read", "7d"]);
    }

    #[test]
    fn a_key_without_status_shows_dashes() {
        let key: ApiKey = serde_json::from_value(serde_json::json!({
            "apiVersion": "keyward.io/v1alpha1", "kind": "ApiKey", "metadata": {"name": "ci"}, "spec": {},
        }))
        .unwrap();
        assert_eq!(key.cells(Timestamp::now()), ["-", "-", "<none>", "-"]);
    }

    fn created_by_key(name: &str, created_by: Option<&str>) -> ApiKey {
        let mut key: ApiKey = serde_json::from_value(serde_json::json!({
            "apiVersion": "keyward.io/v1alpha1", "kind": "ApiKey",
            "metadata": {"name": name, "namespace": "team-a", "creationTimestamp": "2026-11-20T00:00:00Z"},
            "spec": {"scopes": ["orders.read"]},
        }))
        .unwrap();
        if let Some(by) = created_by {
            key.metadata.annotations = Some([(ANNOTATION_CREATED_BY.to_string(), by.to_string())].into());
        }
        key
    }

    #[test]
    fn list_shows_the_creator_before_the_age_or_a_dash() {
        let now: Timestamp = "2026-11-23T00:00:00Z".parse().unwrap();
        assert_eq!(
            list_headers::<ApiKey>(false),
            ["NAME", "PHASE", "KEY ID", "SCOPES", "EXPIRES IN", "LAST USED", "CREATED BY", "AGE"]
        );
        assert_eq!(
            list_headers::<Credential>(true),
            ["NAMESPACE", "NAME", "PHASE", "TOKENS", "SCOPES", "NEXT EXPIRY", "LAST USED", "CREATED BY", "AGE"]
        );
        assert_eq!(
            list_row(&created_by_key("ci", Some("alice")), false, None, now),
            ["ci", "-", "-", "orders.read", "-", "-", "alice", "3d"]
        );
        assert_eq!(
            list_row(&created_by_key("old", None), true, None, now),
            ["team-a", "old", "-", "-", "orders.read", "-", "-", "-", "3d"]
        );
    }

    #[test]
    fn list_shows_the_last_use_as_an_age_before_the_creator_or_a_dash() {
        let now: Timestamp = "2026-11-23T00:00:00Z".parse().unwrap();
        let used = Some("2026-11-22T23:55:00Z".parse().unwrap());
        assert_eq!(list_row(&created_by_key("ci", Some("alice")), false, used, now)[5..], ["5m", "alice", "3d"]);
        assert_eq!(list_row(&created_by_key("ci", Some("alice")), false, None, now)[5..], ["-", "alice", "3d"]);
    }

    #[test]
    fn created_by_matches_exactly_and_never_a_key_without_a_creator() {
        let (alice, nobody) = (created_by_key("a", Some("alice")), created_by_key("n", None));
        assert!(Filter::default().matches(&alice) && Filter::default().matches(&nobody));
        let by = |name| Filter { created_by: Some(name) };
        assert!(by("alice").matches(&alice));
        for other in ["alic", "Alice", "alice ", "-", ""] {
            assert!(!by(other).matches(&alice), "{other:?}");
            assert!(!by(other).matches(&nobody), "{other:?}");
        }
    }

    fn used_credential() -> (Credential, KeyUsageStatus) {
        let credential: Credential = serde_json::from_value(serde_json::json!({
            "apiVersion": "keyward.io/v1alpha1", "kind": "Credential",
            "metadata": {"name": "billing", "namespace": "team-a", "creationTimestamp": "2026-11-20T00:00:00Z"},
            "spec": {
                "tokens": [{"name": "primary"}, {"name": "next"}],
                "applications": {"default": "Pending", "allowed": ["billing-worker"], "denied": ["legacy-cron"]},
            },
            "status": {"phase": "Active", "tokens": [{"name": "primary", "phase": "Active"}]},
        }))
        .unwrap();
        let seen = serde_json::from_value(serde_json::json!({
            "lastUsedAt": "2026-11-22T23:55:00Z",
            "tokens": [{"name": "primary", "lastUsedAt": "2026-11-22T23:55:00Z"}],
            "applications": [{"name": "new-report", "state": "Pending",
                "firstSeenAt": "2026-11-22T00:00:00Z", "lastSeenAt": "2026-11-22T23:00:00Z"}],
        }))
        .unwrap();
        (credential, seen)
    }

    #[test]
    fn describe_shows_the_last_use_of_the_key_and_each_token_and_its_applications() {
        let now: Timestamp = "2026-11-23T00:00:00Z".parse().unwrap();
        let (credential, seen) = used_credential();
        let text = summary(&credential, Ok(&seen), now);
        assert!(text.contains("\nLast used:      2026-11-22T23:55:00Z (5m ago)\n"), "{text}");
        let tokens = text.split_once("Tokens:\n").unwrap().1;
        let lines: Vec<&str> = tokens.lines().take(3).collect();
        assert!(lines[0].ends_with("EXPIRES IN   LAST USED"), "{text}");
        assert!(lines[1].trim_start().starts_with("primary") && lines[1].ends_with("5m ago"), "{text}");
        assert!(lines[2].trim_start().starts_with("next") && lines[2].ends_with("-"), "{text}");
        let applications = text.split_once("Applications:\n").unwrap().1.split_once("Conditions:").unwrap().0;
        assert_eq!(
            applications,
            "  Default:  Pending
  Allowed:  billing-worker
  Denied:   legacy-cron
  NAME             STATE     FIRST SEEN   LAST SEEN
  new-report       Pending   24h ago      60m ago
  billing-worker   Allowed   -            -
  legacy-cron      Denied    -            -
"
        );
    }

    #[test]
    fn describe_without_a_keyusage_shows_dashes_and_says_why_when_it_cannot_read_one() {
        let now: Timestamp = "2026-11-23T00:00:00Z".parse().unwrap();
        let key = created_by_key("ci", None);
        let text = summary(&key, Ok(&KeyUsageStatus::default()), now);
        assert!(text.contains("\nLast used:      -\n"), "{text}");
        assert!(text.contains("Applications:\n  Default:  Allow (default)\n"), "{text}");
        assert!(text.contains("  <none seen>\nConditions:\n"), "{text}");
        let text = summary(&key, Err("forbidden"), now);
        assert!(text.contains("\nLast used:      <cannot read its KeyUsage: forbidden>\n"), "{text}");
        assert!(text.contains("<applications seen are not shown: cannot read its KeyUsage: forbidden>"), "{text}");
    }

    #[test]
    fn a_refused_key_shows_no_time_left() {
        let key: ApiKey = serde_json::from_value(serde_json::json!({
            "apiVersion": "keyward.io/v1alpha1", "kind": "ApiKey", "metadata": {"name": "ci"}, "spec": {},
            "status": {"phase": "Failed", "expiresAt": "2027-01-01T00:00:00Z"},
        }))
        .unwrap();
        assert_eq!(key.cells(Timestamp::now())[3], "-");
    }
}
