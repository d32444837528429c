//! Site configuration (TOML): sensor name and network segments.
//!
//! ```toml
//! [sensor]
//! name = "dmz-sensor-1"
//! [[segment]]
//! name = "prod-core"
//! kind = "production"          # production | development | other
//! cidrs = ["10.1.0.0/16", "2001:db8:1::/48"]
//! vlans = [100]                # optional
//! ```
//!
//! Unknown keys are errors; every error names the file, line, column and key.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::decode::Vlans;

/// A configuration or signature file error, located.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}:{col}: {msg}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub msg: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SegmentKind {
    Production,
    Development,
    Other,
}

impl SegmentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SegmentKind::Production => "production",
            SegmentKind::Development => "development",
            SegmentKind::Other => "other",
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SegmentConfig {
    /// Shared with every flow placed in the segment (see [`Segment`]).
    pub name: Arc<str>,
    pub kind: SegmentKind,
    #[serde(default)]
    pub cidrs: Vec<IpNet>,
    #[serde(default)]
    pub vlans: Vec<u16>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SensorConfig {
    pub name: Option<String>,
}

/// Sanctioned names: a flow whose SNI, DNS query, HTTP Host or CONNECT target
/// is one of these (or below one, label-aligned) raises no alert.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AllowConfig {
    #[serde(default)]
    pub names: Vec<String>,
    /// TLS-terminating proxies run on purpose (load balancers, inspection
    /// appliances): addresses or networks of the proxy, or names its
    /// clients use (label-aligned suffixes). Their re-originated legs are
    /// sanctioned, not alerted.
    #[serde(default)]
    pub interceptors: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LedgerConfig {
    /// A tool active on one host longer than this raises its own alert.
    pub max_active: Option<HumanDuration>,
    /// After an alert for one host and signature, repeats are silent (the
    /// ledger still counts them) for this long. Default 1h.
    pub realert_after: Option<HumanDuration>,
    /// Where the ledger is kept across restarts: a SQLite file, or
    /// `postgres://...` for a ledger several sensors share. `live` only
    /// (`read` keeps it in memory unless `--ledger` names one).
    pub database: Option<String>,
    /// A tool unseen on a host this long starts a new activity period when it
    /// comes back. Default 1h.
    pub idle_after: Option<HumanDuration>,
    /// Activity periods that ended longer ago than this are pruned. Default 180d.
    pub retain: Option<HumanDuration>,
    /// How often the store commits (wall time). Default 2s.
    pub commit_every: Option<HumanDuration>,
    /// Updates held while the database is unreachable, at most. Default 100000.
    pub buffer: Option<usize>,
}

/// The event types the sensor writes.
pub const EVENT_TYPES: [&str; 10] = [
    "alert",
    "flow",
    "tls",
    "certificate",
    "quic",
    "dns",
    "http",
    "tls_legs",
    "host_activity",
    "stats",
];

/// An event type as a small number: its place in [`EVENT_TYPES`] (`stats`,
/// the last, stands for any other), so a line in a queue carries one byte.
pub fn event_type_index(t: &str) -> u8 {
    EVENT_TYPES
        .iter()
        .position(|x| *x == t)
        .unwrap_or(EVENT_TYPES.len() - 1) as u8
}

/// Checks a list of event types; the error names the unknown one and the known.
pub fn check_event_types(types: &[String]) -> Result<(), String> {
    match types.iter().find(|t| !EVENT_TYPES.contains(&t.as_str())) {
        Some(t) => Err(format!(
            "unknown event type `{t}` (known: {})",
            EVENT_TYPES.join(", ")
        )),
        None => Ok(()),
    }
}

/// What is wrong with one `[[output]]` table, if anything.
fn output_problem(o: &OutputConfig) -> Option<String> {
    let address = o.address.as_deref();
    match (o.kind, &o.path) {
        (k, _) if address.is_some() && k != OutputKind::Syslog => {
            Some("only a syslog output has an `address`".to_string())
        }
        (k, _) if o.url.is_some() && k != OutputKind::Redis => {
            Some("only a redis output has a `url`".to_string())
        }
        (OutputKind::File, None) => Some("a file output needs a `path`".to_string()),
        (OutputKind::Stdout | OutputKind::Syslog | OutputKind::Redis, Some(_)) => {
            Some("only a file output has a `path`".to_string())
        }
        (OutputKind::Syslog, None) => match address {
            None => Some(
                "a syslog output needs an `address` (tcp://, tls:// or udp://host:port)"
                    .to_string(),
            ),
            Some(a) if parse_net_address(a).is_none() => Some(format!(
                "syslog address `{a}` is not tcp://, tls:// or udp://host:port"
            )),
            _ => check_event_types(&o.event_types).err(),
        },
        (OutputKind::Redis, None) => match o.url.as_deref() {
            Some(u) if u.starts_with("redis://") => check_event_types(&o.event_types).err(),
            Some(u) => Some(format!("redis url `{u}` does not start with redis://")),
            None => Some("a redis output needs a `url` (redis://host:port/db)".to_string()),
        },
        _ => check_event_types(&o.event_types).err(),
    }
}

/// The transport of a network output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetProto {
    Tcp,
    Udp,
    /// TCP with TLS (RFC 5425).
    Tls,
}

