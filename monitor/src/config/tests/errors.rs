//! Error messages: one line naming the file, line, column and key, or the flag.

use super::*;

/// Each bad file gives exactly this one-line message, naming the line, column and key.
#[test]
fn file_errors_name_line_and_key() {
    let cases: &[(&str, &str)] = &[
        (
            "lan = [\"br-lan\"]\nlisten = \"0.0.0.0:10100\"\n\npoll_interval = \"fast\"\n",
            r#"/etc/egress-monitor.toml:4:17: poll_interval: invalid duration "fast": expected a number like "1s" or "500ms""#,
        ),
        (
            "lan = [\"br-lan\"]\npoll_interval = \"5 parsecs\"\n",
            r#"/etc/egress-monitor.toml:2:17: poll_interval: invalid duration "5 parsecs": unknown unit "parsecs"; use ms, s, m or h"#,
        ),
        (
            "lan = [\"br-lan\"]\npoll_interval = 5\n",
            r#"/etc/egress-monitor.toml:2:17: poll_interval: invalid type: integer `5`, expected a duration like "1s" or "500ms""#,
        ),
        (
            "lan = [\"br-lan\"]\npoll_interval = \"50ms\"\n",
            "/etc/egress-monitor.toml:2:17: poll_interval: 50ms is out of range: allowed 100ms to 1h",
        ),
        (
            "lan = [\"br-lan\"]\n  poll_interval = \"1h 1s\"\n",
            "/etc/egress-monitor.toml:2:19: poll_interval: 1h 1s is out of range: allowed 100ms to 1h",
        ),
        (
            "lan = [\"br-lan\"]\n\n[devices]\n\"00:16:3e:00:00:01\" = \"phone\"\n\"zz:00\" = \"tv\"\n",
            r#"/etc/egress-monitor.toml:5:1: devices."zz:00": invalid MAC address "zz:00": expected six pairs of hex digits separated by ':' or '-', like "00:16:3e:00:00:01""#,
        ),
        (
            "lan = [\"br-lan\"]\npin_dir = \"bpf/egress\"\n",
            r#"/etc/egress-monitor.toml:2:11: pin_dir: invalid pin directory "bpf/egress": must be an absolute path of its own on bpffs, like "/sys/fs/bpf/egress-monitor", or "" for no pins"#,
        ),
        (
            "lan = [\"br-lan\"]\npoll_intervall = \"1s\"\n",
            "/etc/egress-monitor.toml:2:1: poll_intervall: unknown key `poll_intervall`, expected one of `lan`, `listen`, `poll_interval`, `local_prefixes`, `flow_map_entries`, `device_map_entries`, `max_destinations_per_device`, `max_series`, `attach`, `destination_label`, `sniff_ring_bytes`, `names`, `leases`, `devices`, `state_dir`, `pin_dir`, `state_write_interval`, `policy`, `enrich`",
        ),
        (
            "lan = [\"br-lan\"]\n[devices]\n\"00:16:3e:00:00:01\" = { name = \"tv\", room = \"den\" }\n",
            "/etc/egress-monitor.toml:3:38: devices.\"00:16:3e:00:00:01\".room: unknown key `room`, expected `name` or `group`",
        ),
        (
            "lan = [\"br-lan\"]\nflow_map_entries = 8\n",
            "/etc/egress-monitor.toml:2:20: flow_map_entries: 8 is out of range: allowed 16 to 16777216",
        ),
        (
            "lan = [\"br-lan\"]\nflow_map_entries = 16777217\n",
            "/etc/egress-monitor.toml:2:20: flow_map_entries: 16777217 is out of range: allowed 16 to 16777216",
        ),
        (
            "lan = [\"br-lan\"]\ndevice_map_entries = -1\n",
            "/etc/egress-monitor.toml:2:22: device_map_entries: -1 is out of range: allowed 16 to 1048576",
        ),
        (
            "lan = [\"br-lan\"]\ndevice_map_entries = 1048577\n",
            "/etc/egress-monitor.toml:2:22: device_map_entries: 1048577 is out of range: allowed 16 to 1048576",
        ),
        (
            "lan = [\"br-lan\"]\ndevice_map_entries = \"4k\"\n",
            r#"/etc/egress-monitor.toml:2:22: device_map_entries: invalid type: string "4k", expected a number from 16 to 1048576"#,
        ),
        (
            "lan = [\"br-lan\"]\nlocal_prefixes = [\"10.8.0.0/24\", \"10.0.0.0/33\"]\n",
            r#"/etc/egress-monitor.toml:2:34: local_prefixes[1]: invalid CIDR prefix "10.0.0.0/33": expected ADDRESS/LENGTH like "10.8.0.0/24" or "fd00::/8""#,
        ),
        (
            "lan = [\"br-lan\"]\nlocal_prefixes = \"fd00::/8\"\n",
            r#"/etc/egress-monitor.toml:2:18: local_prefixes: invalid type: string "fd00::/8", expected a list of prefixes like ["10.8.0.0/24"]"#,
        ),
        (
            "lan = [\"br-lan\"]\nlisten = \"localhost:10100\"\n",
            r#"/etc/egress-monitor.toml:2:10: listen: invalid listen address "localhost:10100": expected IP:PORT like "0.0.0.0:10100" or "[::]:10100""#,
        ),
        (
            "lan = [\"br-lan\"]\nlisten = \"0.0.0.0\"\n",
            r#"/etc/egress-monitor.toml:2:10: listen: invalid listen address "0.0.0.0": expected IP:PORT like "0.0.0.0:10100" or "[::]:10100""#,
        ),
        (
            "# no interfaces yet\nlan = []\n",
            "/etc/egress-monitor.toml:2:7: lan: the list is empty; at least one LAN interface is required",
        ),
        (
            "lan = \"br-lan\"\n",
            r#"/etc/egress-monitor.toml:1:7: lan: invalid type: string "br-lan", expected a list of interface names like ["br-lan"]"#,
        ),
        (
            "lan = [\"br-lan\", \"eth0/1\"]\n",
            r#"/etc/egress-monitor.toml:1:18: lan[1]: invalid interface name "eth0/1": must not contain '/', whitespace or NUL"#,
        ),
        (
            "lan = [\"br-lan\"]\n[devices]\n\"00:16:3e:00:00:01\" = \"\"\n",
            r#"/etc/egress-monitor.toml:3:23: devices."00:16:3e:00:00:01": invalid device name "": must not be empty"#,
        ),
        (
            "lan = [\"br-lan\"]\n[devices]\n\"00:16:3e:00:00:01\" = {}\n",
            r#"/etc/egress-monitor.toml:3:23: devices."00:16:3e:00:00:01": missing key `name`: a device needs a name, even in a group, like { name = "phone", group = "iot" }"#,
        ),
        (
            "lan = [\"br-lan\"]\n[devices.\"00:16:3e:00:00:01\"]\nname = 7\n",
            r#"/etc/egress-monitor.toml:3:8: devices."00:16:3e:00:00:01".name: invalid type: integer `7`, expected a device name"#,
        ),
        (
            "lan = [\"br-lan\"]\n[devices]\n\"00:16:3e:00:00:01\" = \"tv\"\n\"00-16-3E-00-00-01\" = \"telly\"\n",
            // Keys are read in sorted order, so the colon spelling is the second one seen.
            r#"/etc/egress-monitor.toml:3:1: devices."00:16:3e:00:00:01": 00:16:3e:00:00:01 is listed twice, under two spellings"#,
        ),
        (
            "lan = [\"br-lan\"]\n[devices]\n\"01:00:5e:00:00:fb\" = \"mdns\"\n",
            r#"/etc/egress-monitor.toml:3:1: devices."01:00:5e:00:00:fb": 01:00:5e:00:00:fb is a multicast address, which never names a device"#,
        ),
        (
            "lan = [\"br-lan\"]\npoll_interval = = \"1s\"\n",
            "/etc/egress-monitor.toml:2:17: invalid TOML: extra `=`, expected nothing",
        ),
        (
            "lan = [\"br-lan\"]\nlan = [\"wlan0\"]\n",
            "/etc/egress-monitor.toml:2:1: invalid TOML: duplicate key",
        ),
    ];
    for (src, expected) in cases {
        let err = load_err(src, &Overrides::default());
        assert_eq!(err.to_string(), *expected, "{src:?}");
        assert!(matches!(err, ConfigError::Invalid { .. }), "{err:?}");
    }
}

