//! Routing: how a message gets from a sender into a mailbox, and how the
//! kernel reports what could not be delivered.
//!
//! # Protocol
//!
//! 1. `KernelShared::post` is the only way a message enters a mailbox. It
//!    finds the live target by pid (generation included), applies the
//!    target mailbox's overflow mode, and wakes the target if it waits —
//!    always after releasing the mailbox lock.
//! 2. `NotifySender` and `BlockSender` hand a refused message back to the
//!    caller (`PostError::Full`); the caller fails the send or blocks.
//! 3. A message dropped later — by `DropNewest`, by `DropOldest`, or left in
//!    the mailbox of a process that ends — is reported to its sender with a
//!    kernel `DELIVERY_FAILURE` notice (correlation = the message's
//!    sequence), and counted. Kernel notices and the acks the kernel sends
//!    for a receiver are never themselves reported, and one that finds its
//!    mailbox full is dropped (it evicts nothing), so there are no notice
//!    loops or cascades; the reports a post causes are made from a work
//!    list, never by recursion.
//! 4. `take` is the only way a message leaves a mailbox to a process: it
//!    frees a blocked sender and answers an `ACK_REQUESTED` message with an
//!    `ACK` (correlation = the message's sequence). An ack that cannot be
//!    delivered is never reported to the receiver (the kernel sent it): it
//!    is dropped, and counted by the sender's mailbox if that was full.

use crate::core::kernel_loop::KernelShared;
use crate::core::message_router::{Delivery, Filter, MailboxFull, Message, OverflowMode};
use crate::core::process::{Counters, MAX_OWED_CALLS, MailboxSlot, OwedCall, Process};
use estalogic_abi::messages::DeliveryFailure;
use estalogic_abi::{ErrorCode, Flags, Header, MessagePriority, MessageType, Pid};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Why `KernelShared::post` did not queue a message (a full mailbox hands
/// it back).
#[derive(Debug)]
pub(crate) enum PostError {
    /// No live process has the target pid.
    NoSuchProcess,
    /// The mailbox is full; its mode (`NotifySender` or `BlockSender`) says
    /// what the sender does next.
    Full(Message, OverflowMode, Arc<Process>),
}

impl PostError {
    pub(crate) fn code(&self) -> ErrorCode {
        match self {
            PostError::NoSuchProcess => ErrorCode::NO_SUCH_PROCESS,
            PostError::Full(..) => ErrorCode::MAILBOX_FULL,
        }
    }
}

/// How a post lets a message into a mailbox.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Offer {
    /// As its overflow mode says ([`Mailbox::push`]).
    Plain,
    /// The answer to a call: past a full mailbox if it answers the
    /// owner's latest call ([`Mailbox::push_answer`]), else plain.
    Answer,
    /// A broadcast's copy: refused without room in every mode
    /// ([`Mailbox::offer_copy`]).
    Copy,
}

impl KernelShared {
    /// The live process with exactly this pid.
    pub(crate) fn process(&self, pid: Pid) -> Option<Arc<Process>> {
        let table = self.table.read().unwrap_or_else(|p| p.into_inner());
        table.get(pid).cloned()
    }

    /// Queues `message` for its target; see the module docs. `Ok(true)`
    /// means the target was waiting in a receive and has been woken.
    pub(crate) fn post(&self, message: Message) -> Result<bool, PostError> {
        let Some(target) = self.process(message.header.target) else {
            return Err(PostError::NoSuchProcess);
        };
        self.post_to(&target, message)
    }

    /// Like `KernelShared::post` with the target already looked up.
    pub(crate) fn post_to(
        &self,
        target: &Arc<Process>,
        message: Message,
    ) -> Result<bool, PostError> {
        let (woke, dropped) = self.post_quietly(target, message)?;
        if let Some(dropped) = dropped {
            self.report_all(dropped);
        }
        Ok(woke)
    }

    /// Like [`KernelShared::post_to`], for a broadcast's copy: a mailbox
    /// without room refuses it (`PostError::Full`) in every mode, neither
    /// queued nor counted ([`Mailbox::offer_copy`]); what a `DropOldest`
    /// mailbox evicts for it is reported.
    pub(crate) fn post_copy(
        &self,
        target: &Arc<Process>,
        message: Message,
    ) -> Result<(), PostError> {
        let (_, dropped) = self.post_counting(target, message, Offer::Copy, || {})?;
        if let Some(dropped) = dropped {
            self.report_all(dropped);
        }
        Ok(())
    }

