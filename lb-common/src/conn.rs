//! Connection state as IPVS tracks it for Direct Routing, where the director sees only the
//! client's half of each connection (IPVS's "input-only" table, `ip_vs_proto_tcp.c`).

use crate::addr::Addr16;

/// Key of the connection table: the client's 5-tuple toward the VIP. Aligned to 8 so the
/// program builds and compares it in whole words rather than byte by byte.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct ConnKey {
    pub client: Addr16,
    pub vip: Addr16,
    pub cport: u16,
    pub vport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

const _: () = assert!(core::mem::size_of::<ConnKey>() == 40);

// The word-wise constructors below lay bytes out little-endian, as drlb's targets do.
#[cfg(target_endian = "big")]
compile_error!("drlb's dataplane layouts assume a little-endian target");

impl ConnKey {
    /// The key of an IPv4 packet, built in whole words: `src4`/`dst4` as
    /// [`crate::packet::Ipv4Info`] holds them, ports in host order. Equal to the key with
    /// IPv4-mapped addresses built field by field, but stored as five 8-byte writes rather
    /// than forty 1-byte ones (which the key's first word-sized read would also stall on).
    #[inline(always)]
    pub fn v4(src4: u32, dst4: u32, cport: u16, vport: u16, proto: u8) -> ConnKey {
        // Bytes 10 and 11 of an IPv4-mapped address are 0xff.
        const MAPPED: u64 = 0xffff << 16;
        let words: [u64; 5] = [
            0,
            MAPPED | (src4 as u64) << 32,
            0,
            MAPPED | (dst4 as u64) << 32,
            cport as u64 | (vport as u64) << 16 | (proto as u64) << 32,
        ];
        // SAFETY: 40 bytes either way, and every bit pattern is a valid ConnKey.
        unsafe { core::mem::transmute::<[u64; 5], ConnKey>(words) }
    }

    /// The key of an IPv6 packet, built in whole words as [`ConnKey::v4`]: the addresses'
    /// words as [`crate::packet::load_addr6`] loads them, ports in host order.
    #[inline(always)]
    pub fn v6(src: &[u32; 4], dst: &[u32; 4], cport: u16, vport: u16, proto: u8) -> ConnKey {
        let words: [u64; 5] = [
            src[0] as u64 | (src[1] as u64) << 32,
            src[2] as u64 | (src[3] as u64) << 32,
            dst[0] as u64 | (dst[1] as u64) << 32,
            dst[2] as u64 | (dst[3] as u64) << 32,
            cport as u64 | (vport as u64) << 16 | (proto as u64) << 32,
        ];
        // SAFETY: 40 bytes either way, and every bit pattern is a valid ConnKey.
        unsafe { core::mem::transmute::<[u64; 5], ConnKey>(words) }
    }

    /// A multiplicative hash of the key's five words, for the direct-mapped tables
    /// (flow cache, half-open table), which take different bits of it.
    #[inline(always)]
    pub fn mix(&self) -> u64 {
        let w = self.words();
        let x = w[0] ^ w[1].rotate_left(17) ^ w[2] ^ w[3].rotate_left(31) ^ w[4].rotate_left(7);
        x.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    /// The key as five words, for hashing and comparing it whole.
    #[inline(always)]
    pub fn words(&self) -> &[u64; 5] {
        // SAFETY: 40 bytes, 8-aligned, every byte belongs to a field (no implicit padding),
        // and any bit pattern is a valid u64.
        unsafe { &*(self as *const ConnKey as *const [u64; 5]) }
    }
}

#[cfg(test)]
mod key_tests {
    use super::*;
    use crate::addr::v4_mapped;

    #[test]
    fn word_built_key_equals_field_built_key() {
        let (src, dst) = ([198, 18, 0, 10], [198, 18, 0, 100]);
        let by_fields = ConnKey { client: v4_mapped(src), vip: v4_mapped(dst), cport: 40001, vport: 443, proto: 17, _pad: [0; 3] };
        let by_words = ConnKey::v4(u32::from_le_bytes(src), u32::from_le_bytes(dst), 40001, 443, 17);
        assert_eq!(by_words, by_fields);
    }

