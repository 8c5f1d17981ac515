//! The kernel's view of the director interface over rtnetlink: its MAC and subnets, and
//! the real servers' MACs from the neighbour (ARP) table — resolved on demand and followed.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context as _, Result, anyhow};
use futures::TryStreamExt as _;
use futures::channel::mpsc::UnboundedReceiver;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::{Handle, MulticastGroup, sys::SocketAddr};

use crate::kernel::mac::Mac;

/// The director's interface as the kernel reports it.
#[derive(Debug, Clone)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    pub mac: Mac,
    /// IPv4 addresses with their prefix lengths.
    pub ipv4: Vec<(Ipv4Addr, u8)>,
    /// IPv6 addresses with their prefix lengths (link-local ones included).
    pub ipv6: Vec<(Ipv6Addr, u8)>,
    /// IPv6 addresses the kernel does not use yet or at all: "tentative" (duplicate address
    /// detection still running: the director answers no neighbour solicitation for it) or
    /// "dadfailed" (another host answered for it: never used).
    pub ipv6_unusable: Vec<(Ipv6Addr, &'static str)>,
    /// The XDP program attached, as the link reports it.
    pub xdp: Option<XdpAttachment>,
    pub mtu: u32,
}

/// An XDP program on an interface (IFLA_XDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XdpAttachment {
    /// "native", "generic", "offload" or "multiple".
    pub mode: &'static str,
    pub program_id: u32,
}

fn xdp_attachment(attrs: &[LinkAttribute]) -> Option<XdpAttachment> {
    use rtnetlink::packet_route::link::{LinkXdp, XdpAttached};
    let xdp = attrs.iter().find_map(|a| match a {
        LinkAttribute::Xdp(x) => Some(x),
        _ => None,
    })?;
    let mode = xdp.iter().find_map(|x| match x {
        LinkXdp::Attached(XdpAttached::Driver) => Some("native"),
        LinkXdp::Attached(XdpAttached::SocketBuffer) => Some("generic"),
        LinkXdp::Attached(XdpAttached::Hardware) => Some("offload"),
        LinkXdp::Attached(XdpAttached::Multiple) => Some("multiple"),
        _ => None,
    })?;
    let program_id = xdp.iter().find_map(|x| match x {
        LinkXdp::ProgId(id) | LinkXdp::DrvProgId(id) | LinkXdp::SkbProgId(id) => Some(*id),
        _ => None,
    })?;
    Some(XdpAttachment { mode, program_id })
}

impl Interface {
    /// Whether `addr` is in one of the interface's subnets, i.e. reachable at layer 2,
    /// which Direct Routing requires of every real server.
    pub fn on_link(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(addr) => self.ipv4.iter().any(|(net, len)| {
                let mask = if *len == 0 { 0 } else { u32::MAX << (32 - u32::from((*len).min(32))) };
                u32::from(*net) & mask == u32::from(addr) & mask
            }),
            IpAddr::V6(addr) => self.ipv6.iter().any(|(net, len)| {
                let mask = if *len == 0 { 0 } else { u128::MAX << (128 - u32::from((*len).min(128))) };
                u128::from(*net) & mask == u128::from(addr) & mask
            }),
        }
    }

    /// "198.18.0.2/24, 2001:db8::2/64" for messages.
    pub fn describe_subnets(&self) -> String {
        let all: Vec<String> = self
            .ipv4
            .iter()
            .map(|(a, l)| format!("{a}/{l}"))
            .chain(self.ipv6.iter().filter(|(a, _)| !is_link_local(a)).map(|(a, l)| format!("{a}/{l}")))
            .collect();
        if all.is_empty() { "no address".into() } else { all.join(", ") }
    }
}

/// How a real server's MAC is learnt, for messages: "ARP", or for IPv6 "neighbour
/// discovery".
pub fn resolution_name(addr: IpAddr) -> &'static str {
    if addr.is_ipv4() { "ARP" } else { "neighbour discovery" }
}

