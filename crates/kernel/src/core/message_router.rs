//! Message routing data: messages and the bounded, priority-ordered mailbox.
//!
//! # Mailbox invariants
//!
//! 1. A mailbox never holds more than its capacity. The capacity is fixed
//!    when the process is created: 1,024 by default, 4,096 for HIGH and
//!    REALTIME processes, 16,384 for SYSTEM ([`default_capacity`]). Nor
//!    does it hold more than [`MAX_MAILBOX_BYTES`] of payload, so a flood of
//!    1 MiB messages cannot exhaust the host's memory; a message that would
//!    pass either bound overflows.
//! 2. Higher message priority is delivered first; within one priority,
//!    delivery is FIFO. So delivery is FIFO per (source, target, priority);
//!    there is no global order.
//! 3. A selective receive takes the first message, in that order, whose type
//!    matches; other messages keep their places.
//! 4. On overflow the mailbox's [`OverflowMode`] decides. Nothing is lost
//!    silently: every dropped message is counted, and a refused message is
//!    handed back to the sender.
//!
//! The router itself (pid lookup with generation checks, waking a blocked
//! receiver) lives in `crate::core::process`; this module is plain data with
//! no I/O, so it is tested without WASM.

use estalogic_abi::{Flags, Header, MessagePriority, MessageType, Pid, Priority};
use std::collections::VecDeque;

/// What a full mailbox does with one more message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverflowMode {
    /// The new message is dropped and counted; the send succeeds.
    DropNewest,
    /// The oldest message of the lowest non-empty priority is dropped and
    /// counted to make room.
    DropOldest,
    /// The sender waits until there is room.
    BlockSender,
    /// The send fails at once with `MAILBOX_FULL` (the default).
    #[default]
    NotifySender,
}

/// The default mailbox capacity for a process of `level`.
pub const fn default_capacity(level: Priority) -> usize {
    match level {
        Priority::System => 16_384,
        Priority::High | Priority::Realtime => 4_096,
        Priority::Idle | Priority::Low | Priority::Normal => 1_024,
    }
}

/// Which messages a receive accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// Any message.
    Any,
    /// Messages of one type (selective receive).
    Type(MessageType),
    /// The answer to the message with this sequence number: a `REPLY`, an
    /// `ACK` or a `DELIVERY_FAILURE` notice carrying it as correlation id.
    Answer(u64),
    /// Like [`Filter::Answer`], and only from the process the message went
    /// to (a reply or an ack) or from the kernel (a delivery-failure
    /// notice): no third process can answer in its place.
    AnswerFrom {
        /// The sequence number of the message answered.
        correlation: u64,
        /// The process it was sent to.
        from: Pid,
    },
}

impl Filter {
    /// True if `header` passes the filter.
    pub fn accepts(&self, header: &Header) -> bool {
        match *self {
            Filter::Any => true,
            Filter::Type(wanted) => header.message_type == wanted,
            // Correlation 0 names no message (sequences start at 1).
            Filter::Answer(correlation) => {
                correlation != 0
                    && header.correlation == correlation
                    && (header.flags.contains(Flags::REPLY)
                        || header.flags.contains(Flags::ACK)
                        || header.flags.contains(Flags::DELIVERY_FAILURE))
            }
            Filter::AnswerFrom { correlation, from } => {
                Filter::Answer(correlation).accepts(header)
                    && if header.flags.contains(Flags::DELIVERY_FAILURE) {
                        header.source == Pid::KERNEL
                    } else {
                        header.source == from
                    }
            }
        }
    }
}

/// A message the kernel made: a notice or exit notification (source
/// [`Pid::KERNEL`]) or an acknowledgement it sent for a receiver. Such a
/// message never evicts another and is never evicted.
fn kernel_made(header: &Header) -> bool {
    header.source == Pid::KERNEL || header.flags.contains(Flags::ACK)
}

/// True if `header` is a reply to the call `awaiting` (0: none). Kernel
/// messages are kept anyway.
fn answers(header: &Header, awaiting: u64) -> bool {
    awaiting != 0
        && header.correlation == awaiting
        && header.flags.contains(Flags::REPLY)
        && !kernel_made(header)
}

/// The most payload bytes a mailbox holds at once (16 MiB: sixteen
/// maximum-size messages).
pub const MAX_MAILBOX_BYTES: usize = 16 << 20;

