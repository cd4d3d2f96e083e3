//! `[policy]`: sections resolved to devices and groups, and its errors.

use super::*;

#[test]
fn policy_sections_are_resolved_to_devices_and_groups() {
    let config = load_ok(EXAMPLE, &Overrides::default());
    let policy = &config.policy;
    assert_eq!(policy.max_unexpected_destinations, 5);
    assert_eq!(
        policy.default.as_ref().unwrap().learn,
        Some(Duration::from_secs(7 * 86_400))
    );
    let family = &policy.groups["family"];
    assert_eq!(
        family
            .deny
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["ads.example", "198.51.100.0/24"]
    );
    // "phone" names one MAC: the section is stored under it.
    let phone = &policy.devices[&mac("00:16:3e:00:00:01")];
    assert_eq!(
        phone
            .allow
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["updates.vendor.example", "192.0.2.7", "2001:db8::/32"]
    );
    assert_eq!(policy.devices.len(), 1);
    assert_eq!(config.state_dir, Path::new("/var/lib/egress-state"));
    // The device's own section wins over its group's and the default.
    assert!(matches!(
        policy.applies(mac("00:16:3e:00:00:01"), None),
        Applies::Device(_)
    ));
    assert!(matches!(
        policy.applies(mac("00:16:3e:00:00:03"), Some("family")),
        Applies::Group("family", _)
    ));
    assert!(matches!(
        policy.applies(mac("00:16:3e:00:00:09"), None),
        Applies::Default(_)
    ));
}

#[test]
fn policy_errors_name_the_line_the_key_and_the_reason() {
    let devices = "lan = [\"br-lan\"]\n[devices]\n\"02:00:00:00:00:01\" = { name = \"cam\", group = \"iot\" }\n\"02:00:00:00:00:02\" = \"cam\"\n";
    let cases = [
        (
            "[policy.devices.camera]\nallow = []\n",
            "5:17: policy.devices.camera: \"camera\" is neither a MAC address nor the name of a device in [devices]",
        ),
        (
            "[policy.groups.iott]\n",
            "5:16: policy.groups.iott: no device in [devices] has group \"iott\" (groups: iot)",
        ),
        (
            "[policy.devices.cam]\nallow = [\"vendor.example\", \"*.evil.example\"]\n",
            "6:28: policy.devices.cam.allow[1]: invalid rule \"*.evil.example\": write \"evil.example\"",
        ),
        (
            "[policy.devices.cam]\nallow = [\"vendor.example\", \"country:CHN\"]\n",
            "6:28: policy.devices.cam.allow[1]: invalid rule \"country:CHN\": a country is an ISO 3166 two-letter code",
        ),
        (
            "[policy.devices.cam]\ndeny = [\"asn:AS0\"]\n",
            "6:9: policy.devices.cam.deny[0]: invalid rule \"asn:AS0\": an autonomous system is a number from 1 to 4294967295",
        ),
        (
            "[policy.default]\nlearn = \"7 fortnights\"\n",
            "6:9: policy.default.learn: invalid duration",
        ),
        (
            "[policy.default]\nlearn = \"0s\"\n",
            "6:9: policy.default.learn:",
        ),
        (
            "[policy.default]\nallwo = []\n",
            "6:1: policy.default.allwo: unknown key `allwo`, expected one of `allow`, `deny`, `learn`",
        ),
        (
            "[policy]\nmax_unexpected_destinations = 0\n",
            "6:31: policy.max_unexpected_destinations: 0 is out of range: from 1 to 10000",
        ),
        (
            "[policy.devices.cam]\n[policy.devices.\"02:00:00:00:00:01\"]\n",
            "5:17: policy.devices.cam: 02:00:00:00:00:01 has two policy sections",
        ),
        (
            "[policy.devices.\"01:00:5e:00:00:01\"]\n",
            "multicast address",
        ),
    ];
    for (policy, expected) in cases {
        let src = format!("{devices}{policy}");
        let err =
            Config::from_toml_str(&src, Some(Path::new("/etc/e.toml")), &Overrides::default())
                .expect_err(policy)
                .to_string();
        assert!(
            err.contains(expected),
            "{policy:?}:\n{err}\nexpected {expected}"
        );
        assert!(err.starts_with("/etc/e.toml:"), "{err}");
    }
    let err = Config::from_toml_str(
        "lan = [\"br-lan\"]\nstate_dir = \"var/lib\"\n",
        None,
        &Overrides::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("state_dir: invalid state directory \"var/lib\": must be absolute"),
        "{err}"
    );
}
