//! Where a dataplane lives in bpffs: making the pin directory (and the BPF filesystem under
//! it) exist, recording which interface of which network namespace a pinned dataplane
//! belongs to, and finding the pinned dataplanes on this machine.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use aya::maps::{Array, MapData};
use lb_common::maps::{MAP_META, META_OWNER_IFINDEX, META_OWNER_NETNS_HI, META_OWNER_NETNS_LO};
use tracing::info;

/// Where BPF filesystems are mounted by convention, and drlb's default `pin_root` under it.
pub const BPFFS: &str = "/sys/fs/bpf";
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/drlb";

/// bpffs's `statfs` magic.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

pub fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).map(|s| s.filesystem_type().0 as i64 == BPF_FS_MAGIC).unwrap_or(false)
}

/// Makes `dir` exist on a BPF filesystem. A fresh director has bpffs at /sys/fs/bpf and
/// nothing under it yet; one where nothing is mounted there gets it mounted (as bpftool and
/// Cilium do), with a log line.
pub fn prepare_dir(dir: &Path) -> Result<()> {
    let mut existing = dir;
    while !existing.exists() {
        existing = existing.parent().unwrap_or(Path::new("/"));
    }
    if !is_bpffs(existing) {
        let bpffs = Path::new(BPFFS);
        if dir.starts_with(bpffs) && existing.starts_with(bpffs) && !is_bpffs(bpffs) {
            nix::mount::mount(Some("bpf"), bpffs, Some("bpf"), nix::mount::MsFlags::empty(), None::<&str>)
                .with_context(|| format!("mounting a BPF filesystem at {BPFFS} (nothing was mounted there)"))?;
            info!("mounted a BPF filesystem at {BPFFS}: nothing was mounted there (as `mount -t bpf bpf {BPFFS}` would)");
        } else {
            bail!(
                "{} is not on a BPF filesystem, so the dataplane cannot be pinned at {}: set director.pin_root to a \
                 directory under a BPF filesystem (default {DEFAULT_PIN_ROOT}), or mount one there (`mount -t bpf bpf DIR`)",
                existing.display(),
                dir.display()
            );
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

/// The interface a pinned dataplane's XDP link was attached to: its network namespace (by
/// inode number) and its index there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub netns: u64,
    pub ifindex: u32,
}

impl Owner {
    /// `interface` in the calling thread's network namespace.
    pub fn here(interface: &str) -> Result<Owner> {
        let netns = this_netns()?;
        let ifindex = nix::net::if_::if_nametoindex(interface)
            .with_context(|| format!("interface {interface} does not exist in this network namespace"))?;
        Ok(Owner { netns, ifindex })
    }

    /// The owner recorded in the dataplane pinned at `dir` (none: nothing pinned, or not
    /// attached yet).
    pub fn pinned(dir: &Path) -> Result<Option<Owner>> {
        let path = dir.join(MAP_META);
        if !path.exists() {
            return Ok(None);
        }
        let map = aya::maps::Map::Array(MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?);
        let meta: Array<&MapData, u32> = Array::try_from(&map)?;
        let get = |i: u32| meta.get(&i, 0).with_context(|| format!("reading {}", path.display()));
        let (lo, hi, ifindex) = (get(META_OWNER_NETNS_LO)?, get(META_OWNER_NETNS_HI)?, get(META_OWNER_IFINDEX)?);
        Ok((ifindex != 0).then_some(Owner { netns: u64::from(hi) << 32 | u64::from(lo), ifindex }))
    }

    /// Records `self` in a dataplane's `DRLB_META`.
    pub fn record(&self, meta: &mut Array<&mut MapData, u32>) -> Result<()> {
        meta.set(META_OWNER_NETNS_LO, self.netns as u32, 0)?;
        meta.set(META_OWNER_NETNS_HI, (self.netns >> 32) as u32, 0)?;
        meta.set(META_OWNER_IFINDEX, self.ifindex, 0)?;
        Ok(())
    }
}

/// The calling thread's network namespace (its inode number).
pub fn this_netns() -> Result<u64> {
    Ok(std::fs::metadata("/proc/thread-self/ns/net").context("reading this thread's network namespace")?.ino())
}

/// Whether the dataplane pinned at `dir` may be adopted or removed by a drlb whose interface
/// is `interface` here: refuses one attached in another network namespace (whose
/// interface merely has the same name). Returns the pinned owner when it is ours.
pub fn check_owner(dir: &Path, interface: &str) -> Result<Option<Owner>> {
    let Some(pinned) = Owner::pinned(dir)? else { return Ok(None) };
    let here = this_netns()?;
    if pinned.netns != here {
        bail!(
            "the dataplane pinned at {} belongs to interface index {} of network namespace net:[{}], not to {interface} \
             here (net:[{}]): another director pins there. Give this one its own director.pin_root",
            dir.display(),
            pinned.ifindex,
            pinned.netns,
            here
        );
    }
    Ok(Some(pinned))
}

/// Every pinned drlb dataplane under `root` (`<root>/<interface>/` with a layout record).
pub fn discover(root: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(root)
        .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.join(MAP_META).exists()).collect())
        .unwrap_or_default();
    found.sort();
    found
}
