//! Helpers shared by the tests: mock clusters, a minimal v2 batch encoder
//! and parser, and librdkafka clients used as the reference.

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use cutover_kafka::{Cluster, ClusterConfig};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};

pub type Mock = MockCluster<'static, DefaultProducerContext>;

pub fn mock(brokers: i32) -> Mock {
    MockCluster::new(brokers).expect("mock cluster")
}

/// Test config: short timeouts and backoffs so failure paths stay quick.
pub fn config(bootstrap: &str) -> ClusterConfig {
    let mut c = ClusterConfig::new([bootstrap]);
    c.client_id = "cutover-kafka-test".to_owned();
    c.request_timeout = Duration::from_secs(5);
    c.connect_timeout = Duration::from_secs(2);
    c.retry_backoff = Duration::from_millis(20);
    c.retry_backoff_max = Duration::from_millis(200);
    c.reconnect_backoff = Duration::from_millis(20);
    c.reconnect_backoff_max = Duration::from_millis(200);
    c
}

pub async fn connect(mock: &Mock) -> Cluster {
    Cluster::connect(config(&mock.bootstrap_servers()))
        .await
        .expect("connect to mock")
}

fn put_uvarint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn put_varint(buf: &mut BytesMut, v: i64) {
    put_uvarint(buf, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_varbytes(buf: &mut BytesMut, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            put_varint(buf, b.len() as i64);
            buf.put_slice(b);
        }
        None => put_varint(buf, -1),
    }
}

/// One uncompressed v2 batch, base offset 0, no producer id.
pub fn encode_batch(records: &[Kv], timestamp: i64) -> Bytes {
    let mut body = BytesMut::new();
    for (i, (k, v)) in records.iter().enumerate() {
        let mut rec = BytesMut::new();
        rec.put_i8(0);
        put_varint(&mut rec, 0);
        put_varint(&mut rec, i as i64);
        put_varbytes(&mut rec, k.as_deref());
        put_varbytes(&mut rec, v.as_deref());
        put_varint(&mut rec, 0);
        put_varint(&mut body, rec.len() as i64);
        body.put_slice(&rec);
    }
    // From attributes to the end: what the CRC covers.
    let mut tail = BytesMut::new();
    tail.put_i16(0);
    tail.put_i32(records.len() as i32 - 1);
    tail.put_i64(timestamp);
    tail.put_i64(timestamp);
    tail.put_i64(-1);
    tail.put_i16(-1);
    tail.put_i32(-1);
    tail.put_i32(records.len() as i32);
    tail.put_slice(&body);
    let crc = crc32c::crc32c(&tail);

    let mut out = BytesMut::new();
    out.put_i64(0);
    out.put_i32((4 + 1 + 4 + tail.len()) as i32);
    out.put_i32(-1);
    out.put_i8(2);
    out.put_u32(crc);
    out.put_slice(&tail);
    out.freeze()
}

/// Header fields of one stored batch.
#[derive(Debug, Clone)]
pub struct BatchInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    pub codec: i16,
    pub record_count: i32,
}

/// Splits a records blob into batches, checking each CRC; a partial batch
/// at the end is ignored, as a consumer would.
pub fn parse_batches(records: &[u8]) -> Vec<BatchInfo> {
    let mut out = Vec::new();
    let mut pos = 0;
    while records.len() >= pos + 61 {
        let be64 = |at: usize| i64::from_be_bytes(records[at..at + 8].try_into().unwrap());
        let be32 = |at: usize| i32::from_be_bytes(records[at..at + 4].try_into().unwrap());
        let base_offset = be64(pos);
        let len = be32(pos + 8) as usize;
        let end = pos + 12 + len;
        if end > records.len() {
            break;
        }
        assert_eq!(records[pos + 16], 2, "magic");
        let crc = u32::from_be_bytes(records[pos + 17..pos + 21].try_into().unwrap());
        assert_eq!(crc, crc32c::crc32c(&records[pos + 21..end]), "batch CRC");
        let attributes = i16::from_be_bytes(records[pos + 21..pos + 23].try_into().unwrap());
        out.push(BatchInfo {
            base_offset,
            last_offset: base_offset + be32(pos + 23) as i64,
            codec: attributes & 0x7,
            record_count: be32(pos + 57),
        });
        pos = end;
    }
    out
}

pub type Kv = (Option<Vec<u8>>, Option<Vec<u8>>);

/// Reads `n` records from the start of a partition with a real librdkafka
/// consumer.
pub async fn consume(bootstrap: String, topic: String, partition: i32, n: usize) -> Vec<(i64, Kv)> {
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "cutover-kafka-test")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, partition, Offset::Beginning)
            .expect("tpl");
        consumer.assign(&tpl).expect("assign");
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut out = Vec::new();
        while out.len() < n && Instant::now() < deadline {
            if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                let m = m.expect("consume");
                out.push((
                    m.offset(),
                    (m.key().map(<[u8]>::to_vec), m.payload().map(<[u8]>::to_vec)),
                ));
            }
        }
        out
    })
    .await
    .expect("consumer thread")
}

/// Produces `n` records `k{i}`/`value-{i}-...` with a real librdkafka producer,
/// batched and compressed with `codec`.
pub async fn produce_with_librdkafka(bootstrap: &str, topic: &str, codec: &str, n: usize) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("compression.type", codec)
        .set("linger.ms", "100")
        .set("batch.num.messages", "10")
        .create()
        .expect("producer");
    // Compressible values: librdkafka sends a batch uncompressed when
    // compression does not make it smaller.
    let kvs: Vec<(String, String)> = (0..n)
        .map(|i| (format!("k{i}"), format!("value-{i}-").repeat(20)))
        .collect();
    let mut futures = Vec::new();
    for (k, v) in &kvs {
        let rec = FutureRecord::to(topic).partition(0).key(k).payload(v);
        futures.push(
            producer
                .send_result(rec)
                .map_err(|(e, _)| e)
                .expect("enqueue"),
        );
    }
    for f in futures {
        f.await.expect("delivery channel").expect("delivered");
    }
}

/// Polls `f` until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
