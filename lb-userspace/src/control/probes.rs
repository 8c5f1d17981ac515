//! One probe per keepalived checker kind. Each returns `Err` with why it failed, in words an
//! operator can act on; the caller bounds it by the check's `timeout`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

use crate::control::config::{BodyRegex, CheckType, StatusRange, UdpReply};
use crate::control::health::Target;

/// keepalived's default HELO name.
const DEFAULT_HELO: &str = "smtpchecker.keepalived.org";

/// One attempt, bounded by the check's timeout.
/// One attempt of `t`'s check: up, maybe with what it adds to the server's weight
/// (keepalived's `cur_weight` of a dynamic script or a file), or down and why.
pub async fn probe(t: &Target) -> Result<Option<i64>, String> {
    let c = &t.check;
    match c.kind {
        // The script's own timeout kills it; the others are bounded here.
        CheckType::Script => return run_script(t).await,
        CheckType::File => return read_track_file(t).await,
        _ => {}
    }
    let attempt = async {
        match c.kind {
            CheckType::Tcp => connect(t).await.map(drop).map_err(|e| format!("connect failed: {e}")),
            CheckType::Http => {
                let stream = connect(t).await.map_err(|e| format!("connect failed: {e}"))?;
                http_get(t, stream).await
            }
            CheckType::Https => {
                let stream = connect(t).await.map_err(|e| format!("connect failed: {e}"))?;
                let tls = tls_connect(t, stream).await?;
                http_get(t, tls).await
            }
            CheckType::Smtp => smtp(t).await,
            CheckType::Dns => dns(t).await,
            CheckType::Udp => udp(t).await,
            CheckType::Ping => ping(t).await,
            CheckType::Script | CheckType::File => unreachable!("handled above"),
        }
    };
    match timeout(c.timeout, attempt).await {
        Ok(r) => r.map(|()| None),
        Err(_) => Err(format!("no answer within {} ({} check of {})", humantime::format_duration(c.timeout), c.kind.name(), t.probe)),
    }
}

fn unspecified(like: &SocketAddr) -> IpAddr {
    if like.is_ipv4() { std::net::Ipv4Addr::UNSPECIFIED.into() } else { std::net::Ipv6Addr::UNSPECIFIED.into() }
}

/// A TCP connection to the target, from the check's source if it names one.
async fn connect(t: &Target) -> std::io::Result<TcpStream> {
    let c = &t.check;
    if c.source.is_none() && c.source_port.is_none() {
        return TcpStream::connect(t.probe).await;
    }
    let socket = if t.probe.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    if c.source_port.is_some() {
        socket.set_reuseaddr(true)?;
        // The director closes first: with a fixed source port the 4-tuple would sit in
        // TIME_WAIT and the next round's connect fail. Close with a reset instead.
        // (A zero linger resets at once: nothing blocks on drop.)
        socket2::SockRef::from(&socket).set_linger(Some(std::time::Duration::ZERO))?;
    }
    socket.bind(SocketAddr::new(c.source.unwrap_or_else(|| unspecified(&t.probe)), c.source_port.unwrap_or(0)))?;
    socket.connect(t.probe).await
}

/// A UDP socket connected to the target, from the check's source if it names one.
async fn udp_socket(t: &Target) -> Result<UdpSocket, String> {
    let c = &t.check;
    let local = SocketAddr::new(c.source.unwrap_or_else(|| unspecified(&t.probe)), c.source_port.unwrap_or(0));
    // Several servers' checks may share a fixed source port at once: each socket is
    // connected to its own server, so replies still reach the right one.
    let std_socket = (|| -> std::io::Result<std::net::UdpSocket> {
        use socket2::{Domain, Socket, Type};
        let s = Socket::new(if local.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 }, Type::DGRAM, None)?;
        if c.source_port.is_some() {
            s.set_reuse_address(true)?;
        }
        s.set_nonblocking(true)?;
        s.bind(&local.into())?;
        Ok(s.into())
    })()
    .map_err(|e| format!("cannot bind {local}: {e}"))?;
    let socket = UdpSocket::from_std(std_socket).map_err(|e| format!("cannot use {local}: {e}"))?;
    socket.connect(t.probe).await.map_err(|e| format!("cannot reach {}: {e}", t.probe))?;
    Ok(socket)
}

