//! Merging the verdict stage's updates into the stored activity periods,
//! one transaction per batch.
//!
//! An update names a period by its interval as one sensor knows it. It joins
//! every stored period of the same host and tool that is within `idle_after`
//! of it (first seen = min, last seen = max, counts add, sets and the
//! sensors that saw it are unions); periods it bridges become one. The result
//! depends only on the updates, not on their order or on which sensor sent
//! which, so several sensors writing at once, or one sensor restarted, end
//! with what one sensor would have recorded from all of it. On PostgreSQL a
//! row per (host, tool) is locked first, in sorted order, so concurrent
//! sensors merge one pair at a time and never deadlock.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::db::{Db, V};
use crate::config::SegmentKind;
use crate::detect::{SightingStat, SIGHTINGS_PER_ENTRY};
use crate::time::{Duration, Timestamp};
use crate::verdict::ledger::Update;

/// The stored period's columns, in this order.
pub const PERIOD_COLS: &str = "id, host, tool, first_seen, last_seen, flows, bytes, \
    sanctioned_flows, categories, evidence, segment, segment_kind, strong, unsanctioned, \
    max_active_reported, sensors";

/// One stored activity period: its figures as the update that would add
/// all of them, and who saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    pub id: Option<i64>,
    pub u: Update,
    pub sensors: BTreeSet<String>,
}

pub fn set_text(s: &BTreeSet<String>) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "[]".into())
}

pub fn text_set(v: &V) -> BTreeSet<String> {
    v.text()
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default()
}

pub fn kind_text(k: SegmentKind) -> String {
    serde_json::to_value(k)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_else(|| "other".into())
}

pub fn kind_of(v: &V) -> SegmentKind {
    v.text()
        .and_then(|t| serde_json::from_value(serde_json::Value::String(t.into())).ok())
        .unwrap_or(SegmentKind::Other)
}

impl Period {
    pub fn from_row(r: &[V]) -> Option<Period> {
        if r.len() < 16 {
            return None;
        }
        let n = |v: &V| v.int().max(0) as u64;
        let u = Update {
            host: r[1].text()?.parse().ok()?,
            tool: r[2].text()?.to_string(),
            first_seen: Timestamp(r[3].int()),
            last_seen: Timestamp(r[4].int()),
            flows: n(&r[5]),
            bytes: n(&r[6]),
            sanctioned_flows: n(&r[7]),
            categories: text_set(&r[8]),
            evidence: text_set(&r[9]),
            segment: r[10].text().map(String::from),
            segment_kind: kind_of(&r[11]),
            strong: r[12].int() != 0,
            unsanctioned: r[13].int() != 0,
            max_active_reported: r[14].int() != 0,
            sightings: Vec::new(),
        };
        Some(Period {
            id: Some(r[0].int()),
            u,
            sensors: text_set(&r[15]),
        })
    }

    /// Adds another period (or an update): `o`'s segment wins when it has
    /// one, so merge the stored periods first and the update last.
    fn absorb(&mut self, o: Period) {
        self.id = match (self.id, o.id) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.u.absorb(o.u);
        self.sensors.extend(o.sensors);
    }

    fn values(&self) -> Vec<V> {
        let b = |x: bool| V::I(i64::from(x));
        let n = |x: u64| V::I(i64::try_from(x).unwrap_or(i64::MAX));
        let u = &self.u;
        vec![
            V::T(u.host.to_string()),
            V::T(u.tool.clone()),
            V::I(u.first_seen.0),
            V::I(u.last_seen.0),
            n(u.flows),
            n(u.bytes),
            n(u.sanctioned_flows),
            V::T(set_text(&u.categories)),
            V::T(set_text(&u.evidence)),
            u.segment.clone().map_or(V::Null, V::T),
            V::T(kind_text(u.segment_kind)),
            b(u.strong),
            b(u.unsanctioned),
            b(u.max_active_reported),
            V::T(set_text(&self.sensors)),
        ]
    }
}

/// A period as merged in the store, for the sensor that sent part of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    pub host: IpAddr,
    pub tool: String,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
}

/// What one batch did.
#[derive(Debug, Default)]
pub struct Applied {
    pub merged: Vec<Merged>,
    /// New distinct values not kept: the pair had [`SIGHTINGS_PER_ENTRY`].
    pub sightings_dropped: u64,
    pub pruned: u64,
}

/// How a batch is merged.
#[derive(Debug, Clone)]
pub struct MergeOptions {
    pub sensor: String,
    pub idle_after: Duration,
    /// Periods that ended longer than this before `observed` are pruned.
    pub retain: Duration,
}

