//! `drlb bench`: the dataplane object replayed with BPF_PROG_TEST_RUN, its maps filled as
//! `drlb run` fills them, against floors measured in the same run — (a) a program
//! returning XDP_PASS, (b) one that swaps MACs and returns XDP_TX, and for new flows (c) (b)
//! plus a connection-table lookup and insert — plus a live mode through a veth pair. Every figure is min / median / max over the runs; every verdict is
//! checked (the per-reason counters must have moved by exactly the packets sent), so a
//! figure is of the path it names.

pub mod controller;
pub mod live;
pub mod report;
pub mod traffic;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail, ensure};
use aya::programs::{TestRun, TestRunOptions};
use indicatif::{ProgressBar, ProgressStyle};
use lb_common::verdict::{Verdict, XDP_PASS, XDP_TX};
use serde::Serialize;

use crate::control::config::Config;
use crate::kernel::bpf::{Counters, Dataplane, Tools, PROGRAM_FLOOR_INSERT, PROGRAM_FLOOR_RECORD, PROGRAM_FLOOR_SWAP, PROGRAM_LB, PROGRAM_PASS};
use crate::kernel::mac::Mac;
use traffic::{Family, Size};

/// How much to measure.
#[derive(Debug, Clone)]
pub struct Options {
    pub runs: usize,
    pub hot_repeat: u32,
    pub small_flows: u32,
    pub large_flows: u32,
    pub syn_flows: u32,
    pub real_servers: u32,
    pub live: bool,
    pub live_frames: u32,
    pub pcap: Option<PathBuf>,
    pub pcap_rewrite_vip: bool,
    pub progress: bool,
    /// Connection sync on: the program reports new connections and state changes to its
    /// ring, which a thread drains as the controller's sync would.
    pub sync: bool,
}

impl Options {
    pub fn full() -> Options {
        Options {
            runs: 5,
            hot_repeat: 1_000_000,
            small_flows: 10_000,
            large_flows: 1_000_000,
            syn_flows: 20_000,
            real_servers: 16,
            live: true,
            live_frames: 5_000_000,
            pcap: None,
            pcap_rewrite_vip: false,
            progress: true,
            sync: false,
        }
    }

    /// Small enough for a test run.
    pub fn quick() -> Options {
        Options {
            runs: 5,
            hot_repeat: 20_000,
            small_flows: 500,
            large_flows: 2_000,
            syn_flows: 500,
            live_frames: 200_000,
            progress: false,
            ..Options::full()
        }
    }
}

/// min / median / max of ns per packet over the runs.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(mut v: Vec<f64>) -> Spread {
        v.sort_by(|a, b| a.total_cmp(b));
        Spread { min: v[0], median: v[v.len() / 2], max: v[v.len() - 1] }
    }
}

/// One scenario's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub name: String,
    /// "hot loop" (one packet, large repeat) or "trace" (each packet once).
    pub mode: String,
    pub size: String,
    pub packets_per_run: u64,
    /// ns per packet.
    pub drlb: Spread,
    pub floor_pass: Spread,
    pub floor_swap: Spread,
    /// Floor (c), for new-flow scenarios: a connection-table lookup and insert on top of
    /// floor (b).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub floor_insert: Option<Spread>,
    /// Floor (d), for new-flow scenarios: one 64-byte entry at the flow's hash read and
    /// written on top of floor (b) — the least any balancer keeping per-flow state pays.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub floor_record: Option<Spread>,
}

impl Figure {
    /// drlb's median over floor (b)'s median.
    pub fn ratio(&self) -> f64 {
        self.drlb.median / self.floor_swap.median
    }

    /// Million packets per second per core at drlb's median.
    pub fn mpps(&self) -> f64 {
        1_000.0 / self.drlb.median
    }
}

