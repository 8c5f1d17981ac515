//! Config validation: every bad input gets its own message with its line and column (one
//! table), and accepted values are parsed into the types that use them.

use std::path::Path;

use lb_userspace::control::config::{Config, Scheduler, StatusRange, Warmup};

const GOOD: &str = "\
director:
  interface: eth0
  xdp_mode: auto
services:
  - name: web
    vip: 198.18.0.100
    port: 80
    protocol: tcp
    real_servers:
      - { address: 198.18.0.11, weight: 1 }
      - { address: 198.18.0.12, weight: 1 }
";

fn with_service_line(line: &str) -> String {
    GOOD.replace("    protocol: tcp\n", &format!("    protocol: tcp\n    {line}\n"))
}

/// `n` services of one scheduler on VIPs 198.18.<i/250>.<i%250+1>, one real server each.
fn services(n: usize, scheduler: &str) -> String {
    let mut text = "director: { interface: eth0 }\nservices:\n".to_string();
    for i in 0..n {
        text += &format!(
            "  - {{ name: s{i}, vip: 198.19.{}.{}, port: 80, protocol: tcp, scheduler: {scheduler}, real_servers: [ {{ address: 198.19.255.1 }} ] }}\n",
            i / 250,
            i % 250 + 1
        );
    }
    text
}

/// Parses `text` and returns its errors as "LINE:COLUMN: message".
fn errors_of(text: &str) -> Vec<String> {
    match Config::parse(Path::new("t.yaml"), text) {
        Ok(_) => Vec::new(),
        Err(errors) => errors
            .0
            .iter()
            .map(|e| {
                assert_eq!(e.to_string(), format!("t.yaml:{}:{}: {}", e.position.line, e.position.column, e.message));
                format!("{}:{}: {}", e.position.line, e.position.column, e.message)
            })
            .collect(),
    }
}

/// What validating a row's text must give.
enum Expect {
    Accepted,
    /// Exactly one error, at LINE:COLUMN, containing the text.
    Error(&'static str, &'static str),
    /// This many errors.
    Errors(usize),
}

