//! Lifecycle: the boot's init phases with per-subsystem status, and the
//! kernel loop's states, events and statistics.
//!
//! Plain data: no I/O, no WASM, no threads. Boot code drives a [`Boot`];
//! the kernel loop keeps a [`LoopState`] and feeds [`KernelEvent`]s to
//! [`LoopStats`].
//!
//! # Boot protocol
//!
//! 1. **Phases.** A boot starts in `PreInit` and moves through `CoreInit`,
//!    `DriverInit`, `ServiceInit` and `PostInit` to `Complete`, in that
//!    order, one phase at a time ([`Boot::advance`], or [`Boot::begin`]
//!    naming the phase). Any other move is refused with
//!    [`InitError::OutOfOrder`] and changes nothing.
//! 2. **Subsystems.** Each subsystem reports its state under one name in
//!    the current phase with [`Boot::record`]; reporting again updates it.
//!    A later phase may be planned ahead with `Pending` entries. A phase
//!    already left cannot be written to.
//! 3. **Leaving a phase.** [`Boot::advance`] refuses while a subsystem of
//!    the current phase is still `Pending` ([`InitError::Unfinished`],
//!    nothing changes). If one is `Failed`, the boot moves to
//!    `Failed(reason)` instead, the reason naming the first failed
//!    subsystem and the phase, and the call returns
//!    [`InitError::SubsystemFailed`].
//! 4. **The end.** `Complete` and `Failed` are final: every later call
//!    returns [`InitError::Finished`]. The [`InitReport`] keeps the table of
//!    every subsystem; its `Display` is the readable report, headed
//!    ``init failed in <phase>: subsystem `<name>` — <reason>`` on failure.
//!
//! # Kernel loop states
//!
//! 1. The loop starts `Initializing`, then goes `Running` (or straight to
//!    `ShuttingDown` if boot failed).
//! 2. `Running` and `Pausing` alternate; either may go `ShuttingDown`.
//! 3. `ShuttingDown` ends in `Stopped`, which is final.
//!
//! [`LoopState::transition`] refuses every other move, staying put.

use std::fmt;

/// A phase of the boot, in order; `Complete` and `Failed` are final.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum InitPhase {
    /// Before anything: configuration and logging.
    PreInit,
    /// Kernel core: process table, scheduler, message router.
    CoreInit,
    /// Drivers: clock, file system, network, database.
    DriverInit,
    /// System services and app modules.
    ServiceInit,
    /// After services are up: preloads, warm caches, announcements.
    PostInit,
    /// The boot finished; the kernel runs.
    Complete,
    /// The boot stopped; the reason names the subsystem and phase.
    Failed(String),
}

impl InitPhase {
    /// The phases in order, `PreInit` to `Complete`.
    pub const ORDER: [InitPhase; 6] = [
        InitPhase::PreInit,
        InitPhase::CoreInit,
        InitPhase::DriverInit,
        InitPhase::ServiceInit,
        InitPhase::PostInit,
        InitPhase::Complete,
    ];

    /// The phase after this one; `None` for `Complete` and `Failed`.
    pub fn next(&self) -> Option<InitPhase> {
        let at = self.position()?;
        InitPhase::ORDER.get(at + 1).cloned()
    }

    /// Its position in [`InitPhase::ORDER`]; `None` for `Failed`.
    pub fn position(&self) -> Option<usize> {
        InitPhase::ORDER.iter().position(|phase| phase == self)
    }

    /// True for `Complete` and `Failed`.
    pub fn is_final(&self) -> bool {
        matches!(self, InitPhase::Complete | InitPhase::Failed(_))
    }

    /// The variant's name.
    pub fn name(&self) -> &'static str {
        match self {
            InitPhase::PreInit => "PreInit",
            InitPhase::CoreInit => "CoreInit",
            InitPhase::DriverInit => "DriverInit",
            InitPhase::ServiceInit => "ServiceInit",
            InitPhase::PostInit => "PostInit",
            InitPhase::Complete => "Complete",
            InitPhase::Failed(_) => "Failed",
        }
    }
}

impl fmt::Display for InitPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InitPhase::Failed(reason) => write!(f, "Failed ({reason})"),
            other => f.write_str(other.name()),
        }
    }
}

/// How far one subsystem got.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SubsystemState {
    /// Not started or not finished.
    Pending,
    /// Started.
    Ok,
    /// Could not start; the reason.
    Failed(String),
    /// Deliberately not started; why.
    Skipped(String),
}

