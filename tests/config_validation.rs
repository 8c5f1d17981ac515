//! Config validation: every bad input gets its own message with its line and column, and
//! the seed deployment's config is accepted as written.

use std::path::Path;

use lb_userspace::config::{Config, Scheduler};

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

/// Parses `text` and returns its single error as "LINE:COLUMN: message".
fn error_of(text: &str) -> String {
    let errors = Config::parse(Path::new("t.yaml"), text).expect_err("config should be rejected").0;
    assert_eq!(errors.len(), 1, "expected exactly one error, got {errors:?}");
    let e = &errors[0];
    assert_eq!(e.to_string(), format!("t.yaml:{}:{}: {}", e.position.line, e.position.column, e.message));
    format!("{}:{}: {}", e.position.line, e.position.column, e.message)
}

fn assert_error(text: &str, line_col: &str, needle: &str) {
    let got = error_of(text);
    assert!(got.starts_with(line_col), "expected position {line_col}, got `{got}`");
    assert!(got.contains(needle), "expected `{needle}` in `{got}`");
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
fn the_lab_shape_is_accepted() {
    Config::parse(Path::new("t.yaml"), GOOD).unwrap();
}

#[test]
fn unknown_field() {
    assert_error(&GOOD.replace("    port: 80\n", "    port: 80\n    prot: 1\n"), "8:5", "unknown field `prot`");
}

#[test]
fn malformed_vip() {
    assert_error(&GOOD.replace("198.18.0.100", "198.18.0.300"), "6:10", "invalid IP address syntax");
}

#[test]
fn malformed_real_server_address() {
    assert_error(&GOOD.replace("198.18.0.12,", "198.18.0.x,"), "11:20", "invalid IP address syntax");
}

#[test]
fn duplicate_service() {
    let dup = format!("{GOOD}  - name: web2\n    vip: 198.18.0.100\n    port: 80\n    protocol: tcp\n");
    assert_error(&dup, "13:10", "duplicate service: tcp 198.18.0.100:80");
}

#[test]
fn duplicate_service_name() {
    let dup = format!("{GOOD}  - name: web\n    vip: 198.18.0.101\n    port: 80\n    protocol: tcp\n");
    assert_error(&dup, "12:11", "duplicate service name `web`");
}

#[test]
fn real_server_equal_to_vip() {
    assert_error(&GOOD.replace("198.18.0.12,", "198.18.0.100,"), "11:20", "is the VIP itself");
}

#[test]
fn unknown_scheduler() {
    assert_error(&GOOD.replace("    protocol: tcp\n", "    protocol: tcp\n    scheduler: fastest\n"), "9:16", "unknown variant `fastest`");
}

#[test]
fn negative_weight() {
    assert_error(&GOOD.replace("weight: 1 }\n      - { address: 198.18.0.12", "weight: -1 }\n      - { address: 198.18.0.12"), "10:41", "integer `-1`");
}

#[test]
fn weight_above_ipvs_maximum() {
    assert_error(&GOOD.replace("198.18.0.12, weight: 1", "198.18.0.12, weight: 70000"), "11:41", "above the maximum 65535");
}

#[test]
fn zero_weight_is_quiescent_not_an_error() {
    Config::parse(Path::new("t.yaml"), &GOOD.replace("198.18.0.12, weight: 1", "198.18.0.12, weight: 0")).unwrap();
}

#[test]
fn zero_rise_is_rejected() {
    let text = GOOD.replace("    protocol: tcp\n", "    protocol: tcp\n    health_check: { type: tcp, rise: 0 }\n");
    assert_error(&text, "9:38", "rise must be at least 1");
}

#[test]
fn bad_duration() {
    let text = GOOD.replace("    protocol: tcp\n", "    protocol: tcp\n    persistence_timeout: 60 parsecs\n");
    assert_error(&text, "9:26", "invalid duration `60 parsecs`");
}

#[test]
fn zero_interval_is_rejected() {
    let text = GOOD.replace("    protocol: tcp\n", "    protocol: tcp\n    health_check: { type: tcp, interval: 0s }\n");
    assert_error(&text, "9:42", "interval must be greater than 0s");
}

#[test]
fn bad_xdp_mode() {
    assert_error(&GOOD.replace("xdp_mode: auto", "xdp_mode: turbo"), "3:13", "unknown variant `turbo`");
}

#[test]
fn real_server_port_must_match_in_dr() {
    assert_error(&GOOD.replace("198.18.0.12, weight: 1", "198.18.0.12, weight: 1, port: 8080"), "11:50", "DR mode cannot change the destination port");
}

#[test]
fn http_check_needs_a_path() {
    let text = GOOD.replace("    protocol: tcp\n", "    protocol: tcp\n    health_check: { type: http }\n");
    assert_error(&text, "9:27", "an http check needs `path`");
}

#[test]
fn several_problems_are_all_reported() {
    let text = GOOD.replace("198.18.0.12,", "198.18.0.100,").replace("198.18.0.11, weight: 1", "198.18.0.11, weight: 99999");
    let errors = Config::parse(Path::new("t.yaml"), &text).unwrap_err().0;
    assert_eq!(errors.len(), 2, "{errors:?}");
}

#[test]
fn yaml_syntax_error_has_a_position() {
    let got = error_of("director:\n  interface: [eth0\n");
    assert!(got.starts_with("3:1") || got.starts_with("2:"), "{got}");
}

#[test]
fn more_than_256_real_servers_in_a_service_are_refused() {
    let mut text = GOOD.replace("      - { address: 198.18.0.11, weight: 1 }\n      - { address: 198.18.0.12, weight: 1 }\n", "");
    for i in 0..257 {
        text += &format!("      - {{ address: 198.18.{}.{} }}\n", 1 + i / 250, 1 + i % 250);
    }
    assert_error(&text, "10:7", "a service may have at most 256");
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
fn non_contiguous_netmask_is_refused() {
    let text = GOOD.replace("    protocol: tcp\n", "    protocol: tcp\n    persistence_timeout: 60s\n    persistence_granularity: 255.0.255.0\n");
    assert_error(&text, "10:30", "not contiguous");
}

#[test]
fn warmup_takes_a_duration_or_true() {
    let with = |w: &str| GOOD.replace("    protocol: tcp\n", &format!("    protocol: tcp\n    health_check: {{ type: tcp, interval: 7s, warmup: {w} }}\n"));
    let c = Config::parse(Path::new("t.yaml"), &with("3s")).unwrap();
    assert_eq!(c.services[0].health_check.as_ref().unwrap().warmup, Some(std::time::Duration::from_secs(3)));
    let c = Config::parse(Path::new("t.yaml"), &with("true")).unwrap();
    assert_eq!(c.services[0].health_check.as_ref().unwrap().warmup, Some(std::time::Duration::MAX));
    let c = Config::parse(Path::new("t.yaml"), &with("false")).unwrap();
    assert_eq!(c.services[0].health_check.as_ref().unwrap().warmup, None);
}