#[test]
fn errors_are_matchable() {
    let src = "lan = [\"br-lan\"]\nlisten = \"0.0.0.0:10100\"\n\npoll_interval = \"fast\"\n";
    let err = load_err(src, &Overrides::default());
    let ConfigError::Invalid {
        path,
        line,
        column,
        key,
        message,
    } = err
    else {
        panic!("not Invalid: {err:?}");
    };
    assert_eq!(path.as_deref(), Some(Path::new(FILE)));
    assert_eq!((line, column), (Some(4), Some(17)));
    assert_eq!(key, "poll_interval");
    assert_eq!(
        message,
        r#"invalid duration "fast": expected a number like "1s" or "500ms""#
    );
}

#[test]
fn errors_without_a_file_name_still_give_the_line() {
    let err = Config::from_toml_str("lan = [\"br-lan\"]\nfoo = 1\n", None, &Overrides::default())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 2, column 1: foo: unknown key `foo`, expected one of `lan`, `listen`, \
         `poll_interval`, `local_prefixes`, `flow_map_entries`, `device_map_entries`, `max_destinations_per_device`, `max_series`, `attach`, `destination_label`, `sniff_ring_bytes`, `names`, `leases`, `devices`, `state_dir`, `pin_dir`, `state_write_interval`, `policy`, `enrich`"
    );
}

