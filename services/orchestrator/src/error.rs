//! Orchestrator errors and their one mapping to gRPC status codes
//! ([`ApiError::code`]).

use cutover_kafka::{Cluster, KafkaError};
use cutover_model::validate::InvalidInput;

/// gRPC metadata key saying whether the same request may succeed later
/// (`true`/`false`), for clients that decide about retries by themselves.
pub const RETRIABLE_METADATA: &str = "cutover-retriable";
/// gRPC metadata key carrying the Kafka error code behind an error, when
/// there is one (e.g. `6` for NOT_LEADER_OR_FOLLOWER).
pub const KAFKA_CODE_METADATA: &str = "cutover-kafka-error-code";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    #[error("{0}")]
    BadRequest(String),
    #[error("{what} {name:?} does not exist")]
    NotFound { what: &'static str, name: String },
    #[error("{what} {name:?} already exists")]
    AlreadyExists { what: &'static str, name: String },
    /// The request is valid but the world is not in a state that allows it.
    #[error("{0}")]
    Precondition(String),
    /// No client could be set up for a cluster of a link.
    #[error("cannot reach the {side} cluster at {addrs}: {error}. Check bootstrap.servers and that the brokers are up and reachable from the orchestrator.")]
    ClusterUnreachable {
        side: &'static str,
        addrs: String,
        #[source]
        error: KafkaError,
    },
    /// A Kafka request made for the call failed: an error code from a
    /// broker, or the way to it (connection, timeout, leader moving).
    #[error("{}", kafka_message(.side, .addrs, .context, .error))]
    Kafka {
        side: &'static str,
        addrs: String,
        /// What the request was for, when the error alone does not say it
        /// (e.g. `creating topic "orders"`); may be empty.
        context: String,
        #[source]
        error: KafkaError,
    },
    /// A cluster answered, but with something that cannot be used as it
    /// is (e.g. an undecodable record batch): asking again gives the same.
    #[error("the {side} cluster ({addrs}) answered with data that cannot be used: {cause}")]
    KafkaData {
        side: &'static str,
        addrs: String,
        cause: String,
    },
    #[error("etcd: {0}")]
    Coord(#[from] cutover_coord::CoordError),
    #[error("another request changed {0} at the same time; retry")]
    Conflict(String),
    /// A service the call needs (a router, a fetcher) did not answer; the
    /// same request may succeed once it does.
    #[error("{0}")]
    Unavailable(String),
    /// A wait of the call (a drain, transactions to end) ran out.
    #[error("{0}")]
    TooSlow(String),
    /// A promotion stopped before its switch and was put back: `cause`
    /// says why, and gives the code.
    #[error("{cause} ({what} {id} was undone: every topic is as it was)")]
    Undone {
        what: &'static str,
        id: String,
        #[source]
        cause: Box<ApiError>,
    },
}

fn kafka_message(side: &str, addrs: &str, context: &str, error: &KafkaError) -> String {
    let doing = if context.is_empty() {
        String::new()
    } else {
        format!("{context}: ")
    };
    if error.is_retriable() {
        format!(
            "the {side} cluster ({addrs}) failed a request: {doing}{error}. This is usually \
             temporary (a broker restarting, a partition leader moving, a slow network): \
             the request is worth retrying."
        )
    } else {
        format!("the {side} cluster ({addrs}) answered with an error: {doing}{error}")
    }
}

fn addrs_of(cluster: &Cluster) -> String {
    cluster.bootstrap().join(",")
}

impl ApiError {
    /// For `map_err`: a Kafka error of the `side` ("source"/"target")
    /// cluster, named by its addresses.
    pub fn kafka(side: &'static str, cluster: &Cluster) -> impl Fn(KafkaError) -> ApiError {
        let addrs = addrs_of(cluster);
        move |error| ApiError::Kafka {
            side,
            addrs: addrs.clone(),
            context: String::new(),
            error,
        }
    }

    /// Like [`ApiError::kafka`], saying what the failed request was for.
    pub fn kafka_doing(
        side: &'static str,
        cluster: &Cluster,
        context: impl Into<String>,
    ) -> impl FnOnce(KafkaError) -> ApiError {
        let addrs = addrs_of(cluster);
        let context = context.into();
        move |error| ApiError::Kafka {
            side,
            addrs,
            context,
            error,
        }
    }

    /// An answer of the `side` cluster that cannot be used.
    pub fn kafka_data(side: &'static str, cluster: &Cluster, cause: impl Into<String>) -> ApiError {
        ApiError::KafkaData {
            side,
            addrs: addrs_of(cluster),
            cause: cause.into(),
        }
    }

    /// The Kafka error behind this one, if any.
    fn kafka_error(&self) -> Option<&KafkaError> {
        match self {
            ApiError::ClusterUnreachable { error, .. } | ApiError::Kafka { error, .. } => {
                Some(error)
            }
            ApiError::Undone { cause, .. } => cause.kafka_error(),
            _ => None,
        }
    }

    /// The gRPC code of this error: the one place errors are classified.
    /// A Kafka error a retry may cure (broker down, leader moving, timeout)
    /// is UNAVAILABLE; any other Kafka error is FAILED_PRECONDITION, since
    /// the cluster must change before the request can succeed.
    pub fn code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            ApiError::Invalid(_) | ApiError::BadRequest(_) => Code::InvalidArgument,
            ApiError::NotFound { .. } => Code::NotFound,
            ApiError::AlreadyExists { .. } => Code::AlreadyExists,
            ApiError::Precondition(_) | ApiError::KafkaData { .. } => Code::FailedPrecondition,
            ApiError::ClusterUnreachable { error, .. } | ApiError::Kafka { error, .. } => {
                if error.is_retriable() {
                    Code::Unavailable
                } else {
                    Code::FailedPrecondition
                }
            }
            ApiError::Coord(_) => Code::Unavailable,
            ApiError::Conflict(_) => Code::Aborted,
            ApiError::Unavailable(_) => Code::Unavailable,
            ApiError::TooSlow(_) => Code::DeadlineExceeded,
            ApiError::Undone { cause, .. } => cause.code(),
        }
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        let code = e.code();
        let mut status = tonic::Status::new(code, e.to_string());
        let retriable = matches!(code, tonic::Code::Unavailable | tonic::Code::Aborted);
        let meta = status.metadata_mut();
        meta.insert(
            RETRIABLE_METADATA,
            tonic::metadata::MetadataValue::from_static(if retriable { "true" } else { "false" }),
        );
        if let Some(kafka) = e.kafka_error().and_then(KafkaError::code) {
            meta.insert(KAFKA_CODE_METADATA, kafka.into());
        }
        status
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use tonic::Code;

    fn kafka(error: KafkaError) -> ApiError {
        ApiError::Kafka {
            side: "source",
            addrs: "k1:9092,k2:9092".into(),
            context: String::new(),
            error,
        }
    }

    fn retriable_errors() -> Vec<KafkaError> {
        vec![
            KafkaError::Connect {
                addr: "k1:9092".into(),
                source: Arc::new(std::io::ErrorKind::ConnectionRefused.into()),
            },
            KafkaError::Io {
                broker: "k1:9092".into(),
                source: Arc::new(std::io::ErrorKind::ConnectionReset.into()),
            },
            KafkaError::Timeout {
                what: "Fetch".into(),
                after: Duration::from_secs(10),
            },
            KafkaError::NoLeader {
                topic: "t".into(),
                partition: 0,
            },
            // NOT_LEADER_OR_FOLLOWER, REQUEST_TIMED_OUT, NOT_ENOUGH_REPLICAS
            KafkaError::from_code(6, None),
            KafkaError::from_code(7, None),
            KafkaError::from_code(19, Some("min.insync.replicas".into())),
        ]
    }

    fn permanent_errors() -> Vec<KafkaError> {
        vec![
            KafkaError::Protocol("garbage frame".into()),
            KafkaError::UnsupportedVersion {
                api: cutover_kafka::ApiKey::CreateTopics,
                broker: "k1:9092".into(),
            },
            KafkaError::Closed,
            // TOPIC_AUTHORIZATION_FAILED, INVALID_CONFIG, POLICY_VIOLATION
            KafkaError::from_code(29, None),
            KafkaError::from_code(40, Some("bad value".into())),
            KafkaError::from_code(44, None),
        ]
    }

    #[test]
    fn retriable_kafka_errors_are_unavailable_and_say_so_with_side_and_addresses() {
        for error in retriable_errors() {
            let what = error.to_string();
            let code = error.code();
            let s = tonic::Status::from(kafka(error));
            assert_eq!(s.code(), Code::Unavailable, "{what}");
            let msg = s.message();
            assert!(msg.contains("source cluster (k1:9092,k2:9092)"), "{msg}");
            assert!(msg.contains(&what), "{msg}");
            assert!(msg.contains("worth retrying"), "{msg}");
            assert_eq!(
                s.metadata().get(RETRIABLE_METADATA).map(|v| v.as_bytes()),
                Some(&b"true"[..])
            );
            assert_eq!(
                s.metadata()
                    .get(KAFKA_CODE_METADATA)
                    .and_then(|v| v.to_str().ok()),
                code.map(|c| c.to_string()).as_deref(),
                "{msg}"
            );
        }
    }

    #[test]
    fn other_kafka_errors_are_failed_precondition_without_a_retry_hint() {
        for error in permanent_errors() {
            let what = error.to_string();
            let s = tonic::Status::from(kafka(error));
            assert_eq!(s.code(), Code::FailedPrecondition, "{what}");
            let msg = s.message();
            assert!(msg.contains("source cluster (k1:9092,k2:9092)"), "{msg}");
            assert!(msg.contains(&what), "{msg}");
            assert!(!msg.contains("retry"), "{msg}");
            assert_eq!(
                s.metadata().get(RETRIABLE_METADATA).map(|v| v.as_bytes()),
                Some(&b"false"[..])
            );
        }
        let data = ApiError::KafkaData {
            side: "target",
            addrs: "t:9092".into(),
            cause: "undecodable batch at 5".into(),
        };
        assert_eq!(data.code(), Code::FailedPrecondition);
        assert!(data.to_string().contains("target cluster (t:9092)"));
    }

    #[test]
    fn the_context_of_a_kafka_error_is_in_the_message() {
        let e = ApiError::Kafka {
            side: "target",
            addrs: "t:9092".into(),
            context: "creating topic \"orders\"".into(),
            error: KafkaError::from_code(7, None),
        };
        let msg = e.to_string();
        assert!(
            msg.contains("target cluster (t:9092) failed a request: creating topic \"orders\": Kafka broker returned REQUEST_TIMED_OUT"),
            "{msg}"
        );
    }

    #[test]
    fn a_cluster_that_cannot_be_reached_is_unavailable_unless_it_speaks_no_kafka() {
        let down = ApiError::ClusterUnreachable {
            side: "target",
            addrs: "t:9092".into(),
            error: retriable_errors().remove(0),
        };
        assert_eq!(down.code(), Code::Unavailable);
        assert!(down.to_string().contains("at t:9092"));
        let not_kafka = ApiError::ClusterUnreachable {
            side: "target",
            addrs: "t:9092".into(),
            error: KafkaError::Protocol("not a Kafka response".into()),
        };
        assert_eq!(not_kafka.code(), Code::FailedPrecondition);
    }

    #[test]
    fn every_other_error_keeps_its_code() {
        let cases = [
            (ApiError::BadRequest("x".into()), Code::InvalidArgument),
            (
                ApiError::NotFound {
                    what: "link",
                    name: "l".into(),
                },
                Code::NotFound,
            ),
            (
                ApiError::AlreadyExists {
                    what: "link",
                    name: "l".into(),
                },
                Code::AlreadyExists,
            ),
            (ApiError::Precondition("x".into()), Code::FailedPrecondition),
            (ApiError::Conflict("x".into()), Code::Aborted),
        ];
        for (e, code) in cases {
            assert_eq!(tonic::Status::from(e).code(), code);
        }
    }
}