#[test]
fn validation_table() {
    let mut many_servers = GOOD.replace("      - { address: 198.18.0.11, weight: 1 }\n      - { address: 198.18.0.12, weight: 1 }\n", "");
    for i in 0..257 {
        many_servers += &format!("      - {{ address: 198.18.{}.{} }}\n", 1 + i / 250, 1 + i % 250);
    }
    let rows: Vec<(&str, String, Expect)> = vec![
        ("the lab's shape", GOOD.to_string(), Expect::Accepted),
        ("unknown field", GOOD.replace("    port: 80\n", "    port: 80\n    prot: 1\n"), Expect::Error("8:5", "unknown field `prot`")),
        ("malformed VIP", GOOD.replace("198.18.0.100", "198.18.0.300"), Expect::Error("6:10", "invalid IP address syntax")),
        ("malformed real server", GOOD.replace("198.18.0.12,", "198.18.0.x,"), Expect::Error("11:20", "invalid IP address syntax")),
        (
            "duplicate service",
            format!("{GOOD}  - name: web2\n    vip: 198.18.0.100\n    port: 80\n    protocol: tcp\n"),
            Expect::Error("13:10", "duplicate service: tcp 198.18.0.100:80"),
        ),
        (
            "duplicate service name",
            format!("{GOOD}  - name: web\n    vip: 198.18.0.101\n    port: 80\n    protocol: tcp\n"),
            Expect::Error("12:11", "duplicate service name `web`"),
        ),
        ("real server is the VIP", GOOD.replace("198.18.0.12,", "198.18.0.100,"), Expect::Error("11:20", "is the VIP itself")),
        ("unknown scheduler", with_service_line("scheduler: fastest"), Expect::Error("9:16", "unknown variant `fastest`")),
        (
            "negative weight",
            GOOD.replace("weight: 1 }\n      - { address: 198.18.0.12", "weight: -1 }\n      - { address: 198.18.0.12"),
            Expect::Error("10:41", "integer `-1`"),
        ),
        ("weight above IPVS's maximum", GOOD.replace("198.18.0.12, weight: 1", "198.18.0.12, weight: 70000"), Expect::Error("11:41", "above the maximum 65535")),
        ("weight 0 is quiescent, not an error", GOOD.replace("198.18.0.12, weight: 1", "198.18.0.12, weight: 0"), Expect::Accepted),
        ("rise 0", with_service_line("health_check: { type: tcp, rise: 0 }"), Expect::Error("9:38", "rise must be at least 1")),
        ("bad duration", with_service_line("persistence_timeout: 60 parsecs"), Expect::Error("9:26", "invalid duration `60 parsecs`")),
        ("interval 0", with_service_line("health_check: { type: tcp, interval: 0s }"), Expect::Error("9:42", "interval must be greater than 0s")),
        ("unknown xdp_mode", GOOD.replace("xdp_mode: auto", "xdp_mode: turbo"), Expect::Error("3:13", "unknown variant `turbo`")),
        (
            "real server port differs (DR cannot rewrite it)",
            GOOD.replace("198.18.0.12, weight: 1", "198.18.0.12, weight: 1, port: 8080"),
            Expect::Error("11:50", "DR mode cannot change the destination port"),
        ),
        ("http check without path", with_service_line("health_check: { type: http }"), Expect::Error("9:27", "an http check needs `path`")),
        (
            "http check regex that does not compile",
            with_service_line("health_check: { type: http, path: /, regex: \"ok(\" }"),
            Expect::Error("9:", "regex `ok(` does not compile"),
        ),
        ("http status that is no status", with_service_line("health_check: { type: http, path: /, status: [200, 700] }"), Expect::Error("9:", "`700` is not a status code")),
        ("http status range upside down", with_service_line("health_check: { type: http, path: /, status: [\"299-200\"] }"), Expect::Error("9:", "`299-200`")),
        ("warmup that is no duration", with_service_line("health_check: { type: tcp, warmup: soon }"), Expect::Error("9:", "invalid duration `soon`")),
        (
            "several problems are all reported",
            GOOD.replace("198.18.0.12,", "198.18.0.100,").replace("198.18.0.11, weight: 1", "198.18.0.11, weight: 99999"),
            Expect::Errors(2),
        ),
        ("YAML syntax error", "director:\n  interface: [eth0\n".to_string(), Expect::Error("", "")),
        ("257 real servers in a service", many_servers, Expect::Error("10:7", "a service may have at most 256")),
        (
            "non-contiguous netmask",
            with_service_line("persistence_timeout: 60s\n    persistence_granularity: 255.0.255.0"),
            Expect::Error("10:30", "not contiguous"),
        ),
        ("16 mh services of 65521 entries fill the scheduler tables", services(16, "mh").replace("interface: eth0 }", "interface: eth0, mh_table_size: 65521 }"), Expect::Accepted),
        // A 17th used to pass `drlb check` and then drop every SYN: its table did not fit.
        (
            "a 17th does not fit",
            services(17, "mh").replace("interface: eth0 }", "interface: eth0, mh_table_size: 65521 }"),
            Expect::Error("19:", "service `s16`: its scheduler table needs 65521 entries"),
        ),
        ("256 mh services of the kernel's 4093 entries fit", services(256, "mh"), Expect::Accepted),
        ("an mh table size the kernel cannot have", "director: { interface: eth0, mh_table_size: 4096 }\n".to_string(), Expect::Error("1:", "mh_table_size 4096 is not one of IPVS's table sizes")),
        ("1024 sh services fit", services(1024, "sh"), Expect::Accepted),
        ("1025 VIPs do not fit", services(1025, "wlc"), Expect::Error("3:", "1025 distinct VIPs; the dataplane holds at most 1024")),
        (
            "connection sync with IPVS's defaults",
            GOOD.replace("  xdp_mode: auto\n", "  xdp_mode: auto\n  sync: { interface: eth0, syncid: 7 }\n"),
            Expect::Accepted,
        ),
        (
            "sync group that is not multicast",
            GOOD.replace("  xdp_mode: auto\n", "  xdp_mode: auto\n  sync: { interface: eth0, syncid: 7, group: 198.18.0.255 }\n"),
            Expect::Error("4:", "198.18.0.255 is not a multicast group"),
        ),
        (
            "sync refresh not below the shortest timeout",
            GOOD.replace("  xdp_mode: auto\n", "  xdp_mode: auto\n  sync: { interface: eth0, syncid: 7, refresh_period: 10m }\n")
                .replace("    protocol: tcp\n", "    protocol: tcp\n    timeouts: { udp: 5m }\n"),
            Expect::Error("4:", "refresh_period 10m is not below the shortest service timeout (5m)"),
        ),
        ("syncid above 255", GOOD.replace("  xdp_mode: auto\n", "  xdp_mode: auto\n  sync: { interface: eth0, syncid: 300 }\n"), Expect::Error("4:", "300")),
        ("a group of addresses, ranges and ports", with_service_line("group: [ { vip: 198.18.0.100, port: 443 }, { vip: 198.18.0.101-110 } ]"), Expect::Accepted),
        ("a group range upside down", with_service_line("group: [ { vip: 198.18.0.110-101 } ]"), Expect::Error("9:", "ends before it starts")),
        ("a group entry that repeats the service", with_service_line("group: [ { vip: 198.18.0.99-100 } ]"), Expect::Error("9:", "198.18.0.100:80 is already served")),
        ("a group address of another family", with_service_line("group: [ { vip: \"2001:db8::1\" } ]"), Expect::Error("9:", "is not the family of the service's VIP")),
        ("a real server that is a group address", with_service_line("group: [ { vip: 198.18.0.11 } ]"), Expect::Error("11:", "is the VIP itself")),
        ("an IPv6 service", GOOD.replace("vip: 198.18.0.100", "vip: \"2001:db8::100\"").replace("198.18.0.11,", "\"2001:db8::11\",").replace("198.18.0.12,", "\"2001:db8::12\","), Expect::Accepted),
        ("an IPv6 service persistent by /64", GOOD.replace("vip: 198.18.0.100", "vip: \"2001:db8::100\"").replace("198.18.0.11,", "\"2001:db8::11\",").replace("198.18.0.12,", "\"2001:db8::12\",").replace("    protocol: tcp\n", "    protocol: tcp\n    persistence_timeout: 5m\n    persistence_granularity: 64\n"), Expect::Accepted),
        ("an IPv6 persistence prefix of 0", GOOD.replace("vip: 198.18.0.100", "vip: \"2001:db8::100\"").replace("198.18.0.11,", "\"2001:db8::11\",").replace("198.18.0.12,", "\"2001:db8::12\",").replace("    protocol: tcp\n", "    protocol: tcp\n    persistence_timeout: 5m\n    persistence_granularity: 0\n"), Expect::Error("10:", "an IPv6 prefix length is 1 to 128")),
        ("an IPv4 real server of an IPv6 service", GOOD.replace("vip: 198.18.0.100", "vip: \"2001:db8::100\""), Expect::Errors(2)),
        ("an IPv4-mapped VIP", GOOD.replace("vip: 198.18.0.100", "vip: \"::ffff:198.18.0.100\"").replace("198.18.0.11,", "\"2001:db8::11\",").replace("198.18.0.12,", "\"2001:db8::12\","), Expect::Error("6:", "write the IPv4 address 198.18.0.100")),
        ("an IPv4-mapped group address of an IPv6 service", GOOD.replace("vip: 198.18.0.100", "vip: \"2001:db8::100\"").replace("198.18.0.11,", "\"2001:db8::11\",").replace("198.18.0.12,", "\"2001:db8::12\",").replace("    protocol: tcp\n", "    protocol: tcp\n    group: [ { vip: \"::ffff:198.18.0.100\" } ]\n"), Expect::Error("9:", "IPv4-mapped")),
        ("a sorry server of the other family", with_service_line("sorry_server: { address: \"2001:db8::99\" }"), Expect::Error("9:", "is not of the VIP's family")),
        ("announcing to ECMP routers with the defaults", GOOD.replace("  xdp_mode: auto\n", "  xdp_mode: auto\n  announce: {}\n"), Expect::Accepted),
        ("announcing through the main table", GOOD.replace("  xdp_mode: auto\n", "  xdp_mode: auto\n  announce: { table: 254 }\n"), Expect::Error("4:", "table 254 is one the kernel forwards with")),
        ("a drain longer than systemd waits", GOOD.replace("  xdp_mode: auto\n", "  xdp_mode: auto\n  announce: { drain_timeout: 2m }\n"), Expect::Error("4:", "drain_timeout must stay below systemd's 90 s")),
        ("an unknown announce key", GOOD.replace("  xdp_mode: auto\n", "  xdp_mode: auto\n  announce: { tabel: 100 }\n"), Expect::Error("4:", "tabel")),
        ("an IPv6 sync peer", GOOD.replace("  xdp_mode: auto\n", "  xdp_mode: auto\n  sync: { interface: eth0, syncid: 7, peers: [ \"2001:db8::3\" ] }\n"), Expect::Error("4:", "sync peers are IPv4 addresses")),
        (
            "a wrr cycle too long to store",
            GOOD.replace("    protocol: tcp\n", "    protocol: tcp\n    scheduler: wrr\n")
                .replace("198.18.0.11, weight: 1", "198.18.0.11, weight: 65535")
                .replace("198.18.0.12, weight: 1", "198.18.0.12, weight: 65534"),
            Expect::Error("9:16", "wrr cycle is longer than 65536"),
        ),
    ];
    let mut failures = Vec::new();
    for (what, text, expect) in &rows {
        let got = errors_of(text);
        let ok = match expect {
            Expect::Accepted => got.is_empty(),
            Expect::Errors(n) => got.len() == *n,
            Expect::Error(at, needle) => got.len() == 1 && got[0].starts_with(at) && got[0].contains(needle),
        };
        if !ok {
            failures.push(format!("{what}: got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} rows failed:\n{}", failures.len(), rows.len(), failures.join("\n"));
}

#[test]
fn seed_config_is_accepted_as_written() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/example.yaml");
    let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let web = &c.services[0];
    assert_eq!(web.scheduler, Scheduler::Wlc);
    assert_eq!(web.persistence_timeout, Some(std::time::Duration::from_secs(60)));
    let hc = web.health_check.as_ref().unwrap();
    assert_eq!((hc.port, hc.interval.as_secs(), hc.timeout.as_secs(), hc.retries, hc.retry_delay.as_secs()), (Some(80), 7, 5, 1, 1));
    assert_eq!(web.real_servers.len(), 2);
}

#[test]
fn scheduler_options_are_parsed() {
    let text = GOOD.replace(
        "    protocol: tcp\n",
        "    protocol: tcp\n    scheduler: mh\n    sloppy_tcp: true\n    persistence_timeout: 5m\n    persistence_granularity: 255.255.255.0\n    timeouts: { tcp: 1h, tcp_fin: 30s, udp: 60s }\n",
    );
    let c = Config::parse(Path::new("t.yaml"), &text).unwrap();
    let s = &c.services[0];
    assert_eq!(s.scheduler, Scheduler::Mh);
    assert!(s.sloppy_tcp);
    assert_eq!(s.persistence_granularity.map(|g| g.0), Some(24));
    assert_eq!((s.timeouts.tcp.as_secs(), s.timeouts.tcp_fin.as_secs(), s.timeouts.udp.as_secs()), (3600, 30, 60));
}

#[test]
fn warmup_takes_a_duration_or_true() {
    let with = |w: &str| GOOD.replace("    protocol: tcp\n", &format!("    protocol: tcp\n    health_check: {{ type: tcp, interval: 7s, warmup: {w} }}\n"));
    let c = Config::parse(Path::new("t.yaml"), &with("3s")).unwrap();
    assert_eq!(c.services[0].health_check.as_ref().unwrap().warmup, Some(Warmup::UpTo(std::time::Duration::from_secs(3))));
    let c = Config::parse(Path::new("t.yaml"), &with("true")).unwrap();
    assert_eq!(c.services[0].health_check.as_ref().unwrap().warmup, Some(Warmup::UpToInterval));
    let c = Config::parse(Path::new("t.yaml"), &with("false")).unwrap();
    assert_eq!(c.services[0].health_check.as_ref().unwrap().warmup, None);
}

#[test]
fn http_check_values_are_typed() {
    let text = with_service_line("health_check: { type: http, path: /health, status: [200, \"300-399\"], regex: \"^ok\" }");
    let c = Config::parse(Path::new("t.yaml"), &text).unwrap();
    let hc = c.services[0].health_check.as_ref().unwrap();
    assert_eq!(hc.status.as_deref(), Some(&[StatusRange { lo: 200, hi: 200 }, StatusRange { lo: 300, hi: 399 }][..]));
    assert!(hc.regex.as_ref().unwrap().0.is_match("ok then"));
}
