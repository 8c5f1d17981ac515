//! Reading a whole hash map in few system calls: BPF_MAP_LOOKUP_BATCH (Linux 5.6), where
//! iterating costs two calls per entry (next key, then lookup) — at a million connections,
//! two million calls per sweep.

use std::io;
use std::os::fd::{AsFd as _, AsRawFd as _};

use aya::maps::MapData;

/// `BPF_MAP_LOOKUP_BATCH` (`enum bpf_cmd`).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// `BPF_MAP_UPDATE_BATCH` (`enum bpf_cmd`).
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
/// Entries asked for per call: more than any hash bucket holds (the kernel refuses a batch
/// smaller than a bucket with ENOSPC).
const BATCH: usize = 4096;

/// `struct { in_batch, out_batch, keys, values: u64; count, map_fd: u32; elem_flags, flags: u64 }`
/// of `union bpf_attr`, for the batch commands.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Calls `f` with every (key, value) of `map`, read `BATCH` entries per system call, without
/// holding more than one batch: a sweep of a million connections needs no copy of the table.
pub fn for_each<K: Copy, V: Copy>(map: &MapData, mut f: impl FnMut(&K, &V)) -> io::Result<()> {
    let (ks, vs) = (std::mem::size_of::<K>(), std::mem::size_of::<V>());
    let mut keys = vec![0u8; BATCH * ks];
    let mut values = vec![0u8; BATCH * vs];
    // The kernel's position between calls (a bucket index for hash maps).
    let (mut token_in, mut token_out) = (0u64, 0u64);
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { &token_in as *const u64 as u64 },
            out_batch: &mut token_out as *mut u64 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: BATCH as u32,
            map_fd: map.fd().as_fd().as_raw_fd() as u32,
            ..Default::default()
        };
        // SAFETY: `attr` describes buffers of BATCH keys and values that outlive the call,
        // and the tokens; the kernel writes only within them.
        let r = unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_LOOKUP_BATCH, &mut attr as *mut BatchAttr, std::mem::size_of::<BatchAttr>()) };
        let err = (r < 0).then(io::Error::last_os_error);
        let n = (attr.count as usize).min(BATCH);
        for i in 0..n {
            // SAFETY: the kernel filled `n` whole keys and values; unaligned reads copy them
            // out as the plain-data types they are.
            let (k, v) = unsafe {
                (
                    std::ptr::read_unaligned(keys.as_ptr().add(i * ks) as *const K),
                    std::ptr::read_unaligned(values.as_ptr().add(i * vs) as *const V),
                )
            };
            f(&k, &v);
        }
        match err {
            // ENOENT: the last batch (possibly partial) has been returned.
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Some(e) => return Err(e),
            None => {}
        }
        token_in = token_out;
        first = false;
    }
}

/// Writes `entries` into the hash map `map` with BPF_MAP_UPDATE_BATCH (Linux 5.6), `BATCH`
/// per system call: how `drlb bench --controller` fills a table with a million connections.
pub fn update_all<K: Copy, V: Copy>(map: &MapData, entries: &[(K, V)]) -> io::Result<()> {
    for chunk in entries.chunks(BATCH) {
        let keys: Vec<K> = chunk.iter().map(|(k, _)| *k).collect();
        let values: Vec<V> = chunk.iter().map(|(_, v)| *v).collect();
        let mut attr = BatchAttr {
            keys: keys.as_ptr() as u64,
            values: values.as_ptr() as u64,
            count: chunk.len() as u32,
            map_fd: map.fd().as_fd().as_raw_fd() as u32,
            ..Default::default()
        };
        // SAFETY: `attr` points at `count` keys and values that outlive the call; the
        // kernel only reads them (and writes `count`).
        let r = unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_UPDATE_BATCH, &mut attr as *mut BatchAttr, std::mem::size_of::<BatchAttr>()) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
