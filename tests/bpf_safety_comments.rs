//! The BPF crate writes to memory other CPUs and the controller share: every `unsafe` block
//! there says why it is sound (`// SAFETY:` on a line just above it, as
//! `clippy::undocumented_unsafe_blocks`, denied in each program, demands — `cargo xtask lint`
//! runs clippy itself). This test holds the rule without a nightly clippy.

use std::path::Path;

#[test]
fn every_unsafe_block_in_the_bpf_crate_has_a_safety_comment() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../lb-ebpf/src");
    let mut missing = Vec::new();
    let mut blocks = 0;
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if !(code.contains("unsafe {") || code.contains("unsafe impl")) || code.contains("unsafe fn") {
                continue;
            }
            blocks += 1;
            // The comment sits on a line above, within the statement's preceding lines.
            let documented = lines[i.saturating_sub(6)..=i].iter().any(|l| l.contains("// SAFETY:"));
            if !documented {
                missing.push(format!("{}:{}: {}", path.display(), i + 1, line.trim()));
            }
        }
    }
    println!("{blocks} unsafe blocks in lb-ebpf, each with a SAFETY comment");
    assert!(blocks > 10, "found only {blocks} unsafe blocks: is the path right?");
    assert!(missing.is_empty(), "unsafe without a `// SAFETY:` comment:\n{}", missing.join("\n"));
}
