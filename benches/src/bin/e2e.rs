//! End-to-end benchmark: `spanwatch read` against the floor of a plain libpcap
//! read loop over the same file, measured in the same run.
//!
//! ```sh
//! cargo build --release -p spanwatch -p spanwatch-benches -p pcapgen
//! target/release/pcapgen bench handshake /tmp/handshake.pcap 1
//! target/release/e2e [--tshark] [--runs N] [--out PATH] /tmp/handshake.pcap ...
//! ```
//!
//! Prints, per file: the floor, spanwatch with 1 and 2 workers (full output
//! written to `--out`, by default a file in the temporary directory, removed
//! before each run so that a run pays for writing its events, not for the
//! kernel dropping the last run's), the libpcap reader, optionally tshark:
//! time, Gbit/s of capture bytes, packets/s, peak RSS and the ratio to the
//! floor; then the 2-worker speed-up and where each run's CPU went, by thread.
//! Best of `--runs` (3) runs each, page-cache-warm input.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Row {
    what: String,
    run: Measured,
}

/// One command's best run.
#[derive(Default)]
struct Measured {
    time: Duration,
    /// (VmHWM, peak RssAnon) in KiB: VmHWM counts the pages of a mapped
    /// capture file too (page cache, reclaimable); RssAnon is the process's
    /// own memory.
    rss_kib: Option<(u64, u64)>,
    /// CPU time (user + system) by thread name, of the best run.
    cpu: Vec<(String, Duration)>,
}

/// The floor: read every packet with the `pcap` crate and touch nothing.
fn floor(path: &Path, runs: usize) -> (Duration, u64, u64) {
    let mut best = Duration::MAX;
    let (mut pkts, mut bytes) = (0, 0);
    for _ in 0..runs {
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

fn status_field(s: &str, name: &str) -> Option<u64> {
    s.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Each thread's name and its time on a CPU so far, in ns: exact from
/// `schedstat`, else from `stat`'s utime + stime (USER_HZ ticks, 100 a
/// second on Linux, which undercount).
fn thread_cpu(pid: u32) -> Vec<(u32, String, u64)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let tid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let (open, close) = (stat.find('(')?, stat.rfind(')')?);
            let name = stat.get(open + 1..close)?.to_string();
            let exact = std::fs::read_to_string(e.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok());
            let ns = match exact {
                Some(ns) => ns,
                None => {
                    let f: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
                    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
                    ticks * 10_000_000
                }
            };
            Some((tid, name, ns))
        })
        .collect()
}

/// Runs a command `runs` times: the best wall time, with its peak RSS
/// (VmHWM, RssAnon) and its CPU by thread (sampled every 5 ms until exit,
/// so the last few milliseconds of each thread may be missing).
fn run(runs: usize, mut cmd: impl FnMut() -> Command) -> Measured {
    let mut best = Measured {
        time: Duration::MAX,
        ..Default::default()
    };
    for _ in 0..runs {
        let t = Instant::now();
        let mut child = cmd()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let pid = child.id();
        let (mut hwm, mut anon) = (None, 0u64);
        let mut threads: HashMap<u32, (String, u64)> = HashMap::new();
        loop {
            if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                hwm = status_field(&s, "VmHWM:").or(hwm);
                anon = anon.max(status_field(&s, "RssAnon:").unwrap_or(0));
            }
            for (tid, name, ns) in thread_cpu(pid) {
                threads.insert(tid, (name, ns));
            }
            if child.try_wait().expect("wait").is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let time = t.elapsed();
        if time < best.time {
            let mut cpu: HashMap<String, u64> = HashMap::new();
            for (name, ns) in threads.into_values() {
                *cpu.entry(name).or_default() += ns;
            }
            let mut cpu: Vec<(String, Duration)> = cpu
                .into_iter()
                .map(|(n, t)| (n, Duration::from_nanos(t)))
                .collect();
            cpu.sort();
            best = Measured {
                time,
                rss_kib: hwm.map(|h| (h, anon)),
                cpu,
            };
        }
    }
    best
}

