//! The XDP object in the kernel: loading, attaching, programming its maps, reading counters.

use anyhow::{Context as _, Result, bail, ensure};
use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, ProgramArray};
use std::path::{Path, PathBuf};

use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{Xdp, XdpMode as AyaXdpMode, xdp::{XdpLink, XdpLinkId}};
use aya::{Ebpf, EbpfLoader};

use lb_common::conn::{Conn, ConnKey};
use lb_common::halfopen::{self, HalfOpen};
use lb_common::maps::{
    Backend, ConnCounts, Persist, SchedState, ServiceKey, ServiceSlot, Vip, VipKey, MAP_BACKENDS, MAP_MEMBERS,
    MAP_PERSIST, MAP_HALF_OPEN, ALL_MAPS, MAP_META, META_LAYOUT_ENTRIES, layout, MAP_BENCH_RX, MAP_CONNS, MAP_CONN_COUNTS, MAP_FLOOR_CONNS, MAP_SCHED_STATE, MAP_SCHED_TABLE, MAP_SERVICES, MAP_SERVICE_IDS, MAP_VIPS, MAP_VIP_FILTER,
};
use lb_common::verdict::Verdict;
use tracing::{info, warn};

use crate::control::config::XdpMode;
use crate::kernel::content::MapContent;

/// The compiled dataplane, embedded so that `drlb` is one self-contained binary: what
/// `drlb run` loads (the balancer and its clock).
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf"));
/// The tools object: the lab's and the benchmark's programs ([`Tools`]).
pub static TOOLS_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf-tools"));

/// The program attached to the interface: the dispatcher, which tail-calls the programs of
/// [`JUMP_PROGRAMS`] through `DRLB_JUMP`. Tests and the benchmark run it too, so that every
/// frame takes the path it takes on the wire.
pub const PROGRAM_LB: &str = "drlb_xdp";
/// The programs the dispatcher jumps to, by their `DRLB_JUMP` slot.
pub const JUMP_PROGRAMS: [(u32, &str); lb_common::maps::JUMP_SLOTS as usize] = [
    (lb_common::maps::JUMP_V4, "drlb_xdp_v4"),
    (lb_common::maps::JUMP_V6, "drlb_xdp_v6"),
    (lb_common::maps::JUMP_ICMP, "drlb_xdp_icmp"),
];
/// Publishes the dataplane clock (see [`Dataplane::now`]).
pub const PROGRAM_CLOCK: &str = "drlb_clock";
/// Tools: XDP_PASS only (for veth peers in the lab; benchmark floor (a)).
pub const PROGRAM_PASS: &str = "drlb_pass";
/// Tools: benchmark floor (b), swap MACs and XDP_TX.
pub const PROGRAM_FLOOR_SWAP: &str = "drlb_floor_swap";
/// Tools: benchmark floor (c), a connection-table lookup and insert, then floor (b).
pub const PROGRAM_FLOOR_INSERT: &str = "drlb_floor_insert";
/// Tools: benchmark floor (d), one 64-byte entry at the flow's hash read and written, then
/// floor (b).
pub const PROGRAM_FLOOR_RECORD: &str = "drlb_floor_record";
/// Tools: benchmark generator (XDP_TX unchanged) and sink (count, XDP_DROP).
pub const PROGRAM_BENCH_TX: &str = "drlb_bench_tx";
pub const PROGRAM_BENCH_SINK: &str = "drlb_bench_sink";
pub const PROGRAM_BENCH_SYN_TX: &str = "drlb_bench_syn_tx";

/// Loads and attaches XDP programs of an object, each attachment held by the object
/// (detached when it is dropped).
fn load_programs(ebpf: &mut Ebpf, names: &[&str]) -> Result<()> {
    for name in names {
        let prog: &mut Xdp = ebpf
            .program_mut(name)
            .with_context(|| format!("program {name} missing from the object"))?
            .try_into()?;
        prog.load().with_context(|| format!("the kernel verifier rejected {name}"))?;
    }
    Ok(())
}

/// Points every slot of `DRLB_JUMP` at its program of `ebpf` (loaded and verified). With a
/// pinned table a dispatcher still attached from the previous run jumps to these programs
/// from here on, which is safe because the layout check proved the maps mean the same.
fn fill_jump_table(ebpf: &mut Ebpf) -> Result<()> {
    let mut fds = Vec::new();
    for (slot, name) in JUMP_PROGRAMS {
        let prog: &Xdp = ebpf.program(name).with_context(|| format!("program {name} missing from the object"))?.try_into()?;
        fds.push((slot, prog.fd()?.try_clone().context("duplicating a program fd")?));
    }
    let map = ebpf.map_mut(lb_common::maps::MAP_JUMP).context("map DRLB_JUMP missing from the object")?;
    let mut jump: ProgramArray<&mut MapData> = ProgramArray::try_from(map)?;
    for (slot, fd) in &fds {
        jump.set(*slot, fd, 0).with_context(|| format!("filling slot {slot} of DRLB_JUMP"))?;
    }
    Ok(())
}