/// `tcp://host:port` or `udp://host:port`: the transport and `host:port`.
pub fn parse_net_address(s: &str) -> Option<(NetProto, String)> {
    let (proto, rest) = if let Some(r) = s.strip_prefix("tcp://") {
        (NetProto::Tcp, r)
    } else if let Some(r) = s.strip_prefix("tls://") {
        (NetProto::Tls, r)
    } else {
        (NetProto::Udp, s.strip_prefix("udp://")?)
    };
    let (host, port) = rest.rsplit_once(':')?;
    let ok = !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0);
    ok.then(|| (proto, rest.to_string()))
}

/// Where an `[[output]]` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    File,
    Stdout,
    /// RFC 5424 messages over `tcp://` (RFC 6587 octet counting) or `udp://`.
    Syslog,
    /// A Redis stream (XADD) or list (RPUSH).
    Redis,
}

/// How a Redis output stores events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// XADD with an approximate MAXLEN: a field `event`.
    #[default]
    Stream,
    /// RPUSH of the event's JSON.
    List,
}

/// One `[[output]]` table: a sink and the event types it takes.
///
/// ```toml
/// [[output]]
/// type = "file"
/// path = "/var/log/spanwatch/eve.json"
/// [[output]]
/// type = "stdout"
/// event_types = ["alert", "host_activity"]
/// ```
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    #[serde(rename = "type")]
    pub kind: OutputKind,
    #[serde(default)]
    pub path: Option<std::path::PathBuf>,
    /// Where a network output sends (`tcp://host:port`, `udp://host:port`).
    #[serde(default)]
    pub address: Option<String>,
    /// A network output's queue, in MiB (what it holds while the far end
    /// is slow or away; beyond it events are dropped and counted).
    #[serde(default)]
    pub queue_mib: Option<u32>,
    /// A `tls://` syslog output's trusted CA certificates (PEM; default:
    /// the system's, `/etc/ssl/certs/ca-certificates.crt`).
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// A Redis output's server (`redis://host:port/db`).
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub mode: RedisMode,
    /// A Redis output's key (default `spanwatch`).
    #[serde(default)]
    pub key: Option<String>,
    /// A Redis stream's approximate length bound (default 1,000,000).
    #[serde(default)]
    pub maxlen: Option<u64>,
    /// The event types this output takes (all when empty).
    #[serde(default)]
    pub event_types: Vec<String>,
}

/// A duration written `90s`, `15m`, `8h` or `2d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub crate::time::Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map(HumanDuration).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`{s}` is not a duration (write e.g. `90s`, `15m`, `8h`, `2d`)"
            ))
        })
    }
}

pub fn parse_duration(s: &str) -> Option<crate::time::Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: i64 = n.parse().ok()?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    // in nanoseconds, as capture time counts: a number too big is no duration
    let nanos = n.checked_mul(secs)?.checked_mul(1_000_000_000)?;
    Some(crate::time::Duration(nanos))
}

/// The whole site configuration file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    #[serde(default)]
    pub sensor: SensorConfig,
    #[serde(default, rename = "segment")]
    pub segments: Vec<SegmentConfig>,
    #[serde(default)]
    pub allow: AllowConfig,
    #[serde(default)]
    pub ledger: LedgerConfig,
    /// Where events go (standard output, or `-o FILE`, when there is none).
    #[serde(default, rename = "output")]
    pub outputs: Vec<OutputConfig>,
    /// `live`'s settings, so a service needs no arguments (flags override).
    #[serde(default)]
    pub capture: CaptureConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub events: EventsConfig,
    #[serde(default)]
    pub flow: FlowConfig,
}

