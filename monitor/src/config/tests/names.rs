//! `[names]` (durations, bounds, public resolvers) and how named destinations are labelled.

use super::*;
use crate::config::file::EXPECT_RESOLVER;

#[test]
fn default_public_resolvers_are_the_well_known_ones() {
    let listed: Vec<IpAddr> = WELL_KNOWN_RESOLVERS.iter().map(|a| ip(a)).collect();
    assert_eq!(DEFAULT_PUBLIC_RESOLVERS, listed);
    assert_eq!(dedup(listed).len(), DEFAULT_PUBLIC_RESOLVERS.len());
    assert_eq!(
        NamesConfig::default().public_resolvers,
        DEFAULT_PUBLIC_RESOLVERS
    );
}

#[test]
fn destination_label_from_file_and_flag() {
    // (file line, --destination-label, expected)
    let cases: &[(&str, Option<LabelMode>, LabelMode)] = &[
        ("", None, LabelMode::Domain),
        ("destination_label = \"domain\"", None, LabelMode::Domain),
        ("destination_label = \"host\"", None, LabelMode::Host),
        ("destination_label = \"address\"", None, LabelMode::Address),
        ("", Some(LabelMode::Host), LabelMode::Host),
        (
            "destination_label = \"host\"",
            Some(LabelMode::Address),
            LabelMode::Address,
        ),
    ];
    for (line, flag, expected) in cases {
        let src = format!("lan = [\"br-lan\"]\n{line}\n");
        let flags = Overrides {
            destination_label: *flag,
            ..Overrides::default()
        };
        assert_eq!(
            load_ok(&src, &flags).destination_label,
            *expected,
            "{src:?}"
        );
    }

    let bad: &[(&str, &str)] = &[
        (
            "destination_label = \"fqdn\"",
            "/etc/egress-monitor.toml:2:21: destination_label: unknown variant `fqdn`, expected one of `domain`, `host`, `address`",
        ),
        (
            "destination_label = \"Host\"",
            "/etc/egress-monitor.toml:2:21: destination_label: unknown variant `Host`, expected one of `domain`, `host`, `address`",
        ),
    ];
    for (line, expected) in bad {
        let src = format!("lan = [\"br-lan\"]\n{line}\n");
        assert_eq!(load_err(&src, &Overrides::default()).to_string(), *expected);
    }

    // The file, the flag and `as_str` spell each mode the same way.
    for mode in [LabelMode::Domain, LabelMode::Host, LabelMode::Address] {
        let value = clap::ValueEnum::to_possible_value(&mode).unwrap();
        assert_eq!(value.get_name(), mode.as_str());
        let src = format!(
            "lan = [\"br-lan\"]\ndestination_label = \"{}\"\n",
            mode.as_str()
        );
        assert_eq!(load_ok(&src, &Overrides::default()).destination_label, mode);
    }
}

#[test]
fn names_durations_and_bounds() {
    let defaults = NamesConfig::default();
    let secs = Duration::from_secs;
    // ([names] line, (dns_grace, tls_ttl, max_names_per_device) or the whole error)
    type Case<'a> = (&'a str, Result<(Duration, Duration, u32), &'a str>);
    let cases: &[Case] = &[
        ("", Ok((secs(60), secs(3_600), 4_096))),
        ("dns_grace = \"0s\"", Ok((secs(0), secs(3_600), 4_096))),
        ("dns_grace = \"90s\"", Ok((secs(90), secs(3_600), 4_096))),
        ("dns_grace = \"1d\"", Ok((secs(86_400), secs(3_600), 4_096))),
        ("tls_ttl = \"1s\"", Ok((secs(60), secs(1), 4_096))),
        ("tls_ttl = \"7d\"", Ok((secs(60), secs(604_800), 4_096))),
        ("max_names_per_device = 16", Ok((secs(60), secs(3_600), 16))),
        (
            "max_names_per_device = 1048576",
            Ok((secs(60), secs(3_600), 1_048_576)),
        ),
        (
            "dns_grace = \"1d 1s\"",
            Err(
                "/etc/egress-monitor.toml:3:13: names.dns_grace: 1day 1s is out of range: allowed 0s to 1day",
            ),
        ),
        (
            "dns_grace = \"soon\"",
            Err(
                r#"/etc/egress-monitor.toml:3:13: names.dns_grace: invalid duration "soon": expected a number like "1s" or "500ms""#,
            ),
        ),
        (
            "dns_grace = 60",
            Err(
                r#"/etc/egress-monitor.toml:3:13: names.dns_grace: invalid type: integer `60`, expected a duration like "1s" or "500ms""#,
            ),
        ),
        (
            "tls_ttl = \"500ms\"",
            Err(
                "/etc/egress-monitor.toml:3:11: names.tls_ttl: 500ms is out of range: allowed 1s to 7days",
            ),
        ),
        (
            "tls_ttl = \"0s\"",
            Err(
                "/etc/egress-monitor.toml:3:11: names.tls_ttl: 0s is out of range: allowed 1s to 7days",
            ),
        ),
        (
            "tls_ttl = \"8d\"",
            Err(
                "/etc/egress-monitor.toml:3:11: names.tls_ttl: 8days is out of range: allowed 1s to 7days",
            ),
        ),
        (
            "max_names_per_device = 15",
            Err(
                "/etc/egress-monitor.toml:3:24: names.max_names_per_device: 15 is out of range: allowed 16 to 1048576",
            ),
        ),
        (
            "max_names_per_device = 1048577",
            Err(
                "/etc/egress-monitor.toml:3:24: names.max_names_per_device: 1048577 is out of range: allowed 16 to 1048576",
            ),
        ),
        (
            "dns_grase = \"1m\"",
            Err(
                "/etc/egress-monitor.toml:3:1: names.dns_grase: unknown key `dns_grase`, expected one of `dns_grace`, `tls_ttl`, `max_names_per_device`, `public_resolvers`",
            ),
        ),
    ];
    for (line, expected) in cases {
        let src = format!("lan = [\"br-lan\"]\n[names]\n{line}\n");
        match expected {
            Ok((dns_grace, tls_ttl, max_names_per_device)) => assert_eq!(
                load_ok(&src, &Overrides::default()).names,
                NamesConfig {
                    dns_grace: *dns_grace,
                    tls_ttl: *tls_ttl,
                    max_names_per_device: *max_names_per_device,
                    ..defaults.clone()
                },
                "{src:?}"
            ),
            Err(message) => {
                assert_eq!(load_err(&src, &Overrides::default()).to_string(), *message)
            }
        }
    }

    let err = load_err("lan = [\"br-lan\"]\nnames = 5\n", &Overrides::default());
    assert_eq!(
        err.to_string(),
        "/etc/egress-monitor.toml:2:9: names: invalid type: integer `5`, expected a table of naming settings, like [names]"
    );
}

