//! The MMDB data section's encoding: a control byte (type and size), extended types after it,
//! payloads big-endian, as the MaxMind DB format 2.0 specification lays them out.

/// A value in the data section or the metadata. Maps keep their order, so a file is the same
/// bytes every time it is written.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A UTF-8 string.
    String(String),
    /// An IEEE 754 double.
    Double(f64),
    /// An unsigned 16-bit integer.
    Uint16(u16),
    /// An unsigned 32-bit integer.
    Uint32(u32),
    /// An unsigned 64-bit integer.
    Uint64(u64),
    /// A boolean.
    Bool(bool),
    /// An array.
    Array(Vec<Value>),
    /// A map with string keys, in the order given.
    Map(Vec<(String, Value)>),
}

impl Value {
    /// A string value.
    pub fn str(s: &str) -> Value {
        Value::String(s.to_owned())
    }

    /// A map from `(key, value)` pairs.
    pub fn map<const N: usize>(pairs: [(&str, Value); N]) -> Value {
        Value::Map(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }
}

// Type numbers of the specification; those from 8 on are "extended" (control type 0).
const POINTER_FREE_STRING: u8 = 2;
const DOUBLE: u8 = 3;
const UINT16: u8 = 5;
const UINT32: u8 = 6;
const MAP: u8 = 7;
const UINT64: u8 = 9;
const ARRAY: u8 = 11;
const BOOLEAN: u8 = 14;

/// Appends `value` to `out`. No pointers are written: each record is encoded in full (the
/// writer shares whole records between networks instead).
pub fn encode(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::String(s) => {
            control(POINTER_FREE_STRING, s.len(), out);
            out.extend_from_slice(s.as_bytes());
        }
        Value::Double(d) => {
            control(DOUBLE, 8, out);
            out.extend_from_slice(&d.to_be_bytes());
        }
        Value::Uint16(n) => unsigned(UINT16, u64::from(*n), out),
        Value::Uint32(n) => unsigned(UINT32, u64::from(*n), out),
        Value::Uint64(n) => unsigned(UINT64, *n, out),
        // A boolean's value is its size; it has no payload.
        Value::Bool(b) => control(BOOLEAN, usize::from(*b), out),
        Value::Array(items) => {
            control(ARRAY, items.len(), out);
            for item in items {
                encode(item, out);
            }
        }
        Value::Map(pairs) => {
            control(MAP, pairs.len(), out);
            for (key, value) in pairs {
                encode(&Value::String(key.clone()), out);
                encode(value, out);
            }
        }
    }
}

/// Unsigned integers drop their leading zero bytes; zero has no payload at all.
fn unsigned(kind: u8, n: u64, out: &mut Vec<u8>) {
    let bytes = n.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    control(kind, bytes.len() - skip, out);
    out.extend_from_slice(&bytes[skip..]);
}

/// The control byte: type in the top three bits (0 and an extra byte `type - 7` for the
/// extended types), size in the low five, with 1 to 3 more bytes for sizes from 29 on.
fn control(kind: u8, size: usize, out: &mut Vec<u8>) {
    let (size_bits, extra): (u8, Vec<u8>) = match size {
        0..29 => (size as u8, vec![]),
        29..285 => (29, vec![(size - 29) as u8]),
        285..65_821 => (30, ((size - 285) as u16).to_be_bytes().to_vec()),
        _ => {
            let rest = u32::try_from(size - 65_821).expect("value too large for MMDB");
            assert!(rest < 1 << 24, "value too large for MMDB");
            (31, rest.to_be_bytes()[1..].to_vec())
        }
    };
    if kind <= 7 {
        out.push((kind << 5) | size_bits);
    } else {
        out.push(size_bits);
        out.push(kind - 7);
    }
    out.extend_from_slice(&extra);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        encode(value, &mut out);
        out
    }

    /// Examples from the specification's text, byte for byte.
    #[test]
    fn encodings_match_the_specification() {
        assert_eq!(bytes(&Value::str("")), [0x40]);
        assert_eq!(bytes(&Value::str("ab")), [0x42, b'a', b'b']);
        assert_eq!(bytes(&Value::Uint16(0)), [0xa0]);
        assert_eq!(bytes(&Value::Uint16(0x1234)), [0xa2, 0x12, 0x34]);
        assert_eq!(bytes(&Value::Uint32(64_500)), [0xc2, 0xfb, 0xf4]);
        assert_eq!(bytes(&Value::Uint64(1)), [0x01, 0x02, 0x01]);
        assert_eq!(bytes(&Value::Bool(true)), [0x01, 0x07]);
        assert_eq!(bytes(&Value::Bool(false)), [0x00, 0x07]);
        assert_eq!(bytes(&Value::Array(vec![])), [0x00, 0x04]);
        assert_eq!(
            bytes(&Value::map([("a", Value::Uint16(1))])),
            [0xe1, 0x41, b'a', 0xa1, 0x01]
        );
        assert_eq!(bytes(&Value::Double(1.0))[..1], [0x68]);
    }

    #[test]
    fn long_strings_take_extra_size_bytes() {
        for (len, head) in [
            (28, vec![0x5c]),
            (29, vec![0x5d, 0]),
            (284, vec![0x5d, 255]),
            (285, vec![0x5e, 0, 0]),
            (65_820, vec![0x5e, 0xff, 0xff]),
            (65_821, vec![0x5f, 0, 0, 0]),
        ] {
            let encoded = bytes(&Value::String("x".repeat(len)));
            assert_eq!(encoded[..head.len()], head, "length {len}");
            assert_eq!(encoded.len(), head.len() + len, "length {len}");
        }
    }
}
