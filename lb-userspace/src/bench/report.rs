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
    match target_of(key) {
        Some((t, higher_is_better)) if (r >= t) == higher_is_better || r == t => "meets target",
        Some(_) => "misses target",
        None => "",
    }
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
        let target = r.targets.get(k).or_else(|| match k.as_str() {
            k if k.starts_with("syn_wlc") && k.ends_with("_v6") => r.targets.get("syn_wlc16_v6"),
            k if k.starts_with("syn_wlc") => r.targets.get("syn_wlc16"),
            _ => None,
        });
        let _ = writeln!(o, "| {k} | {v:.2} | {} | {} |", target.map(String::as_str).unwrap_or(""), verdict(k, v));
    }
    let _ = writeln!(
        o,
        "\nFor reference, Katran's XDP balancer measured the same way on this machine kind: {} × floor (b).\n",
        KATRAN.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
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
            "\n## New flows: what keeping state costs\n\n\
             Floor (c) is floor (b) plus what any balancer that records connections in a kernel LRU hash does for \
             a new flow: one lookup of the 5-tuple (a miss) and one insert, into a table of the same size, over the \
             same SYNs. It bounds a SYN's cost from below for drlb and Katran alike. Floor (d) is floor (b) plus the \
             least any balancer that keeps per-flow state does: one 64-byte entry at the flow's hash, in a table as \
             large as drlb's half-open table, read and written — no lookup of an existing connection, so below what \
             an IPVS-compatible SYN can cost.\n\n\
             | scenario | size | floor (b) ns | floor (d) ns | floor (d) × floor (b) | floor (c) ns | floor (c) × floor (b) | drlb ns | drlb − floor (c) ns |\n\
             | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        );
        for f in new_flow {
            let c = f.floor_insert.expect("filtered");
            let d = f.floor_record.expect("run with floor (c)");
            let _ = writeln!(
                o,
                "| {} | {} | {:.1} | {:.1} / {:.1} / {:.1} | {:.2} | {:.1} / {:.1} / {:.1} | {:.2} | {:.1} | {:.1} |",
                f.name,
                f.size,
                f.floor_swap.median,
                d.min,
                d.median,
                d.max,
                d.median / f.floor_swap.median,
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
        if let Some(f) = &l.flood {
            let _ = writeln!(
                o,
                "\n### Under a SYN flood\n\nThe same established frames, while the second core sends drlb SYNs from a new \
                 spoofed source each, as fast as its generator runs. Every SYN is a new connection: scheduled, counted, \
                 written to the half-open table and forwarded.\n\n| | forwarded Mpps (min / median / max) |\n| --- | --- |\n\
                 | established, no flood | {:.2} / {:.2} / {:.2} |\n| established, during the flood | {:.2} / {:.2} / {:.2} |\n\
                 | SYNs forwarded during the flood | {:.2} / {:.2} / {:.2} |\n\nEstablished traffic during the flood: {:.2} of its rate without.",
                l.drlb_mpps.min,
                l.drlb_mpps.median,
                l.drlb_mpps.max,
                f.established_mpps.min,
                f.established_mpps.median,
                f.established_mpps.max,
                f.syn_mpps.min,
                f.syn_mpps.median,
                f.syn_mpps.max,
                f.established_mpps.median / l.drlb_mpps.median
            );
        }
    }
    o
}

/// Katran's XDP balancer measured the same way on this machine kind (× floor (b)).
const KATRAN: [(&str, f64); 3] = [("established", 5.7), ("syn_wlc16", 11.5), ("non_vip", 2.9)];

/// The figure's target, and whether higher is better.
fn target_of(key: &str) -> Option<(f64, bool)> {
    // IPv6's figures have IPv4's targets.
    match key.strip_suffix("_v6").unwrap_or(key) {
        "established" => Some((2.0, false)),
        "non_vip" => Some((1.5, false)),
        k if k.starts_with("syn_wlc") => Some((4.0, false)),
        "live" => Some((0.8, true)),
        _ => None,
    }
}

/// Chart geometry: width, bar height, gap between bars, left margin (labels), right margin.
const CHART: (f64, f64, f64, f64, f64) = (760.0, 22.0, 16.0, 215.0, 90.0);

/// One panel of the chart: a title, an axis with `ticks`, and a bar per figure with its
/// target line and, where there is one, Katran's figure. `x` maps a value to its position.
fn panel(o: &mut String, r: &Results, top: f64, title: &str, ticks: &[(f64, String)], keys: &[&String], x: &dyn Fn(f64) -> f64) {
    let (_, bar, gap, left, _) = CHART;
    let row = bar + gap;
    let bottom = top + keys.len() as f64 * row;
    let _ = writeln!(o, "<text x=\"10\" y=\"{:.0}\" font-size=\"13\">{title}</text>", top - 18.0);
    for (v, text) in ticks {
        let _ = writeln!(
            o,
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1:.0}\" y2=\"{bottom:.0}\" stroke=\"#ddd\"/><text x=\"{0:.1}\" y=\"{2:.0}\" text-anchor=\"middle\" fill=\"#666\">{text}</text>",
            x(*v),
            top - 4.0,
            bottom + 14.0
        );
    }
    for (i, k) in keys.iter().enumerate() {
        let v = r.ratios[*k];
        let y = top + i as f64 * row;
        let target = target_of(k);
        let color = match verdict(k, v) {
            "meets target" => "#4a9a5a",
            "misses target" => "#c0504d",
            _ => "#9a9a9a",
        };
        let label = match k.as_str() {
            "live" => "live (of MAC swap)".to_string(),
            "live_syn_flood" => "under SYN flood (of no flood)".to_string(),
            k if target.is_none() => format!("{k} (no target)"),
            k => k.to_string(),
        };
        let _ = writeln!(
            o,
            "<text x=\"10\" y=\"{0:.0}\">{label}</text><rect x=\"{left}\" y=\"{y:.0}\" width=\"{1:.1}\" height=\"{bar}\" fill=\"{color}\"/><text x=\"{2:.1}\" y=\"{0:.0}\">{v:.2}</text>",
            y + bar * 0.7,
            (x(v) - left).max(1.0),
            x(v) + 6.0
        );
        if let Some((t, _)) = target {
            let _ = writeln!(o, "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1:.0}\" y2=\"{2:.0}\" stroke=\"black\" stroke-width=\"2\" stroke-dasharray=\"4 3\"/>", x(t), y - 3.0, y + bar + 3.0);
        }
        if let Some((_, kv)) = KATRAN.iter().find(|(name, _)| *name == k.as_str()) {
            let _ = writeln!(o, "<text x=\"{:.1}\" y=\"{:.0}\" text-anchor=\"middle\" font-size=\"14\">◆</text>", x(*kv), y + bar * 0.75);
        }
    }
}

