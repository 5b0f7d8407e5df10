//! The crate's one error type, with a bounded label for metrics.

/// Everything that can go wrong in the operator.
///
/// No variant carries a token: errors are logged, counted and shown in events.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[source] kube::Error),

    #[error("cannot load the Kubernetes client configuration: {0}")]
    KubeConfig(#[source] kube::Error),

    #[error("object {0} has no {1}")]
    MissingObjectField(String, &'static str),

    #[error("cannot serialize {what}: {source}")]
    Serialize {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },

    #[error("cannot serialize the CRD as YAML: {0}")]
    Yaml(#[source] serde_yaml::Error),

    #[error("HTTP server on {addr} failed: {source}")]
    Http {
        addr: String,
        #[source]
        source: std::io::Error,
    },

    #[error("TLS certificate file {path}: {problem}")]
    Tls { path: String, problem: String },

    #[error("invalid command line: {0}")]
    Usage(String),

    #[error("the operating system's random number generator failed: {0}")]
    Random(#[source] rand::rngs::SysError),

    #[error("leader election failed: {0}")]
    LeaderElection(#[source] kube_lease_manager::LeaseManagerError),

    #[error("lost the leader Lease to another replica")]
    LostLeadership,
}

impl Error {
    /// Whether trying again soon may well succeed: the API server could not be reached or was
    /// restarting, or another writer won a race. An overloaded one (429) is not: it is given
    /// the growing backoff of every other failure.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Kube(kube::Error::Api(status)) => matches!(status.code, 409 | 502 | 503 | 504),
            Error::Kube(kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_)) => true,
            _ => false,
        }
    }

    /// A short, fixed label for metrics: never the error text, which is unbounded.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(status)) if status.code == 409 => "conflict",
            Error::Kube(kube::Error::Api(status)) if status.code == 403 => "forbidden",
            Error::Kube(kube::Error::Api(status)) if status.code == 404 => "not_found",
            Error::Kube(kube::Error::Api(_)) => "api",
            Error::Kube(_) => "transport",
            Error::KubeConfig(_) => "kubeconfig",
            Error::MissingObjectField(..) => "missing_field",
            Error::Serialize { .. } | Error::Yaml(_) => "serialize",
            Error::Http { .. } => "http",
            Error::Tls { .. } => "tls",
            Error::Usage(_) => "usage",
            Error::Random(_) => "random",
            Error::LeaderElection(_) | Error::LostLeadership => "leader_election",
        }
    }
}

impl From<kube::Error> for Error {
    fn from(error: kube::Error) -> Self {
        Error::Kube(error)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