/// fe80::/10: every IPv6 interface has one, and no real server is reached through it.
fn is_link_local(a: &Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

/// Opens an rtnetlink connection driven by a background task.
pub fn connect() -> Result<Handle> {
    let (conn, handle, _) = rtnetlink::new_connection().context("opening an rtnetlink socket")?;
    tokio::spawn(conn);
    Ok(handle)
}

/// Looks up `name` in the current network namespace.
pub async fn interface(handle: &Handle, name: &str) -> Result<Interface> {
    let link = handle
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
        .with_context(|| format!("interface {name} not found: check director.interface in the config (`ip link` lists interfaces)"))?
        .ok_or_else(|| anyhow!("interface {name} not found"))?;
    let mac = link
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Address(b) if b.len() == 6 => Some([b[0], b[1], b[2], b[3], b[4], b[5]]),
            _ => None,
        })
        .ok_or_else(|| anyhow!("interface {name} has no Ethernet address; DR needs an Ethernet interface"))?;
    let index = link.header.index;
    let (mut ipv4, mut ipv6, mut ipv6_unusable) = (Vec::new(), Vec::new(), Vec::new());
    let mut addrs = handle.address().get().set_link_index_filter(index).execute();
    while let Some(msg) = addrs.try_next().await.with_context(|| format!("listing addresses of {name}"))? {
        for attr in &msg.attributes {
            match attr {
                AddressAttribute::Local(IpAddr::V4(a)) | AddressAttribute::Address(IpAddr::V4(a)) => {
                    if !ipv4.contains(&(*a, msg.header.prefix_len)) {
                        ipv4.push((*a, msg.header.prefix_len));
                    }
                }
                AddressAttribute::Address(IpAddr::V6(a)) => {
                    if !ipv6.contains(&(*a, msg.header.prefix_len)) {
                        ipv6.push((*a, msg.header.prefix_len));
                    }
                    use rtnetlink::packet_route::address::AddressHeaderFlags as F;
                    if msg.header.flags.contains(F::Dadfailed) {
                        ipv6_unusable.push((*a, "dadfailed"));
                    } else if msg.header.flags.contains(F::Tentative) {
                        ipv6_unusable.push((*a, "tentative"));
                    }
                }
                _ => {}
            }
        }
    }
    let xdp = xdp_attachment(&link.attributes);
    let mtu = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(m) => Some(*m),
        _ => None,
    });
    Ok(Interface { name: name.to_string(), index, mac, ipv4, ipv6, ipv6_unusable, xdp, mtu: mtu.unwrap_or(1500) })
}

/// Whether interface `index` has carrier: cabled and up, so it can send and hear.
pub async fn carrier(handle: &Handle, index: u32) -> Result<bool> {
    let link = handle
        .link()
        .get()
        .match_index(index)
        .execute()
        .try_next()
        .await
        .with_context(|| format!("reading the link state of interface index {index}"))?
        .ok_or_else(|| anyhow!("interface index {index} is gone"))?;
    Ok(link.attributes.iter().any(|a| matches!(a, LinkAttribute::Carrier(1))))
}

/// A neighbour-table fact about one address on one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NeighbourEvent {
    /// The kernel holds a usable MAC for the address.
    Resolved { ifindex: u32, addr: IpAddr, mac: Mac },
    /// Resolution failed: the address does not answer ARP.
    Failed { ifindex: u32, addr: IpAddr },
    /// The entry is gone (garbage-collected or deleted); the MAC may still be right.
    Removed { ifindex: u32, addr: IpAddr },
    /// The kernel dropped notifications (the socket's buffer was full): any entry may have
    /// changed unseen.
    Lost,
}

/// States in which the entry's link-layer address is trustworthy.
fn usable(state: NeighbourState) -> bool {
    matches!(
        state,
        NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
            | NeighbourState::Noarp
    )
}

fn decode(msg: &NeighbourMessage, removed: bool) -> Option<NeighbourEvent> {
    let ifindex = msg.header.ifindex;
    let addr = destination(msg)?;
    if removed {
        return Some(NeighbourEvent::Removed { ifindex, addr });
    }
    let mac = link_layer_address(msg);
    match (usable(msg.header.state), mac) {
        (true, Some(mac)) => Some(NeighbourEvent::Resolved { ifindex, addr, mac }),
        _ if msg.header.state == NeighbourState::Failed => Some(NeighbourEvent::Failed { ifindex, addr }),
        _ => None,
    }
}

/// The MACs the kernel currently knows on `ifindex`.
pub async fn neighbours(handle: &Handle, ifindex: u32) -> Result<HashMap<IpAddr, Mac>> {
    let dump = async {
        let mut out = HashMap::new();
        let mut dump = handle.neighbours().get().execute();
        while let Some(msg) = dump.try_next().await? {
            if let Some(NeighbourEvent::Resolved { ifindex: i, addr, mac }) = decode(&msg, false)
                && i == ifindex
            {
                out.insert(addr, mac);
            }
        }
        Ok::<_, rtnetlink::Error>(out)
    };
    within_reply_time(dump, || "dumping the neighbour table").await
}

