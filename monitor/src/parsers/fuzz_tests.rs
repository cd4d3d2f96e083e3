//! Property tests: every parser, fed random bytes and damaged copies of the real fixtures,
//! returns (never panics) and returns bounded output.

use proptest::collection::vec;
use proptest::prelude::*;

use super::dhcp::{self, tests::DISCOVER, tests::OFFER, tests::REQUEST};
use super::dns::{self, MAX_BINDINGS, Transport};
use super::domain::{LabelMode, destination_label};
use super::leases::{self, LeaseFormat, MAX_LEASES, MAX_SKIPPED};
use super::tls::{self, tests::SERVER_HELLO, tests::TLS12, tests::TLS13};
use super::{MAX_DEVICE_NAME_LEN, MAX_DNS_NAME_LEN};

const DNS_FIXTURES: &[(&[u8], Transport)] = &[
    (
        include_bytes!("../../tests/fixtures/dns_a_udp.bin"),
        Transport::Udp,
    ),
    (
        include_bytes!("../../tests/fixtures/dns_aaaa_udp.bin"),
        Transport::Udp,
    ),
    (
        include_bytes!("../../tests/fixtures/dns_cname_chain_udp.bin"),
        Transport::Udp,
    ),
    (
        include_bytes!("../../tests/fixtures/dns_cname_chain_tcp.bin"),
        Transport::Tcp,
    ),
    (
        include_bytes!("../../tests/fixtures/dns_nxdomain_udp.bin"),
        Transport::Udp,
    ),
    (
        include_bytes!("../../tests/fixtures/dns_query_a_udp.bin"),
        Transport::Udp,
    ),
];

const TLS_FIXTURES: &[&[u8]] = &[TLS13, TLS12, SERVER_HELLO];
const DHCP_FIXTURES: &[&[u8]] = &[DISCOVER, REQUEST, OFFER];

/// Realistic text of every lease format, to be cut and damaged.
const LEASE_TEXTS: &[(LeaseFormat, &str)] = &[
    (LeaseFormat::Dnsmasq, leases::tests::DNSMASQ_LEASES),
    (LeaseFormat::IscDhcpd, leases::tests::ISC_LEASES),
    (LeaseFormat::KeaCsv, leases::tests::KEA4_LEASES),
    (LeaseFormat::KeaCsv, leases::tests::KEA6_LEASES),
    (
        LeaseFormat::Dnsmasq,
        "0 00:00:5e:00:53:03 192.0.2.103 printer 01:00:00:5e:00:53:03\n\
         duid 00:01:00:01:2c:5e:10:00:00:00:5e:00:53:fe\n\
         1795813266 1234 2001:db8::10 laptop 00:01:00:01:2c:5e:10:00:00:00:5e:00:53:10\n",
    ),
    (
        LeaseFormat::OdhcpdHosts,
        "192.0.2.10\tphone.lan\tphone\n2001:db8::10\tlaptop\n",
    ),
    (
        LeaseFormat::Odhcpd,
        "# br-lan 00005e005301 ipv4 my-phone 1795813266 c0000265 32 192.0.2.101/32\n\
         # br-lan 000100012c5e100000005e005310 4d2 laptop -1 10 128 2001:db8::10/128\n",
    ),
    (
        LeaseFormat::IscDhcpd,
        "lease 192.0.2.10 {\n  starts 4 2026/11/26 08:00:00;\n  ends 4 2026/11/26 20:00:00;\n  \
         binding state active;\n  hardware ethernet 00:00:5e:00:53:01;\n  \
         uid \"\\001\\000\\000^\\000S\\001\";\n  client-hostname \"my-phone\";\n}\n\
         ia-na \"\\001\\000\\000\\000\\000\\003\\000\\001\\000\\000^\\000S\\020\" {\n  \
         iaaddr 2001:db8::10 {\n    binding state active;\n    ends never;\n  }\n}\n",
    ),
    (
        LeaseFormat::KeaCsv,
        "address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,state,user_context,pool_id\n\
         192.0.2.10,00:00:5e:00:53:01,01:00:00:5e:00:53:01,3600,1795813266,1,0,0,my&#x2cphone,0,,0\n",
    ),
    (
        LeaseFormat::KeaCsv,
        "address,duid,valid_lifetime,expire,subnet_id,pref_lifetime,lease_type,iaid,prefix_len,fqdn_fwd,fqdn_rev,hostname,hwaddr,state\n\
         2001:db8::10,00:03:00:01:00:00:5e:00:53:10,3600,1795813266,1,3000,0,1,128,0,0,laptop,,0\n",
    ),
];

