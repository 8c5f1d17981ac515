//! The controller's sweeper: [`crate::kernel::sweep`] on a thread of its own, over the
//! pinned maps, so that a sweep of a million connections never holds up the event loop —
//! health verdicts, neighbour changes, reloads and sync go on while it runs.
//!
//! The event loop decides when (it reads the dataplane clock and what the sweep must know
//! of the tables, and sends one request at a time); the thread sweeps and sends the report
//! back. Sweeps are at least [`SWEEP_INTERVAL`] apart, and further apart when the table is
//! so large that a sweep every interval would cost more than [`SWEEP_CPU_BUDGET`] of a core.

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use tokio::sync::mpsc;

use crate::kernel::maps::Pinned;
use crate::kernel::sweep::{self, Pick, SweepInputs, SweepReport};

/// The shortest time between two sweeps. Between sweeps the counts are kept exact by the
/// dataplane itself; they can drift only by entries that expire without another packet or
/// are evicted by the LRU (fixed at the next sweep, so at most this late), and by state
/// changes racing a sweep's write (fixed at the next).
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(2);
/// The share of one core sweeps may use: a sweep that took `c` of CPU is followed by the
/// next no sooner than `c / SWEEP_CPU_BUDGET` after it started. At a million connections a
/// sweep takes about 0.1 s of CPU, so sweeps come every 5 s or so and counts of connections
/// that expired unseen are corrected that late.
pub const SWEEP_CPU_BUDGET: f64 = 0.02;

/// One sweep to make.
pub struct SweepRequest {
    /// Dataplane time, read before the sweep reads the tables.
    pub now: u64,
    pub inputs: Arc<SweepInputs>,
    pub pick: Option<Box<Pick>>,
}

/// A sweep's result, with the time it was asked for.
pub struct SweepDone {
    pub now: u64,
    pub report: Result<SweepReport>,
}

pub struct Sweeper {
    requests: Option<std::sync::mpsc::Sender<SweepRequest>>,
    thread: Option<JoinHandle<()>>,
    in_flight: bool,
    /// No sweep starts before this.
    next: Instant,
    started: Instant,
}

impl Sweeper {
    /// Starts the thread, with its own handles to the maps pinned at `pin_dir`; reports
    /// arrive on the returned receiver.
    pub fn start(pin_dir: &Path) -> Result<(Sweeper, mpsc::UnboundedReceiver<SweepDone>)> {
        let mut maps = Pinned::open(pin_dir).with_context(|| format!("opening the maps pinned at {} for the sweeper", pin_dir.display()))?;
        let (req_tx, req_rx) = std::sync::mpsc::channel::<SweepRequest>();
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name("drlb-sweep".into())
            .spawn(move || {
                // Ends when the controller drops its sender.
                while let Ok(req) = req_rx.recv() {
                    let report = sweep::sweep(&mut maps, &req.inputs, req.now, req.pick.as_deref());
                    if done_tx.send(SweepDone { now: req.now, report }).is_err() {
                        return;
                    }
                }
            })
            .context("starting the sweeper thread")?;
        let now = Instant::now();
        Ok((Sweeper { requests: Some(req_tx), thread: Some(thread), in_flight: false, next: now, started: now }, done_rx))
    }

    /// Whether a sweep may start now: none running, and the last one's budget spent.
    pub fn ready(&self) -> bool {
        !self.in_flight && Instant::now() >= self.next
    }

    /// Sends the request; false when the thread has ended (it panicked).
    pub fn request(&mut self, req: SweepRequest) -> bool {
        if let Some(tx) = &self.requests
            && tx.send(req).is_ok()
        {
            self.in_flight = true;
            self.started = Instant::now();
            return true;
        }
        false
    }

    /// A sweep finished having used `cpu`: the next waits out the budget.
    pub fn finished(&mut self, cpu: Duration) {
        self.in_flight = false;
        let spacing = cpu.div_f64(SWEEP_CPU_BUDGET).max(SWEEP_INTERVAL);
        // A little early, so that the controller's ticker (every SWEEP_INTERVAL, give or
        // take a millisecond) does not skip a whole interval by a hair.
        self.next = self.started + spacing - Duration::from_millis(100).min(spacing / 10);
    }

    /// How long after the last sweep's start the next may start.
    pub fn spacing(&self) -> Duration {
        self.next.saturating_duration_since(self.started)
    }
}

impl Drop for Sweeper {
    fn drop(&mut self) {
        // Closing the channel ends the thread after the sweep it may be running.
        self.requests.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
