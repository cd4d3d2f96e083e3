//! The agent benchmark's report: the tables, the targets met or not, as text and Markdown.

use super::*;

pub(super) fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

pub(super) fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / f64::from(1 << 20))
}

pub(super) fn count(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n.is_multiple_of(1_000_000) => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n.is_multiple_of(1_000) => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

pub(super) fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

/// One target: what it asks, what was measured, whether it holds.
struct Target {
    what: String,
    limit: String,
    measured: String,
    met: bool,
}

/// A table as rows of cells, the first row the header.
type Table = Vec<Vec<String>>;

impl AgentReport {
    fn targets(&self) -> Vec<Target> {
        let mut out = Vec::new();
        if let Some(r) = self.polls.iter().find(|r| r.flows == TARGET_FLOWS) {
            out.push(Target {
                what: format!(
                    "whole poll of {} flows (every flow grew)",
                    count(TARGET_FLOWS)
                ),
                limit: format!("≤ {} ms", TARGET_POLL.as_millis()),
                measured: format!("{} ms", ms(r.poll_all_grew)),
                met: r.poll_all_grew <= TARGET_POLL,
            });
            let overhead = enrich_overhead(r);
            out.push(Target {
                what: format!(
                    "poll of {} flows (every flow grew) with enrichment, against without",
                    count(TARGET_FLOWS)
                ),
                limit: format!("≤ +{:.0} %", TARGET_ENRICH_OVERHEAD * 100.0),
                measured: format!("{:+.1} %", overhead * 100.0),
                met: overhead <= TARGET_ENRICH_OVERHEAD,
            });
            out.push(Target {
                what: format!("resident memory with {} flows (peak)", count(TARGET_FLOWS)),
                limit: format!("≤ {} MiB", TARGET_RSS >> 20),
                measured: format!("{} MiB", mib(r.rss_peak)),
                met: r.rss_peak <= TARGET_RSS,
            });
        }
        if let Some(r) = self.renders.iter().find(|r| r.series == TARGET_SERIES) {
            out.push(Target {
                what: format!("/metrics with {} series", count(TARGET_SERIES)),
                limit: format!("≤ {} ms", TARGET_RENDER.as_millis()),
                measured: format!("{} ms", ms(r.render)),
                met: r.render <= TARGET_RENDER,
            });
        }
        out
    }

    fn tables(&self) -> Vec<(String, Table)> {
        let mut tables = Vec::new();
        let targets = self.targets();
        if !targets.is_empty() {
            let mut t = vec![vec![
                "target".into(),
                "limit".into(),
                "measured".into(),
                "".into(),
            ]];
            for target in targets {
                t.push(vec![
                    target.what,
                    target.limit,
                    target.measured,
                    verdict(target.met).into(),
                ]);
            }
            tables.push(("Targets".into(), t));
        }
        let mut t = vec![
            [
                "flows",
                "read key by key (ms)",
                "read in batches (ms)",
                "speed-up",
                "first poll (ms)",
                "poll, all grew (ms)",
                "poll, idle (ms)",
                "enriched: all grew (ms)",
                "enriched: idle (ms)",
                "enrichment's cost",
                "databases (MiB)",
                "enriched RSS growth (MiB)",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for r in &self.polls {
            t.push(vec![
                count(r.flows),
                ms(r.per_key),
                ms(r.batch),
                format!(
                    "{:.1}x",
                    r.per_key.as_secs_f64() / r.batch.as_secs_f64().max(1e-9)
                ),
                ms(r.first_poll),
                ms(r.poll_all_grew),
                ms(r.poll_idle),
                ms(r.poll_all_grew_enriched),
                ms(r.poll_idle_enriched),
                format!("{:+.1} %", enrich_overhead(r) * 100.0),
                mib(r.enrich_db_bytes),
                mib(r.enrich_rss_growth),
            ]);
        }
        tables.push((
            "Polls (median; a poll reads the maps in batches and settles the ledger)".into(),
            t,
        ));
        let mut t = vec![
            [
                "flows",
                "RSS before (MiB)",
                "RSS after polls (MiB)",
                "growth (MiB)",
                "peak with one scrape (MiB)",
                "scrape samples",
                "flow map, kernel (MiB)",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for r in &self.polls {
            t.push(vec![
                count(r.flows),
                mib(r.rss_before),
                mib(r.rss_after),
                mib(r.rss_after.saturating_sub(r.rss_before)),
                mib(r.rss_peak),
                r.scrape_samples.to_string(),
                mib(r.map_kernel_bytes),
            ]);
        }
        tables.push((
            "Memory of this process (an upper bound of the agent's)".into(),
            t,
        ));
        let mut t = vec![
            [
                "series",
                "samples",
                "render (ms)",
                "body (MiB)",
                "peak RSS growth (MiB)",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for r in &self.renders {
            t.push(vec![
                count(r.series),
                r.samples.to_string(),
                ms(r.render),
                mib(r.body_bytes as u64),
                mib(r.rss_peak_growth),
            ]);
        }
        tables.push(("/metrics (median)".into(), t));
        tables
    }

    fn preamble(&self) -> String {
        format!(
            "Agent benchmark: {} build, kernel {}, {} possible / {} online CPUs, median of {} \
             runs, flows over {} devices in both directions.",
            self.profile, self.kernel, self.cpus.0, self.cpus.1, self.repetitions, DEVICES
        )
    }

    /// The report as markdown tables.
    pub fn markdown(&self) -> String {
        let mut out = format!("{}\n", self.preamble());
        for (title, table) in self.tables() {
            let _ = write!(out, "\n#### {title}\n\n");
            for (i, row) in table.iter().enumerate() {
                let _ = writeln!(out, "| {} |", row.join(" | "));
                if i == 0 {
                    let rule: Vec<&str> = (0..row.len())
                        .map(|c| if c == 0 { "---" } else { "---:" })
                        .collect();
                    let _ = writeln!(out, "| {} |", rule.join(" | "));
                }
            }
        }
        out
    }

    /// The report as aligned plain-text tables.
    pub fn text(&self) -> String {
        let mut out = format!("{}\n", self.preamble());
        for (title, table) in self.tables() {
            let _ = write!(out, "\n{title}\n");
            let columns = table.iter().map(Vec::len).max().unwrap_or(0);
            let widths: Vec<usize> = (0..columns)
                .map(|c| {
                    table
                        .iter()
                        .filter_map(|r| r.get(c))
                        .map(|s| s.chars().count())
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            for row in &table {
                let cells: Vec<String> = row
                    .iter()
                    .enumerate()
                    .map(|(c, s)| {
                        if c == 0 {
                            format!("{s:<w$}", w = widths[c])
                        } else {
                            format!("{s:>w$}", w = widths[c])
                        }
                    })
                    .collect();
                let _ = writeln!(out, "  {}", cells.join("  ").trim_end());
            }
        }
        out
    }
}

/// Enrichment's cost may add at most this share to a poll where every flow grew.
const TARGET_ENRICH_OVERHEAD: f64 = 0.10;

/// What enrichment adds to a poll where every flow grew, as a share of the plain poll.
fn enrich_overhead(r: &PollRow) -> f64 {
    r.poll_all_grew_enriched.as_secs_f64() / r.poll_all_grew.as_secs_f64().max(1e-9) - 1.0
}