/// Attaches `program` of `ebpf` to `interface` in `mode`. `Auto` tries native first and
/// falls back to generic, logging why.
fn attach_program(ebpf: &mut Ebpf, program: &str, interface: &str, mode: XdpMode) -> Result<(XdpLinkId, AttachedMode)> {
    let prog: &mut Xdp = ebpf.program_mut(program).with_context(|| format!("no program {program}"))?.try_into()?;
    let native = |prog: &mut Xdp| {
        crate::kernel::privileges::with_hint(
            prog.attach(interface, AyaXdpMode::Driver).with_context(|| format!("attaching XDP in native (driver) mode to {interface}")),
            &[crate::kernel::privileges::CAP_NET_ADMIN],
        )
    };
    let generic = |prog: &mut Xdp| {
        crate::kernel::privileges::with_hint(
            prog.attach(interface, AyaXdpMode::Skb).with_context(|| format!("attaching XDP in generic (SKB) mode to {interface}")),
            &[crate::kernel::privileges::CAP_NET_ADMIN],
        )
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

/// The tools object loaded: the lab's XDP_PASS peer program and the benchmark's floors,
/// generator and sink. Never loaded by `drlb run`.
pub struct Tools {
    ebpf: Ebpf,
}

impl Tools {
    /// Loads the tools, with floor (c)'s connection table sized `floor_conn_table_size`
    /// (the benchmark sizes it like the balancer's).
    pub fn load(floor_conn_table_size: u32) -> Result<Tools> {
        let mut loader = EbpfLoader::new();
        loader.map_max_entries(MAP_FLOOR_CONNS, floor_conn_table_size.max(1));
        let mut ebpf = loader.load(TOOLS_OBJECT).context("loading drlb's tools object")?;
        load_programs(&mut ebpf, &[PROGRAM_PASS, PROGRAM_FLOOR_SWAP, PROGRAM_FLOOR_INSERT, PROGRAM_FLOOR_RECORD, PROGRAM_BENCH_TX, PROGRAM_BENCH_SYN_TX, PROGRAM_BENCH_SINK])?;
        Ok(Tools { ebpf })
    }

    pub fn program(&self, name: &str) -> Result<&Xdp> {
        Ok(self.ebpf.program(name).with_context(|| format!("no program {name}"))?.try_into()?)
    }

    pub fn attach(&mut self, program: &str, interface: &str, mode: XdpMode) -> Result<(XdpLinkId, AttachedMode)> {
        attach_program(&mut self.ebpf, program, interface, mode)
    }

    pub fn detach(&mut self, program: &str, link: XdpLinkId) -> Result<()> {
        let prog: &mut Xdp = self.ebpf.program_mut(program).with_context(|| format!("no program {program}"))?.try_into()?;
        prog.detach(link).context("detaching XDP")?;
        Ok(())
    }

    /// Frames other than SYNs the benchmark sink counted, over CPUs.
    pub fn bench_rx(&self) -> Result<u64> {
        self.bench_rx_of(lb_common::maps::BENCH_RX_OTHER)
    }

    /// SYNs counted by the benchmark's sink.
    pub fn bench_rx_syns(&self) -> Result<u64> {
        self.bench_rx_of(lb_common::maps::BENCH_RX_SYN)
    }

    fn bench_rx_of(&self, index: u32) -> Result<u64> {
        let map = self.ebpf.map(MAP_BENCH_RX).context("map DRLB_BENCH_RX missing from the tools object")?;
        let m: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map)?;
        Ok(m.get(&index, 0)?.iter().sum())
    }
}

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

pub use crate::kernel::maps::{BackendCounters, Counters};
use crate::kernel::maps::{self, MapSource};

/// drlb's loaded dataplane.
pub struct Dataplane {
    pub(super) ebpf: Ebpf,
    /// What the last `apply` wrote, so the next one writes only differences and clears
    /// what is gone.
    pub(super) applied: MapContent,
    /// Where maps and the XDP link are pinned, if they are.
    pin_dir: Option<PathBuf>,
    /// Ticks per second of the dataplane clock (the kernel's HZ).
    hz: u32,
    /// The balancer's XDP attachment.
    attachment: Option<Attachment>,
    /// When the last `apply` finished (see [`GRACE`]).
    last_apply: Option<std::time::Instant>,
    /// The last `apply` failed part way: the next rewrites every entry.
    rewrite_all: bool,
}

enum Attachment {
    /// Held by the program object: detached when it is dropped (tests, the lab's peer).
    Managed(&'static str, XdpLinkId),
    /// A bpf_link pinned in bpffs: stays attached while the pin exists, whoever holds it.
    Pinned(FdLink),
}

/// Whether `open` created the dataplane or took over a pinned one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Created,
    /// A pinned dataplane with this layout, left by an earlier controller: its connections
    /// and counters continue.
    Adopted,
}

/// How long a version the dataplane stopped using stays untouched before the next update
/// may write it. A program run takes microseconds; this is thousands of them.
pub const GRACE: std::time::Duration = std::time::Duration::from_millis(10);

/// Makes backend `slot` hold `want` through [`Backend::staged`]: a new MAC into the entry
/// not in use, then one word switches to it.
fn write_backend(m: &mut Array<&mut MapData, Backend>, slot: u32, want: &Backend) -> Result<()> {
    let current = m.get(&slot, 0).with_context(|| format!("reading backend slot {slot}"))?;
    let (writes, n) = current.staged(want);
    for w in &writes[..n] {
        m.set(slot, *w, 0).with_context(|| format!("writing backend slot {slot}"))?;
    }
    Ok(())
}

/// A removal of a key already gone is not an error.
fn remove_if_present(r: std::result::Result<(), aya::maps::MapError>) -> std::result::Result<(), aya::maps::MapError> {
    match r {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        other => other,
    }
}

/// The layout recorded in a pin directory, if there is one.
/// Whether this drlb can take over the dataplane pinned at `dir` (SIGUSR2's hand-over, a
/// package upgrade): Ok when nothing is pinned or the layouts match; otherwise why not.
pub fn can_adopt(dir: &Path) -> Result<()> {
    match pinned_layout(dir)? {
        Some(found) if found != layout() => bail!(
            "the dataplane pinned at {} has layout {found:?}, this drlb uses {:?}: it cannot take it over; a restart \
             (`systemctl restart drlb`) replaces it and drops the connections it tracks",
            dir.display(),
            layout()
        ),
        _ => Ok(()),
    }
}

pub fn pinned_layout(dir: &Path) -> Result<Option<[u32; META_LAYOUT_ENTRIES]>> {
    let path = dir.join(MAP_META);
    if !path.exists() {
        return Ok(None);
    }
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    let map = aya::maps::Map::Array(data);
    let meta: Array<&MapData, u32> = Array::try_from(&map)?;
    let mut out = [0u32; META_LAYOUT_ENTRIES];
    for (i, v) in out.iter_mut().enumerate() {
        *v = meta.get(&(i as u32), 0)?;
    }
    Ok(Some(out))
}

/// Removes a pinned dataplane: the link pin first (which detaches XDP once no process
/// holds it), then the map pins and the directory. Returns what it removed.
pub fn remove_pins(dir: &Path) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    let link = dir.join(LINK_PIN);
    if link.exists() {
        std::fs::remove_file(&link).with_context(|| format!("removing {}", link.display()))?;
        removed.push(LINK_PIN.to_string());
    }
    if dir.exists() {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            std::fs::remove_file(entry.path()).with_context(|| format!("removing {}", entry.path().display()))?;
            removed.push(entry.file_name().to_string_lossy().into_owned());
        }
        std::fs::remove_dir(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(removed)
}

/// Name of the pinned XDP link in a pin directory.
pub const LINK_PIN: &str = "link";

/// Monotonic nanoseconds, the clock `bpf_ktime_get_ns()` reads.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl MapSource for Dataplane {
    fn map(&self, name: &str) -> Result<&aya::maps::Map> {
        Dataplane::map(self, name)
    }
}