    /// Queues `message` and hands back the headers of the messages the
    /// overflow mode dropped to make room (or the message itself), for
    /// the caller to report: reporting posts notices, which can drop more
    /// (see [`KernelShared::report_all`]).
    fn post_quietly(
        &self,
        target: &Arc<Process>,
        message: Message,
    ) -> Result<(bool, Option<Vec<Header>>), PostError> {
        self.post_counting(target, message, Offer::Plain, || {})
    }

    /// Like [`KernelShared::post_to`], for the answer to a call its caller
    /// may be waiting for (a reply the sender owed, the kernel's ack of
    /// it): a full mailbox takes it past its capacity, by one message at
    /// most ([`Mailbox::push_answer`]). `Ok(Some(woke))` if it was queued,
    /// `Ok(None)` if a mailbox already past its capacity dropped it at
    /// once (`DropNewest`; reported to its sender like any drop).
    pub(crate) fn post_answer(
        &self,
        target: &Arc<Process>,
        message: Message,
    ) -> Result<Option<bool>, PostError> {
        let own = (message.header.source, message.header.sequence);
        let (woke, dropped) = self.post_counting(target, message, Offer::Answer, || {})?;
        let Some(dropped) = dropped else {
            return Ok(Some(woke));
        };
        let queued = !dropped
            .iter()
            .any(|header| (header.source, header.sequence) == own);
        self.report_all(dropped);
        Ok(queued.then_some(woke))
    }

    /// [`KernelShared::post_quietly`], calling `accepted` under the
    /// mailbox lock once the mailbox took the message (queued, or dropped
    /// and counted by its mode): a count kept with it is then never out of
    /// step with the mailbox's, whoever reads both after closing it.
    /// How `offer` lets the message in: see [`Offer`].
    fn post_counting(
        &self,
        target: &Arc<Process>,
        message: Message,
        offer: Offer,
        accepted: impl FnOnce(),
    ) -> Result<(bool, Option<Vec<Header>>), PostError> {
        let (header, len) = (message.header, message.payload.len());
        let (delivery, woke) = {
            let mut slot = target.lock_mailbox();
            // Checked under the mailbox lock: `close_mailbox` clears `alive`
            // under the same lock, so nothing lands in a closed mailbox.
            if !target.alive.load(Ordering::Acquire) {
                return Err(PostError::NoSuchProcess);
            }
            let mode = slot.mailbox.mode();
            // Only the answer to the call the target made last (the one it
            // may wait for): a late answer to an earlier call, which the
            // target no longer waits for, is offered like any message.
            let pushed = match offer {
                Offer::Answer if slot.mailbox.awaits(header.correlation) => {
                    slot.mailbox.push_answer(message)
                }
                Offer::Copy => slot.mailbox.offer_copy(message),
                _ => slot.mailbox.push(message),
            };
            match pushed {
                // Woken under the lock with the waker the slot keeps (no
                // clone to take out): a wake only queues the pid.
                Ok(delivery) => {
                    accepted();
                    // Traced before the receiver can see it (under its
                    // mailbox's lock): after, a receiver on another worker
                    // could take it and trace its reply first. A refused
                    // or blocked attempt is not a message in the trace (a
                    // blocked sender's retry is recorded when it gets in),
                    // and one the mode dropped at once was never queued.
                    if !matches!(delivery, Delivery::DroppedNewest(_)) {
                        self.trace_send(&header, len);
                    }
                    (delivery, slot.wake_waiter())
                }
                Err(MailboxFull(message)) => {
                    return Err(PostError::Full(message, mode, target.clone()));
                }
            }
        };
        let dropped = match delivery {
            Delivery::Queued => None,
            Delivery::DroppedNewest(dropped) => Some(vec![dropped.header]),
            Delivery::QueuedDroppingOldest(dropped) => {
                Some(dropped.into_iter().map(|m| m.header).collect())
            }
        };
        Ok((woke, dropped))
    }

