//! Guest test programs. Each exported function is the entry point of one
//! process in a host test (`tests/all`); manifests load this module under
//! several names with different entry points. Exit code 0 means the
//! behaviour held; any other code names what went wrong.
#![no_std]

use estalogic_sdk::abi::{ResourceKind, Rights};
use estalogic_sdk::{self as sdk, ErrorCode, Flags, Handle, MessagePriority, MessageType, Wait};

/// Messages the back-pressure pair exchanges.
const FLOOD: u32 = 5_000;
/// Requests the request/reply pair exchanges.
const REQUESTS: u64 = 100;
const DATA: MessageType = MessageType(0x1001);
const STOP: MessageType = MessageType(0x1002);

fn find(name: &str) -> sdk::Pid {
    match sdk::lookup(name) {
        Ok(pid) => pid,
        Err(_) => sdk::exit(90),
    }
}

/// Sends [`FLOOD`] numbered messages to `sink` as fast as it can. With a
/// `block_sender` mailbox every send must succeed (the sender blocks
/// instead of failing).
#[unsafe(no_mangle)]
pub extern "C" fn flood() -> i32 {
    let sink = find("sink");
    for n in 0..FLOOD {
        if let Err(code) = sdk::send(sink, DATA, &n.to_le_bytes()) {
            sdk::log!("flood: send {} failed: {}", n, code);
            return 1;
        }
    }
    0
}

/// Receives [`FLOOD`] messages slowly and checks none is lost or out of
/// order.
#[unsafe(no_mangle)]
pub extern "C" fn slow_sink() -> i32 {
    let mut buffer = [0u8; 4];
    for expected in 0..FLOOD {
        // Give the sender time to fill the mailbox.
        if expected % 64 == 0 {
            for _ in 0..4 {
                sdk::yield_now();
            }
        }
        let Ok(message) = sdk::receive_with(Some(DATA), Wait::Millis(10_000), &mut buffer) else {
            return 1;
        };
        let got = u32::from_le_bytes(message.payload.try_into().unwrap_or([0xFF; 4]));
        if got != expected {
            sdk::log!("slow_sink: expected {} got {}", expected, got);
            return 2;
        }
    }
    0
}

/// Calls `responder` [`REQUESTS`] times and checks every answer.
#[unsafe(no_mangle)]
pub extern "C" fn requester() -> i32 {
    let responder = find("responder");
    let mut buffer = [0u8; 8];
    for n in 0..REQUESTS {
        let Ok(answer) = sdk::call(
            responder,
            MessageType::ACCRUAL_REQUEST,
            &n.to_le_bytes(),
            Wait::Millis(10_000),
            &mut buffer,
        ) else {
            return 1;
        };
        if !answer.header.flags.contains(Flags::REPLY)
            || answer.header.message_type != MessageType::ACCRUAL_RESPONSE
            || answer.payload != (n * 2).to_le_bytes()
        {
            return 2;
        }
    }
    let _ = sdk::send(responder, STOP, &[]);
    0
}

/// Answers ACCRUAL_REQUESTs with twice their number until STOP.
#[unsafe(no_mangle)]
pub extern "C" fn responder() -> i32 {
    let mut buffer = [0u8; 8];
    loop {
        let Ok(request) = sdk::receive(&mut buffer) else {
            return 1;
        };
        if request.header.message_type == STOP {
            return 0;
        }
        let n = u64::from_le_bytes(request.payload.try_into().unwrap_or([0; 8]));
        if sdk::reply(
            &request.header,
            MessageType::ACCRUAL_RESPONSE,
            &(n * 2).to_le_bytes(),
        )
        .is_err()
        {
            return 2;
        }
    }
}

