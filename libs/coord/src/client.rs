use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::debug;

use crate::error::{CoordError, UnreachableCause};

/// How to reach etcd and where this deployment's keys live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordConfig {
    /// `http://host:port` (or `https://`) of one or more etcd members.
    pub endpoints: Vec<String>,
    /// Every key lives under this prefix; default `/cutover/v1`.
    pub prefix: String,
    /// Default TTL for sessions created with [`Coord::default_session`].
    pub lease_ttl: Duration,
    /// How long `connect` may take before it reports etcd unreachable.
    pub connect_timeout: Duration,
}

pub const DEFAULT_PREFIX: &str = "/cutover/v1";

impl Default for CoordConfig {
    fn default() -> Self {
        CoordConfig {
            endpoints: vec!["http://127.0.0.1:2379".to_owned()],
            prefix: DEFAULT_PREFIX.to_owned(),
            lease_ttl: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl CoordConfig {
    /// Defaults with the given endpoints.
    pub fn new(endpoints: Vec<String>) -> Self {
        CoordConfig {
            endpoints,
            ..CoordConfig::default()
        }
    }
}

/// A JSON document read from etcd with the revision needed for a later CAS.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    pub value: T,
    pub mod_revision: i64,
}

/// A guard of [`Coord::txn`].
#[derive(Debug, Clone, PartialEq)]
pub enum Precondition {
    /// The key (relative) does not exist.
    Absent(String),
    /// The key (relative) exists and was last modified at this revision.
    ModRevision(String, i64),
}

/// A write of [`Coord::txn`].
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    /// Put a JSON document at the key (relative).
    Put(String, serde_json::Value),
    /// Delete the key (relative).
    Delete(String),
}

/// Handle to etcd. Cheap to clone: clones share one gRPC channel.
#[derive(Clone)]
pub struct Coord {
    pub(crate) client: Client,
    inner: Arc<Inner>,
}

struct Inner {
    prefix: String,
    endpoints: Vec<String>,
    lease_ttl: Duration,
    request_timeout: Duration,
}

impl std::fmt::Debug for Coord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coord")
            .field("endpoints", &self.inner.endpoints)
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

// HTTP/2 pings are what notice a silently dead etcd (a paused process, a
// dropped network path) under a long-lived watch. etcd's default
// `--grpc-keepalive-min-time` is 5s and it answers faster pings with
// GOAWAY, so the interval stays well above that.
const H2_PING_INTERVAL: Duration = Duration::from_secs(10);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(5);
const MIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

impl Coord {
    /// Connects and proves etcd answers with one read, so a wrong endpoint
    /// fails here with a clear error instead of on the first real request.
    pub async fn connect(cfg: CoordConfig) -> Result<Coord, CoordError> {
        if cfg.endpoints.is_empty() {
            return Err(CoordError::Invalid(
                "no etcd endpoints configured".to_owned(),
            ));
        }
        let endpoints_text = cfg.endpoints.join(",");
        let options = ConnectOptions::new()
            .with_connect_timeout(cfg.connect_timeout)
            .with_keep_alive(H2_PING_INTERVAL, H2_PING_TIMEOUT)
            // etcd does not permit pings on a connection without streams.
            .with_keep_alive_while_idle(false);
        let unreachable = |source| CoordError::Unreachable {
            endpoints: endpoints_text.clone(),
            source,
        };
        let probe = async {
            let client = Client::connect(&cfg.endpoints, Some(options)).await?;
            let mut kv = client.kv_client();
            kv.get(
                cfg.prefix.clone(),
                Some(GetOptions::new().with_count_only().with_limit(1)),
            )
            .await?;
            Ok::<_, etcd_client::Error>(client)
        };
        // A quarter of the budget is kept for the diagnosis so the whole
        // call still returns within `connect_timeout`.
        let probe_budget = cfg.connect_timeout.mul_f64(0.75);
        let client = match tokio::time::timeout(probe_budget, probe).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(unreachable(UnreachableCause::Etcd(e))),
            Err(_) => {
                let diagnosis = diagnose(
                    &cfg.endpoints,
                    cfg.connect_timeout.saturating_sub(probe_budget),
                )
                .await;
                return Err(unreachable(UnreachableCause::Timeout {
                    after: probe_budget,
                    diagnosis,
                }));
            }
        };
        debug!(endpoints = %endpoints_text, prefix = %cfg.prefix, "connected to etcd");
        Ok(Coord {
            client,
            inner: Arc::new(Inner {
                prefix: cfg.prefix.trim_end_matches('/').to_owned(),
                endpoints: cfg.endpoints,
                lease_ttl: cfg.lease_ttl,
                request_timeout: cfg.connect_timeout.max(MIN_REQUEST_TIMEOUT),
            }),
        })
    }

