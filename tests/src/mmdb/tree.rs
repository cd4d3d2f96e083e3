//! The search tree: a binary trie over the 128 bits of an IPv6 address, IPv4 networks placed
//! at `::/96` as MaxMind places them, so that a reader finds the IPv4 subtree 96 zero bits
//! down and both kinds of lookup work.

use std::net::IpAddr;

/// What a record of a node points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Child {
    /// Nothing: the address is not in the database.
    Empty,
    /// Another node, by index.
    Node(usize),
    /// A record in the data section, by index into the writer's records.
    Data(usize),
}

/// The trie as nodes of two records each; node 0 is the root.
#[derive(Debug, Clone)]
pub struct Tree {
    pub nodes: Vec<[Child; 2]>,
}

impl Default for Tree {
    fn default() -> Self {
        Tree {
            nodes: vec![[Child::Empty; 2]],
        }
    }
}

/// A network's 128 bits and its length within them.
pub fn bits_of(addr: IpAddr, len: u8) -> (u128, u8) {
    match addr {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), len + 96),
        IpAddr::V6(v6) => (u128::from(v6), len),
    }
}

impl Tree {
    /// Points every address of the network at `data`. Inserted after the shorter networks
    /// that hold it, a longer one replaces their data for its own addresses only, so the
    /// longest prefix wins.
    pub fn insert(&mut self, bits: u128, len: u8, data: usize) {
        assert!(len > 0, "a network of length 0 covers the IPv4 subtree too");
        let mut node = 0;
        for depth in 0..len {
            let bit = usize::from((bits >> (127 - depth)) & 1 == 1);
            if depth + 1 == len {
                self.nodes[node][bit] = Child::Data(data);
                return;
            }
            node = match self.nodes[node][bit] {
                Child::Node(next) => next,
                // Split: the new node's two halves keep what the whole had.
                whole @ (Child::Empty | Child::Data(_)) => {
                    self.nodes.push([whole; 2]);
                    let next = self.nodes.len() - 1;
                    self.nodes[node][bit] = Child::Node(next);
                    next
                }
            };
        }
    }
}
