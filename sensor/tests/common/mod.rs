//! Shared helpers for whole-pipeline tests.
#![allow(dead_code)]

pub mod netlab;
pub mod pg;

use std::ops::Range;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use spanwatch::capture::{FileReader, Packet};
use spanwatch::pipeline::engine::EngineConfig;
use spanwatch::pipeline::{Inline, Pipeline, Settings};
use spanwatch::stats::Counters;

/// Result of reading one capture.
pub struct Run {
    pub events: Vec<serde_json::Value>,
    pub lines: Vec<String>,
    pub counters: Counters,
    pub error: Option<String>,
}

/// A fresh directory under the system's temp dir, named after the test
/// process and `tag`, removed with all it holds when dropped (a failing test
/// too: the drop runs while the panic unwinds).
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("spanwatch-test-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("scratch dir");
        Scratch(d)
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A classic pcap file (microseconds, Ethernet) of `(microseconds since
/// the epoch, frame)`.
pub fn classic_pcap(frames: &[(u64, &[u8])]) -> Vec<u8> {
    let mut f = Vec::new();
    for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
        f.extend_from_slice(&v.to_le_bytes());
    }
    for (us, data) in frames {
        let len = data.len() as u32;
        for v in [(us / 1_000_000) as u32, (us % 1_000_000) as u32, len, len] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        f.extend_from_slice(data);
    }
    f
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

/// Feeds every packet of `path` to `each` as `spanwatch read` does: the
/// mapped file and the packet's range in it. The first read error, if any.
fn feed(path: &Path, mut each: impl FnMut(&Bytes, Packet<Range<usize>>)) -> Option<String> {
    let mut r = match FileReader::open(path) {
        Ok(r) => r,
        Err(e) => return Some(e.to_string()),
    };
    while let Some(item) = r.next_range() {
        match item {
            Ok(p) => each(r.data(), p),
            Err(e) => return Some(e.to_string()),
        }
    }
    None
}

/// Reads a capture with the given engine settings through the in-thread
/// pipeline; `name` is what events call it.
pub fn run_with(path: &Path, name: &str, cfg: EngineConfig) -> Run {
    run_inline(&[(path, name)], cfg)
}

/// Reads captures, in order, as one stream through the in-thread pipeline.
pub fn run_inline(files: &[(&Path, &str)], cfg: EngineConfig) -> Run {
    let mut sensor = Inline::new(cfg, Default::default(), Vec::new());
    let mut error = None;
    for (path, name) in files {
        sensor.set_origin(Some((*name).into()));
        error = error.or(feed(path, |data, p| {
            sensor.packet(p.with_data(data.slice(p.data.clone())))
        }));
    }
    let w = sensor.finish();
    let counters = w.counters();
    Run::of(w.into_inner(), counters, error)
}

/// Reads captures, in order, through the threaded pipeline with `workers`
/// workers; also returns each worker's packet count.
/// `walk`: the workers read each file themselves ([`Pipeline::walk`])
/// instead of being handed its packets; `defer`: the writer serialises the
/// `flow` events (`Settings::defer`).
pub fn run_workers(
    files: &[(&Path, &str)],
    cfg: EngineConfig,
    (workers, walk, defer): (usize, bool, bool),
) -> (Run, Vec<u64>) {
    let settings = Settings {
        workers,
        engine: cfg,
        types: Default::default(),
        live: false,
        latency: false,
        defer: Some(defer),
        // a lone worker handed packets is handed them decoded, always
        decode_ahead: Some(workers == 1 && !walk),
    };
    let mut p = Pipeline::start(settings, Vec::new()).expect("threads start");
    let mut error = None;
    for (path, name) in files {
        p.set_origin(Some((*name).into()));
        let fed = FileReader::open(path).and_then(|r| match walk {
            true => p.walk(r, |_, _| {}),
            false => p.dispatch(r, |_, _| {}),
        });
        let failed = fed.err().map(|e| e.to_string());
        error = error.or(failed);
    }
    p.end_flows();
    p.ledger("end_of_run");
    let w = p.close();
    let counters = w.counters();
    let shares = w.worker_stats(&[]).iter().map(|s| s.packets).collect();
    (Run::of(w.into_inner(), counters, error), shares)
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

/// A run's counters as they must agree whatever the number of workers: each
/// worker keeps its own pre-check memo, so how often one answers depends on
/// how the flows were shared out.
pub fn comparable(c: &spanwatch::stats::Counters) -> spanwatch::stats::Counters {
    spanwatch::stats::Counters {
        precheck_memo_hits: 0,
        precheck_memo_resets: 0,
        ..*c
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

/// A TCP port free on loopback now.
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The first of these paths that exists (a Debian package's program), or
/// `None` after saying the test is skipped (CI must have it: `scripts/deps`
/// installs `package`).
pub fn installed(paths: &[&str], package: &str) -> Option<PathBuf> {
    let found = paths.iter().map(PathBuf::from).find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this: scripts/deps installs {package}"
        );
        eprintln!("SKIP: {package} not installed (scripts/deps installs it)");
    }
    found
}

/// Waits (at most 10 s) until something listens on loopback `port`.
pub fn wait_listening(port: u16, what: &str) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < until, "{what} did not listen");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Runs the `spanwatch` binary in the workspace, stdin empty:
/// (exit code, stdout, stderr).
pub fn spanwatch(args: &[&str]) -> (i32, String, String) {
    spanwatch_with_input(args, &[])
}

/// Runs the `spanwatch` binary in the workspace with `input` on stdin.
pub fn spanwatch_with_input(args: &[&str], input: &[u8]) -> (i32, String, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_spanwatch"))
        .args(args)
        .current_dir(workspace())
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spanwatch runs");
    let mut stdin = child.stdin.take().expect("stdin");
    // a child that stops reading early closes the pipe: not an error here
    let _ = stdin.write_all(input);
    drop(stdin);
    let out = child.wait_with_output().expect("spanwatch ends");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The lab recordings the output tests read.
pub const LAB_CAPTURES: [&str; 3] = [
    "pcaps/lab/lab-ngrok-endpoints.pcap",
    "pcaps/lab/lab-mitmproxy-explicit.pcap",
    "pcaps/lab/lab-cloudflared-quic.pcap",
];

/// `dir/site.toml`: the lab's site policy with `outputs` after it.
pub fn lab_site(dir: &Path, outputs: &str) -> PathBuf {
    let p = dir.join("site.toml");
    let lab = std::fs::read_to_string(workspace().join("pcaps/lab/site.toml")).expect("site");
    std::fs::write(&p, format!("{lab}\n{outputs}")).expect("site");
    p
}

/// `spanwatch read -q -c site` over the lab recordings: (exit code, stderr).
pub fn read_lab(site: &Path) -> (i32, String) {
    let mut args = vec!["read", "-q", "-c", site.to_str().expect("utf-8")];
    args.extend(LAB_CAPTURES);
    let (code, _, err) = spanwatch(&args);
    (code, err)
}

/// The lines of an EVE file whose event type is one of `types` (all lines
/// when `types` is empty), in order.
pub fn event_lines(path: &Path, types: &[&str]) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("file output")
        .lines()
        .filter(|l| {
            types.is_empty()
                || types
                    .iter()
                    .any(|t| l.contains(&format!("\"event_type\":\"{t}\"")))
        })
        .map(String::from)
        .collect()
}

/// redis-server's arguments: loopback `port`, files in `dir`, nothing kept.
pub fn redis_server_args(port: u16, dir: &Path) -> Vec<std::ffi::OsString> {
    let port = port.to_string();
    let mut a: Vec<std::ffi::OsString> = [
        "--port",
        &port,
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
    ]
    .iter()
    .map(Into::into)
    .collect();
    a.push(dir.into());
    a
}

/// The events with each `tls` event's certificates put back in place, as
/// `[events] certificates = "inline"` writes them: `chain_sha256` (and the
/// client and overlap lists) resolved through the `certificate` events
/// before it, and the leaf's `subjectaltname`.
pub fn resolve_chains(events: &[serde_json::Value]) -> Vec<serde_json::Value> {
    let mut known: std::collections::HashMap<String, serde_json::Value> = Default::default();
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        let mut e = e.clone();
        if e["event_type"] == "certificate" {
            if let Some(h) = e["certificate"]["sha256"].as_str() {
                known.insert(h.to_string(), e["certificate"].clone());
            }
        }
        if let Some(t) = e.get_mut("tls").and_then(|t| t.as_object_mut()) {
            for (refs, whole) in [
                ("chain_sha256", "chain"),
                ("client_chain_sha256", "client_chain"),
                ("overlap_chain_sha256", "overlap_chain"),
            ] {
                let Some(hashes) = t.remove(refs) else {
                    continue;
                };
                let certs: Vec<serde_json::Value> = hashes
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|h| {
                        let h = h.as_str().unwrap_or_default();
                        known.get(h).cloned().unwrap_or_else(|| {
                            panic!("certificate {h} referenced before it was logged")
                        })
                    })
                    .collect();
                if whole == "chain" {
                    let san = certs.first().map(|c| c["san"].clone());
                    if let Some(san) = san.filter(|s| s.as_array().is_some_and(|a| !a.is_empty())) {
                        t.insert("subjectaltname".into(), san);
                    }
                }
                t.insert(whole.into(), serde_json::Value::Array(certs));
            }
        }
        out.push(e);
    }
    out
}