impl Dataplane {
    /// Loads the object and its programs into the kernel (verifier runs here), with the
    /// connection table sized `conn_table_size` entries, maps not pinned, for no interface:
    /// frames to any MAC are taken.
    pub fn load_with(conn_table_size: u32) -> Result<Self> {
        Ok(Self::open(conn_table_size, None, None, false)?.0)
    }

    /// [`Dataplane::load_with`] for a director whose MAC is `own_mac`: VIP-bound frames to
    /// another unicast MAC are passed ([`lb_common::verdict::Verdict::PassOtherHost`]).
    pub fn load_for(conn_table_size: u32, own_mac: crate::kernel::mac::Mac) -> Result<Self> {
        Ok(Self::open(conn_table_size, Some(own_mac), None, false)?.0)
    }

    /// Loads the dataplane with its maps pinned in `pin_dir` (on bpffs). A dataplane pinned
    /// there with this layout is adopted: its maps — connections, counters — are reused,
    /// and `attach` takes over its XDP link without a gap. One with another layout is
    /// refused with an explanation, or removed first if `replace`. `own_mac`: the MAC of
    /// the interface it will be attached to (see [`Dataplane::load_for`]).
    pub fn open(conn_table_size: u32, own_mac: Option<crate::kernel::mac::Mac>, pin_dir: Option<&Path>, replace: bool) -> Result<(Self, Origin)> {
        let mut origin = Origin::Created;
        let mut loader = EbpfLoader::new();
        loader.map_max_entries(MAP_CONNS, conn_table_size);
        let own = own_mac.map_or([0u32; 2], lb_common::maps::own_mac_words);
        loader.override_global(lb_common::maps::GLOBAL_OWN_MAC, &own, true);
        let pin_paths: Vec<(&'static str, PathBuf)> = match pin_dir {
            Some(dir) => ALL_MAPS.iter().map(|m| (*m, dir.join(m))).collect(),
            None => Vec::new(),
        };
        if let Some(dir) = pin_dir {
            crate::kernel::pins::prepare_dir(dir)?;
            match pinned_layout(dir)? {
                Some(found) if found == layout() => origin = Origin::Adopted,
                Some(found) => {
                    if !replace {
                        bail!(
                            "a drlb dataplane is pinned at {} with layout {:?}, but this drlb uses layout {:?}: it cannot \
                             take it over. Remove it with `drlb stop` (or start with --replace-dataplane); either drops \
                             the connections it tracks",
                            dir.display(),
                            found,
                            layout()
                        );
                    }
                    warn!("replacing the dataplane pinned at {} (layout {found:?}, ours {:?}): its connections are dropped", dir.display(), layout());
                    remove_pins(dir)?;
                }
                None if dir.exists() && dir.join(LINK_PIN).exists() => {
                    bail!("{} holds an XDP link but no layout record; remove it with `drlb stop`", dir.display());
                }
                None => {}
            }
            crate::kernel::pins::prepare_dir(dir)?;
        }
        for (name, path) in &pin_paths {
            loader.map_pin_path(name, path.as_path());
        }
        let loaded = (|| -> Result<Dataplane> {
            use crate::kernel::privileges::{CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON, with_hint};
            let loaded = loader.load(EBPF_OBJECT).context("loading drlb's BPF object (is this kernel 5.10 or newer?)");
            let loaded = match (loaded, crate::kernel::privileges::memlock_hint()) {
                (Err(e), Some(hint)) => Err(e.context(hint)),
                (other, _) => other,
            };
            let mut ebpf = with_hint(loaded, &[CAP_BPF])?;
            let mut programs = vec![PROGRAM_LB, PROGRAM_CLOCK];
            programs.extend(JUMP_PROGRAMS.iter().map(|(_, name)| *name));
            with_hint(load_programs(&mut ebpf, &programs), &[CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON])?;
            fill_jump_table(&mut ebpf)?;
            let mut dp = Dataplane {
                ebpf,
                applied: MapContent::default(),
                pin_dir: pin_dir.map(Path::to_owned),
                attachment: None,
                hz: 0,
                last_apply: None,
                rewrite_all: false,
            };
            dp.hz = dp.calibrate_clock().context("measuring the dataplane clock")?;
            if origin == Origin::Created && pin_dir.is_some() {
                let mut meta: Array<&mut MapData, u32> = Array::try_from(dp.map_mut(MAP_META)?)?;
                for (i, v) in layout().iter().enumerate() {
                    meta.set(i as u32, *v, 0)?;
                }
            }
            Ok(dp)
        })();
        match (loaded, pin_dir) {
            (Ok(dp), _) => Ok((dp, origin)),
            // Maps pinned by a load that failed half way would be taken for a dataplane of
            // another layout by the next start: a dataplane this call created goes whole.
            (Err(e), Some(dir)) if origin == Origin::Created => {
                if let Err(cleanup) = remove_pins(dir) {
                    warn!("could not remove what the failed load pinned at {}: {cleanup:#}", dir.display());
                }
                Err(e)
            }
            (Err(e), _) => Err(e),
        }
    }

