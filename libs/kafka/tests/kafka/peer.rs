//! Wire pieces shared by the scripted brokers of the tests (`fake_peer`,
//! `admin`): reading request frames, writing response frames, and the
//! handshake answers (ApiVersions, Metadata).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use cutover_kafka::kafka_protocol::messages::api_versions_response::ApiVersion;
use cutover_kafka::kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use cutover_kafka::kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, BrokerId, MetadataResponse, RequestHeader, ResponseHeader,
    TopicName,
};
use cutover_kafka::kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// One request as read off the socket: its header and the undecoded body.
pub struct RequestFrame {
    pub api: ApiKey,
    pub header: RequestHeader,
    pub body: Bytes,
}

/// Reads one request frame. `None` when the client hung up, or sent
/// something a peer cannot answer (unknown API key, bad header): either
/// way the only thing left to do is to close the connection.
pub async fn read_request(sock: &mut TcpStream) -> Option<RequestFrame> {
    let len = sock.read_i32().await.ok()?;
    let mut buf = vec![0u8; usize::try_from(len).ok()?];
    sock.read_exact(&mut buf).await.ok()?;
    let mut buf = Bytes::from(buf);
    if buf.len() < 4 {
        return None;
    }
    let api = ApiKey::try_from(i16::from_be_bytes([buf[0], buf[1]])).ok()?;
    let version = i16::from_be_bytes([buf[2], buf[3]]);
    let header = RequestHeader::decode(&mut buf, api.request_header_version(version)).ok()?;
    Some(RequestFrame {
        api,
        header,
        body: buf,
    })
}

/// Decodes a request body and insists on every byte being used: leftovers
/// mean the client and the peer disagree on the layout.
pub fn decode_body<T: Decodable>(mut body: Bytes, version: i16) -> Result<T, String> {
    let req = T::decode(&mut body, version).map_err(|e| format!("{e:#}"))?;
    if body.has_remaining() {
        return Err(format!("{} bytes left after the body", body.remaining()));
    }
    Ok(req)
}

/// A complete response frame (length prefix, header, body).
pub fn response_frame<T: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Result<Bytes, String> {
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    let mut payload = BytesMut::new();
    header
        .encode(&mut payload, api.response_header_version(version))
        .map_err(|e| format!("{api:?} v{version} response header: {e:#}"))?;
    body.encode(&mut payload, version)
        .map_err(|e| format!("{api:?} v{version} response: {e:#}"))?;
    let mut out = BytesMut::new();
    out.put_i32(payload.len() as i32);
    out.put_slice(&payload);
    Ok(out.freeze())
}

pub fn api_versions(apis: &[(ApiKey, i16, i16)]) -> ApiVersionsResponse {
    let mut resp = ApiVersionsResponse::default();
    resp.api_keys = apis
        .iter()
        .map(|&(k, min, max)| {
            let mut v = ApiVersion::default();
            v.api_key = k as i16;
            v.min_version = min;
            v.max_version = max;
            v
        })
        .collect();
    resp
}

/// Handshake versions every scripted peer offers.
pub const HANDSHAKE_APIS: [(ApiKey, i16, i16); 2] =
    [(ApiKey::ApiVersions, 0, 3), (ApiKey::Metadata, 0, 12)];

/// A topic as a scripted peer lists it in Metadata.
pub struct PeerTopic {
    pub name: String,
    pub partitions: i32,
    /// Node id leading every partition.
    pub leader: i32,
}

/// Brokers `0..ports.len()` on 127.0.0.1, node `i` listening on `ports[i]`.
pub fn metadata(ports: &[u16], controller: i32, topics: &[PeerTopic]) -> MetadataResponse {
    let mut resp = MetadataResponse::default();
    resp.brokers = ports
        .iter()
        .enumerate()
        .map(|(id, port)| {
            let mut b = MetadataResponseBroker::default();
            b.node_id = BrokerId(id as i32);
            b.host = StrBytes::from_static_str("127.0.0.1");
            b.port = i32::from(*port);
            b
        })
        .collect();
    resp.controller_id = BrokerId(controller);
    resp.cluster_id = Some(StrBytes::from_static_str("fake"));
    resp.topics = topics
        .iter()
        .map(|t| {
            let mut mt = MetadataResponseTopic::default();
            mt.name = Some(TopicName(StrBytes::from_string(t.name.clone())));
            mt.partitions = (0..t.partitions)
                .map(|i| {
                    let mut p = MetadataResponsePartition::default();
                    p.partition_index = i;
                    p.leader_id = BrokerId(t.leader);
                    p.leader_epoch = 0;
                    p.replica_nodes = vec![BrokerId(t.leader)];
                    p.isr_nodes = vec![BrokerId(t.leader)];
                    p
                })
                .collect();
            mt
        })
        .collect();
    resp
}
