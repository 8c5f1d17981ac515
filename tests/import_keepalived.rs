//! `drlb import-keepalived`: one fixture per keyword (keepalived text → the YAML drlb
//! writes, or the report it prints), the field report's own keepalived.conf, and the real
//! files of `../shared/keepalived-corpus/` against what keepalived's own parser said of
//! each (KEEPALIVED-VERDICTS.md).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use lb_userspace::control::config::{CheckType, Config};
use lb_userspace::migrate::keepalived::lvs::{self, Method, VsAddress};
use lb_userspace::migrate::keepalived::{import, import_text, lexer, report, tree, Import, Severity};

/// A VRRP instance so the director's interface is known, then `body`.
fn conf(body: &str) -> String {
    format!("vrrp_instance VI_1 {{\n  interface eth0\n  virtual_router_id 7\n  virtual_ipaddress {{\n    198.18.0.100/24\n  }}\n}}\n{body}")
}

fn run(text: &str) -> Import {
    import_text(Path::new("/nonexistent/keepalived.conf"), text, "low")
}

/// The YAML validates, IPv6 services included.
fn check(import: &Import) -> Option<Config> {
    match Config::parse(Path::new("import.yaml"), &import.yaml) {
        Ok(c) => Some(c),
        Err(errors) => panic!("the import does not pass drlb check: {:?}\n{}", errors.0, import.yaml),
    }
}

struct Fixture {
    what: &'static str,
    keepalived: &'static str,
    /// Lines the YAML must contain (trimmed).
    yaml: &'static [&'static str],
    /// Substrings of the reports, in order (each must match a report of its own).
    reports: &'static [&'static str],
}