    /// The tables an adopted dataplane's maps hold (so the next `apply` writes only what
    /// differs and clears what is gone), and the identities they use.
    pub fn adopt_tables(&mut self) -> Result<MapContent> {
        let mut t = MapContent::default();
        for (k, id) in maps::service_ids(self)? {
            t.service_ids.insert(k, id);
            let svc = maps::service(self, id)?;
            for (i, slot) in maps::members(self, &svc)? {
                t.members.insert(i, slot);
                t.backends.insert(slot, maps::backend(self, slot)?);
            }
            t.services.insert(id, svc);
        }
        {
            let vips: BpfHashMap<&MapData, VipKey, Vip> = BpfHashMap::try_from(self.map(MAP_VIPS)?)?;
            for (k, v) in vips.iter().filter_map(|r| r.ok()) {
                t.vips.insert(k.addr, v);
            }
        }
        let filter: Array<&MapData, u32> = Array::try_from(self.map(MAP_VIP_FILTER)?)?;
        for i in 0..lb_common::maps::VIP_FILTER_SIZE {
            let v = filter.get(&i, 0)?;
            if v != 0 {
                t.vip_filter.insert(i, v);
            }
        }
        // Draining servers are not members but still hold backend entries.
        for slot in 0..lb_common::maps::MAX_BACKENDS {
            let b = maps::backend(self, slot)?;
            if b.flags != 0 {
                t.backends.entry(slot).or_insert(b);
            }
        }
        self.applied = t.clone();
        Ok(t)
    }

    pub fn program(&self, name: &str) -> Result<&Xdp> {
        Ok(self.ebpf.program(name).with_context(|| format!("no program {name}"))?.try_into()?)
    }

    /// Instructions the kernel's verifier processed to accept each program of the balancer
    /// (reported by kernels 5.16+): how far each is from the verifier's budget of 1,000,000,
    /// which every scheduler loop draws on. `None` where the kernel does not say.
    pub fn verified_instructions(&self) -> Vec<(&'static str, Option<u32>)> {
        std::iter::once(PROGRAM_LB)
            .chain(JUMP_PROGRAMS.iter().map(|(_, name)| *name))
            .map(|name| (name, self.program(name).ok().and_then(|p| p.info().ok()).and_then(|i| i.verified_instruction_count())))
            .collect()
    }

    fn program_mut(&mut self, name: &str) -> Result<&mut Xdp> {
        Ok(self.ebpf.program_mut(name).with_context(|| format!("no program {name}"))?.try_into()?)
    }

    /// Attaches `program` to `interface` in `mode`, held by this object (detached on drop).
    /// `Auto` tries native first and falls back to generic, logging why.
    pub fn attach(&mut self, program: &str, interface: &str, mode: XdpMode) -> Result<(XdpLinkId, AttachedMode)> {
        attach_program(&mut self.ebpf, program, interface, mode)
    }

    /// Attaches the balancer to `interface`. With a pin directory the link is pinned there
    /// (forwarding outlives this process), and a link already pinned there is taken over by
    /// swapping in this program atomically — no packet goes unbalanced. Returns the mode,
    /// `None` when an existing attachment was taken over (its mode is kept).
    pub fn attach_balancer(&mut self, interface: &str, mode: XdpMode) -> Result<Option<AttachedMode>> {
        let Some(dir) = self.pin_dir.clone() else {
            let (id, m) = self.attach(PROGRAM_LB, interface, mode)?;
            self.attachment = Some(Attachment::Managed(PROGRAM_LB, id));
            return Ok(Some(m));
        };
        let path = dir.join(LINK_PIN);
        if path.exists() {
            let pinned = PinnedLink::from_pin(&path).with_context(|| format!("opening the pinned XDP link {}", path.display()))?;
            let link = XdpLink::try_from(FdLink::from(pinned)).context("the pinned link is not an XDP link")?;
            let prog = self.program_mut(PROGRAM_LB)?;
            let id = prog.attach_to_link(link).context("swapping the new program into the pinned XDP link")?;
            let link = prog.take_link(id)?;
            let fd: FdLink = link.try_into().context("XDP link without a bpf_link fd")?;
            self.attachment = Some(Attachment::Pinned(fd));
            return Ok(None);
        }
        let (id, m) = self.attach(PROGRAM_LB, interface, mode)?;
        let link = self.program_mut(PROGRAM_LB)?.take_link(id)?;
        let fd: FdLink = link.try_into().context(
            "this kernel attached XDP without a bpf_link (needs 5.9+), so the attachment cannot be pinned",
        )?;
        let pinned = fd.pin(&path).with_context(|| format!("pinning the XDP link at {}", path.display()))?;
        let owner = crate::kernel::pins::Owner::here(interface)?;
        owner.record(&mut Array::try_from(self.map_mut(MAP_META)?)?)?;
        self.attachment = Some(Attachment::Pinned(FdLink::from(pinned)));
        Ok(Some(m))
    }

    /// Detaches the balancer and removes every pin: the dataplane is gone.
    pub fn shut_down(&mut self) -> Result<()> {
        match self.attachment.take() {
            Some(Attachment::Managed(program, id)) => self.detach(program, id)?,
            Some(Attachment::Pinned(fd)) => drop(fd),
            None => {}
        }
        if let Some(dir) = &self.pin_dir {
            remove_pins(dir)?;
        }
        Ok(())
    }

    /// Leaves the pinned dataplane running without this process (upgrades, restarts).
    pub fn leave_running(mut self) {
        self.attachment = None;
        self.pin_dir = None;
    }

    pub fn detach(&mut self, program: &str, link: XdpLinkId) -> Result<()> {
        self.program_mut(program)?.detach(link).context("detaching XDP")?;
        Ok(())
    }

    fn map_mut(&mut self, name: &str) -> Result<&mut aya::maps::Map> {
        match self.ebpf.map_mut(name) {
            Some(m) => Ok(m),
            None => bail!("map {name} missing from the object"),
        }
    }

