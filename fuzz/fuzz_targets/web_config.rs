//! The web configuration file (exporter-toolkit's YAML): any text is either a configuration,
//! or an error that is one bounded line, never a panic or a hang. A configuration that parses
//! is then built (certificates and keys read relative to a directory that does not exist), which
//! must also end in a configuration or one line.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use monitor::http::web_config::{build, file::parse};
use monitor_fuzz::assert_message;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(text) {
        Ok(format) => {
            if let Err(message) = build(&format, Path::new("/nonexistent/egress-fuzz/web.yml")) {
                assert_message(&message, 4096);
            }
        }
        Err(e) => assert_message(&e.to_string(), 4096),
    }
});
