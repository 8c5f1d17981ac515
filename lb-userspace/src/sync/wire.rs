//! IPVS connection-sync protocol, version 1 (`net/netfilter/ipvs/ip_vs_sync.c`, the
//! kernel's format since 2.6.39), so drlb and a kernel IPVS director running
//! `ipvsadm --start-daemon` (or keepalived's `lvs_sync_daemon`) exchange connections.
//!
//! A message is an 8-byte header and up to 255 connection records, each padded to 4
//! bytes; all fields big-endian:
//!
//! ```text
//! struct ip_vs_sync_mesg { u8 reserved (0); u8 syncid; be16 size; u8 nr_conns; s8 version (1); u16 spare (0); }
//! struct ip_vs_sync_v4  { u8 type; u8 protocol; be16 ver_size; be32 flags; be16 state;
//!                         be16 cport, vport, dport; be32 fwmark, timeout; be32 caddr, vaddr, daddr; }  // 36 bytes
//! struct ip_vs_sync_v6  { ... the same with 16-byte addresses }                                       // 72 bytes
//! ```
//!
//! then options (type, length, data). A message whose header or record sizes are wrong is
//! refused whole — where the kernel installs the records before the bad one, drlb installs
//! none; a record with a bad option or an unknown address type is skipped alone, as the
//! kernel skips it (`ip_vs_proc_sync_conn()` returning a positive error).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `SYNC_PROTO_VER`.
pub const VERSION: u8 = 1;
/// IPVS's multicast group (`IP_VS_SYNC_GROUP`) and port (`IP_VS_SYNC_PORT`).
pub const DEFAULT_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 81);
pub const DEFAULT_PORT: u16 = 8848;
pub const HEADER_LEN: usize = 8;
pub const V4_LEN: usize = 36;
pub const V6_LEN: usize = 72;
/// `nr_conns` is one byte.
pub const MAX_RECORDS: usize = 255;

/// `ip_vs_sync_v4.type`: the record's addresses are IPv6 (`STYPE_F_INET6`).
const STYPE_F_INET6: u8 = 1;
/// Top 4 bits of `ver_size`: the record's version (0); the low 12 its size.
const SVER_SHIFT: u16 = 12;
const SVER_MASK: u16 = 0x0fff;
/// Options (`IPVS_OPT_*`): sequence data, persistence-engine data and name; an option with
/// `IPVS_OPT_F_PARAM` set may be skipped by a receiver that does not know it.
const OPT_SEQ_DATA: u8 = 1;
const OPT_PE_DATA: u8 = 2;
const OPT_PE_NAME: u8 = 3;
const OPT_F_PARAM: u8 = 1 << 6;

/// Connection flags (`IP_VS_CONN_F_*`) drlb reads or writes.
pub mod flags {
    /// Forwarding method: Direct Routing.
    pub const DROUTE: u32 = 0x0003;
    pub const INACTIVE: u32 = 0x0100;
    pub const TEMPLATE: u32 = 0x1000;
}

/// One connection record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    pub protocol: u8,
    pub flags: u32,
    pub state: u16,
    pub cport: u16,
    pub vport: u16,
    pub dport: u16,
    pub fwmark: u32,
    /// Seconds.
    pub timeout: u32,
    /// All three of one family.
    pub caddr: IpAddr,
    pub vaddr: IpAddr,
    pub daddr: IpAddr,
}

impl Record {
    /// An ESTABLISHED, active TCP connection forwarded by Direct Routing, with IPVS's
    /// default timeout for the state (900 s).
    pub fn established_dr(client: (IpAddr, u16), vip: (IpAddr, u16), server: IpAddr) -> Record {
        Record {
            protocol: 6,
            flags: flags::DROUTE,
            state: 1,
            cport: client.1,
            vport: vip.1,
            dport: vip.1,
            fwmark: 0,
            timeout: 900,
            caddr: client.0,
            vaddr: vip.0,
            daddr: server,
        }
    }

    fn is_v6(&self) -> bool {
        self.caddr.is_ipv6()
    }

    fn len(&self) -> usize {
        if self.is_v6() { V6_LEN } else { V4_LEN }
    }
}

/// Why a datagram was not taken; each is a counter (`drlb_sync_rejected_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DecodeError {
    /// Shorter than the 8-byte header.
    ShortHeader,
    /// The header's size is not the datagram's.
    BadSize,
    /// Not version 1 (version 0, IPVS before 2.6.39, or reserved bits set), or a record of
    /// a version other than 0.
    BadVersion,
    /// Another pair's syncid.
    WrongSyncid,
    /// A record (or the count of records) reaches past the datagram's end.
    Truncated,
}

