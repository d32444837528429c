//! Reading the stored ledger: each pair's latest period (to go on from at
//! start, and for the audit), every period of a host (its history), and how
//! far each sensor has observed.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use super::db::{Db, V};
use super::merge::{Period, PERIOD_COLS};
use crate::detect::{Activity, SightingStat};
use crate::time::Timestamp;

/// A stored period as the ledger's entry, with who saw it.
#[derive(Debug, Clone)]
pub struct Row {
    pub activity: Activity,
    pub sensors: BTreeSet<String>,
    /// Periods the pair has in all (1 in a history).
    pub periods: u64,
}

fn row(p: Period, sightings: Vec<SightingStat>, periods: u64) -> Row {
    let u = p.u;
    Row {
        activity: Activity {
            host: u.host,
            tool: u.tool,
            first_seen: u.first_seen,
            last_seen: u.last_seen,
            active_seconds: u.last_seen.since(u.first_seen).0 / 1_000_000_000,
            flows: u.flows,
            bytes: u.bytes,
            sanctioned_flows: u.sanctioned_flows,
            categories: u.categories,
            evidence: u.evidence,
            segment: u.segment,
            segment_kind: u.segment_kind,
            strong: u.strong,
            unsanctioned: u.unsanctioned,
            max_active_reported: u.max_active_reported,
            sightings,
        },
        sensors: p.sensors,
        periods,
    }
}

/// The key of the values of a period's pair.
fn key(p: &Period) -> (String, String) {
    (p.u.host.to_string(), p.u.tool.clone())
}

/// Every stored value, by (host, tool), in the order first seen.
fn sightings(
    db: &mut Db,
    host: Option<&str>,
) -> Result<HashMap<(String, String), Vec<SightingStat>>, String> {
    let (sql, p) = match host {
        Some(h) => (" WHERE host = $1", vec![V::from(h)]),
        None => ("", Vec::new()),
    };
    let rows = db.query(
        &format!(
            "SELECT host, tool, category, fact, value, first_seen, last_seen, count \
             FROM sightings{sql} ORDER BY host, tool, first_seen, category, fact, value"
        ),
        &p,
    )?;
    let mut out: HashMap<(String, String), Vec<SightingStat>> = HashMap::new();
    for r in rows.iter().filter(|r| r.len() == 8) {
        let text = |i: usize| r[i].text().unwrap_or("").to_string();
        out.entry((text(0), text(1)))
            .or_default()
            .push(SightingStat {
                category: text(2),
                fact: text(3),
                value: text(4),
                first_seen: Timestamp(r[5].int()),
                last_seen: Timestamp(r[6].int()),
                count: r[7].int().max(0) as u64,
            });
    }
    Ok(out)
}

/// Each (host, tool) pair's latest period (`strong`: its latest period with
/// more than supporting evidence, as the audit lists), with the pair's
/// values and its number of periods; sorted by host and tool.
pub fn latest(db: &mut Db, strong: bool) -> Result<Vec<Row>, String> {
    let only = if strong { " AND strong = 1" } else { "" };
    let q_only = if strong { " AND q.strong = 1" } else { "" };
    let rows = db.query(
        &format!(
            "SELECT {PERIOD_COLS} FROM periods p WHERE NOT EXISTS (SELECT 1 FROM periods q \
             WHERE q.host = p.host AND q.tool = p.tool{q_only} AND (q.last_seen > p.last_seen \
             OR (q.last_seen = p.last_seen AND q.id > p.id))){only} ORDER BY host, tool"
        ),
        &[],
    )?;
    let counts: HashMap<(String, String), i64> = db
        .query(
            "SELECT host, tool, COUNT(*) FROM periods GROUP BY host, tool",
            &[],
        )?
        .iter()
        .filter(|r| r.len() == 3)
        .map(|r| {
            let t = |i: usize| r[i].text().unwrap_or("").to_string();
            ((t(0), t(1)), r[2].int())
        })
        .collect();
    let mut values = sightings(db, None)?;
    let mut out = Vec::new();
    for p in rows.iter().filter_map(|r| Period::from_row(r)) {
        let k = key(&p);
        let n = counts.get(&k).copied().unwrap_or(1).max(1) as u64;
        out.push(row(p, values.remove(&k).unwrap_or_default(), n));
    }
    Ok(out)
}

/// Every period of one host, by tool then time; each with the values seen
/// during it.
pub fn history(db: &mut Db, host: IpAddr) -> Result<Vec<Row>, String> {
    let h = host.to_string();
    let rows = db.query(
        &format!("SELECT {PERIOD_COLS} FROM periods WHERE host = $1 ORDER BY tool, first_seen"),
        &[V::T(h.clone())],
    )?;
    let values = sightings(db, Some(&h))?;
    let mut periods: Vec<Period> = rows.iter().filter_map(|r| Period::from_row(r)).collect();
    // byte order, whatever the database's collation
    periods.sort_by(|a, b| (&a.u.tool, a.u.first_seen).cmp(&(&b.u.tool, b.u.first_seen)));
    let mut out = Vec::new();
    for p in periods {
        let (first, last) = (p.u.first_seen, p.u.last_seen);
        let during: Vec<SightingStat> = (values.get(&key(&p)).into_iter().flatten())
            .filter(|s| s.last_seen >= first && s.first_seen <= last)
            .cloned()
            .collect();
        out.push(row(p, during, 1));
    }
    Ok(out)
}

/// How far each sensor has observed (capture time).
pub fn observed(db: &mut Db) -> Result<HashMap<String, Timestamp>, String> {
    Ok(db
        .query("SELECT name, observed_until FROM sensors", &[])?
        .iter()
        .filter(|r| r.len() == 2)
        .filter_map(|r| Some((r[0].text()?.to_string(), Timestamp(r[1].int()))))
        .collect())
}
