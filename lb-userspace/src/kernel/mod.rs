//! Access to the kernel: the BPF objects ([`bpf`]: load, attach, map writes and reads; the
//! content they are written from, [`content`]), where they are pinned ([`pins`]), netlink,
//! systemd's notification socket and the controller's process. Imports nothing of the
//! configuration: what to write arrives as [`content::MapContent`].

pub mod batch;
pub mod bpf;
pub mod content;
pub mod ethtool;
pub mod mac;
pub mod maps;
pub mod netlink;
pub mod notify;
pub mod pins;
pub mod privileges;
pub mod process;
pub mod routes;
pub mod sweep;
pub mod sync_maps;
