//! The gathering step of the fetcher's request batchers (offset lookups,
//! writer-epoch bumps): partitions that start together queue their
//! requests within a few polls of each other, and one round serves them.

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Waits for the next request, reaping finished `rounds` meanwhile, then
/// takes what else is queued (at most `max` in all). `None` when `cancel`
/// fires or every sender is gone.
pub async fn next_batch<T>(
    rx: &mut mpsc::Receiver<T>,
    rounds: &mut JoinSet<()>,
    cancel: &CancellationToken,
    max: usize,
) -> Option<Vec<T>> {
    let first = loop {
        tokio::select! {
            _ = cancel.cancelled() => return None,
            Some(_) = rounds.join_next(), if !rounds.is_empty() => {}
            r = rx.recv() => break r?,
        }
    };
    // Let the others that start at the same moment queue theirs.
    tokio::task::yield_now().await;
    let mut batch = vec![first];
    while batch.len() < max {
        match rx.try_recv() {
            Ok(r) => batch.push(r),
            Err(_) => break,
        }
    }
    Some(batch)
}