#[test]
fn public_resolvers_are_single_addresses() {
    const PREFIX: &str = "a prefix, not an address; list each resolver's address, like \"1.1.1.1\"";
    const PORT: &str =
        "has a port; give the address alone, like \"1.1.1.1\" or \"2606:4700:4700::1111\"";
    const NOT_IP: &str = "expected an IP address like \"1.1.1.1\" or \"2606:4700:4700::1111\"";
    // (value as written, the list read, or the error after "/etc/egress-monitor.toml:")
    let cases: &[(&str, Result<&[&str], String>)] = &[
        ("[]", Ok(&[])),
        ("[\"1.1.1.1\"]", Ok(&["1.1.1.1"])),
        (
            "[\"9.9.9.9\", \"2620:fe::fe\", \"9.9.9.9\", \"2620:FE:0::FE\"]",
            Ok(&["9.9.9.9", "2620:fe::fe"]),
        ),
        // An IPv4-mapped address is the IPv4 address the traffic carries.
        ("[\"::ffff:1.1.1.1\", \"1.1.1.1\"]", Ok(&["1.1.1.1"])),
        (
            "[\"1.1.1.0/24\"]",
            Err(format!(
                "3:21: names.public_resolvers[0]: invalid resolver address \"1.1.1.0/24\": {PREFIX}"
            )),
        ),
        (
            "[\"1.1.1.1\", \"1.1.1.1/32\"]",
            Err(format!(
                "3:32: names.public_resolvers[1]: invalid resolver address \"1.1.1.1/32\": {PREFIX}"
            )),
        ),
        (
            "[\"1.1.1.1:53\"]",
            Err(format!(
                "3:21: names.public_resolvers[0]: invalid resolver address \"1.1.1.1:53\": {PORT}"
            )),
        ),
        (
            "[\"[2606:4700:4700::1111]:443\"]",
            Err(format!(
                "3:21: names.public_resolvers[0]: invalid resolver address \"[2606:4700:4700::1111]:443\": {PORT}"
            )),
        ),
        (
            "[\"dns.google\"]",
            Err(format!(
                "3:21: names.public_resolvers[0]: invalid resolver address \"dns.google\": {NOT_IP}"
            )),
        ),
        (
            "[\"1.1.1\"]",
            Err(format!(
                "3:21: names.public_resolvers[0]: invalid resolver address \"1.1.1\": {NOT_IP}"
            )),
        ),
        (
            "[\"\"]",
            Err(format!(
                "3:21: names.public_resolvers[0]: invalid resolver address \"\": {NOT_IP}"
            )),
        ),
        (
            "[1]",
            Err(format!(
                "3:21: names.public_resolvers[0]: invalid type: integer `1`, expected {EXPECT_RESOLVER}"
            )),
        ),
        (
            "\"1.1.1.1\"",
            Err(
                "3:20: names.public_resolvers: invalid type: string \"1.1.1.1\", expected a list of IP addresses like [\"1.1.1.1\"]"
                    .to_owned(),
            ),
        ),
    ];
    for (value, expected) in cases {
        let src = format!("lan = [\"br-lan\"]\n[names]\npublic_resolvers = {value}\n");
        match expected {
            Ok(addrs) => {
                let addrs: Vec<IpAddr> = addrs.iter().map(|a| ip(a)).collect();
                assert_eq!(
                    load_ok(&src, &Overrides::default()).names.public_resolvers,
                    addrs,
                    "{src:?}"
                );
            }
            Err(message) => assert_eq!(
                load_err(&src, &Overrides::default()).to_string(),
                format!("/etc/egress-monitor.toml:{message}")
            ),
        }
    }
}