/// Sends one message asking for an acknowledgement and waits for it.
#[unsafe(no_mangle)]
pub extern "C" fn ack_sender() -> i32 {
    let receiver = find("ack-receiver");
    let Ok(sequence) = sdk::send_with(
        receiver,
        DATA,
        MessagePriority::default(),
        Flags::ACK_REQUESTED,
        b"hello",
    ) else {
        return 1;
    };
    let mut buffer = [0u8; 8];
    match sdk::receive_reply(sequence, Wait::Millis(10_000), &mut buffer) {
        Ok(ack) if ack.header.flags.contains(Flags::ACK) && ack.header.source == receiver => 0,
        Ok(_) => 2,
        Err(_) => 3,
    }
}

/// Receives one message (the kernel acknowledges it) and exits.
#[unsafe(no_mangle)]
pub extern "C" fn ack_receiver() -> i32 {
    let mut buffer = [0u8; 8];
    match sdk::receive(&mut buffer) {
        Ok(message) if message.payload == b"hello" => 0,
        _ => 1,
    }
}

/// Fills a `drop_newest` mailbox of capacity 1 and checks the kernel
/// reports the dropped message back with MESSAGE_DROPPED.
#[unsafe(no_mangle)]
pub extern "C" fn drop_reporter() -> i32 {
    let sink = find("full-sink");
    if sdk::send(sink, DATA, b"kept").is_err() {
        return 1;
    }
    let Ok(dropped) = sdk::send(sink, DATA, b"dropped") else {
        return 2;
    };
    let mut buffer = [0u8; 32];
    match sdk::receive_reply(dropped, Wait::Millis(10_000), &mut buffer) {
        Err(code) if code == ErrorCode::MESSAGE_DROPPED => 0,
        Err(_) => 3,
        Ok(_) => 4,
    }
}

/// Waits for a message type nobody sends, so everything else piles up.
#[unsafe(no_mangle)]
pub extern "C" fn full_sink() -> i32 {
    let mut buffer = [0u8; 8];
    match sdk::receive_with(Some(STOP), Wait::Forever, &mut buffer) {
        Ok(_) => 0,
        Err(_) => 1,
    }
}

/// Broadcasts one PING and expects three listeners to accept it.
#[unsafe(no_mangle)]
pub extern "C" fn broadcaster() -> i32 {
    // Let the listeners start first.
    for _ in 0..8 {
        sdk::yield_now();
    }
    match sdk::broadcast(MessageType::PING, b"all") {
        Ok(3) => 0,
        Ok(n) => 10 + n as i32,
        Err(_) => 1,
    }
}

/// Receives one broadcast PING.
#[unsafe(no_mangle)]
pub extern "C" fn listener() -> i32 {
    let mut buffer = [0u8; 8];
    match sdk::receive_with(Some(MessageType::PING), Wait::Millis(10_000), &mut buffer) {
        Ok(message)
            if message.payload == b"all" && message.header.flags.contains(Flags::BROADCAST) =>
        {
            0
        }
        _ => 1,
    }
}

/// Waits for STOP, then exits, leaving everything else unread.
#[unsafe(no_mangle)]
pub extern "C" fn leaver() -> i32 {
    let mut buffer = [0u8; 8];
    match sdk::receive_with(Some(STOP), Wait::Forever, &mut buffer) {
        Ok(_) => 0,
        Err(_) => 1,
    }
}

/// Queues three messages at `leaver`, tells it to stop, and checks the
/// kernel reports each unread message back with NO_SUCH_PROCESS.
#[unsafe(no_mangle)]
pub extern "C" fn abandoned_sender() -> i32 {
    let leaver = find("leaver");
    let mut sequences = [0u64; 3];
    for (n, sequence) in sequences.iter_mut().enumerate() {
        match sdk::send(leaver, DATA, &[n as u8]) {
            Ok(s) => *sequence = s,
            Err(_) => return 1,
        }
    }
    if sdk::send(leaver, STOP, &[]).is_err() {
        return 2;
    }
    let mut buffer = [0u8; 32];
    for sequence in sequences {
        match sdk::receive_reply(sequence, Wait::Millis(10_000), &mut buffer) {
            Err(code) if code == ErrorCode::NO_SUCH_PROCESS => {}
            _ => return 3,
        }
    }
    0
}