/// A spanwatch run's CPU in ms: workers W, the dispatcher D (the main
/// thread) and the writer R.
fn split(m: &Measured) -> (f64, f64, f64) {
    let (mut w, mut d, mut r) = (0.0, 0.0, 0.0);
    for (name, t) in &m.cpu {
        let ms = t.as_secs_f64() * 1e3;
        if name.starts_with("spanwatch-worke") {
            w += ms;
        } else if name.starts_with("spanwatch-write") {
            r += ms;
        } else {
            d += ms;
        }
    }
    (w, d, r)
}

fn cpu_line(m: &Measured) -> String {
    let (w, d, r) = split(m);
    format!(
        "CPU {:.0} ms: workers {w:.0}, dispatcher {d:.0}, writer {r:.0}",
        w + d + r
    )
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let tshark = args.iter().any(|a| a == "--tshark");
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    let runs: usize = value("--runs").map_or(3, |v| v.parse().expect("--runs N"));
    let out = value("--out").map_or_else(
        || std::env::temp_dir().join("spanwatch-e2e-events.json"),
        PathBuf::from,
    );
    let files: Vec<PathBuf> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| {
            let value_of_flag = *i > 0 && matches!(args[i - 1].as_str(), "--runs" | "--out");
            !a.starts_with("--") && !value_of_flag
        })
        .map(|(_, a)| PathBuf::from(a))
        .collect();
    let exe = std::env::current_exe()
        .expect("exe")
        .with_file_name("spanwatch");
    assert!(
        exe.exists(),
        "build spanwatch first: cargo build --release -p spanwatch"
    );
    // a fresh file for every run (a character device such as /dev/null stays)
    let fresh = |out: &Path| {
        if out.is_file() {
            let _ = std::fs::remove_file(out);
        }
    };
    println!("events written to {}", out.display());
    for f in &files {
        let (ft, pkts, bytes) = floor(f, runs);
        let mut rows = vec![Row {
            what: "floor (pcap crate read loop)".into(),
            run: Measured {
                time: ft,
                ..Default::default()
            },
        }];
        for workers in [1, 2] {
            let m = run(runs, || {
                fresh(&out);
                let mut c = Command::new(&exe);
                c.args(["read", "--workers", &workers.to_string(), "-o"])
                    .arg(&out)
                    .arg(f);
                c
            });
            rows.push(Row {
                what: format!("spanwatch read --workers {workers}"),
                run: m,
            });
        }
        let m = run(runs, || {
            fresh(&out);
            let mut c = Command::new(&exe);
            c.args(["read", "--reader", "libpcap", "-o"])
                .arg(&out)
                .arg(f);
            c
        });
        rows.push(Row {
            what: "spanwatch read --reader libpcap".into(),
            run: m,
        });
        if tshark {
            let m = run(runs, || {
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
                run: m,
            });
        }
        fresh(&out);
        println!(
            "\n{} — {pkts} packets, {:.1} MB",
            f.display(),
            bytes as f64 / 1e6
        );
        println!("| run | time (s) | Gbit/s | Mpackets/s | peak RSS (MiB) | peak anon RSS (MiB) | × floor |");
        println!("|---|---:|---:|---:|---:|---:|---:|");
        for r in &rows {
            let s = r.run.time.as_secs_f64();
            let mib = |k: u64| format!("{:.1}", k as f64 / 1024.0);
            println!(
                "| {} | {:.3} | {:.2} | {:.2} | {} | {} | {:.2} |",
                r.what,
                s,
                bytes as f64 * 8.0 / s / 1e9,
                pkts as f64 / s / 1e6,
                r.run
                    .rss_kib
                    .map(|k| mib(k.0))
                    .unwrap_or_else(|| "–".into()),
                r.run
                    .rss_kib
                    .map(|k| mib(k.1))
                    .unwrap_or_else(|| "–".into()),
                s / ft.as_secs_f64()
            );
        }
        let (one, two) = (&rows[1].run, &rows[2].run);
        println!(
            "\n2 workers / 1 worker: {:.2}x",
            one.time.as_secs_f64() / two.time.as_secs_f64()
        );
        let (w, d, r) = split(one);
        println!(
            "- 1 worker: {}; (D + R) / W = {:.2}, so on 2 cores 2 workers reach at most \
             2W / (W + D + R) = {:.2}x",
            cpu_line(one),
            (d + r) / w.max(1.0),
            2.0 * w / (w + d + r).max(1.0)
        );
        println!("- 2 workers: {}", cpu_line(two));
    }
}
