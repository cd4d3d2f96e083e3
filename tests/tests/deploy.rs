//! The deployment files against the tools that read them and against the real agent:
//! `deploy/prometheus` (alerting rules, their unit tests, the example configuration) must pass
//! promtool, the Grafana dashboard must be well formed with valid queries, and every metric
//! either of them uses must be one the agent really exports, with the labels the rules' unit
//! tests give it. A renamed metric or label then fails here rather than leaving an alert that
//! can never fire or an empty panel.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::ErrorKind,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use egress_lab::{
    Lab, OUTSIDE_RESOLVER_V4, RecordType, SERVERS_V4, UDP_SINK_PORT,
    agent::{Agent, Scrape},
    dns_lookup, udp_send, wait_until,
};
use serde_json::Value;

const ALERTS: &str = "deploy/prometheus/alerts.yml";
const ALERTS_TEST: &str = "deploy/prometheus/alerts_test.yml";
const PROMETHEUS_CONFIG: &str = "deploy/prometheus/prometheus.yml";
const DASHBOARD: &str = "deploy/grafana/egress-monitor.json";

/// A path in the repository.
fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

fn read(relative: &str) -> String {
    let path = repo_path(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Runs promtool with `args`; (success, stdout and stderr). Panics if promtool is missing:
/// these tests must not pass on a machine that cannot run them.
fn promtool(args: &[&str]) -> (bool, String) {
    match Command::new("promtool").args(args).output() {
        Ok(out) => (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ),
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "promtool is not installed (Debian package prometheus, /usr/bin/promtool): \
             `cargo xtask setup` installs it"
        ),
        Err(e) => panic!("cannot run promtool: {e}"),
    }
}

/// Runs promtool on repository files and panics with its output unless it succeeds; returns
/// the output.
fn promtool_ok(args: &[&str]) -> String {
    let (ok, output) = promtool(args);
    assert!(ok, "promtool {} failed:\n{output}", args.join(" "));
    output
}

#[test]
fn alerting_rules_pass_promtool_and_their_unit_tests() {
    let alerts = repo_path(ALERTS);
    let checked = promtool_ok(&["check", "rules", path_str(&alerts)]);
    // Our reading of the file (for the metric names below) must see every rule promtool sees.
    let found: usize = checked
        .split("SUCCESS: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no rule count in promtool's output:\n{checked}"));
    assert_eq!(
        rule_exprs(&read(ALERTS)).len(),
        found,
        "rule_exprs() missed rules of {ALERTS}"
    );
    // promtool finds alerts.yml relative to the test file.
    let output = promtool_ok(&["test", "rules", path_str(&repo_path(ALERTS_TEST))]);
    assert!(output.contains("SUCCESS"), "{output}");
}

#[test]
fn example_prometheus_config_is_valid_and_loads_the_rules() {
    let output = promtool_ok(&["check", "config", path_str(&repo_path(PROMETHEUS_CONFIG))]);
    assert!(
        output.contains("SUCCESS: 1 rule files found"),
        "prometheus.yml does not load alerts.yml:\n{output}"
    );
}

#[test]
fn dashboard_is_well_formed_and_its_queries_are_valid_promql() {
    let dashboard = dashboard();
    assert!(
        dashboard["schemaVersion"].as_u64() >= Some(36),
        "schemaVersion {}",
        dashboard["schemaVersion"]
    );
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no template variable {name}"))
    };
    let datasource = variable("datasource");
    assert_eq!(
        (&datasource["type"], &datasource["query"]),
        (&Value::from("datasource"), &Value::from("prometheus"))
    );
    let device = variable("device");
    let device_query = device["definition"].as_str().expect("device definition");
    assert!(
        device_query.starts_with("label_values(egress_device_info")
            && device_query.ends_with(", device)"),
        "{device_query}"
    );

    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("?");
        assert!(ids.insert(panel["id"].as_u64()), "duplicate id: {title}");
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64(), grid["w"].as_u64());
        assert!(
            matches!((x, w), (Some(x), Some(w)) if w > 0 && x + w <= 24),
            "{title}: gridPos {grid}"
        );
        if panel["type"] == "row" {
            continue;
        }
        // Every query goes to the data source the user picked.
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{title}: datasource"
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}: target");
        }
    }

    // promtool parses PromQL only as part of a rules file: one recording rule per query, with
    // Grafana's variables replaced by what they stand for.
    let exprs = strings_under(&dashboard["panels"], "expr");
    assert!(exprs.len() >= 20, "only {} queries", exprs.len());
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        let expr = serde_json::to_string(&substitute_grafana_variables(expr)).expect("JSON");
        rules.push_str(&format!(
            "      - record: dashboard_query_{i}\n        expr: {expr}\n"
        ));
    }
    let path = std::env::temp_dir().join(format!(
        "egress-deploy-{}-dashboard-rules.yml",
        std::process::id()
    ));
    std::fs::write(&path, &rules).expect("write the dashboard's queries");
    let (ok, output) = promtool(&["check", "rules", path_str(&path)]);
    let _ = std::fs::remove_file(&path);
    assert!(
        ok,
        "the dashboard has invalid PromQL:\n{output}\nas rules:\n{rules}"
    );
}

