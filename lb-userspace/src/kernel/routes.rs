//! The announcement routes: a blackhole host route per VIP in a routing table of drlb's own
//! (`director.announce.table`), which a BGP speaker (BIRD's `protocol kernel { kernel
//! table N; learn; }`, FRR's `ip import-table N`) exports to the routers. The route is the
//! announcement: it lives in the kernel, so it outlives a restart of drlb or of the BGP
//! speaker, and no `ip rule` points at the table, so it never changes forwarding.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context as _, Result};
use futures::TryStreamExt as _;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteType};
use rtnetlink::{Handle, RouteMessageBuilder};

/// Tables an announcement table must not be: unspecified, and the kernel's default, main
/// and local tables (forwarding reads those).
pub const RESERVED_TABLES: [u32; 4] = [0, 253, 254, 255];

/// An rtnetlink connection of its own for the announcement routes, with strict checking on:
/// the kernel then dumps only the table asked for, not every route of every table (a
/// director that also carries a full routing table must not list it every second).
pub fn connect() -> Result<Handle> {
    use rtnetlink::sys::AsyncSocket as _;
    let (mut conn, handle, _) = rtnetlink::new_connection().context("opening an rtnetlink socket for the announcement routes")?;
    conn.socket_mut().socket_mut().set_netlink_get_strict_chk(true).context("asking rtnetlink for strict dump filtering")?;
    tokio::spawn(conn);
    Ok(handle)
}

fn host_route(table: u32, vip: IpAddr) -> RouteMessage {
    let message = match vip {
        IpAddr::V4(a) => RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(a, 32).table_id(table).kind(RouteType::BlackHole).build(),
        IpAddr::V6(a) => RouteMessageBuilder::<Ipv6Addr>::new().destination_prefix(a, 128).table_id(table).kind(RouteType::BlackHole).build(),
    };
    let mut message = message;
    // `proto static`: a BGP speaker that learns the table takes it as an operator's route.
    message.header.protocol = RouteProtocol::Static;
    message
}

/// Puts (or keeps) `vip`'s announcement route in `table`.
pub async fn announce(handle: &Handle, table: u32, vip: IpAddr) -> Result<()> {
    handle
        .route()
        .add(host_route(table, vip))
        .replace()
        .execute()
        .await
        .with_context(|| format!("adding the announcement route `blackhole {vip} table {table}`"))
}

/// Removes `vip`'s announcement route from `table` (absent already is fine), whoever put
/// it there: any protocol, as `ip route del` does.
pub async fn withdraw(handle: &Handle, table: u32, vip: IpAddr) -> Result<()> {
    let mut route = host_route(table, vip);
    route.header.protocol = RouteProtocol::Unspec;
    match handle.route().del(route).execute().await {
        Ok(()) => Ok(()),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ESRCH => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing the announcement route `blackhole {vip} table {table}`")),
    }
}

fn table_of(msg: &RouteMessage) -> u32 {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(msg.header.table as u32)
}

fn destination(msg: &RouteMessage) -> Option<IpAddr> {
    msg.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(a)) => Some(IpAddr::V4(*a)),
        RouteAttribute::Destination(RouteAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
        _ => None,
    })
}

/// The host addresses `table` holds blackhole routes for: what this director announces
/// now, whoever put them there (a drlb before a restart included).
pub async fn announced(handle: &Handle, table: u32) -> Result<Vec<IpAddr>> {
    let mut found = Vec::new();
    // Under strict checking the header filters the dump: this table, blackhole routes, any
    // protocol (the builder's defaults would ask for the main table's static unicast ones).
    let filter = |mut m: RouteMessage| {
        m.header.protocol = RouteProtocol::Unspec;
        m
    };
    for query in [
        filter(RouteMessageBuilder::<Ipv4Addr>::new().table_id(table).kind(RouteType::BlackHole).build()),
        filter(RouteMessageBuilder::<Ipv6Addr>::new().table_id(table).kind(RouteType::BlackHole).build()),
    ] {
        let mut routes = handle.route().get(query).execute();
        while let Some(msg) = routes.try_next().await.with_context(|| format!("listing routing table {table}"))? {
            let full = if msg.header.address_family == rtnetlink::packet_route::AddressFamily::Inet { 32 } else { 128 };
            if table_of(&msg) == table && msg.header.kind == RouteType::BlackHole && msg.header.destination_prefix_length == full {
                found.extend(destination(&msg));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Whether `table` may hold announcement routes.
pub fn usable_table(table: u32) -> bool {
    !RESERVED_TABLES.contains(&table)
}