    #[test]
    fn word_built_v6_key_equals_field_built_key() {
        let src: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
        let dst: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00];
        let words = |a: &[u8; 16]| core::array::from_fn::<u32, 4, _>(|i| u32::from_le_bytes([a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3]]));
        let by_fields = ConnKey { client: src, vip: dst, cport: 40312, vport: 80, proto: 6, _pad: [0; 3] };
        assert_eq!(ConnKey::v6(&words(&src), &words(&dst), 40312, 80, 6), by_fields);
        assert_eq!(crate::packet::addr6(&words(&src)), src);
    }
}

/// `Conn::flags`: counted in the real server's InActConn (IPVS `IP_VS_CONN_F_INACTIVE`).
pub const CONN_F_INACTIVE: u8 = 1 << 0;
/// `Conn::flags`: installed from a peer director's sync message, and no packet of it has
/// reached this director since. The controller re-announces only connections this
/// director forwards, so two directors never keep re-announcing each other's entries.
pub const CONN_F_SYNCED: u8 = 1 << 1;

/// Value of the connection table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Conn {
    /// Clock ticks (`bpf_jiffies64()`) of the last packet.
    pub last_seen: u64,
    /// Slot of the real server in `DRLB_BACKENDS`.
    pub backend: u32,
    /// Service id (index into `DRLB_SERVICES`).
    pub service: u32,
    /// Idle ticks after which the entry is dead, for its current state (IPVS `cp->timeout`).
    pub timeout: u32,
    pub state: u8,
    pub flags: u8,
    /// Half-open table only ([`crate::halfopen`]): the entry's place in its bucket's order
    /// of arrival, which decides whom a full bucket displaces. 0 in the connection table.
    pub order: u16,
}

impl Conn {
    #[inline(always)]
    pub fn is_inactive(&self) -> bool {
        self.flags & CONN_F_INACTIVE != 0
    }

    /// Whether the entry outlived its timeout at `now` (ticks). An entry a packet refreshed
    /// after `now` was read is not: the controller reads the clock, then the tables, and
    /// a wrapping difference made every connection that talked in between look expired to
    /// its sweep, which removed it.
    #[inline(always)]
    pub fn expired(&self, now: u64) -> bool {
        now.saturating_sub(self.last_seen) > self.timeout as u64
    }
}

/// IPVS TCP states (`IP_VS_TCP_S_*`), in the kernel's numbering.
pub mod tcp {
    pub const NONE: u8 = 0;
    pub const ESTABLISHED: u8 = 1;
    pub const SYN_SENT: u8 = 2;
    pub const SYN_RECV: u8 = 3;
    pub const FIN_WAIT: u8 = 4;
    pub const TIME_WAIT: u8 = 5;
    pub const CLOSE: u8 = 6;
    pub const CLOSE_WAIT: u8 = 7;
    pub const LAST_ACK: u8 = 8;
    pub const LISTEN: u8 = 9;
    pub const SYNACK: u8 = 10;
    pub const COUNT: usize = 11;

    pub const NAMES: [&str; COUNT] = [
        "NONE", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT", "TIME_WAIT", "CLOSE", "CLOSE_WAIT",
        "LAST_ACK", "LISTEN", "SYNACK",
    ];

    /// `tcp_timeouts[]`, seconds.
    pub const DEFAULT_TIMEOUTS: [u32; COUNT] = [2, 900, 120, 60, 120, 120, 10, 60, 30, 120, 120];

    const S_ES: u8 = ESTABLISHED;
    const S_SS: u8 = SYN_SENT;
    const S_SR: u8 = SYN_RECV;
    const S_FW: u8 = FIN_WAIT;
    const S_TW: u8 = TIME_WAIT;
    const S_CL: u8 = CLOSE;
    const S_CW: u8 = CLOSE_WAIT;
    const S_LA: u8 = LAST_ACK;
    const S_LI: u8 = LISTEN;

    /// The INPUT-ONLY rows of `tcp_states[]` (IPVS without secure_tcp), indexed
    /// `[event][current state]`; events as [`event`] numbers them.
    pub const INPUT_ONLY: [[u8; COUNT]; 4] = [
        /* syn */ [S_SR, S_ES, S_ES, S_SR, S_SR, S_SR, S_SR, S_SR, S_SR, S_SR, S_SR],
        /* fin */ [S_CL, S_FW, S_SS, S_TW, S_FW, S_TW, S_CL, S_CW, S_LA, S_LI, S_TW],
        /* ack */ [S_ES, S_ES, S_SS, S_ES, S_FW, S_TW, S_CL, S_CW, S_CL, S_LI, S_ES],
        /* rst */ [S_CL, S_CL, S_CL, S_SR, S_CL, S_CL, S_CL, S_CL, S_LA, S_LI, S_CL],
    ];