/// `[flow]`: the flow table's size, its idle timeouts and the reassembly
/// memory cap (the command line's `--max-flows` and `--stream-memcap` win).
/// The timeouts are applied again on a reload; the sizes at start only.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FlowConfig {
    /// Flows tracked at most, all workers together. Default 65536.
    pub max_flows: Option<usize>,
    /// Heap the streams (and HTTP requests waiting for a response) may
    /// hold, all workers together, in MiB. Default 256.
    pub stream_memcap_mib: Option<u64>,
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
}

/// `[flow.timeouts]`: how long a flow may be idle (capture time) before it
/// ends and its `flow` event is logged.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsConfig {
    /// TCP before the server answered. Default 60s.
    pub tcp_new: Option<HumanDuration>,
    /// TCP once both sides have sent. Default 10m.
    pub tcp_established: Option<HumanDuration>,
    /// TCP after both FINs or a RST (late packets stay in the flow). Default 10s.
    pub tcp_closed: Option<HumanDuration>,
    /// UDP. Default 2m.
    pub udp: Option<HumanDuration>,
    /// UDP flows read as DNS (a lookup is answered within it). Default 10s.
    pub dns: Option<HumanDuration>,
    /// Other IP protocols. Default 60s.
    pub other: Option<HumanDuration>,
}

impl FlowConfig {
    /// The timeouts, defaults where unset.
    pub fn timeouts(&self) -> crate::flow::Timeouts {
        let d = crate::flow::Timeouts::default();
        let t = &self.timeouts;
        let or = |v: &Option<HumanDuration>, default| v.as_ref().map_or(default, |h| h.0);
        crate::flow::Timeouts {
            tcp_new: or(&t.tcp_new, d.tcp_new),
            tcp_established: or(&t.tcp_established, d.tcp_established),
            tcp_closed: or(&t.tcp_closed, d.tcp_closed),
            udp: or(&t.udp, d.udp),
            udp_exchange: or(&t.dns, d.udp_exchange),
            other: or(&t.other, d.other),
        }
    }

    /// What is wrong with the values, if anything: the key and the problem.
    fn problem(&self) -> Option<(&'static str, String)> {
        for (key, v) in [
            ("max_flows", self.max_flows.map(|n| n as u64)),
            ("stream_memcap_mib", self.stream_memcap_mib),
        ] {
            if v == Some(0) {
                return Some((key, format!("flow.{key}: must be at least 1")));
            }
        }
        let t = &self.timeouts;
        let zero = [
            ("tcp_new", &t.tcp_new),
            ("tcp_established", &t.tcp_established),
            ("udp", &t.udp),
            ("dns", &t.dns),
            ("other", &t.other),
        ]
        .into_iter()
        .find(|(_, v)| v.as_ref().is_some_and(|h| h.0 .0 <= 0));
        zero.map(|(k, _)| {
            let msg = format!("flow.timeouts.{k}: must be at least 1s (only tcp_closed may be 0s)");
            (k, msg)
        })
    }
}

/// How certificates are logged (`[events] certificates`).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CertificateLog {
    /// Each distinct certificate once, as a `certificate` event (again after
    /// `certificate_relog`); `tls` events name their chain by SHA-256.
    #[default]
    Once,
    /// Every `tls` event carries its whole chain.
    Inline,
}

/// `[events]`: what the protocol events carry.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    #[serde(default)]
    pub certificates: CertificateLog,
    /// A certificate seen again this long (capture time) after it was last
    /// logged is logged again. Default 24h.
    pub certificate_relog: Option<HumanDuration>,
    /// `tls` and `quic` events carry the ClientHello's lists (ciphers,
    /// extensions, groups ...) as `client_handshake`. Default off.
    #[serde(default)]
    pub client_handshake: bool,
}

/// `[metrics]`: Prometheus metrics, off unless `listen` is set.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `host:port` to serve `GET /metrics` on (e.g. `127.0.0.1:9917`).
    pub listen: Option<String>,
}

/// `[capture]`: what `live` captures, and with how many workers.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CaptureConfig {
    #[serde(default)]
    pub interfaces: Vec<String>,
    pub bpf: Option<String>,
    /// Kernel capture buffer per interface, in MiB.
    pub buffer_mib: Option<u32>,
    /// A number (1-256) or `"auto"` (one per core).
    pub workers: Option<WorkersSetting>,
}

