//! Orchestrator errors and their one mapping to gRPC status codes.

use cutover_model::validate::InvalidInput;

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
    #[error("cannot reach the {side} cluster at {addrs}: {cause}. Check bootstrap.servers and that the brokers are up and reachable from the orchestrator.")]
    ClusterUnreachable {
        side: &'static str,
        addrs: String,
        cause: String,
    },
    #[error("the {side} cluster answered with an error: {cause}")]
    Kafka { side: &'static str, cause: String },
    #[error("etcd: {0}")]
    Coord(#[from] cutover_coord::CoordError),
    #[error("another request changed {0} at the same time; retry")]
    Conflict(String),
}

impl ApiError {
    /// For `map_err`: a Kafka error of the `side` ("source"/"target") cluster.
    pub fn kafka(side: &'static str) -> impl Fn(cutover_kafka::KafkaError) -> ApiError {
        move |e| ApiError::Kafka {
            side,
            cause: e.to_string(),
        }
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        let msg = e.to_string();
        match e {
            ApiError::Invalid(_) | ApiError::BadRequest(_) => tonic::Status::invalid_argument(msg),
            ApiError::NotFound { .. } => tonic::Status::not_found(msg),
            ApiError::AlreadyExists { .. } => tonic::Status::already_exists(msg),
            ApiError::Precondition(_) => tonic::Status::failed_precondition(msg),
            ApiError::ClusterUnreachable { .. } | ApiError::Coord(_) => {
                tonic::Status::unavailable(msg)
            }
            ApiError::Kafka { .. } => tonic::Status::failed_precondition(msg),
            ApiError::Conflict(_) => tonic::Status::aborted(msg),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
