//! The half-open table: where a TCP connection waits between the client's SYN and the
//! first packet that takes it out of SYN_RECV (normally the handshake's ACK).
//!
//! Why apart from the connection table: every SYN used to be inserted into the LRU
//! connection table, so spoofed SYNs — whose handshakes never complete — made the LRU
//! evict real connections, and each SYN paid for an LRU insert (six times the cost of
//! forwarding a packet). Here a SYN costs a read of one bucket of a set-associative array
//! and one write; a flood of spoofed SYNs can only displace other half-open entries, never
//! an established connection. The connection enters the connection table when it leaves SYN_RECV
//! ("promotion"), as IPVS's secure_tcp delays ESTABLISHED until the handshake completes
//! and FreeBSD's syncache keeps half-open state apart.
//!
//! Shared by all CPUs, not per CPU: nothing guarantees that a client's ACK arrives on
//! the CPU its SYN did (generic XDP, RPS, a veth's sender moving between CPUs).
//!
//! Buckets of [`HALF_OPEN_WAYS`] entries: a new connection takes an empty or expired way,
//! else the oldest, whose connection is displaced. Four ways keep displacement rare at
//! ordinary rates (100,000 new connections a second with 50 ms round trips fill 5,000 of
//! 65,536 entries; a bucket is then full for about one SYN in 4,000, where a direct-mapped
//! table would displace one in 13), and under a flood make replacement first-in,
//! first-out: every half-open entry lives about `HALF_OPEN_SIZE / flood rate` (0.4 s at
//! 170,000 SYNs a second), rather than a random, often much shorter, time.
//!
//! What stays as IPVS does it: the SYN is scheduled, counted in the real server's
//! InActConn and forwarded; a retransmitted SYN or a RST keeps the entry in SYN_RECV and
//! goes to the same server; the ACK makes it ESTABLISHED and active. Where it departs: a
//! connection displaced from a full bucket is forgotten (its count released). Under a
//! flood it is almost always a spoofed one; a real client whose entry was displaced has
//! its ACK dropped (`drop_no_connection`), or rescheduled with `sloppy_tcp`, and its
//! connection fails as it would have with the SYN lost.
//!
//! Counts: a half-open connection is in its server's InActConn from its SYN until it is
//! promoted (the count moves with it), displaced, or expires. Only the program writes this
//! table, so an expired entry stays until a SYN takes its slot; it leaves InActConn at the
//! controller's next sweep, which recounts live entries only and records when it ran
//! (`DRLB_SWEPT_AT`), or earlier if a SYN takes its slot first — the program releases it
//! then only if it expired after that sweep ([`HalfOpen::counted`]).

use crate::conn::{tcp, Conn, ConnKey};

/// Entries of `DRLB_HALF_OPEN` (a power of two): 64 bytes each, 4 MiB. At 170,000 spoofed
/// SYNs a second an entry lives about 0.4 s before a later SYN takes its way — a hundred
/// round trips of a distant client.
pub const HALF_OPEN_SIZE: u32 = 1 << 16;
/// Entries per bucket (a power of two): one key may be in any of its bucket's ways.
pub const HALF_OPEN_WAYS: u32 = 4;
/// Buckets of `DRLB_HALF_OPEN`.
pub const HALF_OPEN_BUCKETS: u32 = HALF_OPEN_SIZE / HALF_OPEN_WAYS;

/// Value of `DRLB_HALF_OPEN`: a connection in SYN_RECV and its key (64 bytes). An entry
/// whose key has protocol 0 holds nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HalfOpen {
    pub key: ConnKey,
    pub conn: Conn,
}

const _: () = assert!(core::mem::size_of::<HalfOpen>() == 64);

/// The first slot of `key`'s bucket; its ways are this and the next `HALF_OPEN_WAYS - 1`.
#[inline(always)]
pub fn bucket(key: &ConnKey) -> u32 {
    // The top bits of the multiplicative hash are its best mixed.
    ((key.mix() >> (64 - HALF_OPEN_BUCKETS.trailing_zeros())) as u32) * HALF_OPEN_WAYS
}

/// "No slot" in a [`Scan`].
pub const NO_SLOT: u32 = u32::MAX;

/// What a look at `key`'s bucket found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scan {
    /// The slot holding `key`'s live connection, or [`NO_SLOT`].
    pub held: u32,
    /// The slot a new connection of `key` takes: an empty or expired way, else the one
    /// that arrived first.
    pub free: u32,
    /// The new connection's `Conn::order`: after every live one of the bucket.
    pub order: u16,
}

/// Whether arrival order `a` is after `b`. Orders wrap; the live entries of a bucket are
/// far fewer than half the range apart.
#[inline(always)]
fn after(a: u16, b: u16) -> bool {
    (a.wrapping_sub(b) as i16) > 0
}

/// Looks for `key` in its bucket at `now`; `read` gives the entry of a slot. Arrival
/// order, not time, picks whom a full bucket displaces: clocks tick too coarsely to tell
/// SYNs apart, and the kernel's and the host model's tick apart.
#[inline(always)]
pub fn scan(key: &ConnKey, now: u64, read: impl Fn(u32) -> Option<HalfOpen>) -> Scan {
    let first = bucket(key);
    let mut out = Scan { held: NO_SLOT, free: NO_SLOT, order: 0 };
    // Plain integers with "none yet" flags, not Options: LLVM computes with an Option's
    // undefined payload ahead of the check, which the verifier refuses when a spilled
    // pointer sits in that stack slot.
    let (mut newest, mut any_live) = (0u16, false);
    let (mut oldest, mut oldest_slot) = (0u16, NO_SLOT);
    for way in 0..HALF_OPEN_WAYS {
        let slot = first + way;
        let Some(e) = read(slot) else { continue };
        if !e.live(now) {
            if out.free == NO_SLOT {
                out.free = slot;
            }
            continue;
        }
        let order = e.conn.order;
        if !any_live || after(order, newest) {
            newest = order;
        }
        any_live = true;
        if e.holds(key, now) {
            out.held = slot;
        } else if oldest_slot == NO_SLOT || after(oldest, order) {
            (oldest, oldest_slot) = (order, slot);
        }
    }
    if out.free == NO_SLOT {
        out.free = if oldest_slot == NO_SLOT { first } else { oldest_slot };
    }
    out.order = if any_live { newest.wrapping_add(1) } else { 0 };
    out
}

