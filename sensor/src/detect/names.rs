//! Label-aligned name matching in time independent of the number of rules.
//!
//! Names are stored reversed by label in a trie (`app` → `ngrok-free` → …).
//! Looking a name up walks its labels once: every suffix rule met on the way
//! matches (`a.ngrok-free.app` and `ngrok-free.app` itself match the suffix
//! `ngrok-free.app`; `notngrok-free.app` and `ngrok-free.app.example.net` do
//! not), and exact rules match at the last label. Comparison ignores ASCII
//! case and one trailing dot.

use std::collections::HashMap;

/// Normalises a DNS name for matching: lower case, no trailing dot.
pub fn normalize(name: &str) -> String {
    let n = name.strip_suffix('.').unwrap_or(name);
    n.to_ascii_lowercase()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Exact,
    Suffix,
}

#[derive(Debug, Default)]
struct Node {
    children: HashMap<Box<str>, usize, ahash::RandomState>,
    suffix: Vec<u32>,
    exact: Vec<u32>,
}

/// A set of name patterns, each carrying a `u32` tag.
#[derive(Debug)]
pub struct NameIndex {
    nodes: Vec<Node>,
    len: usize,
}

impl Default for NameIndex {
    fn default() -> Self {
        NameIndex {
            nodes: vec![Node::default()],
            len: 0,
        }
    }
}

impl NameIndex {
    pub fn insert(&mut self, pattern: &str, kind: Kind, tag: u32) {
        let p = normalize(pattern);
        let mut at = 0;
        for label in p.rsplit('.') {
            at = match self.nodes[at].children.get(label) {
                Some(&n) => n,
                None => {
                    let n = self.nodes.len();
                    self.nodes.push(Node::default());
                    self.nodes[at].children.insert(label.into(), n);
                    n
                }
            };
        }
        match kind {
            Kind::Exact => self.nodes[at].exact.push(tag),
            Kind::Suffix => self.nodes[at].suffix.push(tag),
        }
        self.len += 1;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Calls `hit(tag)` for every pattern that matches `name`.
    pub fn lookup(&self, name: &str, hit: &mut dyn FnMut(u32)) {
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.is_empty() || self.len == 0 {
            return;
        }
        let mut at = 0;
        let mut buf = [0u8; 64];
        for label in name.rsplit('.') {
            // Lower-case the label without allocating (labels are ≤ 63 bytes).
            let key: &str = if label.len() <= buf.len() && label.is_ascii() {
                let b = &mut buf[..label.len()];
                b.copy_from_slice(label.as_bytes());
                b.make_ascii_lowercase();
                std::str::from_utf8(b).unwrap_or(label)
            } else {
                return;
            };
            match self.nodes[at].children.get(key) {
                Some(&n) => at = n,
                None => return,
            }
            for &t in &self.nodes[at].suffix {
                hit(t);
            }
        }
        for &t in &self.nodes[at].exact {
            hit(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(ix: &NameIndex, name: &str) -> Vec<u32> {
        let mut v = Vec::new();
        ix.lookup(name, &mut |t| v.push(t));
        v.sort();
        v
    }

    #[test]
    fn suffixes_are_label_aligned() {
        let mut ix = NameIndex::default();
        ix.insert("ngrok-free.app", Kind::Suffix, 1);
        ix.insert("connect.ngrok-agent.com", Kind::Exact, 2);
        assert_eq!(hits(&ix, "abc.ngrok-free.app"), vec![1]);
        assert_eq!(hits(&ix, "ngrok-free.app"), vec![1]);
        assert_eq!(hits(&ix, "A.B.NGROK-FREE.APP."), vec![1]);
        assert!(hits(&ix, "notngrok-free.app").is_empty());
        assert!(hits(&ix, "ngrok-free.app.example.net").is_empty());
        assert_eq!(hits(&ix, "connect.ngrok-agent.com"), vec![2]);
        assert!(
            hits(&ix, "x.connect.ngrok-agent.com").is_empty(),
            "exact is exact"
        );
        assert!(hits(&ix, "").is_empty());
    }

    #[test]
    fn many_rules_cost_one_walk() {
        let mut ix = NameIndex::default();
        for i in 0..10_000u32 {
            ix.insert(&format!("tenant{i}.example.com"), Kind::Suffix, i);
        }
        assert_eq!(ix.len(), 10_000);
        assert_eq!(hits(&ix, "www.tenant9999.example.com"), vec![9999]);
        assert!(hits(&ix, "www.example.com").is_empty());
    }
}
