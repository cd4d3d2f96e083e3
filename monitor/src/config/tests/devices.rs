//! `[devices]` (names, groups, MAC keys) and the `[[leases]]` files that name devices.

use super::*;

#[test]
fn device_name_rules() {
    let longest = "é".repeat(DEVICE_NAME_MAX_CHARS);
    let too_long = "a".repeat(DEVICE_NAME_MAX_CHARS + 1);
    // (name, accepted, end of the error message)
    let cases: &[(&str, bool, &str)] = &[
        ("phone", true, ""),
        ("Anna's phone (2)", true, ""),
        ("x", true, ""),
        ("télé 📺 \"salon\"", true, ""),
        (&longest, true, ""),
        ("", false, "must not be empty"),
        (&too_long, false, "longer than 64 characters"),
        ("tab\there", false, "must not contain control characters"),
        ("line\nbreak", false, "must not contain control characters"),
        ("del\u{7f}", false, "must not contain control characters"),
        ("c1\u{85}", false, "must not contain control characters"),
    ];
    for (name, accepted, why) in cases {
        let quoted = toml::Value::String(name.to_string()).to_string();
        for src in [
            format!("lan = [\"br-lan\"]\n[devices]\n\"00:16:3e:00:00:01\" = {quoted}\n"),
            format!(
                "lan = [\"br-lan\"]\n[devices]\n\"00:16:3e:00:00:01\" = {{ name = {quoted} }}\n"
            ),
        ] {
            match load(&src, &Overrides::default()) {
                Ok(config) => {
                    assert!(accepted, "{name:?} was accepted");
                    assert_eq!(config.device_name(&mac("00:16:3e:00:00:01")), Some(*name));
                }
                Err(err) => {
                    let err = err.to_string();
                    assert!(!accepted, "{name:?} was rejected: {err}");
                    assert!(err.starts_with("/etc/egress-monitor.toml:3:"), "{err}");
                    assert!(err.ends_with(why), "{name:?}: {err}");
                    assert!(!err.contains('\n'), "{err}");
                }
            }
        }
    }
    // Two devices may share a name.
    let src = "lan = [\"br-lan\"]\n[devices]\n\"00:16:3e:00:00:01\" = \"laptop\"\n\"00:16:3e:00:00:02\" = \"laptop\"\n";
    assert_eq!(load_ok(src, &Overrides::default()).devices.len(), 2);
}

#[test]
fn mac_keys_accept_every_format() {
    let src = "lan = [\"br-lan\"]\n[devices]\n\"00:16:3e:0a:0b:0c\" = \"a\"\n\"00-16-3E-0A-0B-0D\" = \"b\"\n\"00:16:3E:0a:0B:0e\" = \"c\"\n";
    let config = load_ok(src, &Overrides::default());
    for (mac_text, name) in [
        ("00:16:3e:0a:0b:0c", "a"),
        ("00:16:3e:0a:0b:0d", "b"),
        ("00:16:3e:0a:0b:0e", "c"),
    ] {
        assert_eq!(config.device_name(&mac(mac_text)), Some(name), "{mac_text}");
    }
}

