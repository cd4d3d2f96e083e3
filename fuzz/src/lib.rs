//! What every fuzz target checks of the names the parsers return: the bounds and the character
//! sets the parsers promise (`monitor::parsers`), checked here independently of the code that
//! enforces them.

use monitor::parsers::{MAX_DEVICE_NAME_LEN, MAX_DNS_NAME_LEN};

/// A destination's host name as the DNS and TLS parsers return it: lowercase, no trailing dot,
/// at most 253 characters, labels of 1 to 63 letters, digits, `-` and `_`.
pub fn assert_host_name(name: &str) {
    assert!(
        (1..=MAX_DNS_NAME_LEN).contains(&name.len()),
        "host name of {} bytes: {name:?}",
        name.len()
    );
    for label in name.split('.') {
        assert!(
            (1..=63).contains(&label.len()),
            "label of {} bytes in {name:?}",
            label.len()
        );
        assert!(
            label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'),
            "label {label:?} of {name:?}"
        );
    }
}

/// A device's name as DHCP and the lease parsers return it: not empty, at most 63 bytes, no
/// surrounding whitespace or trailing dot, no control or invisible formatting characters.
pub fn assert_device_name(name: &str) {
    assert!(
        (1..=MAX_DEVICE_NAME_LEN).contains(&name.len()),
        "device name of {} bytes: {name:?}",
        name.len()
    );
    assert_eq!(name, name.trim(), "device name with surrounding whitespace");
    assert!(
        !name.ends_with('.'),
        "device name with a trailing dot: {name:?}"
    );
    assert!(
        !name.chars().any(|c| c.is_control()
            || matches!(c,
                '\u{00ad}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}'
                | '\u{feff}')),
        "device name with a control or formatting character: {name:?}"
    );
}

/// An error message meant for a log line: not empty, and bounded whatever the input's size.
pub fn assert_message(message: &str, limit: usize) {
    assert!(!message.is_empty(), "an empty error message");
    assert!(
        message.len() <= limit,
        "an error message of {} bytes: {:?}...",
        message.len(),
        &message[..message.floor_char_boundary(200)]
    );
}
