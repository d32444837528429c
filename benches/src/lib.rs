//! Inputs shared by the benchmarks: every packet of the project's captures,
//! loaded outside the timed code.

use std::path::{Path, PathBuf};

use spanwatch::capture::{FileReader, Packet};

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every packet of a capture, in memory.
pub fn packets(path: &Path) -> Vec<Packet> {
    let mut r = FileReader::open(path).unwrap_or_else(|e| panic!("{e}"));
    let mut v = Vec::new();
    while let Some(Ok(p)) = r.next() {
        v.push(p);
    }
    v
}

/// The packets of every capture in `pcaps/` and `pcaps/lab/`, file after file.
pub fn all_packets() -> Vec<Packet> {
    let mut files: Vec<PathBuf> = ["pcaps", "pcaps/lab"]
        .iter()
        .flat_map(|d| std::fs::read_dir(workspace().join(d)).into_iter().flatten())
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pcap" || x == "pcapng"))
        .collect();
    files.sort();
    files.iter().flat_map(|f| packets(f)).collect()
}