const HANDLE: MessageType = MessageType(0x1003);
const USED: MessageType = MessageType(0x1004);
const REVOKED: MessageType = MessageType(0x1005);
const DONE: MessageType = MessageType(0x1006);

/// Names handles it was never given: every capability syscall refuses.
#[unsafe(no_mangle)]
pub extern "C" fn forger() -> i32 {
    let mut buffer = [0u8; 128];
    if sdk::cap_inspect(Handle(9_999), &mut buffer).err() != Some(ErrorCode::INVALID_HANDLE) {
        return 1;
    }
    let me = sdk::self_pid();
    if sdk::cap_delegate(Handle(9_999), me, Rights::READ, None, None, "").err()
        != Some(ErrorCode::INVALID_HANDLE)
    {
        return 2;
    }
    if sdk::cap_revoke(Handle(0), true).err() != Some(ErrorCode::INVALID_HANDLE) {
        return 3;
    }
    0
}

fn channel_write_handle() -> Option<Handle> {
    let mut handles = [Handle(0); 16];
    let count = sdk::cap_handles(&mut handles).ok()?;
    let mut buffer = [0u8; 256];
    handles[..count.min(16)].iter().copied().find(|handle| {
        matches!(sdk::cap_inspect(*handle, &mut buffer), Ok((record, _))
            if record.resource() == Some(ResourceKind::Channel) && record.rights.contains(Rights::WRITE))
    })
}

/// Delegates a send-to-`victim` capability to `delegatee`, lets it use it,
/// revokes it, and collects the delegatee's verdict.
#[unsafe(no_mangle)]
pub extern "C" fn delegator() -> i32 {
    let delegatee = find("delegatee");
    let victim = find("victim");
    let Some(mine) = channel_write_handle() else {
        return 1;
    };
    let Ok(given) = sdk::cap_delegate(mine, delegatee, Rights::WRITE, None, None, "victim") else {
        return 2;
    };
    // Widening is refused: the copy may not carry rights the source lacks.
    if sdk::cap_delegate(
        mine,
        delegatee,
        Rights::WRITE | Rights::CREATE,
        None,
        None,
        "victim",
    )
    .err()
        != Some(ErrorCode::PERMISSION_DENIED)
    {
        return 3;
    }
    if sdk::send(delegatee, HANDLE, &given.0.to_le_bytes()).is_err() {
        return 4;
    }
    let mut buffer = [0u8; 8];
    if sdk::receive_with(Some(USED), Wait::Millis(10_000), &mut buffer).is_err() {
        return 5;
    }
    match sdk::cap_revoke(mine, false) {
        Ok(1) => {}
        _ => return 6,
    }
    if sdk::send(delegatee, REVOKED, &[]).is_err() {
        return 7;
    }
    let Ok(done) = sdk::receive_with(Some(DONE), Wait::Millis(10_000), &mut buffer) else {
        return 8;
    };
    let verdict = done.payload.first().copied().unwrap_or(255);
    let _ = sdk::send(victim, STOP, &[]);
    verdict as i32
}