fn fixtures() -> Vec<Fixture> {
    vec![
        Fixture {
            what: "a plain DR service: scheduler, persistence, weights, no checker (always up)",
            keepalived: "virtual_server 198.18.0.100 80 {\n  lb_algo sh\n  lb_kind DR\n  protocol TCP\n  persistence_timeout 60\n  persistence_granularity 255.255.255.0\n  real_server 198.18.0.11 80 {\n    weight 3\n  }\n  real_server 198.18.0.12 80 {\n  }\n}\n",
            yaml: &["vip: 198.18.0.100", "port: 80", "protocol: tcp", "scheduler: sh", "persistence_timeout: 60s", "persistence_granularity: 255.255.255.0", "- { address: 198.18.0.11, weight: 3 }", "- { address: 198.18.0.12, weight: 1 }"],
            reports: &[],
        },
        Fixture {
            what: "sh's flags (flag-2 is sh-port's bit) and one-packet scheduling of a UDP service",
            keepalived: "virtual_server 198.18.0.100 53 {\n  lvs_sched sh\n  flag-2\n  sh-fallback\n  ops\n  lb_kind DR\n  protocol UDP\n  real_server 198.18.0.11 53 {\n  }\n}\n",
            yaml: &["scheduler: sh", "scheduler_flags: [sh-port, sh-fallback]", "one_packet: true"],
            reports: &[],
        },
        Fixture {
            what: "fo, ovf and twos are translated as written; ops on TCP is reset, as keepalived resets it",
            keepalived: "virtual_server 198.18.0.100 80 {\n  lvs_sched twos\n  ops\n  lb_kind DR\n  protocol TCP\n  real_server 198.18.0.11 80 {\n  }\n}\nvirtual_server 198.18.0.100 81 {\n  lvs_sched ovf\n  lb_kind DR\n  protocol TCP\n  real_server 198.18.0.11 81 {\n  }\n}\n",
            yaml: &["scheduler: twos", "scheduler: ovf"],
            reports: &["ops: one-packet scheduling needs UDP"],
        },
        Fixture {
            what: "misc_dynamic, FILE_CHECK with its track_file (init_file reported), omega, ha_suspend, sorry_server_inhibit",
            keepalived: "track_file maint {\n  file /run/maint\n  weight 0\n  init_file 3\n}\nvirtual_server 198.18.0.100 80 {\n  lb_kind DR\n  protocol TCP\n  omega\n  ha_suspend\n  sorry_server 198.18.0.99 80\n  sorry_server_inhibit\n  real_server 198.18.0.11 80 {\n    MISC_CHECK {\n      misc_path /bin/true\n      misc_dynamic\n    }\n    FILE_CHECK {\n      track_file maint\n    }\n  }\n}\n",
            yaml: &["dynamic: true", "- type: file", "file: /run/maint", "weight: 0", "omega: true", "ha_suspend: true", "sorry_server: { address: 198.18.0.99, inhibit: true }"],
            reports: &["init_file: keepalived writes 3 into /run/maint at start"],
        },
        Fixture {
            what: "lvs_sched and lvs_method are the current names of lb_algo and lb_kind",
            keepalived: "virtual_server 198.18.0.100 80 {\n  lvs_sched rr\n  lvs_method DR\n  protocol TCP\n  real_server 198.18.0.11 80 {\n  }\n}\n",
            yaml: &["scheduler: rr"],
            reports: &[],
        },
        Fixture {
            what: "a virtual-server weight is the real servers' default",
            keepalived: "virtual_server 198.18.0.100 80 {\n  lb_kind DR\n  protocol TCP\n  lb_algo wrr\n  weight 5\n  real_server 198.18.0.11 80 {\n  }\n  real_server 198.18.0.12 80 {\n    weight 0\n  }\n}\n",
            yaml: &["- { address: 198.18.0.11, weight: 5 }", "- { address: 198.18.0.12, weight: 0 }"],
            reports: &[],
        },
        Fixture {
            what: "no protocol: keepalived balances UDP",
            keepalived: "virtual_server 198.18.0.100 53 {\n  lb_algo rr\n  lb_kind DR\n  real_server 198.18.0.11 53 {\n  }\n}\n",
            yaml: &["protocol: udp"],
            reports: &["protocol: no protocol: keepalived balances this virtual server as UDP"],
        },
        Fixture {
            what: "lb_kind dr is not DR to keepalived: NAT, left out",
            keepalived: "virtual_server 198.18.0.100 80 {\n  lb_algo rr\n  lb_kind dr\n  protocol TCP\n  real_server 198.18.0.11 80 {\n  }\n}\n",
            yaml: &["services: []"],
            reports: &["lb_kind: unknown forwarding method `dr` (keepalived's values are case-sensitive: `DR`)", "lvs_method: no lvs_method/lb_kind: keepalived forwards this virtual server with NAT"],
        },
        Fixture {
            what: "NAT and TUN virtual servers are left out, never converted",
            keepalived: "virtual_server 198.18.0.100 80 {\n  lb_algo rr\n  lb_kind NAT\n  protocol TCP\n  real_server 198.18.0.11 80 {\n  }\n}\nvirtual_server 198.18.0.100 81 {\n  lb_algo rr\n  lb_kind TUN\n  protocol TCP\n  real_server 198.18.0.11 81 {\n  }\n}\n",
            yaml: &["services: []"],
            reports: &["lvs_method: NAT: drlb forwards by Direct Routing only", "lvs_method: TUN: drlb forwards by Direct Routing only"],
        },
        Fixture {
            what: "an unknown scheduler name: keepalived uses wlc",
            keepalived: "virtual_server 198.18.0.100 80 {\n  lb_algo loadbalance\n  lb_kind DR\n  protocol TCP\n  real_server 198.18.0.11 80 {\n  }\n}\n",
            yaml: &["scheduler: wlc"],
            reports: &["lb_algo: unknown scheduler `loadbalance`"],
        },
        Fixture {
            what: "persistence_timeout without a value is 360 s",
            keepalived: "virtual_server 198.18.0.100 80 {\n  lb_algo rr\n  lb_kind DR\n  protocol TCP\n  persistence_timeout\n  real_server 198.18.0.11 80 {\n  }\n}\n",
            yaml: &["persistence_timeout: 360s"],
            reports: &[],
        },
        Fixture {
            what: "port 0 without persistence: keepalived forces 360 s",
            keepalived: "virtual_server 198.18.0.100 0 {\n  lb_algo rr\n  lb_kind DR\n  protocol TCP\n  real_server 198.18.0.11 {\n  }\n}\n",
            yaml: &["port: 0", "persistence_timeout: 360s"],
            reports: &["virtual_server: port 0 without persistence"],
        },
        Fixture {
            what: "TCP_CHECK with keepalived's defaults: delay_loop 60 s, connect_timeout 5 s, retry 1, delay_before_retry 1 s, warmup up to delay_loop",
            keepalived: "virtual_server 198.18.0.100 80 {\n  lb_algo rr\n  lb_kind DR\n  protocol TCP\n  real_server 198.18.0.11 80 {\n    TCP_CHECK {\n    }\n  }\n}\n",
            yaml: &["type: tcp", "port: 80", "interval: 60s", "timeout: 5s", "retries: 1", "retry_delay: 1s", "warmup: true"],
            reports: &[],
        },
        Fixture {
            what: "timing is inherited virtual server → real server → checker",
            keepalived: "virtual_server 198.18.0.100 80 {\n  lb_algo rr\n  lb_kind DR\n  protocol TCP\n  delay_loop 7\n  connect_timeout 2.5\n  retry 4\n  real_server 198.18.0.11 80 {\n    delay_before_retry 2\n    TCP_CHECK {\n      connect_port 8080\n      warmup 0\n    }\n  }\n}\n",
            yaml: &["port: 8080", "interval: 7s", "timeout: 2500ms", "retries: 4", "retry_delay: 2s"],
            reports: &[],
        },
        Fixture {
            what: "nb_get_retry in TCP_CHECK is unknown to keepalived: reported only when it differs from the retry keepalived keeps",
            keepalived: "virtual_server 198.18.0.100 80 {\n  lb_algo rr\n  lb_kind DR\n  protocol TCP\n  real_server 198.18.0.11 80 {\n    TCP_CHECK {\n      nb_get_retry 3\n    }\n  }\n  real_server 198.18.0.12 80 {\n    TCP_CHECK {\n      nb_get_retry 1\n    }\n  }\n}\n",
            yaml: &["retries: 1"],
            reports: &["nb_get_retry: unknown in TCP_CHECK: keepalived logs \"Unknown keyword\" and keeps retry at 1"],
        },
        Fixture {
            what: "HTTP_GET: path, status codes, virtualhost and regex; nb_get_retry is retry there; retry delay 3 s by default",
            keepalived: "virtual_server 198.18.0.100 80 {\n  lb_algo rr\n  lb_kind DR\n  protocol TCP\n  virtualhost www.example.org\n  real_server 198.18.0.11 80 {\n    HTTP_GET {\n      url {\n        path /health\n        status_code 200 301-302\n        regex \"ok|up\"\n      }\n      nb_get_retry 2\n    }\n  }\n}\n",
            yaml: &["type: http", "path: /health", "host: www.example.org", "regex: ok|up", "status: [\"200\", \"301-302\"]", "retries: 2", "retry_delay: 3s"],
            reports: &["nb_get_retry: deprecated alias of `retry`"],
        },
        Fixture {
            what: "MISC_CHECK: the script, misc_timeout as its timeout, retry 0 by default",
            keepalived: "virtual_server 198.18.0.100 80 {\n  lb_algo rr\n  lb_kind DR\n  protocol TCP\n  delay_loop 10\n  real_server 198.18.0.11 80 {\n    MISC_CHECK {\n      misc_path \"/usr/local/bin/check 198.18.0.11\"\n      misc_timeout 4\n    }\n  }\n}\n",
            yaml: &["type: script", "command: /usr/local/bin/check 198.18.0.11", "timeout: 4s", "retries: 0"],
            reports: &[],
        },
        Fixture {
            what: "checks that differ between real servers, several checkers on one (all must pass), connect_ip, bindto and bind_port: each server lists its own",
            keepalived: "virtual_server 198.18.0.100 80 {\n  lb_algo rr\n  lb_kind DR\n  protocol TCP\n  delay_loop 5\n  real_server 198.18.0.11 80 {\n    TCP_CHECK {\n      connect_ip 198.18.0.21\n      connect_port 81\n      bindto 198.18.0.1\n      bind_port 4000\n    }\n    MISC_CHECK {\n      misc_path /bin/true\n    }\n  }\n  real_server 198.18.0.12 80 {\n  }\n}\n",
            yaml: &["- address: 198.18.0.11", "health_checks:", "- type: tcp", "port: 81", "address: 198.18.0.21", "source: 198.18.0.1", "source_port: 4000", "- type: script", "command: /bin/true", "- { address: 198.18.0.12, weight: 1, health_checks: [] }"],
            reports: &[],
        },
        Fixture {
            what: "SSL_GET with enable_sni (the name from virtualhost) and a digest; SMTP_CHECK, DNS_CHECK, UDP_CHECK and PING_CHECK with their options",
            keepalived: "virtual_server 198.18.0.100 443 {\n  lb_algo rr\n  lb_kind DR\n  protocol TCP\n  virtualhost www.example.org\n  real_server 198.18.0.11 443 {\n    SSL_GET {\n      url {\n        path /\n        digest 7BD3D5F5B3CDB13AED632121206E729C\n      }\n      enable_sni\n    }\n    SMTP_CHECK {\n      connect_port 25\n      helo_name lb.example.org\n    }\n    DNS_CHECK {\n      connect_port 53\n      type a\n      name www.example.org\n    }\n    UDP_CHECK {\n      connect_port 123\n      payload 0102\n      require_reply 01xx\n    }\n    PING_CHECK {\n    }\n  }\n}\n",
            yaml: &["- type: https", "sni: www.example.org", "digest: 7bd3d5f5b3cdb13aed632121206e729c", "- type: smtp", "helo: lb.example.org", "- type: dns", "query_type: A", "query_name: www.example.org", "retries: 3", "- type: udp", "payload: \"0102\"", "reply: \"01xx\"", "- type: ping"],
            reports: &[],
        },
        Fixture {
            what: "misc_path: keepalived runs the first word (a quoted command line is split again, without a shell); the rest is reported",
            keepalived: "virtual_server 198.18.0.100 80 {\n  lb_algo rr\n  lb_kind DR\n  protocol TCP\n  real_server 198.18.0.11 80 {\n    MISC_CHECK {\n      misc_path \"/usr/bin/curl -sf 'http://rs/h?a=1&b=2'\"\n    }\n  }\n  real_server 198.18.0.12 80 {\n    MISC_CHECK {\n      misc_path /bin/chk.sh 198.18.0.12\n    }\n  }\n}\n",
            yaml: &["command: /usr/bin/curl -sf 'http://rs/h?a=1&b=2'", "command: /bin/chk.sh"],
            reports: &["misc_path: keepalived runs only the first word `/bin/chk.sh` and ignores `198.18.0.12`"],
        },
        Fixture {
            what: "keepalived's ranges: retry is at least 1 at virtual-server level; timers go beyond an hour; UDP hex spans words",
            keepalived: "virtual_server 198.18.0.100 53 {\n  lb_algo rr\n  lb_kind DR\n  protocol UDP\n  retry 0\n  delay_loop 7200\n  real_server 198.18.0.11 53 {\n    UDP_CHECK {\n      payload 01 02 3\n    }\n  }\n}\n",
            yaml: &["interval: 7200s", "retries: 1", "payload: \"010203\""],
            reports: &["retry: 0 is outside [1, 4294967295]"],
        },
        Fixture {
            what: "a group entry with a port needs no forced persistence; an IPv4 granularity written as a number is a non-contiguous mask to keepalived",
            keepalived: "virtual_server_group web {\n  198.18.0.100 80\n}\nvirtual_server group web {\n  lb_algo rr\n  lb_kind DR\n  protocol TCP\n  persistence_timeout 30\n  persistence_granularity 24\n  real_server 198.18.0.11 80 {\n  }\n}\n",
            yaml: &["persistence_timeout: 30s", "port: 80"],
            reports: &["persistence_granularity: keepalived reads `24` as a non-contiguous netmask"],
        },
        Fixture {
            what: "a regex keeps keepalived's escapes; a weight above 65535 is capped with a report; a sorry server that is a real server is left out",
            keepalived: "virtual_server 198.18.0.100 80 {\n  lb_algo wrr\n  lb_kind DR\n  protocol TCP\n  sorry_server 198.18.0.11 80\n  real_server 198.18.0.11 80 {\n    weight 100000\n    HTTP_GET {\n      url {\n        path /\n        regex \"\\d+ OK\"\n      }\n    }\n  }\n}\n",
            yaml: &["regex: d+ OK", "- { address: 198.18.0.11, weight: 65535 }"],
            reports: &["sorry_server: the sorry server is also a real server", "weight: 100000 is above IPVS's (and drlb's) maximum 65535"],
        },
        Fixture {
            what: "a block after a keyword that opens none is refused: keepalived would read the rest nested differently",
            keepalived: "virtual_server 198.18.0.100 80 {\n  lb_algo rr\n  lb_kind DR\n  protocol TCP\n  sorry_server 198.18.0.50 80 {\n    weight 5\n  }\n  real_server 198.18.0.11 80 {\n  }\n}\n",
            yaml: &[],
            reports: &["sorry_server: unknown keyword in virtual_server (`sorry_server` opens no block)", "weight: inside unknown `sorry_server`", "}: ends unknown `sorry_server`"],
        },
        Fixture {
            what: "a misspelt keyword is reported, with keepalived's fallback",
            keepalived: "virtual_server 198.18.0.100 80 {\n  lb_algo wrr\n  lb_kind DR\n  protocol TCP\n  real_server 198.18.0.11 80 {\n    weigth 3\n  }\n}\n",
            yaml: &["- { address: 198.18.0.11, weight: 1 }"],
            reports: &["weigth: unknown keyword in real_server: keepalived logs \"Unknown keyword 'weigth'\" and ignores the line (ignored as keepalived does; did you mean `weight`?)"],
        },
        Fixture {
            what: "DR cannot change the port: a real server on another port is reported",
            keepalived: "virtual_server 198.18.0.100 80 {\n  lb_algo rr\n  lb_kind DR\n  protocol TCP\n  real_server 198.18.0.11 8080 {\n    TCP_CHECK {\n    }\n  }\n}\n",
            yaml: &["port: 8080", "- { address: 198.18.0.11, weight: 1 }"],
            reports: &["real_server: port 8080 differs from the virtual server's 80"],
        },
        Fixture {
            what: "quorum above the total weight is lowered as keepalived does; sorry_server and inhibit_on_failure carry over",
            keepalived: "virtual_server 198.18.0.100 80 {\n  lb_algo rr\n  lb_kind DR\n  protocol TCP\n  quorum 5\n  inhibit_on_failure\n  sorry_server 198.18.0.99 80\n  real_server 198.18.0.11 80 {\n    weight 2\n  }\n}\n",
            yaml: &["quorum: 2", "inhibit_on_failure: true", "sorry_server: { address: 198.18.0.99 }"],
            reports: &["quorum: 5 is above the real servers' total weight 2"],
        },
        Fixture {
            what: "a fwmark virtual server cannot be seen from XDP",
            keepalived: "virtual_server fwmark 7 {\n  lb_algo rr\n  lb_kind DR\n  real_server 198.18.0.11 0 {\n  }\n}\n",
            yaml: &["services: []"],
            reports: &["virtual_server: fwmark 7: netfilter sets marks after XDP"],
        },
        Fixture {
            what: "a virtual_server_group: ranges and ports become one service with `group:` (keepalived's one IPVS service per entry is noted)",
            keepalived: "virtual_server_group web {\n  198.18.0.100-102 80\n  198.18.0.110 443\n  198.18.0.111-111 443\n}\nvirtual_server group web {\n  lb_algo rr\n  lb_kind DR\n  protocol TCP\n  real_server 198.18.0.11 {\n  }\n}\n",
            yaml: &["- name: web", "vip: 198.18.0.100", "port: 80", "group:", "- { vip: 198.18.0.101-198.18.0.102, port: 80 }", "- { vip: 198.18.0.110, port: 443 }"],
            reports: &["198.18.0.111-111: `198.18.0.111-111`: the range's end is not greater than its start", "virtual_server: group `web`: keepalived makes one IPVS service of each of its 4 addresses"],
        },
        Fixture {
            what: "$definitions, multi-line definitions, @conditions and ~SEQ build services",
            keepalived: "$CHECK=\\\n  TCP_CHECK { \\\n    connect_timeout 3 \\\n  }\n@low $W=2\n@^low $W=9\n~SEQ(N,1,2) $VSN\n",
            yaml: &["timeout: 3s", "- { address: 198.18.0.11, weight: 2 }"],
            reports: &[],
        },
        Fixture {
            what: "an unclosed block is refused, not guessed",
            keepalived: "virtual_server 198.18.0.100 80 {\n  lb_algo rr\n  lb_kind DR\n  protocol TCP\n  real_server 198.18.0.11 80 {\n}\n",
            yaml: &[],
            reports: &["the file leaves 1 block(s) open"],
        },
    ]
}

