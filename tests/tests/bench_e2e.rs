//! The end-to-end bench in its quick form: every variant runs, forwards packets, and shows up
//! in the report. Needs root and the agent binary (`EGRESS_MONITOR_BIN`), like the lab tests.

use egress_lab::bench::e2e::{E2eOptions, Variant, Workload, run};

#[test]
fn quick_bench_measures_every_variant() {
    let report = run(&E2eOptions::quick());
    let markdown = report.markdown();
    for workload in Workload::ALL {
        for variant in Variant::ALL {
            let summary = report.summary(workload, variant);
            assert!(
                summary.packets > 0,
                "{} forwarded no packets under {}:\n{}",
                workload.name(),
                variant.name(),
                report.text()
            );
            assert!(
                summary.lab_ns.is_finite() && summary.lab_ns > 0.0,
                "{} under {}: no CPU time measured:\n{}",
                workload.name(),
                variant.name(),
                report.text()
            );
        }
    }
    for variant in Variant::ALL {
        assert!(
            markdown.contains(variant.name()),
            "the markdown does not name {}:\n{markdown}",
            variant.name()
        );
    }
    assert!(
        report.bpf.iter().any(|b| b
            .programs
            .iter()
            .any(|p| p.name == "lan_ingress" && p.run_cnt > 0)),
        "the BPF statistics show no run of lan_ingress:\n{}",
        report.text()
    );
    println!("{}", report.text());
}
