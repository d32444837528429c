//! `spanwatch ledger`: what is (or was) running where, and since when, from
//! the stored ledger. A table for people, JSON or CSV for scripts.
//!
//! "Still active" is judged against how far the sensors that saw a tool have
//! observed (capture time: the wall clock for `live`, the end of the capture
//! for `read`), not against the clock of the machine asking: a tool is still
//! active when it was seen within `idle_after` of that point.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use serde::Serialize;

use super::db::{is_postgres, Db};
use super::query::{self, Row};
use crate::config::{parse_duration, SegmentKind};
use crate::detect::Activity;
use crate::findings::{duration, inert, time};
use crate::time::{Duration, Timestamp};
use crate::verdict::ledger::DEFAULT_IDLE_AFTER;
use crate::verdict::severity;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Kind {
    Production,
    Development,
    Other,
}

#[derive(clap::Args)]
pub struct LedgerArgs {
    /// Site configuration: its `[ledger] database` and `idle_after`.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// The ledger database (a SQLite file or postgres://...), instead of
    /// the configuration's.
    #[arg(long)]
    database: Option<String>,
    /// Only tools seen within this long (e.g. 1h, 7d) of the end of what
    /// their sensors have observed.
    #[arg(long)]
    active_within: Option<String>,
    /// Only these tools (repeat for several).
    #[arg(long)]
    tool: Vec<String>,
    /// Only hosts in segments of this kind.
    #[arg(long, value_enum)]
    segment_kind: Option<Kind>,
    /// Only hosts in these networks (CIDR) or with these addresses.
    #[arg(long)]
    host: Vec<String>,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Every activity period of one host instead.
    #[arg(long, value_name = "HOST")]
    history: Option<IpAddr>,
}

/// One (host, tool) as the audit lists it.
#[derive(Debug, Serialize)]
pub struct AuditRow {
    #[serde(flatten)]
    pub activity: Activity,
    /// Seen within `idle_after` of the end of what its sensors observed.
    pub still_active: bool,
    /// Every flow of it was on the allow-list.
    pub sanctioned: bool,
    pub severity: u8,
    pub sensors: Vec<String>,
    pub periods: u64,
    /// How far its sensors have observed (capture time).
    pub observed_until: Timestamp,
}

struct Filter {
    active_within: Option<Duration>,
    tools: Vec<String>,
    kind: Option<SegmentKind>,
    nets: Vec<ipnet::IpNet>,
}

impl Filter {
    fn keeps(&self, r: &AuditRow) -> bool {
        let a = &r.activity;
        (self.tools.is_empty() || self.tools.iter().any(|t| t.eq_ignore_ascii_case(&a.tool)))
            && self.kind.is_none_or(|k| a.segment_kind == k)
            && (self.nets.is_empty() || self.nets.iter().any(|n| n.contains(&a.host)))
            && self
                .active_within
                .is_none_or(|d| a.last_seen.0 >= r.observed_until.0.saturating_sub(d.0))
    }
}

pub fn run(args: LedgerArgs) -> ExitCode {
    match audit(&args) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("spanwatch ledger: {e}");
            ExitCode::from(2)
        }
    }
}

fn audit(args: &LedgerArgs) -> Result<String, String> {
    let site = crate::load::site(args.config.as_deref()).map_err(|e| e.to_string())?;
    let spec = args
        .database
        .clone()
        .or_else(|| site.ledger.database.clone())
        .ok_or("no ledger database: give --database, or --config with [ledger] database")?;
    if !is_postgres(&spec) && !std::path::Path::new(&spec).exists() {
        return Err(format!("ledger database {spec}: no such file"));
    }
    let idle = site.ledger.idle_after.map_or(DEFAULT_IDLE_AFTER, |d| d.0);
    let filter = filter(args)?;
    let mut db = Db::open_read_only(&spec)?;
    let observed = query::observed(&mut db)?;
    let stored = match args.history {
        Some(h) => query::history(&mut db, h)?,
        None => query::latest(&mut db, true)?,
    };
    let mut rows: Vec<AuditRow> = stored
        .into_iter()
        // as in `host_activity`: pairs with only supporting evidence are
        // kept for correlation, not listed
        .filter(|r| r.activity.strong)
        .map(|r| audit_row(r, &observed, idle))
        .filter(|r| filter.keeps(r))
        .collect();
    if args.history.is_none() {
        rows.sort_by(|a, b| {
            let key = |r: &AuditRow| {
                let a = &r.activity;
                (
                    r.sanctioned,
                    r.severity,
                    -a.active_seconds,
                    a.host,
                    a.tool.clone(),
                )
            };
            key(a).cmp(&key(b))
        });
    }
    Ok(match args.format {
        Format::Json => json(&rows),
        Format::Csv => csv(&rows),
        Format::Table => table(&rows, args.history.is_some()),
    })
}

