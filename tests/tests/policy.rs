//! The policy on the lab's virtual router: allow lists judged on the names each device itself
//! resolved, learned baselines that survive a restart, the `baseline` commands, and reloads
//! that change the policy without losing a byte. Every figure is exact.

use std::{process::Command, time::Duration};

use egress_lab::{
    Lab, SERVERS_V4,
    agent::{Agent, agent_binary, state_dir},
    udp_ip_bytes, wait_until,
};

/// The payload of every datagram the devices send.
const PAYLOAD: usize = 500;

fn lab() -> Lab {
    Lab::builder().dhcp(true).build()
}

/// The camera's `[devices]` entry, so that commands and labels can say "camera".
fn devices(lab: &Lab) -> String {
    format!(
        "[devices]\n\"{}\" = \"camera\"\n\"{}\" = \"phone\"\n",
        lab.device("camera").mac_string(),
        lab.device("phone").mac_string()
    )
}

/// Runs `egress-monitor baseline ARGS --state-dir DIR`; returns (success, stdout + stderr).
fn baseline(lab: &Lab, args: &[&str]) -> (bool, String) {
    let out = Command::new(agent_binary())
        .arg("baseline")
        .args(args)
        .arg("--state-dir")
        .arg(state_dir(lab))
        .output()
        .expect("run egress-monitor baseline");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn an_allow_list_flags_exactly_the_traffic_it_does_not_allow() {
    let lab = lab();
    let _servers = lab.start_servers(0);
    let config = format!(
        "{}\n[policy]\nmax_unexpected_destinations = 2\n\n[policy.devices.camera]\nallow = [\"updates.vendor.example\"]\n",
        devices(&lab)
    );
    let agent = Agent::start(&lab, &config, &[]);
    // Allowed: the update server, by the name the camera resolved.
    let updates = lab.resolve("camera", "updates.vendor.example");
    let allowed = lab.send_to_sink("camera", updates, PAYLOAD, 5);
    // Same registrable domain, another host: the label is vendor.example, the host is not
    // allowed.
    let cdn = lab.resolve("camera", "cdn.vendor.example");
    let cdn_bytes = lab.send_to_sink("camera", cdn, PAYLOAD, 3);
    // By address, unnamed; and a third unexpected destination, beyond the limit of 2.
    let direct = lab.send_to_sink("camera", SERVERS_V4[3].into(), PAYLOAD, 2);
    let beyond = lab.send_to_sink("camera", SERVERS_V4[4].into(), PAYLOAD, 1);
    // A device without a policy is only counted.
    lab.send_to_sink("phone", SERVERS_V4[2].into(), PAYLOAD, 4);

    let s = agent.settled();
    let one = udp_ip_bytes(true, PAYLOAD);
    assert_eq!(
        s.unexpected("camera", "egress"),
        [
            ("203.0.113.5".into(), "not-allowed".into(), direct, 2),
            ("other".into(), "not-allowed".into(), beyond, 1),
            ("vendor.example".into(), "not-allowed".into(), cdn_bytes, 3),
        ],
        "unexpected series (one datagram = {one} bytes)"
    );
    assert!(s.unexpected("phone", "egress").is_empty());
    // The allowed bytes are counted as traffic, not as unexpected.
    assert_eq!(
        s.exported(
            "egress_device_bytes_total",
            &[("device", "camera"), ("direction", "egress")]
        ),
        allowed + cdn_bytes + direct + beyond
    );
    // Nobody learns: every destination seen for the first time is new.
    assert_eq!(
        s.exported("egress_new_destinations_total", &[("device", "camera")]),
        3,
        "vendor.example, 203.0.113.5, 203.0.113.6"
    );
    assert_eq!(
        s.exported("egress_new_destinations_total", &[("device", "phone")]),
        1
    );
    for (device, policy) in [("camera", "device"), ("phone", "none")] {
        assert_eq!(
            s.exported(
                "egress_device_policy_info",
                &[("device", device), ("policy", policy)]
            ),
            1
        );
    }
    assert!(
        s.matching("egress_device_learning", &[]).next().is_none(),
        "nobody learns"
    );
    // The new families are clean for promtool too.
    s.assert_passes_promtool();
    // The JSON API says the same.
    let (status, body) = agent.get("/api/devices").expect("GET /api/devices");
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let camera = json["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "camera")
        .unwrap_or_else(|| panic!("no camera in {body}"));
    let policy = &camera["policy"];
    assert_eq!(policy["section"], "device", "{policy}");
    assert_eq!(policy["learning"], serde_json::Value::Null, "{policy}");
    assert_eq!(policy["new_destinations"], 3, "{policy}");
    assert_eq!(
        policy["unexpected"]["egress"]["bytes"],
        cdn_bytes + direct + beyond,
        "{policy}"
    );
    assert_eq!(policy["unexpected"]["egress"]["packets"], 6, "{policy}");
}

#[test]
fn a_policy_change_takes_effect_without_a_restart_and_a_bad_one_is_rejected() {
    let lab = lab();
    let _servers = lab.start_servers(0);
    let base = format!(
        "{}\n[policy.devices.camera]\nallow = [\"updates.vendor.example\"]\n",
        devices(&lab)
    );
    let agent = Agent::start(&lab, &base, &[]);
    let mut sent = lab.send_to_sink("camera", SERVERS_V4[3].into(), PAYLOAD, 2);
    let first = sent;
    let s = agent.settled();
    assert_eq!(
        s.unexpected("camera", "egress"),
        [("203.0.113.5".into(), "not-allowed".into(), first, 2)]
    );

    // A typo and SIGHUP: rejected with file, line and reason; the old policy stays.
    let path = agent.config_path().to_owned();
    std::fs::write(&path, format!("{base}deny = [\"*.ads.example\"]\n")).unwrap();
    agent.child().signal(libc::SIGHUP);
    let reloads = |result: &str| {
        agent
            .scrape()
            .value("egress_monitor_policy_reloads_total", &[("result", result)])
            .unwrap_or(0.0) as u64
    };
    assert!(
        wait_until(Duration::from_secs(10), || reloads("failure") == 1),
        "no failed reload counted:\n{}",
        agent.log()
    );
    let line = base.lines().count() + 1;
    let expected = format!(
        "{}:{line}:9: policy.devices.camera.deny[0]: invalid rule \"*.ads.example\"",
        path.display()
    );
    assert!(
        agent.log().contains(&expected),
        "{expected}\n{}",
        agent.log()
    );
    assert_eq!(
        agent
            .scrape()
            .exported("egress_monitor_policy_last_reload_success", &[]),
        0
    );
    let second = lab.send_to_sink("camera", SERVERS_V4[3].into(), PAYLOAD, 1);
    sent += second;
    let s = agent.settled();
    assert_eq!(
        s.unexpected("camera", "egress"),
        [(
            "203.0.113.5".into(),
            "not-allowed".into(),
            first + second,
            3
        )],
        "the previous policy is still in force"
    );

    // A valid change, picked up from the file alone: the address is allowed from now on, and
    // no count is lost or reset.
    std::fs::write(
        &path,
        base.replace(
            "allow = [\"updates.vendor.example\"]",
            "allow = [\"updates.vendor.example\", \"203.0.113.0/24\"]",
        ),
    )
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || reloads("success") == 1),
        "the changed file was not reloaded:\n{}",
        agent.log()
    );
    sent += lab.send_to_sink("camera", SERVERS_V4[3].into(), PAYLOAD, 4);
    let s = agent.settled();
    assert_eq!(
        s.unexpected("camera", "egress"),
        [(
            "203.0.113.5".into(),
            "not-allowed".into(),
            first + second,
            3
        )]
    );
    assert_eq!(
        s.exported(
            "egress_device_bytes_total",
            &[("device", "camera"), ("direction", "egress")]
        ),
        sent
    );
    assert_eq!(
        s.exported("egress_monitor_policy_last_reload_success", &[]),
        1
    );
}