async fn http_get<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(t: &Target, stream: S) -> Result<(), String> {
    let c = &t.check;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    tokio::spawn(conn);
    let path = c.path.clone().unwrap_or_else(|| "/".into());
    let host = c.host.clone().unwrap_or_else(|| t.vip.to_string());
    let req = hyper::Request::get(&path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, "drlb-healthcheck")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("bad request: {e}"))?;
    let resp = sender.send_request(req).await.map_err(|e| format!("HTTP request failed: {e}"))?;
    let status = resp.status().as_u16();
    // keepalived: a digest alone decides; status_code, when given, is checked too.
    let default = if c.digest.is_some() { None } else { Some(StatusRange::DEFAULT) };
    let ranges: Vec<StatusRange> = c.status.clone().or(default.map(|d| vec![d])).unwrap_or_default();
    if !ranges.is_empty() && !ranges.iter().any(|r| r.contains(status)) {
        let want: Vec<String> = ranges.iter().map(|r| r.to_string()).collect();
        return Err(format!("HTTP status {status} for GET {path}, expected {}", want.join(", ")));
    }
    if c.regex.is_none() && c.digest.is_none() {
        return Ok(());
    }
    let body = resp.into_body().collect().await.map_err(|e| format!("reading the body failed: {e}"))?.to_bytes();
    if let Some(BodyRegex(re)) = &c.regex
        && !re.is_match(&String::from_utf8_lossy(&body))
    {
        return Err(format!("body of GET {path} does not match /{}/", re.as_str()));
    }
    if let Some(want) = &c.digest {
        use md5::Digest as _;
        let got: [u8; 16] = md5::Md5::digest(&body).into();
        if got != want.0 {
            return Err(format!("MD5 of the body of GET {path} is {}, expected {}", hex(&got), hex(&want.0)));
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// keepalived's SSL_GET verifies no certificate (only that TLS completes): neither does this.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

async fn tls_connect(t: &Target, stream: TcpStream) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    // An IP address as the server name sends no SNI (keepalived without enable_sni).
    let name = match &t.check.sni {
        Some(n) => rustls::pki_types::ServerName::try_from(n.clone()).map_err(|e| format!("sni `{n}`: {e}"))?,
        None => rustls::pki_types::ServerName::IpAddress(t.probe.ip().into()),
    };
    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, stream).await.map_err(|e| format!("TLS handshake failed: {e}"))
}

/// keepalived's SMTP_CHECK: 220 greeting, 250 to HELO, 221 to QUIT.
async fn smtp(t: &Target) -> Result<(), String> {
    let stream = connect(t).await.map_err(|e| format!("connect failed: {e}"))?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    async fn reply(lines: &mut BufReader<tokio::net::tcp::OwnedReadHalf>, want: &str, after: &str) -> Result<(), String> {
        // Multi-line replies repeat the code with '-' until the last line's ' '.
        loop {
            let mut line = String::new();
            if lines.read_line(&mut line).await.map_err(|e| format!("reading the reply to {after}: {e}"))? == 0 {
                return Err(format!("connection closed before the reply to {after}"));
            }
            if !line.starts_with(want) {
                return Err(format!("SMTP reply to {after} was `{}`, expected {want}", line.trim_end()));
            }
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(());
            }
        }
    }
    reply(&mut lines, "220", "the connection").await?;
    let helo = t.check.helo.as_deref().unwrap_or(DEFAULT_HELO);
    write.write_all(format!("HELO {helo}\r\n").as_bytes()).await.map_err(|e| format!("sending HELO: {e}"))?;
    reply(&mut lines, "250", "HELO").await?;
    write.write_all(b"QUIT\r\n").await.map_err(|e| format!("sending QUIT: {e}"))?;
    reply(&mut lines, "221", "QUIT").await
}

