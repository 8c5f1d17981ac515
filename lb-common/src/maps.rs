//! Map names, sizes and the `#[repr(C)]` key/value types of every map.
//!
//! All padding is explicit and zeroed so userspace and BPF hash identical key bytes.

use crate::addr::Addr16;

/// `HashMap<VipKey, Vip>`: every address drlb balances. Checked first, so a packet to any
/// other address costs one lookup before it is passed.
pub const MAP_VIPS: &str = "DRLB_VIPS";
/// `HashMap<ServiceKey, Service>`: (VIP, port, protocol) → service. Port 0 = every port.
pub const MAP_SERVICES: &str = "DRLB_SERVICES";
/// `Array<Backend>`: real servers; each service owns a contiguous slice of slots.
pub const MAP_BACKENDS: &str = "DRLB_BACKENDS";
/// `PerCpuArray<u64>`: one counter per [`crate::stats::Stat`].
pub const MAP_STATS: &str = "DRLB_STATS";

/// Capacity of `DRLB_VIPS`.
pub const MAX_VIPS: u32 = 1024;
/// Capacity of `DRLB_SERVICES`.
pub const MAX_SERVICES: u32 = 4096;
/// Real servers one service may have.
pub const MAX_BACKENDS_PER_SERVICE: u32 = 256;
/// Capacity of `DRLB_BACKENDS`.
pub const MAX_BACKENDS: u32 = 65536;

/// IP protocol numbers drlb balances.
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// Key of `DRLB_VIPS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VipKey {
    pub addr: Addr16,
}

/// `Vip::flags`: a port-0 (all ports) TCP service exists on this VIP.
pub const VIP_F_WILDCARD_TCP: u32 = 1 << 0;
/// `Vip::flags`: a port-0 (all ports) UDP service exists on this VIP.
pub const VIP_F_WILDCARD_UDP: u32 = 1 << 1;

/// Value of `DRLB_VIPS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Vip {
    pub flags: u32,
}

impl Vip {
    /// Whether a port-0 service for `proto` exists, i.e. whether a second lookup can hit.
    #[inline(always)]
    pub fn has_wildcard(&self, proto: u8) -> bool {
        let bit = if proto == IPPROTO_TCP { VIP_F_WILDCARD_TCP } else { VIP_F_WILDCARD_UDP };
        self.flags & bit != 0
    }
}

/// Key of `DRLB_SERVICES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ServiceKey {
    pub vip: Addr16,
    /// Destination port in host byte order; 0 matches every port.
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

impl ServiceKey {
    pub const fn new(vip: Addr16, port: u16, proto: u8) -> Self {
        Self { vip, port, proto, _pad: 0 }
    }
}

/// Value of `DRLB_SERVICES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Service {
    /// Controller-assigned id, stable for the service's lifetime.
    pub id: u32,
    /// First slot of this service's real servers in `DRLB_BACKENDS`.
    pub first_backend: u32,
    /// Number of usable real servers in that slice (0: every VIP packet is dropped).
    pub backend_count: u32,
    pub flags: u32,
}

/// `Backend::flags`: slot holds a real server whose MAC is known.
pub const BACKEND_F_PRESENT: u32 = 1 << 0;

/// Value of `DRLB_BACKENDS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Backend {
    /// The real server's own address (for status and tracing; DR never rewrites L3).
    pub addr: Addr16,
    /// Destination MAC written into forwarded frames: the real server's.
    pub mac: [u8; 6],
    /// Source MAC written into forwarded frames: the director interface's. Kept here
    /// rather than in a config map so a forwarded packet costs no extra lookup.
    pub src_mac: [u8; 6],
    pub weight: u32,
    pub flags: u32,
}

impl Backend {
    #[inline(always)]
    pub fn is_present(&self) -> bool {
        self.flags & BACKEND_F_PRESENT != 0
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all are #[repr(C)], Copy, made only of integers with explicit padding.
    unsafe impl aya::Pod for super::VipKey {}
    unsafe impl aya::Pod for super::Vip {}
    unsafe impl aya::Pod for super::ServiceKey {}
    unsafe impl aya::Pod for super::Service {}
    unsafe impl aya::Pod for super::Backend {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<VipKey>(), 16);
        assert_eq!(size_of::<Vip>(), 4);
        assert_eq!(size_of::<ServiceKey>(), 16 + 2 + 1 + 1);
        assert_eq!(size_of::<Service>(), 16);
        assert_eq!(size_of::<Backend>(), 16 + 6 + 6 + 4 + 4);
    }
}
