//! Which Kafka errors a partition retries and which stop it as FAILED: a
//! pure decision, apart from the replicator's I/O.
//!
//! The base is the Kafka crate's own knowledge of each error code
//! (`KafkaError::is_retriable`, from Kafka's `Errors`), with the exceptions
//! a copier needs: an error that a new attempt with a new writer epoch
//! clears is retried even when a producer would give up, and an error that
//! the same bytes would get again is not retried even when Kafka calls it
//! retriable.

use cutover_kafka::{error_name, KafkaError};

/// What the replicator does with a Kafka error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorClass {
    /// Retry with backoff, from the target's log end, with a new epoch.
    Transient,
    /// Stop the partition as FAILED; the message says what to do.
    Fatal(String),
}

mod code {
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    pub const RECORD_LIST_TOO_LARGE: i16 = 18;
    pub const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
    pub const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
    pub const INVALID_TIMESTAMP: i16 = 32;
    pub const UNSUPPORTED_VERSION: i16 = 35;
    pub const POLICY_VIOLATION: i16 = 44;
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    pub const DUPLICATE_SEQUENCE_NUMBER: i16 = 46;
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    pub const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
    pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
    pub const UNKNOWN_PRODUCER_ID: i16 = 59;
    pub const INVALID_RECORD: i16 = 87;
    pub const PRODUCER_FENCED: i16 = 90;
}

/// Classifies an error of a fetch from the source or a write to the target.
pub fn classify(e: &KafkaError) -> ErrorClass {
    use code::*;
    let Some(code) = e.code() else {
        // Connection, timeout, protocol and shutdown errors: the next
        // connection may well work. (An unsupported API is a code, below.)
        return ErrorClass::Transient;
    };
    match code {
        // The writer identity: a new attempt takes a new epoch in etcd,
        // guarded by ownership, so these clear (or end as "not the owner"
        // if another fetcher took the partition and fenced us).
        OUT_OF_ORDER_SEQUENCE_NUMBER
        | DUPLICATE_SEQUENCE_NUMBER
        | INVALID_PRODUCER_EPOCH
        | INVALID_PRODUCER_ID_MAPPING
        | UNKNOWN_PRODUCER_ID
        | PRODUCER_FENCED => ErrorClass::Transient,
        // A broker-side exception without a name: often a broker in trouble
        // that recovers; retried with backoff, visible in status meanwhile.
        UNKNOWN_SERVER_ERROR => ErrorClass::Transient,
        // Kafka calls a corrupt batch retriable (a network flip); the
        // fetcher would send the same bytes again.
        CORRUPT_MESSAGE => fatal(e, code),
        _ if e.is_retriable() => ErrorClass::Transient,
        _ => fatal(e, code),
    }
}

fn fatal(e: &KafkaError, code: i16) -> ErrorClass {
    use code::*;
    let todo = match code {
        MESSAGE_TOO_LARGE | RECORD_LIST_TOO_LARGE => {
            "the target topic refuses batches this large: set its max.message.bytes to at least the source topic's \
             (kafka-configs --alter --entity-type topics --entity-name <topic> --add-config max.message.bytes=<bytes>), \
             then run `cutover mirror resume`"
        }
        TOPIC_AUTHORIZATION_FAILED | CLUSTER_AUTHORIZATION_FAILED | TRANSACTIONAL_ID_AUTHORIZATION_FAILED => {
            "the link's principal lacks a permission: it needs Read and Describe on the source topic, Write and \
             Describe on the target topic and IdempotentWrite on the target cluster; grant them, then run \
             `cutover mirror resume`"
        }
        CORRUPT_MESSAGE | INVALID_RECORD | INVALID_TIMESTAMP => {
            "the target refused a batch the fetcher built as invalid, which is a bug in Cutover: keep the \
             fetcher's log for a report; `cutover mirror resume` tries again"
        }
        UNSUPPORTED_VERSION => {
            "the broker does not speak a protocol version the fetcher needs; upgrade the cluster (Kafka 2.8 or \
             newer), then run `cutover mirror resume`"
        }
        POLICY_VIOLATION => {
            "a broker policy refused the write; change the policy or the topic, then run `cutover mirror resume`"
        }
        _ => "fix the cause on the cluster, then run `cutover mirror resume`",
    };
    ErrorClass::Fatal(format!(
        "{e} ({} is not retriable): {todo}",
        error_name(code)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(code: i16) -> KafkaError {
        KafkaError::from_code(code, None)
    }

    #[test]
    fn non_retriable_broker_errors_stop_the_partition_with_what_to_do() {
        for (code, says) in [
            (code::MESSAGE_TOO_LARGE, "max.message.bytes"),
            (code::RECORD_LIST_TOO_LARGE, "max.message.bytes"),
            (code::TOPIC_AUTHORIZATION_FAILED, "permission"),
            (code::CLUSTER_AUTHORIZATION_FAILED, "permission"),
            (code::CORRUPT_MESSAGE, "bug in Cutover"),
            (code::INVALID_RECORD, "bug in Cutover"),
            (code::UNSUPPORTED_VERSION, "upgrade"),
            (code::POLICY_VIOLATION, "policy"),
        ] {
            let ErrorClass::Fatal(msg) = classify(&broker(code)) else {
                panic!("{} must not be retried", error_name(code));
            };
            assert!(msg.contains(error_name(code)), "{msg}");
            assert!(msg.contains(says), "{msg}");
            assert!(msg.contains("cutover mirror resume"), "{msg}");
        }
    }

    #[test]
    fn retriable_and_writer_identity_errors_are_retried() {
        for code in [
            6,  // NOT_LEADER_OR_FOLLOWER
            7,  // REQUEST_TIMED_OUT
            19, // NOT_ENOUGH_REPLICAS
            code::OUT_OF_ORDER_SEQUENCE_NUMBER,
            code::INVALID_PRODUCER_EPOCH,
            code::PRODUCER_FENCED,
            code::UNKNOWN_PRODUCER_ID,
            code::UNKNOWN_SERVER_ERROR,
        ] {
            assert_eq!(
                classify(&broker(code)),
                ErrorClass::Transient,
                "{}",
                error_name(code)
            );
        }
        let io = KafkaError::Timeout {
            what: "Produce".into(),
            after: std::time::Duration::from_secs(1),
        };
        assert_eq!(classify(&io), ErrorClass::Transient);
        let unsupported = KafkaError::UnsupportedVersion {
            api: cutover_kafka::ApiKey::Produce,
            broker: "b".into(),
        };
        assert!(matches!(classify(&unsupported), ErrorClass::Fatal(_)));
    }
}
