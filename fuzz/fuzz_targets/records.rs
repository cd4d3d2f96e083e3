//! A whole record from the sniff ring (a `SniffHeader`, then the captured payload), decoded as
//! the sniff thread does: never a panic, and what comes out is bounded as each parser promises.
#![no_main]

use libfuzzer_sys::fuzz_target;
use monitor::naming::{KINDS, Observation, Seen, ServerName};
use monitor::parsers::dns::MAX_BINDINGS;
use monitor_fuzz::{assert_device_name, assert_host_name};

fuzz_target!(|data: &[u8]| {
    match monitor::naming::records::decode(data) {
        Observation::Malformed => {}
        Observation::Record { kind, seen, .. } => {
            assert!(kind < KINDS.len());
            match seen {
                Seen::DnsAnswer { bindings, .. } => {
                    let bindings = bindings.unwrap_or_default();
                    assert!(bindings.len() <= MAX_BINDINGS);
                    for binding in &bindings {
                        assert_host_name(&binding.name);
                    }
                }
                Seen::DnsQuery { .. } => {}
                Seen::TlsHello { name, .. } => match name {
                    ServerName::Named(name) => assert_host_name(&name),
                    ServerName::None | ServerName::Unparsable => {}
                },
                Seen::Dhcp(Some(Some((_, name)))) => assert_device_name(&name),
                Seen::Dhcp(_) => {}
            }
        }
    }
});
