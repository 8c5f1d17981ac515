//! The two ethtool settings drlb cares about, through the SIOCETHTOOL ioctl (no ethtool
//! process): a veth's tx checksum offload (the labs turn it off: XDP_TX skips the offload)
//! and large-receive-offload (on, it keeps native XDP off an interface: `drlb doctor`).

use std::os::fd::AsRawFd as _;

use anyhow::{Context as _, Result, ensure};

const SIOCETHTOOL: u64 = 0x8946;
const ETHTOOL_STXCSUM: u32 = 0x17;
const ETHTOOL_GFLAGS: u32 = 0x25;
const ETH_FLAG_LRO: u32 = 1 << 15;

#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// One SIOCETHTOOL call with an `ethtool_value` on `iface` in the calling thread's namespace.
fn ethtool_value(iface: &str, cmd: u32, data: u32) -> Result<u32> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    let mut value = EthtoolValue { cmd, data };
    // SAFETY: zeroed ifreq is valid; the name fits (checked) and stays NUL-terminated.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    ensure!(iface.len() < ifr.ifr_name.len(), "interface name {iface} too long");
    for (d, s) in ifr.ifr_name.iter_mut().zip(iface.bytes()) {
        *d = s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = (&raw mut value).cast();
    // SAFETY: SIOCETHTOOL with an ethtool_value that outlives the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL as _, &mut ifr) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(value.data)
}

/// `ethtool -K IFACE tx off`.
pub fn tx_checksum_off(iface: &str) -> Result<()> {
    ethtool_value(iface, ETHTOOL_STXCSUM, 0).map(|_| ()).with_context(|| format!("turning tx checksum offload off on {iface}"))
}

/// Whether large-receive-offload is on (`ethtool -k IFACE`); `None` if the driver does not say.
pub fn lro_on(iface: &str) -> Option<bool> {
    ethtool_value(iface, ETHTOOL_GFLAGS, 0).ok().map(|flags| flags & ETH_FLAG_LRO != 0)
}
