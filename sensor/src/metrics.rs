//! Prometheus metrics: `GET /metrics` in the text exposition format, off
//! unless `[metrics] listen` is set.
//!
//! The metrics are what the `stats` events say (the latest one: they move at
//! the stats interval) and the alerts by severity and tool, which a sink
//! ([`MetricsSink`]) reads from the event stream like any output, so the
//! pipeline needs no second way of counting. A thread of its own serves
//! scrapes, one at a time, each bounded in size and time: a slow or
//! malicious scraper delays other scrapes, never the sensor. Anything but
//! GET gets 405, any path but `/metrics` 404. The format is a few lines of
//! text; no crate needed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::sink::{Batch, Sent, Sink};

/// What the metrics are made from.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The latest `stats` event's `stats` object.
    pub stats: Option<Value>,
    /// Alerts by (severity, tool).
    pub alerts: BTreeMap<(u64, String), u64>,
}

/// Shared between the sink and the server.
pub type Shared = Arc<Mutex<Snapshot>>;

/// Reads `stats` and `alert` lines into the snapshot.
pub struct MetricsSink(pub Shared);

/// Distinct tools counted (a hostile name cannot grow the set forever).
const MAX_TOOLS: usize = 256;

impl Sink for MetricsSink {
    fn send(&mut self, b: &Batch<'_>) -> Sent {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for l in b.lines {
            match l.event_type {
                "stats" => {
                    if let Ok(v) = serde_json::from_slice::<Value>(l.json) {
                        s.stats = Some(v["stats"].clone());
                    }
                }
                "alert" => {
                    let v: Value = serde_json::from_slice(l.json).unwrap_or_default();
                    let tool = v["alert"]["tool"].as_str().unwrap_or("").to_string();
                    let key = (u64::from(l.severity.unwrap_or(0)), tool);
                    if s.alerts.contains_key(&key) || s.alerts.len() < MAX_TOOLS {
                        *s.alerts.entry(key).or_default() += 1;
                    }
                }
                _ => {}
            }
        }
        Sent {
            written: b.lines.len() as u64,
            ..Sent::default()
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }

    fn chooses_lines(&self) -> bool {
        true
    }
}

