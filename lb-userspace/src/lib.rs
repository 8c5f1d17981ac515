//! drlb's controller and the tools it ships, in layers (each imports only those below it):
//!
//! - [`kernel`]: the BPF objects in the kernel (load, pin, attach, map reads and writes),
//!   netlink, systemd notification, the controller's process. Knows lb-common, not drlb's config.
//! - [`control`]: the configuration, what the maps should hold for it (tables, stable
//!   identities, scheduler tables), health checks, and the controller's event loop.
//! - [`observe`]: status, metrics, doctor and trace, read from the pinned maps.
//! - [`selftest`]: the fixture table, the differential fuzz and the in-process lab that
//!   `drlb selftest` runs on a director before it takes traffic.
//! - [`bench`]: `drlb bench`.
//! - [`migrate`]: `drlb import-keepalived`, from keepalived.conf to drlb's YAML.
//! - [`realserver`]: the real-server side of Direct Routing (`drlb realserver`).
//!
//! The nginx lab behind `cargo xtask demo` and the integration tests is not here: it is the
//! `drlb-lab` crate under `tests/lab`.

pub mod bench;
pub mod control;
pub mod kernel;
pub mod migrate;
pub mod observe;
pub mod realserver;
pub mod selftest;
pub mod sync;