    /// The dataplane clock now, in the ticks connection entries and templates use.
    pub fn now(&self) -> Result<u64> {
        use aya::programs::{TestRun, TestRunOptions};
        let frame = [0u8; 64];
        self.program(PROGRAM_CLOCK)?
            .test_run(TestRunOptions { data_in: Some(&frame), ..TestRunOptions::new() })
            .context("reading the dataplane clock")?;
        let m: Array<&MapData, u64> = Array::try_from(self.map(lb_common::maps::MAP_CLOCK)?)?;
        Ok(m.get(&0, 0)?)
    }

    /// Ticks per second of the dataplane clock.
    pub fn hz(&self) -> u32 {
        self.hz
    }

    /// Measures the clock's rate over 100 ms and rounds it to the HZ values kernels use.
    fn calibrate_clock(&self) -> Result<u32> {
        let (t0, j0) = (std::time::Instant::now(), self.now()?);
        std::thread::sleep(std::time::Duration::from_millis(100));
        let (j1, dt) = (self.now()?, t0.elapsed().as_secs_f64());
        let measured = (j1 - j0) as f64 / dt;
        let hz = [100u32, 250, 300, 1000]
            .into_iter()
            .min_by(|a, b| (*a as f64 - measured).abs().total_cmp(&(*b as f64 - measured).abs()))
            .unwrap_or(1000);
        Ok(hz)
    }


    pub fn map(&self, name: &str) -> Result<&aya::maps::Map> {
        self.ebpf.map(name).with_context(|| format!("map {name} missing from the object"))
    }

    /// What the maps were last made to hold (after a failed write: the previous content, with
    /// what the failed one added).
    pub fn applied(&self) -> &MapContent {
        &self.applied
    }

    /// Makes the maps hold `tables`. Order matters for packets in flight: backends and
    /// scheduler tables first, then services, then the ids and VIPs that lead to them;
    /// removals last. A service whose scheduler input changed restarts its scheduler
    /// position (as IPVS does when a destination changes).
    ///
    /// No packet reads a multi-word value half written: a member list goes to its service's
    /// region not in use, scheduler tables to the half of their map not in use, services and
    /// backend MACs to the version not in use, and one word then switches each ([`ServiceSlot::staged`],
    /// [`Backend::staged`]). A version stops being current only at the next apply, which
    /// waits [`GRACE`] after this one so packets that read the old one are long done.
    ///
    /// If a write fails the maps hold a mix of old and new; the next apply rewrites every
    /// entry (not only the differences) and removes what neither needs.
    pub fn apply(&mut self, tables: &MapContent) -> Result<()> {
        if let Some(wait) = self.last_apply.and_then(|t| GRACE.checked_sub(t.elapsed())) {
            std::thread::sleep(wait);
        }
        let mut tables = tables.clone();
        for svc in tables.services.values_mut() {
            svc.ticks_per_sec = self.hz;
        }
        let old = std::mem::take(&mut self.applied);
        let full = std::mem::replace(&mut self.rewrite_all, true);
        let result = self.write(&old, &tables, full);
        self.last_apply = Some(std::time::Instant::now());
        match result {
            Ok(()) => {
                // lblc/lblcr entries of a service that is gone or schedules otherwise now are
                // not its state any more (IPVS frees a scheduler's data with it); the service's
                // id may be given to another.
                use lb_common::maps::Scheduler;
                let locality = |s: &lb_common::maps::Service| matches!(Scheduler::from_code(s.scheduler), Some(Scheduler::Lblc | Scheduler::Lblcr));
                let stale: Vec<u32> = old
                    .services
                    .iter()
                    .filter(|(id, s)| locality(s) && tables.services.get(id).is_none_or(|n| n.scheduler != s.scheduler))
                    .map(|(id, _)| *id)
                    .collect();
                if !stale.is_empty() {
                    if let Err(e) = self.forget_locality_of_services(&stale) {
                        warn!("removing lblc/lblcr entries of services that changed: {e:#}");
                    }
                }
                self.applied = tables;
                self.rewrite_all = false;
                Ok(())
            }
            Err(e) => {
                // Remember both, so the next apply removes what either left.
                let ids: Vec<u32> = old.services.keys().chain(tables.services.keys()).copied().collect();
                let mut mixed = old;
                mixed.service_ids.extend(tables.service_ids);
                mixed.vips.extend(tables.vips);
                mixed.vip_filter.extend(tables.vip_filter);
                mixed.backends.extend(tables.backends);
                self.applied = mixed;
                self.reread_services(&ids);
                Err(e)
            }
        }
    }

    /// After a failed write: which version of services `ids` the maps hold now — a write
    /// that failed may have switched some of them to a new member list or table — replaces
    /// what `applied` remembers, so the next build writes where no packet reads.
    fn reread_services(&mut self, ids: &[u32]) {
        for &id in ids {
            let Ok(svc) = maps::service(self, id) else { continue };
            let Ok(members) = maps::members(self, &svc) else { continue };
            for (i, slot) in members {
                self.applied.members.insert(i, slot);
            }
            self.applied.services.insert(id, svc);
        }
    }

    /// Makes the maps hold `tables` where they differ from what was applied in services
    /// `ids` (entries, member lists, scheduler positions) and backends `slots` only: what a
    /// health verdict or a neighbour change touches, written in the time it takes to write
    /// those, however many services there are. The rest of `tables` must equal what was
    /// applied, and its scheduler tables must not have changed; order and staging are
    /// [`Dataplane::apply`]'s. After a failed apply the whole content must be rewritten, so
    /// this refuses; if a write here fails, the next apply rewrites everything.
    pub fn apply_only(&mut self, tables: &MapContent, ids: &[u32], slots: &[u32]) -> Result<()> {
        ensure!(!self.rewrite_all, "the last apply failed: the whole content must be written");
        if let Some(wait) = self.last_apply.and_then(|t| GRACE.checked_sub(t.elapsed())) {
            std::thread::sleep(wait);
        }
        self.rewrite_all = true;
        // What is written is recorded as it goes: after a failure, what was applied.
        let mut applied = std::mem::take(&mut self.applied);
        let result = self.write_only(&mut applied, tables, ids, slots);
        self.applied = applied;
        self.last_apply = Some(std::time::Instant::now());
        if result.is_err() {
            self.reread_services(ids);
        }
        result?;
        self.rewrite_all = false;
        Ok(())
    }