/// keepalived's DNS_CHECK: a recursive query; any answer with our id, QR set and RCODE 0.
async fn dns(t: &Target) -> Result<(), String> {
    let c = &t.check;
    let id: u16 = fastrand::u16(..);
    let mut query = Vec::with_capacity(64);
    query.extend_from_slice(&id.to_be_bytes());
    query.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    for label in c.query_name.as_deref().unwrap_or(".").split('.').filter(|l| !l.is_empty()) {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.push(0);
    let qtype = c.query_type.map_or(6, |q| q.code()); // SOA by default
    query.extend_from_slice(&qtype.to_be_bytes());
    query.extend_from_slice(&1u16.to_be_bytes()); // IN
    let socket = udp_socket(t).await?;
    socket.send(&query).await.map_err(|e| format!("sending the query: {e}"))?;
    let mut buf = [0u8; 512];
    loop {
        let n = socket.recv(&mut buf).await.map_err(|e| format!("no answer: {e}"))?;
        // keepalived waits on for a datagram that is not ours (short, other id, not a response).
        if n < 12 || buf[..2] != id.to_be_bytes() || buf[2] & 0x80 == 0 {
            continue;
        }
        let rcode = buf[3] & 0x0f;
        return if rcode == 0 { Ok(()) } else { Err(format!("DNS answer with RCODE {rcode}")) };
    }
}

/// keepalived's UDP_CHECK: without `reply`, success unless the port is refused (an ICMP
/// error) before the timeout; with it, an answer is needed (matching the pattern).
async fn udp(t: &Target) -> Result<(), String> {
    let c = &t.check;
    let payload = c.payload.as_ref().map_or_else(|| (0..8).map(|_| fastrand::u8(..)).collect(), |p| p.0.clone());
    let socket = udp_socket(t).await?;
    socket.send(&payload).await.map_err(|e| format!("sending: {e}"))?;
    let mut buf = [0u8; 256];
    // Without a required reply the wait ends at the check's timeout, which is success:
    // stop a little before it so the round is not counted as a timeout.
    let wait = c.timeout.saturating_sub(Duration::from_millis(50).min(c.timeout / 10));
    match timeout(wait, socket.recv(&mut buf)).await {
        Err(_) if c.reply.is_none() => Ok(()),
        Err(_) => Err("no answer".into()),
        Ok(Err(e)) => Err(format!("refused: {e}")),
        Ok(Ok(n)) => match &c.reply {
            Some(UdpReply::Matching(pattern)) if !pattern.matches(&buf[..n]) => Err(format!("the answer {} does not match the expected reply", hex(&buf[..n.min(32)]))),
            _ => Ok(()),
        },
    }
}

/// What lets an unprivileged drlb open ICMP sockets (said at start and by each failing check).
const ICMP_SOCKET_FIX: &str = "add drlb's group to net.ipv4.ping_group_range (e.g. `net.ipv4.ping_group_range = 0 2147483647` \
     in /etc/sysctl.d), or grant CAP_NET_RAW (a drlb.service drop-in: AmbientCapabilities=CAP_NET_RAW and \
     CapabilityBoundingSet=CAP_NET_RAW)";

/// Whether this process can open an ICMP socket for `target`'s family: a datagram one
/// (net.ipv4.ping_group_range) or a raw one (CAP_NET_RAW); the fix when it cannot.
pub fn can_ping(target: IpAddr) -> Result<(), String> {
    use socket2::{Domain, Protocol, Socket, Type};
    let (domain, protocol) = if target.is_ipv4() { (Domain::IPV4, Protocol::ICMPV4) } else { (Domain::IPV6, Protocol::ICMPV6) };
    if Socket::new(domain, Type::DGRAM, Some(protocol)).is_ok() || Socket::new(domain, Type::RAW, Some(protocol)).is_ok() {
        return Ok(());
    }
    Err(format!("no ICMP socket for {target}: {ICMP_SOCKET_FIX}"))
}

/// keepalived's PING_CHECK: one ICMP (or ICMPv6) echo, answered.
async fn ping(t: &Target) -> Result<(), String> {
    use socket2::{Domain, Protocol, Socket, Type};
    let target = t.probe.ip();
    let (domain, protocol, request, reply) = match target {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4, 8u8, 0u8),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6, 128u8, 129u8),
    };
    // A datagram ICMP socket when the kernel allows this group one (ping_group_range),
    // otherwise a raw one (CAP_NET_RAW).
    let (socket, raw) = match Socket::new(domain, Type::DGRAM, Some(protocol)) {
        Ok(s) => (s, false),
        Err(_) => (
            Socket::new(domain, Type::RAW, Some(protocol)).map_err(|e| {
                match crate::kernel::privileges::explain(&[crate::kernel::privileges::CAP_NET_RAW]) {
                    Some(_) => format!("cannot open an ICMP socket: {e}: {ICMP_SOCKET_FIX}"),
                    None => format!("cannot open an ICMP socket: {e}"),
                }
            })?,
            true,
        ),
    };
    socket.set_nonblocking(true).map_err(|e| e.to_string())?;
    if let Some(src) = t.check.source {
        socket.bind(&SocketAddr::new(src, 0).into()).map_err(|e| format!("cannot bind {src}: {e}"))?;
    }
    socket.connect(&SocketAddr::new(target, 0).into()).map_err(|e| format!("cannot reach {target}: {e}"))?;
    // SAFETY: the socket owns its descriptor, which stays open and the same until the
    // AsyncFd (which owns the socket) is dropped.
    let fd = unsafe { tokio::io::unix::AsyncFd::register(socket) }.map_err(|e| e.to_string())?;
    let ident: u16 = fastrand::u16(..);
    let mut echo = vec![request, 0, 0, 0];
    echo.extend_from_slice(&ident.to_be_bytes());
    echo.extend_from_slice(&1u16.to_be_bytes());
    echo.extend_from_slice(b"drlb-healthcheck");
    if target.is_ipv4() {
        let sum = checksum(&echo);
        echo[2..4].copy_from_slice(&sum.to_be_bytes());
    } // ICMPv6: the kernel fills the checksum.
    loop {
        let mut guard = fd.writable().await.map_err(|e| e.to_string())?;
        match guard.try_io(|s| s.get_ref().send(&echo)) {
            Ok(r) => {
                r.map_err(|e| format!("sending the echo: {e}"))?;
                break;
            }
            Err(_would_block) => continue,
        }
    }
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1500];
    loop {
        let mut guard = fd.readable().await.map_err(|e| e.to_string())?;
        let n = match guard.try_io(|s| s.get_ref().recv(&mut buf)) {
            Ok(r) => r.map_err(|e| format!("no echo reply: {e}"))?,
            Err(_would_block) => continue,
        };
        // SAFETY: recv initialised the first n bytes.
        let data: Vec<u8> = buf[..n].iter().map(|b| unsafe { b.assume_init() }).collect();
        // A raw IPv4 socket hands over the IP header too.
        let icmp = if raw && target.is_ipv4() { data.get(usize::from(data.first().copied().unwrap_or(0) & 0x0f) * 4..).unwrap_or(&[]) } else { &data[..] };
        // A datagram socket rewrites the identifier to its own port: accept any echo reply
        // there; a raw one sees every echo reply to this host, so match ours.
        if icmp.first() == Some(&reply) && (!raw || icmp.get(4..6) == Some(&ident.to_be_bytes()[..])) {
            return Ok(());
        }
    }
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// keepalived's FILE_CHECK: the number at the start of the file, read as `strtol(s, 0, 0)`
/// does (`0x` hex, a leading 0 octal; a missing, empty or unreadable file is 0). With
/// weight 0 it is a switch (0 up, else down; `reverse` the other way round); otherwise
/// number × weight (negated with `reverse`) is what the server's weight gains, and only
/// the lowest int (`IPVS_WEIGHT_FAULT`) means down.
async fn read_track_file(t: &Target) -> Result<Option<i64>, String> {
    let c = &t.check;
    let path = c.file.clone().unwrap_or_default();
    // As keepalived: non-blocking (a FIFO must not hang a worker) and 127 bytes at most.
    let text = {
        use std::io::Read as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut buf = Vec::new();
        match std::fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_NONBLOCK).open(&path) {
            Ok(f) => {
                let _ = f.take(127).read_to_end(&mut buf);
            }
            Err(_) => {}
        }
        String::from_utf8_lossy(&buf).into_owned()
    };
    let Some(value) = strtol(&text) else {
        return Err(format!("{}: `{}` is not a number keepalived would read", path.display(), text.trim()));
    };
    file_check_verdict(value, c.weight.unwrap_or(1), c.reverse).map_err(|why| format!("{}: {why}", path.display()))
}