/// The agent configuration that makes every family appear: a device policy that allows one
/// server only (the camera then sends to another: unexpected), devices that learn (the phone
/// and the laptop: egress_device_learning), a state directory (state writes), and public
/// resolvers (the phone's query to the outside resolver: resolver bypass), and an address
/// database (the country and AS families).
fn full_config(lab: &Lab, state_dir: &Path) -> String {
    let phone = lab.device("phone").mac_string();
    let camera = lab.device("camera").mac_string();
    let allowed = SERVERS_V4[0];
    let places = lab.scratch_dir().join("places.mmdb");
    egress_lab::mmdb::ipinfo_lite(&[(
        egress_lab::mmdb::Network::new(IpAddr::V4(SERVERS_V4[0]), 24),
        "DE",
        "AS64500",
        "Example Hosting",
    )])
    .write(&places)
    .unwrap_or_else(|e| panic!("{}: {e}", places.display()));
    let places = places.display();
    format!(
        r#"state_dir = "{state_dir}"

[enrich]
country_db = "{places}"
asn_db = "{places}"

[names]
public_resolvers = ["{OUTSIDE_RESOLVER_V4}"]

[devices]
"{phone}" = {{ name = "phone" }}
"{camera}" = {{ name = "camera", group = "cameras" }}

[policy.default]
learn = "1h"

[policy.devices."{camera}"]
allow = ["{allowed}"]
"#,
        state_dir = state_dir.display(),
    )
}

