//! Shared helpers for whole-pipeline tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use spanwatch::capture::FileReader;
use spanwatch::engine::{Engine, EngineConfig, Origin};
use spanwatch::event::VecSink;
use spanwatch::stats::Counters;

/// Result of reading one capture.
pub struct Run {
    pub events: Vec<serde_json::Value>,
    pub lines: Vec<String>,
    pub counters: Counters,
    pub error: Option<String>,
}

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The shared corpus, if it is beside the repository (CI has it).
pub fn corpus() -> Option<PathBuf> {
    let p = std::env::var_os("SPANWATCH_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("../shared/corpus"));
    p.join("catalog.tsv").exists().then_some(p)
}

/// Reads a capture with the given engine settings; `name` is what events call it.
pub fn run_with(path: &Path, name: &str, cfg: EngineConfig) -> Run {
    let mut engine = Engine::new(cfg);
    let mut sink = VecSink::default();
    let origin = Origin {
        pcap_file: Some(name),
    };
    let mut error = None;
    match FileReader::open(path) {
        Ok(mut r) => {
            while let Some(item) = r.next() {
                match item {
                    Ok(p) => engine.process(&p, origin, &mut sink),
                    Err(e) => {
                        error = Some(e.to_string());
                        break;
                    }
                }
            }
        }
        Err(e) => error = Some(e.to_string()),
    }
    engine.finish(origin, &mut sink);
    let events = sink
        .0
        .iter()
        .map(|l| serde_json::from_str(l).expect("events are valid JSON"))
        .collect();
    Run {
        events,
        lines: sink.0,
        counters: engine.counters,
        error,
    }
}

pub fn run(path: &Path, name: &str) -> Run {
    run_with(path, name, EngineConfig::default())
}

/// Rows of a TSV file as maps from column name to value.
pub fn tsv(path: &Path) -> Vec<std::collections::HashMap<String, String>> {
    let text = std::fs::read_to_string(path).expect("tsv readable");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split('\t').collect();
    lines
        .map(|l| {
            header
                .iter()
                .zip(l.split('\t').chain(std::iter::repeat("")))
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}