/// The whole result.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub figures: Vec<Figure>,
    pub live: Option<live::LiveResult>,
    /// Medians over floor (b) (`live`: fraction of the bare MAC-swap program's rate).
    pub ratios: HashMap<String, f64>,
    pub targets: HashMap<String, String>,
    /// Whether connection sync's reports were on.
    pub sync: bool,
}

/// A bench config: one TCP VIP:80 service (wlc over `n` real servers), the same over IPv6,
/// and the MACs the controller would have resolved: each real server's is the director's
/// own. A hot loop runs on the frame the previous repeat rewrote; addressed to the director
/// again, every repeat takes the whole path of a frame from a router, the check that the
/// frame is for this director included, and the rewrite writes what it always writes.
pub fn bench_config(n: u32) -> (Config, HashMap<IpAddr, Mac>) {
    let (mut rs, mut rs6) = (String::new(), String::new());
    let mut macs = HashMap::new();
    for i in 0..n {
        let addr: IpAddr = format!("198.18.0.{}", 11 + i).parse().expect("address");
        rs += &format!("      - {{ address: {addr} }}\n");
        macs.insert(addr, traffic::DIRECTOR_MAC);
        let addr6: IpAddr = format!("2001:db8::{}", 11 + i).parse().expect("address");
        rs6 += &format!("      - {{ address: \"{addr6}\" }}\n");
        macs.insert(addr6, traffic::DIRECTOR_MAC);
    }
    let text = format!(
        "director: {{ interface: eth0 }}\nservices:\n  - name: bench\n    vip: {}\n    port: 80\n    \
         protocol: tcp\n    scheduler: wlc\n    real_servers:\n{rs}  - name: bench6\n    vip: \"{}\"\n    port: 80\n    \
         protocol: tcp\n    scheduler: wlc\n    real_servers:\n{rs6}",
        traffic::VIP,
        traffic::VIP6
    );
    (Config::parse(std::path::Path::new("bench.yaml"), &text).expect("bench config is valid"), macs)
}

struct Bench<'a> {
    dp: &'a Dataplane,
    tools: &'a Tools,
    progress: ProgressBar,
}

impl Bench<'_> {
    /// One BPF_PROG_TEST_RUN: (verdict, ns per run, output).
    fn run(&self, program: &str, frame: &[u8], repeat: u32) -> Result<(u32, f64, Vec<u8>)> {
        let mut out = vec![0u8; frame.len() + 64];
        // The balancer is in drlb's object; the floors are in the tools object.
        let prog = if program == PROGRAM_LB { self.dp.program(program)? } else { self.tools.program(program)? };
        let r = prog
            .test_run(TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), repeat, ..TestRunOptions::new() })
            .with_context(|| format!("BPF_PROG_TEST_RUN of {program}"))?;
        out.truncate(r.data_size_out as usize);
        Ok((r.return_value, r.duration.as_nanos() as f64, out))
    }

    fn counters(&self) -> Result<Counters> {
        self.dp.counters()
    }

    /// Each frame once through `program`: mean ns per packet. `expect` checks each verdict.
    fn trace(&self, program: &str, frames: &[Vec<u8>], expect: u32) -> Result<f64> {
        let mut total = 0.0;
        for f in frames {
            let (v, ns, _) = self.run(program, f, 1)?;
            ensure!(v == expect, "{program}: verdict {v}, expected {expect}");
            total += ns;
            self.progress.inc(1);
        }
        Ok(total / frames.len() as f64)
    }

    /// The same frame `repeat` times; returns ns per packet.
    fn hot(&self, program: &str, frame: &[u8], repeat: u32, expect: u32) -> Result<f64> {
        let (v, ns, _) = self.run(program, frame, repeat)?;
        ensure!(v == expect, "{program}: verdict {v}, expected {expect}");
        self.progress.inc(repeat as u64);
        Ok(ns)
    }
}

