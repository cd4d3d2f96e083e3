//! Ethernet MAC addresses: how the agent names a device.
//!
//! A device is its MAC address because, unlike its IPv6 privacy addresses, the MAC stays the same
//! from day to day. Users copy MACs from `ip neigh`, DHCP leases or Windows' `ipconfig /all`, so
//! parsing accepts both `:` and `-` separators in any case; output is always lowercase with `:`,
//! the form Prometheus label values and the configuration file use.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// An Ethernet (EUI-48) address, in transmission order.
///
/// `Ord` sorts by octets, so maps keyed by `MacAddr` list devices in a stable order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// True when the "locally administered" bit is set: the address was not burnt in by the
    /// vendor. Phones randomise their MAC per network this way, so such a device may come back
    /// under a new address.
    pub fn is_locally_administered(&self) -> bool {
        self.0[0] & 0x02 != 0
    }

    /// True for group addresses (including broadcast): they never name a single device.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(octets: [u8; 6]) -> Self {
        MacAddr(octets)
    }
}

/// Longest input a [`ParseMacError`] shows: a MAC is 17 characters; a request path of 15 kB
/// must not come back whole in an error.
const SHOWN_INPUT_CHARS: usize = 40;

/// The input as an error shows it: whole when short, else its start and its length.
fn shown_input(s: &str) -> String {
    if s.chars().count() <= SHOWN_INPUT_CHARS {
        return s.to_owned();
    }
    let start: String = s.chars().take(SHOWN_INPUT_CHARS).collect();
    format!("{start}... ({} bytes)", s.len())
}

/// Why a string is not a MAC address; shows the input (its start, if long) so the user can
/// find it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid MAC address {input:?}: expected six pairs of hex digits separated by ':' or '-', \
     like \"00:16:3e:00:00:01\""
)]
pub struct ParseMacError {
    input: String,
}

impl FromStr for MacAddr {
    type Err = ParseMacError;

    /// Accepts `aa:bb:cc:dd:ee:ff` and `aa-bb-cc-dd-ee-ff`, in any case, with one separator
    /// throughout and exactly two hex digits per octet.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseMacError {
            input: shown_input(s),
        };
        let bytes = s.as_bytes();
        if bytes.len() != 17 {
            return Err(err());
        }
        let sep = bytes[2];
        if sep != b':' && sep != b'-' {
            return Err(err());
        }
        let mut octets = [0u8; 6];
        for (i, octet) in octets.iter_mut().enumerate() {
            let at = i * 3;
            if i > 0 && bytes[at - 1] != sep {
                return Err(err());
            }
            let hex = s.get(at..at + 2).ok_or_else(err)?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                // `from_str_radix` would also accept a leading '+'.
                return Err(err());
            }
            *octet = u8::from_str_radix(hex, 16).map_err(|_| err())?;
        }
        Ok(MacAddr(octets))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// Deserializes from the string form, so a `MacAddr` can be a TOML table key.
impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MacVisitor;

        impl Visitor<'_> for MacVisitor {
            type Value = MacAddr;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a MAC address like \"00:16:3e:00:00:01\"")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<MacAddr, E> {
                s.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_str(MacVisitor)
    }
}