impl fmt::Display for SubsystemState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubsystemState::Pending => f.write_str("pending"),
            SubsystemState::Ok => f.write_str("ok"),
            SubsystemState::Failed(reason) => write!(f, "FAILED: {reason}"),
            SubsystemState::Skipped(why) => write!(f, "skipped: {why}"),
        }
    }
}

/// One row of the boot report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubsystemStatus {
    /// The subsystem's name, unique in a boot.
    pub name: String,
    /// The phase it starts in.
    pub phase: InitPhase,
    /// How far it got.
    pub state: SubsystemState,
    /// Free text for the report (which driver, which directory); may be
    /// empty.
    pub detail: String,
}

/// What [`Boot`] refused, or why the boot failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InitError {
    /// A phase was asked for out of order; nothing changed.
    #[error("init: cannot go to {asked} while in {current}")]
    OutOfOrder {
        /// The boot's phase.
        current: InitPhase,
        /// The phase asked for.
        asked: InitPhase,
    },
    /// A subsystem of the current phase is still pending; nothing changed.
    #[error("init: subsystem `{subsystem}` of {phase} is still pending")]
    Unfinished {
        /// The pending subsystem.
        subsystem: String,
        /// The current phase.
        phase: InitPhase,
    },
    /// A subsystem failed: the boot is now `Failed`.
    #[error("init failed in {phase}: subsystem `{subsystem}` — {reason}")]
    SubsystemFailed {
        /// The first failed subsystem.
        subsystem: String,
        /// The phase it failed in.
        phase: InitPhase,
        /// Its reason.
        reason: String,
    },
    /// A subsystem name was recorded in another phase.
    #[error("init: subsystem `{subsystem}` already belongs to {recorded}, not {asked}")]
    WrongPhase {
        /// The subsystem.
        subsystem: String,
        /// The phase it was recorded in.
        recorded: InitPhase,
        /// The phase given now.
        asked: InitPhase,
    },
    /// The boot is `Complete` or `Failed`; nothing more can happen.
    #[error("init: already finished ({0})")]
    Finished(InitPhase),
}

/// The boot's phase and its table of subsystems, in the order they were
/// first recorded. `Display` gives the readable report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitReport {
    /// Where the boot is, or how it ended.
    pub phase: InitPhase,
    /// Every subsystem recorded.
    pub subsystems: Vec<SubsystemStatus>,
}

impl InitReport {
    /// The first failed subsystem, if any.
    pub fn failure(&self) -> Option<(&SubsystemStatus, &str)> {
        self.subsystems.iter().find_map(|s| match &s.state {
            SubsystemState::Failed(reason) => Some((s, reason.as_str())),
            _ => None,
        })
    }

    /// The subsystem recorded under `name`.
    pub fn get(&self, name: &str) -> Option<&SubsystemStatus> {
        self.subsystems.iter().find(|s| s.name == name)
    }
}

