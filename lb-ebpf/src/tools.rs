//! drlb's tools object: programs the lab and `drlb bench` load beside the balancer, kept
//! out of the object `drlb run` loads. An XDP_PASS program for veth peers (and benchmark
//! floor (a)), floors (b), (c) and (d), and the live benchmark's generator and sink.
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]
#![deny(clippy::undocumented_unsafe_blocks)]

#[path = "xdp_packet.rs"]
mod xdp_packet;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, LruHashMap, PerCpuArray},
    programs::XdpContext,
};
use lb_common::conn::{Conn, ConnKey};
use lb_common::halfopen::{self, HalfOpen, HALF_OPEN_SIZE};
use lb_common::packet::Packet;
use xdp_packet::XdpPacket;

/// XDP_PASS and nothing else. The lab attaches it to the bridge-side peer of the
/// director's veth: native XDP_TX on a veth needs an XDP program on the peer.
#[xdp]
pub fn drlb_pass(_ctx: XdpContext) -> u32 {
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
    let mut pkt = XdpPacket::of(&ctx);
    if !swap_macs(&mut pkt) {
        return xdp_action::XDP_PASS;
    }
    xdp_action::XDP_TX
}

/// Benchmark floor (c): what any balancer that records connections in a kernel LRU hash
/// must do for a new flow — look its 5-tuple up (a miss) and insert it — on top of floor
/// (b).
#[xdp]
pub fn drlb_floor_insert(ctx: XdpContext) -> u32 {
    new_flow_floor(&ctx, floor_record_conn)
}

/// Benchmark floor (d): the least a new flow costs a balancer that keeps any state for
/// it — one 64-byte entry, chosen by the 5-tuple's hash in a table as large as drlb's
/// half-open table, read and written — on top of floor (b). No lookup of an existing
/// connection: (d) is below what an IPVS-compatible SYN can cost, a bound, not a design.
#[xdp]
pub fn drlb_floor_record(ctx: XdpContext) -> u32 {
    new_flow_floor(&ctx, floor_record_entry)
}

/// A new-flow floor: `record` the frame's 5-tuple, then floor (b). Reads the 5-tuple at
/// fixed offsets (IPv4 without options, as the benchmark's SYNs).
#[inline(always)]
fn new_flow_floor(ctx: &XdpContext, record: impl Fn(&ConnKey)) -> u32 {
    let mut pkt = XdpPacket::of(ctx);
    let (Some(src), Some(dst), Some(ports)) = (pkt.load_u32(26), pkt.load_u32(30), pkt.load_u32(34)) else {
        return xdp_action::XDP_PASS;
    };
    record(&ConnKey::v4(src, dst, (ports as u16).swap_bytes(), ((ports >> 16) as u16).swap_bytes(), 6));
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

/// Benchmark SYN-flood generator: sends its frame (a SYN, IPv4 without options) from a new
/// spoofed source each time — 198.19.0.0/16 and a port, from a per-CPU counter — so every
/// frame is a new connection to the balancer. The IPv4 checksum is left stale: nothing on
/// the benchmark's path checks it.
#[xdp]
pub fn drlb_bench_syn_tx(ctx: XdpContext) -> u32 {
    let mut pkt = XdpPacket::of(&ctx);
    let n = next_spoofed();
    // Source address bytes 26..30 = 198.19.hi.lo, source port bytes 34..36 (little-endian
    // words: byte 0 lowest).
    let source = 198 | 19 << 8 | (n >> 8 & 0xff) << 16 | (n & 0xff) << 24;
    let Some(ports) = pkt.load_u32(34) else { return xdp_action::XDP_PASS };
    let sport = (1024 + (n >> 16) % 60000) as u16;
    if !(pkt.store_u32(26, source) && pkt.store_u32(34, (ports & 0xffff_0000) | sport.swap_bytes() as u32)) {
        return xdp_action::XDP_PASS;
    }
    xdp_action::XDP_TX
}

/// The per-CPU counter `drlb_bench_syn_tx` draws sources from, stepped by a large odd
/// number so consecutive frames differ in every byte used; the CPU's number in its top
/// bits keeps two CPUs (or a generator that moves) from repeating each other's sources.
#[map(name = "DRLB_BENCH_SPOOF")]
static BENCH_SPOOF: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn next_spoofed() -> u32 {
    match BENCH_SPOOF.get_ptr_mut(0) {
        Some(c) => {
            // SAFETY: this CPU's counter; only this program on this CPU writes it.
            unsafe {
                *c = (*c).wrapping_add(0x9E37_79B1);
                *c ^ aya_ebpf::helpers::bpf_get_smp_processor_id() << 28
            }
        }
        None => 0,
    }
}

/// Benchmark sink: counts frames (per CPU; SYNs apart) and drops them.
#[xdp]
pub fn drlb_bench_sink(ctx: XdpContext) -> u32 {
    let pkt = XdpPacket::of(&ctx);
    // TCP flags of an untagged IPv4 frame without options; anything else counts as data.
    let syn = matches!(pkt.load_u32(44), Some(w) if (w >> 24) as u8 & lb_common::conn::tcp::FLAG_SYN != 0);
    count_bench_frame(if syn { BENCH_RX_SYN } else { BENCH_RX_OTHER });
    xdp_action::XDP_DROP
}

/// Frames seen by `drlb_bench_sink`: `BENCH_RX_OTHER` and `BENCH_RX_SYN`.
#[map(name = "DRLB_BENCH_RX")]
static BENCH_RX: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);
const BENCH_RX_OTHER: u32 = lb_common::maps::BENCH_RX_OTHER;
const BENCH_RX_SYN: u32 = lb_common::maps::BENCH_RX_SYN;

