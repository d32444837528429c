//! End-to-end benchmark: `spanwatch read` against the floor of a plain libpcap
//! read loop over the same file, measured in the same run.
//!
//! ```sh
//! cargo build --release -p spanwatch -p spanwatch-benches -p pcapgen
//! target/release/pcapgen bench handshake /tmp/handshake.pcap 1
//! target/release/e2e [--tshark] /tmp/handshake.pcap ...
//! ```
//!
//! Prints, per file: the floor, spanwatch with 1 and 2 workers (full output
//! written to a file), optionally tshark, as time, Gbit/s of capture bytes,
//! packets/s, peak RSS and the ratio to the floor. Best of three runs each
//! (page-cache-warm input).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Row {
    what: String,
    time: Duration,
    /// (VmHWM, peak RssAnon) in KiB: VmHWM counts the pages of a mapped
    /// capture file too (page cache, reclaimable); RssAnon is the process's
    /// own memory.
    rss_kib: Option<(u64, u64)>,
}

/// The floor: read every packet with the `pcap` crate and touch nothing.
fn floor(path: &Path) -> (Duration, u64, u64) {
    let mut best = Duration::MAX;
    let (mut pkts, mut bytes) = (0, 0);
    for _ in 0..3 {
        let t = Instant::now();
        let mut cap = pcap::Capture::from_file(path).unwrap_or_else(|e| panic!("{e}"));
        let (mut n, mut b) = (0u64, 0u64);
        while let Ok(p) = cap.next_packet() {
            n += 1;
            b += p.data.len() as u64;
        }
        best = best.min(t.elapsed());
        (pkts, bytes) = (n, b);
    }
    (best, pkts, bytes)
}

/// Runs a command three times; best wall time, peak RSS (VmHWM) and peak RssAnon.
fn run(mut cmd: impl FnMut() -> Command) -> (Duration, Option<(u64, u64)>) {
    let mut best = Duration::MAX;
    let mut peak = None;
    for _ in 0..3 {
        let t = Instant::now();
        let mut child = cmd()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let status_file = format!("/proc/{}/status", child.id());
        let mut hwm = None;
        let mut anon = 0u64;
        let field = |s: &str, name: &str| {
            s.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        };
        loop {
            if let Ok(s) = std::fs::read_to_string(&status_file) {
                if let Some(v) = field(&s, "VmHWM:") {
                    hwm = Some(v);
                }
                anon = anon.max(field(&s, "RssAnon:").unwrap_or(0));
            }
            if child.try_wait().expect("wait").is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        best = best.min(t.elapsed());
        peak = peak.max(hwm.map(|h| (h, anon)));
    }
    (best, peak)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let tshark = args.iter().any(|a| a == "--tshark");
    let files: Vec<PathBuf> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(PathBuf::from)
        .collect();
    let exe = std::env::current_exe()
        .expect("exe")
        .with_file_name("spanwatch");
    assert!(
        exe.exists(),
        "build spanwatch first: cargo build --release -p spanwatch"
    );
    let out = std::env::temp_dir().join("spanwatch-e2e-events.json");
    for f in &files {
        let (ft, pkts, bytes) = floor(f);
        let mut rows = vec![Row {
            what: "floor (pcap crate read loop)".into(),
            time: ft,
            rss_kib: None,
        }];
        for workers in [1, 2] {
            let (t, rss) = run(|| {
                let mut c = Command::new(&exe);
                c.args(["read", "--workers", &workers.to_string(), "-o"])
                    .arg(&out)
                    .arg(f);
                c
            });
            rows.push(Row {
                what: format!("spanwatch read --workers {workers}"),
                time: t,
                rss_kib: rss,
            });
        }
        let (t, rss) = run(|| {
            let mut c = Command::new(&exe);
            c.args(["read", "--reader", "libpcap", "-o"])
                .arg(&out)
                .arg(f);
            c
        });
        rows.push(Row {
            what: "spanwatch read --reader libpcap".into(),
            time: t,
            rss_kib: rss,
        });
        if tshark {
            let (t, rss) = run(|| {
                let mut c = Command::new("tshark");
                c.args(["-2", "-r"]).arg(f).args([
                    "-R",
                    "tls.handshake.type==1",
                    "-T",
                    "fields",
                    "-e",
                    "tls.handshake.extensions_server_name",
                ]);
                c
            });
            rows.push(Row {
                what: "tshark -2 … -R tls.handshake.type==1".into(),
                time: t,
                rss_kib: rss,
            });
        }
        println!(
            "\n{} — {pkts} packets, {:.1} MB",
            f.display(),
            bytes as f64 / 1e6
        );
        println!("| run | time (s) | Gbit/s | Mpackets/s | peak RSS (MiB) | peak anon RSS (MiB) | × floor |");
        println!("|---|---:|---:|---:|---:|---:|---:|");
        for r in rows {
            let s = r.time.as_secs_f64();
            let mib = |k: u64| format!("{:.1}", k as f64 / 1024.0);
            println!(
                "| {} | {:.3} | {:.2} | {:.2} | {} | {} | {:.2} |",
                r.what,
                s,
                bytes as f64 * 8.0 / s / 1e9,
                pkts as f64 / s / 1e6,
                r.rss_kib.map(|k| mib(k.0)).unwrap_or_else(|| "–".into()),
                r.rss_kib.map(|k| mib(k.1)).unwrap_or_else(|| "–".into()),
                s / ft.as_secs_f64()
            );
        }
    }
}