impl fmt::Display for InitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.phase, self.failure()) {
            (InitPhase::Failed(_), Some((status, reason))) => writeln!(
                f,
                "init failed in {}: subsystem `{}` — {reason}",
                status.phase, status.name
            )?,
            (InitPhase::Failed(reason), None) => writeln!(f, "init failed: {reason}")?,
            (InitPhase::Complete, _) => writeln!(f, "init complete")?,
            (phase, _) => writeln!(f, "init in {phase}")?,
        }
        let name_width = self
            .subsystems
            .iter()
            .map(|s| s.name.len())
            .max()
            .unwrap_or(0);
        for status in &self.subsystems {
            write!(
                f,
                "  {:<11} {:<name_width$}  {}",
                status.phase.name(),
                status.name,
                status.state
            )?;
            if !status.detail.is_empty() {
                write!(f, " ({})", status.detail)?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// The boot state machine; see the module docs.
#[derive(Clone, Debug)]
pub struct Boot {
    report: InitReport,
}

impl Default for Boot {
    fn default() -> Self {
        Boot::new()
    }
}

impl Boot {
    /// A boot in `PreInit` with no subsystems.
    pub fn new() -> Self {
        Boot {
            report: InitReport {
                phase: InitPhase::PreInit,
                subsystems: Vec::new(),
            },
        }
    }

    /// The current phase.
    pub fn phase(&self) -> &InitPhase {
        &self.report.phase
    }

    /// The phase and per-subsystem table.
    pub fn report(&self) -> &InitReport {
        &self.report
    }

    /// True once the boot reached `Complete`.
    pub fn is_complete(&self) -> bool {
        self.report.phase == InitPhase::Complete
    }

    /// True once the boot is `Failed`.
    pub fn is_failed(&self) -> bool {
        matches!(self.report.phase, InitPhase::Failed(_))
    }

    fn check_running(&self) -> Result<(), InitError> {
        if self.report.phase.is_final() {
            return Err(InitError::Finished(self.report.phase.clone()));
        }
        Ok(())
    }

    /// Enters `phase`: the current phase (nothing to do) or the next one
    /// (as [`Boot::advance`]). See protocol steps 1 and 3.
    pub fn begin(&mut self, phase: InitPhase) -> Result<(), InitError> {
        self.check_running()?;
        if phase == self.report.phase {
            return Ok(());
        }
        if self.report.phase.next().as_ref() == Some(&phase) {
            return self.advance().map(|_| ());
        }
        Err(InitError::OutOfOrder {
            current: self.report.phase.clone(),
            asked: phase,
        })
    }

    /// Records the state of subsystem `name` starting in `phase`: the
    /// current phase, or a later one if `state` is `Pending`. See protocol
    /// step 2.
    pub fn record(
        &mut self,
        name: &str,
        phase: InitPhase,
        state: SubsystemState,
    ) -> Result<(), InitError> {
        self.record_with_detail(name, phase, state, "")
    }

    /// [`Boot::record`] with free text for the report; an empty `detail`
    /// keeps the one recorded before.
    pub fn record_with_detail(
        &mut self,
        name: &str,
        phase: InitPhase,
        state: SubsystemState,
        detail: &str,
    ) -> Result<(), InitError> {
        self.check_running()?;
        let current = self.report.phase.position().expect("not final");
        let asked = phase.position();
        let allowed = match asked {
            Some(at) if phase != InitPhase::Complete => {
                at == current || (at > current && state == SubsystemState::Pending)
            }
            _ => false,
        };
        if !allowed {
            return Err(InitError::OutOfOrder {
                current: self.report.phase.clone(),
                asked: phase,
            });
        }
        match self.report.subsystems.iter_mut().find(|s| s.name == name) {
            Some(existing) if existing.phase != phase => Err(InitError::WrongPhase {
                subsystem: name.to_string(),
                recorded: existing.phase.clone(),
                asked: phase,
            }),
            Some(existing) => {
                existing.state = state;
                if !detail.is_empty() {
                    existing.detail = detail.to_string();
                }
                Ok(())
            }
            None => {
                self.report.subsystems.push(SubsystemStatus {
                    name: name.to_string(),
                    phase,
                    state,
                    detail: detail.to_string(),
                });
                Ok(())
            }
        }
    }

    /// Leaves the current phase for the next one and returns it, or fails
    /// the boot if a subsystem of this phase failed. See protocol step 3.
    pub fn advance(&mut self) -> Result<InitPhase, InitError> {
        self.check_running()?;
        let phase = self.report.phase.clone();
        let in_phase = || self.report.subsystems.iter().filter(|s| s.phase == phase);
        let failed = in_phase().find_map(|s| match &s.state {
            SubsystemState::Failed(reason) => Some((s.name.clone(), reason.clone())),
            _ => None,
        });
        if let Some((subsystem, reason)) = failed {
            self.report.phase = InitPhase::Failed(format!(
                "subsystem `{subsystem}` failed in {phase}: {reason}"
            ));
            return Err(InitError::SubsystemFailed {
                subsystem,
                phase,
                reason,
            });
        }
        if let Some(pending) = in_phase().find(|s| s.state == SubsystemState::Pending) {
            return Err(InitError::Unfinished {
                subsystem: pending.name.clone(),
                phase,
            });
        }
        let next = phase.next().expect("a phase before Complete");
        self.report.phase = next.clone();
        Ok(next)
    }
}

impl fmt::Display for Boot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.report.fmt(f)
    }
}

/// The kernel loop's state; see the module docs for the legal moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LoopState {
    /// Booting; no process runs yet.
    Initializing,
    /// Scheduling processes.
    Running,
    /// Not dispatching new turns; processes keep their state.
    Pausing,
    /// Stopping every process.
    ShuttingDown,
    /// Done; final.
    Stopped,
}