#[test]
fn every_metric_the_deploy_files_use_is_exported_by_the_agent() {
    // What the files use, and where.
    let mut wanted: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for expr in rule_exprs(&read(ALERTS)) {
        for name in agent_metric_names(&expr) {
            wanted.entry(name).or_default().insert(ALERTS);
        }
    }
    let dashboard = dashboard();
    for key in ["expr", "query", "definition"] {
        for query in strings_under(&dashboard, key) {
            for name in agent_metric_names(&query) {
                wanted.entry(name).or_default().insert(DASHBOARD);
            }
        }
    }
    // The series the rules' unit tests feed them: their labels must be the agent's.
    let test_series = input_series(&read(ALERTS_TEST));
    for (name, _) in &test_series {
        wanted.entry(name.clone()).or_default().insert(ALERTS_TEST);
    }
    assert!(
        wanted.contains_key("egress_unexpected_bytes_total")
            && wanted.contains_key("egress_monitor_poll_duration_seconds_bucket")
            && test_series.len() > 10,
        "the extraction found too little: {wanted:?}, {test_series:?}"
    );

    let lab = Lab::builder().dnsmasq(true).build();
    let _servers = lab.start_servers(0);
    let state_dir = lab.scratch_dir().join("state");
    std::fs::create_dir_all(&state_dir).expect("create the state directory");
    let agent = Agent::start(&lab, &full_config(&lab, &state_dir), &[]);
    let phone = lab.device("phone");
    let camera = lab.device("camera");
    let to = |server: usize| SocketAddr::new(IpAddr::V4(SERVERS_V4[server]), UDP_SINK_PORT);
    udp_send(&camera.ns, to(0), 100, 3);
    udp_send(&camera.ns, to(1), 100, 3);
    udp_send(&phone.ns, to(2), 100, 3);
    udp_send(&lab.device("laptop").ns, to(2), 100, 3);
    dns_lookup(
        &phone.ns,
        IpAddr::V4(OUTSIDE_RESOLVER_V4),
        "updates.vendor.example",
        RecordType::A,
        false,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // A reload, so that its metrics exist whether or not the first load sets them.
    agent.child().signal(libc::SIGHUP);

    // Some families appear only after a poll, a write or a reload: wait for all, bounded.
    let mut scrape = agent.scrape();
    wait_until(Duration::from_secs(20), || {
        scrape = agent.scrape();
        problems(&wanted, &test_series, &scrape).is_empty()
    });
    let problems = problems(&wanted, &test_series, &scrape);
    assert!(
        problems.is_empty(),
        "the deploy files use what the agent does not export:\n  {}\n\nthe agent's /metrics:\n{}\n\nits log:\n{}",
        problems.join("\n  "),
        scrape.text,
        agent.log()
    );
}

/// What the files use that `scrape` lacks: metric names (a name is found as a sample, so
/// `_bucket`, `_sum` and `_count` of a histogram too, or as a family in `# TYPE`), and the
/// label names of the unit tests' series (job and instance come from Prometheus), which must be
/// those of one of the agent's series of that name.
fn problems(
    wanted: &BTreeMap<String, BTreeSet<&str>>,
    test_series: &[(String, BTreeSet<String>)],
    scrape: &Scrape,
) -> Vec<String> {
    let mut exported: BTreeMap<&str, BTreeSet<BTreeSet<&str>>> = BTreeMap::new();
    for s in &scrape.samples {
        exported
            .entry(&s.name)
            .or_default()
            .insert(s.labels.keys().map(String::as_str).collect());
    }
    let families: BTreeSet<&str> = scrape
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let mut problems = Vec::new();
    for (name, files) in wanted {
        if !exported.contains_key(name.as_str()) && !families.contains(name.as_str()) {
            problems.push(format!("{name} (in {files:?}) is not exported"));
        }
    }
    for (name, labels) in test_series {
        // A missing family is reported above.
        let Some(shapes) = exported.get(name.as_str()) else {
            continue;
        };
        let labels: BTreeSet<&str> = labels
            .iter()
            .map(String::as_str)
            .filter(|l| !["job", "instance"].contains(l))
            .collect();
        if !shapes.contains(&labels) {
            problems.push(format!(
                "{name} in {ALERTS_TEST} has labels {labels:?}; the agent's have {shapes:?}"
            ));
        }
    }
    problems
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// Metric names in a PromQL expression that the agent itself must export: identifiers that
/// start with `egress_` or `process_`, outside string literals and comments. Names with a
/// colon are recording rules, not the agent's; `up` and `ALERTS` come from Prometheus.
fn agent_metric_names(expr: &str) -> BTreeSet<String> {
    let is_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let is_part = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                // A string: to its closing quote, over escapes (backquoted strings have none).
                while let Some(d) = chars.next() {
                    if d == '\\' && c != '`' {
                        chars.next();
                    } else if d == c {
                        break;
                    }
                }
            }
            '#' => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
            }
            // A number's digits, or its exponent, are not identifiers; a name is never
            // preceded by a digit.
            c if c.is_ascii_digit() => {
                while chars.next_if(|&d| is_part(d) || d == '.').is_some() {}
            }
            c if is_start(c) => {
                let mut ident = String::from(c);
                while let Some(d) = chars.next_if(|&d| is_part(d)) {
                    ident.push(d);
                }
                if (ident.starts_with("egress_") || ident.starts_with("process_"))
                    && !ident.contains(':')
                {
                    names.insert(ident);
                }
            }
            _ => {}
        }
    }
    names
}

/// The `expr:` values of a Prometheus rules file: inline, or a block scalar (`|`, `>`) made of
/// the lines indented deeper than the key. Enough for our files, which a test cross-checks
/// against promtool's count of rules.
fn rule_exprs(yaml: &str) -> Vec<String> {
    let indent = |line: &str| line.len() - line.trim_start().len();
    let lines: Vec<&str> = yaml.lines().collect();
    let mut exprs = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let content = line.trim_start();
        let (key_indent, content) = match content.strip_prefix("- ") {
            Some(rest) => (indent(line) + 2, rest),
            None => (indent(line), content),
        };
        let Some(value) = content.strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        if value.starts_with('|') || value.starts_with('>') {
            let block: Vec<&str> = lines[i + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || indent(l) > key_indent)
                .map(|l| l.trim())
                .collect();
            exprs.push(block.join("\n").trim().to_owned());
        } else {
            let unquoted = value
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .map(|v| v.replace("''", "'"))
                .unwrap_or_else(|| value.to_owned());
            exprs.push(unquoted);
        }
    }
    exprs
}