    fn write_only(&mut self, applied: &mut MapContent, tables: &MapContent, ids: &[u32], slots: &[u32]) -> Result<()> {
        // Decided against what was applied before anything of this update is recorded: a
        // weight or presence change alone restarts the scheduler too.
        let resets: Vec<u32> = ids.iter().copied().filter(|id| applied.scheduler_input(*id) != tables.scheduler_input(*id)).collect();
        {
            let mut m: Array<&mut MapData, Backend> = Array::try_from(self.map_mut(MAP_BACKENDS)?)?;
            for slot in slots {
                let Some(b) = tables.backends.get(slot) else { continue };
                if applied.backends.get(slot) != Some(b) {
                    write_backend(&mut m, *slot, b)?;
                    applied.backends.insert(*slot, *b);
                }
            }
        }
        let mut services = Vec::new();
        for id in ids {
            let Some(mut svc) = tables.services.get(id).copied() else { continue };
            svc.ticks_per_sec = self.hz;
            let old = applied.services.get(id).copied();
            ensure!(
                old.is_none_or(|o| o.table_offset == svc.table_offset && o.table_len == svc.table_len),
                "service {id}'s scheduler table moved: the whole content must be written"
            );
            services.push((*id, svc, old));
        }
        {
            // The region this list goes to is not the one packets read now.
            let mut m: Array<&mut MapData, u32> = Array::try_from(self.map_mut(MAP_MEMBERS)?)?;
            for (_, svc, _) in &services {
                for i in svc.members_offset..svc.members_offset + svc.member_count {
                    let slot = tables.members.get(&i).copied().unwrap_or(u32::MAX);
                    if applied.members.get(&i) != Some(&slot) {
                        m.set(i, slot, 0).context("writing a member list")?;
                    }
                }
            }
        }
        {
            let mut m: Array<&mut MapData, SchedState> = Array::try_from(self.map_mut(MAP_SCHED_STATE)?)?;
            for id in &resets {
                m.set(*id, MapContent::initial_sched_state(), 0).context("writing scheduler state")?;
            }
        }
        {
            let mut m: Array<&mut MapData, ServiceSlot> = Array::try_from(self.map_mut(MAP_SERVICES)?)?;
            for (id, svc, old) in &services {
                if old.as_ref() != Some(svc) {
                    let current = m.get(id, 0).with_context(|| format!("reading service {id}"))?;
                    let (writes, n) = current.staged(svc);
                    for w in &writes[..n] {
                        m.set(*id, *w, 0).with_context(|| format!("writing service {id}"))?;
                    }
                }
            }
        }
        for (id, svc, old) in services {
            if let Some(o) = old {
                for i in o.members_offset..o.members_offset + o.member_count {
                    applied.members.remove(&i);
                }
            }
            for i in svc.members_offset..svc.members_offset + svc.member_count {
                applied.members.insert(i, tables.members.get(&i).copied().unwrap_or(u32::MAX));
            }
            applied.services.insert(id, svc);
        }
        Ok(())
    }

    fn write(&mut self, old: &MapContent, tables: &MapContent, full: bool) -> Result<()> {
        let changed = |same: bool| full || !same;
        {
            let mut m: Array<&mut MapData, Backend> = Array::try_from(self.map_mut(MAP_BACKENDS)?)?;
            for (slot, b) in &tables.backends {
                if changed(old.backends.get(slot) == Some(b)) {
                    write_backend(&mut m, *slot, b)?;
                }
            }
        }
        {
            let aya::maps::Map::Array(m) = self.map(MAP_SCHED_TABLE)? else { bail!("{MAP_SCHED_TABLE} is not an array") };
            let mut refused = Vec::new();
            for (offset, entries) in &tables.sched_regions {
                if !full && old.sched_regions.get(offset) == Some(entries) {
                    continue;
                }
                // A Maglev table is 65,537 entries: in batches, not a system call each.
                let indexed: Vec<(u32, u16)> = entries.iter().enumerate().map(|(k, e)| (offset + k as u32, *e)).collect();
                if let Err(e) = super::batch::update_all(m, &indexed) {
                    tracing::debug!("batch update of {MAP_SCHED_TABLE} refused ({e}); writing it entry by entry");
                    refused.extend(indexed);
                }
            }
            let mut a: Array<&mut MapData, u16> = Array::try_from(self.map_mut(MAP_SCHED_TABLE)?)?;
            for (i, v) in refused {
                a.set(i, v, 0).context("writing a scheduler table")?;
            }
        }
        {
            // The half this build uses is not the one packets read now: no reader sees a
            // list being rewritten.
            let mut m: Array<&mut MapData, u32> = Array::try_from(self.map_mut(MAP_MEMBERS)?)?;
            for (i, slot) in &tables.members {
                if changed(old.members.get(i) == Some(slot)) {
                    m.set(*i, *slot, 0).context("writing a member list")?;
                }
            }
        }
        {
            let mut m: Array<&mut MapData, SchedState> = Array::try_from(self.map_mut(MAP_SCHED_STATE)?)?;
            for id in tables.services.keys() {
                if changed(old.scheduler_input(*id) == tables.scheduler_input(*id)) {
                    m.set(*id, MapContent::initial_sched_state(), 0).context("writing scheduler state")?;
                }
            }
        }
        {
            let mut m: Array<&mut MapData, ServiceSlot> = Array::try_from(self.map_mut(MAP_SERVICES)?)?;
            for (id, svc) in &tables.services {
                if changed(old.services.get(id) == Some(svc)) {
                    let current = m.get(id, 0).with_context(|| format!("reading service {id}"))?;
                    let (writes, n) = current.staged(svc);
                    for w in &writes[..n] {
                        m.set(*id, *w, 0).with_context(|| format!("writing service {id}"))?;
                    }
                }
            }
        }
        {
            let mut m: BpfHashMap<&mut MapData, ServiceKey, u32> = BpfHashMap::try_from(self.map_mut(MAP_SERVICE_IDS)?)?;
            for (k, id) in &tables.service_ids {
                if changed(old.service_ids.get(k) == Some(id)) {
                    m.insert(k, id, 0).context("writing a service id")?;
                }
            }
            for k in old.service_ids.keys().filter(|k| !tables.service_ids.contains_key(k)) {
                remove_if_present(m.remove(k)).context("removing a service id")?;
            }
        }
        {
            let mut m: BpfHashMap<&mut MapData, VipKey, Vip> = BpfHashMap::try_from(self.map_mut(MAP_VIPS)?)?;
            for (addr, v) in &tables.vips {
                if changed(old.vips.get(addr) == Some(v)) {
                    m.insert(VipKey { addr: *addr }, v, 0).context("writing a VIP")?;
                }
            }
            for addr in old.vips.keys().filter(|a| !tables.vips.contains_key(*a)) {
                remove_if_present(m.remove(&VipKey { addr: *addr })).context("removing a VIP")?;
            }
        }
        {
            let mut m: Array<&mut MapData, u32> = Array::try_from(self.map_mut(MAP_VIP_FILTER)?)?;
            for (i, v) in &tables.vip_filter {
                if changed(old.vip_filter.get(i) == Some(v)) {
                    m.set(*i, *v, 0).context("writing the VIP filter")?;
                }
            }
            for i in old.vip_filter.keys().filter(|i| !tables.vip_filter.contains_key(i)) {
                m.set(*i, 0, 0).context("clearing the VIP filter")?;
            }
        }
        {
            // A freed slot: flags go to 0 before the MAC does (staged), so a packet of a
            // connection still pointing here is dropped, never sent to half a MAC.
            let mut m: Array<&mut MapData, Backend> = Array::try_from(self.map_mut(MAP_BACKENDS)?)?;
            for slot in old.backends.keys().filter(|s| !tables.backends.contains_key(s)) {
                write_backend(&mut m, *slot, &Backend::default())?;
            }
        }
        Ok(())
    }

