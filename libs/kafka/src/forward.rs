//! Requests sent on behalf of a client (the router): typed, at the version
//! the caller chooses, to the broker the caller chooses, answered as the
//! broker answered. No retries here: the caller decides what a client sees.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::cluster::{unknown_topic, Cluster};
use crate::conn::Connection;
use crate::error::KafkaError;

/// Which broker a forwarded request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// Any live broker (Metadata, InitProducerId without a transactional id).
    Any,
    /// A broker by node id (a partition's leader, a group's coordinator).
    Node(i32),
}

impl Cluster {
    /// The leader of a partition: from the cache, loading the topic's
    /// metadata when it is missing or marked stale.
    pub async fn leader_of(&self, topic: &str, partition: i32) -> Result<i32, KafkaError> {
        let t = self
            .inner
            .topic_metadata(topic)
            .await?
            .ok_or_else(|| unknown_topic(topic))?;
        let p = t
            .partition(partition)
            .ok_or_else(|| KafkaError::UnknownTopicOrPartition {
                topic: topic.to_owned(),
                partition,
            })?;
        if p.leader < 0 {
            return Err(KafkaError::NoLeader {
                topic: topic.to_owned(),
                partition,
            });
        }
        Ok(p.leader)
    }

    /// Forgets the cached leaders of `topic` (a broker said it does not
    /// lead a partition of it); the next lookup asks the cluster.
    pub fn mark_topic_stale(&self, topic: &str) {
        self.inner.mark_stale(topic);
    }

    /// Sends `body` as `api` v`version` to `to` and decodes the answer.
    pub async fn forward<R: Encodable, T: Decodable>(
        &self,
        to: Destination,
        api: ApiKey,
        version: i16,
        body: &R,
        timeout: Duration,
    ) -> Result<T, KafkaError> {
        let conn = self.forward_connection(to).await?;
        conn.request(api, version, body, timeout).await
    }

    /// Sends a request the broker does not answer (Produce with acks=0);
    /// returns once it is written.
    pub async fn forward_unanswered<R: Encodable>(
        &self,
        to: Destination,
        api: ApiKey,
        version: i16,
        body: &R,
        timeout: Duration,
    ) -> Result<(), KafkaError> {
        let conn = self.forward_connection(to).await?;
        conn.send_unanswered(api, version, body, Vec::new(), timeout)
            .await
    }

    async fn forward_connection(&self, to: Destination) -> Result<Arc<Connection>, KafkaError> {
        match to {
            Destination::Any => self.inner.any_connection().await,
            Destination::Node(id) => {
                let addr = self.node_addr(id).await?;
                self.inner.connection(&addr).await
            }
        }
    }

    /// The address of broker `id`, loading the broker list once if it is
    /// not known (a broker that joined after the last Metadata).
    async fn node_addr(&self, id: i32) -> Result<String, KafkaError> {
        if let Some(a) = self.inner.broker_addr(id) {
            return Ok(a);
        }
        self.inner.load_metadata(Some(&[])).await?;
        self.inner.broker_addr(id).ok_or_else(|| {
            KafkaError::Protocol(format!("broker {id} is not in the cluster's broker list"))
        })
    }

    /// Connections of one client of a proxy, apart from everyone else's.
    pub fn lane(&self) -> Lane {
        Lane {
            cluster: self.clone(),
            conns: Mutex::new(HashMap::new()),
            client_id: Mutex::new(None),
        }
    }
}

/// The connections of one client of a forwarding proxy (a router's client
/// connection): its own connection to each broker, as the client has
/// without the proxy. A broker handles one request per connection at a
/// time, so on a connection shared by many clients a request the broker
/// holds (a JoinGroup until the rebalance ends, a Fetch waiting for data)
/// would hold every other client's requests behind it; on a lane it holds
/// only this client's, as it would anyway. Requests to any broker
/// (`Destination::Any`, short ones such as Metadata) use the cluster's
/// shared connections. Dropping the lane closes its connections.
pub struct Lane {
    cluster: Cluster,
    conns: Mutex<HashMap<String, Arc<Connection>>>,
    /// The client's own client id, carried by the lane's connections.
    client_id: Mutex<Option<String>>,
}