const ALL_FORMATS: &[LeaseFormat] = &[
    LeaseFormat::Dnsmasq,
    LeaseFormat::OdhcpdHosts,
    LeaseFormat::Odhcpd,
    LeaseFormat::IscDhcpd,
    LeaseFormat::KeaCsv,
];

/// Runs every binary parser on `bytes` and checks that what comes out is bounded.
fn check_binary_parsers(bytes: &[u8]) {
    for transport in [Transport::Udp, Transport::Tcp] {
        if let Ok(response) = dns::parse_response(bytes, transport) {
            assert!(response.bindings.len() <= MAX_BINDINGS);
            for binding in &response.bindings {
                assert!(binding.name.len() <= MAX_DNS_NAME_LEN, "{binding:?}");
            }
            if let Some(question) = &response.question {
                assert!(question.len() <= MAX_DNS_NAME_LEN);
            }
        }
    }
    match tls::client_hello_server_name(bytes) {
        Ok(name) => assert!(name.len() <= MAX_DNS_NAME_LEN, "{name:?}"),
        Err(e) => assert!(e.to_string().len() < 1024, "{e}"),
    }
    if let Ok(request) = dhcp::parse_request(bytes)
        && let Some(name) = &request.hostname
    {
        assert!(name.len() <= MAX_DEVICE_NAME_LEN, "{name:?}");
    }
}

/// Runs the lease parser on `text` and checks that what comes out is bounded by the input.
fn check_leases(format: LeaseFormat, text: &str) {
    let leases = leases::parse(format, text);
    let lines = text.lines().count();
    assert!(leases.leases.len() <= MAX_LEASES);
    assert!(leases.leases.len() <= lines * 16, "{format}: {leases:?}");
    assert!(leases.skipped.len() <= MAX_SKIPPED);
    for lease in &leases.leases {
        if let Some(name) = &lease.hostname {
            assert!(name.len() <= MAX_DEVICE_NAME_LEN, "{format}: {name:?}");
            assert!(!name.chars().any(char::is_control), "{format}: {name:?}");
        }
    }
    for skipped in &leases.skipped {
        assert!(
            (1..=lines.max(1)).contains(&skipped.line),
            "{format}: {skipped:?}"
        );
        assert!(skipped.reason.len() < 256, "{format}: {skipped:?}");
    }
}

/// One fixture, damaged: cut at some length, then some bits flipped.
fn damaged(fixtures: &'static [&'static [u8]]) -> impl Strategy<Value = Vec<u8>> {
    (
        0..fixtures.len(),
        any::<prop::sample::Index>(),
        vec((any::<prop::sample::Index>(), 0u8..8), 0..8),
    )
        .prop_map(move |(which, cut, flips)| {
            let fixture = fixtures[which];
            let mut bytes = fixture[..cut.index(fixture.len() + 1)].to_vec();
            if !bytes.is_empty() {
                for (at, bit) in flips {
                    let i = at.index(bytes.len());
                    bytes[i] ^= 1 << bit;
                }
            }
            bytes
        })
}

