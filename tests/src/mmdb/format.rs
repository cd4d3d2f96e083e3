//! Laying out a whole file: search tree, the 16-byte separator, the data section, the
//! metadata marker and the metadata map.

use std::collections::HashMap;

use super::encode::{Value, encode};
use super::tree::{Child, Tree};
use super::{MmdbWriter, RecordSize};

/// Starts the metadata, after the data section.
pub const METADATA_MARKER: &[u8] = b"\xAB\xCD\xEFMaxMind.com";
/// Between the search tree and the data section.
const SEPARATOR: [u8; 16] = [0; 16];

pub fn to_bytes(writer: &MmdbWriter) -> Vec<u8> {
    // Networks shortest first, so that a longer one splits and overrides a shorter one.
    let mut networks: Vec<_> = writer.networks.iter().collect();
    networks.sort_by_key(|(network, _)| network.bits().1);

    let mut data = Vec::new();
    let mut offsets: Vec<usize> = Vec::new();
    let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut tree = Tree::default();
    for (network, value) in networks {
        let mut encoded = Vec::new();
        encode(value, &mut encoded);
        // The same record for many networks is written once, as real databases do.
        let index = *seen.entry(encoded.clone()).or_insert_with(|| {
            offsets.push(data.len());
            data.extend_from_slice(&encoded);
            offsets.len() - 1
        });
        let (bits, len) = network.bits();
        tree.insert(bits, len, index);
    }

    let node_count = tree.nodes.len();
    let record = |child: Child| -> u64 {
        let value = match child {
            Child::Node(i) => i,
            Child::Empty => node_count,
            Child::Data(i) => node_count + SEPARATOR.len() + offsets[i],
        };
        let value = value as u64;
        assert!(
            value < 1 << writer.record_size.bits(),
            "database too large for {} bit records",
            writer.record_size.bits()
        );
        value
    };
    let mut out = Vec::new();
    for [left, right] in &tree.nodes {
        write_node(writer.record_size, record(*left), record(*right), &mut out);
    }
    out.extend_from_slice(&SEPARATOR);
    out.extend_from_slice(&data);
    out.extend_from_slice(METADATA_MARKER);
    encode(&metadata(writer, node_count), &mut out);
    out
}

/// A node's two records, big-endian; with 28 bits the middle byte holds the high nibbles of
/// both (the left record's first).
fn write_node(size: RecordSize, left: u64, right: u64, out: &mut Vec<u8>) {
    match size {
        RecordSize::Bits24 => {
            out.extend_from_slice(&left.to_be_bytes()[5..]);
            out.extend_from_slice(&right.to_be_bytes()[5..]);
        }
        RecordSize::Bits28 => {
            out.extend_from_slice(&left.to_be_bytes()[5..]);
            out.push((((left >> 24) & 0x0f) << 4) as u8 | ((right >> 24) & 0x0f) as u8);
            out.extend_from_slice(&right.to_be_bytes()[5..]);
        }
        RecordSize::Bits32 => {
            out.extend_from_slice(&left.to_be_bytes()[4..]);
            out.extend_from_slice(&right.to_be_bytes()[4..]);
        }
    }
}

fn metadata(writer: &MmdbWriter, node_count: usize) -> Value {
    let description = writer
        .description
        .iter()
        .map(|(lang, text)| (lang.clone(), Value::String(text.clone())))
        .collect();
    let languages = writer
        .languages
        .iter()
        .map(|lang| Value::String(lang.clone()))
        .collect();
    Value::map([
        ("binary_format_major_version", Value::Uint16(2)),
        ("binary_format_minor_version", Value::Uint16(0)),
        ("build_epoch", Value::Uint64(writer.build_epoch)),
        ("database_type", Value::String(writer.database_type.clone())),
        ("description", Value::Map(description)),
        ("ip_version", Value::Uint16(6)),
        ("languages", Value::Array(languages)),
        (
            "node_count",
            Value::Uint32(u32::try_from(node_count).expect("too many nodes")),
        ),
        ("record_size", Value::Uint16(writer.record_size.bits())),
    ])
}