    /// Sends a kernel message (source `Pid::KERNEL`, highest priority) to
    /// the live process registered under module name `to`. A full mailbox
    /// drops it (counted there): the kernel never blocks. Returns false if
    /// no live process holds the name (nothing was sent).
    pub(crate) fn notify_module(
        &self,
        to: &str,
        message_type: MessageType,
        payload: &[u8],
    ) -> bool {
        let target = {
            let table = self.table.read().unwrap_or_else(|p| p.into_inner());
            // A running process of the module; else its holder that ended
            // in a lent turn and is not reaped yet, whose open mailbox a
            // same-state restart inherits (a supervisor that trapped just
            // after its child still hears of it).
            table
                .lookup(to)
                .or_else(|| table.holder(to))
                .and_then(|pid| table.get(pid).cloned())
        };
        let Some(target) = target else {
            return false;
        };
        let header = Header {
            priority: MessagePriority::MAX,
            flags: Flags::NONE,
            message_type,
            source: Pid::KERNEL,
            target: target.pid,
            sequence: 0,
            timestamp: self.clock.now_nanos(),
            correlation: 0,
        };
        let _ = self.post_to(
            &target,
            Message {
                header,
                payload: payload.into(),
            },
        );
        true
    }

    /// Sends the sender of `failed` a `DELIVERY_FAILURE` notice and counts
    /// it. Kernel messages and notices are never reported.
    pub(crate) fn report_failure(&self, failed: &Header, code: ErrorCode) {
        let mut dropped = Vec::new();
        self.report(failed, code, &mut dropped);
        self.report_all(dropped);
    }

    /// Reports every message of `dropped` (`MESSAGE_DROPPED`), and what
    /// posting those notices drops in turn, until nothing is left: a
    /// notice posted to a full `DropOldest` mailbox evicts another message,
    /// whose sender is told too. A loop, not recursion: a process that
    /// floods its own mailbox would otherwise nest one report per message
    /// it holds. It ends: each round evicts a process's message and queues
    /// a kernel notice, and notices are never reported.
    fn report_all(&self, mut dropped: Vec<Header>) {
        while let Some(failed) = dropped.pop() {
            self.report(&failed, ErrorCode::MESSAGE_DROPPED, &mut dropped);
        }
    }

    /// One notice for `failed`; what posting it dropped goes to `dropped`.
    /// Counted in the sender's `delivery_failures` if the notice was queued
    /// or dropped by a full mailbox (counted there); a sender whose
    /// mailbox has closed (it is exiting) has no one left to tell. The
    /// notice about a call (dropped, left untaken, or taken and never
    /// answered) is the answer its caller may be waiting for: it may go
    /// past a full mailbox's capacity ([`Mailbox::push_answer`]).
    fn report(&self, failed: &Header, code: ErrorCode, dropped: &mut Vec<Header>) {
        let offer = if failed.flags.contains(Flags::CALL) {
            Offer::Answer
        } else {
            Offer::Plain
        };
        // What the kernel made (its notices, and the acks it sends for a
        // receiver) is never reported: to no one for a notice, and not to
        // the receiver, who did not send it, for an ack.
        if failed.source == Pid::KERNEL
            || failed.flags.contains(Flags::DELIVERY_FAILURE)
            || failed.flags.contains(Flags::ACK)
        {
            return;
        }
        let Some(sender) = self.process(failed.source) else {
            return;
        };
        let notice = DeliveryFailure {
            code,
            target: failed.target,
            message_type: failed.message_type,
        };
        let header = Header {
            priority: MessagePriority::MAX,
            flags: Flags::DELIVERY_FAILURE,
            message_type: failed.message_type,
            source: Pid::KERNEL,
            target: failed.source,
            sequence: 0,
            timestamp: self.clock.now_nanos(),
            correlation: failed.sequence,
        };
        // The kernel never blocks: if even this does not fit, it is dropped
        // and counted by the mailbox.
        let notice = Message {
            header,
            payload: Box::new(notice.encode()),
        };
        // Counted under the sender's mailbox lock, with the notice: an
        // exiting sender's report reads both after closing its mailbox, so
        // it never has one without the other.
        let counted = || {
            sender
                .counters
                .delivery_failures
                .fetch_add(1, Ordering::Relaxed);
        };
        if let Ok((_, Some(more))) = self.post_counting(&sender, notice, offer, counted) {
            dropped.extend(more);
        }
    }
}

