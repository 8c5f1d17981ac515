//! Every checker kind against a real server of its kind — good and broken — in a network
//! namespace of its own (198.18.0.50 on its loopback): https (SSL_GET, with SNI and
//! digest), smtp, dns, udp (with and without a required reply), ping, and tcp/http with a
//! source address. Needs root.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use lb_userspace::control::config::Config;
use lb_userspace::control::health::{self, Target};
use lb_userspace::selftest::netns::{in_netns, sh};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, UdpSocket};

const SERVER: &str = "198.18.0.50";

/// The namespace, removed however the test ends.
struct Namespace(String);

impl Namespace {
    fn new() -> Namespace {
        let name = format!("drlb{}-probes", std::process::id());
        let _ = sh("ip", &["netns", "del", &name]);
        sh("ip", &["netns", "add", &name]).expect("ip netns add");
        let ns = Namespace(name);
        for args in [
            vec!["link", "set", "lo", "up"],
            vec!["addr", "add", "198.18.0.50/32", "dev", "lo"],
            vec!["addr", "add", "198.18.0.51/32", "dev", "lo"],
        ] {
            let mut full = vec!["-n", ns.0.as_str()];
            full.extend(args);
            sh("ip", &full).expect("set up the probe namespace");
        }
        ns
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = sh("ip", &["netns", "del", &self.0]);
    }
}

/// The targets of one real server at 198.18.0.50 with the given checks (YAML flow list).
fn targets(checks: &str) -> Vec<Arc<Target>> {
    let yaml = format!(
        "director: {{ interface: eth0 }}\nservices:\n  - {{ name: probes, vip: 198.18.0.100, port: 80, protocol: tcp, real_servers: [ {{ address: {SERVER}, health_checks: {checks} }} ] }}\n"
    );
    let config = Config::parse(Path::new("probes.yaml"), &yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    health::targets(&config).into_iter().map(Arc::new).collect()
}

async fn tls_server(listener: TcpListener, body: &'static str) {
    let cert = rcgen::generate_simple_self_signed(vec!["web.example".into()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(mut tls) = acceptor.accept(stream).await else { return };
            let sni = tls.get_ref().1.server_name().unwrap_or("").to_string();
            let mut buf = [0u8; 1024];
            let _ = tls.read(&mut buf).await;
            // Only a client that sent SNI web.example gets 200.
            let status = if sni == "web.example" { "200 OK" } else { "421 Misdirected" };
            let _ = tls.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes()).await;
            let _ = tls.shutdown().await;
        });
    }
}

async fn smtp_server(listener: TcpListener, helo_reply: &'static str) {
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            let _ = write.write_all(b"220-mail.example ESMTP\r\n220 ready\r\n").await;
            while let Ok(Some(line)) = lines.next_line().await {
                let reply = if line.starts_with("HELO ") { helo_reply } else if line == "QUIT" { "221 bye\r\n" } else { "500 what\r\n" };
                let _ = write.write_all(reply.as_bytes()).await;
                if line == "QUIT" {
                    return;
                }
            }
        });
    }
}

/// Answers each query with its id, QR set and `rcode`.
async fn dns_server(socket: UdpSocket, rcode: u8) {
    let mut buf = [0u8; 512];
    loop {
        let (n, from) = socket.recv_from(&mut buf).await.unwrap();
        let mut answer = buf[..n].to_vec();
        answer[2] |= 0x80;
        answer[3] = (answer[3] & 0xf0) | rcode;
        // First a stray datagram with another id, which the check must wait past.
        let mut stray = answer.clone();
        stray[0] ^= 0xff;
        let _ = socket.send_to(&stray, from).await;
        let _ = socket.send_to(&answer, from).await;
    }
}

async fn udp_echo(socket: UdpSocket) {
    let mut buf = [0u8; 512];
    loop {
        let (n, from) = socket.recv_from(&mut buf).await.unwrap();
        let _ = socket.send_to(&buf[..n], from).await;
    }
}

