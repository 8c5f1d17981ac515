//! drlb's XDP dataplane: Direct-Routing forwarding of VIP-bound frames.
//!
//! The decision lives in `lb_common::dataplane::process` (shared with host tests); this
//! crate supplies the XDP context as a bounds-checked packet and the BPF maps as tables.
//! This object holds only what `drlb run` loads (and the verifier checks at every start):
//! the balancer and the clock. The lab's and the benchmark's programs are in `tools.rs`.
#![no_std]
#![no_main]
// Atomic adds on map values: the BPF target has no core::sync::atomic types.
#![feature(core_intrinsics)]
// Word-sized packet access: see `XdpPacket::load_u32`.
#![feature(asm_experimental_arch)]
#![allow(internal_features)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod maps;
mod xdp_packet;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use lb_common::dataplane::{process_traced, Outcome};
use xdp_packet::XdpPacket;

/// The load balancer: attached to the director's interface by `drlb run`.
#[xdp]
pub fn drlb_xdp(ctx: XdpContext) -> u32 {
    let mut pkt = XdpPacket::of(&ctx);
    let mut out = Outcome::default();
    let stat = process_traced(&mut pkt, &maps::BpfTables, &mut out);
    maps::count(stat);
    // Packets not for a VIP never read the trace switch.
    if out.vip_bound {
        maps::trace(&out, stat);
        if out.conn_changed {
            maps::report_conn(&out);
        }
    }
    stat.xdp_action()
}

/// Publishes the dataplane's clock (jiffies) to `DRLB_CLOCK`; the controller runs it with
/// BPF_PROG_TEST_RUN to learn "now" in the units connection entries use.
#[xdp]
pub fn drlb_clock(_ctx: XdpContext) -> u32 {
    maps::publish_clock();
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
