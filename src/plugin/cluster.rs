//! The connection to the cluster, found the way kubectl finds it (`--kubeconfig`, `KUBECONFIG`,
//! `~/.kube/config`, `--context`, in-cluster), and API errors turned into one-line
//! [`PluginError`]s that say what to do.

use std::path::PathBuf;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use kube::{Client, Config};

use super::error::{PluginError, Result};
use crate::api::{GROUP, VERSION};

/// Where to connect, as the kubectl flags say it.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ConnectArgs {
    /// Namespace of the keys; the context's namespace when absent.
    #[arg(short = 'n', long, global = true, help_heading = "Cluster options")]
    pub namespace: Option<String>,
    /// The kubeconfig context to use; the current context when absent.
    #[arg(long, global = true, help_heading = "Cluster options")]
    pub context: Option<String>,
    /// Path to the kubeconfig file; KUBECONFIG, then ~/.kube/config, when absent.
    #[arg(long, global = true, help_heading = "Cluster options")]
    pub kubeconfig: Option<PathBuf>,
}

/// A client and the namespace commands work in.
#[derive(Clone)]
pub struct Cluster {
    pub client: Client,
    pub namespace: String,
    server: String,
}

/// What a request was about, to name it in an error.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    /// kubectl's name for the resource: `apikey`, `credential`, `secret`, `events`.
    pub resource: &'a str,
    /// The object's name; `None` for a list.
    pub name: Option<&'a str>,
    /// The namespace; `None` for every namespace.
    pub namespace: Option<&'a str>,
    /// Whether the resource is one of Keyward's, whose absence means the CRDs are missing.
    pub ours: bool,
}

impl std::fmt::Display for Subject<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.ours { ".keyward.io" } else { "" };
        match self.name {
            Some(name) => write!(f, "{}{group} {name:?}", self.resource)?,
            None => write!(f, "{}{group}", self.resource)?,
        }
        match self.namespace {
            Some(ns) => write!(f, " in namespace {ns:?}"),
            None => Ok(()),
        }
    }
}

impl Cluster {
    pub async fn connect(args: &ConnectArgs) -> Result<Cluster> {
        let options = KubeConfigOptions { context: args.context.clone(), ..Default::default() };
        let mut config = match &args.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path).map_err(|e| no_kubeconfig(&e))?;
                Config::from_custom_kubeconfig(kubeconfig, &options).await.map_err(|e| no_kubeconfig(&e))?
            }
            // A context names an entry of the kubeconfig: never fall back to in-cluster then.
            None if args.context.is_some() => Config::from_kubeconfig(&options).await.map_err(|e| no_kubeconfig(&e))?,
            None => Config::infer().await.map_err(|e| {
                let kubeconfig = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<KubeconfigError>());
                match kubeconfig {
                    Some(e) if !matches!(e, KubeconfigError::FindPath) => no_kubeconfig(e),
                    _ => PluginError::NoCluster(
                        "no cluster: no kubeconfig (KUBECONFIG is unset and ~/.kube/config does not exist) and \
                         not running in a pod; set KUBECONFIG or pass --kubeconfig"
                            .into(),
                    ),
                }
            })?,
        };
        // An address that drops packets should fail in seconds, not hang.
        config.connect_timeout = Some(Duration::from_secs(10));
        let server = config.cluster_url.to_string();
        let namespace = args.namespace.clone().unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config)
            .map_err(|e| PluginError::NoCluster(format!("cannot set up a client for {server}: {}", root_cause(&e))))?;
        Ok(Cluster { client, namespace, server })
    }

    /// Turns a failed request about `subject` into the error a user can act on.
    pub async fn explain(&self, error: kube::Error, subject: Subject<'_>) -> PluginError {
        let status = match error {
            kube::Error::Api(status) => status,
            kube::Error::Auth(e) => {
                return PluginError::Forbidden(format!(
                    "cannot get credentials for the API server at {}: {}; check the user of your kubeconfig context",
                    self.server,
                    root_cause(&e)
                ));
            }
            kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::RustlsTls(_) => {
                return PluginError::NoCluster(format!(
                    "cannot reach the API server at {}: {}; is the cluster up, and is this the right context?",
                    self.server,
                    root_cause(&error)
                ));
            }
            other => return PluginError::Other(format!("request about {subject} failed: {}", root_cause(&other))),
        };
        if status.code == 404 && subject.ours && !self.crds_installed().await {
            return PluginError::CrdsMissing;
        }
        refusal(&status, subject, &self.server)
    }

    /// Whether the API server serves `keyward.io/v1alpha1`.
    async fn crds_installed(&self) -> bool {
        match self.client.list_api_group_resources(&format!("{GROUP}/{VERSION}")).await {
            Ok(list) => !list.resources.is_empty(),
            // Only a clear "not there" says the CRDs are missing; anything else is not proof.
            Err(kube::Error::Api(status)) => status.code != 404,
            Err(_) => true,
        }
    }
}