const DNS_BYTES: &[&[u8]] = &[
    include_bytes!("../../tests/fixtures/dns_a_udp.bin"),
    include_bytes!("../../tests/fixtures/dns_aaaa_udp.bin"),
    include_bytes!("../../tests/fixtures/dns_cname_chain_udp.bin"),
    include_bytes!("../../tests/fixtures/dns_cname_chain_tcp.bin"),
    include_bytes!("../../tests/fixtures/dns_nxdomain_udp.bin"),
    include_bytes!("../../tests/fixtures/dns_query_a_udp.bin"),
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in vec(any::<u8>(), 0..600)) {
        check_binary_parsers(&bytes);
    }

    #[test]
    fn random_bytes_behind_valid_headers_never_panic(
        kind in 0..4usize,
        tail in vec(any::<u8>(), 0..400),
    ) {
        // Headers that get past the first checks, so the decoders see the random rest.
        let head: &[u8] = match kind {
            0 => &DNS_BYTES[0][..12],
            1 => &TLS13[..9],
            2 => &DISCOVER[..240],
            _ => &DNS_BYTES[3][..14],
        };
        let mut bytes = head.to_vec();
        bytes.extend_from_slice(&tail);
        check_binary_parsers(&bytes);
    }

    #[test]
    fn damaged_dns_fixtures_never_panic(bytes in damaged(DNS_BYTES)) {
        check_binary_parsers(&bytes);
    }

    #[test]
    fn damaged_tls_fixtures_never_panic(bytes in damaged(TLS_FIXTURES)) {
        check_binary_parsers(&bytes);
    }

    #[test]
    fn damaged_dhcp_fixtures_never_panic(bytes in damaged(DHCP_FIXTURES)) {
        check_binary_parsers(&bytes);
    }

    #[test]
    fn truncated_tls_fixtures_name_the_server_or_say_truncated(
        which in 0..2usize,
        cut in any::<prop::sample::Index>(),
    ) {
        let hello = TLS_FIXTURES[which];
        let cut = cut.index(hello.len() + 1);
        match tls::client_hello_server_name(&hello[..cut]) {
            Ok(name) => prop_assert_eq!(name, "tracker.example.co.uk"),
            Err(e) => prop_assert!(matches!(e, tls::TlsError::Truncated { .. }), "{}", e),
        }
    }

    #[test]
    fn cut_dns_fixtures_are_errors_not_wrong_answers(
        which in 0..DNS_FIXTURES.len(),
        cut in any::<prop::sample::Index>(),
    ) {
        let (bytes, transport) = DNS_FIXTURES[which];
        let cut = cut.index(bytes.len());
        // Any strict prefix of a message is missing records or RDATA, so it cannot parse as
        // a response with bindings it does not have.
        if let Ok(response) = dns::parse_response(&bytes[..cut], transport) {
            prop_assert!(response.bindings.is_empty(), "{:?}", response);
        }
    }

    #[test]
    fn random_text_in_every_lease_format(text in ".{0,400}", format in 0..ALL_FORMATS.len()) {
        check_leases(ALL_FORMATS[format], &text);
    }

    #[test]
    fn lease_like_text_in_every_lease_format(
        lines in vec(
            prop::sample::select(&[
                "#", "lease", "{", "}", ";", "\"", "1795813266", "0", "-1", "*", "-", "ipv4",
                "192.0.2.10", "2001:db8::10", "00:00:5e:00:53:01", "00005e005301",
                "00:01:00:01:2c:5e:10:00:00:00:5e:00:53:10", "binding", "state", "active",
                "ends", "never", "epoch", "4", "2026/11/26", "20:00:00", "hardware", "ethernet",
                "client-hostname", "\"name\"", "ia-na", "iaaddr", "address,hwaddr,hostname",
                "address,duid,valid_lifetime,lease_type", ",", "&#x2c", "duid", "br-lan",
                "/128", "\t", " ", "\n",
            ][..]),
            0..80,
        ),
        format in 0..ALL_FORMATS.len(),
    ) {
        let text: String = lines.concat();
        check_leases(ALL_FORMATS[format], &text);
    }

    #[test]
    fn damaged_realistic_lease_files(
        which in 0..LEASE_TEXTS.len(),
        cut in any::<prop::sample::Index>(),
        insert in prop::option::of((any::<prop::sample::Index>(), "[{};\"#,\n \\\\]{1,3}")),
        format in 0..ALL_FORMATS.len(),
    ) {
        let (own_format, text) = LEASE_TEXTS[which];
        let mut cut = cut.index(text.len() + 1);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut text = text[..cut].to_owned();
        if let Some((at, junk)) = insert {
            let mut at = at.index(text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            text.insert_str(at, &junk);
        }
        check_leases(own_format, &text);
        check_leases(ALL_FORMATS[format], &text);
    }

    #[test]
    fn destination_labels_are_bounded(
        host in prop::option::of(".{0,300}"),
        addr in any::<std::net::IpAddr>(),
        mode in prop::sample::select(&[LabelMode::Domain, LabelMode::Host, LabelMode::Address][..]),
    ) {
        let label = destination_label(mode, host.as_deref(), addr);
        prop_assert!(label.len() <= MAX_DNS_NAME_LEN);
        prop_assert!(!label.is_empty());
        prop_assert_eq!(label.to_lowercase(), label.clone());
    }
}

#[test]
fn deeply_nested_isc_blocks_are_bounded() {
    let text = format!(
        "lease 192.0.2.1 {}{}",
        "{".repeat(10_000),
        "}".repeat(10_000)
    );
    check_leases(LeaseFormat::IscDhcpd, &text);
    let text = "lease 192.0.2.1 {\n".repeat(5_000);
    check_leases(LeaseFormat::IscDhcpd, &text);
}