impl HalfOpen {
    /// Whether the entry holds a connection (live or expired).
    #[inline(always)]
    pub fn occupied(&self) -> bool {
        self.key.proto != 0 && self.conn.state == tcp::SYN_RECV
    }

    /// Whether the entry holds a connection that has not expired at `now`: one counted in
    /// its real server's InActConn.
    #[inline(always)]
    pub fn live(&self, now: u64) -> bool {
        self.occupied() && !self.conn.expired(now)
    }

    /// Whether the entry is still in its server's InActConn, given the time of the
    /// controller's last sweep: live, or expired since that sweep recounted.
    #[inline(always)]
    pub fn counted(&self, swept_at: u64) -> bool {
        self.occupied() && self.conn.last_seen + self.conn.timeout as u64 >= swept_at
    }

    /// Whether the entry holds `key`'s connection, live at `now`.
    #[inline(always)]
    pub fn holds(&self, key: &ConnKey, now: u64) -> bool {
        let (a, b) = (self.key.words(), key.words());
        // Word by word: a slice comparison becomes a byte-wise memcmp on BPF.
        let differs = (a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4]);
        differs == 0 && self.live(now)
    }

    /// An entry that holds nothing.
    pub const EMPTY: HalfOpen = HalfOpen {
        key: ConnKey { client: [0; 16], vip: [0; 16], cport: 0, vport: 0, proto: 0, _pad: [0; 3] },
        conn: Conn { last_seen: 0, backend: 0, service: 0, timeout: 0, state: 0, flags: 0, order: 0 },
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::v4_mapped;
    use crate::conn::CONN_F_INACTIVE;

    fn key(port: u16) -> ConnKey {
        ConnKey { client: v4_mapped([198, 18, 0, 10]), vip: v4_mapped([198, 18, 0, 100]), cport: port, vport: 80, proto: 6, _pad: [0; 3] }
    }

    #[test]
    fn an_entry_holds_its_key_until_it_expires() {
        let e = HalfOpen {
            key: key(1),
            conn: Conn { last_seen: 100, timeout: 60, state: tcp::SYN_RECV, flags: CONN_F_INACTIVE, ..Default::default() },
        };
        assert!(e.holds(&key(1), 160));
        assert!(!e.holds(&key(1), 161), "expired");
        assert!(!e.holds(&key(2), 100), "other key");
        assert!(e.occupied());
        assert!(!HalfOpen::EMPTY.occupied());
    }

    #[test]
    fn buckets_spread_ports() {
        let used: std::collections::HashSet<u32> = (0..4096u16).map(|p| bucket(&key(30000 + p))).collect();
        // Random keys would use about 3,625 of the 16,384 buckets; one client's consecutive
        // ports land a little closer together (about 3,100), which four ways absorb.
        assert!(used.len() > 3000, "only {} of 4096 distinct buckets", used.len());
        assert!(used.iter().all(|b| b % HALF_OPEN_WAYS == 0 && *b < HALF_OPEN_SIZE));
    }

    /// A live-at-100 SYN_RECV entry (expired if `last_seen` < 40) that arrived `order`th.
    fn syn_recv(port: u16, last_seen: u64, order: u16) -> HalfOpen {
        HalfOpen { key: key(port), conn: Conn { last_seen, timeout: 60, state: tcp::SYN_RECV, flags: CONN_F_INACTIVE, order, ..Default::default() } }
    }

    #[test]
    fn scan_finds_the_key_and_picks_empty_then_expired_then_first_arrived() {
        let k = key(9);
        let first = bucket(&k);
        let run = |ways: [HalfOpen; 4]| scan(&k, 100, |s| Some(ways[(s - first) as usize]));
        let e = HalfOpen::EMPTY;
        assert_eq!(run([e, e, e, e]), Scan { held: NO_SLOT, free: first, order: 0 });
        assert_eq!(run([syn_recv(1, 90, 7), e, syn_recv(9, 95, 8), e]), Scan { held: first + 2, free: first + 1, order: 9 });
        // Full of live entries: the first to arrive (order 4) goes, whatever the clock says.
        assert_eq!(run([syn_recv(1, 90, 5), syn_recv(2, 99, 4), syn_recv(3, 95, 7), syn_recv(4, 85, 6)]), Scan { held: NO_SLOT, free: first + 1, order: 8 });
        // Orders wrap: 65535 arrived before 0 and 1.
        assert_eq!(run([syn_recv(1, 90, 0), syn_recv(2, 90, 65535), syn_recv(3, 90, 1), syn_recv(4, 90, 65534)]), Scan { held: NO_SLOT, free: first + 3, order: 2 });
        // An expired way (last_seen 10, timeout 60) before any live one.
        assert_eq!(run([syn_recv(1, 90, 1), syn_recv(2, 80, 0), syn_recv(3, 95, 2), syn_recv(4, 10, 3)]), Scan { held: NO_SLOT, free: first + 3, order: 3 });
        // The key's own entry, expired, is not held.
        assert_eq!(run([syn_recv(9, 10, 0), syn_recv(2, 80, 1), e, e]), Scan { held: NO_SLOT, free: first, order: 2 });
    }
}
