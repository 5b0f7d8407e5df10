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
        match (status.code, status.reason.as_str()) {
            (401, _) => PluginError::Forbidden(format!(
                "the API server at {} does not accept your credentials (401 Unauthorized): log in again or \
                 check the user of your kubeconfig context",
                self.server
            )),
            (403, _) => PluginError::Forbidden(format!(
                "{}; ask a cluster administrator for a Role that grants it",
                one_line(&status.message)
            )),
            (404, _) if subject.ours && !self.crds_installed().await => PluginError::CrdsMissing,
            (404, _) => PluginError::NotFound(format!("{subject} not found")),
            (409, "AlreadyExists") => PluginError::AlreadyExists(format!("{subject} already exists")),
            (422, _) | (400, "BadRequest") => {
                PluginError::Invalid(format!("the API server refused {subject}: {}", one_line(&status.message)))
            }
            (code, reason) => PluginError::Other(format!(
                "the API server answered {code} {reason} about {subject}: {}",
                one_line(&status.message)
            )),
        }
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

    #[test]
    fn a_missing_context_is_named() {
        let error = no_kubeconfig(&KubeconfigError::LoadContext("prod".into()));
        assert_eq!(error.exit_code(), 3);
        assert!(error.to_string().contains(r#"no context "prod""#), "{error}");
    }
}