/// Asserts that the balancer's counters moved by exactly `n` packets, all for `reasons`.
fn check_reasons(before: &Counters, after: &Counters, n: u64, reasons: &[Verdict], what: &str) -> Result<()> {
    let moved: u64 = Verdict::ALL.iter().map(|s| after[s.index() as usize] - before[s.index() as usize]).sum();
    let ours: u64 = reasons.iter().map(|s| after[s.index() as usize] - before[s.index() as usize]).sum();
    if moved != n || ours != n {
        let detail: Vec<String> = Verdict::ALL
            .iter()
            .filter(|s| after[s.index() as usize] != before[s.index() as usize])
            .map(|s| format!("{}={}", s.name(), after[s.index() as usize] - before[s.index() as usize]))
            .collect();
        bail!("{what}: {n} packets should all have taken {reasons:?}, the counters say {}", detail.join(" "));
    }
    Ok(())
}

/// Runs every scenario `opts.runs` times.
pub fn run(opts: &Options) -> Result<Results> {
    let (config, macs) = bench_config(opts.real_servers);
    let tables = crate::control::tables::build(&config, &macs, traffic::DIRECTOR_MAC)?;
    // Room for every flow the run opens (no LRU eviction during a figure), twice over.
    let flows = 2 * opts.small_flows as u64
        + opts.large_flows as u64
        + opts.runs as u64 * (3 * opts.syn_flows as u64 + opts.small_flows as u64 / 20 + 1);
    let table_size = (2 * flows).next_power_of_two().clamp(1 << 16, 1 << 23) as u32;
    let mut dp = Dataplane::load_for(table_size, traffic::DIRECTOR_MAC).context("loading the dataplane")?;
    dp.apply(&tables)?;
    let drain = if opts.sync { Some(RingDrain::start(&mut dp)?) } else { None };
    // Floor (c)'s table as large as the balancer's: it pays for the same LRU.
    let mut tools = Tools::load(table_size).context("loading the benchmark's floors")?;

    let total: u64 = opts.runs as u64
        * (3 * opts.hot_repeat as u64 * 4
            // IPv6's SYN storm: drlb and floors (a) to (d).
            + 5 * opts.syn_flows as u64
            + 3 * (2 * opts.small_flows as u64 + opts.large_flows as u64 + 2 * opts.syn_flows as u64 + opts.small_flows as u64)
            // Floors (c) and (d), over both sizes' SYN storms.
            + 4 * opts.syn_flows as u64)
        + 2 * opts.large_flows as u64
        + 4 * opts.small_flows as u64;
    let progress = if opts.progress { ProgressBar::new(total) } else { ProgressBar::hidden() };
    progress.set_style(
        ProgressStyle::with_template("{spinner} {msg:32} [{bar:30}] {percent:>3}% {eta}").expect("style").progress_chars("=> "),
    );
    let b = Bench { dp: &dp, tools: &tools, progress };
    let mut figures = Vec::new();

    // Open the flows the established scenarios replay (not timed).
    b.progress.set_message("opening flows");
    let (setup_small, data_small) = traffic::established(Family::V4, 0, opts.small_flows, Size::Min64);
    let (_, data_small_imix) = traffic::established(Family::V4, 0, opts.small_flows, Size::Imix);
    let (setup_large, data_large) = traffic::established(Family::V4, opts.small_flows, opts.large_flows, Size::Min64);
    // IPv6: its own flows, beside the IPv4 ones in the same table.
    let (setup_small6, data_small6) = traffic::established(Family::V6, 0, opts.small_flows, Size::Min64);
    for f in setup_small.iter().chain(&setup_large).chain(&setup_small6) {
        let (v, _, _) = b.run(PROGRAM_LB, f, 1)?;
        ensure!(v == XDP_TX, "opening a flow: verdict {v}");
        // Floor (c)'s table holds as many connections as drlb's when it is measured.
        let (v, _, _) = b.run(PROGRAM_FLOOR_INSERT, f, 1)?;
        ensure!(v == XDP_TX, "opening a flow in floor (c): verdict {v}");
        b.progress.inc(1);
    }

    // Hot loops: one packet kind, large repeat.
    let hot_cases: [(&str, &Vec<u8>, u32, &[Verdict]); 4] = [
        ("established flow", &data_small[0], XDP_TX, &[Verdict::TxForwarded]),
        ("non-VIP", &traffic::non_vip(Family::V4, 1, Size::Min64)[0], XDP_PASS, &[Verdict::PassNotVip]),
        ("IPv6 established flow", &data_small6[0], XDP_TX, &[Verdict::TxForwarded]),
        ("IPv6 non-VIP", &traffic::non_vip(Family::V6, 1, Size::Min64)[0], XDP_PASS, &[Verdict::PassNotVip]),
    ];
    for (name, frame, verdict, reasons) in hot_cases {
        b.progress.set_message(format!("{name} (hot loop)"));
        let (mut d, mut a, mut s) = (Vec::new(), Vec::new(), Vec::new());
        // The packet is not restored between repeats: check the output of one run, then
        // the reasons of all runs.
        let (_, _, once) = b.run(PROGRAM_LB, frame, 1)?;
        for _ in 0..opts.runs {
            let before = b.counters()?;
            d.push(b.hot(PROGRAM_LB, frame, opts.hot_repeat, verdict)?);
            check_reasons(&before, &b.counters()?, opts.hot_repeat as u64, reasons, name)?;
            a.push(b.hot(PROGRAM_PASS, frame, opts.hot_repeat, XDP_PASS)?);
            s.push(b.hot(PROGRAM_FLOOR_SWAP, frame, opts.hot_repeat, XDP_TX)?);
        }
        let (_, _, again) = b.run(PROGRAM_LB, frame, opts.hot_repeat)?;
        ensure!(again == once, "{name}: the output after {} repeats differs from one run's", opts.hot_repeat);
        figures.push(Figure {
            name: name.into(),
            mode: "hot loop".into(),
            size: "64B".into(),
            packets_per_run: opts.hot_repeat as u64,
            drlb: Spread::of(d),
            floor_pass: Spread::of(a),
            floor_swap: Spread::of(s),
            floor_insert: None,
            floor_record: None,
        });
    }

    // Traces: each packet once (cache behaviour of real traffic).
    let mut next_new_flow = opts.small_flows + opts.large_flows;
    // `new_flows`: also run floors (c) and (d) over the same frames (all of them new flows).
    let mut trace_case = |name: &str, size: Size, make: &mut dyn FnMut(&mut u32) -> Vec<Vec<u8>>, reasons: &[Verdict], new_flows: bool| -> Result<Figure> {
        b.progress.set_message(format!("{name} ({})", size.name()));
        let (mut d, mut a, mut s, mut c, mut r) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut n = 0;
        for _ in 0..opts.runs {
            let frames = make(&mut next_new_flow);
            n = frames.len() as u64;
            let before = b.counters()?;
            d.push(b.trace(PROGRAM_LB, &frames, XDP_TX)?);
            check_reasons(&before, &b.counters()?, n, reasons, name)?;
            a.push(b.trace(PROGRAM_PASS, &frames, XDP_PASS)?);
            s.push(b.trace(PROGRAM_FLOOR_SWAP, &frames, XDP_TX)?);
            if new_flows {
                c.push(b.trace(PROGRAM_FLOOR_INSERT, &frames, XDP_TX)?);
                r.push(b.trace(PROGRAM_FLOOR_RECORD, &frames, XDP_TX)?);
            }
        }
        Ok(Figure {
            name: name.into(),
            mode: "trace".into(),
            size: size.name().into(),
            packets_per_run: n,
            drlb: Spread::of(d),
            floor_pass: Spread::of(a),
            floor_swap: Spread::of(s),
            floor_insert: new_flows.then(|| Spread::of(c)),
            floor_record: new_flows.then(|| Spread::of(r)),
        })
    };
    let syn_n = opts.syn_flows;
    let rs = opts.real_servers;
    for size in [Size::Min64, Size::Imix] {
        figures.push(trace_case(
            &format!("SYN storm, wlc over {rs}"),
            size,
            &mut |next| {
                let f = traffic::syn_storm(Family::V4, *next, syn_n, size);
                *next += syn_n;
                f
            },
            &[Verdict::TxScheduled],
            true,
        )?);
    }
    figures.push(trace_case(
        &format!("IPv6 SYN storm, wlc over {rs}"),
        Size::Min64,
        &mut |next| {
            let f = traffic::syn_storm(Family::V6, *next, syn_n, Size::Min64);
            *next += syn_n;
            f
        },
        &[Verdict::TxScheduled],
        true,
    )?);
    let small = opts.small_flows;
    figures.push(trace_case(&format!("IPv6 established, {small} flows"), Size::Min64, &mut |_| data_small6.clone(), &[Verdict::TxForwarded], false)?);
    figures.push(trace_case(&format!("established, {small} flows"), Size::Min64, &mut |_| data_small.clone(), &[Verdict::TxForwarded], false)?);
    figures.push(trace_case(&format!("established, {small} flows"), Size::Imix, &mut |_| data_small_imix.clone(), &[Verdict::TxForwarded], false)?);
    let large = opts.large_flows;
    figures.push(trace_case(&format!("established, {large} flows"), Size::Min64, &mut |_| data_large.clone(), &[Verdict::TxForwarded], false)?);
    figures.push(trace_case(
        "realistic mix, 5 % new flows",
        Size::Imix,
        &mut |next| {
            let f = traffic::realistic(0, small, *next, small, Size::Imix);
            *next += small / 20 + 1;
            f
        },
        &[Verdict::TxForwarded, Verdict::TxScheduled],
        false,
    )?);
    if let Some(path) = &opts.pcap {
        let frames = pcap_frames(path, opts.pcap_rewrite_vip)?;
        b.progress.set_message("pcap replay");
        let (mut d, mut a, mut s) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..opts.runs {
            // A capture holds every kind of verdict: time each frame whatever it gets.
            let mut t = [0.0; 3];
            for f in &frames {
                t[0] += b.run(PROGRAM_LB, f, 1)?.1;
                t[1] += b.run(PROGRAM_PASS, f, 1)?.1;
                t[2] += b.run(PROGRAM_FLOOR_SWAP, f, 1)?.1;
            }
            d.push(t[0] / frames.len() as f64);
            a.push(t[1] / frames.len() as f64);
            s.push(t[2] / frames.len() as f64);
        }
        figures.push(Figure {
            name: format!("pcap {}", path.display()),
            mode: "trace".into(),
            size: "as captured".into(),
            packets_per_run: frames.len() as u64,
            drlb: Spread::of(d),
            floor_pass: Spread::of(a),
            floor_swap: Spread::of(s),
            floor_insert: None,
            floor_record: None,
        });
    }
    b.progress.finish_and_clear();
    drop(b);

    let live = if opts.live { Some(live::run(&mut dp, &mut tools, opts)?) } else { None };

    let find = |name: &str, mode: &str, size: &str| {
        figures.iter().find(|f| f.name.starts_with(name) && f.mode == mode && f.size == size).map(Figure::ratio)
    };
    let mut ratios = HashMap::new();
    if let Some(r) = find("established flow", "hot loop", "64B") {
        ratios.insert("established".to_string(), r);
    }
    if let Some(r) = find("SYN storm", "trace", "64B") {
        ratios.insert(format!("syn_wlc{}", opts.real_servers), r);
    }
    // How many floor (b)s the connection-table insert alone costs: a lower bound for any
    // SYN that records its connection in a kernel LRU hash.
    if let Some(f) = figures.iter().find(|f| f.name.starts_with("SYN storm") && f.size == "64B")
        && let Some(c) = f.floor_insert
    {
        ratios.insert("syn_insert_floor".to_string(), c.median / f.floor_swap.median);
    }
    if let Some(f) = figures.iter().find(|f| f.name.starts_with("SYN storm") && f.size == "64B")
        && let Some(d) = f.floor_record
    {
        ratios.insert("syn_record_floor".to_string(), d.median / f.floor_swap.median);
    }
    if let Some(r) = find("non-VIP", "hot loop", "64B") {
        ratios.insert("non_vip".to_string(), r);
    }
    if let Some(r) = find("IPv6 established flow", "hot loop", "64B") {
        ratios.insert("established_v6".to_string(), r);
    }
    if let Some(r) = find("IPv6 SYN storm", "trace", "64B") {
        ratios.insert(format!("syn_wlc{}_v6", opts.real_servers), r);
    }
    if let Some(r) = find("IPv6 non-VIP", "hot loop", "64B") {
        ratios.insert("non_vip_v6".to_string(), r);
    }
    if let Some(l) = &live {
        ratios.insert("live".to_string(), l.ratio());
        if let Some(f) = &l.flood {
            ratios.insert("live_syn_flood".to_string(), f.established_mpps.median / l.drlb_mpps.median);
        }
    }
    let targets = [
        ("established", "<= 2.0 x floor (b)"),
        ("syn_wlc16", "<= 4.0 x floor (b)"),
        ("non_vip", "<= 1.5 x floor (b)"),
        ("established_v6", "<= 2.0 x floor (b)"),
        ("syn_wlc16_v6", "<= 4.0 x floor (b)"),
        ("non_vip_v6", "<= 1.5 x floor (b)"),
        ("live", ">= 0.80 of the bare MAC-swap program"),
        ("syn_insert_floor", "none: floor (c) / floor (b), what a connection-table insert costs"),
        ("syn_record_floor", "none: floor (d) / floor (b), what writing one entry of per-flow state costs"),
        ("live_syn_flood", "none: established Mpps while the other core floods SYNs / without"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let sync = match drain {
        Some(d) => {
            let events = d.stop();
            ensure!(events > 0, "connection sync was on, but the program reported no connection");
            true
        }
        None => false,
    };
    Ok(Results { figures, live, ratios, targets, sync })
}

/// Reads the connection-event ring while the benchmark runs, as sync's reader would.
struct RingDrain {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl RingDrain {
    fn start(dp: &mut Dataplane) -> Result<RingDrain> {
        use std::sync::atomic::Ordering;
        let mut ring = dp.take_conn_events()?;
        dp.set_conn_events(true)?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut n = 0u64;
            loop {
                let mut got = false;
                while let Some(item) = ring.next() {
                    std::hint::black_box(&*item);
                    n += 1;
                    got = true;
                }
                if flag.load(Ordering::Relaxed) {
                    return n;
                }
                if !got {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
        });
        Ok(RingDrain { stop, thread })
    }

    /// Events read.
    fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

/// Frames of a capture, optionally with every IPv4 destination set to the bench VIP.
pub fn pcap_frames(path: &std::path::Path, rewrite_vip: bool) -> Result<Vec<Vec<u8>>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader = pcap_file::pcap::PcapReader::new(file).with_context(|| format!("{} is not a pcap file", path.display()))?;
    let mut frames = Vec::new();
    while let Some(pkt) = reader.next_packet() {
        let mut f = pkt?.data.into_owned();
        if f.len() < 14 {
            continue;
        }
        if rewrite_vip {
            if let Some((lb_common::packet::ETH_P_IP, l3)) = lb_common::packet::ethernet(f.as_slice())
                && f.len() >= l3 + 20
            {
                f[l3 + 16..l3 + 20].copy_from_slice(&traffic::VIP.octets());
            }
        }
        frames.push(f);
    }
    ensure!(!frames.is_empty(), "{} holds no Ethernet frames", path.display());
    Ok(frames)
}
