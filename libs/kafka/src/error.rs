//! Error type shared by every operation of the client.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use kafka_protocol::ResponseError;

/// Everything that can go wrong talking to a Kafka cluster.
///
/// Cloneable because one broken connection has to fail every request that was
/// in flight on it, and each of those callers gets its own copy.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KafkaError {
    /// No TCP connection could be opened (refused, unreachable, DNS, timeout).
    #[error("cannot connect to Kafka broker {addr}: {source}")]
    Connect {
        addr: String,
        source: Arc<io::Error>,
    },
    /// An established connection broke; every request in flight on it fails.
    #[error("connection to Kafka broker {broker} failed: {source}")]
    Io {
        broker: String,
        source: Arc<io::Error>,
    },
    /// A request got no answer in time. The connection it used is dropped,
    /// because a late answer could otherwise be matched to nothing.
    #[error("{what} timed out after {after:?}")]
    Timeout { what: String, after: Duration },
    /// The peer sent something that is not valid Kafka protocol, or we could
    /// not encode a request. The connection is dropped.
    #[error("Kafka protocol error: {0}")]
    Protocol(String),
    /// The broker does not offer any version of this API that we can speak.
    #[error("Kafka broker {broker} does not support the {api:?} API (not offered in its ApiVersions response, or no common version)")]
    UnsupportedVersion { api: ApiKey, broker: String },
    /// The broker answered with an error code.
    #[error("Kafka broker returned {name} (error code {code}){}", message_suffix(.message))]
    Broker {
        code: i16,
        name: &'static str,
        message: Option<String>,
    },
    /// The topic, or the partition (when `partition >= 0`), does not exist
    /// according to fresh metadata. `partition == -1` means the whole topic.
    #[error("unknown topic or partition: {}", tp(.topic, *.partition))]
    UnknownTopicOrPartition { topic: String, partition: i32 },
    /// The partition has no leader, or its leader is not among the live
    /// brokers.
    #[error("no leader available for {topic}/{partition}")]
    NoLeader { topic: String, partition: i32 },
    /// TLS or SASL with a broker failed (or could not be set up): which
    /// check and what to change are in `source`.
    #[error("Kafka broker {broker}: {source}")]
    Security {
        broker: String,
        source: Arc<crate::security::SecurityError>,
    },
    /// The client was closed.
    #[error("the Kafka client is closed")]
    Closed,
}

fn message_suffix(message: &Option<String>) -> String {
    match message {
        Some(m) if !m.is_empty() => format!(": {m}"),
        _ => String::new(),
    }
}

fn tp(topic: &str, partition: i32) -> String {
    if partition < 0 {
        format!("topic {topic}")
    } else {
        format!("{topic}/{partition}")
    }
}

/// Kafka error codes the client and the router act on.
pub mod codes {
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const LEADER_NOT_AVAILABLE: i16 = 5;
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    pub const REQUEST_TIMED_OUT: i16 = 7;
    pub const BROKER_NOT_AVAILABLE: i16 = 8;
    pub const REPLICA_NOT_AVAILABLE: i16 = 9;
    pub const NETWORK_EXCEPTION: i16 = 13;
    pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const NOT_COORDINATOR: i16 = 16;
    pub const NOT_ENOUGH_REPLICAS: i16 = 19;
    pub const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
    pub const GROUP_AUTHORIZATION_FAILED: i16 = 30;
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    pub const UNSUPPORTED_VERSION: i16 = 35;
    pub const NOT_CONTROLLER: i16 = 41;
    pub const INVALID_REQUEST: i16 = 42;
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    pub const INVALID_TXN_STATE: i16 = 48;
    pub const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    pub const UNKNOWN_PRODUCER_ID: i16 = 59;
    pub const TRANSACTIONAL_ID_NOT_FOUND: i16 = 105;
    pub const FENCED_LEADER_EPOCH: i16 = 74;
    pub const UNKNOWN_LEADER_EPOCH: i16 = 75;
    pub const UNKNOWN_TOPIC_ID: i16 = 100;
    pub const INCONSISTENT_TOPIC_ID: i16 = 103;
    pub const FETCH_SESSION_TOPIC_ID_ERROR: i16 = 106;
}

impl KafkaError {
    /// Builds the error for a non-zero broker error code.
    pub fn from_code(code: i16, message: Option<String>) -> KafkaError {
        KafkaError::Broker {
            code,
            name: error_name(code),
            message,
        }
    }

