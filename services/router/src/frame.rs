//! Client requests off the wire and responses onto it. Pure functions over
//! bytes, so they can be fuzzed without sockets (`fuzz/fuzz_targets/router_frames.rs`).
//!
//! A frame here is what follows the 4-byte length prefix; the listener
//! enforces the size limit before a frame reaches [`parse`].

use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, ApiKey, ApiVersionsRequest, EndTxnRequest,
    FetchRequest, FindCoordinatorRequest, HeartbeatRequest, InitProducerIdRequest,
    JoinGroupRequest, LeaveGroupRequest, ListOffsetsRequest, MetadataRequest, OffsetCommitRequest,
    OffsetFetchRequest, OffsetForLeaderEpochRequest, ProduceRequest, RequestHeader, ResponseHeader,
    SyncGroupRequest, TxnOffsetCommitRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// Why a frame cannot be served. Each variant says what the listener does:
/// [`FrameError::UnsupportedApiVersions`] gets an answer, everything else
/// closes the connection (the stream cannot be trusted to continue).
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes is too short for a request header")]
    Short { len: usize },
    #[error("unknown API key {api_key} (version {version}, client {client})")]
    UnknownApi {
        api_key: i16,
        version: i16,
        client: String,
    },
    #[error(
        "{api:?} is not offered by this router (it was not in the router's ApiVersions answer; \
         client {client})"
    )]
    UnsupportedApi { api: ApiKey, client: String },
    #[error(
        "{api:?} v{version} is not offered by this router (it handles v{min} to v{max}; \
         client {client})"
    )]
    UnsupportedVersion {
        api: ApiKey,
        version: i16,
        min: i16,
        max: i16,
        client: String,
    },
    /// An ApiVersions request newer than the router's: answered with
    /// UNSUPPORTED_VERSION in a v0 response, so the client retries lower.
    #[error("ApiVersions v{version} is newer than this router's (client {client})")]
    UnsupportedApiVersions {
        version: i16,
        correlation_id: i32,
        client: String,
    },
    #[error("malformed {api:?} v{version} request: {reason}")]
    Malformed {
        api: ApiKey,
        version: i16,
        reason: String,
    },
    #[error("cannot encode the {api:?} v{version} response: {reason}")]
    Encode {
        api: ApiKey,
        version: i16,
        reason: String,
    },
}

impl FrameError {
    /// The `reason` label of a connection closed for it.
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::Short { .. } | FrameError::Malformed { .. } => "malformed",
            FrameError::UnknownApi { .. } => "unknown_api",
            FrameError::UnsupportedApi { .. }
            | FrameError::UnsupportedVersion { .. }
            | FrameError::UnsupportedApiVersions { .. } => "unsupported",
            FrameError::Encode { .. } => "encode",
        }
    }
}

macro_rules! requests {
    ($($name:ident: $req:ty => $min:literal ..= $max:literal),* $(,)?) => {
        /// A decoded request of an API the router handles.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Request {
            $($name($req)),*
        }

        /// The versions the router handles, per API: what ApiVersions
        /// offers (capped further by what both clusters support).
        /// Produce stops before v10 and Fetch before v13 (and so before
        /// v16): their NodeEndpoints and topic ids would need rewriting.
        pub const HANDLED: &[(ApiKey, i16, i16)] = &[$((ApiKey::$name, $min, $max)),*];

        fn decode_body(api: ApiKey, version: i16, buf: &mut Bytes) -> Option<anyhow::Result<Request>> {
            match api {
                $(ApiKey::$name => Some(<$req>::decode(buf, version).map(Request::$name)),)*
                _ => None,
            }
        }
    };
}

requests! {
    Produce: ProduceRequest => 3..=9,
    Fetch: FetchRequest => 4..=12,
    ListOffsets: ListOffsetsRequest => 1..=8,
    Metadata: MetadataRequest => 0..=12,
    OffsetCommit: OffsetCommitRequest => 2..=8,
    OffsetFetch: OffsetFetchRequest => 1..=7,
    FindCoordinator: FindCoordinatorRequest => 0..=4,
    JoinGroup: JoinGroupRequest => 0..=9,
    Heartbeat: HeartbeatRequest => 0..=4,
    LeaveGroup: LeaveGroupRequest => 0..=5,
    SyncGroup: SyncGroupRequest => 0..=5,
    ApiVersions: ApiVersionsRequest => 0..=3,
    InitProducerId: InitProducerIdRequest => 0..=4,
    OffsetForLeaderEpoch: OffsetForLeaderEpochRequest => 2..=4,
    AddPartitionsToTxn: AddPartitionsToTxnRequest => 0..=3,
    AddOffsetsToTxn: AddOffsetsToTxnRequest => 0..=3,
    EndTxn: EndTxnRequest => 0..=3,
    TxnOffsetCommit: TxnOffsetCommitRequest => 0..=3,
}

