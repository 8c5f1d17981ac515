//! Differential fuzz of the dataplane: random and mutated frames through the loaded BPF
//! program (BPF_PROG_TEST_RUN) and through the host model (`lb_common::dataplane::process`
//! over collections), which must agree on every one — verdict, output frame, the frame's
//! connection entry — and, checked every few hundred frames and at the end, on every real
//! server's ActiveConn/InActConn, every persistence template and every reason counter.
//!
//! Frames start from the fixture table's rows and the project's own capture, and are
//! mutated as the wire and attackers would: flipped bits, truncations, appended bytes, odd
//! IHL, random TCP flags and protocols, VLAN stacks, fragments, other ethertypes, frames
//! re-aimed at the VIPs and their ports, and frames of pure noise. `drlb selftest --fuzz N`.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Result, bail};
use aya::programs::{TestRun, TestRunOptions};
use lb_common::dataplane::Tables as _;
use lb_common::verdict::Verdict;

use crate::kernel::bpf::PROGRAM_LB;
use crate::selftest::fixtures::{self, conn_key, Harness};

/// The project's capture of real lab traffic (ARP, IPv6 neighbour discovery, TCP through the
/// VIP, ICMP), embedded so `drlb selftest` needs no file.
const LAB_CAPTURE: &[u8] = include_bytes!("../../../tests/data/lab-client.pcap");

/// What a fuzz run did.
#[derive(Debug, Default)]
pub struct Report {
    pub frames: u64,
    pub seconds: f64,
    /// Frames per verdict reason.
    pub reasons: BTreeMap<&'static str, u64>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let reasons: Vec<String> = self.reasons.iter().map(|(k, v)| format!("{k}={v}")).collect();
        write!(
            f,
            "fuzz: {} frames in {:.1} s, kernel and host model identical on every one ({})",
            self.frames,
            self.seconds,
            reasons.join(" ")
        )
    }
}

/// The fixture services with timeouts no run outlives: expiry is decided on two clocks
/// (the kernel's jiffies, the model's milliseconds) and would differ at the boundary.
fn harness() -> Result<Harness> {
    let text = fixtures::CONFIG.replace("timeouts: { tcp: 5s, tcp_fin: 3s },", "").replace("persistence_timeout: 60s", "persistence_timeout: 1h");
    let config = crate::control::config::Config::parse(std::path::Path::new("fuzz.yaml"), &text).map_err(|e| anyhow::anyhow!("{e}"))?;
    let tables = crate::control::tables::build(&config, &fixtures::macs(), fixtures::DIRECTOR_MAC)?;
    Harness::with_tables(&tables)
}

/// Frames every mutation starts from.
fn seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = fixtures::rows().into_iter().map(|r| r.frame().to_vec()).collect();
    if let Ok(mut reader) = pcap_file::pcap::PcapReader::new(LAB_CAPTURE) {
        while let Some(Ok(pkt)) = reader.next_packet() {
            seeds.push(pkt.data.into_owned());
        }
    }
    seeds
}

/// Where the IPv4 header of an untagged or tagged frame starts, if it is IPv4.
fn l3(frame: &[u8]) -> Option<usize> {
    match lb_common::packet::ethernet(frame) {
        Some((lb_common::packet::ETH_P_IP, off)) if frame.len() >= off + 20 => Some(off),
        _ => None,
    }
}

/// One mutation of `f`.
fn mutate(rng: &mut fastrand::Rng, f: &mut Vec<u8>) {
    let vip = |rng: &mut fastrand::Rng| fixtures::vip(rng.u8(fixtures::WEB..=fixtures::SHORT + 1));
    match rng.u8(0..14) {
        0 => {
            for _ in 0..rng.usize(1..4) {
                if !f.is_empty() {
                    let i = rng.usize(0..f.len());
                    f[i] ^= 1 << rng.u8(0..8);
                }
            }
        }
        1 => f.truncate(rng.usize(0..=f.len())),
        2 => f.extend((0..rng.usize(1..40)).map(|_| rng.u8(..))),
        3 => {
            if let Some(o) = l3(f) {
                f[o] = 0x40 | rng.u8(0..16);
            }
        }
        4 => {
            if let Some(o) = l3(f) {
                let ihl = (f[o] & 0x0f) as usize * 4;
                if let Some(b) = f.get_mut(o + ihl + 13) {
                    *b = rng.u8(..);
                }
            }
        }
        5 => {
            if let Some(o) = l3(f) {
                f[o + 9] = [6, 17, 1, 47, rng.u8(..)][rng.usize(0..5)];
            }
        }
        6 => {
            if let Some(o) = l3(f) {
                f[o + 16..o + 20].copy_from_slice(&vip(rng));
            }
        }
        7 => {
            if let Some(o) = l3(f) {
                let ihl = (f[o] & 0x0f) as usize * 4;
                let port: u16 = [80, 53, 22, 443, rng.u16(..)][rng.usize(0..5)];
                if f.len() >= o + ihl + 4 {
                    f[o + ihl + 2..o + ihl + 4].copy_from_slice(&port.to_be_bytes());
                }
            }
        }
        8 => {
            if let Some(o) = l3(f) {
                f[o + 12..o + 16].copy_from_slice(&[198, 18 + rng.u8(0..2), rng.u8(..), rng.u8(..)]);
                let ihl = (f[o] & 0x0f) as usize * 4;
                if f.len() >= o + ihl + 2 {
                    f[o + ihl..o + ihl + 2].copy_from_slice(&rng.u16(1024..).to_be_bytes());
                }
            }
        }
        9 => {
            if f.len() >= 12 {
                let tpid: u16 = [0x8100, 0x88a8][rng.usize(0..2)];
                let tag = [(tpid >> 8) as u8, tpid as u8, rng.u8(0..16), rng.u8(..)];
                f.splice(12..12, tag);
            }
        }
        10 => {
            if let Some(o) = l3(f) {
                let (hi, lo) = [(0x20, 0), (0, 1), (0x3f, 0xff), (0x40, 0)][rng.usize(0..4)];
                f[o + 6] = (f[o + 6] & 0x80) | hi;
                f[o + 7] = lo;
            }
        }
        11 => {
            if f.len() >= 14 {
                let t: u16 = [0x0800, 0x86dd, 0x0806, 0x8100, rng.u16(..)][rng.usize(0..5)];
                f[12..14].copy_from_slice(&t.to_be_bytes());
            }
        }
        12 => *f = (0..rng.usize(14..200)).map(|_| rng.u8(..)).collect(),
        _ => {
            // A fresh SYN or data segment to a VIP: the scheduling paths, busy.
            let flags = [fixtures::SYN, fixtures::ACK, fixtures::PSH_ACK, fixtures::FIN_ACK, fixtures::RST][rng.usize(0..5)];
            *f = fixtures::tcp_from([198, 18, 0, rng.u8(1..=254)], vip(rng), rng.u16(1024..1100), [80, 22, 53][rng.usize(0..3)], flags);
        }
    }
}