/// The API server's answer to a request about `subject` (at `server`) as the error a user can
/// act on. An admission webhook's refusal is told in the webhook's own words: a grant refusal
/// (403) is forbidden, a spec refusal (422) invalid, and neither gets the RBAC hint, which
/// would send the user after the wrong permission.
fn refusal(status: &kube::core::Status, subject: Subject<'_>, server: &str) -> PluginError {
    let message = one_line(&status.message);
    let admission = message.starts_with(ADMISSION_DENIAL);
    match (status.code, status.reason.as_str()) {
        (401, _) => PluginError::Forbidden(format!(
            "the API server at {server} does not accept your credentials (401 Unauthorized): log in again or check \
             the user of your kubeconfig context"
        )),
        (403, _) if admission => PluginError::Forbidden(format!("the API server refused {subject}: {message}")),
        (403, _) => PluginError::Forbidden(format!("{message}; ask a cluster administrator for a Role that grants it")),
        (404, _) => PluginError::NotFound(format!("{subject} not found")),
        (409, "AlreadyExists") => PluginError::AlreadyExists(format!("{subject} already exists")),
        (409, "Conflict") => PluginError::Conflict(format!(
            "{subject} was changed by someone else after it was read; nothing was written: run the command again"
        )),
        (422, _) | (400, "BadRequest") => PluginError::Invalid(format!("the API server refused {subject}: {message}")),
        (code, reason) => {
            PluginError::Other(format!("the API server answered {code} {reason} about {subject}: {message}"))
        }
    }
}

/// How the API server begins the message of a write an admission webhook refused:
/// `admission webhook "validate.keyward.io" denied the request: <the webhook's message>`.
const ADMISSION_DENIAL: &str = "admission webhook \"";

fn no_kubeconfig(error: &KubeconfigError) -> PluginError {
    let problem = match error {
        KubeconfigError::FindPath => {
            "no kubeconfig (KUBECONFIG is unset and ~/.kube/config does not exist); set KUBECONFIG or pass \
             --kubeconfig"
                .to_string()
        }
        KubeconfigError::ReadConfig(e, path) if e.kind() == std::io::ErrorKind::NotFound => {
            format!("there is no kubeconfig at {}; set KUBECONFIG or pass --kubeconfig", path.display())
        }
        KubeconfigError::ReadConfig(e, path) => format!("cannot read the kubeconfig {}: {e}", path.display()),
        KubeconfigError::CurrentContextNotSet => {
            "the kubeconfig has no current context; pass --context or run `kubectl config use-context`".to_string()
        }
        KubeconfigError::LoadContext(context) => {
            format!("the kubeconfig has no context {context:?}; see `kubectl config get-contexts`")
        }
        other => format!("the kubeconfig cannot be used: {}", root_cause(other)),
    };
    PluginError::NoCluster(format!("no cluster: {problem}"))
}

/// The innermost cause of an error, which usually says it best ("Connection refused").
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    one_line(&cause.to_string())
}

