//! Indices of the per-CPU counter array `DRLB_STATS`: one counter per verdict reason.
//!
//! Every packet the program sees increments exactly one of these, so their sum is the
//! number of packets seen, and each counter name says both the verdict and why.

/// A verdict reason; its discriminant is the index into `DRLB_STATS`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// XDP_TX: forwarded to a real server.
    TxForwarded = 0,
    /// XDP_PASS: ARP (the director answers ARP for the VIP itself).
    PassArp = 1,
    /// XDP_PASS: the dispatcher's tail call to the program for this kind of packet failed
    /// (the jump table lacks it: a dataplane being replaced, or a bug).
    PassNoProgram = 2,
    /// XDP_PASS: neither IPv4, IPv6 nor ARP.
    PassOtherL3 = 3,
    /// XDP_PASS: to an address that is not a VIP (the director's own traffic).
    PassNotVip = 4,
    /// XDP_PASS: to a VIP, but no service matches the protocol/port (ICMP, SSH on the VIP...).
    PassVipNoService = 5,
    /// XDP_PASS: frame too short or malformed before the destination address is known.
    PassMalformed = 6,
    /// XDP_DROP: a service matched but it has no usable real server.
    DropNoRealServer = 7,
    /// XDP_DROP: to a VIP, but the L4 header is cut short.
    DropTruncatedL4 = 8,
    /// XDP_DROP: a fragment to a VIP (no ports to schedule on; IPVS reassembles, XDP
    /// cannot), or an ICMPv6 error behind a fragment header (IPVS drops those too).
    DropFragment = 9,
    /// XDP_DROP: the connection's real server has no usable MAC (removed or unresolved).
    DropBackendMissing = 10,
    /// XDP_TX: the first packet of a new connection, scheduled to a real server.
    TxScheduled = 11,
    /// XDP_DROP: a TCP packet other than SYN with no connection (non-sloppy service).
    DropNoConnection = 12,
    /// XDP_DROP: a new connection could not be recorded (the connection table is full).
    DropConnTableFull = 13,
    /// XDP_TX: an ICMP error about a known connection (the quoted packet is its reply:
    /// VIP:port to the client), sent to that connection's real server as IPVS does.
    TxIcmpForwarded = 14,
    /// XDP_PASS: an ICMP error to a VIP about no connection the director knows.
    PassIcmpUnknown = 15,
    /// XDP_DROP: IPv6 to a VIP whose extension headers go on past what the dataplane walks
    /// ([`crate::packet::IPV6_MAX_EXT_HEADERS`] headers, [`crate::packet::IPV6_MAX_L4_OFF`] bytes).
    DropExtHeaders = 16,
    /// XDP_PASS: to a VIP, but in a frame addressed to another host's MAC (a switch floods
    /// frames for a MAC it has forgotten; a NIC in promiscuous mode hands up everything).
    /// Another director's flow is not this one's to forward; the stack drops the frame,
    /// as it drops it before IPVS.
    PassOtherHost = 17,
}

/// Number of counters; the size of `DRLB_STATS`.
pub const VERDICT_COUNT: u32 = 18;

impl Verdict {
    /// All reasons, in index order.
    pub const ALL: [Verdict; VERDICT_COUNT as usize] = [
        Verdict::TxForwarded,
        Verdict::PassArp,
        Verdict::PassNoProgram,
        Verdict::PassOtherL3,
        Verdict::PassNotVip,
        Verdict::PassVipNoService,
        Verdict::PassMalformed,
        Verdict::DropNoRealServer,
        Verdict::DropTruncatedL4,
        Verdict::DropFragment,
        Verdict::DropBackendMissing,
        Verdict::TxScheduled,
        Verdict::DropNoConnection,
        Verdict::DropConnTableFull,
        Verdict::TxIcmpForwarded,
        Verdict::PassIcmpUnknown,
        Verdict::DropExtHeaders,
        Verdict::PassOtherHost,
    ];

    /// Stable snake_case name used by `drlb` output and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Verdict::TxForwarded => "tx_forwarded",
            Verdict::PassArp => "pass_arp",
            Verdict::PassNoProgram => "pass_no_program",
            Verdict::PassOtherL3 => "pass_other_l3",
            Verdict::PassNotVip => "pass_not_vip",
            Verdict::PassVipNoService => "pass_vip_no_service",
            Verdict::PassMalformed => "pass_malformed",
            Verdict::DropNoRealServer => "drop_no_real_server",
            Verdict::DropTruncatedL4 => "drop_truncated_l4",
            Verdict::DropFragment => "drop_fragment",
            Verdict::DropBackendMissing => "drop_backend_missing",
            Verdict::TxScheduled => "tx_scheduled",
            Verdict::DropNoConnection => "drop_no_connection",
            Verdict::DropConnTableFull => "drop_conn_table_full",
            Verdict::TxIcmpForwarded => "tx_icmp_forwarded",
            Verdict::PassIcmpUnknown => "pass_icmp_unknown",
            Verdict::DropExtHeaders => "drop_ext_headers",
            Verdict::PassOtherHost => "pass_other_host",
        }
    }

    /// The index into `DRLB_STATS`.
    #[inline(always)]
    pub const fn index(self) -> u32 {
        self as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_index_order_and_complete() {
        for (i, s) in Verdict::ALL.iter().enumerate() {
            assert_eq!(s.index() as usize, i, "{}", s.name());
        }
    }
}

/// `XDP_DROP`, `XDP_PASS`, `XDP_TX` as the kernel numbers them (`enum xdp_action`).
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

impl Verdict {
    /// The XDP verdict this reason implies.
    #[inline(always)]
    pub const fn xdp_action(self) -> u32 {
        match self {
            Verdict::TxForwarded | Verdict::TxScheduled | Verdict::TxIcmpForwarded => XDP_TX,
            Verdict::PassArp
            | Verdict::PassNoProgram
            | Verdict::PassIcmpUnknown
            | Verdict::PassOtherL3
            | Verdict::PassNotVip
            | Verdict::PassVipNoService
            | Verdict::PassMalformed
            | Verdict::PassOtherHost => XDP_PASS,
            Verdict::DropNoRealServer
            | Verdict::DropTruncatedL4
            | Verdict::DropFragment
            | Verdict::DropBackendMissing
            | Verdict::DropNoConnection
            | Verdict::DropConnTableFull
            | Verdict::DropExtHeaders => XDP_DROP,
        }
    }
}