/// A move the kernel loop's state machine does not allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LoopError {
    /// `from` cannot go to `to`; the state stays `from`.
    #[error("kernel loop: cannot go from {from:?} to {to:?}")]
    IllegalTransition {
        /// The state, unchanged.
        from: LoopState,
        /// The state asked for.
        to: LoopState,
    },
}

impl LoopState {
    /// True if the loop may go from this state to `to`.
    pub fn can_transition(self, to: LoopState) -> bool {
        use LoopState::*;
        matches!(
            (self, to),
            (Initializing, Running | ShuttingDown)
                | (Running, Pausing | ShuttingDown)
                | (Pausing, Running | ShuttingDown)
                | (ShuttingDown, Stopped)
        )
    }

    /// Moves to `to` if that is legal; otherwise stays and says why.
    pub fn transition(&mut self, to: LoopState) -> Result<(), LoopError> {
        if !self.can_transition(to) {
            return Err(LoopError::IllegalTransition { from: *self, to });
        }
        *self = to;
        Ok(())
    }
}

/// Something the kernel loop saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelEvent {
    /// A turn of the loop.
    Tick,
    /// A process started.
    Spawned {
        /// Its pid.
        pid: u64,
        /// Its module.
        module: String,
    },
    /// A process ended.
    Exited {
        /// Its pid.
        pid: u64,
        /// Its module.
        module: String,
        /// Its exit or trap code.
        code: i64,
    },
    /// A message was delivered.
    Message {
        /// The sender's pid.
        from: u64,
        /// The receiver's pid.
        to: u64,
        /// Its message type.
        message_type: u32,
    },
    /// A process made a syscall.
    Syscall {
        /// The caller.
        pid: u64,
        /// The syscall number.
        number: u32,
    },
    /// A driver reported something.
    DriverEvent {
        /// The driver.
        driver: String,
        /// What happened.
        detail: String,
    },
    /// Someone asked the kernel to shut down.
    ShutdownRequested,
    /// A configuration value changed.
    ConfigChanged {
        /// The key that changed.
        key: String,
    },
}

/// How many events of each kind the loop saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoopStats {
    /// [`KernelEvent::Tick`]s.
    pub ticks: u64,
    /// [`KernelEvent::Spawned`]s.
    pub spawned: u64,
    /// [`KernelEvent::Exited`]s.
    pub exited: u64,
    /// [`KernelEvent::Message`]s.
    pub messages: u64,
    /// [`KernelEvent::Syscall`]s.
    pub syscalls: u64,
    /// [`KernelEvent::DriverEvent`]s.
    pub driver_events: u64,
    /// [`KernelEvent::ShutdownRequested`]s.
    pub shutdown_requests: u64,
    /// [`KernelEvent::ConfigChanged`]s.
    pub config_changes: u64,
}

impl LoopStats {
    /// Counts one event.
    pub fn record(&mut self, event: &KernelEvent) {
        let counter = match event {
            KernelEvent::Tick => &mut self.ticks,
            KernelEvent::Spawned { .. } => &mut self.spawned,
            KernelEvent::Exited { .. } => &mut self.exited,
            KernelEvent::Message { .. } => &mut self.messages,
            KernelEvent::Syscall { .. } => &mut self.syscalls,
            KernelEvent::DriverEvent { .. } => &mut self.driver_events,
            KernelEvent::ShutdownRequested => &mut self.shutdown_requests,
            KernelEvent::ConfigChanged { .. } => &mut self.config_changes,
        };
        *counter = counter.saturating_add(1);
    }

    /// Events of every kind.
    pub fn total(&self) -> u64 {
        [
            self.ticks,
            self.spawned,
            self.exited,
            self.messages,
            self.syscalls,
            self.driver_events,
            self.shutdown_requests,
            self.config_changes,
        ]
        .iter()
        .fold(0u64, |sum, n| sum.saturating_add(*n))
    }
}

impl fmt::Display for LoopStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ticks {}, spawned {}, exited {}, messages {}, syscalls {}, \
             driver events {}, shutdown requests {}, config changes {}",
            self.ticks,
            self.spawned,
            self.exited,
            self.messages,
            self.syscalls,
            self.driver_events,
            self.shutdown_requests,
            self.config_changes
        )
    }
}

#[cfg(test)]
mod tests;
