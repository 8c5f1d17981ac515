//! What an operator reads: `drlb status` (the `ipvsadm -Ln` view), Prometheus metrics,
//! `drlb doctor` and `drlb trace` — all from the pinned maps, so they work while the
//! controller runs and after it died — and the controller's log ([`logging`]).

pub mod doctor;
pub mod logging;
pub mod metrics;
pub mod state;
pub mod status;
pub mod trace;
