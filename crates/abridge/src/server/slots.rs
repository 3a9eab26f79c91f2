//! Admission: at most `parallel` generations run at once, at most `queue`
//! more wait, and beyond that a request is refused at once (503) rather
//! than left waiting without bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::StatusCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::http::ApiError;

pub(crate) struct Slots {
    running: Arc<Semaphore>,
    parallel: usize,
    capacity: usize,
    admitted: Arc<AtomicUsize>,
}

/// A request admitted to run or wait; it leaves the count when dropped.
pub(crate) struct Ticket {
    admitted: Arc<AtomicUsize>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admitted.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A running generation's slot (and its ticket), freed when dropped.
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    _ticket: Ticket,
}

impl Slots {
    pub fn new(parallel: usize, queue: usize) -> Self {
        Self {
            running: Arc::new(Semaphore::new(parallel)),
            parallel,
            capacity: parallel + queue,
            admitted: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Admits a request, or refuses it when every slot and queue place is
    /// taken.
    pub fn admit(&self) -> Result<Ticket, ApiError> {
        let taken = self
            .admitted
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.capacity).then_some(n + 1)
            });
        match taken {
            Ok(_) => Ok(Ticket {
                admitted: Arc::clone(&self.admitted),
            }),
            Err(n) => {
                let mut e = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "server busy: {n} requests are running or queued ({} slots, {} queue places); try again shortly",
                        self.parallel,
                        self.capacity - self.parallel
                    ),
                );
                e.retry_after = Some(1);
                Err(e)
            }
        }
    }

    /// Waits for a free slot.
    pub async fn run(&self, ticket: Ticket) -> Slot {
        let permit = Arc::clone(&self.running)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        Slot {
            _permit: permit,
            _ticket: ticket,
        }
    }

    /// Requests running now.
    pub fn running(&self) -> usize {
        self.parallel - self.running.available_permits()
    }

    /// Requests waiting for a slot.
    pub fn waiting(&self) -> usize {
        self.admitted
            .load(Ordering::SeqCst)
            .saturating_sub(self.running())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_beyond_slots_and_queue_and_frees_on_drop() {
        let slots = Slots::new(1, 1);
        let a = slots.admit().unwrap();
        let b = slots.admit().unwrap();
        let refused = slots.admit().err().unwrap();
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.retry_after, Some(1));
        let running = slots.run(a).await;
        assert_eq!((slots.running(), slots.waiting()), (1, 1));
        drop(running);
        assert_eq!((slots.running(), slots.waiting()), (0, 1));
        drop(b);
        assert!(slots.admit().is_ok());
    }
}
