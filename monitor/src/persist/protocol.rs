//! The control protocol: one JSON line each way on `control.sock` in the state directory,
//! between the `baseline` command and the running agent.

use serde::{Deserialize, Serialize};

/// The control socket, in the state directory.
pub const CONTROL_SOCKET: &str = "control.sock";

/// A request, one JSON line on the control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    Show { device: String },
    Accept { device: String, destination: String },
    Forget { device: String },
}

/// The answer: what to print, or why not.
#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    pub text: String,
}

/// At most this many characters of serde_json's message go into the answer.
const MAX_ERROR_CHARS: usize = 160;

/// Parses one request line, as the agent answers it: the error says what is wrong without
/// quoting the line back. serde_json quotes an offending value whole (`invalid type: string
/// "..."`), so a line of junk came back whole, escaped into more bytes than were sent (found by
/// the `control_protocol` fuzz target); its message is cut here.
pub fn parse_request(line: &str) -> Result<Request, String> {
    serde_json::from_str(line).map_err(|e| {
        let message = e.to_string();
        let mut short: String = message.chars().take(MAX_ERROR_CHARS).collect();
        if short.len() < message.len() {
            short.push_str("...");
        }
        format!("malformed request: {short}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_errors_say_why() {
        assert_eq!(
            parse_request("{\"op\":\"forget\",\"device\":\"tv\"}\n"),
            Ok(Request::Forget {
                device: "tv".into()
            })
        );
        let e = parse_request("{\"op\":\"drop\"}").unwrap_err();
        assert!(
            e.starts_with("malformed request: unknown variant `drop`"),
            "{e}"
        );
    }

    /// The `control_protocol` fuzz target's input: a JSON string of form feeds and quotes,
    /// which the answer used to quote whole, escaped (594 bytes for 429).
    #[test]
    fn fuzz_a_long_string_is_not_echoed() {
        let line = include_str!("fixtures/fuzz_control_echoed_string.bin");
        let e = parse_request(line).unwrap_err();
        assert!(
            e.starts_with("malformed request: invalid type: string"),
            "{e}"
        );
        assert!(
            e.chars().count() <= "malformed request: ".len() + MAX_ERROR_CHARS + 3,
            "{e}"
        );
    }
}