/// Takes the first message passing `filter` from `process`'s mailbox,
/// frees one blocked sender and sends a requested acknowledgement.
/// `fits` decides, with the mailbox locked, whether the message may be
/// taken (a too-small receive buffer leaves it queued).
/// When nothing matches, `park` runs on the mailbox slot before its lock is
/// released (to leave a waker), so no message can slip in between looking
/// and parking. `discard_unfit` (a handler, whose inbox is the only place a
/// message can go) removes a first match that does not fit, in the same
/// lock hold, neither counted as received nor acknowledged: the caller
/// reports it to its sender.
pub(crate) fn take(
    kernel: &KernelShared,
    process: &Process,
    filter: Filter,
    fits: impl FnOnce(&Message) -> bool,
    discard_unfit: bool,
    halt: impl FnOnce() -> bool,
    park: impl FnOnce(&mut MailboxSlot),
) -> Taken {
    let (message, sender) = {
        let mut slot = process.lock_mailbox();
        // Asked under the lock: a message posted because of what `halt`
        // watches (a notice from a peer a shutdown stopped) is seen with
        // it.
        if halt() {
            return Taken::Halted;
        }
        let taken = slot.mailbox.take_if(filter, fits);
        let scanned = slot.mailbox.take_scanned();
        if scanned > 0 {
            Counters::bump_own(&process.scanned, scanned);
        }
        let message = match taken {
            Ok(Some(message)) => message,
            Ok(None) => {
                park(&mut slot);
                return Taken::Nothing;
            }
            Err((header, len)) if discard_unfit => {
                // The same first match, still under the lock.
                let _ = slot.mailbox.take_if(filter, |_| true);
                let sender = slot.blocked_senders.pop_front();
                drop(slot);
                if let Some(sender) = sender {
                    sender.wake();
                }
                debug_assert!(len > 0, "an empty payload always fits");
                return Taken::Discarded(header);
            }
            Err((header, len)) => return Taken::TooLarge(header, len),
        };
        // A call that asks for an acknowledgement is answered by the ack
        // sent below: nothing is owed.
        if message.header.flags.contains(Flags::CALL)
            && !message.header.flags.contains(Flags::ACK_REQUESTED)
        {
            owe(process, &mut slot, &message.header);
        }
        (message, slot.blocked_senders.pop_front())
    };
    if let Some(sender) = sender {
        sender.wake();
    }
    Counters::bump_own(&process.counters.received, 1);
    if message.header.flags.contains(Flags::ACK_REQUESTED) {
        let ack = Header {
            priority: message.header.priority,
            flags: Flags::ACK,
            message_type: message.header.message_type,
            source: process.pid,
            target: message.header.source,
            sequence: process.next_sequence(),
            timestamp: kernel.clock.now_nanos(),
            correlation: message.header.sequence,
        };
        // The kernel acknowledges for the receiver, so an ack it cannot
        // deliver is not the receiver's to hear about: to a sender that
        // has exited there is no one to tell, and one that finds the
        // sender's mailbox full is counted there, as a dropped message.
        // The ack of a call is that call's answer: a full mailbox takes it
        // past its capacity (`Mailbox::push_answer`), as a reply.
        let ack = Message {
            header: ack,
            payload: Box::new([]),
        };
        let posted = if message.header.flags.contains(Flags::CALL) {
            kernel
                .process(ack.header.target)
                .ok_or(PostError::NoSuchProcess)
                .and_then(|sender| kernel.post_answer(&sender, ack))
                .map(|queued| queued.unwrap_or(false))
        } else {
            kernel.post(ack)
        };
        if let Err(PostError::Full(_, _, sender)) = posted {
            sender.lock_mailbox().mailbox.note_dropped();
        }
    }
    Taken::Message(message)
}

/// Notes that `process` took the call `header` (under its mailbox lock):
/// it owes the caller an answer until [`settle`].
fn owe(process: &Process, slot: &mut MailboxSlot, header: &Header) {
    if slot.owed.len() >= MAX_OWED_CALLS {
        slot.owed.pop_front();
    }
    slot.owed.push_back(OwedCall {
        caller: header.source,
        sequence: header.sequence,
        message_type: header.message_type,
    });
    process.owes_calls.store(true, Ordering::Relaxed);
}

