//! A per-CPU cache in front of the connection table, for the packets that make up almost
//! all of a balancer's traffic: ACKs and data of established TCP connections, and UDP.
//!
//! The connection table is a kernel LRU hash: every lookup hashes the 40-byte key and calls
//! out of the program (about 40 ns here, half of an established packet's cost). The cache is
//! a direct-mapped per-CPU array the program reads inline: a hit costs a word hash, one
//! array lookup and a five-word compare. It holds only what such a packet needs — the
//! real server's slot — and never decides anything the table would decide differently:
//!
//! - Only packets that cannot change a connection's state use it: TCP segments whose
//!   IPVS event is "ack" (ACK without SYN, FIN or RST) on an ESTABLISHED, active entry
//!   (the input-only table keeps ESTABLISHED on "ack"), and UDP datagrams.
//! - An entry is filled by a packet that went through the table (which refreshed the
//!   entry's idle timer) and serves for at most [`FLOW_CACHE_TICKS`] clock ticks — and never
//!   past the connection's own timeout — after which the next packet goes through the
//!   table again. A busy connection's idle timer thus lags by at most that many ticks.
//! - Any packet that changes the state (FIN, RST, SYN) goes through the table and clears
//!   this CPU's entry. Whenever a connection is replaced or removed — by the program (an
//!   expired or closed entry taken by a new SYN) or by the controller (expiry sweep,
//!   expire_nodest_conn, tests) — the generation in `DRLB_CONN_GEN` moves on, which
//!   empties every CPU's cache at once. A new connection clears this CPU's entry for its
//!   key. What remains: the kernel's LRU evicting, on a full table, a connection another
//!   CPU forwarded in the last 16 ticks, and the same 5-tuple opening again within those
//!   ticks; eviction takes the least recently used entries, so this needs the whole
//!   table to turn over in 16 ticks.

use crate::conn::{tcp, Conn, ConnKey};

/// Entries per CPU (a power of two). 64 bytes each: 512 KiB per CPU.
pub const FLOW_CACHE_SIZE: u32 = 8192;

/// The longest an entry serves without the connection table seeing the flow: 16 ticks
/// (16 ms at HZ=1000, 160 ms at HZ=100). Connection timeouts are whole seconds.
pub const FLOW_CACHE_TICKS: u64 = 16;

/// Value of `DRLB_FLOW_CACHE` (per CPU): 64 bytes, a cache line.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowCacheEntry {
    pub key: ConnKey,
    /// Clock ticks when the connection table last saw the flow (and refreshed its timer).
    pub refreshed: u64,
    /// Ticks the entry may serve: `min(FLOW_CACHE_TICKS, connection timeout)`.
    pub ttl: u32,
    /// Backend slot.
    pub backend: u32,
    /// `DRLB_CONN_GEN` when filled.
    pub generation: u32,
    pub _pad: [u8; 4],
}

const _: () = assert!(core::mem::size_of::<FlowCacheEntry>() == 64);

/// The cache slot of `key`.
#[inline(always)]
pub fn index(key: &ConnKey) -> u32 {
    (key.mix() >> 40) as u32 & (FLOW_CACHE_SIZE - 1)
}

/// Whether a packet with these TCP flags (`None`: UDP) may be served from the cache.
#[inline(always)]
pub fn packet_cacheable(tcp_flags: Option<u8>) -> bool {
    match tcp_flags {
        Some(flags) => tcp::event(flags) == Some(tcp::EVENT_ACK),
        None => true,
    }
}

/// Whether a connection, after its packet's transition, may be served from the cache.
#[inline(always)]
pub fn conn_cacheable(c: &Conn, is_tcp: bool) -> bool {
    !is_tcp || (c.state == tcp::ESTABLISHED && !c.is_inactive())
}