impl Lane {
    /// The client id the lane's requests carry from now on (connections
    /// opened before keep theirs). A client sends its id in every request
    /// header, the first one (ApiVersions) included, so the lane knows it
    /// before it opens a connection.
    pub fn set_client_id(&self, client_id: &str) {
        let mut id = lock(&self.client_id);
        if id.as_deref() != Some(client_id) {
            *id = Some(client_id.to_owned());
        }
    }

    /// As [`Cluster::forward`], on this lane's connection to `to`.
    pub async fn forward<R: Encodable, T: Decodable>(
        &self,
        to: Destination,
        api: ApiKey,
        version: i16,
        body: &R,
        timeout: Duration,
    ) -> Result<T, KafkaError> {
        self.send(to, api, version, body)
            .await?
            .decode(timeout)
            .await
    }

    /// Queues `body` on this lane's connection to `to` and returns once it
    /// is in the connection's queue: requests sent one after the other
    /// reach the broker in that order (what an idempotent producer's
    /// pipelined Produce requests need). [`Pending::decode`] waits for the
    /// answer.
    pub async fn send<R: Encodable>(
        &self,
        to: Destination,
        api: ApiKey,
        version: i16,
        body: &R,
    ) -> Result<Pending, KafkaError> {
        self.send_spliced(to, api, version, body, Vec::new()).await
    }

    /// As [`Lane::send`], `records` (taken out of `body` by
    /// [`crate::pieces::swap_out`]) written from their own buffers.
    pub async fn send_spliced<R: Encodable>(
        &self,
        to: Destination,
        api: ApiKey,
        version: i16,
        body: &R,
        records: Vec<Bytes>,
    ) -> Result<Pending, KafkaError> {
        let conn = self.connection(to).await?;
        conn.enqueue_spliced(api, version, body, records)
            .await
            .map(Pending)
    }

    /// As [`Cluster::forward_unanswered`], on this lane's connection, with
    /// `records` as in [`Lane::send_spliced`].
    pub async fn forward_unanswered<R: Encodable>(
        &self,
        to: Destination,
        api: ApiKey,
        version: i16,
        body: &R,
        records: Vec<Bytes>,
        timeout: Duration,
    ) -> Result<(), KafkaError> {
        let conn = self.connection(to).await?;
        conn.send_unanswered(api, version, body, records, timeout)
            .await
    }

    /// The cluster this lane leads to.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    async fn connection(&self, to: Destination) -> Result<Arc<Connection>, KafkaError> {
        let Destination::Node(id) = to else {
            return self.cluster.forward_connection(to).await;
        };
        let addr = self.cluster.node_addr(id).await?;
        let live =
            |m: &HashMap<String, Arc<Connection>>| m.get(&addr).filter(|c| c.is_alive()).cloned();
        if let Some(c) = live(&lock(&self.conns)) {
            return Ok(c);
        }
        // Opened without holding the map: two requests may both open one;
        // the first stays, the other is dropped (and closes).
        let client_id = lock(&self.client_id).clone();
        let fresh = self
            .cluster
            .inner
            .open_connection_as(&addr, client_id.as_deref())
            .await?;
        let mut conns = lock(&self.conns);
        if let Some(c) = live(&conns) {
            return Ok(c);
        }
        conns.insert(addr, fresh.clone());
        Ok(fresh)
    }
}

/// A request queued on a connection, its answer still to come.
pub struct Pending(crate::conn::PendingReply);

impl Pending {
    /// Waits (at most `timeout`) for the answer and decodes it.
    pub async fn decode<T: Decodable>(self, timeout: Duration) -> Result<T, KafkaError> {
        self.0.decode(timeout).await
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