/// A decoded message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decoded {
    pub records: Vec<Record>,
    /// Records left out: a malformed option, an unknown mandatory option, an unknown
    /// address type.
    pub skipped: u32,
}

impl DecodeError {
    pub fn name(self) -> &'static str {
        match self {
            DecodeError::ShortHeader => "short_header",
            DecodeError::BadSize => "bad_size",
            DecodeError::BadVersion => "bad_version",
            DecodeError::WrongSyncid => "wrong_syncid",
            DecodeError::Truncated => "truncated",
        }
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn addr(b: &[u8], at: usize, v6: bool) -> IpAddr {
    if v6 {
        let mut a = [0u8; 16];
        a.copy_from_slice(&b[at..at + 16]);
        IpAddr::V6(Ipv6Addr::from(a))
    } else {
        IpAddr::V4(Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3]))
    }
}

/// Decodes a whole message. `syncid` 0 takes every syncid (as IPVS's backup does).
pub fn decode(msg: &[u8], syncid: u8) -> Result<Decoded, DecodeError> {
    if msg.len() < HEADER_LEN {
        return Err(DecodeError::ShortHeader);
    }
    if be16(msg, 2) as usize != msg.len() {
        return Err(DecodeError::BadSize);
    }
    if msg[0] != 0 || msg[5] != VERSION || be16(msg, 6) != 0 {
        return Err(DecodeError::BadVersion);
    }
    if syncid != 0 && msg[1] != syncid {
        return Err(DecodeError::WrongSyncid);
    }
    let count = msg[4] as usize;
    let mut out = Decoded { records: Vec::with_capacity(count), skipped: 0 };
    let mut at = HEADER_LEN;
    for _ in 0..count {
        if at + V4_LEN > msg.len() {
            return Err(DecodeError::Truncated);
        }
        let ver_size = be16(msg, at + 2);
        if ver_size >> SVER_SHIFT != 0 {
            return Err(DecodeError::BadVersion);
        }
        let size = (ver_size & SVER_MASK) as usize;
        let v6 = msg[at] & STYPE_F_INET6 != 0;
        let base = if v6 { V6_LEN } else { V4_LEN };
        if size < base || at + size > msg.len() {
            return Err(DecodeError::Truncated);
        }
        let r = &msg[at..at + size];
        // Records are 32-bit aligned.
        at += (size + 3) & !3;
        if r[0] & !STYPE_F_INET6 != 0 || !options_ok(&r[base..]) {
            out.skipped += 1;
            continue;
        }
        let a = if v6 { 16 } else { 4 };
        out.records.push(Record {
            protocol: r[1],
            flags: be32(r, 4),
            state: be16(r, 8),
            cport: be16(r, 10),
            vport: be16(r, 12),
            dport: be16(r, 14),
            fwmark: be32(r, 16),
            timeout: be32(r, 20),
            caddr: addr(r, 24, v6),
            vaddr: addr(r, 24 + a, v6),
            daddr: addr(r, 24 + 2 * a, v6),
        });
    }
    Ok(out)
}

/// Options after a record's fixed part (`ip_vs_proc_sync_conn()`): sequence data and
/// persistence-engine data are read past (DR rewrites no sequence numbers; drlb has no
/// persistence engines), unknown optional ones skipped, unknown mandatory ones refused.
fn options_ok(mut p: &[u8]) -> bool {
    while !p.is_empty() {
        if p.len() < 2 {
            return false;
        }
        let (kind, len) = (p[0], p[1] as usize);
        if len == 0 || 2 + len > p.len() {
            return false;
        }
        match kind & !OPT_F_PARAM {
            OPT_SEQ_DATA | OPT_PE_DATA | OPT_PE_NAME => {}
            _ if kind & OPT_F_PARAM != 0 => {}
            _ => return false,
        }
        p = &p[2 + len..];
    }
    true
}

/// Encodes records into as few messages as fit `max_len` bytes (the interface's MTU less
/// the IP and UDP headers) and 255 records each.
pub fn encode(records: &[Record], syncid: u8, max_len: usize) -> Vec<Vec<u8>> {
    let max_len = max_len.clamp(HEADER_LEN + V6_LEN, u16::MAX as usize);
    let mut out = Vec::new();
    let mut msg = Vec::new();
    let mut count = 0usize;
    for r in records {
        if count == MAX_RECORDS || (count > 0 && msg.len() + r.len() > max_len) {
            out.push(finish(msg, syncid, count));
            msg = Vec::new();
            count = 0;
        }
        if msg.is_empty() {
            msg.resize(HEADER_LEN, 0);
        }
        put_record(&mut msg, r);
        count += 1;
    }
    if count > 0 {
        out.push(finish(msg, syncid, count));
    }
    out
}