/// Serializes as the lowercase, colon-separated string, the same form `Display` gives.
impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn an_over_long_input_is_not_echoed_whole() {
        let long = "a".repeat(15_000);
        let message = long.parse::<MacAddr>().unwrap_err().to_string();
        assert!(message.len() < 300, "{} bytes", message.len());
        assert!(message.contains("(15000 bytes)"), "{message}");
        let short = "00:16:3e:zz:00:01"
            .parse::<MacAddr>()
            .unwrap_err()
            .to_string();
        assert!(short.contains("\"00:16:3e:zz:00:01\""), "{short}");
    }

    use std::collections::BTreeMap;

    use super::*;

    const PHONE: MacAddr = MacAddr([0x00, 0x16, 0x3e, 0x0a, 0xbc, 0xff]);

    #[test]
    fn parses_accepted_formats() {
        for input in [
            "00:16:3e:0a:bc:ff",
            "00:16:3E:0A:BC:FF",
            "00-16-3e-0a-bc-ff",
            "00-16-3E-0a-Bc-fF",
        ] {
            assert_eq!(input.parse::<MacAddr>(), Ok(PHONE), "input {input:?}");
        }
    }

    #[test]
    fn rejects_malformed_input() {
        for input in [
            "",
            "zz:00",
            "00:16:3e:0a:bc",
            "00:16:3e:0a:bc:ff:00",
            "00:16:3e:0a:bc:f",
            "00:16:3e:0a:bc:fff",
            "0:16:3e:0a:bc:ff0",
            "00:16-3e:0a:bc:ff",
            "00.16.3e.0a.bc.ff",
            "0016.3e0a.bcff",
            "00:16:3e:0a:bc:+f",
            "00:16:3e:0a:bc:gg",
            " 00:16:3e:0a:bc:ff",
            "00:16:3e:0a:bc:ff ",
            "00:16:3e:0a:bc:é",
        ] {
            let err = input.parse::<MacAddr>().unwrap_err();
            assert!(
                err.to_string()
                    .starts_with(&format!("invalid MAC address {input:?}: expected")),
                "input {input:?} gave {err}"
            );
        }
    }

    #[test]
    fn displays_lowercase_with_colons() {
        assert_eq!(PHONE.to_string(), "00:16:3e:0a:bc:ff");
        assert_eq!(MacAddr([0xff; 6]).to_string(), "ff:ff:ff:ff:ff:ff");
        let round_trip: MacAddr = PHONE.to_string().parse().unwrap();
        assert_eq!(round_trip, PHONE);
    }

    #[test]
    fn classifies_address_bits() {
        // (address, locally administered, multicast)
        let cases = [
            ("00:16:3e:00:00:01", false, false),
            ("02:00:00:00:00:01", true, false),
            ("da:a1:19:00:00:01", true, false),
            ("01:00:5e:00:00:fb", false, true),
            ("33:33:00:00:00:01", true, true),
            ("ff:ff:ff:ff:ff:ff", true, true),
        ];
        for (input, local, multicast) in cases {
            let mac: MacAddr = input.parse().unwrap();
            assert_eq!(mac.is_locally_administered(), local, "{input}");
            assert_eq!(mac.is_multicast(), multicast, "{input}");
        }
    }

    #[test]
    fn deserializes_from_string_and_as_map_key() {
        #[derive(Debug, Deserialize)]
        struct Doc {
            mac: MacAddr,
            names: BTreeMap<MacAddr, String>,
        }
        let doc: Doc = toml::from_str(
            "mac = \"00-16-3E-0A-BC-FF\"\n[names]\n\"00:16:3e:0a:bc:ff\" = \"phone\"\n",
        )
        .unwrap();
        assert_eq!(doc.mac, PHONE);
        assert_eq!(doc.names.get(&PHONE).map(String::as_str), Some("phone"));

        let err = toml::from_str::<Doc>("mac = \"zz:00\"\n[names]\n")
            .unwrap_err()
            .message()
            .to_owned();
        assert!(
            err.starts_with("invalid MAC address \"zz:00\""),
            "got {err}"
        );
        let err = toml::from_str::<Doc>("mac = 5\n[names]\n").unwrap_err();
        assert!(err.message().contains("a MAC address like"), "got {err}");
    }

    #[test]
    fn serializes_as_display_string() {
        #[derive(Serialize)]
        struct Doc {
            mac: MacAddr,
        }
        let out = toml::to_string(&Doc { mac: PHONE }).unwrap();
        assert_eq!(out, "mac = \"00:16:3e:0a:bc:ff\"\n");
    }
}
