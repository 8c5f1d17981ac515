//! The benchmark's Markdown report, SVG chart and JSON.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::Results;

/// Where and on what the figures were taken.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub date: String,
    pub host: String,
    pub kernel: String,
    pub cpu: String,
    pub arch: String,
    pub commit: String,
}

impl Machine {
    pub fn probe() -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default().trim().to_string();
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find(|l| l.starts_with("model name") || l.starts_with("CPU part") || l.starts_with("Hardware"))
            .and_then(|l| l.split_once(':').map(|(_, v)| v.trim().to_string()))
            .unwrap_or_else(|| "unknown".into());
        let cores = read("/proc/cpuinfo").lines().filter(|l| l.starts_with("processor")).count();
        let date = std::process::Command::new("date")
            .arg("+%Y-%m-%d")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        Machine {
            date,
            host: read("/proc/sys/kernel/hostname"),
            kernel: read("/proc/sys/kernel/osrelease"),
            cpu: format!("{cpu} ({cores} cores)"),
            arch: std::env::consts::ARCH.to_string(),
            commit: env!("DRLB_COMMIT").to_string(),
        }
    }
}

/// Everything `--json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Report<'a> {
    pub machine: &'a Machine,
    pub ratios: &'a std::collections::HashMap<String, f64>,
    pub targets: &'a std::collections::HashMap<String, String>,
    pub results: &'a Results,
}

fn verdict(key: &str, r: f64) -> &'static str {
    let ok = match key {
        "established" => r <= 2.0,
        k if k.starts_with("syn_wlc") => r <= 4.0,
        "non_vip" => r <= 1.5,
        "live" => r >= 0.8,
        _ => return "",
    };
    if ok { "meets target" } else { "misses target" }
}

pub fn markdown(m: &Machine, r: &Results) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# drlb benchmark, {} ({})\n", m.date, m.arch);
    let _ = writeln!(o, "| machine | kernel | CPU | arch | commit |\n| --- | --- | --- | --- | --- |");
    let _ = writeln!(o, "| {} | {} | {} | {} | {} |\n", m.host, m.kernel, m.cpu, m.arch, m.commit);
    if r.sync {
        let _ = writeln!(o, "Connection sync on: the program reported every new connection and state change to its ring.\n");
    }
    let _ = writeln!(
        o,
        "Replayed through the real dataplane object with BPF_PROG_TEST_RUN, maps filled as `drlb run` fills them; \
         floors (a) XDP_PASS and (b) MAC swap + XDP_TX measured in the same run over the same packets. \
         ns per packet, min / median / max over the runs; ratio = drlb median / floor (b) median.\n"
    );
    let _ = writeln!(o, "## Ratios\n\n| figure | ratio | target | |\n| --- | --- | --- | --- |");
    let mut keys: Vec<&String> = r.ratios.keys().collect();
    keys.sort();
    for k in keys {
        let v = r.ratios[k];
        let target = r.targets.get(k).or_else(|| if k.starts_with("syn_wlc") { r.targets.get("syn_wlc16") } else { None });
        let _ = writeln!(o, "| {k} | {v:.2} | {} | {} |", target.map(String::as_str).unwrap_or(""), verdict(k, v));
    }
    let _ = writeln!(
        o,
        "\nFor reference, Katran's XDP balancer measured the same way on this machine kind: established 5.7, SYN 11.5, non-VIP 2.9 × floor (b).\n"
    );
    let _ = writeln!(
        o,
        "## Figures\n\n| scenario | mode | size | packets/run | drlb ns/pkt | Mpps/core | floor (a) ns | floor (b) ns | × floor (b) |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for f in &r.figures {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {:.1} / {:.1} / {:.1} | {:.2} | {:.1} / {:.1} / {:.1} | {:.1} / {:.1} / {:.1} | {:.2} |",
            f.name,
            f.mode,
            f.size,
            f.packets_per_run,
            f.drlb.min,
            f.drlb.median,
            f.drlb.max,
            f.mpps(),
            f.floor_pass.min,
            f.floor_pass.median,
            f.floor_pass.max,
            f.floor_swap.min,
            f.floor_swap.median,
            f.floor_swap.max,
            f.ratio()
        );
    }
    let new_flow: Vec<&super::Figure> = r.figures.iter().filter(|f| f.floor_insert.is_some()).collect();
    if !new_flow.is_empty() {
        let _ = writeln!(
            o,
            "\n## New flows: what the connection-table insert alone costs\n\n\
             Floor (c) is floor (b) plus what any balancer that records connections in a kernel LRU hash does for \
             a new flow: one lookup of the 5-tuple (a miss) and one insert, into a table of the same size, over the \
             same SYNs. It bounds a SYN's cost from below for drlb and Katran alike.\n\n\
             | scenario | size | floor (b) ns | floor (c) ns | floor (c) × floor (b) | drlb ns | drlb − floor (c) ns |\n\
             | --- | --- | --- | --- | --- | --- | --- |"
        );
        for f in new_flow {
            let c = f.floor_insert.expect("filtered");
            let _ = writeln!(
                o,
                "| {} | {} | {:.1} | {:.1} / {:.1} / {:.1} | {:.2} | {:.1} | {:.1} |",
                f.name,
                f.size,
                f.floor_swap.median,
                c.min,
                c.median,
                c.max,
                c.median / f.floor_swap.median,
                f.drlb.median,
                f.drlb.median - c.median
            );
        }
    }
    if let Some(l) = &r.live {
        let _ = writeln!(
            o,
            "\n## Live (veth pair, native XDP, one core)\n\n| program | forwarded Mpps (min / median / max) |\n| --- | --- |\n\
             | drlb | {:.2} / {:.2} / {:.2} |\n| bare MAC swap | {:.2} / {:.2} / {:.2} |\n\nRatio: {:.2} ({} frames per run).",
            l.drlb_mpps.min,
            l.drlb_mpps.median,
            l.drlb_mpps.max,
            l.swap_mpps.min,
            l.swap_mpps.median,
            l.swap_mpps.max,
            l.ratio(),
            l.frames_per_run
        );
    }
    o
}