/// One batch of updates, numbered within the sensor's run so that a retry
/// of a batch the server committed (its reply lost) is recognised and not
/// counted twice.
#[derive(Debug, Clone, Copy)]
pub struct BatchId<'a> {
    /// Different for every start of the sensor.
    pub run: &'a str,
    pub seq: i64,
}

/// Merges `updates` in one transaction, records how far this sensor has
/// observed (`observed`, capture time) and the batch, prunes; all or
/// nothing. A batch already stored is not merged again.
pub fn apply(
    db: &mut Db,
    batch: BatchId<'_>,
    updates: &[Update],
    observed: Option<Timestamp>,
    o: &MergeOptions,
) -> Result<Applied, String> {
    db.begin()?;
    let r = apply_in_transaction(db, batch, updates, observed, o).and_then(|a| {
        db.commit()?;
        Ok(a)
    });
    if r.is_err() {
        // (also after a failed COMMIT: the transaction must not stay open)
        db.rollback();
    }
    r
}

fn apply_in_transaction(
    db: &mut Db,
    batch: BatchId<'_>,
    updates: &[Update],
    observed: Option<Timestamp>,
    o: &MergeOptions,
) -> Result<Applied, String> {
    let me = V::T(o.sensor.clone());
    let lock = if db.is_pg() { " FOR UPDATE" } else { "" };
    let seen = db.query(
        &format!("SELECT last_run, last_batch FROM sensors WHERE name = $1{lock}"),
        std::slice::from_ref(&me),
    )?;
    if let Some(r) = seen.first().filter(|r| r.len() == 2) {
        if r[0].text() == Some(batch.run) && r[1].int() >= batch.seq {
            return Ok(Applied::default());
        }
    }
    let mut order: Vec<&Update> = updates.iter().collect();
    order.sort_by(|a, b| (a.host, &a.tool, a.first_seen).cmp(&(b.host, &b.tool, b.first_seen)));
    let mut applied = Applied::default();
    let mut locked: Option<(IpAddr, &str)> = None;
    for u in order {
        if locked != Some((u.host, &u.tool)) {
            lock_pair(db, u)?;
            locked = Some((u.host, &u.tool));
        }
        let m = merge_period(db, u, o)?;
        // sorted by pair: a later period of the same pair replaces the last
        match applied.merged.last_mut() {
            Some(x) if x.host == m.host && x.tool == m.tool => *x = m,
            _ => applied.merged.push(m),
        }
        for s in &u.sightings {
            if !merge_sighting(db, u, s, &o.sensor)? {
                applied.sightings_dropped += 1;
            }
        }
    }
    let at = observed.map_or(0, |t| t.0);
    db.exec(
        "INSERT INTO sensors (name, observed_until, last_run, last_batch) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO UPDATE SET observed_until = CASE \
         WHEN excluded.observed_until > sensors.observed_until \
         THEN excluded.observed_until ELSE sensors.observed_until END, \
         last_run = excluded.last_run, last_batch = excluded.last_batch",
        &[me, V::I(at), V::from(batch.run), V::I(batch.seq)],
    )?;
    if let Some(at) = observed {
        // never beyond the wall clock: one packet from the far future in a
        // capture must not prune a shared ledger
        let now = at.0.min(wall_clock());
        applied.pruned = prune(db, now.saturating_sub(o.retain.0))?;
    }
    Ok(applied)
}

fn wall_clock() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(i64::MAX, |d| d.as_nanos() as i64)
}

/// Takes the (host, tool) pair's row lock (PostgreSQL; SQLite's write
/// transaction already excludes every other writer).
fn lock_pair(db: &mut Db, u: &Update) -> Result<(), String> {
    let key = [V::T(u.host.to_string()), V::T(u.tool.clone())];
    db.exec(
        "INSERT INTO entries (host, tool) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        &key,
    )?;
    if db.is_pg() {
        let r = db.query(
            "SELECT host FROM entries WHERE host = $1 AND tool = $2 FOR UPDATE",
            &key,
        )?;
        if r.len() != 1 {
            return Err(format!("no lock row for {} {}", u.host, u.tool));
        }
    }
    Ok(())
}