/// [`read_track_file`]'s verdict for the number `value`.
pub fn file_check_verdict(value: i64, weight: i32, reverse: bool) -> Result<Option<i64>, String> {
    if weight == 0 {
        return if (value == 0) != reverse { Ok(None) } else { Err(format!("reads {value}")) };
    }
    let delta = (value as i128 * weight as i128 * if reverse { -1 } else { 1 }).clamp(i32::MIN as i128, i32::MAX as i128) as i64;
    if delta <= i32::MIN as i64 { Err(format!("reads {value}: down")) } else { Ok(Some(delta)) }
}

/// `strtol(text, NULL, 0)` within keepalived's range check: leading blanks and a sign, then
/// `0x` hex, `0` octal or decimal digits, the rest ignored; no digits is 0. None when out of
/// keepalived's range (it keeps the old value then; here the check fails).
pub fn strtol(text: &str) -> Option<i64> {
    let s = text.trim_start();
    let (negative, s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, digits) = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (16, h)
    } else if s.starts_with('0') {
        (8, s)
    } else {
        (10, s)
    };
    let end = digits.find(|ch: char| !ch.is_digit(radix)).unwrap_or(digits.len());
    let magnitude = if end == 0 { 0 } else { i128::from_str_radix(&digits[..end], radix).ok()? };
    let value = if negative { -magnitude } else { magnitude };
    (i32::MIN as i128..=i32::MAX as i128 + 1).contains(&value).then_some(value as i64)
}

