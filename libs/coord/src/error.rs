use std::time::Duration;

/// Everything that can go wrong talking to etcd. Messages are written for an
/// operator reading a log line: they say what failed and what to check.
#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    #[error(
        "cannot reach etcd at {endpoints}: {source}. Check that etcd is running, that the \
         endpoints (scheme, host and port) are right, and that this host can reach them"
    )]
    Unreachable {
        /// The configured endpoints, comma separated.
        endpoints: String,
        #[source]
        source: UnreachableCause,
    },

    #[error("etcd request failed: {0}")]
    Etcd(#[from] etcd_client::Error),

    /// A unary request got no answer in time. Writes may or may not have
    /// been applied: callers must re-read before acting on the outcome.
    #[error("etcd did not answer a {op} request within {after:?} (the outcome is unknown)")]
    Timeout { op: &'static str, after: Duration },

    #[error("value at etcd key {key} is not valid JSON for the expected type: {source}")]
    Decode {
        key: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("value for etcd key {key} could not be encoded as JSON: {source}")]
    Encode {
        key: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("this process no longer owns {resource}; another owner may have taken it over")]
    NotOwner { resource: String },

    #[error(
        "producer epoch of {resource} reached {max}; allocate a new producer id and pass it in",
        max = i16::MAX
    )]
    EpochExhausted { resource: String },

    #[error("no writer identity is stored for {resource}; allocate a producer id and pass it in")]
    NoWriterIdentity { resource: String },

    #[error("could not allocate a producer id for {resource}: {source}")]
    ProducerIdAllocation {
        resource: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error(
        "the etcd lease of this process can no longer be proven alive; it stopped writing to \
         stay fenced and must start a new session"
    )]
    LeaseLost,

    #[error(
        "etcd key {key} kept changing under concurrent writers; gave up after {attempts} attempts"
    )]
    Contended { key: String, attempts: u32 },

    #[error("cancelled")]
    Cancelled,

    #[error("invalid coordination argument: {0}")]
    Invalid(String),
}

/// Why etcd could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum UnreachableCause {
    #[error("no answer within {after:?} ({diagnosis})")]
    Timeout { after: Duration, diagnosis: String },
    #[error("{0}")]
    Etcd(#[source] etcd_client::Error),
}