    /// Per-reason packet counts, summed over CPUs.
    pub fn counters(&self) -> Result<Counters> {
        maps::counters(self)
    }

    /// ActiveConn, InActConn and traffic of the backend in `slot`.
    pub fn backend_counters(&self, slot: u32) -> Result<BackendCounters> {
        maps::backend_counters(self, slot)
    }

    /// The connection for `key`: its connection-table entry, or else the half-open entry
    /// that holds it (live or expired).
    pub fn connection(&self, key: &ConnKey) -> Result<Option<Conn>> {
        if let Some(c) = self.table_connection(key)? {
            return Ok(Some(c));
        }
        Ok(self.half_open(key)?.map(|(_, e)| e.conn))
    }

    /// The connection-table entry for `key` (not a half-open one).
    pub fn table_connection(&self, key: &ConnKey) -> Result<Option<Conn>> {
        let conns: BpfHashMap<&MapData, ConnKey, Conn> = BpfHashMap::try_from(self.map(MAP_CONNS)?)?;
        match conns.get(key, 0) {
            Ok(c) => Ok(Some(c)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The half-open entry holding `key` (live or expired), with its slot.
    pub fn half_open(&self, key: &ConnKey) -> Result<Option<(u32, HalfOpen)>> {
        let m: Array<&MapData, HalfOpen> = Array::try_from(self.map(MAP_HALF_OPEN)?)?;
        let first = halfopen::bucket(key);
        for slot in first..first + halfopen::HALF_OPEN_WAYS {
            let e = m.get(&slot, 0)?;
            if e.occupied() && e.key == *key {
                return Ok(Some((slot, e)));
            }
        }
        Ok(None)
    }

    /// Overwrites entry `slot` of the half-open table (tests).
    pub fn set_half_open(&mut self, slot: u32, entry: &HalfOpen) -> Result<()> {
        let mut m: Array<&mut MapData, HalfOpen> = Array::try_from(self.map_mut(MAP_HALF_OPEN)?)?;
        m.set(slot, *entry, 0).context("writing a half-open entry")?;
        Ok(())
    }

    /// Records in `DRLB_SWEPT_AT` that a sweep at `now` recounted the connections.
    pub fn record_sweep(&mut self, now: u64) -> Result<()> {
        super::sweep::record_sweep(self, now)
    }

    /// Per-event counts (`lb_common::events`), summed over CPUs.
    pub fn events(&self) -> Result<maps::EventCounters> {
        maps::events(self)
    }

    /// Writes a connection-table entry (tests and state transfer; the dataplane makes its own).
    pub fn insert_connection(&mut self, key: &ConnKey, conn: &Conn) -> Result<()> {
        let mut conns: BpfHashMap<&mut MapData, ConnKey, Conn> = BpfHashMap::try_from(self.map_mut(MAP_CONNS)?)?;
        conns.insert(key, conn, 0).context("writing a connection")?;
        self.invalidate_flow_caches()
    }

    /// Empties every CPU's flow cache (`lb_common::flowcache`): call after changing or
    /// removing connections.
    pub fn invalidate_flow_caches(&mut self) -> Result<()> {
        super::sweep::invalidate_flow_caches(self)
    }

    /// Overwrites a backend's ActiveConn/InActConn.
    pub fn set_conn_counts(&mut self, slot: u32, counts: ConnCounts) -> Result<()> {
        let mut m: Array<&mut MapData, ConnCounts> = Array::try_from(self.map_mut(MAP_CONN_COUNTS)?)?;
        m.set(slot, counts, 0)?;
        Ok(())
    }

    /// Removes the lblc/lblcr entries that name any of `slots` (backend slots just freed,
    /// which another real server may take next): a destination must not follow a slot to a
    /// server it never went to. Returns how many went.
    pub fn forget_locality(&mut self, slots: &[u32]) -> Result<usize> {
        use lb_common::maps::{Locality, LocalityKey, MAP_LOCALITY};
        let mut m: BpfHashMap<&mut MapData, LocalityKey, Locality> = BpfHashMap::try_from(self.map_mut(MAP_LOCALITY)?)?;
        let stale: Vec<LocalityKey> = m
            .iter()
            .filter_map(|r| r.ok())
            .filter(|(_, e)| e.set.iter().take(e.count as usize).any(|s| slots.contains(s)))
            .map(|(k, _)| k)
            .collect();
        for k in &stale {
            let _ = m.remove(k);
        }
        Ok(stale.len())
    }

    /// Every lblc/lblcr entry.
    pub fn localities(&self) -> Result<Vec<(lb_common::maps::LocalityKey, lb_common::maps::Locality)>> {
        use lb_common::maps::{Locality, LocalityKey, MAP_LOCALITY};
        let m: BpfHashMap<&MapData, LocalityKey, Locality> = BpfHashMap::try_from(self.map(MAP_LOCALITY)?)?;
        Ok(m.iter().filter_map(|r| r.ok()).collect())
    }

    /// Removes every lblc/lblcr entry of the services `ids`.
    fn forget_locality_of_services(&mut self, ids: &[u32]) -> Result<usize> {
        use lb_common::maps::{Locality, LocalityKey, MAP_LOCALITY};
        let mut m: BpfHashMap<&mut MapData, LocalityKey, Locality> = BpfHashMap::try_from(self.map_mut(MAP_LOCALITY)?)?;
        let stale: Vec<LocalityKey> = m.keys().filter_map(|k| k.ok()).filter(|k| ids.contains(&k.service)).collect();
        for k in &stale {
            let _ = m.remove(k);
        }
        Ok(stale.len())
    }

    /// Every persistence template.
    pub fn templates(&self) -> Result<Vec<(ConnKey, Persist)>> {
        let m: BpfHashMap<&MapData, ConnKey, Persist> = BpfHashMap::try_from(self.map(MAP_PERSIST)?)?;
        Ok(m.iter().filter_map(|r| r.ok()).collect())
    }

    /// Writes a persistence template (tests and state transfer).
    pub fn insert_template(&mut self, key: &ConnKey, value: &Persist) -> Result<()> {
        let mut m: BpfHashMap<&mut MapData, ConnKey, Persist> = BpfHashMap::try_from(self.map_mut(MAP_PERSIST)?)?;
        m.insert(key, value, 0)?;
        Ok(())
    }

    /// Every entry of the connection table, read in batches (BPF_MAP_LOOKUP_BATCH); entry
    /// by entry where the kernel refuses batches.
    pub fn connections(&self) -> Result<Vec<(ConnKey, Conn)>> {
        let mut out = Vec::new();
        super::sweep::for_each_connection(self, |k, c| out.push((*k, *c)))?;
        Ok(out)
    }

    /// Every entry of the connection table, two system calls each (tests compare it with
    /// [`Dataplane::connections`]).
    pub fn connections_one_by_one(&self) -> Result<Vec<(ConnKey, Conn)>> {
        let conns: BpfHashMap<&MapData, ConnKey, Conn> = BpfHashMap::try_from(self.map(MAP_CONNS)?)?;
        Ok(conns.iter().filter_map(|r| r.ok()).collect())
    }

    /// Sweeps the tables at `now` ([`super::sweep::sweep`]) for the tables this process
    /// applied. The controller sweeps on a thread of its own instead.
    pub fn sweep(&mut self, now: u64) -> Result<super::sweep::SweepReport> {
        let inputs = super::sweep::SweepInputs::of(&self.applied);
        super::sweep::sweep(self, &inputs, now, None)
    }
}

impl super::sweep::MapsMut for Dataplane {
    fn map_mut(&mut self, name: &str) -> Result<&mut aya::maps::Map> {
        Dataplane::map_mut(self, name)
    }
}

/// "tx_forwarded=12 pass_arp=3 ..." (non-zero counters only, or "no packets").
pub fn format_counters(c: &Counters) -> String {
    let parts: Vec<String> =
        Verdict::ALL.iter().filter(|s| c[s.index() as usize] > 0).map(|s| format!("{}={}", s.name(), c[s.index() as usize])).collect();
    if parts.is_empty() { "no packets".into() } else { parts.join(" ") }
}

/// Logs the counters at info level.
pub fn log_counters(c: &Counters) {
    info!("counters: {}", format_counters(c));
}

#[cfg(test)]
mod object_tests {
    /// `BPF_JMP | BPF_CALL`, and the source register that makes a call a BPF-to-BPF call
    /// (`BPF_PSEUDO_CALL`) rather than a helper call.
    const CALL: u8 = 0x85;
    const PSEUDO_CALL: u8 = 1;

    fn calls_functions(obj: &aya_obj::Object, program: &str) -> bool {
        let prog = obj.programs.get(program).unwrap_or_else(|| panic!("{program} is in the object"));
        let f = &obj.functions[&prog.function_key()];
        f.instructions.iter().any(|i| i.code == CALL && i.src_reg() == PSEUDO_CALL)
    }

    /// The dispatcher tail-calls, and arm64 before 6.0 refuses a tail call in a program
    /// with BPF-to-BPF calls: an outlined helper slipping into it would load on x86 and
    /// fail on the Kunpeng kernels drlb is for. The programs it jumps to do call functions
    /// (so this check can fail).
    #[test]
    fn the_dispatcher_makes_no_function_call() {
        let obj = aya_obj::Object::parse(super::EBPF_OBJECT).expect("the embedded object parses");
        assert!(!calls_functions(&obj, super::PROGRAM_LB), "{} makes a BPF-to-BPF call", super::PROGRAM_LB);
        assert!(calls_functions(&obj, super::JUMP_PROGRAMS[0].1), "the IPv4 program calls its schedulers");
    }
}