impl FlowCacheEntry {
    /// The backend slot, if this entry holds `key`, is of `generation` and is fresh at `now`.
    #[inline(always)]
    pub fn lookup(&self, key: &ConnKey, now: u64, generation: u32) -> Option<u32> {
        let (a, b) = (self.key.words(), key.words());
        // Word by word: a slice comparison becomes a byte-wise memcmp on BPF.
        let differs = (a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4]);
        if self.generation == generation && now.wrapping_sub(self.refreshed) <= self.ttl as u64 && differs == 0 {
            Some(self.backend)
        } else {
            None
        }
    }

    #[inline(always)]
    pub fn fill(&mut self, key: &ConnKey, c: &Conn, now: u64, generation: u32) {
        self.key = *key;
        self.refreshed = now;
        self.ttl = if (c.timeout as u64) < FLOW_CACHE_TICKS { c.timeout } else { FLOW_CACHE_TICKS as u32 };
        self.backend = c.backend;
        self.generation = generation;
    }

    /// Makes the entry serve nothing (no real key has protocol 0).
    #[inline(always)]
    pub fn clear(&mut self) {
        self.key.proto = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::v4_mapped;

    fn key(port: u16) -> ConnKey {
        ConnKey {
            client: v4_mapped([198, 18, 0, 10]),
            vip: v4_mapped([198, 18, 0, 100]),
            cport: port,
            vport: 80,
            proto: 6,
            _pad: [0; 3],
        }
    }

    fn established(backend: u32, timeout: u32) -> Conn {
        Conn { backend, timeout, state: tcp::ESTABLISHED, ..Default::default() }
    }

    #[test]
    fn entry_serves_its_key_until_ttl_or_generation_change() {
        let mut e = FlowCacheEntry::default();
        e.fill(&key(1000), &established(7, 900_000), 100, 3);
        assert_eq!(e.lookup(&key(1000), 100, 3), Some(7));
        assert_eq!(e.lookup(&key(1000), 100 + FLOW_CACHE_TICKS, 3), Some(7));
        assert_eq!(e.lookup(&key(1000), 101 + FLOW_CACHE_TICKS, 3), None, "stale");
        assert_eq!(e.lookup(&key(1001), 100, 3), None, "other key");
        assert_eq!(e.lookup(&key(1000), 100, 4), None, "table changed");
        e.clear();
        assert_eq!(e.lookup(&key(1000), 100, 3), None, "cleared");
    }

    #[test]
    fn ttl_never_outlives_the_connection_timeout() {
        let mut e = FlowCacheEntry::default();
        e.fill(&key(1), &established(1, 5), 100, 0);
        assert_eq!(e.lookup(&key(1), 105, 0), Some(1));
        assert_eq!(e.lookup(&key(1), 106, 0), None);
    }

    #[test]
    fn only_state_preserving_packets_and_established_connections_are_cached() {
        assert!(packet_cacheable(Some(tcp::FLAG_ACK)));
        assert!(packet_cacheable(Some(tcp::FLAG_ACK | 0x08)), "PSH|ACK");
        assert!(packet_cacheable(None), "UDP");
        for flags in [tcp::FLAG_SYN, tcp::FLAG_FIN | tcp::FLAG_ACK, tcp::FLAG_RST | tcp::FLAG_ACK, 0] {
            assert!(!packet_cacheable(Some(flags)), "flags {flags:#x}");
        }
        // The premise: "ack" keeps ESTABLISHED in the input-only table.
        assert_eq!(tcp::next_state(tcp::ESTABLISHED, tcp::FLAG_ACK), tcp::ESTABLISHED);
        assert!(conn_cacheable(&established(0, 1), true));
        let mut fin_wait = established(0, 1);
        fin_wait.state = tcp::FIN_WAIT;
        assert!(!conn_cacheable(&fin_wait, true));
        assert!(conn_cacheable(&Conn::default(), false), "UDP");
    }

    #[test]
    fn index_spreads_ports_over_the_cache() {
        let mut used = std::collections::HashSet::new();
        for p in 0..4096u16 {
            used.insert(index(&key(30000 + p)));
        }
        assert!(used.len() > 2500, "only {} of 4096 distinct slots", used.len());
    }
}