/// Uses a delegated capability, then checks it is dead after revocation.
/// Reports 0 to the delegator when every rule held, else the failed step.
#[unsafe(no_mangle)]
pub extern "C" fn delegatee() -> i32 {
    let delegator = find("delegator");
    let victim = find("victim");
    let mut buffer = [0u8; 256];
    let Ok(message) = sdk::receive_with(Some(HANDLE), Wait::Millis(10_000), &mut buffer) else {
        return 1;
    };
    let handle = Handle(u32::from_le_bytes(
        message.payload.try_into().unwrap_or([0; 4]),
    ));
    let verdict = (|| {
        // The copy is usable: it lets us reach `victim` ...
        if sdk::send(victim, DATA, b"via delegated capability").is_err() {
            return 10;
        }
        // ... and nobody else: its scope is `victim` only.
        if sdk::send(sdk::self_pid(), DATA, &[]).err() != Some(ErrorCode::PERMISSION_DENIED) {
            return 11;
        }
        match sdk::cap_inspect(handle, &mut buffer) {
            Ok((record, scope)) if record.depth == 1 && scope == "names:victim" => {}
            _ => return 12,
        }
        if sdk::send(delegator, USED, &[]).is_err() {
            return 13;
        }
        let mut small = [0u8; 8];
        if sdk::receive_with(Some(REVOKED), Wait::Millis(10_000), &mut small).is_err() {
            return 14;
        }
        // Revoked: unusable, and inspection says so.
        if sdk::send(victim, DATA, b"after revoke").err() != Some(ErrorCode::PERMISSION_DENIED) {
            return 15;
        }
        match sdk::cap_inspect(handle, &mut buffer) {
            Ok((record, _)) if record.revoked => {}
            _ => return 16,
        }
        if sdk::cap_delegate(handle, victim, Rights::WRITE, None, None, "").err()
            != Some(ErrorCode::PERMISSION_DENIED)
        {
            return 17;
        }
        0
    })();
    if sdk::send(delegator, DONE, &[verdict]).is_err() {
        return 2;
    }
    0
}

/// Receives until STOP; counts the DATA it got as its exit code.
#[unsafe(no_mangle)]
pub extern "C" fn victim() -> i32 {
    let mut buffer = [0u8; 64];
    let mut received = 0;
    loop {
        match sdk::receive(&mut buffer) {
            Ok(message) if message.header.message_type == STOP => return received,
            Ok(_) => received += 1,
            Err(_) => return -1,
        }
    }
}

/// A supervisor: counts EXIT_NOTIFICATIONs for traps until 300 ms pass
/// without one; exits with the count (-1 for a malformed notice).
#[unsafe(no_mangle)]
pub extern "C" fn watcher() -> i32 {
    let mut buffer = [0u8; 32];
    let mut traps = 0;
    loop {
        match sdk::receive_with(
            Some(MessageType::EXIT_NOTIFICATION),
            Wait::Millis(300),
            &mut buffer,
        ) {
            Ok(message) => {
                if message.header.source != sdk::Pid::KERNEL {
                    return -2;
                }
                match sdk::abi::messages::ExitNotice::decode(message.payload) {
                    Some(notice) if notice.kind == 1 => traps += 1,
                    Some(_) => {}
                    None => return -1,
                }
            }
            Err(_) => return traps,
        }
    }
}

/// Like `ping`, but every receive has a one-hour timeout that never fires:
/// 10,000 round trips with `pong`.
#[unsafe(no_mangle)]
pub extern "C" fn timed_ping() -> i32 {
    let pong = find("pong");
    let mut buffer = [0u8; 8];
    for round in 0..10_000u64 {
        if sdk::send(pong, MessageType::PING, &round.to_le_bytes()).is_err() {
            return 1;
        }
        match sdk::receive_with(
            Some(MessageType::PONG),
            Wait::Millis(3_600_000),
            &mut buffer,
        ) {
            Ok(reply) if reply.payload == round.to_le_bytes() => {}
            _ => return 2,
        }
    }
    let _ = sdk::send(pong, MessageType::PING, &[]);
    0
}

// ---------------------------------------------------------------------
// SDK edges (tests/all/sdk_edges.rs, from the sixteenth probe round).
// Each returns 0 when the SDK did what its docs say, else a code naming
// the step that did not.
// ---------------------------------------------------------------------

/// A payload larger than `hpong`'s 64-byte inbox: the kernel refuses it
/// with a `DELIVERY_FAILURE` notice, code `BUFFER_TOO_SMALL`.
const TOO_BIG_FOR_HPONG: [u8; 100] = [7; 100];