async fn run_script(t: &Target) -> Result<Option<i64>, String> {
    let c = &t.check;
    let command = c.command.clone().unwrap_or_default();
    let mut cmd = tokio::process::Command::new("/bin/sh");
    let mut child = crate::kernel::privileges::without_capabilities(&mut cmd)
        .arg("-c")
        .arg(&command)
        .env("DRLB_SERVICE", &t.service)
        .env("DRLB_VIP", t.vip.to_string())
        .env("DRLB_RS_ADDRESS", t.address.to_string())
        .env("DRLB_RS_PORT", t.probe.port().to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        // A group of its own, so a timeout kills what the script started too.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run `{command}`: {e}"))?;
    match timeout(c.timeout, child.wait()).await {
        Ok(Ok(s)) if s.success() => Ok(if c.dynamic { Some(0) } else { None }),
        // misc_dynamic: the code minus 2 is the server's weight (what this check adds to
        // its configured weight: code - 2 - weight).
        Ok(Ok(s)) if c.dynamic && matches!(s.code(), Some(2..=255)) => Ok(Some(i64::from(s.code().unwrap_or(2)) - 2 - i64::from(t.weight))),
        Ok(Ok(s)) => Err(format!("`{command}` exited with {s}")),
        Ok(Err(e)) => Err(format!("waiting for `{command}`: {e}")),
        Err(_) => {
            if let Some(pid) = child.id() {
                let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
            }
            let _ = child.kill().await;
            Err(format!("`{command}` killed after {}", humantime::format_duration(c.timeout)))
        }
    }
}

#[cfg(test)]
mod dynamic_tests {
    use super::*;

    /// keepalived reads a track_file with `strtol(buf, NULL, 0)`.
    #[test]
    fn numbers_are_read_as_strtol_reads_them() {
        for (text, want) in [("12\n", Some(12)), ("  -5", Some(-5)), ("0x1f", Some(31)), ("010", Some(8)), ("12abc", Some(12)), ("", Some(0)), ("abc", Some(0)), ("99999999999", None)] {
            assert_eq!(strtol(text), want, "{text:?}");
        }
    }

    /// FILE_CHECK's meaning: weight 0 is a switch; otherwise the number times the weight is
    /// added (negated with reverse), and only the lowest int means down.
    #[test]
    fn file_checks_switch_or_weigh() {
        assert_eq!(file_check_verdict(0, 0, false), Ok(None));
        assert!(file_check_verdict(3, 0, false).is_err(), "weight 0: non-zero is down (corpus 1495: init_file 3)");
        assert!(file_check_verdict(0, 0, true).is_err());
        assert_eq!(file_check_verdict(7, 0, true), Ok(None));
        assert_eq!(file_check_verdict(-5, 1, false), Ok(Some(-5)));
        assert_eq!(file_check_verdict(4, 3, true), Ok(Some(-12)));
        assert!(file_check_verdict(i32::MIN as i64, 1, false).is_err());
    }

    /// misc_dynamic: exit 0 up at the configured weight, 1 down, 2..255 up at code - 2.
    #[test]
    fn dynamic_scripts_set_the_weight_by_exit_code() {
        let config = crate::control::config::Config::parse(
            std::path::Path::new("t.yaml"),
            "director: { interface: eth0 }\nservices:\n  - { name: web, vip: 198.18.0.100, port: 80, protocol: tcp, \
             health_check: { type: script, command: 'exit $CODE', dynamic: true, timeout: 5s }, real_servers: [ { address: 198.18.0.11, weight: 3 } ] }\n",
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        for (code, want) in [(0, Ok(Some(0))), (1, Err(())), (9, Ok(Some(9 - 2 - 3))), (2, Ok(Some(-3)))] {
            let mut t = crate::control::health::targets(&config).remove(0);
            t.check.command = Some(format!("exit {code}"));
            assert_eq!(rt.block_on(probe(&t)).map_err(drop), want, "exit {code}");
        }
    }
}