/// The input series of a promtool test file (`- series: 'name{labels}'`), as (name, label
/// names), for the agent's own metrics only.
fn input_series(yaml: &str) -> Vec<(String, BTreeSet<String>)> {
    let mut series = Vec::new();
    for line in yaml.lines() {
        let Some(value) = line.trim_start().strip_prefix("- series:") else {
            continue;
        };
        let selector = value.trim().trim_matches(|c| c == '\'' || c == '"');
        let sample = Scrape::parse(&format!("{selector} 0\n"))
            .samples
            .pop()
            .unwrap_or_else(|| panic!("no series in {line}"));
        if sample.name.starts_with("egress_") || sample.name.starts_with("process_") {
            series.push((sample.name, sample.labels.into_keys().collect()));
        }
    }
    series.sort();
    series.dedup();
    series
}

/// Every string value under `key`, anywhere in `value`.
fn strings_under(value: &Value, key: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match v {
                        Value::String(s) if k == key => found.push(s.clone()),
                        _ => stack.push(v),
                    }
                }
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    found
}

/// A dashboard query as Prometheus would get it: Grafana's interval variables become
/// durations, the template variables (`$device`, `${device}`, `${device:regex}`) a regex that
/// matches anything.
fn substitute_grafana_variables(expr: &str) -> String {
    let expr = expr
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h");
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr.as_str();
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let end = if after.starts_with('{') {
            after.find('}').map_or(after.len(), |e| e + 1)
        } else {
            after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len())
        };
        out.push_str(".*");
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

#[test]
fn metric_names_are_found_outside_strings_and_without_recording_rules() {
    let names = agent_metric_names(
        r#"histogram_quantile(0.99, sum by (le) (rate(egress_monitor_poll_duration_seconds_bucket{instance=~"$instance"}[5m])))
           / on (job, instance) instance:egress_monitor_scraped_10m_ago_or_restarted:group
           + time() - process_start_time_seconds < 9e2
           and ALERTS{alertname="egress_not_a_metric", x='egress_neither\'s'} # egress_in_a_comment
           or up{job=`egress_raw`} * egress_device_info"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        [
            "egress_device_info",
            "egress_monitor_poll_duration_seconds_bucket",
            "process_start_time_seconds",
        ]
    );
    // label_values() of a template variable.
    assert_eq!(
        agent_metric_names(r#"label_values(egress_device_info{instance=~"$instance"}, device)"#)
            .into_iter()
            .collect::<Vec<_>>(),
        ["egress_device_info"]
    );
}

#[test]
fn rule_exprs_reads_inline_and_block_expressions() {
    let yaml = r#"
groups:
  - name: g
    rules:
      - record: a:b
        expr: |
          sum(
            egress_a_total
          )

      - alert: Inline
        expr: egress_b == 0
        labels:
          severity: warning
      - expr: 'egress_c{x=''y''}'
        alert: Quoted
      - alert: Folded
        expr: >-
          egress_d
          > 1
        for: 5m
"#;
    assert_eq!(
        rule_exprs(yaml),
        [
            "sum(\negress_a_total\n)",
            "egress_b == 0",
            "egress_c{x='y'}",
            "egress_d\n> 1",
        ]
    );
}

#[test]
fn input_series_gives_the_agents_series_with_their_label_names() {
    let yaml = r#"
    input_series:
      - series: 'egress_x_total{job="j",instance="i",device="a b",rule="deny:cidr"}'
        values: '1x10'
      - series: 'up{job="j"}'
        values: '1'
      - series: "process_start_time_seconds"
        values: '0'
"#;
    let set = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        input_series(yaml),
        [
            (
                "egress_x_total".to_owned(),
                set(&["device", "instance", "job", "rule"])
            ),
            ("process_start_time_seconds".to_owned(), set(&[])),
        ]
    );
}

#[test]
fn grafana_variables_are_substituted() {
    assert_eq!(
        substitute_grafana_variables(
            r#"rate(x{device=~"$device",instance=~"${instance:regex}"}[$__rate_interval]) + increase(y[$__range]) + z[$__interval]"#
        ),
        r#"rate(x{device=~".*",instance=~".*"}[1m]) + increase(y[1h]) + z[1m]"#
    );
}

#[test]
fn strings_under_finds_nested_values() {
    let v: Value = serde_json::from_str(
        r#"{"panels":[{"targets":[{"expr":"a"},{"expr":"b"}]},{"panels":[{"targets":[{"expr":"c"}]}]}],
            "templating":{"list":[{"query":{"query":"d"}},{"query":"e"}]}}"#,
    )
    .unwrap();
    let mut exprs = strings_under(&v, "expr");
    exprs.sort();
    assert_eq!(exprs, ["a", "b", "c"]);
    let mut queries = strings_under(&v, "query");
    queries.sort();
    assert_eq!(queries, ["d", "e"]);
}
