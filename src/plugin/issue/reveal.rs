//! Showing a new token once: read from its Secret, checked against the hash in status, printed
//! on stdout and nowhere else.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use serde::Serialize;

use super::NewToken;
use crate::api::SECRET_TOKEN_KEY;
use crate::plugin::cluster::{Cluster, Subject};
use crate::plugin::error::{PluginError, Result};
use crate::plugin::render::{self, Format};
use crate::token::{Token, TokenHash};

/// The document `-o json|yaml` prints for an issued token.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Revealed<'a> {
    kind: &'a str,
    namespace: &'a str,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_name: Option<&'a str>,
    key_id: &'a str,
    secret_name: &'a str,
    expires_at: Option<String>,
    token: &'a str,
}

/// Reads the token from its Secret, checks it against the hash in status, and prints it once.
pub(super) async fn reveal(cluster: &Cluster, issued: &NewToken, output: Option<Format>) -> Result<()> {
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let owner = match &issued.token_name {
        Some(token) => format!("token {token:?} of {}/{}", issued.kind.to_lowercase(), issued.name),
        None => format!("{}/{}", issued.kind.to_lowercase(), issued.name),
    };
    let secret = match secrets.get(&issued.secret_name).await {
        Ok(secret) => secret,
        Err(kube::Error::Api(status)) if status.code == 403 => {
            return Err(PluginError::Forbidden(format!(
                "{owner} is issued, but you may not read Secret {:?} that holds its token ({}); ask for `get` on \
                 secrets, or mount the Secret where the token is used",
                issued.secret_name, status.message
            )));
        }
        Err(e) => {
            let subject = Subject {
                resource: "secret",
                name: Some(&issued.secret_name),
                namespace: Some(&cluster.namespace),
                ours: false,
            };
            return Err(cluster.explain(e, subject).await);
        }
    };
    let bytes = secret.data.as_ref().and_then(|d| d.get(SECRET_TOKEN_KEY)).map(|b| b.0.as_slice()).unwrap_or_default();
    let token = std::str::from_utf8(bytes).ok().and_then(|text| Token::parse(text).ok());
    let token = match token {
        Some(token) if TokenHash::of(token.expose().as_bytes()).as_str() == issued.token_hash => token,
        _ => {
            return Err(PluginError::Other(format!(
                "Secret {:?} does not hold the token whose hash {owner} records; the controller issues a new one: \
                 run the command again in a moment",
                issued.secret_name
            )));
        }
    };
    let now = Timestamp::now();
    let expiry = issued.expires_at.map_or_else(|| "unknown".into(), |at| render::when(at, now));
    match output {
        Some(format) => render::print_document(
            &Revealed {
                kind: issued.kind,
                namespace: &issued.namespace,
                name: &issued.name,
                token_name: issued.token_name.as_deref(),
                key_id: &issued.key_id,
                secret_name: &issued.secret_name,
                expires_at: issued.expires_at.map(|t| t.to_string()),
                token: token.expose(),
            },
            format,
        )?,
        None => {
            eprintln!("{owner} issued: key ID {}, expires {expiry}", issued.key_id);
            render::print_stdout(&format!("{}\n", token.expose()))?;
        }
    }
    eprintln!(
        "warning: this token is shown only once, here; save it now. It is kept only in Secret {}/{}.",
        issued.namespace, issued.secret_name
    );
    Ok(())
}
