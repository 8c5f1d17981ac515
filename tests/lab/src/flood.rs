//! A bounded SYN flood from one of the lab's namespaces: spoofed sources in 198.19.0.0/16,
//! outside the lab's /24, so nothing answers (the real servers have no route back and drop
//! their SYN-ACKs), sent as raw frames to the director's MAC.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::{in_netns, Lab, DIRECTOR, VIP};

/// What a flood sent.
#[derive(Debug, Clone, Copy)]
pub struct Flood {
    pub sent: u64,
    pub elapsed: Duration,
}

impl Flood {
    /// SYNs per second.
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Where spoofed SYNs come from: 198.19.0.0/16, in the documentation range drlb's labs
/// use, outside every lab subnet.
pub fn spoofed_source(rng: &mut fastrand::Rng) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, rng.u8(..), rng.u8(1..255))
}

/// `count` SYNs to VIP:`port` from random spoofed sources and ports, as raw frames to the
/// director's MAC.
pub fn spoofed_syns(count: usize, port: u16) -> Result<Vec<Vec<u8>>> {
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    (0..count)
        .map(|_| {
            let mut frame = Vec::with_capacity(64);
            etherparse::PacketBuilder::ethernet2([0x02, 0xd1, 0xee, 0, 0, 0x01], DIRECTOR.mac)
                .ipv4(spoofed_source(&mut rng).octets(), VIP.octets(), 64)
                .tcp(rng.u16(1024..), port, rng.u32(..), 64240)
                .syn()
                .write(&mut frame, &[])
                .context("building a SYN")?;
            Ok(frame)
        })
        .collect()
}

impl Lab {
    /// Sends `frames` out of `role`'s eth0 at up to `rate` frames a second (as fast as one
    /// thread can, for `None`), for no longer than `limit`.
    pub fn send_frames(&self, role: &str, frames: &[Vec<u8>], rate: Option<f64>, limit: Duration) -> Result<Flood> {
        in_netns(&self.ns(role), || {
            // SAFETY: plain socket calls with valid buffers; the fd is closed below.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
            if fd < 0 {
                bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
            }
            // SAFETY: a valid NUL-terminated name.
            let ifindex = unsafe { libc::if_nametoindex(c"eth0".as_ptr()) };
            // SAFETY: all-zero is a valid sockaddr_ll.
            let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = ifindex as i32;
            addr.sll_halen = 6;
            let started = Instant::now();
            let mut sent = 0;
            let mut failure = None;
            while sent < frames.len() && started.elapsed() < limit {
                let frame = &frames[sent];
                // SAFETY: `frame` and `addr` are valid for the call.
                let n = unsafe {
                    libc::sendto(fd, frame.as_ptr().cast(), frame.len(), 0, (&addr as *const libc::sockaddr_ll).cast(), std::mem::size_of::<libc::sockaddr_ll>() as u32)
                };
                if n < 0 {
                    let e = std::io::Error::last_os_error();
                    // A full transmit queue: try the frame again.
                    if e.raw_os_error() == Some(libc::ENOBUFS) {
                        continue;
                    }
                    failure = Some(e);
                    break;
                }
                sent += 1;
                if let Some(rate) = rate
                    && sent % 1000 == 0
                {
                    let due = Duration::from_secs_f64(sent as f64 / rate);
                    std::thread::sleep(due.saturating_sub(started.elapsed()));
                }
            }
            let elapsed = started.elapsed();
            // SAFETY: `fd` is ours.
            unsafe { libc::close(fd) };
            if let Some(e) = failure {
                bail!("sending frame {sent}: {e}");
            }
            Ok(Flood { sent: sent as u64, elapsed })
        })
    }
}