#[test]
fn each_checker_kind_passes_a_good_server_and_fails_a_broken_one() {
    if support::skip_unless_root() {
        return;
    }
    let ns = Namespace::new();
    let failures = in_netns(&ns.0, || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        Ok(rt.block_on(async {
            let at = |port: u16| SocketAddr::new(SERVER.parse().unwrap(), port);
            tokio::spawn(tls_server(TcpListener::bind(at(443)).await.unwrap(), "alive"));
            tokio::spawn(smtp_server(TcpListener::bind(at(25)).await.unwrap(), "250 hello\r\n"));
            tokio::spawn(smtp_server(TcpListener::bind(at(26)).await.unwrap(), "554 go away\r\n"));
            tokio::spawn(dns_server(UdpSocket::bind(at(53)).await.unwrap(), 0));
            tokio::spawn(dns_server(UdpSocket::bind(at(54)).await.unwrap(), 2));
            tokio::spawn(udp_echo(UdpSocket::bind(at(7)).await.unwrap()));
            // A TCP server that only accepts from 198.18.0.51 (the check's `source`).
            let picky = TcpListener::bind(at(81)).await.unwrap();
            tokio::spawn(async move {
                loop {
                    let (s, from) = picky.accept().await.unwrap();
                    if from.ip().to_string() != "198.18.0.51" {
                        drop(s);
                    } else {
                        let mut s = s;
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
                    }
                }
            });
            // md5("alive")
            let digest = "7bd3d5f5b3cdb13aed632121206e729c";
            let cases: Vec<(&str, String, bool)> = vec![
                ("https with SNI", "{ type: https, port: 443, path: /, sni: web.example, timeout: 2s }".into(), true),
                ("https without SNI gets 421", "{ type: https, port: 443, path: /, timeout: 2s }".into(), false),
                ("https digest", format!("{{ type: https, port: 443, path: /, sni: web.example, digest: {digest}, timeout: 2s }}"), true),
                ("https wrong digest", "{ type: https, port: 443, path: /, sni: web.example, digest: 00000000000000000000000000000000, timeout: 2s }".into(), false),
                ("smtp", "{ type: smtp, port: 25, helo: director.example, timeout: 2s }".into(), true),
                ("smtp refusing HELO", "{ type: smtp, port: 26, timeout: 2s }".into(), false),
                ("smtp closed port", "{ type: smtp, port: 27, timeout: 2s }".into(), false),
                ("dns", "{ type: dns, port: 53, query_type: A, query_name: www.example.org, timeout: 2s }".into(), true),
                ("dns SERVFAIL", "{ type: dns, port: 54, timeout: 2s }".into(), false),
                ("udp open, no reply needed", "{ type: udp, port: 7, timeout: 1s }".into(), true),
                ("udp closed port", "{ type: udp, port: 9, timeout: 1s }".into(), false),
                ("udp reply matching", "{ type: udp, port: 7, payload: \"cafe01\", reply: \"caxx\", timeout: 1s }".into(), true),
                ("udp reply not matching", "{ type: udp, port: 7, payload: \"cafe01\", reply: \"beef\", timeout: 1s }".into(), false),
                ("ping", "{ type: ping, timeout: 1s }".into(), true),
                ("ping of an absent address", "{ type: ping, address: 198.18.0.99, timeout: 1s }".into(), false),
                ("tcp from the right source", "{ type: http, port: 81, path: /, source: 198.18.0.51, timeout: 1s }".into(), true),
                ("tcp from another source", "{ type: http, port: 81, path: /, source: 198.18.0.50, timeout: 1s }".into(), false),
            ];
            let list = format!("[ {} ]", cases.iter().map(|c| c.1.as_str()).collect::<Vec<_>>().join(", "));
            let mut failures = Vec::new();
            for ((what, _, want), target) in cases.iter().zip(targets(&list)) {
                let got = health::probe(&target).await;
                println!("{what}: {got:?}");
                if got.is_ok() != *want {
                    failures.push(format!("{what}: {got:?}, expected {}", if *want { "success" } else { "failure" }));
                }
            }
            failures
        }))
    })
    .expect("run in the namespace");
    drop(ns);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