/// `receive_with` docs: a kernel notice "comes as a message with the
/// `DELIVERY_FAILURE` flag", never as the `BUFFER_TOO_SMALL` of a message
/// left queued. A request too large for `hpong`'s inbox comes back so, with
/// the reason in its payload, and nothing is left to retry.
#[unsafe(no_mangle)]
pub extern "C" fn sdk_receive_notice_retry() -> i32 {
    use sdk::abi::messages::DeliveryFailure;
    let hpong = find("hpong");
    let Ok(sequence) = sdk::send(hpong, MessageType::PING, &TOO_BIG_FOR_HPONG) else {
        return 1;
    };
    let mut small = [0u8; 64];
    match sdk::receive_with(None, Wait::Millis(10_000), &mut small) {
        Ok(message)
            if message.header.flags.contains(Flags::DELIVERY_FAILURE)
                && message.header.correlation == sequence =>
        {
            match DeliveryFailure::decode(message.payload) {
                Some(notice) if notice.code == ErrorCode::BUFFER_TOO_SMALL => {}
                _ => return 2,
            }
        }
        Ok(_) => return 3,
        Err(_) => return 4,
    }
    match sdk::receive_with(None, Wait::NoWait, &mut small) {
        Err(ErrorCode::TIMEOUT) => 0,
        _ => 5,
    }
}

/// `receive_reply` docs: a notice is `Err` with its code, and one about a
/// request too large for its receiver's inbox is `MESSAGE_DROPPED`, so
/// that `BUFFER_TOO_SMALL` means only a reply left queued.
#[unsafe(no_mangle)]
pub extern "C" fn sdk_receive_reply_notice_retry() -> i32 {
    let hpong = find("hpong");
    let Ok(sequence) = sdk::send(hpong, MessageType::PING, &TOO_BIG_FOR_HPONG) else {
        return 1;
    };
    let mut small = [0u8; 64];
    match sdk::receive_reply(sequence, Wait::Millis(10_000), &mut small) {
        Err(ErrorCode::MESSAGE_DROPPED) => {}
        Ok(_) => return 2,
        Err(_) => return 3,
    }
    let mut large = [0u8; 4096];
    match sdk::receive_reply(sequence, Wait::NoWait, &mut large) {
        Err(ErrorCode::TIMEOUT) => 0,
        _ => 4,
    }
}

/// A reply too large for `receive_reply`'s buffer: `BUFFER_TOO_SMALL`, the
/// reply stays queued and a larger buffer gets it (the documented case).
#[unsafe(no_mangle)]
pub extern "C" fn sdk_receive_reply_small_buffer() -> i32 {
    let echo = find("echo");
    let Ok(sequence) = sdk::send(echo, DATA, &[9u8; 100]) else {
        return 1;
    };
    let mut small = [0u8; 8];
    match sdk::receive_reply(sequence, Wait::Millis(10_000), &mut small) {
        Err(ErrorCode::BUFFER_TOO_SMALL) => {}
        _ => return 2,
    }
    // peek shows what is queued, with its length.
    match sdk::peek(None) {
        Ok((header, 100)) if header.correlation == sequence && header.source == echo => {}
        _ => return 3,
    }
    let mut large = [0u8; 128];
    match sdk::receive_reply(sequence, Wait::Millis(500), &mut large) {
        Ok(reply)
            if reply.payload == [9u8; 100]
                && reply.header.flags.contains(Flags::REPLY)
                && reply.header.correlation == sequence =>
        {
            0
        }
        _ => 4,
    }
}