    pub const FLAG_FIN: u8 = 0x01;
    pub const FLAG_SYN: u8 = 0x02;
    pub const FLAG_RST: u8 = 0x04;
    pub const FLAG_ACK: u8 = 0x10;

    /// [`event`] of a segment with ACK and none of RST, SYN, FIN.
    pub const EVENT_ACK: usize = 2;

    /// `tcp_state_idx()`: RST wins over SYN over FIN over ACK; `None` for none of them.
    #[inline(always)]
    pub fn event(flags: u8) -> Option<usize> {
        if flags & FLAG_RST != 0 {
            Some(3)
        } else if flags & FLAG_SYN != 0 {
            Some(0)
        } else if flags & FLAG_FIN != 0 {
            Some(1)
        } else if flags & FLAG_ACK != 0 {
            Some(2)
        } else {
            None
        }
    }

    /// `set_tcp_state()`'s next state; a segment with none of the four flags moves the
    /// entry to CLOSE, as in IPVS.
    #[inline(always)]
    pub fn next_state(state: u8, flags: u8) -> u8 {
        match event(flags) {
            Some(e) if (state as usize) < COUNT => INPUT_ONLY[e][state as usize],
            _ => CLOSE,
        }
    }

    /// Whether a SYN on an entry in `state` starts a new connection, scheduled afresh,
    /// rather than belonging to the old one (IPVS `is_new_conn_expected()` with the
    /// default conn_reuse_mode 1: TIME_WAIT and CLOSE).
    #[inline(always)]
    pub fn syn_starts_new_connection(state: u8) -> bool {
        state == TIME_WAIT || state == CLOSE
    }
}

/// Timeouts a service may override (`ipvsadm --set tcp tcpfin udp`), seconds.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp_established: u32,
    pub tcp_fin_wait: u32,
    pub udp: u32,
}

/// IPVS's UDP timeout (`udp_timeouts[IP_VS_UDP_S_NORMAL]`), seconds.
pub const DEFAULT_UDP_TIMEOUT: u32 = 300;

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_established: tcp::DEFAULT_TIMEOUTS[tcp::ESTABLISHED as usize],
            tcp_fin_wait: tcp::DEFAULT_TIMEOUTS[tcp::FIN_WAIT as usize],
            udp: DEFAULT_UDP_TIMEOUT,
        }
    }
}

impl Timeouts {
    /// The timeout of a TCP entry in `state`.
    #[inline(always)]
    pub fn tcp(&self, state: u8) -> u32 {
        if state == tcp::ESTABLISHED {
            self.tcp_established
        } else if state == tcp::FIN_WAIT {
            self.tcp_fin_wait
        } else if (state as usize) < tcp::COUNT {
            tcp::DEFAULT_TIMEOUTS[state as usize]
        } else {
            tcp::DEFAULT_TIMEOUTS[tcp::CLOSE as usize]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tcp::*;

    #[test]
    fn an_entry_refreshed_after_now_was_read_is_not_expired() {
        let c = super::Conn { last_seen: 1_000, timeout: 900, ..Default::default() };
        assert!(!c.expired(999), "refreshed after the clock was read");
        assert!(!c.expired(1_900));
        assert!(c.expired(1_901));
    }

    #[test]
    fn handshake_and_close_as_ipvs_input_only() {
        let mut s = NONE;
        s = next_state(s, FLAG_SYN);
        assert_eq!(s, SYN_RECV);
        s = next_state(s, FLAG_SYN); // retransmitted SYN
        assert_eq!(s, SYN_RECV);
        s = next_state(s, FLAG_ACK);
        assert_eq!(s, ESTABLISHED);
        s = next_state(s, FLAG_ACK | 0x08);
        assert_eq!(s, ESTABLISHED);
        s = next_state(s, FLAG_FIN | FLAG_ACK);
        assert_eq!(s, FIN_WAIT);
        s = next_state(s, FLAG_ACK);
        assert_eq!(s, FIN_WAIT);
        assert_eq!(next_state(ESTABLISHED, FLAG_RST | FLAG_ACK), CLOSE);
        assert_eq!(next_state(ESTABLISHED, 0), CLOSE);
    }
}