fn merge_period(db: &mut Db, u: &Update, o: &MergeOptions) -> Result<Merged, String> {
    let near = db.query(
        &format!(
            "SELECT {PERIOD_COLS} FROM periods WHERE host = $1 AND tool = $2 \
             AND last_seen >= $3 AND first_seen <= $4 ORDER BY id"
        ),
        &[
            V::T(u.host.to_string()),
            V::T(u.tool.clone()),
            V::I(u.first_seen.0.saturating_sub(o.idle_after.0)),
            V::I(u.last_seen.0.saturating_add(o.idle_after.0)),
        ],
    )?;
    let mut gone = Vec::new();
    let mut stored: Option<Period> = None;
    for old in near.iter().filter_map(|r| Period::from_row(r)) {
        gone.extend(old.id);
        match stored.as_mut() {
            Some(p) => p.absorb(old),
            None => stored = Some(old),
        }
    }
    let update = Period {
        id: None,
        u: Update {
            sightings: Vec::new(), // stored apart
            ..u.clone()
        },
        sensors: BTreeSet::from([o.sensor.clone()]),
    };
    let p = match stored {
        Some(mut p) => {
            p.absorb(update);
            p
        }
        None => update,
    };
    let mut vals = p.values();
    match p.id {
        Some(id) => {
            for g in gone.iter().filter(|g| **g != id) {
                db.exec("DELETE FROM periods WHERE id = $1", &[V::I(*g)])?;
            }
            vals.push(V::I(id));
            let n = db.exec(
                "UPDATE periods SET host = $1, tool = $2, first_seen = $3, last_seen = $4, \
                 flows = $5, bytes = $6, sanctioned_flows = $7, categories = $8, evidence = $9, \
                 segment = $10, segment_kind = $11, strong = $12, unsanctioned = $13, \
                 max_active_reported = $14, sensors = $15 WHERE id = $16",
                &vals,
            )?;
            if n != 1 {
                // pruned meanwhile: the whole batch again, from the start
                return Err(format!(
                    "period {id} of {} {} changed under us",
                    u.host, u.tool
                ));
            }
        }
        None => {
            db.exec(
                "INSERT INTO periods (host, tool, first_seen, last_seen, flows, bytes, \
                 sanctioned_flows, categories, evidence, segment, segment_kind, strong, \
                 unsanctioned, max_active_reported, sensors) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
                &vals,
            )?;
        }
    }
    Ok(Merged {
        host: u.host,
        tool: u.tool.clone(),
        first_seen: p.u.first_seen,
        last_seen: p.u.last_seen,
    })
}

/// Adds one value's sighting; false when the pair already has
/// [`SIGHTINGS_PER_ENTRY`] others.
fn merge_sighting(db: &mut Db, u: &Update, s: &SightingStat, sensor: &str) -> Result<bool, String> {
    let key = vec![
        V::T(u.host.to_string()),
        V::T(u.tool.clone()),
        V::T(s.category.clone()),
        V::T(s.fact.clone()),
        V::T(s.value.clone()),
    ];
    let old = db.query(
        "SELECT first_seen, last_seen, count, sensors FROM sightings WHERE host = $1 \
         AND tool = $2 AND category = $3 AND fact = $4 AND value = $5",
        &key,
    )?;
    let mut sensors = BTreeSet::from([sensor.to_string()]);
    let mut vals = key;
    if let Some(r) = old.first().filter(|r| r.len() == 4) {
        sensors.extend(text_set(&r[3]));
        vals.extend([
            V::I(r[0].int().min(s.first_seen.0)),
            V::I(r[1].int().max(s.last_seen.0)),
            V::I(r[2].int() + s.count as i64),
            V::T(set_text(&sensors)),
        ]);
        db.exec(
            "UPDATE sightings SET first_seen = $6, last_seen = $7, count = $8, sensors = $9 \
             WHERE host = $1 AND tool = $2 AND category = $3 AND fact = $4 AND value = $5",
            &vals,
        )?;
        return Ok(true);
    }
    let n = db.query(
        "SELECT COUNT(*) FROM sightings WHERE host = $1 AND tool = $2",
        &vals[..2],
    )?;
    if n.first().and_then(|r| r.first()).map_or(0, V::int) >= SIGHTINGS_PER_ENTRY as i64 {
        return Ok(false);
    }
    vals.extend([
        V::I(s.first_seen.0),
        V::I(s.last_seen.0),
        V::I(s.count as i64),
        V::T(set_text(&sensors)),
    ]);
    db.exec(
        "INSERT INTO sightings (host, tool, category, fact, value, first_seen, last_seen, \
         count, sensors) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &vals,
    )?;
    Ok(true)
}

/// Deletes what ended before `cutoff`: periods and values.
fn prune(db: &mut Db, cutoff: i64) -> Result<u64, String> {
    let n = db.exec("DELETE FROM periods WHERE last_seen < $1", &[V::I(cutoff)])?;
    if n > 0 {
        // (the pairs' lock rows stay: deleting them would race with a merge)
        db.exec(
            "DELETE FROM sightings WHERE last_seen < $1",
            &[V::I(cutoff)],
        )?;
    }
    Ok(n)
}