/// The chart: costs (× floor (b), lower is better) on a logarithmic axis, so no bar is cut
/// off, each with its target and Katran's figure where there is one; then the live
/// fractions (higher is better) on an axis of their own.
pub fn svg(r: &Results) -> String {
    let mut keys: Vec<&String> = r.ratios.keys().collect();
    keys.sort();
    let (costs, fractions): (Vec<&String>, Vec<&String>) = keys.into_iter().partition(|k| !k.starts_with("live"));
    let (w, bar, gap, left, right) = CHART;
    let plot = w - left - right;
    let (top1, space) = (64.0, 70.0);
    let top2 = top1 + costs.len() as f64 * (bar + gap) + space;
    let h = top2 + fractions.len() as f64 * (bar + gap) + 50.0;
    let mut o = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"22\" font-size=\"15\">drlb against its targets: green meets, red misses; dashed = target, ◆ = Katran</text>\n"
    );
    // Costs: 1x .. 32x, logarithmic; fractions: 0 .. 1.2, linear.
    let cost_ticks: Vec<(f64, String)> = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0].iter().map(|t| (*t, format!("{t}×"))).collect();
    panel(&mut o, r, top1, "Cost per packet, × floor (b) (log scale, lower is better)", &cost_ticks, &costs, &|v: f64| {
        left + (v.clamp(1.0, 32.0).ln() / 32f64.ln()) * plot
    });
    let fraction_ticks: Vec<(f64, String)> = (0..=6).map(|i| (i as f64 * 0.2, format!("{:.1}", i as f64 * 0.2))).collect();
    panel(&mut o, r, top2, "Live forwarding, fraction of a rate (higher is better)", &fraction_ticks, &fractions, &|v: f64| {
        left + (v.clamp(0.0, 1.2) / 1.2) * plot
    });
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

/// Writes `<dir>/<date>-<arch>-controller.md` and `.json`; returns the Markdown path.
pub fn write_controller(dir: &Path, m: &Machine, r: &super::controller::ControllerResult) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let base = dir.join(format!("{}-{}-controller", m.date, m.arch));
    let md = base.with_extension("md");
    let mut text = format!("# drlb controller benchmark, {} ({})\n\n", m.date, m.arch);
    text += &format!("| machine | kernel | CPU | arch | commit |\n| --- | --- | --- | --- | --- |\n| {} | {} | {} | {} | {} |\n\n", m.host, m.kernel, m.cpu, m.arch, m.commit);
    text += &super::controller::markdown(r);
    std::fs::write(&md, text)?;
    #[derive(Serialize)]
    struct Out<'a> {
        machine: &'a Machine,
        controller: &'a super::controller::ControllerResult,
    }
    std::fs::write(base.with_extension("json"), serde_json::to_string_pretty(&Out { machine: m, controller: r })?)?;
    Ok(md)
}