/// The versions of `api` the router handles.
pub fn handled(api: ApiKey) -> Option<(i16, i16)> {
    HANDLED
        .iter()
        .find(|(a, _, _)| *a == api)
        .map(|(_, min, max)| (*min, *max))
}

/// What a response needs from its request.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub api: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
    pub client_id: Option<StrBytes>,
}

impl Header {
    /// The client id for logs.
    pub fn client(&self) -> String {
        client_name(self.client_id.as_ref())
    }
}

fn client_name(id: Option<&StrBytes>) -> String {
    match id {
        Some(id) => format!("{:?}", id.as_str()),
        None => "(no client id)".to_owned(),
    }
}

/// The client id of a request header v1+ (every API but controlled
/// shutdown v0), read without decoding the rest: for the log line of a
/// request that cannot be decoded.
fn peek_client_id(frame: &[u8]) -> String {
    let Some(len) = frame.get(8..10) else {
        return client_name(None);
    };
    let len = i16::from_be_bytes([len[0], len[1]]);
    match usize::try_from(len) {
        Ok(n) => match frame.get(10..10 + n) {
            Some(b) => format!("{:?}", String::from_utf8_lossy(b)),
            None => client_name(None),
        },
        Err(_) => client_name(None),
    }
}

/// Parses one request frame (correlation id onwards is in the header; no
/// length prefix). Never panics; allocations are bounded by the frame.
pub fn parse(frame: Bytes) -> Result<(Header, Request), FrameError> {
    if frame.len() < 8 {
        return Err(FrameError::Short { len: frame.len() });
    }
    let api_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let Ok(api) = ApiKey::try_from(api_key) else {
        return Err(FrameError::UnknownApi {
            api_key,
            version,
            client: peek_client_id(&frame),
        });
    };
    let Some((min, max)) = handled(api) else {
        return Err(FrameError::UnsupportedApi {
            api,
            client: peek_client_id(&frame),
        });
    };
    if version < min || version > max {
        let client = peek_client_id(&frame);
        if api == ApiKey::ApiVersions && version > max {
            return Err(FrameError::UnsupportedApiVersions {
                version,
                correlation_id,
                client,
            });
        }
        return Err(FrameError::UnsupportedVersion {
            api,
            version,
            min,
            max,
            client,
        });
    }
    let malformed = |reason: String| FrameError::Malformed {
        api,
        version,
        reason,
    };
    // kafka-protocol decodes with checked reads (and, patched, bounded
    // allocations), but it is generated code fed with client bytes: a
    // panic hiding in it must close one connection, not the router.
    let decoded = catch_unwind(AssertUnwindSafe(move || {
        let mut buf = frame;
        let header = RequestHeader::decode(&mut buf, api.request_header_version(version))
            .map_err(|e| format!("header: {e:#}"))?;
        let body = decode_body(api, version, &mut buf)
            .ok_or_else(|| "no decoder".to_owned())?
            .map_err(|e| format!("{e:#}"))?;
        Ok::<_, String>((header, body))
    }));
    let (header, body) = match decoded {
        Ok(Ok(v)) => v,
        Ok(Err(reason)) => return Err(malformed(reason)),
        Err(_) => return Err(malformed("the decoder panicked".to_owned())),
    };
    Ok((
        Header {
            api,
            version,
            correlation_id: header.correlation_id,
            client_id: header.client_id,
        },
        body,
    ))
}

/// Encodes a whole response frame (length prefix, header, body) for the
/// request `header`.
pub fn encode_response<R: Encodable>(header: &Header, body: &R) -> Result<Bytes, FrameError> {
    encode_response_at(header.api, header.version, header.correlation_id, body)
}