#[inline(always)]
fn count_bench_frame(index: u32) {
    if let Some(c) = BENCH_RX.get_ptr_mut(index) {
        // SAFETY: this CPU's counter; only this program on this CPU writes it.
        unsafe { *c += 1 };
    }
}

/// Benchmark floor (c)'s connection table, sized like the balancer's by the benchmark.
#[map(name = "DRLB_FLOOR_CONNS")]
static FLOOR_CONNS: LruHashMap<ConnKey, Conn> = LruHashMap::with_max_entries(1, 0);

/// Records a new flow as a connection table would: a lookup (expected to miss), an insert.
#[inline(always)]
fn floor_record_conn(key: &ConnKey) {
    if FLOOR_CONNS.get_ptr(key).is_none() {
        let _ = FLOOR_CONNS.insert(key, &Conn::default(), 0);
    }
}

/// Floor (d)'s table: as many 64-byte entries as drlb's half-open table.
#[map(name = "DRLB_FLOOR_RECORDS")]
static FLOOR_RECORDS: Array<HalfOpen> = Array::with_max_entries(HALF_OPEN_SIZE, 0);

/// Reads the entry at `key`'s hash and writes it back holding `key`, word by word as the
/// balancer reads and writes its half-open entries.
#[inline(always)]
fn floor_record_entry(key: &ConnKey) {
    let Some(p) = FLOOR_RECORDS.get_ptr_mut(halfopen::bucket(key)) else { return };
    let p = p.cast::<u64>();
    let mut entry = HalfOpen { key: *key, conn: Conn::default() };
    // SAFETY: `p` points to a 64-byte array value, 8-aligned; every index is < 8. `entry`
    // is a HalfOpen, 64 bytes of plain words without padding (asserted in lb-common), read
    // as the eight words it is. Only the benchmark runs this program, one frame at a time.
    unsafe {
        entry.conn.last_seen = core::ptr::read_volatile(p.add(5)).wrapping_add(1);
        let words = &*(&entry as *const HalfOpen as *const [u64; 8]);
        for (i, w) in words.iter().enumerate() {
            core::ptr::write_volatile(p.add(i), *w);
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