#[test]
fn columns_count_characters_and_ignore_crlf() {
    let src = "# réseau\r\nlan = [\"br-lan\"] # été\r\n[devices]\r\n\"00:16:3e:00:00:01\" = \"téléphone\"\r\n\"zz\" = \"x\"\r\n";
    let err = load_err(src, &Overrides::default());
    assert!(
        err.to_string()
            .starts_with("/etc/egress-monitor.toml:5:1: devices.zz: "),
        "{err}"
    );
    let src = "lan = [\"é\", \"a b\"]\n";
    let err = load_err(src, &Overrides::default());
    assert!(
        err.to_string()
            .starts_with("/etc/egress-monitor.toml:1:13: lan[1]: "),
        "{err}"
    );
}

/// A bad value given as a flag is reported with the flag's name.
#[test]
fn flag_errors_name_the_flag() {
    let cases: &[(Overrides, &str)] = &[
        (
            Overrides {
                poll_interval: Some(Duration::from_millis(50)),
                ..Overrides::default()
            },
            "--poll-interval: 50ms is out of range: allowed 100ms to 1h",
        ),
        (
            Overrides {
                poll_interval: Some(Duration::from_secs(7200)),
                ..Overrides::default()
            },
            "--poll-interval: 2h is out of range: allowed 100ms to 1h",
        ),
        (
            Overrides {
                flow_map_entries: Some(8),
                ..Overrides::default()
            },
            "--flow-map-entries: 8 is out of range: allowed 16 to 16777216",
        ),
        (
            Overrides {
                lan: lan(&["br-lan", "a-very-long-interface"]),
                ..Overrides::default()
            },
            r#"--lan: invalid interface name "a-very-long-interface": longer than 15 bytes"#,
        ),
        (
            Overrides {
                lan: lan(&[""]),
                ..Overrides::default()
            },
            r#"--lan: invalid interface name "": must not be empty"#,
        ),
    ];
    for (flags, expected) in cases {
        // The file is fine; only the flag is wrong.
        let err = load_err("lan = [\"br-lan\"]\n", flags);
        assert_eq!(err.to_string(), *expected, "{flags:?}");
        assert!(
            matches!(&err, ConfigError::Invalid { path: None, line: None, key, .. } if key.starts_with("--")),
            "{err:?}"
        );
    }
}

#[test]
fn no_lan_interface_anywhere_is_its_own_error() {
    for (src, flags) in [
        ("", Overrides::default()),
        ("poll_interval = \"1s\"\n", Overrides::default()),
        (
            "lan = [\"br-lan\"]\n",
            Overrides {
                lan: Some(vec![]),
                ..Overrides::default()
            },
        ),
    ] {
        let err = load_err(src, &flags);
        assert!(
            matches!(err, ConfigError::NoLanInterface),
            "{src:?}: {err:?}"
        );
        assert_eq!(
            err.to_string(),
            "no LAN interface to monitor: set lan = [\"br-lan\"] in the configuration file \
             or pass --lan <IFACE>"
        );
    }
}

#[test]
fn unreadable_file_is_a_read_error_naming_it() {
    let path = Path::new("/nonexistent/egress-monitor.toml");
    let err = Config::load(Some(path), &Overrides::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot read configuration file /nonexistent/egress-monitor.toml: \
         No such file or directory (os error 2)"
    );
    let ConfigError::Read { path: p, source } = &err else {
        panic!("not Read: {err:?}");
    };
    assert_eq!(p, path);
    assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
    assert!(std::error::Error::source(&err).is_some());
}
