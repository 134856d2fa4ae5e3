//! The order in which one client connection's requests go upstream.
//!
//! A client may pipeline requests (an idempotent producer sends up to five
//! Produce requests with consecutive sequence numbers), and a broker
//! expects them in the order sent. The router handles a connection's
//! requests concurrently, and some wait on etcd or metadata before they
//! are sent, so without an order a later request could overtake an earlier
//! one (OUT_OF_ORDER_SEQUENCE_NUMBER). Each request gets a [`Turn`]: it
//! sends upstream only after the request before it has sent (or finished
//! without sending), and lets the next one go once its own are queued.
//! Waiting for answers stays concurrent.

use tokio::sync::oneshot;

/// One request's place in its connection's upstream order.
pub struct Turn {
    before: Option<oneshot::Receiver<()>>,
    mine: Option<oneshot::Sender<()>>,
}

impl Turn {
    /// Waits until every earlier request of the connection has sent.
    pub async fn wait(&mut self) {
        if let Some(before) = self.before.take() {
            // A dropped sender (the earlier request ended) counts as sent.
            let _ = before.await;
        }
    }

    /// This request's sends are queued (or it sends nothing): the next one
    /// may go.
    pub fn done(&mut self) {
        if let Some(tx) = self.mine.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.done();
    }
}

/// Hands out the turns of one connection, in the order requests were read.
#[derive(Default)]
pub struct Turns {
    last: Option<oneshot::Receiver<()>>,
}

impl Turns {
    pub fn take(&mut self) -> Turn {
        let (tx, rx) = oneshot::channel();
        Turn {
            before: self.last.replace(rx),
            mine: Some(tx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn later_requests_send_after_earlier_ones_even_when_these_are_slower() {
        let mut turns = Turns::default();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        // The first request takes longest before it can send.
        for (i, delay_ms) in [(0, 30u64), (1, 10), (2, 0)] {
            let mut turn = turns.take();
            let sent = sent.clone();
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
                turn.wait().await;
                sent.lock().unwrap().push(i);
                turn.done();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*sent.lock().unwrap(), vec![0, 1, 2]);
    }

    #[tokio::test]
    async fn a_request_that_ends_without_sending_lets_the_next_go() {
        let mut turns = Turns::default();
        let first = turns.take();
        let mut second = turns.take();
        drop(first);
        second.wait().await;
    }
}