    /// Bound on each unary request (streams are not bounded). Default: the
    /// connect timeout, at least 5s.
    pub fn with_request_timeout(self, timeout: Duration) -> Coord {
        Coord {
            client: self.client,
            inner: Arc::new(Inner {
                prefix: self.inner.prefix.clone(),
                endpoints: self.inner.endpoints.clone(),
                lease_ttl: self.inner.lease_ttl,
                request_timeout: timeout,
            }),
        }
    }

    /// The raw etcd client, for what this crate does not wrap.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    /// The configured default lease TTL.
    pub fn lease_ttl(&self) -> Duration {
        self.inner.lease_ttl
    }

    pub fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }

    /// `prefix + "/" + rel`.
    pub fn key(&self, rel: &str) -> String {
        format!("{}/{}", self.inner.prefix, rel)
    }

    /// Inverse of [`Coord::key`]; `None` for keys outside the prefix.
    pub fn rel<'a>(&self, full: &'a str) -> Option<&'a str> {
        full.strip_prefix(self.inner.prefix.as_str())?
            .strip_prefix('/')
    }

    /// Runs one unary etcd request with the request timeout and maps its
    /// failure into operator-readable errors.
    pub(crate) async fn call<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, CoordError> {
        match tokio::time::timeout(self.inner.request_timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.map_err(e)),
            Err(_) => Err(CoordError::Timeout {
                op,
                after: self.inner.request_timeout,
            }),
        }
    }

    pub(crate) fn map_err(&self, e: etcd_client::Error) -> CoordError {
        if is_unavailable(&e) {
            CoordError::Unreachable {
                endpoints: self.inner.endpoints.join(","),
                source: UnreachableCause::Etcd(e),
            }
        } else {
            CoordError::Etcd(e)
        }
    }

    pub(crate) async fn txn_raw(
        &self,
        op: &'static str,
        txn: Txn,
    ) -> Result<etcd_client::TxnResponse, CoordError> {
        let mut kv = self.client.kv_client();
        self.call(op, kv.txn(txn)).await
    }

    pub(crate) async fn get_raw(
        &self,
        key: &str,
        options: Option<GetOptions>,
    ) -> Result<etcd_client::GetResponse, CoordError> {
        let mut kv = self.client.kv_client();
        self.call("get", kv.get(key, options)).await
    }

    pub async fn get<T: DeserializeOwned>(
        &self,
        rel: &str,
    ) -> Result<Option<Versioned<T>>, CoordError> {
        let key = self.key(rel);
        let resp = self.get_raw(&key, None).await?;
        match resp.kvs().first() {
            None => Ok(None),
            Some(kv) => Ok(Some(Versioned {
                value: decode(&key, kv.value())?,
                mod_revision: kv.mod_revision(),
            })),
        }
    }

    /// All documents whose key starts with `rel_prefix`, sorted by key. The
    /// match is on raw bytes: pass `"links/"`, not `"links"`, to avoid also
    /// matching `"links2/..."`.
    pub async fn list<T: DeserializeOwned>(
        &self,
        rel_prefix: &str,
    ) -> Result<Vec<(String, Versioned<T>)>, CoordError> {
        let (_, kvs) = self.list_raw(rel_prefix).await?;
        kvs.into_iter()
            .map(|kv| {
                let value = decode(&self.key(&kv.rel), &kv.value)?;
                Ok((
                    kv.rel,
                    Versioned {
                        value,
                        mod_revision: kv.mod_revision,
                    },
                ))
            })
            .collect()
    }

    /// Raw values under a prefix and the store revision they were read at.
    pub async fn list_raw(
        &self,
        rel_prefix: &str,
    ) -> Result<(i64, Vec<crate::watch::KeyValue>), CoordError> {
        let key = self.key(rel_prefix);
        let mut resp = self
            .get_raw(&key, Some(GetOptions::new().with_prefix()))
            .await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or_default();
        let kvs = resp
            .take_kvs()
            .into_iter()
            .filter_map(|kv| self.to_kv(&kv))
            .collect();
        Ok((revision, kvs))
    }

    pub(crate) fn to_kv(&self, kv: &etcd_client::KeyValue) -> Option<crate::watch::KeyValue> {
        let full = std::str::from_utf8(kv.key()).ok()?;
        Some(crate::watch::KeyValue {
            rel: self.rel(full)?.to_owned(),
            value: kv.value().to_vec(),
            mod_revision: kv.mod_revision(),
        })
    }

    /// Creates the document if the key does not exist; `false` if it did.
    pub async fn create<T: Serialize>(&self, rel: &str, v: &T) -> Result<bool, CoordError> {
        let key = self.key(rel);
        let bytes = encode(&key, v)?;
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, bytes, None)]);
        Ok(self.txn_raw("create", txn).await?.succeeded())
    }

    /// Unconditional write; returns the new mod revision.
    pub async fn put<T: Serialize>(&self, rel: &str, v: &T) -> Result<i64, CoordError> {
        let key = self.key(rel);
        let bytes = encode(&key, v)?;
        let mut kv = self.client.kv_client();
        let resp = self.call("put", kv.put(key, bytes, None)).await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or_default())
    }

    /// Put attached to a lease: the key disappears when the lease ends.
    pub(crate) async fn put_with_lease(
        &self,
        key: String,
        bytes: Vec<u8>,
        lease_id: i64,
    ) -> Result<i64, CoordError> {
        let mut kv = self.client.kv_client();
        let resp = self
            .call(
                "put",
                kv.put(key, bytes, Some(PutOptions::new().with_lease(lease_id))),
            )
            .await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or_default())
    }

    /// Compare-and-swap on the mod revision read with [`Coord::get`].
    /// `false` when someone else wrote (or deleted) the key since.
    pub async fn update<T: Serialize>(
        &self,
        rel: &str,
        v: &T,
        expected_mod_revision: i64,
    ) -> Result<bool, CoordError> {
        let key = self.key(rel);
        let bytes = encode(&key, v)?;
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                expected_mod_revision,
            )])
            .and_then([TxnOp::put(key, bytes, None)]);
        Ok(self.txn_raw("update", txn).await?.succeeded())
    }

    /// `true` if the key existed.
    pub async fn delete(&self, rel: &str) -> Result<bool, CoordError> {
        let key = self.key(rel);
        let mut kv = self.client.kv_client();
        let resp = self.call("delete", kv.delete(key, None)).await?;
        Ok(resp.deleted() > 0)
    }

    /// Returns how many keys were deleted.
    pub async fn delete_prefix(&self, rel_prefix: &str) -> Result<i64, CoordError> {
        let key = self.key(rel_prefix);
        let mut kv = self.client.kv_client();
        let resp = self
            .call(
                "delete",
                kv.delete(key, Some(DeleteOptions::new().with_prefix())),
            )
            .await?;
        Ok(resp.deleted())
    }

    /// Creates every document atomically, only if none of the keys exists.
    /// `false` (and nothing written) if any exists. etcd bounds a txn to
    /// `--max-txn-ops` (default 128) operations.
    pub async fn txn_create_all(
        &self,
        creates: &[(String, serde_json::Value)],
    ) -> Result<bool, CoordError> {
        let guards: Vec<Precondition> = creates
            .iter()
            .map(|(rel, _)| Precondition::Absent(rel.clone()))
            .collect();
        let writes: Vec<WriteOp> = creates
            .iter()
            .map(|(rel, v)| WriteOp::Put(rel.clone(), v.clone()))
            .collect();
        self.txn(&guards, &writes).await
    }

    /// All `writes` atomically if every guard holds; `false` (and nothing
    /// written) otherwise.
    pub async fn txn(
        &self,
        guards: &[Precondition],
        writes: &[WriteOp],
    ) -> Result<bool, CoordError> {
        Ok(self.txn_at(guards, writes).await?.is_some())
    }

    /// The key's mod revision, `None` when it does not exist; for a guard
    /// ([`Precondition::ModRevision`]) on a key that is not a JSON
    /// document (an owner key).
    pub async fn mod_revision(&self, rel: &str) -> Result<Option<i64>, CoordError> {
        let resp = self.get_raw(&self.key(rel), None).await?;
        Ok(resp.kvs().first().map(|kv| kv.mod_revision()))
    }

    /// [`Coord::txn`], giving the store revision of the writes when they
    /// were made: watchers that have seen it have seen them.
    pub async fn txn_at(
        &self,
        guards: &[Precondition],
        writes: &[WriteOp],
    ) -> Result<Option<i64>, CoordError> {
        let compares: Vec<Compare> = guards
            .iter()
            .map(|g| match g {
                Precondition::Absent(rel) => {
                    Compare::create_revision(self.key(rel), CompareOp::Equal, 0)
                }
                Precondition::ModRevision(rel, rev) => {
                    Compare::mod_revision(self.key(rel), CompareOp::Equal, *rev)
                }
            })
            .collect();
        let mut ops = Vec::with_capacity(writes.len());
        for w in writes {
            ops.push(match w {
                WriteOp::Put(rel, v) => {
                    let key = self.key(rel);
                    let bytes = encode(&key, v)?;
                    TxnOp::put(key, bytes, None)
                }
                WriteOp::Delete(rel) => TxnOp::delete(self.key(rel), None),
            });
        }
        let txn = Txn::new().when(compares).and_then(ops);
        let resp = self.txn_raw("txn", txn).await?;
        Ok(resp
            .succeeded()
            .then(|| resp.header().map(|h| h.revision()).unwrap_or_default()))
    }
}

