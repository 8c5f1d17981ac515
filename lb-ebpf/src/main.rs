//! drlb's XDP dataplane: Direct-Routing forwarding of VIP-bound frames.
//!
//! The decision lives in `lb_common::dataplane::process` (shared with host tests); this
//! crate supplies the XDP context as a bounds-checked packet and the BPF maps as tables.
#![no_std]
#![no_main]
// Atomic adds on map values: the BPF target has no core::sync::atomic types.
#![feature(core_intrinsics)]
// Word-sized packet access: see `XdpPacket::load_u32`.
#![feature(asm_experimental_arch)]
#![allow(internal_features)]

mod maps;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use lb_common::{
    conn::ConnKey,
    dataplane::{process_traced, Outcome},
    packet::Packet,
};

/// The frame between `data` and `data_end`. Every access is checked against `data_end`
/// in the form the verifier recognises.
struct XdpPacket {
    start: usize,
    end: usize,
}

impl Packet for XdpPacket {
    #[inline(always)]
    fn len(&self) -> usize {
        self.end - self.start
    }

    #[inline(always)]
    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        let ptr = self.start + off;
        if ptr + N > self.end {
            return None;
        }
        // SAFETY: [ptr, ptr + N) lies inside the frame (checked above).
        Some(unsafe { core::ptr::read_unaligned(ptr as *const [u8; N]) })
    }

    #[inline(always)]
    fn with_header<const N: usize, R>(&self, off: usize, f: impl FnOnce(&[u8; N]) -> R) -> Option<R> {
        let ptr = self.start + off;
        if ptr + N > self.end {
            return None;
        }
        // SAFETY: [ptr, ptr + N) lies inside the frame (checked above); u8 has no alignment.
        Some(f(unsafe { &*(ptr as *const [u8; N]) }))
    }

    #[inline(always)]
    fn load_u32(&self, off: usize) -> Option<u32> {
        let ptr = self.start + off;
        if ptr + 4 > self.end {
            return None;
        }
        let v: u64;
        // One 32-bit load. LLVM splits a Rust unaligned read into four byte loads on BPF,
        // and an aligned read would claim an alignment packet headers do not have; the
        // kernels drlb runs on (x86_64, arm64) load misaligned packet words natively and
        // their verifiers allow it.
        // SAFETY: [ptr, ptr + 4) lies inside the frame (checked above).
        unsafe { core::arch::asm!("{0} = *(u32 *)({1} + 0)", out(reg) v, in(reg) ptr, options(readonly, nostack, preserves_flags)) };
        Some(v as u32)
    }

    #[inline(always)]
    fn store_u32(&mut self, off: usize, v: u32) -> bool {
        let ptr = self.start + off;
        if ptr + 4 > self.end {
            return false;
        }
        // One 32-bit store, for the reason `load_u32` gives.
        // SAFETY: [ptr, ptr + 4) lies inside the frame (checked above).
        unsafe { core::arch::asm!("*(u32 *)({0} + 0) = {1}", in(reg) ptr, in(reg) v as u64, options(nostack, preserves_flags)) };
        true
    }

    #[inline(always)]
    fn store<const N: usize>(&mut self, off: usize, bytes: &[u8; N]) -> bool {
        let ptr = self.start + off;
        if ptr + N > self.end {
            return false;
        }
        // Byte by byte: bpf-linker has no memmove/memcpy for packet memory.
        let mut i = 0;
        while i < N {
            // SAFETY: inside the frame (checked above).
            unsafe { *((ptr + i) as *mut u8) = bytes[i] };
            i += 1;
        }
        true
    }
}

/// The load balancer: attached to the director's interface by `drlb run`.
#[xdp]
pub fn drlb_xdp(ctx: XdpContext) -> u32 {
    let mut pkt = XdpPacket { start: ctx.data(), end: ctx.data_end() };
    let mut out = Outcome::default();
    let stat = process_traced(&mut pkt, &maps::BpfTables, &mut out);
    maps::count(stat);
    // Packets not for a VIP never read the trace switch.
    if out.vip_bound {
        maps::trace(&out, stat);
    }
    stat.xdp_action()
}

/// XDP_PASS and nothing else. The lab attaches it to the bridge-side peer of the
/// director's veth: native XDP_TX on a veth needs an XDP program on the peer.
#[xdp]
pub fn drlb_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Publishes the dataplane's clock (jiffies) to `DRLB_CLOCK`; the controller runs it with
/// BPF_PROG_TEST_RUN to learn "now" in the units connection entries use.
#[xdp]
pub fn drlb_clock(_ctx: XdpContext) -> u32 {
    maps::publish_clock();
    xdp_action::XDP_PASS
}

/// Swaps the frame's MACs; `false` if it is shorter than an Ethernet header. Three word
/// loads and three word stores, as the balancer writes its MACs: a floor written byte by
/// byte would be slower than it need be and flatter every ratio against it.
#[inline(always)]
fn swap_macs(pkt: &mut XdpPacket) -> bool {
    // Words of bytes [d0..d3], [d4 d5 s0 s1], [s2..s5]: little-endian, byte 0 lowest.
    let (Some(w0), Some(w1), Some(w2)) = (pkt.load_u32(0), pkt.load_u32(4), pkt.load_u32(8)) else { return false };
    // [s0..s3], [s4 s5 d0 d1], [d2..d5].
    pkt.store_u32(0, w1 >> 16 | w2 << 16) && pkt.store_u32(4, w2 >> 16 | w0 << 16) && pkt.store_u32(8, w0 >> 16 | w1 << 16)
}

/// Benchmark floor (b): swap the MACs and send the frame back, the least any XDP_TX
/// forwarder does. `drlb bench` reports the balancer against it.
#[xdp]
pub fn drlb_floor_swap(ctx: XdpContext) -> u32 {
    let mut pkt = XdpPacket { start: ctx.data(), end: ctx.data_end() };
    if !swap_macs(&mut pkt) {
        return xdp_action::XDP_PASS;
    }
    xdp_action::XDP_TX
}

/// Benchmark floor (c): what any balancer that records connections in a kernel LRU hash
/// must do for a new flow — look its 5-tuple up (a miss) and insert it — on top of floor
/// (b). Reads the 5-tuple at fixed offsets (IPv4 without options, as the benchmark's SYNs).
#[xdp]
pub fn drlb_floor_insert(ctx: XdpContext) -> u32 {
    let mut pkt = XdpPacket { start: ctx.data(), end: ctx.data_end() };
    let (Some(src), Some(dst), Some(ports)) = (pkt.load_u32(26), pkt.load_u32(30), pkt.load_u32(34)) else {
        return xdp_action::XDP_PASS;
    };
    let key = ConnKey::v4(src, dst, (ports as u16).swap_bytes(), ((ports >> 16) as u16).swap_bytes(), 6);
    maps::floor_record_conn(&key);
    if !swap_macs(&mut pkt) {
        return xdp_action::XDP_PASS;
    }
    xdp_action::XDP_TX
}

/// Benchmark generator: sends the frame out unchanged (live-frames mode of
/// BPF_PROG_TEST_RUN turns each run into a transmitted frame).
#[xdp]
pub fn drlb_bench_tx(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_TX
}

/// Benchmark sink: counts frames (per CPU) and drops them.
#[xdp]
pub fn drlb_bench_sink(_ctx: XdpContext) -> u32 {
    maps::count_bench_frame();
    xdp_action::XDP_DROP
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