/// A message in flight: its header and payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The header, as the receiver will see it.
    pub header: Header,
    /// The payload bytes (at most 1 MiB).
    pub payload: Box<[u8]>,
}

/// What happened to a message offered to a mailbox.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The message is queued.
    Queued,
    /// The message is queued; these older ones were dropped to make room.
    QueuedDroppingOldest(Vec<Message>),
    /// The mailbox was full and dropped the new message (`DropNewest`).
    DroppedNewest(Message),
}

/// A mailbox refused a message; the message is handed back.
#[derive(Debug, PartialEq, Eq)]
pub struct MailboxFull(pub Message);

/// A bounded mailbox with one FIFO queue per message priority.
#[derive(Debug)]
pub struct Mailbox {
    queues: [VecDeque<Message>; MessagePriority::LEVELS],
    /// Bit `p` set while the queue of priority `p` holds a message: a
    /// search visits only those queues.
    occupied: u16,
    len: usize,
    bytes: usize,
    capacity: usize,
    mode: OverflowMode,
    dropped: u64,
    /// Queued messages the kernel made (see `kernel_made`), which
    /// `DropOldest` never evicts, and their payload bytes.
    kernel_len: usize,
    kernel_bytes: usize,
    /// The sequence number of the owner's latest call (0 before any): its
    /// answer may pass the capacity ([`Mailbox::push_answer`]), and a
    /// reply to it is never evicted.
    awaiting: u64,
    /// Messages a selective search looked at beyond [`FREE_SCAN`] per
    /// search, since [`Mailbox::take_scanned`] last asked: work the
    /// searching process is charged for.
    scanned: std::cell::Cell<u64>,
}

/// Messages a selective search may look at for free; past them, each is
/// work charged to the process searching (see `syscalls::charge`), so a
/// guest cannot hold its worker by searching a long mailbox over and over.
pub const FREE_SCAN: u64 = 16;

impl Mailbox {
    /// An empty mailbox. A capacity of 0 is raised to 1.
    pub fn new(capacity: usize, mode: OverflowMode) -> Self {
        Mailbox {
            queues: Default::default(),
            occupied: 0,
            len: 0,
            bytes: 0,
            capacity: capacity.max(1),
            mode,
            dropped: 0,
            kernel_len: 0,
            kernel_bytes: 0,
            awaiting: 0,
            scanned: std::cell::Cell::new(0),
        }
    }

    /// True if a message with `payload_len` bytes fits now.
    pub fn fits(&self, payload_len: usize) -> bool {
        self.len < self.capacity && self.bytes + payload_len <= MAX_MAILBOX_BYTES
    }

    /// Offers a message. `Err` hands it back when the mode is
    /// `NotifySender` or `BlockSender` and there is no room.
    pub fn push(&mut self, message: Message) -> Result<Delivery, MailboxFull> {
        let mut delivery = Delivery::Queued;
        let size = message.payload.len();
        if !self.fits(size) {
            // A kernel message (a delivery-failure notice, an exit
            // notification, an acknowledgement the kernel sends for a
            // receiver) never makes room for itself, whatever the mode:
            // evicting a message to report another would cascade (each
            // eviction is reported in turn, and one send could empty a
            // mailbox of everything it had accepted), and the kernel never
            // waits for room. It is dropped and counted.
            if kernel_made(&message.header) {
                self.dropped += 1;
                return Ok(Delivery::DroppedNewest(message));
            }
            match self.mode {
                OverflowMode::NotifySender | OverflowMode::BlockSender => {
                    return Err(MailboxFull(message));
                }
                OverflowMode::DropNewest => {
                    self.dropped += 1;
                    return Ok(Delivery::DroppedNewest(message));
                }
                OverflowMode::DropOldest => {
                    // The oldest messages go, but never one the kernel made
                    // (a notice, an ack): nothing would tell anyone it was
                    // lost, and it may be the answer a call waits for; nor
                    // a reply to the owner's latest call, for that reason.
                    if !self.can_evict_for(size) {
                        // Evicting all it may would not make room: this
                        // one is dropped instead, and nothing else.
                        self.dropped += 1;
                        return Ok(Delivery::DroppedNewest(message));
                    }
                    let mut evicted = Vec::new();
                    let awaiting = self.awaiting;
                    while !self.fits(size) {
                        let Some((priority, oldest)) =
                            self.queues
                                .iter_mut()
                                .enumerate()
                                .find_map(|(priority, queue)| {
                                    let at = queue.iter().position(|m| {
                                        !kernel_made(&m.header) && !answers(&m.header, awaiting)
                                    })?;
                                    Some((priority, queue.remove(at)?))
                                })
                        else {
                            break;
                        };
                        self.note_emptied(priority);
                        self.len -= 1;
                        self.bytes -= oldest.payload.len();
                        self.dropped += 1;
                        evicted.push(oldest);
                    }
                    delivery = Delivery::QueuedDroppingOldest(evicted);
                }
            }
        }
        self.enqueue(message);
        Ok(delivery)
    }

