//! Replays every committed fuzz input (`fuzz/corpus/<target>/`) through the
//! same entry points the fuzz targets call, so stable `cargo test` runs them.

mod common;

type Target = (&'static str, fn(&[u8]));

#[test]
fn replay_fuzz_corpus() {
    let root = common::workspace().join("fuzz/corpus");
    let targets: [Target; 7] = [
        ("capture", spanwatch::fuzzing::capture),
        ("packet", spanwatch::fuzzing::packet),
        ("tls", spanwatch::fuzzing::tls),
        ("dns", spanwatch::fuzzing::dns),
        ("http", spanwatch::fuzzing::http),
        ("certificate", spanwatch::fuzzing::certificate),
        ("quic", spanwatch::fuzzing::quic),
    ];
    let mut total = 0;
    for (name, f) in targets {
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no seeds for {name}");
        for p in files {
            let data = std::fs::read(&p).expect("readable seed");
            f(&data);
            // every prefix of a seed is an input too (cut-short data)
            for cut in [
                1,
                data.len() / 3,
                data.len() / 2,
                data.len().saturating_sub(1),
            ] {
                f(&data[..cut.min(data.len())]);
            }
            total += 1;
        }
    }
    eprintln!("{total} fuzz inputs replayed");
}