/// `call` to `hpong` with a request its inbox cannot hold is
/// `MESSAGE_DROPPED`; `call` to `echo` with a reply larger than the buffer
/// is `BUFFER_TOO_SMALL`, and (`call` docs) `peek` gives the queued reply's
/// header and `receive_reply` takes it with a larger buffer.
#[unsafe(no_mangle)]
pub extern "C" fn sdk_call_buffer_too_small_is_ambiguous() -> i32 {
    let hpong = find("hpong");
    let echo = find("echo");
    let mut large = [0u8; 4096];
    match sdk::call(
        hpong,
        MessageType::PING,
        &TOO_BIG_FOR_HPONG,
        Wait::Millis(10_000),
        &mut large,
    ) {
        Err(ErrorCode::MESSAGE_DROPPED) => {}
        _ => return 1,
    }
    let mut small = [0u8; 8];
    match sdk::call(echo, DATA, &[3u8; 100], Wait::Millis(10_000), &mut small) {
        Err(ErrorCode::BUFFER_TOO_SMALL) => {}
        _ => return 2,
    }
    let Ok((header, 100)) = sdk::peek(None) else {
        return 3;
    };
    match sdk::receive_reply(header.correlation, Wait::NoWait, &mut large) {
        Ok(reply) if reply.payload == [3u8; 100] && reply.header.source == echo => 0,
        _ => 4,
    }
}

/// `cap_handles` docs: "Fills `out` with this process's capability
/// handles; returns how many it holds in all (which may be more than
/// fit)." With 70 more handles (copies delegated to itself) and room for
/// 128, every one of the first `total` slots must be filled.
#[unsafe(no_mangle)]
pub extern "C" fn sdk_cap_handles_many() -> i32 {
    let me = sdk::self_pid();
    let Some(mine) = channel_write_handle() else {
        return 1;
    };
    for _ in 0..70 {
        if sdk::cap_delegate(mine, me, Rights::WRITE, None, None, "").is_err() {
            return 2;
        }
    }
    const UNSET: Handle = Handle(u32::MAX);
    let mut out = [UNSET; 128];
    let Ok(total) = sdk::cap_handles(&mut out) else {
        return 3;
    };
    if total < 71 || total > out.len() {
        return 4;
    }
    match out[..total].iter().position(|h| *h == UNSET) {
        None => 0,
        Some(first) => {
            sdk::log!("cap_handles: total {} but slot {} not filled", total, first);
            5
        }
    }
}

/// `now_nanos` docs: "`PERMISSION_DENIED` without the `time:read`
/// capability" (it turned the negative code into a clock reading).
#[unsafe(no_mangle)]
pub extern "C" fn sdk_clock_without_time_read() -> i32 {
    match sdk::now_nanos() {
        Err(ErrorCode::PERMISSION_DENIED) => 0,
        _ => 1,
    }
}

/// Calls of [`on_sdk_probe`] so far.
static SDK_CALLS: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

/// A handler (entry point `sdk_handler`): its first message must be the
/// kernel's `STARTED` (source pid 0, no payload, sequence 0); it then sends
/// `hpong` a request too large for its inbox, and its second message must
/// be the kernel's `DELIVERY_FAILURE` notice (code `BUFFER_TOO_SMALL`, the
/// target and type of the refused request) as a message with the flag.
/// Ends with exit code 42 when all held (`Next::Exit(42)`), else 10+.
fn on_sdk_probe(message: sdk::Message<'_>) -> sdk::Next {
    use core::sync::atomic::Ordering;
    use sdk::abi::messages::DeliveryFailure;
    let header = message.header;
    match SDK_CALLS.fetch_add(1, Ordering::Relaxed) {
        0 => {
            if header.message_type != MessageType::STARTED
                || header.source != sdk::Pid::KERNEL
                || header.sequence != 0
                || !message.payload.is_empty()
            {
                return sdk::Next::Exit(10);
            }
            let hpong = find("hpong");
            match sdk::send(hpong, MessageType::PING, &TOO_BIG_FOR_HPONG) {
                Ok(_) => sdk::Next::Wait,
                Err(_) => sdk::Next::Exit(11),
            }
        }
        1 => {
            if !header.flags.contains(Flags::DELIVERY_FAILURE) || header.source != sdk::Pid::KERNEL
            {
                return sdk::Next::Exit(12);
            }
            match DeliveryFailure::decode(message.payload) {
                Some(notice)
                    if notice.code == ErrorCode::BUFFER_TOO_SMALL
                        && notice.message_type == MessageType::PING
                        && Some(notice.target) == sdk::lookup("hpong").ok() =>
                {
                    sdk::Next::Exit(42)
                }
                _ => sdk::Next::Exit(13),
            }
        }
        _ => sdk::Next::Exit(14),
    }
}