/// A bar chart of the ratios against their targets.
pub fn svg(r: &Results) -> String {
    let mut keys: Vec<&String> = r.ratios.keys().collect();
    keys.sort();
    let (w, bar, gap, left, top) = (640.0, 36.0, 24.0, 130.0, 40.0);
    let h = top + keys.len() as f64 * (bar + gap) + 30.0;
    let scale = (w - left - 40.0) / 4.0; // 0 .. 4x
    let mut o = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"13\">\n\
         <text x=\"10\" y=\"22\" font-size=\"15\">drlb: ratio to the floor (live: fraction of the MAC-swap rate)</text>\n"
    );
    for (i, k) in keys.iter().enumerate() {
        let v = r.ratios[*k];
        let y = top + i as f64 * (bar + gap);
        let target = match k.as_str() {
            "established" => 2.0,
            "non_vip" => 1.5,
            "live" => 0.8,
            _ => 4.0,
        };
        let ok = verdict(k, v) == "meets target";
        let _ = writeln!(
            o,
            "<text x=\"10\" y=\"{:.0}\">{k}</text><rect x=\"{left}\" y=\"{y:.0}\" width=\"{:.1}\" height=\"{bar}\" fill=\"{}\"/>\
             <text x=\"{:.1}\" y=\"{:.0}\">{v:.2}</text><line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{:.0}\" y2=\"{:.0}\" stroke=\"black\" stroke-dasharray=\"4 3\"/>",
            y + bar * 0.65,
            (v.min(4.0) * scale).max(1.0),
            if ok { "#4a9a5a" } else { "#c0504d" },
            left + (v.min(4.0) * scale) + 6.0,
            y + bar * 0.65,
            left + target * scale,
            left + target * scale,
            y - 4.0,
            y + bar + 4.0
        );
    }
    o += "</svg>\n";
    o
}

/// Writes `<dir>/<date>-<arch>[-sync].md`, `.svg` and `.json`; returns the Markdown path.
pub fn write(dir: &Path, m: &Machine, r: &Results) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = format!("{}-{}{}", m.date, m.arch, if r.sync { "-sync" } else { "" });
    let base = dir.join(&name);
    let md = base.with_extension("md");
    let mut text = markdown(m, r);
    text += &format!("\n![ratios]({name}.svg)\n");
    std::fs::write(&md, text)?;
    std::fs::write(base.with_extension("svg"), svg(r))?;
    let json = serde_json::to_string_pretty(&Report { machine: m, ratios: &r.ratios, targets: &r.targets, results: r })?;
    std::fs::write(base.with_extension("json"), json)?;
    Ok(md)
}
