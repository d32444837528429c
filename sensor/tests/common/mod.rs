//! Shared helpers for whole-pipeline tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use spanwatch::capture::FileReader;
use spanwatch::engine::EngineConfig;
use spanwatch::pipeline::{Inline, Pipeline, Settings};
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

/// Reads a capture with the given engine settings through the in-thread
/// pipeline; `name` is what events call it.
pub fn run_with(path: &Path, name: &str, cfg: EngineConfig) -> Run {
    let mut sensor = Inline::new(cfg, Default::default(), Vec::new());
    sensor.set_origin(Some(name.into()));
    let mut error = None;
    match FileReader::open(path) {
        Ok(mut r) => {
            while let Some(item) = r.next() {
                match item {
                    Ok(p) => sensor.packet(p),
                    Err(e) => {
                        error = Some(e.to_string());
                        break;
                    }
                }
            }
        }
        Err(e) => error = Some(e.to_string()),
    }
    let w = sensor.finish();
    let counters = w.counters();
    Run::of(w.into_inner(), counters, error)
}

/// The same through the threaded pipeline with `workers` workers.
pub fn run_workers(path: &Path, name: &str, cfg: EngineConfig, workers: usize) -> Run {
    let settings = Settings {
        workers,
        engine: cfg,
        types: Default::default(),
        live: false,
        latency: false,
    };
    let mut p = Pipeline::start(settings, Vec::new());
    p.set_origin(Some(name.into()));
    let mut error = None;
    match FileReader::open(path) {
        Ok(mut r) => {
            while let Some(item) = r.next() {
                match item {
                    Ok(pkt) => p.packet(pkt),
                    Err(e) => {
                        error = Some(e.to_string());
                        break;
                    }
                }
            }
        }
        Err(e) => error = Some(e.to_string()),
    }
    p.end_flows();
    p.ledger("end_of_run");
    let w = p.close();
    let counters = w.counters();
    Run::of(w.into_inner(), counters, error)
}

impl Run {
    pub fn of(out: Vec<u8>, counters: Counters, error: Option<String>) -> Run {
        let text = String::from_utf8(out).expect("events are UTF-8");
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        let events = lines
            .iter()
            .map(|l| serde_json::from_str(l).expect("events are valid JSON"))
            .collect();
        Run {
            events,
            lines,
            counters,
            error,
        }
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
