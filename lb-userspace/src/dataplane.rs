//! The XDP object in the kernel: loading, attaching, programming its maps, reading counters.

use anyhow::{Context as _, Result, bail};
use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray};
use aya::programs::{Xdp, XdpMode as AyaXdpMode, xdp::XdpLinkId};
use aya::{Ebpf, EbpfLoader};
use lb_common::maps::{
    Backend, Service, ServiceKey, Vip, VipKey, MAP_BACKENDS, MAP_SERVICES, MAP_STATS, MAP_VIPS,
};
use lb_common::stats::{Stat, STAT_COUNT};
use log::{info, warn};

use crate::config::XdpMode;
use crate::tables::Tables;

/// The compiled dataplane, embedded so that `drlb` is one self-contained binary.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf"));

/// The balancing program's name in the object.
pub const PROGRAM_LB: &str = "drlb_xdp";
/// An XDP_PASS-only program (for veth peers in the lab).
pub const PROGRAM_PASS: &str = "drlb_pass";

/// Attachment mode actually in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachedMode {
    Native,
    Generic,
}

impl std::fmt::Display for AttachedMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AttachedMode::Native => "native",
            AttachedMode::Generic => "generic",
        })
    }
}

/// Counters summed over CPUs, indexed like [`Stat::ALL`].
pub type Counters = [u64; STAT_COUNT as usize];

/// drlb's loaded dataplane.
pub struct Dataplane {
    ebpf: Ebpf,
    /// Slots written by the last `apply`, so stale ones are cleared next time.
    written_backends: Vec<u32>,
}

impl Dataplane {
    /// Loads the object and its programs into the kernel (verifier runs here).
    pub fn load() -> Result<Self> {
        let mut ebpf = EbpfLoader::new()
            .load(EBPF_OBJECT)
            .context("loading drlb's BPF object (are you root, and is this kernel 5.10 or newer?)")?;
        for name in [PROGRAM_LB, PROGRAM_PASS] {
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .with_context(|| format!("program {name} missing from the object"))?
                .try_into()?;
            prog.load().with_context(|| format!("the kernel verifier rejected {name}"))?;
        }
        Ok(Dataplane { ebpf, written_backends: Vec::new() })
    }

    pub fn program(&self, name: &str) -> Result<&Xdp> {
        Ok(self.ebpf.program(name).with_context(|| format!("no program {name}"))?.try_into()?)
    }

    fn program_mut(&mut self, name: &str) -> Result<&mut Xdp> {
        Ok(self.ebpf.program_mut(name).with_context(|| format!("no program {name}"))?.try_into()?)
    }

    /// Attaches `program` to `interface` in `mode`. `Auto` tries native first and falls
    /// back to generic, logging why.
    pub fn attach(&mut self, program: &str, interface: &str, mode: XdpMode) -> Result<(XdpLinkId, AttachedMode)> {
        let prog = self.program_mut(program)?;
        let native = |prog: &mut Xdp| {
            prog.attach(interface, AyaXdpMode::Driver)
                .with_context(|| format!("attaching XDP in native (driver) mode to {interface}"))
        };
        let generic = |prog: &mut Xdp| {
            prog.attach(interface, AyaXdpMode::Skb)
                .with_context(|| format!("attaching XDP in generic (SKB) mode to {interface}"))
        };
        match mode {
            XdpMode::Native => Ok((native(prog)?, AttachedMode::Native)),
            XdpMode::Generic => Ok((generic(prog)?, AttachedMode::Generic)),
            XdpMode::Auto => match native(prog) {
                Ok(link) => Ok((link, AttachedMode::Native)),
                Err(e) => {
                    warn!("native XDP is not available on {interface} ({e:#}); falling back to generic mode, which is slower");
                    Ok((generic(prog)?, AttachedMode::Generic))
                }
            },
        }
    }

    pub fn detach(&mut self, program: &str, link: XdpLinkId) -> Result<()> {
        self.program_mut(program)?.detach(link).context("detaching XDP")?;
        Ok(())
    }

    /// Makes the maps hold exactly `tables`. Backends are written before the services that
    /// point at them, and removals happen last, so a packet never meets a dangling slot.
    pub fn apply(&mut self, tables: &Tables) -> Result<()> {
        let previously_written = std::mem::take(&mut self.written_backends);
        {
            let mut backends: Array<&mut MapData, Backend> = Array::try_from(self.map_mut(MAP_BACKENDS)?)?;
            for (slot, b) in &tables.backends {
                backends.set(*slot, *b, 0).with_context(|| format!("writing backend slot {slot}"))?;
            }
            for slot in previously_written {
                if !tables.backends.contains_key(&slot) {
                    backends.set(slot, Backend::default(), 0)?;
                }
            }
        }
        self.written_backends = tables.backends.keys().copied().collect();
        {
            let mut services: BpfHashMap<&mut MapData, ServiceKey, Service> =
                BpfHashMap::try_from(self.map_mut(MAP_SERVICES)?)?;
            for (k, v) in &tables.services {
                services.insert(k, v, 0).context("writing a service")?;
            }
            let stale: Vec<ServiceKey> = services
                .keys()
                .filter_map(|k| k.ok())
                .filter(|k| !tables.services.iter().any(|(t, _)| t == k))
                .collect();
            for k in stale {
                services.remove(&k)?;
            }
        }
        {
            let mut vips: BpfHashMap<&mut MapData, VipKey, Vip> = BpfHashMap::try_from(self.map_mut(MAP_VIPS)?)?;
            for (addr, v) in &tables.vips {
                vips.insert(VipKey { addr: *addr }, v, 0).context("writing a VIP")?;
            }
            let stale: Vec<VipKey> =
                vips.keys().filter_map(|k| k.ok()).filter(|k| !tables.vips.contains_key(&k.addr)).collect();
            for k in stale {
                vips.remove(&k)?;
            }
        }
        Ok(())
    }

    /// Per-reason packet counts, summed over CPUs.
    pub fn counters(&self) -> Result<Counters> {
        let stats: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.ebpf.map(MAP_STATS).context("no stats map")?)?;
        let mut out = [0u64; STAT_COUNT as usize];
        for (i, total) in out.iter_mut().enumerate() {
            *total = stats.get(&(i as u32), 0)?.iter().sum();
        }
        Ok(out)
    }

    fn map_mut(&mut self, name: &str) -> Result<&mut aya::maps::Map> {
        match self.ebpf.map_mut(name) {
            Some(m) => Ok(m),
            None => bail!("map {name} missing from the object"),
        }
    }
}

/// "tx_forwarded=12 pass_arp=3 ..." (non-zero counters only, or "no packets").
pub fn format_counters(c: &Counters) -> String {
    let parts: Vec<String> =
        Stat::ALL.iter().filter(|s| c[s.index() as usize] > 0).map(|s| format!("{}={}", s.name(), c[s.index() as usize])).collect();
    if parts.is_empty() { "no packets".into() } else { parts.join(" ") }
}

/// Logs the counters at info level.
pub fn log_counters(c: &Counters) {
    info!("counters: {}", format_counters(c));
}