    /// Offers the answer to a call (a reply its receiver owed, the kernel's
    /// acknowledgement of it, or the kernel's notice that no answer will
    /// come): its caller may be waiting for nothing else, so a full mailbox
    /// takes it anyway, past its capacity (and its byte limit), evicting
    /// nothing. (A restart's new mailbox takes its predecessor's mail so
    /// too: that may have been one past.) Only while the mailbox holds no more than its capacity: so
    /// it is never more than one message past, however many answers arrive
    /// (calls may time out and leave their answers late), and a mailbox
    /// already past treats the answer like any message ([`Mailbox::push`]).
    pub fn push_answer(&mut self, message: Message) -> Result<Delivery, MailboxFull> {
        if self.len > self.capacity || self.bytes > MAX_MAILBOX_BYTES {
            return self.push(message);
        }
        self.enqueue(message);
        Ok(Delivery::Queued)
    }

    /// True if the mailbox holds more than its capacity (an answer to a
    /// call got in past it, see [`Mailbox::push_answer`]).
    pub fn is_past_capacity(&self) -> bool {
        self.len > self.capacity || self.bytes > MAX_MAILBOX_BYTES
    }

    /// Offers a broadcast's copy: like [`Mailbox::push`], but a copy that
    /// finds no room is handed back (`Err`) in every mode, neither queued
    /// nor counted — a `DropNewest` mailbox, or a `DropOldest` one that
    /// cannot make room, refuses it as a `NotifySender` one does.
    pub fn offer_copy(&mut self, message: Message) -> Result<Delivery, MailboxFull> {
        let size = message.payload.len();
        let refuses = !self.fits(size)
            && match self.mode {
                OverflowMode::DropNewest => true,
                OverflowMode::DropOldest => !self.can_evict_for(size),
                OverflowMode::NotifySender | OverflowMode::BlockSender => false,
            };
        if refuses {
            return Err(MailboxFull(message));
        }
        self.push(message)
    }

    /// True if evicting what `DropOldest` may evict (neither kernel
    /// messages nor a reply its owner awaits) can make room for `size`
    /// bytes.
    fn can_evict_for(&self, size: usize) -> bool {
        let (kept_len, kept_bytes) = self.replies_awaited();
        self.kernel_len + kept_len < self.capacity
            && self.kernel_bytes + kept_bytes + size <= MAX_MAILBOX_BYTES
    }

    /// Notes that the owner now waits for the answer to its call
    /// `sequence` (see [`Mailbox::push_answer`]).
    pub fn await_answer(&mut self, sequence: u64) {
        self.awaiting = sequence;
    }

    /// True if a message correlated to `correlation` answers the owner's
    /// latest call.
    pub fn awaits(&self, correlation: u64) -> bool {
        correlation != 0 && correlation == self.awaiting
    }

    /// How many queued replies answer the owner's latest call, and their
    /// bytes: a `DropOldest` mailbox keeps them (usually none or one).
    fn replies_awaited(&self) -> (usize, usize) {
        if self.awaiting == 0 {
            return (0, 0);
        }
        self.queues
            .iter()
            .flatten()
            .filter(|m| answers(&m.header, self.awaiting))
            .fold((0, 0), |(len, bytes), m| (len + 1, bytes + m.payload.len()))
    }

    /// Appends `message` to its priority's queue, room already decided.
    fn enqueue(&mut self, message: Message) {
        let size = message.payload.len();
        self.bytes += size;
        if kernel_made(&message.header) {
            self.kernel_len += 1;
            self.kernel_bytes += size;
        }
        let priority = message.header.priority.get() as usize;
        self.queues[priority].push_back(message);
        self.occupied |= 1 << priority;
        self.len += 1;
    }