/// Errors are one line: the API server's messages sometimes are not.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_reads_like_kubectl_names_it() {
        let key = Subject { resource: "apikey", name: Some("ci"), namespace: Some("team-a"), ours: true };
        assert_eq!(key.to_string(), r#"apikey.keyward.io "ci" in namespace "team-a""#);
        let secrets = Subject { resource: "secret", name: None, namespace: None, ours: false };
        assert_eq!(secrets.to_string(), "secret");
    }

    #[test]
    fn messages_are_one_line() {
        assert_eq!(one_line("a\n  b\tc "), "a b c");
    }

    fn answer(code: u16, reason: &str, message: &str) -> kube::core::Status {
        kube::core::Status::failure(message, reason).with_code(code)
    }

    const KEY: Subject<'static> =
        Subject { resource: "apikey", name: Some("pays"), namespace: Some("team-a"), ours: true };

    #[test]
    fn a_grant_refused_at_admission_is_forbidden_in_the_webhooks_words() {
        let message = r#"admission webhook "validate.keyward.io" denied the request: user "alice" may not grant scope "payments.write" in namespace "team-a": needs verb grant on scopes.keyward.io named "payments.write" or a covering pattern ("payments.>", ">")"#;
        let error = refusal(&answer(403, "Forbidden", message), KEY, "https://k8s");
        assert_eq!(error.exit_code(), 5);
        assert_eq!(
            error.to_string(),
            format!(r#"the API server refused apikey.keyward.io "pays" in namespace "team-a": {message}"#)
        );
    }

    #[test]
    fn a_spec_refused_at_admission_is_invalid_in_the_webhooks_words() {
        let message = "admission webhook \"validate.keyward.io\" denied the request: spec.expiresAfter: invalid value \"31d\":\n  longer than --max-expiry 30d";
        let error = refusal(&answer(422, "Invalid", message), KEY, "https://k8s");
        assert_eq!(error.exit_code(), 2);
        assert_eq!(
            error.to_string(),
            r#"the API server refused apikey.keyward.io "pays" in namespace "team-a": admission webhook "validate.keyward.io" denied the request: spec.expiresAfter: invalid value "31d": longer than --max-expiry 30d"#
        );
    }

    #[test]
    fn rbac_refusals_keep_their_hint_and_other_answers_their_codes() {
        let rbac = r#"apikeys.keyward.io "pays" is forbidden: User "alice" cannot create resource "apikeys""#;
        let error = refusal(&answer(403, "Forbidden", rbac), KEY, "https://k8s");
        assert_eq!(
            error,
            PluginError::Forbidden(format!("{rbac}; ask a cluster administrator for a Role that grants it"))
        );
        assert_eq!(refusal(&answer(401, "Unauthorized", ""), KEY, "https://k8s").exit_code(), 5);
        assert_eq!(refusal(&answer(404, "NotFound", ""), KEY, "https://k8s").exit_code(), 6);
        assert_eq!(refusal(&answer(409, "AlreadyExists", ""), KEY, "https://k8s").exit_code(), 7);
        let stale = refusal(&answer(409, "Conflict", "the object has been modified"), KEY, "https://k8s");
        assert_eq!(stale.exit_code(), 13);
        assert!(stale.to_string().contains("changed by someone else after it was read; nothing was written"));
        assert_eq!(refusal(&answer(400, "BadRequest", ""), KEY, "https://k8s").exit_code(), 2);
        let down = r#"Internal error occurred: failed calling webhook "validate.keyward.io": connection refused"#;
        assert_eq!(refusal(&answer(500, "InternalError", down), KEY, "https://k8s").exit_code(), 1);
    }

    #[test]
    fn a_missing_context_is_named() {
        let error = no_kubeconfig(&KubeconfigError::LoadContext("prod".into()));
        assert_eq!(error.exit_code(), 3);
        assert!(error.to_string().contains(r#"no context "prod""#), "{error}");
    }
}
