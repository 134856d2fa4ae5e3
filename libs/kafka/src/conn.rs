//! One multiplexed connection to one broker.
//!
//! A writer task drains a bounded request queue onto the socket; a reader
//! task splits the socket into frames and hands each to the request with the
//! same correlation id. Callers wait on a oneshot with their own timeout.
//! Anything that breaks the stream (I/O error, EOF, unparseable frame,
//! unexpected correlation id, a timed-out request) kills the whole
//! connection and fails every request on it; the cluster opens a new one on
//! next use.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info_span, warn, Instrument};

use crate::codec::{self, decode_frame, encode_request, split_frame};
use crate::config::ClusterConfig;
use crate::error::{codes, KafkaError};
use crate::pieces::{self, Encoded};
use crate::produce;

type Reply = Result<Bytes, KafkaError>;

/// The version of each API to use with one broker: the highest version both
/// the broker and `kafka-protocol` support.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct VersionTable {
    /// api key -> (lowest, highest) version both sides support.
    chosen: BTreeMap<i16, (i16, i16)>,
}

impl VersionTable {
    pub(crate) fn from_response(resp: &ApiVersionsResponse) -> VersionTable {
        let mut chosen = BTreeMap::new();
        for entry in &resp.api_keys {
            let Ok(api) = ApiKey::try_from(entry.api_key) else {
                continue;
            };
            let ours = api.valid_versions();
            let min = ours.min.max(entry.min_version);
            let max = ours.max.min(entry.max_version);
            if min <= max {
                chosen.insert(entry.api_key, (min, max));
            }
        }
        VersionTable { chosen }
    }

    pub(crate) fn get(&self, api: ApiKey) -> Option<i16> {
        self.range(api).map(|(_, max)| max)
    }

    /// The lowest and highest version of `api` usable with the broker.
    pub(crate) fn range(&self, api: ApiKey) -> Option<(i16, i16)> {
        self.chosen.get(&(api as i16)).copied()
    }
}

struct Pending {
    tx: oneshot::Sender<Reply>,
    // Held until the response arrives: bounds requests in flight.
    _permit: OwnedSemaphorePermit,
}

struct Outgoing {
    correlation_id: i32,
    frame: Encoded,
    tx: oneshot::Sender<Reply>,
    /// False for a request the broker does not answer (Produce with
    /// acks=0): `tx` then gets an empty frame once it is written.
    reply: bool,
}

#[derive(Default)]
struct InFlight {
    pending: HashMap<i32, Pending>,
    /// Set once the connection is dead; requests arriving later fail with it.
    closed: Option<KafkaError>,
}

/// State shared by the connection handle and its two tasks.
struct Shared {
    addr: String,
    in_flight: Mutex<InFlight>,
    token: CancellationToken,
    /// The cluster's token: when it is cancelled, requests fail with
    /// `Closed` rather than a (retriable) connection error.
    cluster: CancellationToken,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, InFlight> {
        // A poisoned lock only means another thread panicked while holding
        // it; the map itself is still consistent enough to fail requests.
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the connection dead and fails everything in flight with `err`.
    fn fail(&self, err: KafkaError) {
        let (err, pending) = {
            let mut st = self.lock();
            if st.closed.is_none() {
                debug!(broker = %self.addr, error = %err, "closing connection");
            }
            // The first cause wins: later calls come from the tasks winding
            // down and would only say "closed".
            let err = st.closed.get_or_insert(err).clone();
            (err, std::mem::take(&mut st.pending))
        };
        for (_, p) in pending {
            let _ = p.tx.send(Err(err.clone()));
        }
        self.token.cancel();
    }

    fn closed_error(&self) -> KafkaError {
        self.lock()
            .closed
            .clone()
            .unwrap_or_else(|| self.shutdown_error())
    }

    fn shutdown_error(&self) -> KafkaError {
        if self.cluster.is_cancelled() {
            KafkaError::Closed
        } else {
            KafkaError::io(&self.addr, io::ErrorKind::NotConnected, "connection closed")
        }
    }
}

/// Handle to a live (or dead) connection. Dropping the last handle stops
/// its tasks.
pub(crate) struct Connection {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Outgoing>,
    next_correlation_id: AtomicI32,
    client_id: StrBytes,
    versions: VersionTable,
    /// The queue of the task combining Produce batches into requests
    /// (`produce.rs`), started by the first batch.
    produce: OnceLock<mpsc::Sender<produce::Item>>,
    tracker: TaskTracker,
    /// How much longer than its own `timeout_ms` a Produce answer may take.
    request_timeout: Duration,
    /// When a new connection takes this one's place: before the broker's
    /// SASL session ends (KIP-368), so that no request meets its end.
    replace_by: Option<Instant>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.token.cancel();
    }
}