fn finish(mut msg: Vec<u8>, syncid: u8, count: usize) -> Vec<u8> {
    let size = msg.len() as u16;
    msg[0] = 0;
    msg[1] = syncid;
    msg[2..4].copy_from_slice(&size.to_be_bytes());
    msg[4] = count as u8;
    msg[5] = VERSION;
    msg[6..8].copy_from_slice(&[0, 0]);
    msg
}

fn put_record(msg: &mut Vec<u8>, r: &Record) {
    let v6 = r.is_v6();
    msg.push(if v6 { STYPE_F_INET6 } else { 0 });
    msg.push(r.protocol);
    msg.extend_from_slice(&(r.len() as u16 & SVER_MASK).to_be_bytes());
    msg.extend_from_slice(&r.flags.to_be_bytes());
    msg.extend_from_slice(&r.state.to_be_bytes());
    for port in [r.cport, r.vport, r.dport] {
        msg.extend_from_slice(&port.to_be_bytes());
    }
    msg.extend_from_slice(&r.fwmark.to_be_bytes());
    msg.extend_from_slice(&r.timeout.to_be_bytes());
    for a in [r.caddr, r.vaddr, r.daddr] {
        match (a, v6) {
            (IpAddr::V4(a), false) => msg.extend_from_slice(&a.octets()),
            (IpAddr::V6(a), true) => msg.extend_from_slice(&a.octets()),
            (IpAddr::V4(a), true) => msg.extend_from_slice(&a.to_ipv6_mapped().octets()),
            (IpAddr::V6(a), false) => msg.extend_from_slice(&a.to_ipv4_mapped().map(|a| a.octets()).unwrap_or_default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(cport: u16) -> Record {
        Record::established_dr(("198.18.0.10".parse().unwrap(), cport), ("198.18.0.100".parse().unwrap(), 80), "198.18.0.11".parse().unwrap())
    }

    fn v6() -> Record {
        Record {
            caddr: "2001:db8::10".parse().unwrap(),
            vaddr: "2001:db8::100".parse().unwrap(),
            daddr: "2001:db8::11".parse().unwrap(),
            flags: flags::DROUTE | flags::INACTIVE,
            state: 3,
            ..v4(1)
        }
    }

    /// A record laid out field by field from `struct ip_vs_sync_v4`, as the kernel's
    /// `ip_vs_sync_conn()` fills it.
    fn kernel_v4_record() -> Vec<u8> {
        let mut r = Vec::new();
        r.push(0); // type: IPv4
        r.push(6); // protocol
        r.extend_from_slice(&(36u16).to_be_bytes()); // ver_size: version 0, 36 bytes
        r.extend_from_slice(&(0x0103u32).to_be_bytes()); // flags: DROUTE | INACTIVE
        r.extend_from_slice(&(3u16).to_be_bytes()); // state: SYN_RECV
        r.extend_from_slice(&40000u16.to_be_bytes()); // cport
        r.extend_from_slice(&80u16.to_be_bytes()); // vport
        r.extend_from_slice(&80u16.to_be_bytes()); // dport
        r.extend_from_slice(&0u32.to_be_bytes()); // fwmark
        r.extend_from_slice(&60u32.to_be_bytes()); // timeout
        r.extend_from_slice(&[198, 18, 0, 10, 198, 18, 0, 100, 198, 18, 0, 11]);
        r
    }

    fn message(syncid: u8, records: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = records.concat();
        let mut m = vec![0, syncid];
        m.extend_from_slice(&((HEADER_LEN + body.len()) as u16).to_be_bytes());
        m.extend_from_slice(&[records.len() as u8, 1, 0, 0]);
        m.extend_from_slice(&body);
        m
    }

    #[test]
    fn decodes_the_kernels_layout() {
        let recs = decode(&message(7, &[kernel_v4_record()]), 7).unwrap().records;
        assert_eq!(
            recs,
            vec![Record { flags: 0x0103, state: 3, cport: 40000, timeout: 60, ..v4(0) }]
        );
    }

    #[test]
    fn round_trips_v4_and_v6_and_encodes_as_the_kernel_does() {
        let records = vec![v4(1), v6(), v4(3)];
        let msgs = encode(&records, 7, 1472);
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].len(), HEADER_LEN + 2 * V4_LEN + V6_LEN);
        assert_eq!(decode(&msgs[0], 7).unwrap().records, records);
        assert_eq!(decode(&msgs[0], 0).unwrap().records, records, "syncid 0 takes every syncid");
        // Byte for byte what the kernel's struct gives.
        let one = encode(&[Record { flags: 0x0103, state: 3, cport: 40000, timeout: 60, ..v4(0) }], 7, 1472);
        assert_eq!(one[0], message(7, &[kernel_v4_record()]));
    }

    #[test]
    fn splits_by_size_and_count() {
        let records: Vec<Record> = (0..600).map(v4).collect();
        let msgs = encode(&records, 1, 1472);
        assert!(msgs.iter().all(|m| m.len() <= 1472));
        assert_eq!(msgs[0][4] as usize, (1472 - HEADER_LEN) / V4_LEN);
        let back: Vec<Record> = msgs.iter().flat_map(|m| decode(m, 1).unwrap().records).collect();
        assert_eq!(back, records);
        let big = encode(&records, 1, 65000);
        assert_eq!(big.iter().map(|m| m[4] as usize).collect::<Vec<_>>(), vec![255, 255, 90]);
    }

    #[test]
    fn options_are_read_past_or_refused() {
        let mut rec = kernel_v4_record();
        // Sequence data (24 bytes), as IPVS adds for NAT connections with sequence deltas.
        rec.extend_from_slice(&[OPT_SEQ_DATA, 24]);
        rec.extend_from_slice(&[0; 24]);
        rec.extend_from_slice(&[0, 0]); // pad to 4
        let size = (V4_LEN + 26) as u16;
        rec[2..4].copy_from_slice(&size.to_be_bytes());
        assert_eq!(decode(&message(7, &[rec.clone(), kernel_v4_record()]), 7).unwrap().records.len(), 2);
        // An unknown mandatory option: that record is skipped, the others taken.
        let mut bad = kernel_v4_record();
        bad.extend_from_slice(&[9, 2, 0, 0]);
        bad[2..4].copy_from_slice(&(40u16).to_be_bytes());
        let d = decode(&message(7, &[bad.clone(), kernel_v4_record()]), 7).unwrap();
        assert_eq!((d.records.len(), d.skipped), (1, 1));
        // ... and the option is read past when marked optional.
        bad[V4_LEN] = 9 | OPT_F_PARAM;
        assert_eq!(decode(&message(7, &[bad]), 7).unwrap().records.len(), 1);
        // A zero-length option, and an unknown address type.
        let mut zero = kernel_v4_record();
        zero.extend_from_slice(&[OPT_PE_NAME, 0, 0, 0]);
        zero[2..4].copy_from_slice(&(40u16).to_be_bytes());
        let mut odd_type = kernel_v4_record();
        odd_type[0] = 4;
        let d = decode(&message(7, &[zero, odd_type]), 7).unwrap();
        assert_eq!((d.records.len(), d.skipped), (0, 2));
    }

    #[test]
    fn every_bad_message_is_refused_whole_with_its_reason() {
        let good = message(7, &[kernel_v4_record(), kernel_v4_record()]);
        assert_eq!(decode(&good[..20], 7), Err(DecodeError::BadSize));
        assert_eq!(decode(&good[..3], 7), Err(DecodeError::ShortHeader));
        // Truncated: the header says 2 records but the datagram (and its size) holds 1.5.
        let mut cut = good[..HEADER_LEN + V4_LEN + 20].to_vec();
        let n = cut.len() as u16;
        cut[2..4].copy_from_slice(&n.to_be_bytes());
        assert_eq!(decode(&cut, 7), Err(DecodeError::Truncated));
        // An oversized count: 200 records announced, 2 present.
        let mut many = good.clone();
        many[4] = 200;
        assert_eq!(decode(&many, 7), Err(DecodeError::Truncated));
        // Version 0 (pre-2.6.39 layout) and reserved bits.
        let mut v0 = good.clone();
        v0[5] = 0;
        assert_eq!(decode(&v0, 7), Err(DecodeError::BadVersion));
        let mut spare = good.clone();
        spare[7] = 1;
        assert_eq!(decode(&spare, 7), Err(DecodeError::BadVersion));
        let mut rec_version = good.clone();
        rec_version[HEADER_LEN + 2] |= 0x10;
        assert_eq!(decode(&rec_version, 7), Err(DecodeError::BadVersion));
        assert_eq!(decode(&good, 8), Err(DecodeError::WrongSyncid));
        // A record whose size is below its fixed part.
        let mut small = good.clone();
        small[HEADER_LEN + 3] = 20;
        assert_eq!(decode(&small, 7), Err(DecodeError::Truncated));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(7);
        let good = message(7, &[kernel_v4_record(), kernel_v4_record()]);
        for _ in 0..20_000 {
            let mut m = if rng.bool() { good.clone() } else { (0..rng.usize(0..200)).map(|_| rng.u8(..)).collect() };
            for _ in 0..rng.usize(0..4) {
                if !m.is_empty() {
                    let i = rng.usize(..m.len());
                    m[i] = rng.u8(..);
                }
            }
            let _ = decode(&m, if rng.bool() { 7 } else { 0 });
        }
    }
}