#[test]
fn a_learned_baseline_survives_a_restart_and_the_baseline_commands_change_it() {
    let lab = lab();
    let _servers = lab.start_servers(0);
    let config = format!(
        "{}\n[policy.devices.camera]\nlearn = \"3s\"\n",
        devices(&lab)
    );
    let agent = Agent::start(&lab, &config, &[]);
    let updates = lab.resolve("camera", "updates.vendor.example");
    lab.send_to_sink("camera", updates, PAYLOAD, 2);
    let learning = |agent: &Agent| {
        agent
            .scrape()
            .value("egress_device_learning", &[("device", "camera")])
    };
    assert!(
        wait_until(Duration::from_secs(5), || learning(&agent) == Some(1.0)),
        "the camera is not learning: {:?}",
        learning(&agent)
    );
    assert!(
        wait_until(Duration::from_secs(10), || learning(&agent) == Some(0.0)),
        "learning did not end"
    );
    let new_bytes = lab.send_to_sink("camera", SERVERS_V4[3].into(), PAYLOAD, 3);
    let s = agent.settled();
    assert_eq!(
        s.unexpected("camera", "egress"),
        [("203.0.113.5".into(), "not-in-baseline".into(), new_bytes, 3)]
    );
    assert_eq!(
        s.exported("egress_new_destinations_total", &[("device", "camera")]),
        1
    );

    // Through the running agent.
    let (ok, text) = baseline(&lab, &["show", "camera"]);
    assert!(ok, "{text}");
    assert!(text.contains("policy:   device\n"), "{text}");
    assert!(text.contains("learning: done (from "), "{text}");
    assert!(
        text.contains("baseline: 1 entries\n  vendor.example\n"),
        "{text}"
    );
    assert!(text.contains("seen:     2 destinations\n"), "{text}");
    let (ok, text) = baseline(&lab, &["accept", "camera", "203.0.113.5"]);
    assert!(ok, "{text}");
    assert!(
        text.starts_with("accepted 203.0.113.5 into the baseline of camera ("),
        "{text}"
    );
    let (ok, text) = baseline(&lab, &["accept", "camera", "*.tracker.example"]);
    assert!(
        !ok && text.contains("invalid rule \"*.tracker.example\""),
        "{text}"
    );
    lab.send_to_sink("camera", SERVERS_V4[3].into(), PAYLOAD, 2);
    let s = agent.settled();
    assert_eq!(
        s.unexpected("camera", "egress"),
        [("203.0.113.5".into(), "not-in-baseline".into(), new_bytes, 3)],
        "accepted: no longer unexpected"
    );
    let state_file = state_dir(&lab).join("state.toml");
    let text = std::fs::read_to_string(&state_file).unwrap();
    assert!(
        text.contains("baseline = [\n    \"vendor.example\",\n    \"203.0.113.5\",\n]"),
        "the command's change is written at once:\n{text}"
    );
    agent.stop();

    // Without the agent, the command reads the file itself.
    let (ok, text) = baseline(&lab, &["show", "camera"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("baseline: 2 entries\n  vendor.example\n  203.0.113.5\n"),
        "{text}"
    );

    // A new agent starts from the state: what was learned or accepted is fine, anything else
    // is unexpected at once (learning is over), and only that is new.
    let agent = Agent::start(&lab, &config, &[]);
    let updates_again = lab.resolve("camera", "telemetry.vendor.example");
    lab.send_to_sink("camera", updates_again, PAYLOAD, 1);
    lab.send_to_sink("camera", SERVERS_V4[3].into(), PAYLOAD, 1);
    let other = lab.send_to_sink("camera", SERVERS_V4[4].into(), PAYLOAD, 2);
    let s = agent.settled();
    assert_eq!(
        s.unexpected("camera", "egress"),
        [("203.0.113.6".into(), "not-in-baseline".into(), other, 2)]
    );
    assert_eq!(
        s.exported("egress_new_destinations_total", &[("device", "camera")]),
        1
    );
    assert_eq!(
        s.exported("egress_device_learning", &[("device", "camera")]),
        0
    );

    // Forgetting starts learning again at the next traffic.
    let (ok, text) = baseline(&lab, &["forget", "camera"]);
    assert!(ok && text.starts_with("forgot camera ("), "{text}");
    lab.send_to_sink("camera", SERVERS_V4[2].into(), PAYLOAD, 1);
    assert!(
        wait_until(Duration::from_secs(5), || learning(&agent) == Some(1.0)),
        "forgotten, the camera learns again"
    );
}
