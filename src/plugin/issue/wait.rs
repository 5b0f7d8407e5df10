//! Waiting for the controller to issue a token: where each kind's status says it is, and a
//! watch of the key until it is issued or refused, with a spinner on a terminal.

use std::io::IsTerminal;
use std::time::Duration;

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kube::ResourceExt;
use kube::runtime::watcher;

use super::NewToken;
use crate::api::{CONDITION_READY, Phase};
use crate::plugin::cluster::Cluster;
use crate::plugin::error::{PluginError, Result};
use crate::plugin::keys::{self, KeyResource};

/// Where the controller is with the token being waited for.
pub(super) enum Progress {
    Waiting(String),
    Issued(NewToken),
    Refused(String),
}

fn ready_message(conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> String {
    conditions
        .iter()
        .find(|c| c.type_ == CONDITION_READY)
        .map(|c| format!("{}: {}", c.reason, c.message))
        .unwrap_or_else(|| "no Ready condition".into())
}

/// The progress of `key`'s token (`token` names a Credential's) at the current generation, from
/// the key's status records, alike for both kinds.
fn progress<K: KeyResource>(key: &K, token: Option<&str>) -> Progress {
    let Some(phase) = key.phase() else { return Progress::Waiting("no status yet".into()) };
    if key.observed_generation() < key.meta().generation {
        return Progress::Waiting("the controller has not seen this generation yet".into());
    }
    if phase == Phase::Failed {
        return Progress::Refused(format!("the controller refused it: {}", ready_message(key.conditions())));
    }
    let what = token.map_or_else(|| "it".to_string(), |name| format!("token {name:?}"));
    let Some((_, record)) = key.records().into_iter().find(|(name, _)| *name == token) else {
        return Progress::Waiting(format!("{what} not issued yet"));
    };
    match (record.phase, &record.token_hash, &record.key_id) {
        (Some(Phase::Active | Phase::Inactive), Some(hash), Some(key_id)) => Progress::Issued(NewToken {
            kind: K::KIND.as_str(),
            namespace: key.namespace().unwrap_or_default(),
            name: key.name_any(),
            token_name: token.map(str::to_string),
            key_id: key_id.clone(),
            token_hash: hash.clone(),
            secret_name: record.secret_name.clone().unwrap_or_else(|| key.default_secret_name(token)),
            expires_at: record.expires_at.as_ref().map(|t| t.0),
        }),
        (Some(phase @ (Phase::Failed | Phase::Expired)), ..) => {
            Progress::Refused(format!("{what} is {}: {}", phase.as_str(), ready_message(key.conditions())))
        }
        (phase, ..) => {
            let whose = token.map(|name| format!("token {name:?} ")).unwrap_or_default();
            Progress::Waiting(format!("{whose}phase {}", phase.map_or("-", Phase::as_str)))
        }
    }
}

/// Watches the key until the controller has issued the token, refused it, or `timeout` passed.
/// On a terminal, a spinner on stderr says what it is waiting for.
pub(super) async fn await_token<K: KeyResource>(
    cluster: &Cluster,
    created: &K,
    token: Option<&str>,
    timeout: Duration,
) -> Result<NewToken> {
    let name = created.name_any();
    let subject = keys::subject::<K>(cluster, Some(&name));
    let mut last = progress(created, token);
    let spinner =
        Spinner::start(&format!("waiting for the controller to issue the token of {}/{name}", K::NOUN), "created");
    let deadline = tokio::time::Instant::now() + timeout;
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(keys::api::<K>(cluster), config).boxed();
    loop {
        let what = match last {
            Progress::Issued(issued) => return Ok(issued),
            Progress::Refused(why) => return Err(PluginError::Unusable(format!("{subject} cannot be used: {why}"))),
            Progress::Waiting(what) => what,
        };
        spinner.say(&what);
        let event = match tokio::time::timeout_at(deadline, events.next()).await {
            Err(_) => {
                return Err(PluginError::Timeout(format!(
                    "{subject} was created, but the controller has not issued its token within {} ({what}); is the \
                     Keyward controller running and watching this namespace? The token will be in its Secret once \
                     issued; see `kubectl apikey {}describe {name}`",
                    crate::duration::format(timeout),
                    K::COMMANDS,
                )));
            }
            Ok(None) => return Err(PluginError::Other(format!("the watch of {subject} ended"))),
            Ok(Some(event)) => event,
        };
        last = match event {
            Ok(watcher::Event::Apply(key) | watcher::Event::InitApply(key)) => progress(&key, token),
            Ok(watcher::Event::Delete(_)) => {
                return Err(PluginError::NotFound(format!("{subject} was deleted while waiting for its token")));
            }
            Ok(_) => Progress::Waiting(what),
            Err(error) => return Err(cluster.explain(watch_source(error), subject).await),
        };
    }
}

/// The API error inside a watch error, for [`Cluster::explain`].
fn watch_source(error: watcher::Error) -> kube::Error {
    match error {
        watcher::Error::InitialListFailed(e) | watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => {
            e
        }
        watcher::Error::WatchError(status) => kube::Error::Api(status),
        other => kube::Error::Service(Box::new(other)),
    }
}

/// A progress line on stderr while waiting, only when stderr is a terminal.
struct Spinner(ProgressBar);

impl Spinner {
    fn start(what: &str, first: &str) -> Self {
        let target =
            if std::io::stderr().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        let style = ProgressStyle::with_template("{spinner} {prefix} ({msg}, {elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        // Built whole before the first draw, so no half-filled line flashes by.
        let bar = ProgressBar::with_draw_target(None, target)
            .with_style(style)
            .with_prefix(what.to_string())
            .with_message(first.to_string());
        bar.enable_steady_tick(Duration::from_millis(100));
        Self(bar)
    }

    fn say(&self, what: &str) {
        self.0.set_message(what.to_string());
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ApiKey, Credential};

    fn apikey(value: serde_json::Value) -> ApiKey {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_key_is_issued_once_its_current_generation_is_active() {
        let meta = serde_json::json!({"name": "ci", "namespace": "team-a", "generation": 2});
        let stale = apikey(serde_json::json!({"metadata": meta, "spec": {},
            "status": {"phase": "Active", "observedGeneration": 1, "keyId": "kw_1", "tokenHash": "sha256:00"}}));
        assert!(matches!(progress(&stale, None), Progress::Waiting(_)));
        let active = apikey(serde_json::json!({"metadata": meta, "spec": {},
            "status": {"phase": "Active", "observedGeneration": 2, "keyId": "kw_1", "tokenHash": "sha256:00"}}));
        let Progress::Issued(issued) = progress(&active, None) else { panic!("not issued") };
        assert_eq!((issued.secret_name.as_str(), issued.key_id.as_str()), ("ci-apikey", "kw_1"));
        let failed = apikey(serde_json::json!({"metadata": meta, "spec": {}, "status": {"phase": "Failed",
            "observedGeneration": 2, "conditions": [{"type": "Ready", "status": "False", "reason": "InvalidSpec",
            "message": "spec.expiresAfter: too long", "lastTransitionTime": "2026-11-23T00:00:00Z"}]}}));
        let Progress::Refused(why) = progress(&failed, None) else { panic!("not refused") };
        assert_eq!(why, "the controller refused it: InvalidSpec: spec.expiresAfter: too long");
    }

    #[test]
    fn a_credential_token_is_issued_when_its_own_entry_is_active() {
        let credential: Credential = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "billing", "generation": 3},
            "spec": {"tokens": [{"name": "primary"}, {"name": "next"}]},
            "status": {"phase": "Active", "observedGeneration": 3, "tokens": [
                {"name": "primary", "phase": "Active", "keyId": "kw_1", "tokenHash": "sha256:00"},
            ]},
        }))
        .unwrap();
        assert!(matches!(progress(&credential, Some("primary")), Progress::Issued(_)));
        assert!(matches!(progress(&credential, Some("next")), Progress::Waiting(_)));
    }
}
