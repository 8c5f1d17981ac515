//! drlb's XDP dataplane: Direct-Routing forwarding of VIP-bound frames.
//!
//! The decision lives in `lb_common::dataplane` (shared with host tests); this crate
//! supplies the XDP context as a bounds-checked packet and the BPF maps as tables.
//! This object holds only what `drlb run` loads (and the verifier checks at every start):
//! the dispatcher the interface runs, the programs it tail-calls, and the clock. The lab's
//! and the benchmark's programs are in `tools.rs`.
//!
//! Why a dispatcher: the kernel verifies each program within a budget of its own (a million
//! instructions), and IPv4 with every IPVS scheduler already takes most of one. The
//! dispatcher calls no function (arm64 before 6.0 refuses a tail call from a program that
//! does), so everything it does is inlined here.
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
use lb_common::dataplane::{process_icmp, process_v4, process_v6, route, Outcome, Route};
use lb_common::maps::{JUMP_ICMP, JUMP_V4, JUMP_V6};
use lb_common::packet::Ipv6Chain;
use lb_common::verdict::Verdict;
use maps::BpfTables;
use xdp_packet::XdpPacket;

/// The dispatcher, attached to the director's interface by `drlb run`: settles ARP, other
/// protocols and IPv6 not to a VIP itself, and jumps to the program for the rest.
#[xdp]
pub fn drlb_xdp(ctx: XdpContext) -> u32 {
    let pkt = XdpPacket::of(&ctx);
    let mut chain = Ipv6Chain::default();
    // One tail call per route, each with its slot as a constant: the verifier then records
    // a constant key, and the x86-64 JIT emits a direct jump instead of an indirect one
    // (which retpolines make slow).
    match route(&pkt, &maps::TABLES, &mut chain) {
        Route::Done(stat) => {
            maps::count(stat);
            return stat.xdp_action();
        }
        Route::V4 => maps::jump::<JUMP_V4>(&ctx),
        Route::V6 => {
            maps::set_ipv6_chain(&chain);
            maps::jump::<JUMP_V6>(&ctx);
        }
        Route::Icmp => {
            maps::set_ipv6_chain(&chain);
            maps::jump::<JUMP_ICMP>(&ctx);
        }
    }
    maps::count(Verdict::PassNoProgram);
    xdp_action::XDP_PASS
}

/// Counts, traces and reports what a program decided for its packet.
#[inline(always)]
fn finish(stat: Verdict, out: &Outcome) -> u32 {
    maps::count(stat);
    // Packets not for a VIP never read the trace switch.
    if out.vip_bound {
        maps::trace(out, stat);
        if out.conn_changed {
            maps::report_conn(out);
        }
    }
    stat.xdp_action()
}

/// IPv4 other than ICMP (`JUMP_V4`).
#[xdp]
pub fn drlb_xdp_v4(ctx: XdpContext) -> u32 {
    let mut pkt = XdpPacket::of(&ctx);
    let mut out = Outcome::default();
    let stat = process_v4(&mut pkt, &BpfTables, &mut out);
    finish(stat, &out)
}

/// IPv6 to a VIP other than ICMPv6 (`JUMP_V6`).
#[xdp]
pub fn drlb_xdp_v6(ctx: XdpContext) -> u32 {
    let mut pkt = XdpPacket::of(&ctx);
    let mut out = Outcome::default();
    let chain = maps::ipv6_chain();
    let stat = process_v6(&mut pkt, &BpfTables, &mut out, &chain);
    finish(stat, &out)
}

/// ICMP, and ICMPv6 to a VIP (`JUMP_ICMP`): errors about connections go to their real
/// servers.
#[xdp]
pub fn drlb_xdp_icmp(ctx: XdpContext) -> u32 {
    let mut pkt = XdpPacket::of(&ctx);
    let mut out = Outcome::default();
    let chain = maps::ipv6_chain();
    let stat = process_icmp(&mut pkt, &maps::TABLES, &mut out, &chain);
    finish(stat, &out)
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
