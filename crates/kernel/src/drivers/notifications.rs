//! The notifications driver: process → host notifications (the brief's
//! `notifications`, §3.7), posted by the `notify` syscall and taken by the
//! host through a [`NotificationQueue`].
//!
//! # Invariants
//!
//! 1. Bounded: the kernel holds at most [`MAX_PENDING_NOTIFICATIONS`]
//!    notifications, and at most [`MAX_PENDING_BYTES`] of payload, that no
//!    host has taken yet. A post past either is refused with
//!    `LIMIT_REACHED` and the guest decides what to do; nothing already
//!    accepted is ever dropped to make room.
//! 2. Ordered: the host takes notifications in the order the kernel
//!    accepted them (one sequence number per kernel, from 0), and those of
//!    one process in the order it posted them.
//! 3. A queue outlives the run: what was posted and not taken during
//!    `Kernel::run` is still there after it.

use estalogic_abi::{ErrorCode, Pid};
use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The most notifications the kernel holds for the host at a time.
pub const MAX_PENDING_NOTIFICATIONS: usize = 10_000;

/// The most payload bytes the kernel holds for the host at a time.
pub const MAX_PENDING_BYTES: usize = 64 << 20;

/// The largest payload one notification may carry: a message's.
pub const MAX_NOTIFICATION_LEN: usize = estalogic_abi::MAX_PAYLOAD_LEN;

/// One notification, as the host takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// Its place in the kernel's order of accepted notifications, from 0.
    pub sequence: u64,
    /// The process that posted it.
    pub source: Pid,
    /// That process's module.
    pub module: Arc<str>,
    /// The kernel clock when it was posted, ns since boot.
    pub time_ns: u64,
    /// The kind the guest gave: the service's own vocabulary.
    pub kind: i32,
    /// The payload, copied out of the guest at the post.
    pub payload: Vec<u8>,
}

/// What is waiting for the host.
#[derive(Debug, Default)]
struct Pending {
    queue: VecDeque<Notification>,
    bytes: usize,
    next_sequence: u64,
    /// The kernel is gone: nothing more will be posted.
    closed: bool,
}

/// The kernel's side of the queue: posts from syscalls, takes from hosts.
#[derive(Debug, Default)]
pub(crate) struct Notifications {
    pending: Mutex<Pending>,
    posted: Condvar,
}

impl Notifications {
    /// Accepts one notification, or refuses it with `LIMIT_REACHED` if the
    /// kernel already holds as many as it may (count or bytes).
    pub(crate) fn post(
        &self,
        source: Pid,
        module: Arc<str>,
        time_ns: u64,
        kind: i32,
        payload: Vec<u8>,
    ) -> Result<(), ErrorCode> {
        let mut pending = self.pending.lock();
        if pending.queue.len() >= MAX_PENDING_NOTIFICATIONS
            || pending.bytes + payload.len() > MAX_PENDING_BYTES
        {
            return Err(ErrorCode::LIMIT_REACHED);
        }
        let sequence = pending.next_sequence;
        pending.next_sequence += 1;
        pending.bytes += payload.len();
        pending.queue.push_back(Notification {
            sequence,
            source,
            module,
            time_ns,
            kind,
            payload,
        });
        drop(pending);
        self.posted.notify_all();
        Ok(())
    }

    /// Nothing more will be posted (the kernel was dropped): wakes every
    /// taker waiting for a post.
    pub(crate) fn close(&self) {
        self.pending.lock().closed = true;
        self.posted.notify_all();
    }

    fn take_locked(pending: &mut Pending) -> Option<Notification> {
        let taken = pending.queue.pop_front()?;
        pending.bytes -= taken.payload.len();
        Some(taken)
    }
}

/// The host's handle on the kernel's notifications
/// ([`Kernel::notifications`](crate::Kernel::notifications)): cloneable,
/// and usable from any thread while the kernel runs. Every clone takes from
/// the same queue: a notification goes to exactly one taker.
#[derive(Clone, Debug)]
pub struct NotificationQueue(pub(crate) Arc<Notifications>);

impl NotificationQueue {
    /// The oldest notification not taken yet, if any, without waiting.
    pub fn try_take(&self) -> Option<Notification> {
        Notifications::take_locked(&mut self.0.pending.lock())
    }

