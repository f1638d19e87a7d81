//! Answers read once per run and shared by every reader: the cluster's objects and lists
//! ([`crate::cluster::Cluster`]), vLLM's `/v1/models` of a backend (the context). Only a good
//! answer is kept (a read that failed, or found nothing, is made again by the next reader); a
//! `--wait` retry forgets them all, as it expects the cluster to change.
//!
//! A leaf: tokio's `OnceCell`, nothing of the crate.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

/// Answers by key, each read once.
#[derive(Default)]
pub struct ReadOnce {
    cells: Mutex<HashMap<String, Arc<Kept>>>,
}

/// One answer: read once, by whichever reader asks first.
type Kept = OnceCell<Arc<dyn Any + Send + Sync>>;

impl ReadOnce {
    /// The answer kept under `key`, or `read`'s when it is good (kept for the next reader);
    /// concurrent readers of one key wait for one read.
    pub async fn get_or_read<T, E, F>(&self, key: &str, read: impl Fn() -> F) -> Result<T, E>
    where
        T: Clone + Send + Sync + 'static,
        F: Future<Output = Result<T, E>>,
    {
        let cell = self
            .cells
            .lock()
            .ok()
            .map(|mut cells| Arc::clone(cells.entry(key.to_string()).or_default()));
        let Some(cell) = cell else {
            return read().await;
        };
        let kept = cell
            .get_or_try_init(|| async {
                read()
                    .await
                    .map(|answer| Arc::new(answer) as Arc<dyn Any + Send + Sync>)
            })
            .await?;
        match kept.downcast_ref::<T>() {
            Some(answer) => Ok(answer.clone()),
            // Another type under the same key: a mistake in the caller's keys, read afresh.
            None => read().await,
        }
    }

    pub fn forget(&self) {
        if let Ok(mut cells) = self.cells.lock() {
            cells.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_good_answer_is_read_once_and_a_failed_one_again() {
        let once = ReadOnce::default();
        let reads = AtomicUsize::new(0);
        let read = |ok: bool| {
            let reads = &reads;
            move || async move {
                reads.fetch_add(1, Ordering::SeqCst);
                if ok { Ok::<u32, &str>(7) } else { Err("no") }
            }
        };
        assert_eq!(once.get_or_read("a", read(false)).await, Err("no"));
        assert_eq!(once.get_or_read("a", read(true)).await, Ok(7));
        assert_eq!(once.get_or_read("a", read(true)).await, Ok(7));
        assert_eq!(
            reads.load(Ordering::SeqCst),
            2,
            "the failure was not kept, the answer was"
        );
        once.forget();
        assert_eq!(once.get_or_read("a", read(true)).await, Ok(7));
        assert_eq!(reads.load(Ordering::SeqCst), 3, "forgotten, read again");
    }
}
