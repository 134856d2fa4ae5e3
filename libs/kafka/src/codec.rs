//! Framing and (de)serialisation of Kafka requests and responses.
//!
//! Everything that touches bytes from the network goes through the pure
//! functions here ([`split_frame`], [`decode_response`]), so they can be
//! fuzzed without sockets.

use std::fmt::Display;
use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, CreatePartitionsResponse, CreateTopicsResponse,
    DeleteRecordsResponse, DescribeConfigsResponse, FetchResponse, IncrementalAlterConfigsResponse,
    InitProducerIdResponse, ListOffsetsResponse, MetadataResponse, ProduceResponse, RequestHeader,
    ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::error::KafkaError;

/// Size of the length prefix of every Kafka frame.
const LENGTH_PREFIX: usize = 4;
/// Initial read buffer per connection; grows for big frames.
pub(crate) const READ_BUFFER: usize = 64 * 1024;

fn protocol_error<E: Display>(context: impl Display) -> impl FnOnce(E) -> KafkaError {
    move |e| KafkaError::Protocol(format!("{context}: {e}"))
}

/// Encodes a complete request frame (length prefix, header, body).
pub(crate) fn encode_request<R: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    client_id: &StrBytes,
    body: &R,
) -> Result<Bytes, KafkaError> {
    let mut header = RequestHeader::default();
    header.request_api_key = api as i16;
    header.request_api_version = version;
    header.correlation_id = correlation_id;
    header.client_id = Some(client_id.clone());
    let header_version = api.request_header_version(version);
    let what = format!("cannot encode {api:?} v{version} request");

    let size = header
        .compute_size(header_version)
        .and_then(|h| body.compute_size(version).map(|b| h + b))
        .map_err(protocol_error(&what))?;
    let len = i32::try_from(size).map_err(protocol_error(&what))?;
    let mut buf = BytesMut::with_capacity(LENGTH_PREFIX + size);
    buf.put_i32(len);
    header
        .encode(&mut buf, header_version)
        .map_err(protocol_error(&what))?;
    body.encode(&mut buf, version)
        .map_err(protocol_error(&what))?;
    if buf.len() != LENGTH_PREFIX + size {
        return Err(KafkaError::Protocol(format!(
            "{what}: encoded {} bytes, expected {size}",
            buf.len() - LENGTH_PREFIX
        )));
    }
    Ok(buf.freeze())
}

/// Why a frame's length prefix ends a connection: the stream cannot be
/// resynchronised after it. Shared by every reader of Kafka frames (this
/// client's, of broker answers; the router's, of client requests), each
/// adding what the limit is called on its side.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameLengthError {
    #[error("negative frame length {0}")]
    Negative(i32),
    #[error("frame of {len} bytes is larger than the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("frame of {len} bytes is too short for a correlation id")]
    TooShort { len: usize },
}

/// Takes one complete frame (without its length prefix) off the front of
/// `buf`, or returns `Ok(None)` if more bytes are needed. When a frame is
/// only partly there, reserves room for the rest so it arrives with one
/// allocation, so memory stays at one frame of at most `max_frame` bytes.
pub fn take_frame(buf: &mut BytesMut, max_frame: usize) -> Result<Option<Bytes>, FrameLengthError> {
    let Some(prefix) = buf.get(..LENGTH_PREFIX) else {
        buf.reserve(LENGTH_PREFIX);
        return Ok(None);
    };
    let len = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    let len = usize::try_from(len).map_err(|_| FrameLengthError::Negative(len))?;
    if len > max_frame {
        return Err(FrameLengthError::TooLarge {
            len,
            max: max_frame,
        });
    }
    if len < 4 {
        return Err(FrameLengthError::TooShort { len });
    }
    let total = LENGTH_PREFIX + len;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    buf.advance(LENGTH_PREFIX);
    Ok(Some(buf.split_to(len).freeze()))
}