/// A label value, escaped as the format wants.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, String)], v: f64) {
        let l: Vec<String> = labels
            .iter()
            .map(|(k, x)| format!("{k}=\"{}\"", label(x)))
            .collect();
        if l.is_empty() {
            let _ = writeln!(self.0, "{name} {v}");
        } else {
            let _ = writeln!(self.0, "{name}{{{}}} {v}", l.join(","));
        }
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, v: f64) {
        self.head(name, kind, help);
        self.sample(name, &[], v);
    }

    /// One metric per element of an array, labelled by one of its fields.
    fn each(&mut self, name: &str, help: &str, items: &Value, by: (&str, &str), field: &str) {
        self.head(name, "counter", help);
        for it in items.as_array().into_iter().flatten() {
            let l = match &it[by.1] {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            self.sample(name, &[(by.0, l)], num(&it[field]));
        }
    }
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// Per-interface counters: (metric, help, field of `stats.interfaces[]`).
const PER_INTERFACE: [(&str, &str, &str); 4] = [
    ("spanwatch_packets_total", "Packets captured.", "packets"),
    ("spanwatch_bytes_total", "Bytes captured.", "bytes"),
    (
        "spanwatch_kernel_drops_total",
        "Packets the kernel dropped.",
        "kernel_dropped",
    ),
    (
        "spanwatch_interface_drops_total",
        "Packets the interface dropped.",
        "if_dropped",
    ),
];

/// Per-worker counters: (metric, help, field of `stats.workers[]`).
const PER_WORKER: [(&str, &str, &str); 2] = [
    (
        "spanwatch_queue_drops_total",
        "Packets dropped for a full worker queue.",
        "queue_dropped",
    ),
    (
        "spanwatch_worker_packets_total",
        "Packets each worker processed.",
        "packets",
    ),
];

/// Single values: (metric, type, help, field of `stats`).
const SINGLE: [(&str, &str, &str, &str); 9] = [
    (
        "spanwatch_uptime_seconds",
        "gauge",
        "Seconds since the sensor started.",
        "uptime",
    ),
    (
        "spanwatch_flows_active",
        "gauge",
        "Flows tracked now.",
        "flows_active",
    ),
    (
        "spanwatch_flows_total",
        "counter",
        "Flows created.",
        "flows_created",
    ),
    (
        "spanwatch_flows_evicted_total",
        "counter",
        "Flows evicted from a full table.",
        "flows_evicted",
    ),
    (
        "spanwatch_tcp_reassembly_gaps_total",
        "counter",
        "TCP streams with a gap.",
        "stream_gaps",
    ),
    (
        "spanwatch_tls_handshakes_total",
        "counter",
        "TLS ClientHellos read.",
        "tls_client_hellos",
    ),
    (
        "spanwatch_events_written_total",
        "counter",
        "Events the outputs took.",
        "events_written",
    ),
    (
        "spanwatch_events_lost_total",
        "counter",
        "Events the outputs lost.",
        "events_lost",
    ),
    (
        "spanwatch_alerts_suppressed_total",
        "counter",
        "Repeats of a sighting not alerted.",
        "alerts_suppressed",
    ),
];

/// The exposition of a snapshot.
pub fn render(s: &Snapshot) -> String {
    let mut o = Out(String::new());
    o.head("spanwatch_build_info", "gauge", "The running build.");
    let version = env!("CARGO_PKG_VERSION").to_string();
    o.sample("spanwatch_build_info", &[("version", version)], 1.0);
    let empty = Value::Null;
    let st = s.stats.as_ref().unwrap_or(&empty);
    for (name, kind, help, key) in SINGLE {
        o.one(name, kind, help, num(&st[key]));
    }
    for (name, help, field) in PER_INTERFACE {
        o.each(name, help, &st["interfaces"], ("interface", "name"), field);
    }
    for (name, help, field) in PER_WORKER {
        o.each(name, help, &st["workers"], ("worker", "worker"), field);
    }
    let quic = &st["quic"];
    let hellos = num(&quic["client_hellos"]);
    o.one(
        "spanwatch_quic_client_hellos_total",
        "counter",
        "QUIC ClientHellos read.",
        hellos,
    );
    let kinds = [
        "decode_truncated",
        "decode_malformed",
        "tls_malformed",
        "certs_malformed",
        "dns_malformed",
    ];
    let malformed = kinds.iter().map(|k| num(&st[*k])).sum::<f64>() + num(&quic["malformed"]);
    o.one(
        "spanwatch_malformed_total",
        "counter",
        "Malformed input skipped.",
        malformed,
    );
    o.head("spanwatch_alerts_total", "counter", "Alerts raised.");
    for ((sev, tool), n) in &s.alerts {
        let labels = [("severity", sev.to_string()), ("tool", tool.clone())];
        o.sample("spanwatch_alerts_total", &labels, *n as f64);
    }
    let outs = &st["outputs"];
    o.each(
        "spanwatch_output_events_total",
        "Events each output took.",
        outs,
        ("output", "name"),
        "written",
    );
    o.each(
        "spanwatch_output_dropped_total",
        "Events each output dropped.",
        outs,
        ("output", "name"),
        "lost",
    );
    o.head(
        "spanwatch_packet_latency_seconds",
        "gauge",
        "Per-packet processing latency.",
    );
    for (q, k) in [
        ("0.5", "p50"),
        ("0.99", "p99"),
        ("0.999", "p999"),
        ("1", "max"),
    ] {
        let v = num(&st["latency_ns"][k]) / 1e9;
        o.sample(
            "spanwatch_packet_latency_seconds",
            &[("quantile", q.to_string())],
            v,
        );
    }
    o.0
}

/// Largest request head read.
const MAX_REQUEST: usize = 8 * 1024;

fn answer(mut c: TcpStream, shared: &Shared) -> std::io::Result<()> {
    c.set_read_timeout(Some(Duration::from_secs(2)))?;
    c.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_REQUEST {
        let n = c.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut first = head.lines().next().unwrap_or("").split(' ');
    let (method, path) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    let (status, body, extra) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => {
            let s = shared.lock().unwrap_or_else(|e| e.into_inner());
            (
                "200 OK",
                render(&s),
                "Content-Type: text/plain; version=0.0.4\r\n",
            )
        }
        ("GET", _) => ("404 Not Found", "not found\n".to_string(), ""),
        _ => (
            "405 Method Not Allowed",
            "only GET\n".to_string(),
            "Allow: GET\r\n",
        ),
    };
    write!(
        c,
        "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Serves scrapes on `listener` until the process ends.
pub fn serve(
    listener: TcpListener,
    shared: Shared,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("spanwatch-metrics".into())
        .spawn(move || {
            for c in listener.incoming().flatten() {
                let _ = answer(c, &shared);
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_follows_the_stats_and_the_alerts() {
        let stats = serde_json::from_str(
            r#"{"uptime": 12, "interfaces": [{"name": "eth1", "packets": 100, "bytes": 9000, "kernel_dropped": 2, "if_dropped": 0}],
                "workers": [{"worker": 0, "packets": 60, "queue_dropped": 1}, {"worker": 1, "packets": 40, "queue_dropped": 0}],
                "flows_active": 7, "stream_gaps": 3, "quic": {"client_hellos": 5, "malformed": 1}, "decode_truncated": 2,
                "latency_ns": {"p50": 1000, "p99": 5000, "p999": 9000, "max": 20000},
                "outputs": [{"name": "syslog:tcp://x\"y:1", "written": 10, "lost": 2}]}"#,
        )
        .ok();
        let mut s = Snapshot {
            stats,
            ..Snapshot::default()
        };
        s.alerts.insert((1, "ngrok".into()), 4);
        let t = render(&s);
        for want in [
            "spanwatch_packets_total{interface=\"eth1\"} 100",
            "spanwatch_kernel_drops_total{interface=\"eth1\"} 2",
            "spanwatch_queue_drops_total{worker=\"0\"} 1",
            "spanwatch_flows_active 7",
            "spanwatch_tcp_reassembly_gaps_total 3",
            "spanwatch_alerts_total{severity=\"1\",tool=\"ngrok\"} 4",
            "spanwatch_output_dropped_total{output=\"syslog:tcp://x\\\"y:1\"} 2",
            "spanwatch_packet_latency_seconds{quantile=\"0.99\"} 0.000005",
            "spanwatch_malformed_total 3",
            "# TYPE spanwatch_packets_total counter",
        ] {
            assert!(t.contains(want), "{want}\n{t}");
        }
        assert!(render(&Snapshot::default()).contains("spanwatch_build_info"));
    }
}
