//! `http_server_config.headers`: the few security headers the toolkit lets a file add to every
//! response, with the toolkit's rules. Only these names may be set (exactly as written: the
//! toolkit matches them case-sensitively), and two of them only to the values browsers know.
//! The list is closed on purpose, for consistency across the Prometheus ecosystem.

use std::collections::BTreeMap;

use axum::http::{HeaderName, HeaderValue};

/// Each header that may be set, and the values it may take (`None`: any).
const ALLOWED: [(&str, Option<&[&str]>); 5] = [
    ("Strict-Transport-Security", None),
    ("X-Content-Type-Options", Some(&["nosniff"])),
    ("X-Frame-Options", Some(&["deny", "sameorigin"])),
    ("X-XSS-Protection", None),
    ("Content-Security-Policy", None),
];

/// The headers to add, checked. A blank value leaves the header unset, as documented.
pub fn check(headers: &BTreeMap<String, String>) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    let mut out = Vec::new();
    for (name, value) in headers {
        let Some((_, values)) = ALLOWED.iter().find(|(n, _)| n == name) else {
            return Err(format!(
                "http_server_config.headers: HTTP header {name:?} can not be configured (allowed: {})",
                ALLOWED.map(|(n, _)| n).join(", ")
            ));
        };
        if let Some(values) = values
            && !values.contains(&value.as_str())
        {
            return Err(format!(
                "http_server_config.headers: invalid value for {name}. Expected one of: {values:?}, but got: {value:?}"
            ));
        }
        if value.is_empty() {
            continue;
        }
        let header_value = HeaderValue::from_str(value).map_err(|_| {
            format!("http_server_config.headers: {name}: the value is not a valid header value")
        })?;
        let header_name =
            HeaderName::from_bytes(name.as_bytes()).expect("the allowed names are valid");
        out.push((header_name, header_value));
    }
    Ok(out)
}
