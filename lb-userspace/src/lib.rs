//! drlb's controller: configuration, the dataplane loader and map programming, kernel
//! neighbour resolution, and the netns lab used by the demo and the integration tests.

pub mod config;
pub mod dataplane;
pub mod pins;
pub mod tables;
pub mod netlink;
pub mod controller;
pub mod lab;
pub mod sched_tables;
pub mod slots;
pub mod process;
pub mod status;
pub mod health;
pub mod metrics;
pub mod notify;
pub mod bench;
pub mod realserver;
pub mod trace;
pub mod doctor;
pub mod fixtures;
pub mod fuzz;
pub mod selflab;
