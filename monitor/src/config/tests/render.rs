//! `to_toml`: the effective configuration reads back to itself.

use super::*;

#[test]
fn to_toml_reads_back_to_the_same_config() {
    let mut config = load_ok(EXAMPLE, &Overrides::default());
    config.devices.insert(
        mac("02:00:00:00:00:01"),
        DeviceConfig {
            name: "Anna's \"phone\" \\ 📱".into(),
            group: Some("kids' \"toys\" \\ 🧸".into()),
        },
    );
    config.leases.push(LeaseSource {
        format: LeaseFormat::KeaCsv,
        path: "/var/lib/kea/kea-leases \"4\".csv".into(),
    });
    let text = config.to_toml();
    assert!(
        text.starts_with("lan = [\"br-lan\", \"wlan0\"]\nlisten = \"[::]:9100\"\n"),
        "{text}"
    );
    assert_eq!(load_ok(&text, &Overrides::default()), config, "{text}");

    let minimal = load_ok("lan = [\"br-lan\"]", &Overrides::default());
    let resolvers: String = WELL_KNOWN_RESOLVERS
        .iter()
        .map(|addr| format!("    \"{addr}\",\n"))
        .collect();
    assert_eq!(
        minimal.to_toml(),
        format!(
            "lan = [\"br-lan\"]\nlisten = \"0.0.0.0:10100\"\npoll_interval = \"1s\"\n\
             local_prefixes = []\nflow_map_entries = 65536\ndevice_map_entries = 4096\n\
             max_destinations_per_device = 1024\nmax_series = 100000\nattach = \"auto\"\n\
             destination_label = \"domain\"\nsniff_ring_bytes = 1048576\n\
             state_dir = \"/var/lib/egress-monitor\"\npin_dir = \"/sys/fs/bpf/egress-monitor\"\n\
             state_write_interval = \"5m\"\n\n\
             [names]\ndns_grace = \"1m\"\ntls_ttl = \"1h\"\nmax_names_per_device = 4096\n\
             public_resolvers = [\n{resolvers}]\n\n[devices]\n\n\
             [policy]\nmax_unexpected_destinations = 20\n\n\
             [enrich]\ncountry_layout = \"auto\"\nasn_layout = \"auto\"\ncache_entries = 65536\nmax_as_per_device = 32\n"
        )
    );

    // The ends of the ranges, and an empty resolver list, read back too.
    let mut edges = minimal;
    edges.destination_label = LabelMode::Address;
    edges.sniff_ring_bytes = *SNIFF_RING_BYTES_RANGE.end();
    edges.names = NamesConfig {
        dns_grace: *DNS_GRACE_RANGE.start(),
        tls_ttl: *TLS_TTL_RANGE.end(),
        max_names_per_device: *MAX_NAMES_PER_DEVICE_RANGE.start(),
        public_resolvers: vec![],
    };
    edges.enrich = EnrichConfig {
        country_db: Some("/tmp/ipinfo \"lite\".mmdb".into()),
        asn_db: Some("/tmp/ipinfo \"lite\".mmdb".into()),
        country_layout: LayoutSetting::Ipinfo,
        asn_layout: LayoutSetting::Auto,
        cache_entries: *ENRICH_CACHE_ENTRIES_RANGE.end(),
        max_as_per_device: *crate::config::defaults::MAX_AS_PER_DEVICE_RANGE.end(),
    };
    let text = edges.to_toml();
    assert!(text.contains("\npublic_resolvers = []\n"), "{text}");
    assert_eq!(load_ok(&text, &Overrides::default()), edges, "{text}");
}