    /// Returns `Err` for a non-zero error code, `Ok(())` for 0.
    pub(crate) fn check(code: i16, message: Option<&str>) -> Result<(), KafkaError> {
        if code == 0 {
            Ok(())
        } else {
            Err(KafkaError::from_code(code, message.map(str::to_owned)))
        }
    }

    pub(crate) fn io(broker: &str, kind: io::ErrorKind, msg: impl Into<String>) -> KafkaError {
        KafkaError::Io {
            broker: broker.to_owned(),
            source: Arc::new(io::Error::new(kind, msg.into())),
        }
    }

    /// The Kafka error code this error stands for, if any.
    ///
    /// Client-side conditions that mirror a broker error carry that code
    /// (unknown topic: 3, no leader: 5, unsupported API: 35) so callers can
    /// match on codes alone.
    pub fn code(&self) -> Option<i16> {
        match self {
            KafkaError::Broker { code, .. } => Some(*code),
            KafkaError::UnknownTopicOrPartition { .. } => Some(codes::UNKNOWN_TOPIC_OR_PARTITION),
            KafkaError::NoLeader { .. } => Some(codes::LEADER_NOT_AVAILABLE),
            KafkaError::UnsupportedVersion { .. } => Some(codes::UNSUPPORTED_VERSION),
            _ => None,
        }
    }

    /// Whether trying the same request again later may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            KafkaError::Connect { .. }
            | KafkaError::Io { .. }
            | KafkaError::Timeout { .. }
            | KafkaError::UnknownTopicOrPartition { .. }
            | KafkaError::NoLeader { .. } => true,
            KafkaError::Security { source, .. } => source.is_retriable(),
            KafkaError::Protocol(_)
            | KafkaError::UnsupportedVersion { .. }
            | KafkaError::Closed => false,
            KafkaError::Broker { code, .. } => ResponseError::try_from_code(*code)
                .map(|e| e.is_retriable())
                .unwrap_or(false),
        }
    }

    /// Whether the cached leader/controller information is probably wrong:
    /// the error comes from a stale route or a lost connection.
    pub fn needs_metadata_refresh(&self) -> bool {
        match self {
            KafkaError::Connect { .. }
            | KafkaError::Io { .. }
            | KafkaError::Timeout { .. }
            | KafkaError::UnknownTopicOrPartition { .. }
            | KafkaError::NoLeader { .. } => true,
            KafkaError::Protocol(_)
            | KafkaError::UnsupportedVersion { .. }
            | KafkaError::Security { .. }
            | KafkaError::Closed => false,
            KafkaError::Broker { code, .. } => code_needs_refresh(*code),
        }
    }

    /// True for OFFSET_OUT_OF_RANGE, the one error a fetcher must handle
    /// differently from every other.
    pub fn is_offset_out_of_range(&self) -> bool {
        self.code() == Some(codes::OFFSET_OUT_OF_RANGE)
    }
}

pub(crate) fn code_needs_refresh(code: i16) -> bool {
    use codes::*;
    matches!(
        code,
        UNKNOWN_TOPIC_OR_PARTITION
            | LEADER_NOT_AVAILABLE
            | NOT_LEADER_OR_FOLLOWER
            | BROKER_NOT_AVAILABLE
            | REPLICA_NOT_AVAILABLE
            | NETWORK_EXCEPTION
            | NOT_CONTROLLER
            | KAFKA_STORAGE_ERROR
            | FENCED_LEADER_EPOCH
            | UNKNOWN_LEADER_EPOCH
            | UNKNOWN_TOPIC_ID
            | INCONSISTENT_TOPIC_ID
            | FETCH_SESSION_TOPIC_ID_ERROR
    )
}

