//! A connection writes requests in the order they were sent, whole, also
//! when one is larger than the socket takes at once, and no send waits for
//! the socket (`conn.rs`: the proxy's pipelined Produce requests and the
//! fetcher's rely on it). A scripted broker that does not read until every
//! request has been sent keeps the socket full.

use std::time::Duration;

use bytes::Bytes;
use cutover_kafka::kafka_protocol::messages::produce_request::{
    PartitionProduceData, TopicProduceData,
};
use cutover_kafka::kafka_protocol::messages::produce_response::{
    PartitionProduceResponse, TopicProduceResponse,
};
use cutover_kafka::kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, TopicName};
use cutover_kafka::kafka_protocol::protocol::StrBytes;
use cutover_kafka::{pieces, Cluster, Destination};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::common::config;
use crate::peer::{self, decode_body, read_request, response_frame, HANDSHAKE_APIS};

const PRODUCE_VERSION: i16 = 7;

fn produce(topic: &str, records: Bytes) -> ProduceRequest {
    let mut p = PartitionProduceData::default();
    p.index = 0;
    p.records = Some(records);
    let mut t = TopicProduceData::default();
    t.name = TopicName(StrBytes::from_string(topic.to_owned()));
    t.partition_data = vec![p];
    let mut req = ProduceRequest::default();
    req.acks = -1;
    req.timeout_ms = 5000;
    req.topic_data = vec![t];
    req
}

fn answer(topic: &str) -> ProduceResponse {
    let mut p = PartitionProduceResponse::default();
    p.index = 0;
    let mut t = TopicProduceResponse::default();
    t.name = TopicName(StrBytes::from_string(topic.to_owned()));
    t.partition_responses = vec![p];
    let mut resp = ProduceResponse::default();
    resp.responses = vec![t];
    resp
}

/// Answers the handshake on every connection. On the one that produces,
/// reads nothing more until `go`, then reads `expect` Produce requests,
/// reports each (topic, records) in the order read, and answers them.
async fn serve(
    mut sock: TcpStream,
    port: u16,
    mut go: watch::Receiver<bool>,
    expect: usize,
    seen: mpsc::Sender<(String, Bytes)>,
) {
    let mut apis = HANDSHAKE_APIS.to_vec();
    apis.push((ApiKey::Produce, 3, PRODUCE_VERSION));
    loop {
        // Peeking at the next frame's API key, without reading it.
        let mut head = [0u8; 6];
        loop {
            match sock.peek(&mut head).await {
                Ok(0) | Err(_) => return,
                Ok(n) if n >= head.len() => break,
                Ok(_) => {}
            }
        }
        if i16::from_be_bytes([head[4], head[5]]) == ApiKey::Produce as i16 {
            break;
        }
        let Some(req) = read_request(&mut sock).await else {
            return;
        };
        let (v, corr) = (req.header.request_api_version, req.header.correlation_id);
        let frame = match req.api {
            ApiKey::ApiVersions => response_frame(req.api, v, corr, &peer::api_versions(&apis)),
            ApiKey::Metadata => response_frame(req.api, v, corr, &peer::metadata(&[port], 0, &[])),
            _ => return,
        };
        if sock.write_all(&frame.unwrap()).await.is_err() {
            return;
        }
    }
    if go.wait_for(|go| *go).await.is_err() {
        return;
    }
    let mut answers = Vec::new();
    for _ in 0..expect {
        let Some(req) = read_request(&mut sock).await else {
            return;
        };
        assert_eq!(req.api, ApiKey::Produce);
        let v = req.header.request_api_version;
        let mut body: ProduceRequest = decode_body(req.body, v).unwrap();
        let topic = body.topic_data[0].name.0.to_string();
        let records = body.topic_data[0].partition_data[0].records.take().unwrap();
        answers.push(
            response_frame(
                ApiKey::Produce,
                v,
                req.header.correlation_id,
                &answer(&topic),
            )
            .unwrap(),
        );
        seen.send((topic, records)).await.unwrap();
    }
    for a in answers {
        sock.write_all(&a).await.unwrap();
    }
    // Keep the socket open until the client is done with it.
    let _ = read_request(&mut sock).await;
}

#[tokio::test]
async fn a_request_larger_than_the_socket_takes_is_written_whole_before_those_after_it() {
    const SMALL: usize = 40;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (go_tx, go) = watch::channel(false);
    let (seen_tx, mut seen) = mpsc::channel(SMALL + 2);
    let peer = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((sock, _)) = listener.accept().await {
            conns.spawn(serve(sock, port, go.clone(), SMALL + 2, seen_tx.clone()));
        }
    });

    let cluster = Cluster::connect(config(&format!("127.0.0.1:{port}")))
        .await
        .unwrap();
    let lane = cluster.lane();
    // Far more than a loopback socket buffers, and from its own buffer
    // (a spliced piece), as the router sends large records.
    let large: Bytes = (0..48 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let mut expected = vec![
        ("small-first".to_owned(), Bytes::from_static(b"first")),
        ("large".to_owned(), large),
    ];
    expected
        .extend((0..SMALL).map(|i| (format!("small-{i}"), Bytes::from(format!("records {i}")))));
    let mut sent = Vec::new();
    for (topic, records) in &expected {
        let mut req = produce(topic, records.clone());
        let spliced = pieces::swap_out(pieces::produce_records(&mut req));
        // Only the large records are written from their own buffer.
        assert_eq!(spliced.len(), usize::from(topic == "large"), "{topic}");
        sent.push(
            lane.send_spliced(
                Destination::Node(0),
                ApiKey::Produce,
                PRODUCE_VERSION,
                &req,
                spliced,
            )
            .await
            .unwrap(),
        );
    }
    // Every send returned while the broker read nothing: none waited on
    // the socket.
    go_tx.send(true).unwrap();

    for (i, (topic, records)) in expected.iter().enumerate() {
        let (got_topic, got) = tokio::time::timeout(Duration::from_secs(30), seen.recv())
            .await
            .expect("the broker got every request")
            .unwrap();
        assert_eq!(&got_topic, topic, "request {i} out of order");
        assert!(got == *records, "request {i} ({topic}): records differ");
    }
    for (p, (topic, _)) in sent.into_iter().zip(&expected) {
        let resp: ProduceResponse = p.decode(Duration::from_secs(30)).await.unwrap();
        assert_eq!(resp.responses[0].name.0.as_str(), topic.as_str());
    }
    cluster.close().await;
    peer.abort();
}
