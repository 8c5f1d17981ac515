//! From the configuration to what the dataplane's maps should hold, and the controller that
//! keeps them so: config → tables (with stable identities from slots and the scheduler
//! tables) → the kernel layer's writes; health checks and neighbours feed it.

pub mod announce;
pub mod config;
pub mod controller;
pub mod health;
pub mod hooks;
pub mod probes;
pub mod sched_tables;
pub mod slots;
pub mod sweeper;
pub mod tables;
pub mod vips;