/// `process` answered `caller`'s message `correlation` (a reply sent, or
/// one that found the caller gone): the call, if it was one it owed, is
/// owed no more. Called by the process itself; free (no lock) when it owes
/// nothing. Searched newest first: a server usually answers the call it
/// took last, whatever older calls it never answered. The call, if it was
/// owed (its answer is then the answer to a call).
pub(crate) fn settle(process: &Process, caller: Pid, correlation: u64) -> Option<OwedCall> {
    if !process.owes_calls.load(Ordering::Relaxed) {
        return None;
    }
    let mut slot = process.lock_mailbox();
    let owed = slot
        .owed
        .iter()
        .rposition(|owed| owed.caller == caller && owed.sequence == correlation)
        .and_then(|at| slot.owed.remove(at));
    if slot.owed.is_empty() {
        process.owes_calls.store(false, Ordering::Relaxed);
    }
    owed
}

/// Notes that `caller` now waits for the answer to its call `sequence`,
/// about to be posted: that answer, and no late answer to an earlier call,
/// may pass its full mailbox. Refused with `WOULD_DEADLOCK` if its mailbox
/// is already past its capacity (a late answer got in, and was not taken):
/// the answer could then never get in, and the wait never end.
/// `receiver` is the process the call goes to.
pub(crate) fn await_answer(
    caller: &Process,
    sequence: u64,
    receiver: Pid,
) -> Result<(), ErrorCode> {
    let mut slot = caller.lock_mailbox();
    if slot.mailbox.is_past_capacity() {
        return Err(ErrorCode::WOULD_DEADLOCK);
    }
    // Under the lock an answer is posted with, so none can go past on the
    // strength of the previous call once this returns.
    slot.mailbox.await_answer(sequence);
    caller
        .awaited_from
        .store(receiver.to_u64(), Ordering::Relaxed);
    Ok(())
}

/// Owes `call` again: its answer, settled to be sent, was not delivered
/// (refused by a mailbox already past its capacity, or waiting for room
/// there), so the caller is still owed one, if only the notice at the end.
pub(crate) fn owe_again(process: &Process, call: OwedCall) {
    let mut slot = process.lock_mailbox();
    // A closed mailbox has answered what it owed already.
    if !process.alive.load(Ordering::Acquire) {
        return;
    }
    if slot.owed.len() >= MAX_OWED_CALLS {
        slot.owed.pop_front();
    }
    slot.owed.push_back(call);
    process.owes_calls.store(true, Ordering::Relaxed);
}

/// Puts back into `process`'s mailbox, ahead of what came since, the
/// message held for it beside the mailbox (a lent call's answer to its
/// lender, see `syscalls::ipc`), before anything could lose it: the
/// process is about to look at its mailbox another way, to pass a
/// checkpoint, or to end. A closed mailbox (the process is gone) reports
/// it to its sender instead.
pub(crate) fn put_back(kernel: &KernelShared, process: &Process, message: Message) {
    {
        let mut slot = process.lock_mailbox();
        if process.alive.load(Ordering::Acquire) {
            slot.mailbox.put_back(message);
            return;
        }
    }
    kernel.report_failure(&message.header, ErrorCode::NO_SUCH_PROCESS);
}

/// What [`take`] found.
#[derive(Debug)]
pub(crate) enum Taken {
    /// Nothing passes the filter.
    Nothing,
    /// The first match does not fit; it stays queued.
    TooLarge(Header, usize),
    /// The first match did not fit and was removed (`discard_unfit`).
    Discarded(Header),
    /// The message, now out of the mailbox.
    Message(Message),
    /// Nothing was taken: `halt` said so.
    Halted,
}

/// Takes every message out of the mailbox of a process that has ended,
/// without reporting them: they move to its same-state restart. The
/// mailbox closes in the same lock hold, so nothing can be queued in it
/// between the two and then be failed back instead of moving
/// ([`close_mailbox`] later only releases blocked senders).
pub(crate) fn take_all(process: &Process) -> Vec<Message> {
    let mut slot = process.lock_mailbox();
    process.alive.store(false, Ordering::Release);
    slot.close();
    slot.mailbox.drain()
}

