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
        if sdk::reply(&request.header, MessageType::ACCRUAL_RESPONSE, &(n * 2).to_le_bytes())
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
    if sdk::cap_delegate(mine, delegatee, Rights::WRITE | Rights::CREATE, None, None, "victim")
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
    let handle = Handle(u32::from_le_bytes(message.payload.try_into().unwrap_or([0; 4])));
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
        match sdk::receive_with(Some(MessageType::EXIT_NOTIFICATION), Wait::Millis(300), &mut buffer) {
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
        match sdk::receive_with(Some(MessageType::PONG), Wait::Millis(3_600_000), &mut buffer) {
            Ok(reply) if reply.payload == round.to_le_bytes() => {}
            _ => return 2,
        }
    }
    let _ = sdk::send(pong, MessageType::PING, &[]);
    0
}