pub(crate) fn encode<T: Serialize + ?Sized>(key: &str, v: &T) -> Result<Vec<u8>, CoordError> {
    serde_json::to_vec(v).map_err(|source| CoordError::Encode {
        key: key.to_owned(),
        source,
    })
}

pub(crate) fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, CoordError> {
    serde_json::from_slice(bytes).map_err(|source| CoordError::Decode {
        key: key.to_owned(),
        source,
    })
}

/// First key-value of the first range response of a txn branch.
pub(crate) fn first_range_kv(resp: &etcd_client::TxnResponse) -> Option<etcd_client::KeyValue> {
    resp.op_responses().into_iter().find_map(|r| match r {
        TxnOpResponse::Get(g) => g.kvs().first().cloned(),
        _ => None,
    })
}

fn is_unavailable(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(s) => s.code() == tonic::Code::Unavailable,
        _ => false,
    }
}

pub(crate) fn is_lease_not_found(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            s.code() == tonic::Code::NotFound || s.message().contains("lease not found")
        }
        etcd_client::Error::LeaseKeepAliveError(m) => m.contains("lease not found"),
        _ => false,
    }
}

/// When the probe times out the gRPC layer says nothing useful, so try a
/// plain TCP connect to each endpoint to tell "refused" from "silent".
async fn diagnose(endpoints: &[String], budget: Duration) -> String {
    let budget = budget.max(Duration::from_millis(50));
    let probes = endpoints.iter().map(|ep| async move {
        let hostport = ep
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches('/');
        let verdict =
            match tokio::time::timeout(budget, tokio::net::TcpStream::connect(hostport)).await {
                Ok(Ok(_)) => "TCP connects but etcd does not answer gRPC".to_owned(),
                Ok(Err(e)) => format!("TCP connect failed: {e}"),
                Err(_) => format!("TCP connect got no answer within {budget:?}"),
            };
        format!("{ep}: {verdict}")
    });
    futures::future::join_all(probes).await.join("; ")
}
