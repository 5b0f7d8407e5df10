//! Making keys and changing a Credential's tokens: `create`, `credential create`,
//! `credential add-token` and `credential remove-token`, each checked here as the controller
//! would check it before anything is sent.

use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams, PostParams};

use super::flags::{AddTokenArgs, CreateArgs, CreateCredentialArgs, DryRun, ExpiryArgs, RemoveTokenArgs, invalid_flag};
use super::reveal::reveal;
use super::wait::await_token;
use crate::api::credential::MAX_TOKENS;
use crate::api::expiry::{DEFAULT_EXPIRY, ExpiryPolicy};
use crate::api::{ApiKey, ApiKeySpec, Credential, CredentialSpec, CredentialToken, names, validate};
use crate::plugin::cluster::{Cluster, ConnectArgs};
use crate::plugin::error::{PluginError, Result};
use crate::plugin::keys::{self, FIELD_MANAGER, KeyResource};
use crate::plugin::render::{self, Format};

/// A key that would be expired the moment it is made is a typo, not a wish.
fn check_not_past(expiry: &ExpiryArgs, now: Timestamp) -> Result<()> {
    match expiry.expires_at.as_deref().map(|text| (text, text.parse::<Timestamp>())) {
        Some((text, Ok(at))) if at <= now => Err(PluginError::Invalid(format!(
            "invalid --expires-at {text:?}: it is in the past (now is {}); the key would be expired at once",
            now.round(jiff::Unit::Second).unwrap_or(now)
        ))),
        _ => Ok(()),
    }
}

fn check_name(what: &str, name: &str) -> Result<()> {
    names::dns_subdomain(name).map_err(|problem| PluginError::Invalid(format!("invalid {what} {name:?}: {problem}")))
}

/// The checks the controller would make, done before anything is sent. The operator's own
/// `--max-expiry` is not known here: a key beyond it is refused by the controller instead.
const LOCAL_POLICY: ExpiryPolicy = ExpiryPolicy { default: DEFAULT_EXPIRY, max: None };

/// `kubectl apikey create`.
pub async fn create_apikey(connect: &ConnectArgs, args: CreateArgs) -> Result<()> {
    check_name("ApiKey name", &args.name)?;
    let spec = ApiKeySpec {
        policy: args.policy.policy(),
        expires_after: args.expiry.expires_after.clone(),
        expires_at: args.expiry.expires_at.clone(),
        secret_name: args.secret_name.clone(),
    };
    let mut key = ApiKey::new(&args.name, spec);
    key.metadata.namespace = connect.namespace.clone();
    validate::api_key(&key, Timestamp::now(), &LOCAL_POLICY).map_err(invalid_flag)?;
    check_not_past(&args.expiry, Timestamp::now())?;
    let Some((cluster, key)) = post(connect, key, args.dry_run, args.reveal.output).await? else { return Ok(()) };
    let issued = await_token(&cluster, &key, None, args.reveal.timeout).await?;
    reveal(&cluster, &issued, args.reveal.output).await
}

/// `kubectl apikey credential create`.
pub async fn create_credential(connect: &ConnectArgs, args: CreateCredentialArgs) -> Result<()> {
    check_name("Credential name", &args.name)?;
    if args.token.is_none() && (args.expiry.expires_after.is_some() || args.expiry.expires_at.is_some()) {
        return Err(PluginError::Invalid(
            "--expires-after and --expires-at set the expiry of a token: name it with --token".into(),
        ));
    }
    let tokens = args.token.iter().map(|name| token_spec(name, &args.expiry)).collect();
    let spec = CredentialSpec { policy: args.policy.policy(), tokens };
    let mut credential = Credential::new(&args.name, spec);
    credential.metadata.namespace = connect.namespace.clone();
    validate::credential(&credential, Timestamp::now(), &LOCAL_POLICY).map_err(invalid_flag)?;
    check_not_past(&args.expiry, Timestamp::now())?;
    let Some((cluster, credential)) = post(connect, credential, args.dry_run, args.reveal.output).await? else {
        return Ok(());
    };
    match &args.token {
        Some(token) => {
            let issued = await_token(&cluster, &credential, Some(token), args.reveal.timeout).await?;
            reveal(&cluster, &issued, args.reveal.output).await
        }
        None => render::print_stdout(&format!(
            "credential.keyward.io/{0} created; add a token with `kubectl apikey credential add-token {0} NAME`\n",
            args.name
        )),
    }
}

fn token_spec(name: &str, expiry: &ExpiryArgs) -> CredentialToken {
    CredentialToken {
        name: name.to_string(),
        expires_after: expiry.expires_after.clone(),
        expires_at: expiry.expires_at.clone(),
    }
}