/// Runs one frame through both; the first disagreement is an error naming it.
fn step(h: &Harness, frame: &[u8]) -> Result<Verdict> {
    let mut out = vec![0u8; frame.len() + 256];
    let r = h
        .dp
        .program(PROGRAM_LB)?
        .test_run(TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), ..TestRunOptions::new() })?;
    out.truncate(r.data_size_out as usize);
    h.model.now.set(fixtures::model_now());
    let mut model_out = frame.to_vec();
    let stat = lb_common::dataplane::process(model_out.as_mut_slice(), &h.model);
    if r.return_value != stat.xdp_action() || out != model_out {
        bail!("verdict {} vs the model's {} ({}), output {:02x?} vs {:02x?}", r.return_value, stat.xdp_action(), stat.name(), out, model_out);
    }
    if let Some(key) = conn_key(frame) {
        let hz = h.dp.hz();
        let k = h.dp.connection(&key)?.map(|c| (c.backend, c.state, c.flags, c.service, c.timeout / hz));
        let m = h.model.connection(&key).map(|c| (c.backend, c.state, c.flags, c.service, c.timeout / 1000));
        if k != m {
            bail!("connection entry {k:?} vs the model's {m:?}");
        }
    }
    Ok(stat)
}

/// Counts, templates and reason counters: kernel against model.
fn compare_state(h: &Harness, tally: &BTreeMap<&'static str, u64>, base: &crate::kernel::bpf::Counters) -> Result<()> {
    for &slot in &h.slots {
        let (k, m) = (h.kernel_counts(slot), h.model.conn_counts(slot));
        if k != m {
            bail!("slot {slot}: ActiveConn/InActConn {}/{} vs the model's {}/{}", k.active, k.inactive, m.active, m.inactive);
        }
    }
    let kernel: BTreeMap<_, _> = h.dp.templates()?.into_iter().map(|(k, p)| (k, p.backend)).collect();
    let model: BTreeMap<_, _> = h.model.persist.borrow().iter().map(|(k, p)| (*k, p.backend)).collect();
    if kernel != model {
        bail!("persistence templates differ: {} in the kernel, {} in the model", kernel.len(), model.len());
    }
    let counters = h.dp.counters()?;
    for s in Verdict::ALL {
        let k = counters[s.index() as usize] - base[s.index() as usize];
        let m = tally.get(s.name()).copied().unwrap_or(0);
        if k != m {
            bail!("counter {}: {k} in the kernel, {m} by the model", s.name());
        }
    }
    Ok(())
}

/// Sends `frames` frames, from `seed`; fails with the first frame on which kernel and model
/// differ (in hex, to add to the fixture table).
pub fn run(frames: u64, seed: u64) -> Result<Report> {
    // One CPU: the model has one flow cache, the kernel one per CPU.
    let mut one = nix::sched::CpuSet::new();
    let here = nix::sched::sched_getcpu().unwrap_or(0);
    one.set(here)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &one)?;
    let h = harness()?;
    let seeds = seeds();
    let mut rng = fastrand::Rng::with_seed(seed);
    let base = h.dp.counters()?;
    let started = Instant::now();
    let mut report = Report::default();
    for n in 0..frames {
        let mut frame = seeds[rng.usize(0..seeds.len())].clone();
        for _ in 0..rng.usize(1..4) {
            mutate(&mut rng, &mut frame);
        }
        // BPF_PROG_TEST_RUN takes an Ethernet header at least, and no more than a page.
        frame.resize(frame.len().clamp(14, 1500), 0);
        match step(&h, &frame) {
            Ok(stat) => *report.reasons.entry(stat.name()).or_default() += 1,
            Err(e) => bail!("frame {n} (seed {seed}): {e:#}\nframe: {}", hex(&frame)),
        }
        if n % 512 == 511 {
            compare_state(&h, &report.reasons, &base).map_err(|e| anyhow::anyhow!("after frame {n} (seed {seed}): {e:#}"))?;
        }
    }
    compare_state(&h, &report.reasons, &base).map_err(|e| anyhow::anyhow!("at the end (seed {seed}): {e:#}"))?;
    report.frames = frames;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