/// A request that has been queued on a connection.
pub(crate) struct PendingReply {
    rx: oneshot::Receiver<Reply>,
    conn: Arc<Connection>,
    api: ApiKey,
    version: i16,
}

impl PendingReply {
    /// Waits for the raw response frame.
    pub(crate) async fn frame(self, timeout: Duration) -> Result<Bytes, KafkaError> {
        match tokio::time::timeout(timeout, self.rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(self.conn.shared.closed_error()),
            Err(_) => {
                let what = format!(
                    "{:?} v{} request to broker {}",
                    self.api, self.version, self.conn.shared.addr
                );
                // A late response could no longer be matched, and a broker
                // that does not answer one request is unlikely to answer the
                // next: start over on a fresh connection.
                self.conn.shared.fail(KafkaError::io(
                    &self.conn.shared.addr,
                    io::ErrorKind::TimedOut,
                    format!("connection dropped after a {what} timed out"),
                ));
                Err(KafkaError::Timeout {
                    what,
                    after: timeout,
                })
            }
        }
    }

    /// Waits for the response and decodes it.
    pub(crate) async fn decode<T: Decodable>(self, timeout: Duration) -> Result<T, KafkaError> {
        let (api, version, conn) = (self.api, self.version, self.conn.clone());
        let frame = self.frame(timeout).await?;
        conn.decode(api, version, frame)
    }
}

