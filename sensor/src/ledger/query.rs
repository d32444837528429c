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

fn activity(p: Period, sightings: Vec<SightingStat>) -> Option<(Activity, BTreeSet<String>)> {
    let (first, last) = (Timestamp(p.first_seen), Timestamp(p.last_seen));
    let a = Activity {
        host: p.host.parse::<IpAddr>().ok()?,
        tool: p.tool,
        first_seen: first,
        last_seen: last,
        active_seconds: last.since(first).0 / 1_000_000_000,
        flows: p.flows.max(0) as u64,
        bytes: p.bytes.max(0) as u64,
        sanctioned_flows: p.sanctioned_flows.max(0) as u64,
        categories: p.categories,
        evidence: p.evidence,
        segment: p.segment,
        segment_kind: p.segment_kind,
        strong: p.strong,
        unsanctioned: p.unsanctioned,
        max_active_reported: p.max_active_reported,
        sightings,
    };
    Some((a, p.sensors))
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
        let key = (p.host.clone(), p.tool.clone());
        let n = counts.get(&key).copied().unwrap_or(1);
        if let Some((activity, sensors)) = activity(p, values.remove(&key).unwrap_or_default()) {
            out.push(Row {
                activity,
                sensors,
                periods: n.max(1) as u64,
            });
        }
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
    periods.sort_by(|a, b| (&a.tool, a.first_seen).cmp(&(&b.tool, b.first_seen)));
    let mut out = Vec::new();
    for p in periods {
        let all = values
            .get(&(p.host.clone(), p.tool.clone()))
            .cloned()
            .unwrap_or_default();
        let during: Vec<SightingStat> = all
            .into_iter()
            .filter(|s| s.last_seen.0 >= p.first_seen && s.first_seen.0 <= p.last_seen)
            .collect();
        if let Some((activity, sensors)) = activity(p, during) {
            out.push(Row {
                activity,
                sensors,
                periods: 1,
            });
        }
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
