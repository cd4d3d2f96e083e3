//! Every key is read, defaults fill the rest, and flags win over the file.

use super::*;

#[test]
fn defaults_fill_every_missing_key() {
    let expected = Config {
        lan: vec!["br-lan".into()],
        listen: "0.0.0.0:10100".parse().unwrap(),
        poll_interval: Duration::from_secs(1),
        local_prefixes: vec![],
        flow_map_entries: 65_536,
        device_map_entries: 4_096,
        max_destinations_per_device: 1_024,
        attach: AttachPolicy::Auto,
        destination_label: LabelMode::Domain,
        sniff_ring_bytes: 1_048_576,
        names: NamesConfig {
            dns_grace: Duration::from_secs(60),
            tls_ttl: Duration::from_secs(3_600),
            max_names_per_device: 4_096,
            public_resolvers: DEFAULT_PUBLIC_RESOLVERS.to_vec(),
        },
        leases: vec![],
        devices: BTreeMap::new(),
        state_dir: PathBuf::from("/var/lib/egress-monitor"),
        state_write_interval: Duration::from_secs(300),
        pin_dir: Some(PathBuf::from("/sys/fs/bpf/egress-monitor")),
        max_series: 100_000,
        policy: PolicyConfig::default(),
        enrich: EnrichConfig {
            country_db: None,
            asn_db: None,
            country_layout: LayoutSetting::Auto,
            asn_layout: LayoutSetting::Auto,
            cache_entries: 65_536,
            max_as_per_device: 32,
        },
    };
    assert_eq!(
        load_ok("lan = [\"br-lan\"]\n", &Overrides::default()),
        expected
    );
    // No file at all: the flags make the whole configuration.
    let flags = Overrides {
        lan: lan(&["br-lan"]),
        ..Overrides::default()
    };
    assert_eq!(Config::load(None, &flags).unwrap(), expected);
}