    /// Counts a message meant for this mailbox that was dropped on the
    /// way (an acknowledgement that found no room).
    pub fn note_dropped(&mut self) {
        self.dropped += 1;
    }

    const _LEVELS_FIT_THE_BITS: () = assert!(MessagePriority::LEVELS <= u16::BITS as usize);

    /// Clears the occupied bit of `priority` if its queue is now empty.
    fn note_emptied(&mut self, priority: usize) {
        if self.queues[priority].is_empty() {
            self.occupied &= !(1 << priority);
        }
    }

    fn find(&self, filter: Filter) -> Option<(usize, usize)> {
        debug_assert_eq!(
            self.occupied,
            self.queues
                .iter()
                .enumerate()
                .filter(|(_, queue)| !queue.is_empty())
                .fold(0, |bits, (priority, _)| bits | 1 << priority),
            "the occupied bits match the queues"
        );
        let mut examined = 0;
        let mut found = None;
        // Occupied queues only, highest priority first.
        let mut levels = self.occupied;
        while levels != 0 {
            let priority = (u16::BITS - 1 - levels.leading_zeros()) as usize;
            levels &= !(1 << priority);
            let queue = &self.queues[priority];
            let at = match filter {
                Filter::Any => (!queue.is_empty()).then_some(0),
                _ => {
                    let at = queue.iter().position(|m| filter.accepts(&m.header));
                    examined += at.map_or(queue.len(), |at| at + 1) as u64;
                    at
                }
            };
            if let Some(at) = at {
                found = Some((priority, at));
                break;
            }
        }
        if examined > FREE_SCAN {
            self.scanned.set(self.scanned.get() + examined - FREE_SCAN);
        }
        found
    }

    /// The messages searches looked at past their free allowance since the
    /// last call (see [`FREE_SCAN`]); resets the count.
    pub fn take_scanned(&self) -> u64 {
        self.scanned.replace(0)
    }

    /// The message the next [`Mailbox::take`] with the same filter returns.
    pub fn peek(&self, filter: Filter) -> Option<&Message> {
        self.find(filter)
            .map(|(priority, at)| &self.queues[priority][at])
    }

    /// Removes and returns the first message, by priority then FIFO, that
    /// passes `filter`.
    pub fn take(&mut self, filter: Filter) -> Option<Message> {
        let (priority, at) = self.find(filter)?;
        let message = self.remove(priority, at)?;
        self.removed(&message);
        Some(message)
    }

    /// Removes the message at `at` of a priority's queue; the front (the
    /// usual case) without `VecDeque::remove`'s general shifting.
    fn remove(&mut self, priority: usize, at: usize) -> Option<Message> {
        let queue = &mut self.queues[priority];
        let message = if at == 0 {
            queue.pop_front()
        } else {
            queue.remove(at)
        };
        self.note_emptied(priority);
        message
    }

    /// Puts `message` back at the front of its priority's queue, ahead of
    /// everything queued since it was accepted (it was accepted first),
    /// whatever the room: it was held for the owner beside the mailbox
    /// (see `syscalls::ipc`, a lent call's answer to its lender).
    pub fn put_back(&mut self, message: Message) {
        self.bytes += message.payload.len();
        if kernel_made(&message.header) {
            self.kernel_len += 1;
            self.kernel_bytes += message.payload.len();
        }
        let priority = message.header.priority.get() as usize;
        self.queues[priority].push_front(message);
        self.occupied |= 1 << priority;
        self.len += 1;
    }

    /// Keeps the counts right for a message taken out.
    fn removed(&mut self, message: &Message) {
        self.len -= 1;
        self.bytes -= message.payload.len();
        if kernel_made(&message.header) {
            self.kernel_len -= 1;
            self.kernel_bytes -= message.payload.len();
        }
    }

    /// Like [`Mailbox::take`], but only if `fits` accepts the message;
    /// otherwise it stays queued and its header and payload length are
    /// returned. One search of the queues either way.
    pub fn take_if(
        &mut self,
        filter: Filter,
        fits: impl FnOnce(&Message) -> bool,
    ) -> Result<Option<Message>, (Header, usize)> {
        let Some((priority, at)) = self.find(filter) else {
            return Ok(None);
        };
        let found = &self.queues[priority][at];
        if !fits(found) {
            return Err((found.header, found.payload.len()));
        }
        let message = self.remove(priority, at).expect("found message is there");
        self.removed(&message);
        Ok(Some(message))
    }

