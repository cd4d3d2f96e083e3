//! The agent benchmark at its smallest: every measurement runs, the batch read and the
//! key-by-key read return the same flows (checked inside `run`), and the report prints.

use egress_lab::bench::agent::{AgentBenchOptions, run};

#[test]
fn quick_agent_bench_measures_everything() {
    let report = run(&AgentBenchOptions::quick());
    let text = report.text();
    println!("{text}");
    assert!(!report.polls.is_empty() && !report.renders.is_empty());
    for r in &report.polls {
        for (what, t) in [
            ("read key by key", r.per_key),
            ("read in batches", r.batch),
            ("first poll", r.first_poll),
            ("poll, all grew", r.poll_all_grew),
            ("poll, idle", r.poll_idle),
        ] {
            assert!(!t.is_zero(), "{} flows: {what} took no time", r.flows);
        }
        assert!(r.rss_after > 0 && r.rss_peak >= r.rss_after, "{r:?}");
        assert!(r.scrape_samples > r.flows, "{r:?}");
    }
    for r in &report.renders {
        assert!(
            !r.render.is_zero(),
            "{} series: render took no time",
            r.series
        );
        assert!(r.samples > 0 && r.body_bytes > 0, "{r:?}");
    }
    let markdown = report.markdown();
    assert!(markdown.contains("| flows |"), "{markdown}");
}