#[test]
fn each_keyword_translates_or_is_reported() {
    let mut failures = Vec::new();
    for f in fixtures() {
        // The ~SEQ fixture's template needs a definition of a whole virtual server.
        let body = f.keepalived.replace(
            "~SEQ(N,1,2) $VSN\n",
            "$VSN=virtual_server 198.18.0.10$N 80 { \\\nlb_algo rr \\\nlb_kind DR \\\nprotocol TCP \\\nreal_server 198.18.0.11 80 { \\\nweight $W \\\n$CHECK \\\n} \\\n}\n~SEQ(N,1,2) $VSN\n",
        );
        let imported = run(&conf(&body));
        let reports: Vec<String> = imported.reports.iter().map(|r| r.to_string()).collect();
        let yaml_lines: Vec<&str> = imported.yaml.lines().map(str::trim).collect();
        for want in f.yaml {
            if !yaml_lines.contains(want) {
                failures.push(format!("{}: the YAML has no line `{want}`:\n{}", f.what, imported.yaml));
            }
        }
        let mut rest = reports.clone();
        for want in f.reports {
            match rest.iter().position(|r| r.contains(want)) {
                Some(i) => {
                    rest.remove(i);
                }
                None => failures.push(format!("{}: no report contains `{want}`; reports: {reports:#?}", f.what)),
            }
        }
        if f.reports.is_empty() && !reports.is_empty() {
            failures.push(format!("{}: expected no report, got {reports:#?}", f.what));
        }
        if !imported.fatal() {
            check(&imported);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn vrrp_out_keeps_everything_but_the_lvs_parts() {
    let text = conf(
        "global_defs {\n  router_id LB1\n  lvs_timeouts tcp 600 tcpfin 60 udp 120\n  lvs_sync_daemon eth1 inst VI_1 id 9\n}\nvrrp_script chk {\n  script \"/usr/bin/drlb ready\"\n}\nvrrp_script nginx {\n  script \"/usr/bin/pgrep -f \\\"nginx: master\\\"\"\n}\nvirtual_server 198.18.0.100 80 {\n  lb_algo rr\n  lb_kind DR\n  protocol TCP\n  real_server 198.18.0.11 80 {\n  }\n}\n",
    );
    let imported = run(&text);
    assert!(imported.vrrp.contains("vrrp_instance VI_1 {"), "{}", imported.vrrp);
    assert!(imported.vrrp.contains("router_id LB1"));
    assert!(imported.vrrp.contains("script \"/usr/bin/drlb ready\""), "{}", imported.vrrp);
    assert!(imported.vrrp.contains(r#"script "/usr/bin/pgrep -f \"nginx: master\"""#), "scripts are written as they were: {}", imported.vrrp);
    assert!(!imported.vrrp.contains("virtual_server"));
    assert!(!imported.vrrp.contains("lvs_"));
    let config = check(&imported).expect("it validates");
    let svc = &config.services[0];
    assert_eq!(svc.timeouts.tcp, Duration::from_secs(600));
    assert_eq!(svc.timeouts.tcp_fin, Duration::from_secs(60));
    assert_eq!(svc.timeouts.udp, Duration::from_secs(120));
    let sync = config.director.sync.expect("lvs_sync_daemon becomes director.sync");
    assert_eq!((sync.interface.as_str(), sync.syncid), ("eth1", 9));
    assert_eq!(config.director.interface, "eth0");
}

/// The field report's keepalived.conf, cut from the report (it sits among prose): the
/// text from `global_defs {` to the end of the virtual_server block.
fn field_report_conf() -> Option<String> {
    let path = support::shared_file("seeds/000_9488a6da6be4c770.txt")?;
    let text = std::fs::read_to_string(path).ok()?;
    let start = text.find("global_defs {")?;
    let vs = text[start..].find("virtual_server ")? + start;
    // The virtual server's block ends at the first line that is exactly "}" after it.
    let end = text[vs..].find("\n}\n")? + vs + 3;
    Some(text[start..end].to_string())
}

#[test]
fn the_field_reports_keepalived_conf_imports_without_a_report_as_the_hand_translation() {
    let Some(text) = field_report_conf() else {
        support::skip("../shared/seeds/ is not beside this checkout");
        return;
    };
    let imported = import_text(Path::new("field-report/keepalived.conf"), &text, "director1");
    assert!(imported.reports.is_empty(), "{:#?}", imported.reports.iter().map(ToString::to_string).collect::<Vec<_>>());
    let config = check(&imported).expect("it validates");
    let example = Config::load(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../configs/example.yaml")).expect("configs/example.yaml");
    assert_eq!(config.director.interface, "enahisic2i0");
    let (a, b) = (&config.services[0], &example.services[0]);
    assert_eq!((a.vip, a.port, a.protocol, a.scheduler, a.persistence_timeout), (b.vip, b.port, b.protocol, b.scheduler, b.persistence_timeout));
    let weights = |s: &lb_userspace::control::config::Service| s.real_servers.iter().map(|r| (r.address, r.weight)).collect::<Vec<_>>();
    assert_eq!(weights(a), weights(b));
    let (ca, cb) = (a.health_check.as_ref().unwrap(), b.health_check.as_ref().unwrap());
    assert_eq!((ca.kind, ca.port, ca.interval, ca.timeout, ca.retries, ca.retry_delay), (cb.kind, cb.port, cb.interval, cb.timeout, cb.retries, cb.retry_delay));
    assert_eq!(ca.kind, CheckType::Tcp);
    // keepalived delays the first check by a random time up to delay_loop: so does drlb.
    assert!(ca.warmup.is_some());
    assert!(imported.vrrp.contains("vrrp_instance VI_7 {") && imported.vrrp.contains("192.168.1.9/24 dev enahisic2i0"), "{}", imported.vrrp);
}

/// One corpus entry: a file, or a directory whose keepalived.conf includes the rest.
fn corpus() -> Option<Vec<(String, PathBuf)>> {
    let dir = support::shared_dir("keepalived-corpus")?;
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).ok()?.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.ends_with(".md") || name.ends_with(".py") {
            continue;
        }
        let path = if entry.path().is_dir() { entry.path().join("keepalived.conf") } else { entry.path() };
        out.push((name, path));
    }
    out.sort();
    Some(out)
}

/// KEEPALIVED-VERDICTS.md: per entry, keepalived -t's exit code and the (file, line) of
/// each message that names a line.
fn verdicts(dir: &Path) -> BTreeMap<String, (i32, Vec<(String, u32, String)>)> {
    let text = std::fs::read_to_string(dir.join("KEEPALIVED-VERDICTS.md")).expect("KEEPALIVED-VERDICTS.md");
    let located = regex::Regex::new(r"^\((?:(\S+): )?Line (\d+)\) (.*)$").unwrap();
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("## ") {
            current = Some(name.trim().to_string());
            out.insert(name.trim().to_string(), (0, Vec::new()));
            continue;
        }
        let Some(name) = &current else { continue };
        let entry = out.get_mut(name).unwrap();
        if let Some(code) = line.strip_prefix("exit=") {
            entry.0 = code.trim().parse().unwrap();
        } else if let Some(c) = located.captures(line) {
            let file = c.get(1).map(|m| m.as_str().to_string()).unwrap_or_default();
            entry.1.push((file, c[2].parse().unwrap(), c[3].to_string()));
        }
    }
    out
}

/// The line ranges, per file name, of the top-level LVS blocks of a parsed file.
fn lvs_ranges(path: &Path) -> BTreeMap<String, Vec<(u32, u32)>> {
    let mut reports = report::Reports::default();
    let (lines, _) = lexer::Lexer::new("nomatch", &mut reports).read_file(path);
    let nodes = tree::build(&lines, &mut reports);
    let mut out: BTreeMap<String, Vec<(u32, u32)>> = BTreeMap::new();
    for n in nodes.iter().filter(|n| lvs::LVS_BLOCKS.contains(&n.keyword.as_str())) {
        let end = n.end.as_ref().filter(|e| e.file == n.at.file).map_or(n.at.line, |e| e.line);
        let name = n.at.file.file_name().unwrap().to_string_lossy().to_string();
        out.entry(name).or_default().push((n.at.line, end));
    }
    out
}

#[test]
fn the_corpus_imports_where_keepalived_does_and_reports_where_it_complains() {
    let Some(entries) = corpus() else {
        support::skip("../shared/keepalived-corpus/ is not beside this checkout (the keyword fixtures still ran)");
        return;
    };
    let dir = support::shared_dir("keepalived-corpus").unwrap();
    let verdicts = verdicts(&dir);
    let mut failures = Vec::new();
    let mut summary = Vec::new();
    for (name, path) in &entries {
        // As KEEPALIVED-VERDICTS.md ran keepalived: `-i nomatch`.
        let imported = import(path, "nomatch");
        let Some((exit, complaints)) = verdicts.get(name) else {
            failures.push(format!("{name}: not in KEEPALIVED-VERDICTS.md"));
            continue;
        };
        let errors: Vec<&report::Report> = imported.reports.iter().filter(|r| r.severity >= Severity::Error).collect();
        // 1. keepalived accepts it: the import reports no error of keepalived's.
        if *exit == 0 && !errors.is_empty() {
            failures.push(format!("{name}: keepalived accepts it, the import reports {:#?}", errors.iter().map(ToString::to_string).collect::<Vec<_>>()));
        }
        // 2. A refused file is one keepalived complains about, for its braces.
        if imported.fatal() {
            let braces = complaints.iter().any(|c| c.2.contains("'}'") || c.2.contains("'{'")) || verdict_text(&dir, name).contains("missing '}'");
            if *exit == 0 || !braces {
                failures.push(format!("{name}: refused, but keepalived does not complain of its braces"));
            }
            summary.push(format!("{name}: refused (braces), as keepalived complains"));
            continue;
        }
        // 3. Every line keepalived complains about in a virtual server (or as an
        //    unknown top-level keyword) has a report at that line.
        let ranges = lvs_ranges(path);
        let main = path.file_name().unwrap().to_string_lossy().to_string();
        let reported: BTreeSet<(String, u32)> =
            imported.reports.iter().map(|r| (r.at.file.file_name().unwrap().to_string_lossy().to_string(), r.at.line)).collect();
        for (file, line, message) in complaints {
            let file = if file.is_empty() { main.clone() } else { Path::new(file).file_name().unwrap().to_string_lossy().to_string() };
            let in_lvs = ranges.get(&file).is_some_and(|r| r.iter().any(|(a, b)| (a..=b).contains(&line)));
            let top_level_unknown = message.starts_with("Unknown keyword") || message.starts_with("Unexpected '{'");
            if (in_lvs || top_level_unknown) && !reported.contains(&(file.clone(), *line)) {
                failures.push(format!("{name}: keepalived complains at {file}:{line} ({message}); the import says nothing there"));
            }
        }
        // 4. The YAML passes drlb check, and every DR virtual server is in it as written.
        let config = check(&imported);
        let mut reads = report::Reports::default();
        let (lines, _) = lexer::Lexer::new("nomatch", &mut reads).read_file(path);
        let read = lvs::read(&tree::build(&lines, &mut reads), &mut reads);
        let mut dr = 0;
        for vs in &read.virtual_servers {
            // Every (address, port) the virtual server stands for: its own, or its group's.
            let endpoints: Vec<(std::net::IpAddr, u16)> = match &vs.address {
                VsAddress::Address { ip, port } => vec![(*ip, port.unwrap_or(0))],
                VsAddress::Group(g) => read.groups.get(g).map_or(Vec::new(), |g| {
                    g.entries
                        .iter()
                        .flat_map(|e| match e {
                            lvs::GroupEntry::Addresses { addresses, port, .. } => addresses.iter().map(|a| (*a, port.unwrap_or(0))).collect(),
                            lvs::GroupEntry::Fwmark { .. } => Vec::new(),
                        })
                        .collect()
                }),
                VsAddress::Fwmark(_) => Vec::new(),
            };
            let Some(&(ip, port)) = endpoints.first() else { continue };
            if vs.method != Some(Method::Dr) || vs.protocol == Some(lvs::Proto::Sctp) {
                continue;
            }
            dr += 1;
            let Some(config) = &config else { continue };
            let protocol = match vs.protocol {
                Some(lvs::Proto::Tcp) => "tcp",
                _ => "udp",
            };
            let Some(svc) = config.services.iter().find(|s| s.vip == ip && s.port == port && s.protocol.to_string() == protocol) else {
                failures.push(format!("{name}: the DR virtual server at {} ({ip}:{port}/{protocol}) is not in the YAML", vs.at));
                continue;
            };
            if svc.endpoints() != endpoints {
                failures.push(format!("{name}: {}: endpoints {:?} instead of {endpoints:?}", vs.at, svc.endpoints()));
            }
            let port = if endpoints.iter().any(|e| e.1 == 0) { 0 } else { port };
            let scheduler = vs.scheduler.clone().unwrap_or_else(|| "wlc".into());
            if lb_userspace::control::config::Scheduler::from_name(&scheduler).is_some() && svc.scheduler.name() != scheduler {
                failures.push(format!("{name}: {}: scheduler {} instead of {scheduler}", vs.at, svc.scheduler.name()));
            }
            let persistence = vs.persistence_timeout.or(vs.persistence_granularity.as_ref().map(|_| 360)).or((port == 0).then_some(360));
            if svc.persistence_timeout.map(|d| d.as_secs() as u32) != persistence {
                failures.push(format!("{name}: {}: persistence {:?} instead of {persistence:?}", vs.at, svc.persistence_timeout));
            }
            let want: Vec<(std::net::IpAddr, u32)> = vs
                .real_servers
                .iter()
                .filter(|r| r.method.as_ref().is_none_or(|(m, _)| *m == Method::Dr) && r.ip.is_ipv4() == ip.is_ipv4())
                .map(|r| (r.ip, r.weight.or(vs.weight).unwrap_or(1)))
                .collect();
            let got: Vec<_> = svc.real_servers.iter().map(|r| (r.address, r.weight)).collect();
            if got != want {
                failures.push(format!("{name}: {}: real servers {got:?} instead of {want:?}", vs.at));
            }
            if let (Some(first), Some(hc)) = (vs.real_servers.first().and_then(|r| r.checkers.first()), &svc.health_check) {
                let t = first.timing.under(&vs.real_servers[0].timing.under(&vs.timing));
                let interval = t.delay_loop.unwrap_or(Duration::from_secs(60));
                if hc.interval != interval {
                    failures.push(format!("{name}: {}: check interval {:?} instead of {interval:?}", vs.at, hc.interval));
                }
                if hc.retries != t.retry.unwrap_or(first.kind.default_retry()) {
                    failures.push(format!("{name}: {}: check retries {} instead of keepalived's", vs.at, hc.retries));
                }
            }
        }
        summary.push(format!(
            "{name}: {} DR virtual server(s), {} service(s) written, {} report(s)",
            dr,
            config.as_ref().map_or(0, |c| c.services.len()),
            imported.reports.len()
        ));
    }
    eprintln!("{}", summary.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn verdict_text(dir: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(dir.join("KEEPALIVED-VERDICTS.md")).unwrap_or_default();
    let start = text.find(&format!("## {name}")).unwrap_or(0);
    let end = text[start + 3..].find("\n## ").map_or(text.len(), |e| start + 3 + e);
    text[start..end].to_string()
}