/// The protocol name of a Kafka error code (as in the Kafka documentation),
/// or `"UNKNOWN"` for codes this client does not know.
pub fn error_name(code: i16) -> &'static str {
    match code {
        0 => "NONE",
        -1 => "UNKNOWN_SERVER_ERROR",
        1 => "OFFSET_OUT_OF_RANGE",
        2 => "CORRUPT_MESSAGE",
        3 => "UNKNOWN_TOPIC_OR_PARTITION",
        4 => "INVALID_FETCH_SIZE",
        5 => "LEADER_NOT_AVAILABLE",
        6 => "NOT_LEADER_OR_FOLLOWER",
        7 => "REQUEST_TIMED_OUT",
        8 => "BROKER_NOT_AVAILABLE",
        9 => "REPLICA_NOT_AVAILABLE",
        10 => "MESSAGE_TOO_LARGE",
        11 => "STALE_CONTROLLER_EPOCH",
        12 => "OFFSET_METADATA_TOO_LARGE",
        13 => "NETWORK_EXCEPTION",
        14 => "COORDINATOR_LOAD_IN_PROGRESS",
        15 => "COORDINATOR_NOT_AVAILABLE",
        16 => "NOT_COORDINATOR",
        17 => "INVALID_TOPIC_EXCEPTION",
        18 => "RECORD_LIST_TOO_LARGE",
        19 => "NOT_ENOUGH_REPLICAS",
        20 => "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
        21 => "INVALID_REQUIRED_ACKS",
        22 => "ILLEGAL_GENERATION",
        23 => "INCONSISTENT_GROUP_PROTOCOL",
        24 => "INVALID_GROUP_ID",
        25 => "UNKNOWN_MEMBER_ID",
        26 => "INVALID_SESSION_TIMEOUT",
        27 => "REBALANCE_IN_PROGRESS",
        28 => "INVALID_COMMIT_OFFSET_SIZE",
        29 => "TOPIC_AUTHORIZATION_FAILED",
        30 => "GROUP_AUTHORIZATION_FAILED",
        31 => "CLUSTER_AUTHORIZATION_FAILED",
        32 => "INVALID_TIMESTAMP",
        33 => "UNSUPPORTED_SASL_MECHANISM",
        34 => "ILLEGAL_SASL_STATE",
        35 => "UNSUPPORTED_VERSION",
        36 => "TOPIC_ALREADY_EXISTS",
        37 => "INVALID_PARTITIONS",
        38 => "INVALID_REPLICATION_FACTOR",
        39 => "INVALID_REPLICA_ASSIGNMENT",
        40 => "INVALID_CONFIG",
        41 => "NOT_CONTROLLER",
        42 => "INVALID_REQUEST",
        43 => "UNSUPPORTED_FOR_MESSAGE_FORMAT",
        44 => "POLICY_VIOLATION",
        45 => "OUT_OF_ORDER_SEQUENCE_NUMBER",
        46 => "DUPLICATE_SEQUENCE_NUMBER",
        47 => "INVALID_PRODUCER_EPOCH",
        48 => "INVALID_TXN_STATE",
        49 => "INVALID_PRODUCER_ID_MAPPING",
        50 => "INVALID_TRANSACTION_TIMEOUT",
        51 => "CONCURRENT_TRANSACTIONS",
        52 => "TRANSACTION_COORDINATOR_FENCED",
        53 => "TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
        54 => "SECURITY_DISABLED",
        55 => "OPERATION_NOT_ATTEMPTED",
        56 => "KAFKA_STORAGE_ERROR",
        57 => "LOG_DIR_NOT_FOUND",
        58 => "SASL_AUTHENTICATION_FAILED",
        59 => "UNKNOWN_PRODUCER_ID",
        60 => "REASSIGNMENT_IN_PROGRESS",
        61 => "DELEGATION_TOKEN_AUTH_DISABLED",
        62 => "DELEGATION_TOKEN_NOT_FOUND",
        63 => "DELEGATION_TOKEN_OWNER_MISMATCH",
        64 => "DELEGATION_TOKEN_REQUEST_NOT_ALLOWED",
        65 => "DELEGATION_TOKEN_AUTHORIZATION_FAILED",
        66 => "DELEGATION_TOKEN_EXPIRED",
        67 => "INVALID_PRINCIPAL_TYPE",
        68 => "NON_EMPTY_GROUP",
        69 => "GROUP_ID_NOT_FOUND",
        70 => "FETCH_SESSION_ID_NOT_FOUND",
        71 => "INVALID_FETCH_SESSION_EPOCH",
        72 => "LISTENER_NOT_FOUND",
        73 => "TOPIC_DELETION_DISABLED",
        74 => "FENCED_LEADER_EPOCH",
        75 => "UNKNOWN_LEADER_EPOCH",
        76 => "UNSUPPORTED_COMPRESSION_TYPE",
        77 => "STALE_BROKER_EPOCH",
        78 => "OFFSET_NOT_AVAILABLE",
        79 => "MEMBER_ID_REQUIRED",
        80 => "PREFERRED_LEADER_NOT_AVAILABLE",
        81 => "GROUP_MAX_SIZE_REACHED",
        82 => "FENCED_INSTANCE_ID",
        83 => "ELIGIBLE_LEADERS_NOT_AVAILABLE",
        84 => "ELECTION_NOT_NEEDED",
        85 => "NO_REASSIGNMENT_IN_PROGRESS",
        86 => "GROUP_SUBSCRIBED_TO_TOPIC",
        87 => "INVALID_RECORD",
        88 => "UNSTABLE_OFFSET_COMMIT",
        89 => "THROTTLING_QUOTA_EXCEEDED",
        90 => "PRODUCER_FENCED",
        91 => "RESOURCE_NOT_FOUND",
        92 => "DUPLICATE_RESOURCE",
        93 => "UNACCEPTABLE_CREDENTIAL",
        94 => "INCONSISTENT_VOTER_SET",
        95 => "INVALID_UPDATE_VERSION",
        96 => "FEATURE_UPDATE_FAILED",
        97 => "PRINCIPAL_DESERIALIZATION_FAILURE",
        98 => "SNAPSHOT_NOT_FOUND",
        99 => "POSITION_OUT_OF_RANGE",
        100 => "UNKNOWN_TOPIC_ID",
        101 => "DUPLICATE_BROKER_REGISTRATION",
        102 => "BROKER_ID_NOT_REGISTERED",
        103 => "INCONSISTENT_TOPIC_ID",
        104 => "INCONSISTENT_CLUSTER_ID",
        105 => "TRANSACTIONAL_ID_NOT_FOUND",
        106 => "FETCH_SESSION_TOPIC_ID_ERROR",
        107 => "INELIGIBLE_REPLICA",
        108 => "NEW_LEADER_ELECTED",
        109 => "OFFSET_MOVED_TO_TIERED_STORAGE",
        110 => "FENCED_MEMBER_EPOCH",
        111 => "UNRELEASED_INSTANCE_ID",
        112 => "UNSUPPORTED_ASSIGNOR",
        113 => "STALE_MEMBER_EPOCH",
        114 => "MISMATCHED_ENDPOINT_TYPE",
        115 => "UNSUPPORTED_ENDPOINT_TYPE",
        116 => "UNKNOWN_CONTROLLER_ID",
        117 => "UNKNOWN_SUBSCRIPTION_ID",
        118 => "TELEMETRY_TOO_LARGE",
        119 => "INVALID_REGISTRATION",
        120 => "TRANSACTION_ABORTABLE",
        121 => "INVALID_RECORD_STATE",
        122 => "SHARE_SESSION_NOT_FOUND",
        123 => "INVALID_SHARE_SESSION_EPOCH",
        124 => "FENCED_STATE_EPOCH",
        125 => "INVALID_VOTER_KEY",
        126 => "DUPLICATE_VOTER",
        127 => "VOTER_NOT_FOUND",
        128 => "INVALID_REGULAR_EXPRESSION",
        129 => "REBOOTSTRAP_REQUIRED",
        130 => "STREAMS_INVALID_TOPOLOGY",
        131 => "STREAMS_INVALID_TOPOLOGY_EPOCH",
        132 => "STREAMS_TOPOLOGY_FENCED",
        133 => "SHARE_SESSION_LIMIT_REACHED",
        _ => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_classification() {
        assert_eq!(error_name(1), "OFFSET_OUT_OF_RANGE");
        assert_eq!(error_name(6), "NOT_LEADER_OR_FOLLOWER");
        assert_eq!(error_name(3), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(error_name(-1), "UNKNOWN_SERVER_ERROR");
        assert_eq!(error_name(9999), "UNKNOWN");

        let e = KafkaError::from_code(6, None);
        assert!(e.is_retriable());
        assert!(e.needs_metadata_refresh());
        assert_eq!(e.code(), Some(6));

        let e = KafkaError::from_code(1, Some("at 42".into()));
        assert!(e.is_offset_out_of_range());
        assert!(!e.is_retriable());
        assert!(!e.needs_metadata_refresh());
        assert_eq!(
            e.to_string(),
            "Kafka broker returned OFFSET_OUT_OF_RANGE (error code 1): at 42"
        );

        assert!(KafkaError::from_code(19, None).is_retriable());
        assert!(!KafkaError::from_code(19, None).needs_metadata_refresh());
        assert!(!KafkaError::Protocol("x".into()).is_retriable());
    }
}