#[test]
fn device_groups() {
    let longest = "é".repeat(DEVICE_NAME_MAX_CHARS);
    let too_long = "a".repeat(DEVICE_NAME_MAX_CHARS + 1);
    // (group as written, the group read, or the error after "devices.\"..\": ")
    let cases: &[(&str, Result<&str, String>)] = &[
        ("\"iot\"", Ok("iot")),
        ("\"Kids' tablets (2)\"", Ok("Kids' tablets (2)")),
        (&format!("\"{longest}\""), Ok(&longest)),
        (
            "\"\"",
            Err(r#"3:47: devices."00:16:3e:00:00:01".group: invalid device group "": must not be empty"#.to_owned()),
        ),
        (
            &format!("\"{too_long}\""),
            Err(format!(r#"3:47: devices."00:16:3e:00:00:01".group: invalid device group "{too_long}": longer than 64 characters"#)),
        ),
        (
            "\"i\\to\"",
            Err(r#"3:47: devices."00:16:3e:00:00:01".group: invalid device group "i\to": must not contain control characters"#.to_owned()),
        ),
        (
            "[\"iot\"]",
            Err(r#"3:47: devices."00:16:3e:00:00:01".group: invalid type: sequence, expected a device group"#.to_owned()),
        ),
    ];
    for (group, expected) in cases {
        let src = format!(
            "lan = [\"br-lan\"]\n[devices]\n\"00:16:3e:00:00:01\" = {{ name = \"cam\", group = {group} }}\n"
        );
        match expected {
            Ok(group) => {
                let config = load_ok(&src, &Overrides::default());
                assert_eq!(
                    config.devices[&mac("00:16:3e:00:00:01")],
                    DeviceConfig {
                        name: "cam".into(),
                        group: Some((*group).to_owned()),
                    }
                );
            }
            Err(message) => assert_eq!(
                load_err(&src, &Overrides::default()).to_string(),
                format!("/etc/egress-monitor.toml:{message}")
            ),
        }
    }

    // Without a group, in either form, there is none.
    let src = "lan = [\"br-lan\"]\n[devices]\n\"00:16:3e:00:00:01\" = \"tv\"\n\"00:16:3e:00:00:02\" = { name = \"tv\" }\n";
    let config = load_ok(src, &Overrides::default());
    assert!(config.devices.values().all(|d| d.group.is_none()));

    // A group does not replace the name.
    let src = "lan = [\"br-lan\"]\n[devices]\n\"00:16:3e:00:00:01\" = { group = \"iot\" }\n";
    assert_eq!(
        load_err(src, &Overrides::default()).to_string(),
        r#"/etc/egress-monitor.toml:3:23: devices."00:16:3e:00:00:01": missing key `name`: a device needs a name, even in a group, like { name = "phone", group = "iot" }"#
    );
}

#[test]
fn lease_files() {
    // Every format, by the name the file uses.
    for format in LeaseFormat::ALL {
        assert_eq!(format.to_string(), format.as_str());
        let src = format!(
            "lan = [\"br-lan\"]\n[[leases]]\nformat = \"{format}\"\npath = \"/var/lib/leases\"\n"
        );
        assert_eq!(
            load_ok(&src, &Overrides::default()).leases,
            [LeaseSource {
                format,
                path: "/var/lib/leases".into()
            }]
        );
    }
    let names: Vec<&str> = LeaseFormat::ALL.iter().map(|f| f.as_str()).collect();
    assert_eq!(
        names,
        ["dnsmasq", "odhcpd", "odhcpd-hosts", "isc-dhcpd", "kea-csv"]
    );

    // In the order given; the inline form works too; the file need not exist.
    let src = "lan = [\"br-lan\"]\nleases = [\n  { format = \"kea-csv\", path = \"/nonexistent/kea-leases6.csv\" },\n  { path = \"/tmp/dhcp.leases\", format = \"dnsmasq\" },\n]\n";
    assert_eq!(
        load_ok(src, &Overrides::default()).leases,
        [
            LeaseSource {
                format: LeaseFormat::KeaCsv,
                path: "/nonexistent/kea-leases6.csv".into(),
            },
            LeaseSource {
                format: LeaseFormat::Dnsmasq,
                path: "/tmp/dhcp.leases".into(),
            },
        ]
    );

    const DNSMASQ: &str = "[[leases]]\nformat = \"dnsmasq\"\npath = \"/tmp/dhcp.leases\"\n";
    // (what follows `lan = [..]` on line 2, the whole error)
    let cases: &[(String, &str)] = &[
        (
            "[[leases]]\nformat = \"udhcpd\"\npath = \"/tmp/udhcpd.leases\"\n".to_owned(),
            "/etc/egress-monitor.toml:3:10: leases[0].format: unknown variant `udhcpd`, expected one of `dnsmasq`, `odhcpd`, `odhcpd-hosts`, `isc-dhcpd`, `kea-csv`",
        ),
        (
            "[[leases]]\nformat = \"dnsmasq\"\npath = \"dhcp.leases\"\n".to_owned(),
            r#"/etc/egress-monitor.toml:4:8: leases[0].path: invalid lease file path "dhcp.leases": must be absolute, like "/tmp/dhcp.leases""#,
        ),
        (
            "[[leases]]\nformat = \"dnsmasq\"\npath = \"\"\n".to_owned(),
            r#"/etc/egress-monitor.toml:4:8: leases[0].path: invalid lease file path "": must be absolute, like "/tmp/dhcp.leases""#,
        ),
        (
            "[[leases]]\nformat = \"dnsmasq\"\npath = 5\n".to_owned(),
            r#"/etc/egress-monitor.toml:4:8: leases[0].path: invalid type: integer `5`, expected an absolute path like "/tmp/dhcp.leases""#,
        ),
        (
            format!("{DNSMASQ}[[leases]]\nformat = \"odhcpd\"\npath = \"/tmp/dhcp.leases\"\n"),
            r#"/etc/egress-monitor.toml:7:8: leases[1].path: lease file "/tmp/dhcp.leases" is already listed at leases[0]; each file is read once"#,
        ),
        (
            // The same file, spelled differently.
            format!("{DNSMASQ}[[leases]]\nformat = \"dnsmasq\"\npath = \"/tmp//dhcp.leases/\"\n"),
            r#"/etc/egress-monitor.toml:7:8: leases[1].path: lease file "/tmp//dhcp.leases/" is already listed at leases[0]; each file is read once"#,
        ),
        (
            "[[leases]]\nformat = \"dnsmasq\"\n".to_owned(),
            "/etc/egress-monitor.toml:2:1: leases[0]: missing key `path`",
        ),
        (
            "[[leases]]\npath = \"/tmp/dhcp.leases\"\n".to_owned(),
            "/etc/egress-monitor.toml:2:1: leases[0]: missing key `format`",
        ),
        (
            format!("{DNSMASQ}file = \"/tmp/odhcpd\"\n"),
            "/etc/egress-monitor.toml:5:1: leases[0].file: unknown key `file`, expected `format` or `path`",
        ),
        (
            "leases = \"/tmp/dhcp.leases\"\n".to_owned(),
            r#"/etc/egress-monitor.toml:2:10: leases: invalid type: string "/tmp/dhcp.leases", expected an array of tables: [[leases]] with format and path"#,
        ),
        (
            "leases = [\"/tmp/dhcp.leases\"]\n".to_owned(),
            r#"/etc/egress-monitor.toml:2:11: leases[0]: invalid type: string "/tmp/dhcp.leases", expected a lease file table like { format = "dnsmasq", path = "/tmp/dhcp.leases" }"#,
        ),
    ];
    for (rest, expected) in cases {
        let src = format!("lan = [\"br-lan\"]\n{rest}");
        assert_eq!(
            load_err(&src, &Overrides::default()).to_string(),
            *expected,
            "{src:?}"
        );
    }
}
