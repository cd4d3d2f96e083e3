//! The kernel programs' own time: the kernel's BPF run-time statistics (`BPF_ENABLE_STATS`),
//! the ids of the agent's programs on the ports of `br-lan`, and their counters from bpftool.

use std::collections::HashMap;
use std::os::fd::OwnedFd;

use serde_json::Value;

use super::ProgramStats;
use crate::netns::{exec_ok, run_in};

/// The kernel programs whose statistics the bench reads.
pub(super) const PROGRAMS: [&str; 2] = ["lan_ingress", "lan_egress"];

/// Turns the kernel's BPF run-time statistics on for as long as the returned descriptor is
/// open (`BPF_ENABLE_STATS`): unlike the `kernel.bpf_stats_enabled` sysctl, nothing is left
/// switched on if the bench dies, and other users of the sysctl do not turn it off under us.
pub(super) fn enable_bpf_stats() -> OwnedFd {
    aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .unwrap_or_else(|e| panic!("BPF_ENABLE_STATS failed: {e}"))
}

/// The ids of the programs attached to `device` (a port of br-lan) in namespace `router`, by
/// name: TCX links (asked from the kernel) and, if the agent fell back to them, clsact
/// filters. bpftool 7.1 cannot list TCX attachments, nor (as built here) the processes that hold a program.
pub(super) fn attached_program_ids(router: &str, device: &str) -> HashMap<String, u32> {
    use aya::programs::{SchedClassifier, TcAttachType};
    let mut ids: HashMap<String, u32> = run_in(router, || {
        [TcAttachType::Ingress, TcAttachType::Egress]
            .into_iter()
            .flat_map(|hook| {
                SchedClassifier::query_tcx(device, hook)
                    .map(|(_, programs)| programs)
                    .unwrap_or_default()
            })
            .filter_map(|p| Some((p.name_as_str()?.to_owned(), p.id())))
            .collect()
    });
    for hook in ["ingress", "egress"] {
        let shown = exec_ok(router, "tc", &["filter", "show", "dev", device, hook]);
        ids.extend(parse_tc_filter_ids(&shown));
    }
    ids.retain(|name, _| PROGRAMS.contains(&name.as_str()));
    ids
}

/// `(name, id)` of the BPF filters in `tc filter show` output (`... name lan_ingress ... id 7`).
fn parse_tc_filter_ids(shown: &str) -> Vec<(String, u32)> {
    shown
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let after = |key: &str| {
                words
                    .windows(2)
                    .find(|w| w[0] == key)
                    .map(|w| w[1].to_owned())
            };
            // The filter's name comes after `bpf` (the object and section) and again as `name`.
            let name = after("name")?;
            let id = after("id")?.parse().ok()?;
            Some((name, id))
        })
        .collect()
}

/// `run_time_ns` and `run_cnt` of the programs `ids` (name to id), from `bpftool prog show`.
pub(super) fn program_stats(ids: &HashMap<String, u32>) -> HashMap<String, (u64, u64)> {
    let json = exec_ok_host("bpftool", &["prog", "show", "--json"]);
    parse_program_stats(&json, ids)
}

/// Each of [`PROGRAMS`]' time and runs between two [`program_stats`] readings; panics if one is
/// missing from either.
pub(super) fn stats_between(
    ids: &HashMap<String, u32>,
    before: &HashMap<String, (u64, u64)>,
    after: &HashMap<String, (u64, u64)>,
) -> Vec<ProgramStats> {
    PROGRAMS
        .iter()
        .map(|&name| {
            let get = |m: &HashMap<String, (u64, u64)>| {
                m.get(name)
                    .copied()
                    .unwrap_or_else(|| panic!("bpftool does not show program {name} ({ids:?})"))
            };
            let (t0, c0) = get(before);
            let (t1, c1) = get(after);
            ProgramStats {
                name: name.to_owned(),
                run_time_ns: t1.saturating_sub(t0),
                run_cnt: c1.saturating_sub(c0),
            }
        })
        .collect()
}

fn parse_program_stats(json: &str, ids: &HashMap<String, u32>) -> HashMap<String, (u64, u64)> {
    let doc: Value = serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("bpftool printed invalid JSON ({e}): {json}"));
    let programs = doc
        .as_array()
        .unwrap_or_else(|| panic!("bpftool printed no array: {json}"));
    ids.iter()
        .filter_map(|(name, &id)| {
            let p = programs.iter().find(|p| p["id"] == id)?;
            // bpftool leaves both fields out while run_time_ns is 0.
            let field = |k: &str| p[k].as_u64().unwrap_or(0);
            Some((name.clone(), (field("run_time_ns"), field("run_cnt"))))
        })
        .collect()
}

/// Runs a tool in this process's own namespace (bpftool: programs are not per namespace).
fn exec_ok_host(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    assert!(
        out.status.success(),
        "`{program} {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bpftool_programs_by_id() {
        let json = r#"[
            {"id": 10, "type": "sched_cls", "name": "lan_ingress", "run_time_ns": 5000,
             "run_cnt": 100},
            {"id": 11, "type": "sched_cls", "name": "lan_egress"},
            {"id": 12, "type": "sched_cls", "name": "lan_ingress", "run_time_ns": 9,
             "run_cnt": 1}
        ]"#;
        let ids = HashMap::from([
            ("lan_ingress".to_owned(), 10),
            ("lan_egress".to_owned(), 11),
        ]);
        let stats = parse_program_stats(json, &ids);
        assert_eq!(stats.len(), 2);
        assert_eq!(stats["lan_ingress"], (5000, 100));
        assert_eq!(stats["lan_egress"], (0, 0));
    }

    #[test]
    fn parses_tc_filter_ids() {
        let shown = "filter protocol all pref 49152 bpf chain 0 \n\
                     filter protocol all pref 49152 bpf chain 0 handle 0x1 lan_ingress \
                     direct-action not_in_hw id 2372 name lan_ingress tag 250959fd50197de9 jited\n";
        assert_eq!(
            parse_tc_filter_ids(shown),
            [("lan_ingress".to_owned(), 2372)]
        );
    }
}