impl Connection {
    /// Opens a connection and negotiates API versions on it.
    pub(crate) async fn open(
        addr: &str,
        config: &ClusterConfig,
        parent: &CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<Arc<Connection>, KafkaError> {
        let connect_err = |source: io::Error| KafkaError::Connect {
            addr: addr.to_owned(),
            source: Arc::new(source),
        };
        let stream = tokio::select! {
            _ = parent.cancelled() => return Err(KafkaError::Closed),
            r = tokio::time::timeout(config.connect_timeout, TcpStream::connect(addr)) => match r {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(connect_err(e)),
                Err(_) => return Err(connect_err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no connection within {:?}", config.connect_timeout),
                ))),
            },
        };
        // Produce pipelines many small writes; Nagle would delay them.
        if let Err(e) = stream.set_nodelay(true) {
            warn!(broker = %addr, error = %e, "cannot set TCP_NODELAY");
        }
        let shared = Arc::new(Shared {
            addr: addr.to_owned(),
            in_flight: Mutex::new(InFlight::default()),
            token: parent.child_token(),
            cluster: parent.clone(),
        });
        let (tx, rx) = mpsc::channel(config.request_queue_capacity.max(1));
        let permits = Arc::new(Semaphore::new(config.max_in_flight_per_connection.max(1)));
        let span = info_span!("kafka_connection", broker = %addr);
        match &config.security.tls {
            None => {
                let (rd, wr) = stream.into_split();
                tracker.spawn(writer(wr, rx, shared.clone(), permits).instrument(span.clone()));
                tracker
                    .spawn(reader(rd, shared.clone(), config.max_response_bytes).instrument(span));
            }
            Some(tls) => {
                let handshake = tokio::select! {
                    _ = parent.cancelled() => return Err(KafkaError::Closed),
                    r = tokio::time::timeout(config.connect_timeout, crate::tls::connect(stream, addr, tls)) => r,
                };
                let stream = match handshake {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        return Err(KafkaError::Security {
                            broker: addr.to_owned(),
                            source: Arc::new(e),
                        })
                    }
                    Err(_) => {
                        return Err(connect_err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("no TLS handshake within {:?}", config.connect_timeout),
                        )))
                    }
                };
                let (rd, wr) = tokio::io::split(stream);
                tracker.spawn(writer(wr, rx, shared.clone(), permits).instrument(span.clone()));
                tracker
                    .spawn(reader(rd, shared.clone(), config.max_response_bytes).instrument(span));
            }
        }

        let mut conn = Connection {
            shared,
            tx,
            next_correlation_id: AtomicI32::new(0),
            client_id: StrBytes::from_string(config.client_id.clone()),
            versions: VersionTable::default(),
            produce: OnceLock::new(),
            tracker: tracker.clone(),
            request_timeout: config.request_timeout,
            replace_by: None,
        };
        conn.versions = conn
            .negotiate(config.request_timeout)
            .await
            .map_err(|e| refused(e, addr))?;
        if let Some(sasl) = &config.security.sasl {
            let lifetime = conn.authenticate(sasl, config.request_timeout).await?;
            // Kafka's own clients re-authenticate at 85 to 95 % of it.
            conn.replace_by = lifetime.map(|l| Instant::now() + l.mul_f64(0.85));
        }
        debug!(broker = %addr, versions = ?conn.versions.chosen, "connected");
        Ok(Arc::new(conn))
    }

    /// ApiVersions v3, falling back to v0 for brokers that reject v3.
    async fn negotiate(&self, timeout: Duration) -> Result<VersionTable, KafkaError> {
        let mut req = ApiVersionsRequest::default();
        req.client_software_name = StrBytes::from_static_str("cutover-kafka");
        req.client_software_version = StrBytes::from_static_str(env!("CARGO_PKG_VERSION"));
        let mut version = 3;
        let mut frame = self
            .enqueue_raw(ApiKey::ApiVersions, version, &req, timeout)
            .await?;
        // A broker that does not know v3 answers with UNSUPPORTED_VERSION in
        // a body whose layout may not match v3 (librdkafka's mock writes a
        // half-flexible one). The error code is always the first field after
        // the v0 response header, so read it before decoding.
        let code = frame
            .get(4..6)
            .map(|b| i16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| {
                KafkaError::Protocol(format!("{}: empty ApiVersions response", self.addr()))
            })?;
        if code == codes::UNSUPPORTED_VERSION {
            version = 0;
            frame = self
                .enqueue_raw(ApiKey::ApiVersions, version, &req, timeout)
                .await?;
        }
        let resp: ApiVersionsResponse = self.decode(ApiKey::ApiVersions, version, frame)?;
        KafkaError::check(resp.error_code, None)?;
        Ok(VersionTable::from_response(&resp))
    }

    pub(crate) async fn enqueue_raw<R: Encodable>(
        &self,
        api: ApiKey,
        version: i16,
        body: &R,
        timeout: Duration,
    ) -> Result<Bytes, KafkaError> {
        let rx = self.enqueue_rx(api, version, body).await?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(self.shared.closed_error()),
            Err(_) => {
                let err = KafkaError::Timeout {
                    what: format!("{api:?} v{version} request to broker {}", self.addr()),
                    after: timeout,
                };
                self.shared.fail(err.clone());
                Err(err)
            }
        }
    }

    pub(crate) fn addr(&self) -> &str {
        &self.shared.addr
    }

    /// Why requests on this connection fail now that it is closed.
    pub(crate) fn closed_error(&self) -> KafkaError {
        self.shared.closed_error()
    }

    /// Queues one partition's batch for the next combined Produce request
    /// to this broker (see `produce.rs`); `item.reply` gets its answer.
    /// Batches of one partition queued in order are written in order.
    pub(crate) async fn produce(self: &Arc<Self>, item: produce::Item) -> Result<(), KafkaError> {
        let tx = self.produce.get_or_init(|| {
            let (tx, rx) = mpsc::channel(produce::QUEUE);
            let span = info_span!("produce_combiner", broker = %self.shared.addr);
            self.tracker.spawn(
                produce::combine(
                    Arc::downgrade(self),
                    rx,
                    self.shared.token.clone(),
                    self.request_timeout,
                )
                .instrument(span),
            );
            tx
        });
        tokio::select! {
            _ = self.shared.token.cancelled() => Err(self.shared.closed_error()),
            r = tx.send(item) => r.map_err(|_| self.shared.closed_error()),
        }
    }

    /// False once the connection died, or once its SASL session is about
    /// to end: the next caller opens a new one, and requests already on
    /// this one are still answered.
    pub(crate) fn is_alive(&self) -> bool {
        !self.shared.token.is_cancelled() && self.replace_by.is_none_or(|t| Instant::now() < t)
    }

    /// The lowest and highest version of `api` usable with the broker.
    pub(crate) fn version_range(&self, api: ApiKey) -> Option<(i16, i16)> {
        self.versions.range(api)
    }

    /// The negotiated version of `api`, if the broker supports it at all.
    pub(crate) fn version(&self, api: ApiKey) -> Option<i16> {
        self.versions.get(api)
    }

    /// Like [`Self::version`], but an error naming the broker when missing.
    pub(crate) fn require(&self, api: ApiKey) -> Result<i16, KafkaError> {
        self.version(api)
            .ok_or_else(|| KafkaError::UnsupportedVersion {
                api,
                broker: self.addr().to_owned(),
            })
    }

    pub(crate) fn versions(&self) -> &VersionTable {
        &self.versions
    }

    pub(crate) fn decode<T: Decodable>(
        &self,
        api: ApiKey,
        version: i16,
        frame: Bytes,
    ) -> Result<T, KafkaError> {
        match decode_frame::<T>(api, version, frame) {
            Ok((_, body)) => Ok(body),
            Err(e) => {
                let e = match e {
                    KafkaError::Protocol(m) => {
                        KafkaError::Protocol(format!("broker {}: {m}", self.addr()))
                    }
                    other => other,
                };
                // If one response cannot be parsed, we may have lost track of
                // what the broker is saying: start over.
                self.shared.fail(KafkaError::io(
                    self.addr(),
                    io::ErrorKind::InvalidData,
                    format!("connection dropped after an unparseable response: {e}"),
                ));
                Err(e)
            }
        }
    }

    async fn enqueue_rx<R: Encodable>(
        &self,
        api: ApiKey,
        version: i16,
        body: &R,
    ) -> Result<oneshot::Receiver<Reply>, KafkaError> {
        self.enqueue_with(api, version, body, Vec::new(), true)
            .await
    }

    /// `records` are what `pieces::swap_out` took out of `body`: they are
    /// written from their own buffers, not copied into the encoding.
    async fn enqueue_with<R: Encodable>(
        &self,
        api: ApiKey,
        version: i16,
        body: &R,
        records: Vec<Bytes>,
        reply: bool,
    ) -> Result<oneshot::Receiver<Reply>, KafkaError> {
        let correlation_id = self.next_correlation_id.fetch_add(1, Ordering::Relaxed);
        let small = encode_request(api, version, correlation_id, &self.client_id, body)?;
        let flexible = api.request_header_version(version) >= 2;
        let frame = pieces::splice(&small, &records, flexible).ok_or_else(|| {
            KafkaError::Protocol(format!(
                "{api:?} v{version} request to broker {}: the records to write from their own \
                 buffers have no placeholder in the encoding",
                self.addr()
            ))
        })?;
        let (tx, rx) = oneshot::channel();
        let msg = Outgoing {
            correlation_id,
            frame,
            tx,
            reply,
        };
        tokio::select! {
            // The writer may be gone without the queue being closed yet.
            _ = self.shared.token.cancelled() => Err(self.shared.closed_error()),
            r = self.tx.send(msg) => match r {
                Ok(()) => Ok(rx),
                Err(_) => Err(self.shared.closed_error()),
            },
        }
    }

    /// Queues a request. When this returns, the request is in the
    /// connection's queue: requests queued in order are written in order.
    pub(crate) async fn enqueue<R: Encodable>(
        self: &Arc<Self>,
        api: ApiKey,
        version: i16,
        body: &R,
    ) -> Result<PendingReply, KafkaError> {
        self.enqueue_spliced(api, version, body, Vec::new()).await
    }

    /// [`Connection::enqueue`] with `records` taken out of `body` by
    /// `pieces::swap_out`, written from their own buffers.
    pub(crate) async fn enqueue_spliced<R: Encodable>(
        self: &Arc<Self>,
        api: ApiKey,
        version: i16,
        body: &R,
        records: Vec<Bytes>,
    ) -> Result<PendingReply, KafkaError> {
        let rx = self.enqueue_with(api, version, body, records, true).await?;
        Ok(PendingReply {
            rx,
            conn: self.clone(),
            api,
            version,
        })
    }

    /// Writes a request the broker does not answer (Produce with acks=0);
    /// returns once it is on the wire.
    pub(crate) async fn send_unanswered<R: Encodable>(
        &self,
        api: ApiKey,
        version: i16,
        body: &R,
        records: Vec<Bytes>,
        timeout: Duration,
    ) -> Result<(), KafkaError> {
        let rx = self
            .enqueue_with(api, version, body, records, false)
            .await?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => reply.map(|_| ()),
            Ok(Err(_)) => Err(self.shared.closed_error()),
            Err(_) => Err(KafkaError::Timeout {
                what: format!("{api:?} v{version} request to broker {}", self.addr()),
                after: timeout,
            }),
        }
    }

    /// Sends a request and waits for its decoded response.
    pub(crate) async fn request<R: Encodable, T: Decodable>(
        self: &Arc<Self>,
        api: ApiKey,
        version: i16,
        body: &R,
        timeout: Duration,
    ) -> Result<T, KafkaError> {
        self.enqueue(api, version, body)
            .await?
            .decode(timeout)
            .await
    }
}

