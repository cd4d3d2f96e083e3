//! The LAN side: interface names and local prefixes, from the file and the flags.

use super::*;

#[test]
fn list_flags_replace_the_files_list() {
    /// (file, --lan, expected lan)
    type Case<'a> = (&'a str, Option<Vec<String>>, &'a [&'a str]);
    let cases: &[Case] = &[
        ("lan = [\"a\", \"b\"]", lan(&["c"]), &["c"]),
        ("lan = [\"a\", \"b\"]", None, &["a", "b"]),
        ("lan = []", lan(&["c"]), &["c"]),
        ("", lan(&["c", "d"]), &["c", "d"]),
        // Duplicates are dropped, keeping the first.
        ("lan = [\"b\", \"a\", \"b\"]", None, &["b", "a"]),
        ("", lan(&["a", "b", "a", "b"]), &["a", "b"]),
    ];
    for (src, lan_flag, expected) in cases {
        let flags = Overrides {
            lan: lan_flag.clone(),
            ..Overrides::default()
        };
        assert_eq!(load_ok(src, &flags).lan, *expected, "{src:?} {lan_flag:?}");
    }

    let flags = Overrides {
        local_prefixes: Some(vec![net("fd01::/16")]),
        ..Overrides::default()
    };
    let config = load_ok(EXAMPLE, &flags);
    assert_eq!(config.local_prefixes, [net("fd01::/16")]);
}

#[test]
fn prefixes_lose_host_bits_and_bare_addresses_are_hosts() {
    let src =
        "lan = [\"br-lan\"]\nlocal_prefixes = [\"10.8.0.1/24\", \"192.0.2.7\", \"2001:db8::1\"]\n";
    let config = load_ok(src, &Overrides::default());
    assert_eq!(
        config.local_prefixes,
        [
            net("10.8.0.0/24"),
            net("192.0.2.7/32"),
            net("2001:db8::1/128")
        ]
    );
}

#[test]
fn interface_name_rules() {
    // (name, accepted, end of the error message)
    let cases: &[(&str, bool, &str)] = &[
        ("br-lan", true, ""),
        ("eth0.100", true, ""),
        ("wlan0:1", true, ""),
        ("fifteen-bytes-x", true, ""),
        ("sixteen-bytes-xx", false, "longer than 15 bytes"),
        ("", false, "must not be empty"),
        ("a/b", false, "must not contain '/', whitespace or NUL"),
        ("a b", false, "must not contain '/', whitespace or NUL"),
        ("a\tb", false, "must not contain '/', whitespace or NUL"),
        ("a\0b", false, "must not contain '/', whitespace or NUL"),
        (".", false, "not a valid interface name"),
        ("..", false, "not a valid interface name"),
    ];
    for (name, accepted, why) in cases {
        let quoted = toml::Value::String(name.to_string()).to_string();
        let from_file = load(&format!("lan = [{quoted}]\n"), &Overrides::default());
        let from_flag = load(
            "",
            &Overrides {
                lan: lan(&[name]),
                ..Overrides::default()
            },
        );
        for (result, prefix) in [
            (from_file, "/etc/egress-monitor.toml:1:8: lan[0]: "),
            (from_flag, "--lan: "),
        ] {
            match result {
                Ok(config) => {
                    assert!(accepted, "{name:?} was accepted");
                    assert_eq!(config.lan, [*name]);
                }
                Err(err) => {
                    let err = err.to_string();
                    assert!(!accepted, "{name:?} was rejected: {err}");
                    assert_eq!(
                        err,
                        format!("{prefix}invalid interface name {name:?}: {why}")
                    );
                }
            }
        }
    }
}
