//! The frame of an XDP context as a bounds-checked [`Packet`]: shared by the balancer's
//! object and the tools object (`src/tools.rs`).

use lb_common::packet::Packet;

/// The frame between `data` and `data_end`. Every access is checked against `data_end`
/// in the form the verifier recognises.
pub struct XdpPacket {
    pub start: usize,
    pub end: usize,
}

impl XdpPacket {
    #[inline(always)]
    pub fn of(ctx: &aya_ebpf::programs::XdpContext) -> Self {
        XdpPacket { start: ctx.data(), end: ctx.data_end() }
    }
}

impl Packet for XdpPacket {
    #[inline(always)]
    fn len(&self) -> usize {
        self.end - self.start
    }

    #[inline(always)]
    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        let ptr = self.start + off;
        if ptr + N > self.end {
            return None;
        }
        // SAFETY: [ptr, ptr + N) lies inside the frame (checked above).
        Some(unsafe { core::ptr::read_unaligned(ptr as *const [u8; N]) })
    }

    #[inline(always)]
    fn with_header<const N: usize, R>(&self, off: usize, f: impl FnOnce(&[u8; N]) -> R) -> Option<R> {
        let ptr = self.start + off;
        if ptr + N > self.end {
            return None;
        }
        // SAFETY: [ptr, ptr + N) lies inside the frame (checked above); u8 has no alignment.
        Some(f(unsafe { &*(ptr as *const [u8; N]) }))
    }

    #[inline(always)]
    fn load_u32(&self, off: usize) -> Option<u32> {
        let ptr = self.start + off;
        if ptr + 4 > self.end {
            return None;
        }
        let v: u64;
        // One 32-bit load. LLVM splits a Rust unaligned read into four byte loads on BPF,
        // and an aligned read would claim an alignment packet headers do not have; the
        // kernels drlb runs on (x86_64, arm64) load misaligned packet words natively and
        // their verifiers allow it.
        // SAFETY: [ptr, ptr + 4) lies inside the frame (checked above).
        unsafe { core::arch::asm!("{0} = *(u32 *)({1} + 0)", out(reg) v, in(reg) ptr, options(readonly, nostack, preserves_flags)) };
        Some(v as u32)
    }

    #[inline(always)]
    fn load_u32s<const N: usize>(&self, off: usize) -> Option<[u32; N]> {
        let ptr = self.start + off;
        if ptr + 4 * N > self.end {
            return None;
        }
        let mut out = [0u32; N];
        let mut i = 0;
        while i < N {
            let v: u64;
            // As in `load_u32`.
            // SAFETY: [ptr + 4i, ptr + 4i + 4) lies inside the frame (checked above, i < N).
            unsafe { core::arch::asm!("{0} = *(u32 *)({1} + 0)", out(reg) v, in(reg) ptr + 4 * i, options(readonly, nostack, preserves_flags)) };
            out[i] = v as u32;
            i += 1;
        }
        Some(out)
    }

    #[inline(always)]
    fn store_u32(&mut self, off: usize, v: u32) -> bool {
        let ptr = self.start + off;
        if ptr + 4 > self.end {
            return false;
        }
        // One 32-bit store, for the reason `load_u32` gives.
        // SAFETY: [ptr, ptr + 4) lies inside the frame (checked above).
        unsafe { core::arch::asm!("*(u32 *)({0} + 0) = {1}", in(reg) ptr, in(reg) v as u64, options(nostack, preserves_flags)) };
        true
    }

    #[inline(always)]
    fn store<const N: usize>(&mut self, off: usize, bytes: &[u8; N]) -> bool {
        let ptr = self.start + off;
        if ptr + N > self.end {
            return false;
        }
        // Byte by byte: bpf-linker has no memmove/memcpy for packet memory.
        let mut i = 0;
        while i < N {
            // SAFETY: inside the frame (checked above).
            unsafe { *((ptr + i) as *mut u8) = bytes[i] };
            i += 1;
        }
        true
    }
}

