//! The configuration file: any text is either a configuration or one line saying what is wrong,
//! never a panic or a hang (libFuzzer's `-timeout` makes a slow input a failure). A
//! configuration that is accepted renders (`Config::to_toml`, what `--check-config` prints) to
//! a file that reads back to the same value, and renders the same again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use monitor::config::{Config, Overrides};
use monitor_fuzz::assert_message;

fuzz_target!(|data: &[u8]| {
    // `Config::load` reads the file as UTF-8: other bytes are a read error before parsing.
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let overrides = Overrides::default();
    match Config::from_toml_str(src, None, &overrides) {
        Ok(config) => {
            let text = config.to_toml();
            let again = match Config::from_toml_str(&text, None, &overrides) {
                Ok(again) => again,
                Err(e) => panic!("the rendered configuration is rejected: {e}\n{text}"),
            };
            assert_eq!(again, config, "the rendered configuration differs:\n{text}");
            assert_eq!(again.to_toml(), text, "rendering is not stable");
        }
        Err(e) => {
            let message = e.to_string();
            assert!(
                !message.contains('\n'),
                "a message of several lines: {message:?}"
            );
            // It may quote the offending value (escaped), never much more.
            assert_message(&message, 1024 + 16 * src.len());
        }
    }
});