async fn writer<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::Receiver<Outgoing>,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
) {
    let token = shared.token.clone();
    loop {
        let msg = tokio::select! {
            _ = token.cancelled() => break,
            m = rx.recv() => match m {
                Some(m) => m,
                None => break,
            },
        };
        let permit = tokio::select! {
            _ = token.cancelled() => {
                let _ = msg.tx.send(Err(shared.closed_error()));
                break;
            }
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let mut unanswered = None;
        if !msg.reply {
            // Nothing comes back: nothing to register, and the permit goes
            // once it is written.
            unanswered = Some((msg.tx, permit));
        } else {
            // Registered before writing so that the response cannot arrive
            // before its entry exists.
            let mut st = shared.lock();
            if let Some(err) = st.closed.clone() {
                drop(st);
                let _ = msg.tx.send(Err(err));
                break;
            }
            st.pending.insert(
                msg.correlation_id,
                Pending {
                    tx: msg.tx,
                    _permit: permit,
                },
            );
        }
        let written = tokio::select! {
            _ = token.cancelled() => break,
            r = write_pieces(&mut wr, &msg.frame) => r,
        };
        if let Err(e) = written {
            let err = KafkaError::Io {
                broker: shared.addr.clone(),
                source: Arc::new(e),
            };
            if let Some((tx, _)) = unanswered {
                let _ = tx.send(Err(err.clone()));
            }
            shared.fail(err);
            break;
        }
        if let Some((tx, _)) = unanswered {
            let _ = tx.send(Ok(Bytes::new()));
        }
    }
    shared.fail(shared.shutdown_error());
    // Fail what is still queued; new senders see the closed channel.
    rx.close();
    while let Ok(msg) = rx.try_recv() {
        let _ = msg.tx.send(Err(shared.closed_error()));
    }
    let _ = wr.shutdown().await;
}

async fn write_pieces<W: AsyncWrite + Unpin>(wr: &mut W, frame: &Encoded) -> io::Result<()> {
    for piece in frame.pieces() {
        wr.write_all(piece).await?;
    }
    // TLS holds written bytes until flushed; a TCP socket's flush does
    // nothing.
    wr.flush().await
}

async fn reader<R: AsyncRead + Unpin>(mut rd: R, shared: Arc<Shared>, max_frame: usize) {
    let token = shared.token.clone();
    let mut buf = BytesMut::with_capacity(codec::READ_BUFFER);
    loop {
        loop {
            match split_frame(&mut buf, max_frame) {
                Ok(Some(frame)) => {
                    if let Err(e) = dispatch(&shared, frame) {
                        shared.fail(e);
                        return;
                    }
                }
                Ok(None) => break,
                Err(KafkaError::Protocol(m)) => {
                    shared.fail(KafkaError::Protocol(format!("broker {}: {m}", shared.addr)));
                    return;
                }
                Err(e) => {
                    shared.fail(e);
                    return;
                }
            }
        }
        // Keep room for a decent read: without it BytesMut offers a few
        // dozen bytes at a time whenever a frame ended at the buffer's end.
        if buf.capacity() - buf.len() < codec::READ_BUFFER / 4 {
            buf.reserve(codec::READ_BUFFER);
        }
        let read = tokio::select! {
            _ = token.cancelled() => return,
            r = rd.read_buf(&mut buf) => r,
        };
        match read {
            Ok(0) => {
                let msg = if buf.is_empty() {
                    "connection closed by the broker"
                } else {
                    "connection closed by the broker in the middle of a response"
                };
                shared.fail(KafkaError::io(
                    &shared.addr,
                    io::ErrorKind::UnexpectedEof,
                    msg,
                ));
                return;
            }
            Ok(_) => {}
            Err(e) => {
                shared.fail(KafkaError::Io {
                    broker: shared.addr.clone(),
                    source: Arc::new(e),
                });
                return;
            }
        }
    }
}

/// A TLS broker that refuses the client's certificate says so in an alert
/// on the first read (TLS 1.3), which is the ApiVersions answer's.
fn refused(e: KafkaError, addr: &str) -> KafkaError {
    match &e {
        KafkaError::Io { source, .. } => match crate::tls::refusal(source) {
            Some(why) => KafkaError::Security {
                broker: addr.to_owned(),
                source: Arc::new(why),
            },
            None => e,
        },
        _ => e,
    }
}

fn dispatch(shared: &Shared, frame: Bytes) -> Result<(), KafkaError> {
    let correlation_id = codec::correlation_id(&frame).ok_or_else(|| {
        KafkaError::Protocol(format!(
            "broker {}: frame without correlation id",
            shared.addr
        ))
    })?;
    let pending = shared.lock().pending.remove(&correlation_id);
    match pending {
        Some(p) => {
            // The caller may have given up (dropped its future); that is fine.
            let _ = p.tx.send(Ok(frame));
            Ok(())
        }
        None => Err(KafkaError::Protocol(format!(
            "broker {} sent a response with unexpected correlation id {correlation_id}",
            shared.addr
        ))),
    }
}
