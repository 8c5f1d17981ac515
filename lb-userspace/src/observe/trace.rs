//! `drlb trace`: the dataplane's decision for each VIP-bound packet, live, from the pinned
//! ring buffer. The program reports only while a trace runs (it checks a switch for VIP
//! packets only), so tracing costs nothing when nobody listens.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use aya::maps::{Array, MapData, RingBuf};
use lb_common::maps::{TraceEvent, MAP_TRACE, MAP_TRACE_ON};
use lb_common::verdict::{Verdict, XDP_DROP, XDP_PASS};

use crate::control::config::Config;
use crate::kernel::mac::format_mac;
use crate::observe::status::scheduler_name;
use lb_common::addr::to_ip as ip_of;
use crate::kernel::maps::{self, Pinned};


/// "SYN", "PSH|ACK", "FIN|ACK", "RST" ...
pub fn tcp_flags(f: u8) -> String {
    let names = [(0x02, "SYN"), (0x01, "FIN"), (0x04, "RST"), (0x08, "PSH"), (0x20, "URG"), (0x10, "ACK")];
    let parts: Vec<&str> = names.iter().filter(|(b, _)| f & b != 0).map(|(_, n)| *n).collect();
    if parts.is_empty() { "NONE".into() } else { parts.join("|") }
}

/// What each reason means to an operator.
pub fn explain(stat: Verdict) -> &'static str {
    match stat {
        Verdict::TxForwarded => "established",
        Verdict::TxScheduled => "new",
        Verdict::PassArp => "ARP",
        Verdict::PassNoProgram => "no program for this kind of packet (dataplane being replaced?)",
        Verdict::PassOtherL3 => "not IP",
        Verdict::PassNotVip => "not for a VIP",
        Verdict::PassVipNoService => "no service on this port: the director's own",
        Verdict::PassMalformed => "malformed",
        Verdict::DropNoRealServer => "no usable real server",
        Verdict::DropTruncatedL4 => "truncated header",
        Verdict::DropFragment => "fragment",
        Verdict::DropBackendMissing => "real server has no MAC (unresolved)",
        Verdict::DropNoConnection => "no connection (non-SYN)",
        Verdict::DropConnTableFull => "connection table full",
        Verdict::TxIcmpForwarded => "ICMP error about this connection",
        Verdict::PassIcmpUnknown => "ICMP error about no known connection",
        Verdict::DropExtHeaders => "too many IPv6 extension headers",
        Verdict::PassOtherHost => "frame for another host's MAC (flooded by a switch)",
    }
}

struct Names {
    maps: Pinned,
    config: Option<Config>,
}

impl Names {
    fn line(&self, ev: &TraceEvent) -> String {
        let endpoint = |a: &lb_common::addr::Addr16, port: u16| match ip_of(a) {
            Some(ip) => std::net::SocketAddr::new(ip, port).to_string(),
            None => format!("?:{port}"),
        };
        let stat = Verdict::ALL.get(ev.stat as usize).copied().unwrap_or(Verdict::PassMalformed);
        let proto = if ev.proto == 6 { "tcp" } else { "udp" };
        let what = match stat {
            // The event names the connection the error is about.
            Verdict::TxIcmpForwarded | Verdict::PassIcmpUnknown => "ICMP-error".to_string(),
            _ if ev.proto == 6 => tcp_flags(ev.tcp_flags),
            _ => "UDP".to_string(),
        };
        let head = format!("{what} {} -> {} {proto}", endpoint(&ev.client, ev.cport), endpoint(&ev.vip, ev.vport));
        match stat.xdp_action() {
            XDP_DROP => format!("{head} => DROP {}", explain(stat)),
            XDP_PASS => format!("{head} => PASS {}", explain(stat)),
            _ => {
                let b = maps::backend(&self.maps, ev.slot).unwrap_or_default();
                let addr: Option<IpAddr> = ip_of(&b.addr);
                let name = addr
                    .and_then(|a| {
                        self.config.as_ref()?.services.iter().flat_map(|s| &s.real_servers).find(|r| r.address == a)?.name.clone()
                    })
                    .unwrap_or_else(|| "rs".into());
                let sched = maps::service(&self.maps, ev.service).map(|s| scheduler_name(s.scheduler)).unwrap_or("?");
                let why = match stat {
                    Verdict::TxIcmpForwarded => "ICMP error, to the connection's server".to_string(),
                    _ if ev.new_conn != 0 => format!("new, {sched}"),
                    _ => "established".into(),
                };
                format!(
                    "{head} => {name} {} {} XDP_TX ({why})",
                    addr.map(|a| a.to_string()).unwrap_or_default(),
                    format_mac(&b.mac())
                )
            }
        }
    }
}

/// Prints decisions until `count` were printed, `limit` passed or `stop` is set.
pub fn run(dir: &Path, config: Option<Config>, vip: Option<IpAddr>, count: Option<usize>, limit: Option<Duration>, stop: Arc<AtomicBool>) -> Result<usize> {
    let mut maps = Pinned::open(dir)?;
    let mut ring = RingBuf::try_from(maps.take(MAP_TRACE)?)?;
    let mut switch: Array<MapData, u32> = Array::try_from(maps.take(MAP_TRACE_ON)?)?;
    let names = Names { maps, config };
    // Drain what an earlier trace left, then switch on.
    while ring.next().is_some() {}
    switch.set(0, 1, 0).context("switching tracing on")?;
    eprintln!("drlb trace: tracing VIP-bound packets at {} (Ctrl-C to stop)", dir.display());
    let started = Instant::now();
    let mut printed = 0;
    let result = (|| -> Result<()> {
        loop {
            let mut got = false;
            while let Some(item) = ring.next() {
                got = true;
                if item.len() < std::mem::size_of::<TraceEvent>() {
                    continue;
                }
                // SAFETY: the program writes whole TraceEvents; read_unaligned copies one out.
                let ev: TraceEvent = unsafe { std::ptr::read_unaligned(item.as_ptr() as *const TraceEvent) };
                if let Some(v) = vip
                    && ip_of(&ev.vip) != Some(v)
                {
                    continue;
                }
                println!("{}", names.line(&ev));
                printed += 1;
                if count.is_some_and(|c| printed >= c) {
                    return Ok(());
                }
            }
            if stop.load(Ordering::SeqCst) || limit.is_some_and(|l| started.elapsed() >= l) {
                return Ok(());
            }
            if !got {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    })();
    let _ = switch.set(0, 0, 0);
    result.map(|()| printed)
}