fn filter(args: &LedgerArgs) -> Result<Filter, String> {
    let active_within = match &args.active_within {
        Some(s) => Some(
            parse_duration(s)
                .ok_or_else(|| format!("--active-within {s}: write e.g. 30m, 1h, 7d"))?,
        ),
        None => None,
    };
    let nets = args
        .host
        .iter()
        .map(|h| {
            h.parse::<ipnet::IpNet>()
                .or_else(|_| h.parse::<IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("--host {h}: not an address or network (CIDR)"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Filter {
        active_within,
        tools: args.tool.clone(),
        kind: args.segment_kind.map(|k| match k {
            Kind::Production => SegmentKind::Production,
            Kind::Development => SegmentKind::Development,
            Kind::Other => SegmentKind::Other,
        }),
        nets,
    })
}

fn audit_row(r: Row, observed: &HashMap<String, Timestamp>, idle: Duration) -> AuditRow {
    let a = r.activity;
    let until = r
        .sensors
        .iter()
        .filter_map(|s| observed.get(s))
        .copied()
        .max()
        .unwrap_or(a.last_seen)
        .max(a.last_seen);
    AuditRow {
        still_active: a.last_seen.0.saturating_add(idle.0) >= until.0,
        sanctioned: a.flows > 0 && a.sanctioned_flows >= a.flows && !a.unsanctioned,
        severity: severity(Some(a.segment_kind)),
        sensors: r.sensors.into_iter().collect(),
        periods: r.periods,
        observed_until: until,
        activity: a,
    }
}

/// One JSON object per line.
pub fn json(rows: &[AuditRow]) -> String {
    let mut out = String::new();
    for r in rows {
        if let Ok(s) = serde_json::to_string(r) {
            out.push_str(&s);
            out.push('\n');
        }
    }
    out
}

/// The distinct values, as `fact=value`: proxy chains and host names
/// first (what a person looks for), then the rest, each in the order seen.
fn seen(a: &Activity) -> Vec<String> {
    let rank = |v: &str| {
        let name = v.contains('.')
            && v.ends_with(|c: char| c.is_ascii_alphabetic())
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c));
        match (v.contains("->"), name) {
            (true, _) => 0,
            (false, true) => 1,
            _ => 2,
        }
    };
    let mut s: Vec<&crate::detect::SightingStat> = a.sightings.iter().collect();
    s.sort_by_key(|s| rank(&s.value));
    let mut v: Vec<String> = Vec::new();
    for s in s {
        let x = format!("{}={}", s.fact, s.value);
        if !v.contains(&x) {
            v.push(x);
        }
    }
    v
}

/// One CSV cell: quoted when it must be; a value from the traffic that a
/// spreadsheet would take for a formula (`=`, `+`, `-`, `@`) starts with `'`.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

pub fn csv(rows: &[AuditRow]) -> String {
    let mut out = String::from(
        "host,tool,segment,segment_kind,first_seen,last_seen,active_seconds,still_active,\
         sanctioned,severity,flows,sanctioned_flows,bytes,categories,evidence,sensors,periods,\
         observed_until,sightings\n",
    );
    for r in rows {
        let a = &r.activity;
        let cells = [
            a.host.to_string(),
            a.tool.clone(),
            a.segment.clone().unwrap_or_default(),
            a.segment_kind.as_str().to_string(),
            a.first_seen.to_string(),
            a.last_seen.to_string(),
            a.active_seconds.to_string(),
            r.still_active.to_string(),
            r.sanctioned.to_string(),
            r.severity.to_string(),
            a.flows.to_string(),
            a.sanctioned_flows.to_string(),
            a.bytes.to_string(),
            a.categories.iter().cloned().collect::<Vec<_>>().join(" "),
            a.evidence.iter().cloned().collect::<Vec<_>>().join(" "),
            r.sensors.join(" "),
            r.periods.to_string(),
            r.observed_until.to_string(),
            seen(a).join(";"),
        ];
        let line: Vec<String> = cells.iter().map(|c| csv_field(c)).collect();
        let _ = writeln!(out, "{}", line.join(","));
    }
    out
}

/// The aligned table; the last column (values seen) and the segment are cut
/// to a readable width.
pub fn table(rows: &[AuditRow], history: bool) -> String {
    if rows.is_empty() {
        return "no activity in the ledger matches\n".into();
    }
    let head = [
        "HOST",
        "TOOL",
        "SEGMENT",
        "FIRST SEEN",
        "LAST SEEN",
        "ACTIVE",
        "NOW",
        "SANCTIONED",
        "FLOWS",
        "SENSORS",
        "SEEN",
    ];
    let cells: Vec<[String; 11]> = rows
        .iter()
        .map(|r| {
            let a = &r.activity;
            let segment = match &a.segment {
                Some(n) => format!("{} ({})", inert(n, 20), a.segment_kind.as_str()),
                None => a.segment_kind.as_str().to_string(),
            };
            let sanctioned = match (r.sanctioned, a.sanctioned_flows) {
                (true, _) => "yes".to_string(),
                (false, 0) => "no".to_string(),
                (false, n) => format!("{n} of {} flows", a.flows),
            };
            let periods = if history || r.periods <= 1 {
                String::new()
            } else {
                format!(" ({} periods)", r.periods)
            };
            [
                a.host.to_string(),
                inert(&a.tool, 16),
                segment,
                time(a.first_seen),
                time(a.last_seen),
                duration(a.active_seconds) + &periods,
                if r.still_active { "active" } else { "-" }.to_string(),
                sanctioned,
                a.flows.to_string(),
                inert(&r.sensors.join(","), 24),
                inert(&seen(a).join(", "), 60),
            ]
        })
        .collect();
    let mut width = head.map(|h| h.chars().count());
    for r in &cells {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (c, w) in cells.iter().zip(width) {
            let _ = write!(s, "{c:<w$}  ");
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(&head.map(String::from));
    for r in &cells {
        out.push_str(&line(r));
    }
    out
}