/// Empties the mailbox of a process that has ended: every message left is
/// reported to its sender, every call it took and did not answer is
/// answered with a notice (its caller waits for it), and every blocked
/// sender is woken (its retry fails with `NO_SUCH_PROCESS`). Returns how
/// many messages it did not deliver: those left and those its overflow
/// mode dropped, counted in the hold that closes it.
pub(crate) fn close_mailbox(kernel: &KernelShared, process: &Process) -> u64 {
    let (left, blocked, dropped, owed) = {
        let mut slot = process.lock_mailbox();
        process.alive.store(false, Ordering::Release);
        slot.close();
        let left = slot.mailbox.drain();
        let blocked: Vec<_> = slot.blocked_senders.drain(..).collect();
        let owed = std::mem::take(&mut slot.owed);
        process.owes_calls.store(false, Ordering::Relaxed);
        // Read in the same hold that closes it: nothing is dropped after.
        (left, blocked, slot.mailbox.dropped(), owed)
    };
    for waker in blocked {
        waker.wake();
    }
    for message in &left {
        kernel.report_failure(&message.header, ErrorCode::NO_SUCH_PROCESS);
    }
    for call in owed {
        // The call as its caller sent it: the notice goes to the caller,
        // with the call's sequence as correlation.
        let header = Header {
            priority: MessagePriority::MAX,
            flags: Flags::CALL,
            message_type: call.message_type,
            source: call.caller,
            target: process.pid,
            sequence: call.sequence,
            timestamp: 0,
            correlation: 0,
        };
        kernel.report_failure(&header, ErrorCode::NO_SUCH_PROCESS);
    }
    left.len() as u64 + dropped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::message_router::{Mailbox, OverflowMode};
    use estalogic_abi::types::Priority;

    fn call_from(caller: u32, sequence: u64) -> Header {
        Header {
            priority: MessagePriority::MAX,
            flags: Flags::CALL,
            message_type: MessageType(1),
            source: Pid::new(caller, 1),
            target: Pid::new(1, 1),
            sequence,
            timestamp: 0,
            correlation: 0,
        }
    }

    #[test]
    fn owed_calls_are_settled_by_their_reply_and_bounded_oldest_first() {
        let process = Process::new(
            Pid::new(1, 1),
            "p".into(),
            Priority::Normal,
            Mailbox::new(4, OverflowMode::NotifySender),
            true,
        );
        for sequence in 0..MAX_OWED_CALLS as u64 + 2 {
            owe(
                &process,
                &mut process.lock_mailbox(),
                &call_from(2, sequence),
            );
        }
        assert!(process.owes_calls.load(Ordering::Relaxed));
        {
            let slot = process.lock_mailbox();
            assert_eq!(slot.owed.len(), MAX_OWED_CALLS);
            assert_eq!(slot.owed[0].sequence, 2, "the two oldest were forgotten");
        }
        // A reply to another caller, or with another correlation, settles
        // nothing.
        assert_eq!(settle(&process, Pid::new(3, 1), 5), None);
        assert_eq!(settle(&process, Pid::new(2, 1), 0), None);
        assert_eq!(process.lock_mailbox().owed.len(), MAX_OWED_CALLS);
        for sequence in 2..MAX_OWED_CALLS as u64 + 2 {
            let call = settle(&process, Pid::new(2, 1), sequence);
            assert_eq!(call.map(|c| c.sequence), Some(sequence), "was owed");
        }
        assert!(process.lock_mailbox().owed.is_empty());
        assert_eq!(
            settle(&process, Pid::new(2, 1), 2),
            None,
            "answered already"
        );
        assert!(!process.owes_calls.load(Ordering::Relaxed), "nothing owed");
        // Owed again (its answer was refused): settled by the next reply.
        let call = OwedCall {
            caller: Pid::new(2, 1),
            sequence: 7,
            message_type: MessageType(1),
        };
        owe_again(&process, call);
        assert!(process.owes_calls.load(Ordering::Relaxed));
        assert_eq!(settle(&process, Pid::new(2, 1), 7), Some(call));
    }
}
