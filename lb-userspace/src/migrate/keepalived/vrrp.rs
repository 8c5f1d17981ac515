//! `--vrrp-out`: the part of keepalived.conf that stays with keepalived, run VRRP-only
//! (`keepalived --vrrp`): everything but the virtual servers, their groups, the SSL block
//! and the IPVS globals, which drlb now owns.

use super::lvs::{LVS_BLOCKS, LVS_GLOBALS};
use super::report::{Reports, Severity};
use super::tree::Node;

/// keepalived.conf text for `keepalived --vrrp`; `header` lines become comments on top.
pub fn to_conf(tree: &[Node], header: &[String], reports: &mut Reports) -> String {
    let mut out = String::new();
    for h in header {
        out.push_str(&format!("# {h}\n"));
    }
    for node in tree {
        if LVS_BLOCKS.contains(&node.keyword.as_str()) || node.keyword.is_empty() {
            continue;
        }
        write(node, 0, &mut out, reports, node.keyword == "global_defs");
    }
    out
}

fn write(node: &Node, depth: usize, out: &mut String, reports: &mut Reports, in_globals: bool) {
    let indent = "    ".repeat(depth);
    out.push_str(&indent);
    out.push_str(&node.text);
    match &node.block {
        None => out.push('\n'),
        Some(children) => {
            out.push_str(" {\n");
            for c in children {
                if depth == 0 && in_globals && LVS_GLOBALS.contains(&c.keyword.as_str()) {
                    continue;
                }
                if depth == 0 && node.keyword == "vrrp_instance" && c.keyword == "lvs_sync_daemon_interface" {
                    reports.add(
                        Severity::Note,
                        &c.at,
                        "lvs_sync_daemon_interface",
                        "deprecated IPVS sync setting; drlb runs connection sync itself",
                        "left out of --vrrp-out; set director.sync in drlb's YAML",
                    );
                    continue;
                }
                write(c, depth + 1, out, reports, false);
            }
            out.push_str(&indent);
            out.push_str("}\n");
        }
    }
}
