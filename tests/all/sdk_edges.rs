//! The guest SDK at its edges (from the sixteenth probe round): testkit
//! entry points (`sdk_*`) drive one guest SDK API into
//! an edge and exit 0 when it did what its docs say.

use estalogic_kernel::{ExitStatus, Kernel};
use estalogic_tests::{first_exit_then_stop, load_bundled, load_testkit, load_testkit_with};

/// Runs the testkit entry `entry` as `probe` beside the bundled handler
/// services `peers` (each under its own name, entry point `handle`), in
/// deterministic and real-time mode; returns the probe's exit status.
fn probe_status(entry: &str, peers: &[&str]) -> Vec<(bool, ExitStatus)> {
    [true, false]
        .into_iter()
        .map(|deterministic| {
            let mut kernel = Kernel::builder()
                .deterministic(deterministic)
                .build()
                .unwrap();
            for peer in peers {
                load_bundled(&mut kernel, peer, "handle");
            }
            load_testkit(&mut kernel, "probe", entry, "");
            kernel.spawn_all().unwrap();
            let (first, _report) = first_exit_then_stop(kernel);
            assert_eq!(first.module, "probe", "{first:?}");
            (deterministic, first.status)
        })
        .collect()
}

fn assert_probe_passes(entry: &str, peers: &[&str]) {
    for (deterministic, status) in probe_status(entry, peers) {
        assert_eq!(
            status,
            ExitStatus::Exited(0),
            "{entry} (deterministic {deterministic})"
        );
    }
}

#[test]
fn a_notice_taken_by_receive_with_is_a_message_with_its_reason() {
    // 4: the first receive said BUFFER_TOO_SMALL, the retry with a larger
    // buffer timed out: the "message" was a notice, already taken.
    assert_probe_passes("sdk_receive_notice_retry", &["hpong"]);
}

#[test]
fn a_request_too_large_for_its_receiver_is_message_dropped_to_receive_reply() {
    assert_probe_passes("sdk_receive_reply_notice_retry", &["hpong"]);
}

#[test]
fn receive_reply_too_large_stays_queued_and_a_larger_buffer_gets_it() {
    assert_probe_passes("sdk_receive_reply_small_buffer", &["echo"]);
}

#[test]
fn call_buffer_too_small_tells_a_refused_request_from_a_long_reply() {
    assert_probe_passes("sdk_call_buffer_too_small_is_ambiguous", &["hpong", "echo"]);
}

#[test]
fn cap_handles_fills_every_slot_it_counts() {
    let mut kernel = Kernel::builder().deterministic(true).build().unwrap();
    load_testkit(&mut kernel, "probe", "sdk_cap_handles_many", "");
    kernel.spawn_all().unwrap();
    let report = kernel.run();
    assert_eq!(
        report.process("probe").unwrap().status,
        ExitStatus::Exited(0)
    );
}

#[test]
fn now_nanos_without_time_read_is_not_a_clock_reading() {
    for deterministic in [true, false] {
        let mut kernel = Kernel::builder()
            .deterministic(deterministic)
            .build()
            .unwrap();
        load_testkit_with(
            &mut kernel,
            "probe",
            "sdk_clock_without_time_read",
            &[r#""log:write""#],
        );
        kernel.spawn_all().unwrap();
        let report = kernel.run();
        assert_eq!(
            report.process("probe").unwrap().status,
            ExitStatus::Exited(0),
            "deterministic {deterministic}"
        );
    }
}

#[test]
fn a_handler_sees_started_then_its_notice_and_exits_with_its_code() {
    for deterministic in [true, false] {
        let mut kernel = Kernel::builder()
            .deterministic(deterministic)
            .build()
            .unwrap();
        load_bundled(&mut kernel, "hpong", "handle");
        load_testkit(&mut kernel, "probe", "sdk_handler", "");
        kernel.spawn_all().unwrap();
        let (first, _report) = first_exit_then_stop(kernel);
        assert_eq!(first.module, "probe", "{first:?}");
        assert_eq!(
            first.status,
            ExitStatus::Exited(42),
            "deterministic {deterministic}"
        );
    }
}

#[test]
fn argument_edges_map_to_the_documented_results() {
    let mut kernel = Kernel::builder().deterministic(true).build().unwrap();
    load_testkit(&mut kernel, "probe", "sdk_argument_edges", "");
    kernel.spawn_all().unwrap();
    let report = kernel.run();
    assert_eq!(
        report.process("probe").unwrap().status,
        ExitStatus::Exited(0)
    );
}
