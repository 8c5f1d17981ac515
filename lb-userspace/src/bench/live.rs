//! Live mode: real frames through the director's veth in native mode. A generator
//! namespace sends frames with BPF_PROG_TEST_RUN's live-frames mode (XDP_TX out of its
//! veth), the director namespace forwards them back with the program under test, and an
//! XDP_DROP program on the generator's veth counts what arrives. A direct veth pair, not
//! the lab's bridge, which would cap any path through it at ~0.4 Mpps.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use aya::programs::{TestRun, TestRunAttrs, TestRunOptions};
use serde::Serialize;

use super::{Options, Spread, traffic};
use crate::control::config::XdpMode;
use crate::kernel::bpf::{Dataplane, Tools, PROGRAM_BENCH_SINK, PROGRAM_BENCH_SYN_TX, PROGRAM_BENCH_TX, PROGRAM_FLOOR_SWAP, PROGRAM_LB};
use crate::selftest::netns::{in_netns, sh};

#[derive(Debug, Clone, Serialize)]
pub struct LiveResult {
    pub frames_per_run: u64,
    /// Forwarded million frames per second.
    pub drlb_mpps: Spread,
    pub swap_mpps: Spread,
    /// drlb's forwarded established frames while a second core sends it SYNs from new
    /// spoofed sources as fast as it can, and the SYNs it forwarded meanwhile (Mpps).
    pub flood: Option<FloodResult>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FloodResult {
    pub established_mpps: Spread,
    pub syn_mpps: Spread,
}

impl LiveResult {
    /// drlb's forwarded rate as a fraction of the bare MAC-swap program's (medians).
    pub fn ratio(&self) -> f64 {
        self.drlb_mpps.median / self.swap_mpps.median
    }
}

/// The two namespaces, removed on drop.
struct Pair {
    generator: String,
    dir: String,
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = sh("ip", &["netns", "delete", &self.generator]);
        let _ = sh("ip", &["netns", "delete", &self.dir]);
    }
}

fn mac(m: &[u8; 6]) -> String {
    crate::kernel::mac::format_mac(m)
}

pub fn run(dp: &mut Dataplane, tools: &mut Tools, opts: &Options) -> Result<LiveResult> {
    let tag = format!("drlb{}-b", std::process::id());
    let pair = Pair { generator: format!("{tag}-gen"), dir: format!("{tag}-dir") };
    sh("ip", &["netns", "add", &pair.generator])?;
    sh("ip", &["netns", "add", &pair.dir])?;
    sh("ip", &["-n", &pair.generator, "link", "add", "veth0", "type", "veth", "peer", "name", "eth0", "netns", &pair.dir])?;
    sh("ip", &["-n", &pair.generator, "link", "set", "veth0", "address", &mac(&traffic::CLIENT_MAC), "up"])?;
    sh("ip", &["-n", &pair.dir, "link", "set", "eth0", "address", &mac(&traffic::DIRECTOR_MAC), "up"])?;

    // The generator's veth counts and drops what comes back (and, being the peer of the
    // director's veth, lets native XDP_TX work there).
    let sink = in_netns(&pair.generator, || Ok(tools.attach(PROGRAM_BENCH_SINK, "veth0", XdpMode::Native)?.0))?;
    let ifindex = ifindex_in(&pair.generator).context("veth0's ifindex in the generator namespace")?;

    // Established flows the main bench opened: the director forwards these.
    let (_, data) = traffic::established(traffic::Family::V4, 0, 64, traffic::Size::Min64);
    // The flood's frame: a SYN whose source the generator program changes every time.
    let syn = traffic::syn_storm(traffic::Family::V4, 0, 1, traffic::Size::Min64).remove(0);
    let per_call = 50_000u32;
    // Sends `frame` from the generator `calls` times `per_call` (or until `stop`).
    let send = |tools: &Tools, program: &str, frames: &[Vec<u8>], calls: u32, stop: Option<&AtomicBool>| -> Result<()> {
        in_netns(&pair.generator, || {
            for c in 0..calls {
                if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
                    break;
                }
                let frame = &frames[c as usize % frames.len()];
                let mut ctx = [0u8; 24];
                ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
                ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
                tools
                    .program(program)?
                    .test_run(TestRunOptions {
                        data_in: Some(frame),
                        ctx_in: Some(&ctx),
                        repeat: per_call,
                        attrs: TestRunAttrs::new().xdp_live_frames(64),
                        ..TestRunOptions::new()
                    })
                    .context("live-frames BPF_PROG_TEST_RUN (needs kernel 5.18+)")?;
            }
            Ok(())
        })
    };
    // (established Mpps, SYN Mpps) per run.
    let mut measure = |program: &'static str, flood: bool| -> Result<Vec<(f64, f64)>> {
        // The balancer is in drlb's object, the floor in the tools object.
        let link = in_netns(&pair.dir, || {
            Ok(if program == PROGRAM_LB { dp.attach(program, "eth0", XdpMode::Native)? } else { tools.attach(program, "eth0", XdpMode::Native)? }.0)
        })?;
        let mut rates = Vec::new();
        for _ in 0..opts.runs {
            let tools: &Tools = tools;
            let (before, syns_before) = (tools.bench_rx()?, tools.bench_rx_syns()?);
            let calls = opts.live_frames.div_ceil(per_call);
            let stop = AtomicBool::new(false);
            let started = Instant::now();
            std::thread::scope(|s| -> Result<()> {
                let flooding = flood.then(|| s.spawn(|| send(tools, PROGRAM_BENCH_SYN_TX, std::slice::from_ref(&syn), u32::MAX, Some(&stop))));
                let sent = send(tools, PROGRAM_BENCH_TX, &data, calls, None);
                stop.store(true, Ordering::Relaxed);
                if let Some(f) = flooding {
                    f.join().map_err(|_| anyhow::anyhow!("the SYN generator panicked"))??;
                }
                sent
            })?;
            let elapsed = started.elapsed();
            std::thread::sleep(Duration::from_millis(50));
            let got = tools.bench_rx()? - before;
            let syns = tools.bench_rx_syns()? - syns_before;
            ensure!(got > 0, "no frame came back through {program}");
            ensure!(!flood || syns > 0, "no SYN came back through {program}");
            rates.push((got as f64 / elapsed.as_secs_f64() / 1e6, syns as f64 / elapsed.as_secs_f64() / 1e6));
        }
        if program == PROGRAM_LB { dp.detach(program, link)? } else { tools.detach(program, link)? }
        Ok(rates)
    };
    let drlb = measure(PROGRAM_LB, false)?;
    let swap = measure(PROGRAM_FLOOR_SWAP, false)?;
    let flooded = measure(PROGRAM_LB, true)?;
    tools.detach(PROGRAM_BENCH_SINK, sink)?;
    drop(pair);
    Ok(LiveResult {
        frames_per_run: opts.live_frames as u64,
        drlb_mpps: Spread::of(drlb.iter().map(|r| r.0).collect()),
        swap_mpps: Spread::of(swap.iter().map(|r| r.0).collect()),
        flood: Some(FloodResult {
            established_mpps: Spread::of(flooded.iter().map(|r| r.0).collect()),
            syn_mpps: Spread::of(flooded.iter().map(|r| r.1).collect()),
        }),
    })
}

/// veth0's ifindex as the generator namespace numbers it.
fn ifindex_in(ns: &str) -> Result<u32> {
    let out = sh("ip", &["-n", ns, "-o", "link", "show", "veth0"])?;
    Ok(out.split(':').next().unwrap_or("").trim().parse()?)
}
