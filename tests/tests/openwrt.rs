//! The OpenWrt package's UCI configuration rendered to the agent's TOML: the renderer
//! (`deploy/openwrt/files/egress-monitor-render.sh`) runs under `busybox sh`, as on a router,
//! with a shim of OpenWrt's `/lib/functions.sh` (`deploy/openwrt/tests/uci-shim.sh`) and UCI
//! fixtures written as `uci export` writes them; its output is compared with the expected text
//! and must pass the agent's `--check-config`. Needs busybox, not root.
//! (The `.ipk` itself is tested in xtask: `cargo test -p xtask package`.)

use std::{
    io::ErrorKind,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use egress_lab::agent::agent_binary;

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

/// A fresh directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("egress-openwrt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Renders the UCI text `uci` (as /etc/config/egress-monitor) under busybox sh.
fn render(dir: &Path, uci: &str) -> Output {
    std::fs::write(dir.join("egress-monitor"), uci).unwrap();
    let script = format!(
        ". '{}'; . '{}'; egress_monitor_render",
        repo_path("deploy/openwrt/tests/uci-shim.sh").display(),
        repo_path("deploy/openwrt/files/egress-monitor-render.sh").display(),
    );
    match Command::new("busybox")
        .args(["sh", "-c", &script])
        .env("UCI_CONFIG_DIR", dir)
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            panic!("busybox is not installed: `cargo xtask setup` installs it")
        }
        Err(e) => panic!("cannot run busybox: {e}"),
    }
}