/// Every neighbour entry on `ifindex`: its MAC (if any) and state ("REACHABLE", "FAILED"...).
pub async fn neighbour_states(handle: &Handle, ifindex: u32) -> Result<HashMap<IpAddr, (Option<Mac>, String)>> {
    let mut out = HashMap::new();
    let mut dump = handle.neighbours().get().execute();
    while let Some(msg) = dump.try_next().await.context("dumping the neighbour table")? {
        if msg.header.ifindex != ifindex {
            continue;
        }
        let Some(addr) = destination(&msg) else { continue };
        let mac = link_layer_address(&msg);
        let state = format!("{:?}", msg.header.state).to_uppercase();
        let usable = usable(msg.header.state);
        out.insert(addr, (if usable { mac } else { None }, state));
    }
    Ok(out)
}

/// The MAC of `addr` on `ifindex` if the kernel heard it answer recently (REACHABLE, or an
/// entry an operator set): proof that something holds the address now, which a STALE entry
/// (a MAC learnt minutes ago, still used for sending) is not.
pub async fn answered_recently(handle: &Handle, ifindex: u32, addr: IpAddr) -> Result<Option<Mac>> {
    let Some(msg) = neighbour_entry(handle, ifindex, addr).await? else { return Ok(None) };
    if !matches!(msg.header.state, NeighbourState::Reachable | NeighbourState::Permanent | NeighbourState::Noarp) {
        return Ok(None);
    }
    Ok(link_layer_address(&msg))
}

/// The neighbour entry of `addr` on `ifindex`. The dump is read to its end: a dump left
/// half-read makes the netlink connection log a line for every message that follows.
async fn neighbour_entry(handle: &Handle, ifindex: u32, addr: IpAddr) -> Result<Option<NeighbourMessage>> {
    let dump = async {
        let mut found = None;
        let mut dump = handle.neighbours().get().execute();
        while let Some(msg) = dump.try_next().await? {
            if found.is_none() && msg.header.ifindex == ifindex && destination(&msg) == Some(addr) {
                found = Some(msg);
            }
        }
        Ok::<_, rtnetlink::Error>(found)
    };
    within_reply_time(dump, || "dumping the neighbour table").await
}

/// Deletes the neighbour entry of `addr` on `ifindex`, if any and not a static one
/// (PERMANENT, NOARP), so that the next resolution asks the segment at once: the kernel
/// re-checks a STALE entry only after `delay_first_probe_time` (5 s).
pub async fn forget_neighbour(handle: &Handle, ifindex: u32, addr: IpAddr) -> Result<()> {
    match neighbour_entry(handle, ifindex, addr).await? {
        Some(msg) if !matches!(msg.header.state, NeighbourState::Permanent | NeighbourState::Noarp) => {
            within_reply_time(handle.neighbours().del(msg).execute(), || format!("deleting the neighbour entry of {addr}")).await
        }
        _ => Ok(()),
    }
}

/// The MAC a neighbour message holds, if an Ethernet one.
fn link_layer_address(msg: &NeighbourMessage) -> Option<Mac> {
    msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(b) if b.len() == 6 => Some([b[0], b[1], b[2], b[3], b[4], b[5]]),
        _ => None,
    })
}

/// The address a neighbour message is about.
fn destination(msg: &NeighbourMessage) -> Option<IpAddr> {
    msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
        _ => None,
    })
}

/// Asks the kernel to resolve (or re-confirm) `addr` on `ifindex` now: an RTM_NEWNEIGH with
/// NTF_USE, which makes the kernel send ARP as if it had a packet for the address.
pub async fn trigger_resolution(handle: &Handle, ifindex: u32, addr: IpAddr) -> Result<()> {
    let request = handle.neighbours().add(ifindex, addr).state(NeighbourState::None).flags(NeighbourFlags::Use).replace().execute();
    within_reply_time(request, || format!("asking the kernel to resolve the MAC of {addr}")).await
}

/// How long the kernel gets to answer one rtnetlink request. It answers in microseconds;
/// a reply that never comes (a lost message, a wedged socket) must not stop the controller's
/// one-thread event loop, which also health-checks and keeps the state file fresh.
const REPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs a netlink request, failing after [`REPLY_TIMEOUT`] with `what` as context.
async fn within_reply_time<T, E, W>(request: impl std::future::Future<Output = Result<T, E>>, what: impl Fn() -> W) -> Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
    W: std::fmt::Display + Send + Sync + 'static,
{
    match tokio::time::timeout(REPLY_TIMEOUT, request).await {
        Ok(r) => r.with_context(what),
        Err(_) => Err(anyhow::anyhow!("no reply from the kernel in {} s", REPLY_TIMEOUT.as_secs())).with_context(what),
    }
}

