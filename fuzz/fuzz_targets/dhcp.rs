//! DHCPv4 client messages (UDP payloads to port 67): never a panic; a host name is a cleaned,
//! bounded device name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use monitor::parsers::dhcp;
use monitor_fuzz::{assert_device_name, assert_message};

fuzz_target!(|data: &[u8]| {
    match dhcp::parse_request(data) {
        Ok(request) => {
            if let Some(name) = &request.hostname {
                assert_device_name(name);
            }
        }
        Err(e) => assert_message(&e.to_string(), 1024),
    }
});