/// Renders `uci`, which must succeed; the TOML text.
fn render_ok(dir: &Path, uci: &str) -> String {
    let out = render(dir, uci);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "rendering failed: {stderr}");
    assert!(stderr.is_empty(), "rendering warned: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

/// Renders `uci`, which must fail; stderr. Nothing may reach stdout: the init script keeps the
/// previous file.
fn render_err(dir: &Path, uci: &str) -> String {
    let out = render(dir, uci);
    assert!(!out.status.success(), "rendering succeeded");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// `egress-monitor --config <toml> --check-config`: the effective configuration.
fn check_config(dir: &Path, toml: &str) -> String {
    let path = dir.join("egress-monitor.toml");
    std::fs::write(&path, toml).unwrap();
    let out = Command::new(agent_binary())
        .arg("--config")
        .arg(&path)
        .arg("--check-config")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "--check-config rejected\n{toml}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const HEADER: &str =
    "# Rendered from /etc/config/egress-monitor by /etc/init.d/egress-monitor: edit that file.\n";

#[test]
fn the_shipped_configuration_renders_and_passes_check_config() {
    let dir = scratch("shipped");
    let uci =
        std::fs::read_to_string(repo_path("deploy/openwrt/files/egress-monitor.config")).unwrap();
    let toml = render_ok(&dir, &uci);
    assert_eq!(
        toml,
        format!(
            "{HEADER}lan = [\"br-lan\"]\nlisten = \"192.168.1.1:10100\"\npoll_interval = \"1s\"\n\
             state_dir = \"/etc/egress-monitor\"\n\n[[leases]]\nformat = \"dnsmasq\"\n\
             path = \"/tmp/dhcp.leases\"\n"
        )
    );
    let effective = check_config(&dir, &toml);
    assert!(
        effective.contains("state_dir = \"/etc/egress-monitor\""),
        "{effective}"
    );
    assert!(
        effective.contains("path = \"/tmp/dhcp.leases\""),
        "{effective}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_option_renders_with_quotes_and_backslashes_escaped() {
    let dir = scratch("full");
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, "[policy.default]\nlearn = \"7d\"\n").unwrap();
    let uci = format!(
        "package egress-monitor\n\n\
         config egress-monitor 'main'\n\
         \toption enabled '1'\n\
         \tlist lan 'br-lan'\n\
         \tlist lan 'wlan0'\n\
         \toption listen '[::1]:10100'\n\
         \toption poll_interval '500ms'\n\
         \tlist local_prefix '10.8.0.0/24'\n\
         \tlist local_prefix 'fd00::/8'\n\
         \toption flow_map_entries '131072'\n\
         \toption device_map_entries '512'\n\
         \toption max_destinations_per_device '256'\n\
         \toption attach 'clsact'\n\
         \toption destination_label 'host'\n\
         \toption sniff_ring_bytes '65536'\n\
         \toption state_dir '/overlay/egress \"monitor\"'\n\
         \toption include '{}'\n\n\
         config leases\n\
         \toption format 'dnsmasq'\n\
         \toption path '/tmp/dhcp.leases'\n\n\
         config leases\n\
         \toption format 'odhcpd'\n\
         \toption path '/tmp/hosts/odhcpd'\n\n\
         config device\n\
         \toption mac '00:16:3e:00:00:01'\n\
         \toption name 'Bob'\\''s \"cam\" \\ 2'\n\
         \toption group 'iot'\n\n\
         config device\n\
         \toption mac '00:16:3e:00:00:02'\n\
         \toption name 'laptop'\n",
        policy.display()
    );
    let toml = render_ok(&dir, &uci);
    let expected = format!(
        "{HEADER}lan = [\"br-lan\", \"wlan0\"]\n\
         listen = \"[::1]:10100\"\n\
         poll_interval = \"500ms\"\n\
         local_prefixes = [\"10.8.0.0/24\", \"fd00::/8\"]\n\
         flow_map_entries = 131072\n\
         device_map_entries = 512\n\
         max_destinations_per_device = 256\n\
         attach = \"clsact\"\n\
         destination_label = \"host\"\n\
         sniff_ring_bytes = 65536\n\
         state_dir = \"/overlay/egress \\\"monitor\\\"\"\n\n\
         [[leases]]\nformat = \"dnsmasq\"\npath = \"/tmp/dhcp.leases\"\n\n\
         [[leases]]\nformat = \"odhcpd\"\npath = \"/tmp/hosts/odhcpd\"\n\n\
         [devices]\n\
         \"00:16:3e:00:00:01\" = {{ name = \"Bob's \\\"cam\\\" \\\\ 2\", group = \"iot\" }}\n\
         \"00:16:3e:00:00:02\" = {{ name = \"laptop\" }}\n\n\
         # Appended from {}\n\
         [policy.default]\nlearn = \"7d\"\n",
        policy.display()
    );
    assert_eq!(toml, expected);
    // The agent reads every value back as written in UCI.
    let effective = check_config(&dir, &toml);
    for line in [
        "lan = [\"br-lan\", \"wlan0\"]",
        // (The agent writes strings with quotes as TOML literal strings.)
        r#"state_dir = '/overlay/egress "monitor"'"#,
        r#"name = '''Bob's "cam" \ 2'''"#,
        "attach = \"clsact\"",
        "format = \"odhcpd\"",
        "learn = \"7days\"",
    ] {
        assert!(effective.contains(line), "{line} not in\n{effective}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_values_are_clear_errors_and_render_nothing() {
    let dir = scratch("bad");
    let main = "config egress-monitor 'main'\n\tlist lan 'br-lan'\n";
    for (uci, error) in [
        (
            format!("{main}\toption listen '0.0.0.0:10100\nlan = [\"eth0\"]'\n"),
            "egress-monitor: /etc/config/egress-monitor: main.listen: control characters \
             (newline, tab, ...) are not allowed",
        ),
        (
            "config egress-monitor 'main'\n\tlist lan 'br-lan\"]\n\tx'\n".to_owned(),
            "main.lan: control characters",
        ),
        (
            format!("{main}\toption flow_map_entries '64k'\n"),
            "main.flow_map_entries: expected a whole number, got \"64k\"",
        ),
        (
            format!("{main}config leases\n\toption format 'dnsmasq'\n"),
            "leases section cfg2: options format and path are required",
        ),
        (
            format!("{main}config device\n\toption name 'phone'\n"),
            "device section cfg2: options mac and name are required",
        ),
        (
            format!("{main}\toption include '/nonexistent/policy.toml'\n"),
            "main.include: /nonexistent/policy.toml is not a file",
        ),
    ] {
        let stderr = render_err(&dir, &uci);
        assert!(
            stderr.contains(error),
            "{error:?} not in {stderr:?} for\n{uci}"
        );
    }
    // No configuration file at all.
    std::fs::remove_file(dir.join("egress-monitor")).unwrap();
    let script = format!(
        ". '{}'; . '{}'; egress_monitor_render",
        repo_path("deploy/openwrt/tests/uci-shim.sh").display(),
        repo_path("deploy/openwrt/files/egress-monitor-render.sh").display(),
    );
    let out = Command::new("busybox")
        .args(["sh", "-c", &script])
        .env("UCI_CONFIG_DIR", dir.join("none"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be read"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// What the renderer passes on unchecked (durations, lease formats) the agent rejects, naming
/// the key: the init script's render step is not the only check.
#[test]
fn values_only_the_agent_understands_are_its_to_reject() {
    let dir = scratch("agent");
    let toml = render_ok(
        &dir,
        "config egress-monitor 'main'\n\tlist lan 'br-lan'\n\toption poll_interval 'fast'\n",
    );
    let path = dir.join("egress-monitor.toml");
    std::fs::write(&path, &toml).unwrap();
    let out = Command::new(agent_binary())
        .arg("--config")
        .arg(&path)
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("poll_interval"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The init script's start and reload under busybox, with procd's functions stubbed and its
/// paths moved into a scratch directory: start renders the file and gives procd the command;
/// a bad value at reload keeps the previous file and sends no signal.
#[test]
fn the_init_script_renders_at_start_and_keeps_the_previous_file_on_a_bad_reload() {
    let dir = scratch("init");
    let root = dir.display().to_string();
    let init = std::fs::read_to_string(repo_path("deploy/openwrt/files/egress-monitor.init"))
        .unwrap()
        .replace("/var/etc", &format!("{root}/var/etc"))
        .replace(
            "/usr/share/egress-monitor/render.sh",
            &repo_path("deploy/openwrt/files/egress-monitor-render.sh")
                .display()
                .to_string(),
        );
    std::fs::write(dir.join("init"), init).unwrap();
    std::fs::write(
        dir.join("egress-monitor"),
        format!(
            "config egress-monitor 'main'\n\tlist lan 'br-lan'\n\toption log_level 'debug'\n\
             \toption state_dir '{root}/state'\n"
        ),
    )
    .unwrap();
    let script = format!(
        "procd_open_instance() {{ echo open; }}\n\
         procd_set_param() {{ echo \"set $*\"; }}\n\
         procd_append_param() {{ echo \"append $*\"; }}\n\
         procd_close_instance() {{ echo close; }}\n\
         procd_send_signal() {{ echo \"signal $*\"; }}\n\
         logger() {{ echo \"logger $*: $(cat)\"; }}\n\
         . '{shim}'\n. '{root}/init'\n\
         start_service; echo \"start=$?\"\n\
         reload_service; echo \"reload=$?\"\n\
         echo \"\toption flow_map_entries 'many'\" >> '{root}/egress-monitor'\n\
         reload_service; echo \"bad reload=$?\"\n",
        shim = repo_path("deploy/openwrt/tests/uci-shim.sh").display(),
    );
    let out = Command::new("busybox")
        .args(["sh", "-c", &script])
        .env("UCI_CONFIG_DIR", &dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout,
        format!(
            "open\n\
             set command /usr/sbin/egress-monitor --config {root}/var/etc/egress-monitor.toml\n\
             append command --log-level debug\n\
             set respawn 3600 5 5\nset stdout 1\nset stderr 1\n\
             set file /etc/config/egress-monitor\nclose\nstart=0\n\
             signal egress-monitor * HUP\nreload=0\n\
             logger -s -t egress-monitor -p daemon.err: egress-monitor: \
             /etc/config/egress-monitor: main.flow_map_entries: expected a whole number, got \
             \"many\"\nbad reload=1\n"
        ),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = std::fs::read_to_string(dir.join("var/etc/egress-monitor.toml")).unwrap();
    assert_eq!(
        rendered,
        format!("{HEADER}lan = [\"br-lan\"]\nstate_dir = \"{root}/state\"\n")
    );
    let entries: Vec<_> = std::fs::read_dir(dir.join("var/etc"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, ["egress-monitor.toml"], "leftovers in var/etc");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(dir.join("var/etc/egress-monitor.toml")), 0o600);
    assert_eq!(mode(dir.join("state")), 0o700);
    check_config(&dir, &rendered);
    std::fs::remove_dir_all(&dir).unwrap();
}