/// Neighbour-table changes, as they happen.
pub struct NeighbourWatch {
    messages: UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>,
}

impl NeighbourWatch {
    /// Subscribes to RTNLGRP_NEIGH. Subscribe before dumping the table so nothing is missed.
    pub fn subscribe() -> Result<Self> {
        let (conn, _handle, messages) = rtnetlink::new_multicast_connection(&[MulticastGroup::Neigh])
            .context("subscribing to neighbour-table changes")?;
        tokio::spawn(conn);
        Ok(NeighbourWatch { messages })
    }

    /// The next relevant change; `None` if the subscription ended.
    pub async fn next(&mut self) -> Option<NeighbourEvent> {
        use futures::StreamExt as _;
        loop {
            let (msg, _) = self.messages.next().await?;
            let event = match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(n)) => decode(&n, false),
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelNeighbour(n)) => decode(&n, true),
                NetlinkPayload::Overrun(_) => Some(NeighbourEvent::Lost),
                _ => None,
            };
            if event.is_some() {
                return event;
            }
        }
    }
}

/// Every address on interface `ifindex` now (IPv4 and IPv6).
pub async fn addresses(handle: &Handle, ifindex: u32) -> Result<Vec<IpAddr>> {
    let list = async {
        let mut out = Vec::new();
        let mut dump = handle.address().get().set_link_index_filter(ifindex).execute();
        while let Some(msg) = dump.try_next().await? {
            for attr in &msg.attributes {
                if let AddressAttribute::Local(a) | AddressAttribute::Address(a) = attr
                    && !out.contains(a)
                {
                    out.push(*a);
                }
            }
        }
        Ok::<_, rtnetlink::Error>(out)
    };
    within_reply_time(list, || "listing the interface's addresses").await
}

/// Address changes (RTM_NEWADDR/RTM_DELADDR), whoever makes them: keepalived moving a
/// VIP, a BGP speaker's helper, an operator.
pub struct AddressWatch {
    messages: UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>,
}

impl AddressWatch {
    /// Subscribes to RTNLGRP_IPV4_IFADDR and RTNLGRP_IPV6_IFADDR. Subscribe before listing.
    pub fn subscribe() -> Result<Self> {
        let (conn, _handle, messages) =
            rtnetlink::new_multicast_connection(&[MulticastGroup::Ipv4Ifaddr, MulticastGroup::Ipv6Ifaddr])
                .context("subscribing to address changes")?;
        tokio::spawn(conn);
        Ok(AddressWatch { messages })
    }

    /// The next address change; `None` if the subscription ended.
    pub async fn next(&mut self) -> Option<AddressChange> {
        use futures::StreamExt as _;
        loop {
            let (msg, _) = self.messages.next().await?;
            match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(a) | RouteNetlinkMessage::DelAddress(a)) => {
                    return Some(AddressChange::On(a.header.index));
                }
                // The kernel dropped notifications (the socket's buffer was full): which
                // interfaces changed is lost.
                NetlinkPayload::Overrun(_) => return Some(AddressChange::Unknown),
                _ => {}
            }
        }
    }
}

/// What [`AddressWatch::next`] learnt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressChange {
    /// An address of this interface (by index) came or went.
    On(u32),
    /// Notifications were lost: any interface may have changed.
    Unknown,
}

impl AddressChange {
    /// Whether the addresses of interface `ifindex` must be listed again.
    pub fn concerns(self, ifindex: u32) -> bool {
        match self {
            AddressChange::On(i) => i == ifindex,
            AddressChange::Unknown => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_link_uses_prefixes() {
        let i = Interface {
            name: "eth0".into(),
            index: 2,
            mac: [0; 6],
            ipv4: vec![("198.18.0.2".parse().unwrap(), 24), ("198.18.0.100".parse().unwrap(), 32)],
            ipv6: vec![("2001:db8::2".parse().unwrap(), 64), ("fe80::1".parse().unwrap(), 64)],
            ipv6_unusable: Vec::new(),
            xdp: None,
            mtu: 1500,
        };
        assert!(i.on_link("198.18.0.11".parse().unwrap()));
        assert!(!i.on_link("198.19.0.11".parse().unwrap()));
        assert!(i.on_link("2001:db8::11".parse().unwrap()));
        assert!(!i.on_link("2001:db8:1::11".parse().unwrap()));
        assert_eq!(i.describe_subnets(), "198.18.0.2/24, 198.18.0.100/32, 2001:db8::2/64");
    }
}