    /// Number of queued messages.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Payload bytes queued.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The fixed capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The overflow mode.
    pub fn mode(&self) -> OverflowMode {
        self.mode
    }

    /// Messages dropped by the overflow policy so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Removes every queued message (at process exit), oldest first per
    /// priority, highest priority first.
    pub fn drain(&mut self) -> Vec<Message> {
        // Most mailboxes are empty when their process ends.
        if self.len == 0 {
            return Vec::new();
        }
        let mut all = Vec::with_capacity(self.len);
        for queue in self.queues.iter_mut().rev() {
            all.extend(queue.drain(..));
        }
        self.occupied = 0;
        self.len = 0;
        self.bytes = 0;
        self.kernel_len = 0;
        self.kernel_bytes = 0;
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use estalogic_abi::Pid;
    use proptest::prelude::*;

    fn message(source: u32, priority: u8, message_type: u32, sequence: u64) -> Message {
        Message {
            header: Header {
                priority: MessagePriority::new(priority).unwrap(),
                flags: Flags::NONE,
                message_type: MessageType(message_type),
                source: Pid::new(source, 1),
                target: Pid::new(99, 1),
                sequence,
                timestamp: 0,
                correlation: 0,
            },
            payload: Box::new([]),
        }
    }

    #[test]
    fn notify_sender_hands_the_message_back() {
        let mut mailbox = Mailbox::new(2, OverflowMode::NotifySender);
        assert_eq!(mailbox.push(message(1, 0, 1, 0)), Ok(Delivery::Queued));
        assert_eq!(mailbox.push(message(1, 0, 1, 1)), Ok(Delivery::Queued));
        let refused = mailbox.push(message(1, 0, 1, 2)).unwrap_err();
        assert_eq!(refused.0.header.sequence, 2);
        assert_eq!(mailbox.len(), 2);
        assert_eq!(mailbox.dropped(), 0);
    }

    #[test]
    fn an_answer_gets_into_a_full_mailbox_in_every_mode_and_evicts_nothing() {
        for mode in [
            OverflowMode::NotifySender,
            OverflowMode::BlockSender,
            OverflowMode::DropNewest,
            OverflowMode::DropOldest,
        ] {
            let mut mailbox = Mailbox::new(2, mode);
            mailbox.push(message(1, 0, 1, 0)).unwrap();
            mailbox.push(message(1, 0, 1, 1)).unwrap();
            let mut answer = message(2, 3, 7, 5);
            answer.payload = Box::new([1, 2, 3]);
            assert_eq!(mailbox.push_answer(answer), Ok(Delivery::Queued));
            assert_eq!(mailbox.len(), 3, "{mode:?}: one past its capacity");
            assert!(mailbox.is_past_capacity());
            assert_eq!(mailbox.bytes(), 3);
            assert_eq!(mailbox.dropped(), 0, "{mode:?}");
            // A second answer finds it past its capacity: offered like any
            // message, so it never goes two past.
            let second = mailbox.push_answer(message(2, 3, 7, 6));
            assert!(mailbox.len() <= 3, "{mode:?}: {second:?}");
            if mode != OverflowMode::DropOldest {
                assert_eq!(mailbox.len(), 3, "{mode:?}: refused or dropped");
            }
            assert_eq!(mailbox.take(Filter::Any).unwrap().header.sequence, 5);
            assert!(!mailbox.is_past_capacity(), "{mode:?}");
        }
    }

    #[test]
    fn drop_oldest_keeps_the_reply_its_owner_awaits() {
        let reply = |sequence, correlation| {
            let mut m = message(2, 0, 2, sequence);
            m.header.flags = Flags::REPLY;
            m.header.correlation = correlation;
            m
        };
        let mut mailbox = Mailbox::new(2, OverflowMode::DropOldest);
        mailbox.await_answer(7);
        mailbox.push(reply(1, 7)).unwrap();
        mailbox.push(message(1, 5, 1, 2)).unwrap();
        // The oldest lowest-priority message is the awaited reply: the
        // next one evicts the message after it instead.
        match mailbox.push(message(1, 5, 1, 3)).unwrap() {
            Delivery::QueuedDroppingOldest(dropped) => {
                assert_eq!(dropped.len(), 1);
                assert_eq!(dropped[0].header.sequence, 2);
            }
            other => panic!("unexpected {other:?}"),
        }
        // A reply to an earlier call is evicted like any message.
        mailbox.await_answer(8);
        match mailbox.push(message(1, 5, 1, 4)).unwrap() {
            Delivery::QueuedDroppingOldest(dropped) => {
                assert_eq!(dropped[0].header.sequence, 1);
            }
            other => panic!("unexpected {other:?}"),
        }
        // Filled with what it keeps, it drops the newcomer instead.
        let mut kept = Mailbox::new(1, OverflowMode::DropOldest);
        kept.await_answer(9);
        kept.push(reply(1, 9)).unwrap();
        assert!(matches!(
            kept.push(message(1, 7, 1, 2)),
            Ok(Delivery::DroppedNewest(_))
        ));
        assert_eq!(kept.take(Filter::Any).unwrap().header.correlation, 9);
    }

    #[test]
    fn drop_newest_and_drop_oldest_count_drops() {
        let mut newest = Mailbox::new(1, OverflowMode::DropNewest);
        newest.push(message(1, 0, 1, 0)).unwrap();
        assert_eq!(
            newest.push(message(1, 0, 1, 1)),
            Ok(Delivery::DroppedNewest(message(1, 0, 1, 1)))
        );
        assert_eq!(newest.take(Filter::Any).unwrap().header.sequence, 0);
        assert_eq!(newest.dropped(), 1);

        let mut oldest = Mailbox::new(2, OverflowMode::DropOldest);
        oldest.push(message(1, 5, 1, 0)).unwrap();
        oldest.push(message(1, 0, 1, 1)).unwrap();
        match oldest.push(message(1, 5, 1, 2)).unwrap() {
            Delivery::QueuedDroppingOldest(dropped) => {
                assert_eq!(dropped.len(), 1);
                assert_eq!(dropped[0].header.sequence, 1);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(oldest.dropped(), 1);
        assert_eq!(oldest.len(), 2);
    }

    #[test]
    fn a_kernel_message_never_evicts_or_waits() {
        for mode in [
            OverflowMode::DropOldest,
            OverflowMode::NotifySender,
            OverflowMode::BlockSender,
            OverflowMode::DropNewest,
        ] {
            let mut mailbox = Mailbox::new(2, mode);
            mailbox.push(message(1, 0, 1, 0)).unwrap();
            mailbox.push(message(1, 0, 1, 1)).unwrap();
            let mut notice = message(0, 7, 1, 0);
            notice.header.source = Pid::KERNEL;
            notice.header.flags = Flags::DELIVERY_FAILURE;
            assert_eq!(
                mailbox.push(notice.clone()),
                Ok(Delivery::DroppedNewest(notice)),
                "{mode:?}"
            );
            assert_eq!(mailbox.len(), 2, "{mode:?}: what it had accepted stays");
            assert_eq!(mailbox.take(Filter::Any).unwrap().header.sequence, 0);
            assert_eq!(mailbox.dropped(), 1, "{mode:?}");
        }
    }

    #[test]
    fn higher_priority_first_and_selective_receive_skips() {
        let mut mailbox = Mailbox::new(8, OverflowMode::NotifySender);
        mailbox.push(message(1, 0, 1, 0)).unwrap();
        mailbox.push(message(1, 7, 2, 1)).unwrap();
        mailbox.push(message(1, 0, 3, 2)).unwrap();
        assert_eq!(mailbox.peek(Filter::Any).unwrap().header.sequence, 1);
        assert_eq!(
            mailbox
                .take(Filter::Type(MessageType(3)))
                .unwrap()
                .header
                .sequence,
            2
        );
        assert_eq!(mailbox.take(Filter::Any).unwrap().header.sequence, 1);
        assert_eq!(mailbox.take(Filter::Any).unwrap().header.sequence, 0);
        assert!(mailbox.take(Filter::Any).is_none());
        assert!(mailbox.is_empty());
    }

    #[test]
    fn drop_oldest_never_evicts_what_the_kernel_made() {
        // A notice (which may answer a call) then a message fill two
        // places: a third message evicts the message, not the notice.
        let mut mailbox = Mailbox::new(2, OverflowMode::DropOldest);
        let mut notice = message(0, 0, 1, 0);
        notice.header.source = Pid::KERNEL;
        notice.header.flags = Flags::DELIVERY_FAILURE;
        mailbox.push(notice).unwrap();
        mailbox.push(message(1, 0, 1, 1)).unwrap();
        match mailbox.push(message(1, 0, 1, 2)).unwrap() {
            Delivery::QueuedDroppingOldest(evicted) => {
                assert_eq!(evicted.len(), 1);
                assert_eq!(evicted[0].header.sequence, 1);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            mailbox.take(Filter::Any).unwrap().header.source,
            Pid::KERNEL
        );
        // Full of what the kernel made: a new message is dropped instead.
        let mut mailbox = Mailbox::new(1, OverflowMode::DropOldest);
        let mut ack = message(3, 0, 1, 0);
        ack.header.flags = Flags::ACK;
        mailbox.push(ack).unwrap();
        assert!(matches!(
            mailbox.push(message(1, 0, 1, 1)).unwrap(),
            Delivery::DroppedNewest(_)
        ));
        assert_eq!(mailbox.take(Filter::Any).unwrap().header.flags, Flags::ACK);
        assert!(mailbox.is_empty());
        // The counts follow takes: room again for an evictable message.
        mailbox.push(message(1, 0, 1, 2)).unwrap();
        assert!(matches!(
            mailbox.push(message(1, 0, 1, 3)).unwrap(),
            Delivery::QueuedDroppingOldest(_)
        ));
    }

    #[test]
    fn answer_filter_matches_replies_acks_and_failures_by_correlation() {
        let mut mailbox = Mailbox::new(8, OverflowMode::NotifySender);
        let mut plain = message(1, 0, 1, 0);
        plain.header.correlation = 7;
        mailbox.push(plain).unwrap();
        let mut reply = message(1, 0, 1, 1);
        reply.header.correlation = 7;
        reply.header.flags = Flags::REPLY;
        mailbox.push(reply).unwrap();
        assert_eq!(mailbox.take(Filter::Answer(8)), None);
        assert_eq!(mailbox.take(Filter::Answer(7)).unwrap().header.sequence, 1);
        assert_eq!(
            mailbox.take(Filter::Answer(7)),
            None,
            "a plain message is no answer"
        );
    }

    #[test]
    fn answer_from_filter_takes_answers_only_from_the_target_or_the_kernel() {
        let mut mailbox = Mailbox::new(8, OverflowMode::NotifySender);
        let answer = |source: Pid, flags: Flags, sequence: u64| {
            let mut m = message(1, 0, 1, sequence);
            m.header.source = source;
            m.header.correlation = 7;
            m.header.flags = flags;
            m
        };
        let target = Pid::new(2, 1);
        let forger = Pid::new(3, 1);
        mailbox.push(answer(forger, Flags::REPLY, 1)).unwrap();
        mailbox
            .push(answer(forger, Flags::DELIVERY_FAILURE, 2))
            .unwrap();
        let filter = Filter::AnswerFrom {
            correlation: 7,
            from: target,
        };
        assert_eq!(mailbox.take(filter), None, "nothing from the target yet");
        mailbox
            .push(answer(Pid::KERNEL, Flags::DELIVERY_FAILURE, 3))
            .unwrap();
        mailbox.push(answer(target, Flags::REPLY, 4)).unwrap();
        assert_eq!(mailbox.take(filter).unwrap().header.sequence, 3);
        assert_eq!(mailbox.take(filter).unwrap().header.sequence, 4);
        assert_eq!(mailbox.len(), 2, "the forgeries stay queued");
    }

    #[test]
    fn payload_bytes_are_bounded_too() {
        let big = |sequence| Message {
            payload: vec![0u8; 1 << 20].into_boxed_slice(),
            ..message(1, 0, 1, sequence)
        };
        let mut mailbox = Mailbox::new(1_000, OverflowMode::NotifySender);
        for sequence in 0..16 {
            assert!(mailbox.push(big(sequence)).is_ok());
        }
        assert_eq!(mailbox.bytes(), MAX_MAILBOX_BYTES);
        assert!(
            mailbox.push(big(16)).is_err(),
            "17 MiB would pass the byte bound"
        );
        assert!(
            mailbox.push(message(1, 0, 1, 17)).is_ok(),
            "an empty payload still fits"
        );
        mailbox.take(Filter::Any).unwrap();
        assert_eq!(mailbox.bytes(), MAX_MAILBOX_BYTES - (1 << 20));

        let mut oldest = Mailbox::new(1_000, OverflowMode::DropOldest);
        for sequence in 0..16 {
            oldest.push(big(sequence)).unwrap();
        }
        match oldest.push(big(16)).unwrap() {
            Delivery::QueuedDroppingOldest(dropped) => assert_eq!(dropped[0].header.sequence, 0),
            other => panic!("unexpected {other:?}"),
        }
        assert!(oldest.bytes() <= MAX_MAILBOX_BYTES);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Push {
            source: u32,
            priority: u8,
            message_type: u32,
        },
        Take {
            only: Option<u32>,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u32..3, 0u8..8, 1u32..4).prop_map(|(source, priority, message_type)| Op::Push { source, priority, message_type }),
            1 => proptest::option::of(1u32..4).prop_map(|only| Op::Take { only }),
        ]
    }

    fn mode() -> impl Strategy<Value = OverflowMode> {
        prop_oneof![
            Just(OverflowMode::DropNewest),
            Just(OverflowMode::DropOldest),
            Just(OverflowMode::BlockSender),
            Just(OverflowMode::NotifySender),
        ]
    }

    proptest! {
        /// The mailbox never exceeds its capacity, and what comes out for a
        /// given (source, priority) comes out in the order it went in (per
        /// message type: a selective receive may take a later message of
        /// another type first, which is its point).
        #[test]
        fn bounded_and_fifo_per_source_and_priority(
            capacity in 1usize..16,
            mode in mode(),
            ops in proptest::collection::vec(op(), 0..200),
        ) {
            let mut mailbox = Mailbox::new(capacity, mode);
            let mut next_sequence = 0u64;
            let mut last_taken: std::collections::HashMap<(u32, u8, u32), u64> = Default::default();
            let mut accepted = 0u64;
            let mut refused = 0u64;
            let mut taken = 0u64;
            for op in ops {
                match op {
                    Op::Push { source, priority, message_type } => {
                        match mailbox.push(message(source, priority, message_type, next_sequence)) {
                            Ok(_) => accepted += 1,
                            Err(_) => refused += 1,
                        }
                        next_sequence += 1;
                    }
                    Op::Take { only } => {
                        if let Some(m) = mailbox.take(only.map_or(Filter::Any, |t| Filter::Type(MessageType(t)))) {
                            taken += 1;
                            let key = (m.header.source.index(), m.header.priority.get(), m.header.message_type.0);
                            if let Some(previous) = last_taken.insert(key, m.header.sequence) {
                                prop_assert!(previous < m.header.sequence, "FIFO broken for {:?}", key);
                            }
                        }
                    }
                }
                prop_assert!(mailbox.len() <= mailbox.capacity());
                prop_assert!(mailbox.bytes() <= MAX_MAILBOX_BYTES);
            }
            // Conservation: every accepted message is queued, taken or counted as dropped.
            prop_assert_eq!(accepted, mailbox.len() as u64 + taken + mailbox.dropped());
            if matches!(mode, OverflowMode::DropNewest | OverflowMode::DropOldest) {
                prop_assert_eq!(refused, 0);
            }
        }

        /// However answers to calls and other messages interleave, a
        /// mailbox holds at most one message past its capacity, and every
        /// message it accepted is queued, taken or counted as dropped.
        #[test]
        fn answers_pass_the_capacity_by_one_message_at_most(
            capacity in 1usize..8,
            mode in mode(),
            ops in proptest::collection::vec((op(), any::<bool>()), 0..200),
        ) {
            let mut mailbox = Mailbox::new(capacity, mode);
            let (mut accepted, mut taken) = (0u64, 0u64);
            for (sequence, (op, answer)) in ops.into_iter().enumerate() {
                match op {
                    Op::Push { source, priority, message_type } => {
                        let offered = message(source, priority, message_type, sequence as u64);
                        let result = if answer {
                            mailbox.push_answer(offered)
                        } else {
                            mailbox.push(offered)
                        };
                        if result.is_ok() {
                            accepted += 1;
                        }
                    }
                    Op::Take { only } => {
                        if mailbox.take(only.map_or(Filter::Any, |t| Filter::Type(MessageType(t)))).is_some() {
                            taken += 1;
                        }
                    }
                }
                prop_assert!(mailbox.len() <= mailbox.capacity() + 1);
            }
            prop_assert_eq!(accepted, mailbox.len() as u64 + taken + mailbox.dropped());
        }
    }
}
