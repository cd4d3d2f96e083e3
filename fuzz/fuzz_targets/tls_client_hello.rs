//! TLS records that may hold a ClientHello: never a panic; a server name is a bounded host
//! name, and an error is a short message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use monitor::parsers::tls;
use monitor_fuzz::{assert_host_name, assert_message};

fuzz_target!(|data: &[u8]| {
    match tls::client_hello_server_name(data) {
        Ok(name) => assert_host_name(&name),
        Err(e) => assert_message(&e.to_string(), 1024),
    }
});
