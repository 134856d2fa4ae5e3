//! A fake broker that answers the handshake properly and then sends
//! garbage, to check that bad frames become errors, never panics, and drop
//! the connection.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use cutover_kafka::kafka_protocol::messages::ApiKey;
use cutover_kafka::{Cluster, KafkaError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::common::config;
use crate::peer::{self, read_request, response_frame, HANDSHAKE_APIS};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Misbehave {
    /// A well-formed Metadata response carrying another correlation id.
    WrongCorrelationId,
    /// The right correlation id, but the body is cut in half.
    TruncatedBody,
    /// A frame of random bytes.
    RandomBytes,
    /// A length prefix far beyond any sane response.
    HugeLength,
    /// Half a frame, then the socket closes.
    CloseMidFrame,
    /// Random bytes already in answer to ApiVersions.
    GarbageHandshake,
}

struct Fake {
    addr: String,
    /// One message per connection the client closed after the garbage.
    dropped: mpsc::Receiver<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// xorshift: deterministic "random" bytes without another dependency.
fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The Metadata answer naming the fake as the only broker.
fn metadata_frame(port: u16, version: i16, correlation_id: i32) -> Bytes {
    let body = peer::metadata(&[port], 0, &[]);
    response_frame(ApiKey::Metadata, version, correlation_id, &body).expect("encodable Metadata")
}

fn random_frame(seed: u64, correlation_id: i32) -> Bytes {
    let mut body = noise(seed, 64);
    // Make sure the correlation id is not accidentally right.
    body[..4].copy_from_slice(&(correlation_id ^ 0x5a5a_5a5a).to_be_bytes());
    let mut out = BytesMut::new();
    out.put_i32(body.len() as i32);
    out.put_slice(&body);
    out.freeze()
}

async fn serve(
    mut sock: TcpStream,
    mode: Misbehave,
    port: u16,
    handshake_done: Arc<AtomicBool>,
    dropped: mpsc::Sender<()>,
) {
    loop {
        let Some(req) = read_request(&mut sock).await else {
            return;
        };
        let version = req.header.request_api_version;
        let corr = req.header.correlation_id;
        let misbehave = match req.api {
            ApiKey::ApiVersions if mode == Misbehave::GarbageHandshake => true,
            ApiKey::ApiVersions => {
                let f = response_frame(
                    ApiKey::ApiVersions,
                    version,
                    corr,
                    &peer::api_versions(&HANDSHAKE_APIS),
                )
                .expect("encodable ApiVersions");
                sock.write_all(&f).await.unwrap();
                false
            }
            ApiKey::Metadata if !handshake_done.swap(true, Ordering::SeqCst) => {
                let f = metadata_frame(port, version, corr);
                sock.write_all(&f).await.unwrap();
                false
            }
            ApiKey::Metadata => true,
            _ => return,
        };
        if !misbehave {
            continue;
        }
        let bytes = match mode {
            Misbehave::WrongCorrelationId => metadata_frame(port, version, corr + 1000),
            Misbehave::TruncatedBody => {
                let full = metadata_frame(port, version, corr);
                let keep = 4 + (full.len() - 4) / 2;
                let mut out = BytesMut::new();
                out.put_i32((keep - 4) as i32);
                out.put_slice(&full[4..keep]);
                out.freeze()
            }
            Misbehave::RandomBytes | Misbehave::GarbageHandshake => {
                random_frame(corr as u64 + 7, corr)
            }
            Misbehave::HugeLength => Bytes::from_static(&[0x7f, 0xff, 0xff, 0xff, 1, 2, 3, 4]),
            Misbehave::CloseMidFrame => {
                let mut out = BytesMut::new();
                out.put_i32(100);
                out.put_slice(&noise(3, 10));
                sock.write_all(&out).await.unwrap();
                return;
            }
        };
        sock.write_all(&bytes).await.unwrap();
        // The client must hang up on us now.
        let mut sink = [0u8; 1024];
        loop {
            match tokio::time::timeout(Duration::from_secs(5), sock.read(&mut sink)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    let _ = dropped.send(()).await;
                    return;
                }
                Ok(Ok(_)) => continue,
                Err(_) => return,
            }
        }
    }
}

async fn start(mode: Misbehave) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel(8);
    let handshake_done = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((sock, _)) = listener.accept().await {
            conns.spawn(serve(sock, mode, port, handshake_done.clone(), tx.clone()));
        }
    });
    Fake {
        addr: format!("127.0.0.1:{port}"),
        dropped: rx,
        task,
    }
}

async fn garbage_after_handshake(mode: Misbehave) -> KafkaError {
    let mut fake = start(mode).await;
    let mut c = config(&fake.addr);
    c.retries = 0;
    let cluster = Cluster::connect(c).await.unwrap();
    let err = cluster.metadata(None).await.unwrap_err();
    // (CloseMidFrame: the fake hung up itself.)
    if mode != Misbehave::CloseMidFrame {
        let dropped = tokio::time::timeout(Duration::from_secs(5), fake.dropped.recv()).await;
        assert!(
            matches!(dropped, Ok(Some(()))),
            "client kept the connection after {mode:?}"
        );
    }
    // The client is still usable: it reconnects (and gets garbage again).
    assert!(cluster.metadata(None).await.is_err());
    cluster.close().await;
    err
}

#[tokio::test]
async fn wrong_correlation_id_is_a_protocol_error() {
    let err = garbage_after_handshake(Misbehave::WrongCorrelationId).await;
    assert!(
        matches!(err, KafkaError::Protocol(ref m) if m.contains("correlation id")),
        "{err:?}"
    );
}

#[tokio::test]
async fn truncated_body_is_a_protocol_error() {
    let err = garbage_after_handshake(Misbehave::TruncatedBody).await;
    assert!(
        matches!(err, KafkaError::Protocol(ref m) if m.contains("Metadata")),
        "{err:?}"
    );
}

#[tokio::test]
async fn random_bytes_are_a_protocol_error() {
    let err = garbage_after_handshake(Misbehave::RandomBytes).await;
    assert!(matches!(err, KafkaError::Protocol(_)), "{err:?}");
}

#[tokio::test]
async fn huge_length_prefix_is_a_protocol_error() {
    let err = garbage_after_handshake(Misbehave::HugeLength).await;
    assert!(
        matches!(err, KafkaError::Protocol(ref m) if m.contains("larger than the limit")),
        "{err:?}"
    );
}

#[tokio::test]
async fn connection_closed_mid_frame_is_retriable_io() {
    let err = garbage_after_handshake(Misbehave::CloseMidFrame).await;
    assert!(matches!(err, KafkaError::Io { .. }), "{err:?}");
    assert!(err.is_retriable());
}

#[tokio::test]
async fn garbage_handshake_fails_connect_naming_the_broker() {
    let mut fake = start(Misbehave::GarbageHandshake).await;
    let err = Cluster::connect(config(&fake.addr)).await.unwrap_err();
    assert!(matches!(err, KafkaError::Protocol(_)), "{err:?}");
    assert!(err.to_string().contains(&fake.addr), "{err}");
    let dropped = tokio::time::timeout(Duration::from_secs(5), fake.dropped.recv()).await;
    assert!(
        matches!(dropped, Ok(Some(()))),
        "client kept the connection"
    );
}