    /// The oldest notification not taken yet, waiting up to `timeout` for
    /// one to be posted; `None` at once if none is queued and the kernel
    /// has been dropped (nothing can be posted any more).
    pub fn take_timeout(&self, timeout: Duration) -> Option<Notification> {
        let deadline = Instant::now().checked_add(timeout);
        let mut pending = self.0.pending.lock();
        loop {
            if let Some(taken) = Notifications::take_locked(&mut pending) {
                return Some(taken);
            }
            if pending.closed {
                return None;
            }
            match deadline {
                Some(deadline) => {
                    if self.0.posted.wait_until(&mut pending, deadline).timed_out() {
                        return Notifications::take_locked(&mut pending);
                    }
                }
                None => self.0.posted.wait(&mut pending),
            }
        }
    }

    /// Every notification not taken yet, oldest first.
    pub fn take_all(&self) -> Vec<Notification> {
        let mut pending = self.0.pending.lock();
        pending.bytes = 0;
        pending.queue.drain(..).collect()
    }

    /// How many notifications wait for a taker.
    pub fn len(&self) -> usize {
        self.0.pending.lock().queue.len()
    }

    /// True if none waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn queue() -> NotificationQueue {
        NotificationQueue(Arc::new(Notifications::default()))
    }

    fn post(queue: &NotificationQueue, kind: i32, len: usize) -> Result<(), ErrorCode> {
        queue.0.post(
            Pid::new(1, 0),
            Arc::from("svc"),
            7,
            kind,
            vec![kind as u8; len],
        )
    }

    #[test]
    fn notifications_are_taken_in_order_with_their_sequence() {
        let queue = queue();
        for kind in 0..3 {
            post(&queue, kind, 2).unwrap();
        }
        let taken: Vec<_> = queue.take_all();
        assert_eq!(
            taken
                .iter()
                .map(|n| (n.sequence, n.kind))
                .collect::<Vec<_>>(),
            [(0, 0), (1, 1), (2, 2)]
        );
        assert_eq!(&*taken[0].module, "svc");
        assert_eq!(taken[2].payload, [2, 2]);
        assert!(queue.is_empty());
        post(&queue, 9, 0).unwrap();
        assert_eq!(queue.try_take().map(|n| n.sequence), Some(3));
    }

    #[test]
    fn a_full_queue_refuses_and_keeps_what_it_accepted() {
        let queue = queue();
        for _ in 0..MAX_PENDING_NOTIFICATIONS {
            post(&queue, 1, 0).unwrap();
        }
        assert_eq!(post(&queue, 2, 0), Err(ErrorCode::LIMIT_REACHED));
        assert_eq!(queue.len(), MAX_PENDING_NOTIFICATIONS);
        // Taking one makes room for one.
        assert_eq!(queue.try_take().map(|n| n.kind), Some(1));
        post(&queue, 3, 0).unwrap();
        assert_eq!(post(&queue, 4, 0), Err(ErrorCode::LIMIT_REACHED));
    }

    #[test]
    fn the_byte_bound_counts_what_is_pending() {
        let queue = queue();
        let per = MAX_NOTIFICATION_LEN;
        for _ in 0..MAX_PENDING_BYTES / per {
            post(&queue, 1, per).unwrap();
        }
        assert_eq!(post(&queue, 2, 1), Err(ErrorCode::LIMIT_REACHED));
        post(&queue, 3, 0).unwrap();
        queue.try_take().unwrap();
        post(&queue, 4, per).unwrap();
        assert_eq!(post(&queue, 5, 1), Err(ErrorCode::LIMIT_REACHED));
    }

    #[test]
    fn a_taker_waits_for_a_post_from_another_thread() {
        let queue = queue();
        let poster = queue.clone();
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            post(&poster, 5, 1).unwrap();
        });
        let taken = queue.take_timeout(Duration::from_secs(60));
        thread.join().unwrap();
        assert_eq!(taken.map(|n| n.kind), Some(5));
        assert_eq!(queue.take_timeout(Duration::from_millis(1)), None);
    }

    proptest! {
        /// Whatever mix of posts and takes, the queue holds exactly what
        /// was accepted and not taken, in order, and its byte count is
        /// their payloads' sum.
        #[test]
        fn accepted_minus_taken_is_what_remains(ops in proptest::collection::vec((any::<bool>(), 0usize..64), 0..200)) {
            let queue = queue();
            let mut model = VecDeque::new();
            for (i, (is_post, len)) in ops.into_iter().enumerate() {
                if is_post {
                    post(&queue, i as i32, len).unwrap();
                    model.push_back(i as i32);
                } else {
                    prop_assert_eq!(queue.try_take().map(|n| n.kind), model.pop_front());
                }
                let pending = queue.0.pending.lock();
                prop_assert_eq!(pending.bytes, pending.queue.iter().map(|n| n.payload.len()).sum::<usize>());
            }
            prop_assert_eq!(queue.take_all().into_iter().map(|n| n.kind).collect::<Vec<_>>(), Vec::from(model));
        }
    }
}