/// `workers = 4` or `workers = "auto"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum WorkersSetting {
    Count(u16),
    Word(String),
}

/// What an event says of an endpoint's segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SegmentRef<'a> {
    pub name: &'a str,
    pub kind: SegmentKind,
}

/// The segment a flow was placed in, by identity: its name and kind as they
/// were when the flow began. A flow keeps it for its whole life, so a reload
/// that renames, reorders or removes segments does not relabel open flows.
/// Cloning shares the name (no allocation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub name: Arc<str>,
    pub kind: SegmentKind,
}

impl Segment {
    pub fn as_ref(&self) -> SegmentRef<'_> {
        SegmentRef {
            name: &self.name,
            kind: self.kind,
        }
    }
}

impl SiteConfig {
    /// The sensor's name, for events.
    pub fn sensor_name(&self) -> Option<&str> {
        self.sensor.name.as_deref()
    }

    pub fn parse(file: &str, text: &str) -> Result<SiteConfig, ConfigError> {
        let cfg: SiteConfig = toml::from_str(text).map_err(|e| {
            let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            ConfigError {
                file: file.to_string(),
                line,
                col,
                msg: e.message().to_string(),
            }
        })?;
        cfg.validate(file, text)?;
        Ok(cfg)
    }

    fn validate(&self, file: &str, text: &str) -> Result<(), ConfigError> {
        for n in &self.allow.names {
            let v = n.strip_suffix('.').unwrap_or(n);
            if v.is_empty()
                || v.starts_with('.')
                || v.starts_with('*')
                || v.contains(char::is_whitespace)
            {
                let (line, col) = text
                    .find(n.as_str())
                    .map(|o| line_col(text, o))
                    .unwrap_or((0, 0));
                return Err(ConfigError {
                    file: file.to_string(),
                    line,
                    col,
                    msg: format!("allow.names: `{n}` is not a DNS name (subdomains are included; write no `*.`)"),
                });
            }
        }
        let workers_bad = match &self.capture.workers {
            Some(WorkersSetting::Count(n)) => !(1..=256).contains(n),
            Some(WorkersSetting::Word(w)) => w != "auto",
            None => false,
        };
        if workers_bad || self.capture.buffer_mib == Some(0) {
            let msg = "capture: `workers` is a number from 1 to 256 or \"auto\"; `buffer_mib` is at least 1";
            return Err(at_section(file, text, "[capture]", msg.into()));
        }
        if let Some((key, msg)) = self.flow.problem() {
            return Err(at_key(file, text, key, "[flow", msg));
        }
        for (i, o) in self.outputs.iter().enumerate() {
            let problem = output_problem(o);
            if let Some(msg) = problem {
                let (line, col) = nth_table_line(text, "output", i);
                return Err(ConfigError {
                    file: file.to_string(),
                    line,
                    col,
                    msg: format!("output: {msg}"),
                });
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, s) in self.segments.iter().enumerate() {
            let err = |msg: String| {
                let (line, col) = nth_table_line(text, "segment", i);
                ConfigError {
                    file: file.to_string(),
                    line,
                    col,
                    msg,
                }
            };
            if s.name.trim().is_empty() {
                return Err(err("segment.name: must not be empty".into()));
            }
            if !seen.insert(&*s.name) {
                return Err(err(format!("segment.name: `{}` is defined twice", s.name)));
            }
            if s.cidrs.is_empty() && s.vlans.is_empty() {
                return Err(err(format!("segment `{}`: needs cidrs or vlans", s.name)));
            }
            if let Some(v) = s.vlans.iter().find(|v| **v > 4095) {
                return Err(err(format!("segment.vlans: {v} is not a VLAN id (0-4095)")));
            }
        }
        Ok(())
    }

    /// The segment an endpoint belongs to: a VLAN match beats none, then the
    /// longest matching prefix wins, then the first listed.
    pub fn segment_of(&self, ip: IpAddr, vlans: &Vlans) -> Option<Segment> {
        let s = self.segments.get(self.segment_index(ip, vlans)?)?;
        Some(Segment {
            name: Arc::clone(&s.name),
            kind: s.kind,
        })
    }

    fn segment_index(&self, ip: IpAddr, vlans: &Vlans) -> Option<usize> {
        let mut best: Option<(bool, u8, usize)> = None;
        for (i, s) in self.segments.iter().enumerate() {
            let vlan_match =
                !s.vlans.is_empty() && vlans.as_slice().iter().any(|v| s.vlans.contains(v));
            if !s.vlans.is_empty() && !vlan_match {
                continue;
            }
            let prefix = if s.cidrs.is_empty() {
                Some(0)
            } else {
                s.cidrs
                    .iter()
                    .filter(|n| n.contains(&ip))
                    .map(|n| n.prefix_len())
                    .max()
            };
            let Some(prefix) = prefix else { continue };
            let score = (vlan_match, prefix, usize::MAX - i);
            if best.is_none_or(|(bv, bp, bi)| score > (bv, bp, bi)) {
                best = Some(score);
            }
        }
        best.map(|(_, _, inv)| usize::MAX - inv)
    }
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map(|p| p + 1).unwrap_or(0) + 1;
    (line, col)
}

/// An error found after parsing, at the line of the first header that
/// starts with `header` (line 0 when there is none).
fn at_section(file: &str, text: &str, header: &str, msg: String) -> ConfigError {
    let line = text
        .lines()
        .position(|l| l.trim_start().starts_with(header))
        .map_or(0, |i| i + 1);
    ConfigError {
        file: file.to_string(),
        line,
        col: usize::from(line > 0),
        msg,
    }
}

/// An error found after parsing, at the first assignment to `key`, else at
/// the first header that starts with `header`.
fn at_key(file: &str, text: &str, key: &str, header: &str, msg: String) -> ConfigError {
    match key_at(text, key) {
        Some((line, col)) => ConfigError {
            file: file.to_string(),
            line,
            col,
            msg,
        },
        None => at_section(file, text, header, msg),
    }
}

/// Line and column of the first assignment to `key` (plain, dotted as
/// `a.key`, or inside an inline table), for an error found after parsing.
fn key_at(text: &str, key: &str) -> Option<(usize, usize)> {
    text.lines().enumerate().find_map(|(i, l)| {
        let names = l
            .split(['{', ','])
            .filter_map(|part| part.split_once('='))
            .map(|(k, _)| k);
        let found = names
            .map(str::trim)
            .any(|k| k == key || k.ends_with(&format!(".{key}")));
        found.then(|| (i + 1, l.find(key).map_or(1, |c| c + 1)))
    })
}

/// Line of the `n`th `[[name]]` header (for errors found after parsing).
fn nth_table_line(text: &str, name: &str, n: usize) -> (usize, usize) {
    let header = format!("[[{name}]]");
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with(&header))
        .nth(n)
        .map(|(i, _)| (i + 1, 1))
        .unwrap_or((0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_settings_for_a_service_without_arguments() {
        let c = SiteConfig::parse(
            "t",
            "[capture]\ninterfaces = [\"eth1\", \"eth2\"]\nbpf = \"not port 22\"\nbuffer_mib = 128\nworkers = 4\n",
        )
        .expect("capture");
        assert_eq!(c.capture.interfaces, ["eth1", "eth2"]);
        assert_eq!(c.capture.workers, Some(WorkersSetting::Count(4)));
        let c = SiteConfig::parse("t", "[capture]\nworkers = \"auto\"\n").expect("auto");
        assert_eq!(c.capture.workers, Some(WorkersSetting::Word("auto".into())));
        for bad in [
            "[capture]\nworkers = 0\n",
            "[capture]\nworkers = \"many\"\n",
            "[capture]\nbuffer_mib = 0\n",
        ] {
            let e = SiteConfig::parse("t", bad).expect_err(bad).to_string();
            assert!(e.starts_with("t:1:1: capture:"), "{e}");
        }
    }

    #[test]
    fn flow_settings_and_timeouts_with_defaults_where_unset() {
        let c = SiteConfig::parse(
            "t",
            "[flow]\nmax_flows = 1000\nstream_memcap_mib = 64\n[flow.timeouts]\ntcp_established = \"1h\"\ntcp_closed = \"0s\"\ndns = \"3s\"\n",
        )
        .expect("flow");
        assert_eq!(c.flow.max_flows, Some(1000));
        assert_eq!(c.flow.stream_memcap_mib, Some(64));
        let t = c.flow.timeouts();
        let d = crate::flow::Timeouts::default();
        use crate::time::Duration;
        assert_eq!(t.tcp_established, Duration::from_secs(3600));
        assert_eq!(t.tcp_closed, Duration::from_secs(0));
        assert_eq!(t.udp_exchange, Duration::from_secs(3));
        assert_eq!((t.tcp_new, t.udp, t.other), (d.tcp_new, d.udp, d.other));
        let t = SiteConfig::default().flow.timeouts();
        assert_eq!(
            (t.tcp_established, t.udp_exchange),
            (d.tcp_established, d.udp_exchange)
        );
        for (bad, want) in [
            (
                "[flow]\nmax_flows = 0\n",
                "t:2:1: flow.max_flows: must be at least 1",
            ),
            (
                "[flow]\n  stream_memcap_mib = 0\n",
                "t:2:3: flow.stream_memcap_mib: must",
            ),
            (
                "\n[flow.timeouts]\ntcp_new = \"9s\"\nudp = \"0s\"\n",
                "t:4:1: flow.timeouts.udp: must be at least 1s",
            ),
            (
                "\n\nflow.timeouts.other = \"0s\"\n",
                "t:3:15: flow.timeouts.other:",
            ),
            (
                "[flow]\ntimeouts = { udp = \"5s\", dns = \"0s\" }\n",
                "t:2:26: flow.timeouts.dns:",
            ),
            (
                "[flow.timeouts]\nudp = \"soon\"\n",
                "`soon` is not a duration",
            ),
            (
                "[flow.timeouts]\nudp = \"9999999999999d\"\n",
                "is not a duration",
            ),
            ("[flow.timeouts]\ntcp = \"1s\"\n", "unknown field `tcp`"),
            ("[flow]\nmaxflows = 1\n", "unknown field `maxflows`"),
        ] {
            let e = SiteConfig::parse("t", bad).expect_err(bad).to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
        assert!(parse_duration("106751d").is_some(), "the longest that fits");
        assert!(parse_duration("106752d").is_none());
    }

    #[test]
    fn syslog_outputs_need_a_tcp_or_udp_address() {
        let ok = "[[output]]\ntype = \"syslog\"\naddress = \"udp://127.0.0.1:514\"\nevent_types = [\"alert\"]\n";
        assert!(SiteConfig::parse("t", ok).is_ok());
        for (text, want) in [
            ("[[output]]\ntype = \"syslog\"\n", "needs an `address`"),
            (
                "[[output]]\ntype = \"syslog\"\naddress = \"http://x:1\"\n",
                "is not tcp://",
            ),
            (
                "[[output]]\ntype = \"syslog\"\naddress = \"tcp://x:0\"\n",
                "is not tcp://",
            ),
            (
                "[[output]]\ntype = \"file\"\npath = \"/tmp/x\"\naddress = \"tcp://x:1\"\n",
                "only a syslog output",
            ),
        ] {
            let e = SiteConfig::parse("t", text).expect_err(text).to_string();
            assert!(e.contains(want), "{e}");
        }
        assert_eq!(
            parse_net_address("tcp://[::1]:6514"),
            Some((NetProto::Tcp, "[::1]:6514".into()))
        );
    }

    #[test]
    fn every_event_type_has_its_own_index_and_others_count_as_stats() {
        for (i, t) in EVENT_TYPES.iter().enumerate() {
            assert_eq!(usize::from(event_type_index(t)), i, "{t}");
        }
        assert_eq!(event_type_index("no-such"), event_type_index("stats"));
        assert!(check_event_types(&["quic".into(), "tls_legs".into()]).is_ok());
    }

    const EXAMPLE: &str = r#"
[sensor]
name = "dmz-sensor-1"
[[segment]]
name = "prod-core"
kind = "production"
cidrs = ["10.1.0.0/16", "2001:db8:1::/48"]
[[segment]]
name = "prod-db"
kind = "production"
cidrs = ["10.1.5.0/24"]
[[segment]]
name = "dev-vlan"
kind = "development"
cidrs = ["10.0.0.0/8"]
vlans = [100]
"#;

    #[test]
    fn example_parses_and_longest_prefix_wins() {
        let c = SiteConfig::parse("t.toml", EXAMPLE).expect("parses");
        assert_eq!(c.sensor.name.as_deref(), Some("dmz-sensor-1"));
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let none = Vlans::default();
        assert_eq!(c.segment_index(ip("10.1.2.3"), &none), Some(0));
        assert_eq!(c.segment_index(ip("10.1.5.3"), &none), Some(1));
        assert_eq!(c.segment_index(ip("2001:db8:1::5"), &none), Some(0));
        assert_eq!(c.segment_index(ip("192.0.2.1"), &none), None);
        // on VLAN 100 the VLAN segment wins over a longer prefix
        assert_eq!(
            c.segment_index(ip("10.1.5.3"), &Vlans::new(&[100])),
            Some(2)
        );
        let s = c
            .segment_of(ip("10.1.5.3"), &Vlans::new(&[100]))
            .expect("a segment");
        assert_eq!(s.kind, SegmentKind::Development);
        // a flow's segment shares the configuration's name
        assert!(Arc::ptr_eq(&s.name, &c.segments[2].name));
    }

    #[test]
    fn allow_and_ledger_sections() {
        let c = SiteConfig::parse(
            "t",
            "[allow]\nnames = [\"tunnels.example.com\"]\n[ledger]\nmax_active = \"8h\"\n",
        )
        .expect("ok");
        assert_eq!(c.allow.names, vec!["tunnels.example.com"]);
        assert_eq!(
            c.ledger.max_active,
            Some(HumanDuration(crate::time::Duration::from_secs(8 * 3600)))
        );
        let e =
            SiteConfig::parse("s.toml", "[ledger]\nmax_active = \"8 hours\"\n").expect_err("bad");
        assert!(
            e.to_string().starts_with("s.toml:2:14: ") && e.to_string().contains("not a duration"),
            "{e}"
        );
        let e = SiteConfig::parse("s.toml", "[allow]\nnames = [\"*.x.com\"]\n").expect_err("bad");
        assert!(e.to_string().starts_with("s.toml:2:11: "), "{e}");
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let e = SiteConfig::parse("site.toml", "[sensor]\nname = \"x\"\nnmae = 3\n")
            .expect_err("unknown key");
        let s = e.to_string();
        assert!(s.starts_with("site.toml:3:1: "), "{s}");
        assert!(s.contains("nmae"), "{s}");
        let e = SiteConfig::parse(
            "s.toml",
            "[[segment]]\nname = \"a\"\nkind = \"prod\"\ncidrs = []\n",
        )
        .expect_err("bad kind");
        assert!(e.to_string().starts_with("s.toml:3:"), "{e}");
        assert!(e.to_string().contains("production"), "{e}");
        let e = SiteConfig::parse(
            "s.toml",
            "[[segment]]\nname = \"a\"\nkind = \"other\"\ncidrs = [\"10.0.0.0/33\"]\n",
        )
        .expect_err("bad cidr");
        assert!(e.to_string().starts_with("s.toml:4:"), "{e}");
        let e = SiteConfig::parse(
            "s.toml",
            "[[segment]]\nname = \"a\"\nkind = \"other\"\ncidrs = [\"10.0.0.0/8\"]\n[[segment]]\nname = \"a\"\nkind = \"other\"\nvlans = [1]\n",
        )
        .expect_err("duplicate");
        assert!(e.to_string().starts_with("s.toml:5:1: "), "{e}");
        assert!(e.to_string().contains("twice"), "{e}");
    }

    #[test]
    fn outputs_are_checked() {
        let c = SiteConfig::parse(
            "t",
            "[[output]]\ntype = \"file\"\npath = \"/tmp/e.json\"\n[[output]]\ntype = \"stdout\"\nevent_types = [\"alert\"]\n",
        )
        .expect("ok");
        assert_eq!(c.outputs.len(), 2);
        assert_eq!(c.outputs[1].event_types, ["alert"]);
        let e = SiteConfig::parse("t", "\n[[output]]\ntype = \"file\"\n")
            .expect_err("no path")
            .to_string();
        assert_eq!(e, "t:2:1: output: a file output needs a `path`");
        let e = SiteConfig::parse(
            "t",
            "[[output]]\ntype = \"stdout\"\nevent_types = [\"alerts\"]\n",
        )
        .expect_err("bad type")
        .to_string();
        assert!(
            e.starts_with("t:1:1: output: unknown event type `alerts` (known: alert, flow"),
            "{e}"
        );
        let e = SiteConfig::parse("t", "[[output]]\ntype = \"kafka\"\n")
            .expect_err("not an output kind")
            .to_string();
        assert!(e.contains("unknown variant `kafka`"), "{e}");
    }
}