/// [`take_frame`] for answers from a broker: a bad length is a protocol
/// error (the peer may not be a Kafka broker at all).
pub fn split_frame(buf: &mut BytesMut, max_frame: usize) -> Result<Option<Bytes>, KafkaError> {
    take_frame(buf, max_frame).map_err(|e| match e {
        FrameLengthError::TooLarge { .. } => {
            KafkaError::Protocol(format!("{e} (is the peer a Kafka broker?)"))
        }
        e => KafkaError::Protocol(e.to_string()),
    })
}

/// The correlation id at the start of a response frame.
pub fn correlation_id(frame: &[u8]) -> Option<i32> {
    let b = frame.get(..4)?;
    Some(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Decodes a response frame (header and body, without the length prefix)
/// into `T`.
///
/// The returned body shares memory with `frame`: record blobs in Fetch
/// responses are slices of it, not copies.
pub fn decode_frame<T: Decodable>(
    api: ApiKey,
    version: i16,
    frame: Bytes,
) -> Result<(i32, T), KafkaError> {
    let range = api.valid_versions();
    if version < range.min || version > range.max {
        return Err(KafkaError::Protocol(format!(
            "cannot decode {api:?} v{version}: supported versions are {range}"
        )));
    }
    let header_version = api.response_header_version(version);
    // kafka-protocol decodes with checked reads and returns errors, but it is
    // generated code fed with bytes from the network: a panic hiding in it
    // must become a protocol error, not take the process down.
    let result = catch_unwind(AssertUnwindSafe(move || {
        let mut frame = frame;
        let header = ResponseHeader::decode(&mut frame, header_version)
            .map_err(|e| format!("header: {e:#}"))?;
        let body = T::decode(&mut frame, version).map_err(|e| format!("{e:#}"))?;
        Ok::<_, String>((header.correlation_id, body))
    }));
    match result {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(KafkaError::Protocol(format!(
            "cannot decode {api:?} v{version} response: {e}"
        ))),
        Err(_) => Err(KafkaError::Protocol(format!(
            "decoder panicked on a malformed {api:?} v{version} response"
        ))),
    }
}

/// A decoded response of one of the APIs this client uses.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    ApiVersions(ApiVersionsResponse),
    Metadata(MetadataResponse),
    Produce(ProduceResponse),
    Fetch(FetchResponse),
    ListOffsets(ListOffsetsResponse),
    InitProducerId(InitProducerIdResponse),
    CreateTopics(CreateTopicsResponse),
    CreatePartitions(CreatePartitionsResponse),
    DescribeConfigs(DescribeConfigsResponse),
    IncrementalAlterConfigs(IncrementalAlterConfigsResponse),
    DeleteRecords(DeleteRecordsResponse),
}

/// Decodes a response frame (correlation id onwards, no length prefix) of
/// `api` at `version`. Never panics; anything malformed is
/// [`KafkaError::Protocol`]. Returns the correlation id and the body.
///
/// This is the entry point for fuzzing the response decoders.
pub fn decode_response(
    api: ApiKey,
    version: i16,
    frame: Bytes,
) -> Result<(i32, Response), KafkaError> {
    fn wrap<T: Decodable>(
        api: ApiKey,
        version: i16,
        frame: Bytes,
        f: fn(T) -> Response,
    ) -> Result<(i32, Response), KafkaError> {
        decode_frame::<T>(api, version, frame).map(|(c, r)| (c, f(r)))
    }
    match api {
        ApiKey::ApiVersions => wrap(api, version, frame, Response::ApiVersions),
        ApiKey::Metadata => wrap(api, version, frame, Response::Metadata),
        ApiKey::Produce => wrap(api, version, frame, Response::Produce),
        ApiKey::Fetch => wrap(api, version, frame, Response::Fetch),
        ApiKey::ListOffsets => wrap(api, version, frame, Response::ListOffsets),
        ApiKey::InitProducerId => wrap(api, version, frame, Response::InitProducerId),
        ApiKey::CreateTopics => wrap(api, version, frame, Response::CreateTopics),
        ApiKey::CreatePartitions => wrap(api, version, frame, Response::CreatePartitions),
        ApiKey::DescribeConfigs => wrap(api, version, frame, Response::DescribeConfigs),
        ApiKey::IncrementalAlterConfigs => {
            wrap(api, version, frame, Response::IncrementalAlterConfigs)
        }
        ApiKey::DeleteRecords => wrap(api, version, frame, Response::DeleteRecords),
        other => Err(KafkaError::Protocol(format!(
            "this client does not decode {other:?} responses"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::MetadataRequest;

    #[test]
    fn split_frame_handles_partial_and_bad_lengths() {
        let mut buf = BytesMut::new();
        assert!(split_frame(&mut buf, 100).unwrap().is_none());
        buf.extend_from_slice(&[0, 0, 0, 6, 0, 0]);
        assert!(split_frame(&mut buf, 100).unwrap().is_none());
        buf.extend_from_slice(&[0, 7, 1, 2, 9]);
        let f = split_frame(&mut buf, 100).unwrap().unwrap();
        assert_eq!(&f[..], &[0, 0, 0, 7, 1, 2]);
        assert_eq!(correlation_id(&f), Some(7));
        assert_eq!(&buf[..], &[9]);

        let mut neg = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            split_frame(&mut neg, 100),
            Err(KafkaError::Protocol(_))
        ));
        let mut big = BytesMut::from(&[0, 0, 1, 0][..]);
        assert!(matches!(
            split_frame(&mut big, 100),
            Err(KafkaError::Protocol(_))
        ));
        let mut short = BytesMut::from(&[0, 0, 0, 2, 0, 0][..]);
        assert!(matches!(
            split_frame(&mut short, 100),
            Err(KafkaError::Protocol(_))
        ));
        for (bytes, want) in [
            (
                &[0xff, 0xff, 0xff, 0xfe][..],
                FrameLengthError::Negative(-2),
            ),
            (
                &[0, 0, 1, 0][..],
                FrameLengthError::TooLarge { len: 256, max: 100 },
            ),
            (&[0, 0, 0, 3][..], FrameLengthError::TooShort { len: 3 }),
        ] {
            assert_eq!(take_frame(&mut BytesMut::from(bytes), 100), Err(want));
        }
    }

    #[test]
    fn request_frame_has_length_and_header() {
        let body = MetadataRequest::default();
        let client = StrBytes::from_static_str("t");
        let frame = encode_request(ApiKey::Metadata, 12, 42, &client, &body).unwrap();
        let len = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        assert_eq!(len + 4, frame.len());
        assert_eq!(&frame[4..6], &3i16.to_be_bytes());
        assert_eq!(&frame[6..8], &12i16.to_be_bytes());
        assert_eq!(&frame[8..12], &42i32.to_be_bytes());
    }

    #[test]
    fn decode_response_rejects_garbage_without_panicking() {
        let apis = [
            ApiKey::ApiVersions,
            ApiKey::Metadata,
            ApiKey::Produce,
            ApiKey::Fetch,
            ApiKey::ListOffsets,
            ApiKey::InitProducerId,
            ApiKey::CreateTopics,
            ApiKey::CreatePartitions,
            ApiKey::DescribeConfigs,
            ApiKey::IncrementalAlterConfigs,
            ApiKey::DeleteRecords,
        ];
        // Short inputs only: array counts read from them stay small, see
        // the note on allocation in the crate documentation.
        let inputs: [&[u8]; 5] = [
            &[],
            &[0, 0, 0, 1],
            &[0, 0, 0, 1, 0],
            &[0, 0, 0, 1, 0, 0, 0, 0, 0, 1],
            &[0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0x80],
        ];
        for api in apis {
            let r = api.valid_versions();
            for version in (r.min - 1)..=(r.max + 1) {
                for input in inputs {
                    let _ = decode_response(api, version, Bytes::copy_from_slice(input));
                }
            }
        }
        assert!(matches!(
            decode_response(ApiKey::Metadata, 12, Bytes::from_static(&[0, 0, 0, 1])),
            Err(KafkaError::Protocol(_))
        ));
        assert!(matches!(
            decode_response(ApiKey::Metadata, 99, Bytes::from_static(&[0, 0, 0, 1])),
            Err(KafkaError::Protocol(_))
        ));
    }
}