#[test]
fn every_key_is_parsed() {
    let config = load_ok(EXAMPLE, &Overrides::default());
    assert_eq!(config.lan, ["br-lan", "wlan0"]);
    assert_eq!(config.listen, "[::]:9100".parse().unwrap());
    assert_eq!(config.poll_interval, Duration::from_millis(2500));
    assert_eq!(config.local_prefixes, [net("10.8.0.0/24"), net("fd00::/8")]);
    assert_eq!(config.flow_map_entries, 1024);
    assert_eq!(config.device_map_entries, 256);
    assert_eq!(config.max_destinations_per_device, 512);
    assert_eq!(config.attach, AttachPolicy::Tcx);
    assert_eq!(config.destination_label, LabelMode::Host);
    assert_eq!(config.sniff_ring_bytes, 4 << 20);
    assert_eq!(config.pin_dir, Some(PathBuf::from("/sys/fs/bpf/em-test")));
    assert_eq!(
        config.names,
        NamesConfig {
            dns_grace: Duration::from_secs(300),
            tls_ttl: Duration::from_secs(1_800),
            max_names_per_device: 128,
            // In the order given, without the repeated 1.1.1.1.
            public_resolvers: vec![ip("1.1.1.1"), ip("2606:4700:4700::1111"), ip("192.0.2.53")],
        }
    );
    assert_eq!(
        config.leases,
        [
            LeaseSource {
                format: LeaseFormat::Dnsmasq,
                path: "/tmp/dhcp.leases".into(),
            },
            LeaseSource {
                format: LeaseFormat::Odhcpd,
                path: "/tmp/hosts/odhcpd".into(),
            },
        ]
    );
    let devices: Vec<(String, &str, Option<&str>)> = config
        .devices
        .iter()
        .map(|(mac, device)| {
            (
                mac.to_string(),
                device.name.as_str(),
                device.group.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        devices,
        [
            ("00:16:3e:00:00:01".to_owned(), "phone", None),
            ("00:16:3e:00:00:02".to_owned(), "laptop", None),
            ("00:16:3e:00:00:03".to_owned(), "laptop", Some("family")),
        ]
    );
    assert_eq!(
        config.device_name(&mac("00:16:3e:00:00:02")),
        Some("laptop")
    );
    assert_eq!(config.device_name(&mac("00:16:3e:00:00:09")), None);
    assert_eq!(
        config.enrich,
        EnrichConfig {
            country_db: Some("/usr/share/GeoIP/GeoLite2-Country.mmdb".into()),
            asn_db: Some("/usr/share/GeoIP/GeoLite2-ASN.mmdb".into()),
            country_layout: LayoutSetting::Auto,
            asn_layout: LayoutSetting::MaxMind,
            cache_entries: 4096,
            max_as_per_device: 32,
        }
    );
}

#[test]
fn commands_need_no_lan_interface() {
    let config = Config::load_without_lan(None, &Overrides::default()).unwrap();
    assert!(config.lan.is_empty());
    assert_eq!(config.state_dir, Path::new(DEFAULT_STATE_DIR));
}

#[test]
fn flags_override_the_file() {
    let flags = Overrides {
        lan: lan(&["eth1"]),
        listen: Some("127.0.0.1:10100".parse().unwrap()),
        poll_interval: Some(Duration::from_millis(100)),
        local_prefixes: Some(vec![net("192.168.100.0/24")]),
        flow_map_entries: Some(16_777_216),
        attach: Some(AttachPolicy::Clsact),
        destination_label: Some(LabelMode::Address),
        state_dir: Some("/run/egress".into()),
        pin_dir: Some(String::new()),
    };
    let config = load_ok(EXAMPLE, &flags);
    assert_eq!(config.state_dir, Path::new("/run/egress"));
    assert_eq!(config.pin_dir, None, "--pin-dir \"\" turns pinning off");
    assert_eq!(config.attach, AttachPolicy::Clsact);
    assert_eq!(config.destination_label, LabelMode::Address);
    assert_eq!(config.lan, ["eth1"]);
    assert_eq!(config.listen, "127.0.0.1:10100".parse().unwrap());
    assert_eq!(config.poll_interval, Duration::from_millis(100));
    assert_eq!(config.local_prefixes, [net("192.168.100.0/24")]);
    assert_eq!(config.flow_map_entries, 16_777_216);
    // Keys without a flag keep the file's value.
    assert_eq!(config.device_map_entries, 256);
    assert_eq!(config.sniff_ring_bytes, 4 << 20);
    assert_eq!(config.names.max_names_per_device, 128);
    assert_eq!(config.leases.len(), 2);
    assert_eq!(config.devices.len(), 3);
}

#[test]
fn the_shipped_example_configuration_is_valid_and_spells_out_the_defaults() {
    let shipped = include_str!("../../../../deploy/config/egress-monitor.toml");
    let config = load_ok(shipped, &Overrides::default());
    let defaults = load_ok("lan = [\"br-lan\"]\n", &Overrides::default());
    assert_eq!(config, defaults);
}

#[test]
fn attach_policy_from_file_and_flag() {
    let file = "lan = [\"br-lan\"]\nattach = \"clsact\"\n";
    assert_eq!(
        load_ok(file, &Overrides::default()).attach,
        AttachPolicy::Clsact
    );
    let flag = Overrides {
        attach: Some(AttachPolicy::Tcx),
        ..Overrides::default()
    };
    assert_eq!(load_ok(file, &flag).attach, AttachPolicy::Tcx);
    let err = Config::from_toml_str(
        "lan = [\"br-lan\"]\nattach = \"xdp\"\n",
        Some(Path::new("/etc/egress-monitor.toml")),
        &Overrides::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("/etc/egress-monitor.toml:2:10: attach: unknown variant `xdp`"),
        "{err}"
    );
}

#[test]
fn load_reads_the_file() {
    let dir = std::env::temp_dir().join(format!("egress-monitor-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("egress-monitor.toml");
    std::fs::write(&path, "lan = [\"br-lan\"]\npoll_interval = \"fast\"\n").unwrap();
    let err = Config::load(Some(&path), &Overrides::default()).unwrap_err();
    std::fs::write(&path, EXAMPLE).unwrap();
    let config = Config::load(Some(&path), &Overrides::default());
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:2:17: poll_interval: invalid duration \"fast\": expected a number like \"1s\" or \"500ms\"",
            path.display()
        )
    );
    assert_eq!(config.unwrap(), load_ok(EXAMPLE, &Overrides::default()));
}

#[test]
fn sniff_ring_bytes_is_a_power_of_two_in_range() {
    const RANGE: &str = "allowed powers of two from 65536 to 268435456";
    // (value as written, the size or the error after "LINE:COL: sniff_ring_bytes: ")
    let cases: &[(&str, Result<u32, String>)] = &[
        ("65536", Ok(65_536)),
        ("131072", Ok(131_072)),
        ("1048576", Ok(1_048_576)),
        ("268435456", Ok(268_435_456)),
        ("32768", Err(format!("32768 is out of range: {RANGE}"))),
        (
            "536870912",
            Err(format!("536870912 is out of range: {RANGE}")),
        ),
        ("0", Err(format!("0 is out of range: {RANGE}"))),
        ("-65536", Err(format!("-65536 is out of range: {RANGE}"))),
        (
            "99999999999",
            Err(format!("99999999999 is out of range: {RANGE}")),
        ),
        (
            "1000000",
            Err(format!(
                "1000000 is not a power of two: use 524288 or 1048576 ({RANGE})"
            )),
        ),
        (
            "65537",
            Err(format!(
                "65537 is not a power of two: use 65536 or 131072 ({RANGE})"
            )),
        ),
        (
            "268435455",
            Err(format!(
                "268435455 is not a power of two: use 134217728 or 268435456 ({RANGE})"
            )),
        ),
        (
            "\"1MiB\"",
            Err(
                "invalid type: string \"1MiB\", expected a power of two from 65536 to 268435456"
                    .to_owned(),
            ),
        ),
    ];
    for (value, expected) in cases {
        let src = format!("lan = [\"br-lan\"]\nsniff_ring_bytes = {value}\n");
        match expected {
            Ok(n) => assert_eq!(load_ok(&src, &Overrides::default()).sniff_ring_bytes, *n),
            Err(message) => assert_eq!(
                load_err(&src, &Overrides::default()).to_string(),
                format!("/etc/egress-monitor.toml:2:20: sniff_ring_bytes: {message}")
            ),
        }
    }
}

/// Each default is a value the file itself could give.
#[test]
fn defaults_are_within_their_ranges() {
    assert!(POLL_INTERVAL_RANGE.contains(&DEFAULT_POLL_INTERVAL));
    assert!(FLOW_MAP_ENTRIES_RANGE.contains(&DEFAULT_FLOW_MAP_ENTRIES));
    assert!(DEVICE_MAP_ENTRIES_RANGE.contains(&DEFAULT_DEVICE_MAP_ENTRIES));
    assert!(MAX_DESTINATIONS_PER_DEVICE_RANGE.contains(&DEFAULT_MAX_DESTINATIONS_PER_DEVICE));
    assert!(SNIFF_RING_BYTES_RANGE.contains(&DEFAULT_SNIFF_RING_BYTES));
    assert!(DEFAULT_SNIFF_RING_BYTES.is_power_of_two());
    assert!(DNS_GRACE_RANGE.contains(&DEFAULT_DNS_GRACE));
    assert!(TLS_TTL_RANGE.contains(&DEFAULT_TLS_TTL));
    assert!(MAX_NAMES_PER_DEVICE_RANGE.contains(&DEFAULT_MAX_NAMES_PER_DEVICE));
    assert!(MAX_UNEXPECTED_DESTINATIONS_RANGE.contains(&DEFAULT_MAX_UNEXPECTED_DESTINATIONS));
    assert!(ENRICH_CACHE_ENTRIES_RANGE.contains(&DEFAULT_ENRICH_CACHE_ENTRIES));
}