sdk::handler!(sdk_handler, on_sdk_probe, 16);

/// Argument edges that must map to the documented results: empty slices,
/// `Wait::NoWait`, a handle past `i32::MAX`, a buffer too short for a
/// capability record, an over-long delegated scope, a closed handle.
#[unsafe(no_mangle)]
pub extern "C" fn sdk_argument_edges() -> i32 {
    let me = sdk::self_pid();
    let mut empty: [u8; 0] = [];
    // Nothing queued: NoWait times out, peek finds nothing.
    if sdk::receive_with(None, Wait::NoWait, &mut empty).err() != Some(ErrorCode::TIMEOUT) {
        return 1;
    }
    if sdk::peek(None).err() != Some(ErrorCode::NOT_FOUND) {
        return 2;
    }
    // An empty payload into an empty buffer.
    let Ok(sequence) = sdk::send(me, DATA, &[]) else {
        return 3;
    };
    match sdk::receive_with(Some(DATA), Wait::NoWait, &mut empty) {
        Ok(message) if message.payload.is_empty() && message.header.sequence == sequence => {}
        _ => return 4,
    }
    // A one-byte payload into an empty buffer: stays queued.
    if sdk::send(me, DATA, &[1]).is_err() {
        return 5;
    }
    if sdk::receive_with(None, Wait::NoWait, &mut empty).err() != Some(ErrorCode::BUFFER_TOO_SMALL)
    {
        return 6;
    }
    let mut one = [0u8; 1];
    match sdk::receive_with(None, Wait::NoWait, &mut one) {
        Ok(message) if message.payload == [1] => {}
        _ => return 7,
    }
    // Handles past i32::MAX are not handles.
    let mut buffer = [0u8; 256];
    if sdk::cap_inspect(Handle(0x8000_0000), &mut buffer).err() != Some(ErrorCode::INVALID_HANDLE) {
        return 8;
    }
    let Some(mine) = channel_write_handle() else {
        return 9;
    };
    // A buffer shorter than the record.
    if sdk::cap_inspect(mine, &mut buffer[..40]).err() != Some(ErrorCode::BUFFER_TOO_SMALL) {
        return 10;
    }
    match sdk::cap_inspect(mine, &mut buffer) {
        Ok((record, scope)) if record.scope_len as usize == scope.len() => {}
        _ => return 11,
    }
    // A scope over 1,024 bytes.
    let long = [b'a'; 1_025];
    let long = core::str::from_utf8(&long).unwrap_or("");
    if sdk::cap_delegate(mine, me, Rights::WRITE, None, None, long).err()
        != Some(ErrorCode::INVALID_ARGUMENT)
    {
        return 12;
    }
    // A copy with a use limit and expiry far in the future, then closed.
    let Ok(copy) = sdk::cap_delegate(mine, me, Rights::WRITE, Some(u64::MAX), Some(3), "") else {
        return 13;
    };
    match sdk::cap_inspect(copy, &mut buffer) {
        Ok((record, _)) if record.max_uses == Some(3) && record.depth == 1 => {}
        _ => return 14,
    }
    match sdk::cap_close(copy) {
        Ok(1) => {}
        _ => return 15,
    }
    if sdk::cap_inspect(copy, &mut buffer).err() != Some(ErrorCode::INVALID_HANDLE) {
        return 16;
    }
    // cap_handles with no room still counts.
    match sdk::cap_handles(&mut []) {
        Ok(n) if n > 0 => {}
        _ => return 17,
    }
    0
}
