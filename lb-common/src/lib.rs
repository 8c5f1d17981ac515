//! Everything drlb's XDP program and its controller must agree on, written once.
//!
//! * [`maps`]: the `#[repr(C)]` key/value types of every BPF map and the map names.
//! * [`verdict`]: what happens to a frame and why: the XDP action and the per-CPU counter index.
//! * [`packet`]: header parsing over any [`packet::Packet`] (XDP context or a byte slice).
//! * [`events`]: per-CPU counters of what happens to connections beside a packet's verdict.
//! * [`dataplane`]: the forwarding decision itself, over any [`dataplane::Tables`].
//! * [`halfopen`]: where a TCP connection waits between SYN and handshake, apart from the table.
//! * [`sync`]: connections a peer director reports, installed into the same tables.
//!
//! The same code is compiled into the BPF object and unit/property-tested on the host.
#![no_std]

pub mod addr;
pub mod conn;
pub mod dataplane;
pub mod events;
pub mod flowcache;
pub mod halfopen;
pub mod hash;
pub mod maps;
pub mod packet;
pub mod sched;
pub mod sync;
pub mod verdict;

#[cfg(any(test, feature = "host"))]
extern crate std;

#[cfg(any(test, feature = "host"))]
pub mod host;