/// Creates `object`, or prints it for `--dry-run`; returns the cluster and the object as
/// stored, `None` for a dry run. A client-side dry run prints the manifest as built, with a
/// namespace only when `-n` names one, as `kubectl create --dry-run=client` does.
async fn post<K: KeyResource>(
    connect: &ConnectArgs,
    mut object: K,
    dry_run: Option<DryRun>,
    output: Option<Format>,
) -> Result<Option<(Cluster, K)>> {
    let format = output.unwrap_or(Format::Yaml);
    if dry_run == Some(DryRun::Client) {
        render::print_document(&object, format)?;
        return Ok(None);
    }
    let cluster = Cluster::connect(connect).await?;
    object.meta_mut().namespace = Some(cluster.namespace.clone());
    let name = object.name_any();
    let params = PostParams { dry_run: dry_run == Some(DryRun::Server), field_manager: Some(FIELD_MANAGER.into()) };
    let created = match keys::api::<K>(&cluster).create(&params, &object).await {
        Ok(created) => created,
        Err(e) => return Err(cluster.explain(e, keys::subject::<K>(&cluster, Some(&name))).await),
    };
    if dry_run == Some(DryRun::Server) {
        render::print_document(&render::shown(created), format)?;
        return Ok(None);
    }
    Ok(Some((cluster, created)))
}

/// `kubectl apikey credential add-token`.
pub async fn add_token(cluster: &Cluster, args: AddTokenArgs) -> Result<()> {
    check_not_past(&args.expiry, Timestamp::now())?;
    let token = token_spec(&args.token, &args.expiry);
    let credential = change_tokens(cluster, &args.credential, |credential| {
        if credential.spec.tokens.iter().any(|t| t.name == args.token) {
            return Err(PluginError::AlreadyExists(format!(
                "{} already has a token {:?}",
                keys::subject::<Credential>(cluster, Some(&args.credential)),
                args.token
            )));
        }
        let subject = keys::subject::<Credential>(cluster, Some(&args.credential));
        if credential.spec.tokens.len() >= MAX_TOKENS {
            return Err(PluginError::Invalid(format!(
                "{subject} holds {MAX_TOKENS} tokens, the most a Credential may; remove one first"
            )));
        }
        let new = format!("spec.tokens[{}]", credential.spec.tokens.len());
        credential.spec.tokens.push(token.clone());
        // The new token's lifetime counts from its first issue, which is about now.
        match validate::credential(credential, Timestamp::now(), &LOCAL_POLICY) {
            Ok(_) => Ok(()),
            Err(error) if error.field.starts_with(&new) => Err(invalid_flag(error)),
            Err(error) => Err(PluginError::Invalid(format!("{subject} has an invalid spec already: {error}"))),
        }
    })
    .await?;
    let issued = await_token(cluster, &credential, Some(&args.token), args.reveal.timeout).await?;
    reveal(cluster, &issued, args.reveal.output).await
}

/// `kubectl apikey credential remove-token`.
pub async fn remove_token(cluster: &Cluster, args: RemoveTokenArgs) -> Result<()> {
    let credential = change_tokens(cluster, &args.credential, |credential| {
        let before = credential.spec.tokens.len();
        credential.spec.tokens.retain(|t| t.name != args.token);
        if credential.spec.tokens.len() == before {
            return Err(PluginError::NotFound(format!(
                "{} has no token {:?}",
                keys::subject::<Credential>(cluster, Some(&args.credential)),
                args.token
            )));
        }
        Ok(())
    })
    .await?;
    render::print_stdout(&format!(
        "credential.keyward.io/{}: token {:?} removed; it is refused from now on and Secret {:?} is deleted\n",
        credential.name_any(),
        args.token,
        credential.secret_name(&args.token)
    ))
}

/// Changes a Credential's token list with optimistic concurrency: the patch carries the
/// resourceVersion it was computed from, so a concurrent change makes it fail (409) and it is
/// computed again from a fresh read rather than overwriting the other change.
async fn change_tokens(
    cluster: &Cluster,
    name: &str,
    mut change: impl FnMut(&mut Credential) -> Result<()>,
) -> Result<Credential> {
    const ATTEMPTS: usize = 5;
    let api = keys::api::<Credential>(cluster);
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut credential: Credential = keys::get(cluster, name).await?;
        change(&mut credential)?;
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": credential.resource_version()},
            "spec": {"tokens": credential.spec.tokens},
        });
        match api.patch(name, &params, &Patch::Merge(&patch)).await {
            Ok(changed) => return Ok(changed),
            Err(kube::Error::Api(status)) if status.code == 409 && attempt < ATTEMPTS => continue,
            Err(e) => return Err(cluster.explain(e, keys::subject::<Credential>(cluster, Some(name))).await),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expiry_in_the_past_is_refused_before_anything_is_sent() {
        let now: Timestamp = "2026-11-23T12:00:00Z".parse().unwrap();
        let at = |text: &str| ExpiryArgs { expires_at: Some(text.into()), ..Default::default() };
        let error = check_not_past(&at("2026-11-23T11:59:59Z"), now).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert!(error.to_string().contains(r#"invalid --expires-at "2026-11-23T11:59:59Z": it is in the past"#));
        assert!(check_not_past(&at("2026-11-23T12:00:01Z"), now).is_ok());
        assert!(check_not_past(&ExpiryArgs::default(), now).is_ok());
    }
}