pub(crate) fn encode_response_at<R: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &R,
) -> Result<Bytes, FrameError> {
    let fail = |reason: String| FrameError::Encode {
        api,
        version,
        reason,
    };
    let mut rh = ResponseHeader::default();
    rh.correlation_id = correlation_id;
    let header_version = api.response_header_version(version);
    let size = rh
        .compute_size(header_version)
        .and_then(|h| body.compute_size(version).map(|b| h + b))
        .map_err(|e| fail(format!("{e:#}")))?;
    let len = i32::try_from(size).map_err(|_| fail(format!("{size} bytes is too large")))?;
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.put_i32(len);
    rh.encode(&mut buf, header_version)
        .map_err(|e| fail(format!("{e:#}")))?;
    body.encode(&mut buf, version)
        .map_err(|e| fail(format!("{e:#}")))?;
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_frame<R: Encodable>(api: ApiKey, version: i16, body: &R) -> Bytes {
        let mut h = RequestHeader::default();
        h.request_api_key = api as i16;
        h.request_api_version = version;
        h.correlation_id = 42;
        h.client_id = Some(StrBytes::from_static_str("test-client"));
        let mut buf = BytesMut::new();
        h.encode(&mut buf, api.request_header_version(version))
            .unwrap();
        body.encode(&mut buf, version).unwrap();
        buf.freeze()
    }

    #[test]
    fn parses_a_request_it_handles() {
        let mut req = MetadataRequest::default();
        req.topics = None;
        let (header, body) = parse(request_frame(ApiKey::Metadata, 12, &req)).unwrap();
        assert_eq!(header.api, ApiKey::Metadata);
        assert_eq!(header.version, 12);
        assert_eq!(header.correlation_id, 42);
        assert_eq!(header.client(), "\"test-client\"");
        assert_eq!(body, Request::Metadata(req));
    }

    #[test]
    fn refuses_what_it_does_not_handle_with_the_client_named() {
        let err = parse(request_frame(
            ApiKey::DescribeGroups,
            5,
            &kafka_protocol::messages::DescribeGroupsRequest::default(),
        ))
        .unwrap_err();
        assert!(
            matches!(&err, FrameError::UnsupportedApi { api: ApiKey::DescribeGroups, client } if client == "\"test-client\""),
            "{err:?}"
        );
        let err = parse(request_frame(
            ApiKey::Produce,
            10,
            &ProduceRequest::default(),
        ))
        .unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::UnsupportedVersion {
                    version: 10,
                    max: 9,
                    ..
                }
            ),
            "{err:?}"
        );
        let err = parse(request_frame(
            ApiKey::ApiVersions,
            4,
            &ApiVersionsRequest::default(),
        ))
        .unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::UnsupportedApiVersions {
                    version: 4,
                    correlation_id: 42,
                    ..
                }
            ),
            "{err:?}"
        );
        let mut unknown = BytesMut::new();
        unknown.put_i16(999);
        unknown.put_i16(0);
        unknown.put_i32(1);
        unknown.put_i16(2);
        unknown.put_slice(b"cx");
        let err = parse(unknown.freeze()).unwrap_err();
        assert!(
            matches!(&err, FrameError::UnknownApi { api_key: 999, client, .. } if client == "\"cx\""),
            "{err:?}"
        );
        assert!(matches!(
            parse(Bytes::from_static(&[0, 3, 0])),
            Err(FrameError::Short { len: 3 })
        ));
    }

    #[test]
    fn truncated_and_garbled_bodies_are_malformed_not_panics() {
        let mut req = ProduceRequest::default();
        req.acks = -1;
        req.timeout_ms = 1000;
        let full = request_frame(ApiKey::Produce, 9, &req);
        for cut in 8..full.len() {
            let r = parse(full.slice(..cut));
            assert!(
                matches!(r, Err(FrameError::Malformed { .. })),
                "cut at {cut}: {r:?}"
            );
        }
        // Every byte flipped in turn: an answer or a clean error, never a panic.
        for i in 8..full.len() {
            let mut b = BytesMut::from(&full[..]);
            b[i] ^= 0xff;
            let _ = parse(b.freeze());
        }
    }

    #[test]
    fn response_frames_carry_length_and_correlation_id() {
        let header = Header {
            api: ApiKey::Metadata,
            version: 12,
            correlation_id: 9,
            client_id: None,
        };
        let frame = encode_response(
            &header,
            &kafka_protocol::messages::MetadataResponse::default(),
        )
        .unwrap();
        let len = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        assert_eq!(len, frame.len() - 4);
        assert_eq!(&frame[4..8], &9i32.to_be_bytes());
    }
}
