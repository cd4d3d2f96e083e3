//! DNS responses as the sniffer copies them (a UDP payload, or a TCP segment with its length
//! prefix): never a panic, at most `MAX_BINDINGS` bindings, every name a bounded host name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use monitor::parsers::dns::{self, MAX_BINDINGS, Transport};
use monitor_fuzz::{assert_host_name, assert_message};

fuzz_target!(|data: &[u8]| {
    for transport in [Transport::Udp, Transport::Tcp] {
        match dns::parse_response(data, transport) {
            Ok(response) => {
                assert!(response.bindings.len() <= MAX_BINDINGS, "{response:?}");
                // Bindings come from answer records, which take 16 bytes at least (a compressed
                // name, type, class, TTL, length and 4 bytes of address).
                assert!(response.bindings.len() * 16 <= data.len(), "{response:?}");
                for binding in &response.bindings {
                    assert_host_name(&binding.name);
                }
                if let Some(question) = &response.question {
                    assert_host_name(question);
                }
            }
            Err(e) => assert_message(&e.to_string(), 1024),
        }
    }
});
