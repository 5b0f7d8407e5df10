//! Part 2's keys on the API server: created with the status the controller would write.

use std::time::Duration;

use jiff::Timestamp;
use keyward::api::ApiKey;
use keyward::token::Token;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};

use super::{EXPIRY, key_spec};
use crate::common::{MANAGER, Result, status};

/// Creates one ApiKey granting [`SCOPE`] and writes the status the controller would (the
/// Secret it names is not made: the verifier never reads one). Returns its token. A failed
/// request is tried again a few times: one hiccup of the API server must not end a long run.
pub async fn create_active_key(keys: &Api<ApiKey>, name: &str) -> Result<Token> {
    let key = &ApiKey::new(name, key_spec()?);
    let created = retry(&format!("create ApiKey {name}"), || async move {
        match keys.create(&PostParams::default(), key).await {
            // An earlier try that got through but whose answer was lost.
            Err(kube::Error::Api(status)) if status.code == 409 => keys.get(name).await,
            other => other,
        }
    })
    .await?;
    let now = Timestamp::now();
    let created_at = created.creation_timestamp().map_or(now, |t| t.0);
    let expires_at = created_at.checked_add(EXPIRY)?;
    let token = Token::generate("kw");
    let secret_name = format!("{name}-apikey");
    let issued = status::issued_apikey(&token, &secret_name, created.metadata.generation, now, expires_at);
    let patch = status::apply_patch::<ApiKey>(issued);
    let (apply, patch) = (&PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch));
    retry(&format!("apply the status of ApiKey {name}"), move || keys.patch_status(name, apply, patch)).await?;
    Ok(token)
}

/// `attempt` up to 5 times, 1, 2, 4, 8 s apart.
async fn retry<T, F, Fut>(what: &str, attempt: F) -> Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut pause = Duration::from_secs(1);
    for _ in 1..5 {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) => {
                eprintln!("{what}: {error}; trying again in {pause:?}");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        }
    }
    attempt().await.map_err(|e| format!("{what}: {e}").into())
}
