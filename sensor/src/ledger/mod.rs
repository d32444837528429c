//! The persistent host activity ledger: a store thread that merges the
//! verdict stage's [`Update`]s into a database (a SQLite file on the sensor,
//! or PostgreSQL for a fleet of sensors), and `spanwatch ledger`, the audit.
//!
//! Off the packet path: the writer thread (the verdict stage) hands updates
//! over a bounded channel without waiting (a full channel leaves them in the
//! ledger, merged with what follows); this thread commits them in one
//! transaction every `commit_every` (2 s) and at the end. A crash loses at
//! most the batch not yet committed. When the database cannot be reached
//! (a PostgreSQL server restarting), updates wait, merged per period and
//! bounded (`buffer`; beyond it they are counted and dropped), and the
//! thread reconnects; capture never waits for the database. After each
//! commit the merged interval of each period goes back to the verdict stage,
//! so `max_active` is judged on what every sensor saw.

pub mod cli;
pub mod db;
pub mod merge;
pub mod query;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::config::SiteConfig;
use crate::detect::Activity;
use crate::stats::LedgerStoreStats;
use crate::time::{Duration, Timestamp};
use crate::verdict::ledger::{Update, DEFAULT_IDLE_AFTER};
use db::Db;
pub use merge::{MergeOptions, Merged};

/// What the verdict stage sends the store.
#[derive(Debug)]
pub enum Msg {
    Updates(Vec<Update>),
    /// Capture time the sensor has observed up to.
    Observed(Timestamp),
    /// New `[ledger]` settings (SIGHUP): `idle_after` and `retain`.
    Settings {
        idle_after: Duration,
        retain: Duration,
    },
}

/// How the store works.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// A SQLite file, or `postgres://...`.
    pub spec: String,
    pub merge: MergeOptions,
    pub commit_every: std::time::Duration,
    /// Updates held at most while the database cannot take them.
    pub buffer: usize,
}

pub const DEFAULT_RETAIN: Duration = Duration(180 * 86_400 * 1_000_000_000);
pub const DEFAULT_BUFFER: usize = 100_000;
const DEFAULT_COMMIT_EVERY: std::time::Duration = std::time::Duration::from_secs(2);
/// How long the end of a run keeps trying to store what is left.
const FINAL_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

impl StoreOptions {
    /// The site configuration's `[ledger]` settings for the database `spec`.
    pub fn for_site(spec: &str, site: &SiteConfig) -> Self {
        let l = &site.ledger;
        StoreOptions {
            spec: spec.to_string(),
            merge: MergeOptions {
                sensor: sensor_name(site),
                idle_after: l.idle_after.map_or(DEFAULT_IDLE_AFTER, |d| d.0),
                retain: l.retain.map_or(DEFAULT_RETAIN, |d| d.0),
            },
            commit_every: l.commit_every.map_or(DEFAULT_COMMIT_EVERY, |d| {
                std::time::Duration::from_nanos(d.0 .0.max(1_000_000) as u64)
            }),
            buffer: l.buffer.unwrap_or(DEFAULT_BUFFER).max(1),
        }
    }
}

/// The store's share of the site's `[ledger]` settings, for a reload.
pub fn settings(site: &SiteConfig) -> Msg {
    let o = StoreOptions::for_site("", site);
    Msg::Settings {
        idle_after: o.merge.idle_after,
        retain: o.merge.retain,
    }
}

/// The sensor's name in a shared ledger: `[sensor] name`, else the host name.
pub fn sensor_name(site: &SiteConfig) -> String {
    site.sensor_name().map(String::from).unwrap_or_else(|| {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "spanwatch".into())
    })
}

/// The store's counters, shared with the writer's `stats` events.
#[derive(Debug, Default)]
pub struct StoreCounters {
    batches: AtomicU64,
    stored: AtomicU64,
    pending: AtomicU64,
    dropped: AtomicU64,
    failures: AtomicU64,
    sightings_dropped: AtomicU64,
    pruned: AtomicU64,
    connected: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl StoreCounters {
    pub fn stats(&self, database: &str) -> LedgerStoreStats {
        LedgerStoreStats {
            database: database.to_string(),
            connected: self.connected.load(Relaxed),
            batches: self.batches.load(Relaxed),
            updates_stored: self.stored.load(Relaxed),
            updates_pending: self.pending.load(Relaxed),
            updates_dropped: self.dropped.load(Relaxed),
            failures: self.failures.load(Relaxed),
            sightings_dropped: self.sightings_dropped.load(Relaxed),
            periods_pruned: self.pruned.load(Relaxed),
        }
    }

    fn fail(&self, e: String) {
        self.failures.fetch_add(1, Relaxed);
        if let Ok(mut l) = self.last_error.lock() {
            *l = Some(e);
        }
    }
}

/// The verdict stage's end of the store.
#[derive(Clone)]
pub struct Link {
    pub tx: Sender<Msg>,
    pub merged: Receiver<Merged>,
    pub counters: Arc<StoreCounters>,
    /// Each pair's latest stored period, to go on from.
    pub restored: Arc<Vec<Activity>>,
    pub database: String,
}

/// The store thread.
pub struct Store {
    thread: JoinHandle<()>,
    counters: Arc<StoreCounters>,
    pub database: String,
}

/// What the store did in a run.
#[derive(Debug)]
pub struct Summary {
    pub stats: LedgerStoreStats,
    pub last_error: Option<String>,
}

/// The store a run asks for: `flag` (`--ledger`), else for `live` the
/// site's `[ledger] database`; none keeps the ledger in memory.
pub fn for_run(
    flag: Option<&str>,
    site: &SiteConfig,
    live: bool,
) -> Result<Option<(Store, Link)>, String> {
    let configured = live.then(|| site.ledger.database.clone()).flatten();
    let Some(spec) = flag.map(String::from).or(configured) else {
        return Ok(None);
    };
    open(StoreOptions::for_site(&spec, site)).map(Some)
}

/// Connects the pipeline's verdict stage to the store; the store thread,
/// for [`close`] at the end.
pub fn attach<W: crate::sink::Sink>(
    p: &mut crate::pipeline::Pipeline<W>,
    store: Option<(Store, Link)>,
) -> Option<Store> {
    let (store, link) = store?;
    p.attach_store(link);
    Some(store)
}

/// The end of a run: hands the writer's last changes to the store, waits
/// for the last commit and says on standard error what was stored and what
/// could not be (false then).
pub fn close<W: crate::sink::Sink>(
    w: &mut crate::pipeline::writer::Writer<W>,
    store: Option<Store>,
) -> bool {
    w.close_store();
    let Some(store) = store else { return true };
    let s = store.finish();
    let lost = s.stats.updates_dropped + w.store_dropped();
    eprintln!(
        "spanwatch: ledger: {} updates stored in {} ({} commits)",
        s.stats.updates_stored, s.stats.database, s.stats.batches
    );
    if lost > 0 {
        let why = s.last_error.map(|e| format!(": {e}")).unwrap_or_default();
        eprintln!("spanwatch: ledger: {lost} updates not stored{why}");
    }
    lost == 0
}

/// Opens the database (a clear error when it cannot be used), reads each
/// pair's latest period, and starts the store thread.
///
/// A PostgreSQL server that cannot be reached is not fatal: the sensor
/// starts, says so, and the store keeps trying (what it learns then comes
/// back as merged intervals); a database that cannot be used is.
pub fn open(o: StoreOptions) -> Result<(Store, Link), String> {
    let counters = Arc::new(StoreCounters::default());
    let (db, restored) = match Db::open_or_unreachable(&o.spec) {
        Ok(mut db) => {
            let restored: Vec<Activity> = query::latest(&mut db, false)
                .map_err(|e| format!("ledger database {}: {e}", db.name))?
                .into_iter()
                .map(|r| r.activity)
                .collect();
            counters.connected.store(true, Relaxed);
            (Some(db), restored)
        }
        Err((e, true)) => {
            tracing::warn!("{e}; starting without it, retrying every commit");
            counters.fail(e);
            (None, Vec::new())
        }
        Err((e, false)) => return Err(e),
    };
    let database = Db::name_of(&o.spec);
    let (tx, rx) = crossbeam_channel::bounded(64);
    let (mtx, mrx) = crossbeam_channel::bounded(4096);
    let c = Arc::clone(&counters);
    let thread = std::thread::Builder::new()
        .name("spanwatch-ledger".into())
        .spawn(move || Worker::new(db, o, c, mtx).run(&rx))
        .map_err(|e| format!("starting the ledger thread: {e}"))?;
    let link = Link {
        tx,
        merged: mrx,
        counters: Arc::clone(&counters),
        restored: Arc::new(restored),
        database: database.clone(),
    };
    Ok((
        Store {
            thread,
            counters,
            database,
        },
        link,
    ))
}

impl Store {
    /// Waits for the last commit (every [`Link`] must be gone).
    pub fn finish(self) -> Summary {
        // bounded: the store gives up after its final deadline; a database
        // that hangs past the statement timeout leaves the thread behind
        let t = Instant::now();
        while !self.thread.is_finished() && t.elapsed() < FINAL_DEADLINE * 8 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if self.thread.is_finished() {
            let _ = self.thread.join();
        } else {
            self.counters
                .fail("the ledger store did not finish in time".into());
            let pending = self.counters.pending.swap(0, Relaxed);
            self.counters.dropped.fetch_add(pending, Relaxed);
        }
        Summary {
            stats: self.counters.stats(&self.database),
            last_error: self
                .counters
                .last_error
                .lock()
                .ok()
                .and_then(|mut l| l.take()),
        }
    }
}

struct Worker {
    db: Option<Db>,
    o: StoreOptions,
    c: Arc<StoreCounters>,
    merged: Sender<Merged>,
    /// Changes not in a batch yet.
    pending: Vec<Update>,
    /// The batch being stored, with its number: retried as it is (never
    /// merged with later changes), so a retry of a batch the server did
    /// commit is recognised.
    inflight: Option<(i64, Vec<Update>)>,
    /// Failed attempts of the batch in flight.
    attempts: u32,
    run: String,
    next: i64,
    observed: Option<Timestamp>,
    observed_new: bool,
}

/// Attempts after which a batch is stored one update at a time, and an
/// update the database refuses is set aside (counted).
const ATTEMPTS_WHOLE: u32 = 3;

impl Worker {
    fn new(db: Option<Db>, o: StoreOptions, c: Arc<StoreCounters>, merged: Sender<Merged>) -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Worker {
            db,
            o,
            c,
            merged,
            pending: Vec::new(),
            inflight: None,
            attempts: 0,
            run: format!("{t:x}-{}", std::process::id()),
            next: 1,
            observed: None,
            observed_new: false,
        }
    }

    fn run(mut self, rx: &Receiver<Msg>) {
        let mut last = Instant::now();
        loop {
            let wait = self.o.commit_every.saturating_sub(last.elapsed());
            match rx.recv_timeout(wait) {
                Ok(Msg::Updates(v)) => self.add(v),
                Ok(Msg::Observed(t)) => {
                    self.observed = Some(self.observed.map_or(t, |o| o.max(t)));
                    self.observed_new = true;
                }
                Ok(Msg::Settings { idle_after, retain }) => {
                    self.o.merge.idle_after = idle_after;
                    self.o.merge.retain = retain;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if last.elapsed() >= self.o.commit_every {
                self.commit();
                last = Instant::now();
            }
        }
        let end = Instant::now();
        while !(self.commit() && self.idle()) && end.elapsed() < FINAL_DEADLINE {
            if self.inflight.is_some() {
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
        }
        let lost = self.held() as u64;
        self.c.dropped.fetch_add(lost, Relaxed);
        self.c.pending.store(0, Relaxed);
    }

    fn idle(&self) -> bool {
        self.inflight.is_none() && self.pending.is_empty() && !self.observed_new
    }

    fn held(&self) -> usize {
        self.pending.len() + self.inflight.as_ref().map_or(0, |(_, v)| v.len())
    }

    fn add(&mut self, v: Vec<Update>) {
        self.pending.extend(v);
        if self.held() > self.o.buffer {
            coalesce(&mut self.pending, self.o.merge.idle_after);
        }
        let room = self
            .o
            .buffer
            .saturating_sub(self.held() - self.pending.len());
        if self.pending.len() > room {
            let over = self.pending.len() - room;
            self.pending.truncate(room);
            self.c.dropped.fetch_add(over as u64, Relaxed);
        }
        self.c.pending.store(self.held() as u64, Relaxed);
    }

    /// Stores the batch in flight, or the next one; true when it went in
    /// (or there was nothing to store).
    fn commit(&mut self) -> bool {
        if self.inflight.is_none() {
            if self.pending.is_empty() && !self.observed_new {
                return true;
            }
            coalesce(&mut self.pending, self.o.merge.idle_after);
            self.inflight = Some((self.next, std::mem::take(&mut self.pending)));
            self.next += 1;
            self.attempts = 0;
        }
        if self.db.is_none() {
            match Db::open(&self.o.spec) {
                Ok(db) => self.db = Some(db),
                Err(e) => {
                    self.c.fail(e);
                    return false;
                }
            }
        }
        let Some((seq, batch)) = self.inflight.take() else {
            return true;
        };
        let ok = if self.attempts >= ATTEMPTS_WHOLE {
            self.one_by_one(batch)
        } else {
            match self.store(seq, &batch) {
                Ok(()) => true,
                Err(()) => {
                    // only a refusal by a reachable database counts: an
                    // outage is waited out, however long
                    if self.db.is_some() {
                        self.attempts += 1;
                    }
                    self.inflight = Some((seq, batch));
                    false
                }
            }
        };
        self.c.pending.store(self.held() as u64, Relaxed);
        ok
    }

    /// One batch in one transaction.
    fn store(&mut self, seq: i64, batch: &[Update]) -> Result<(), ()> {
        let Some(db) = self.db.as_mut() else {
            return Err(());
        };
        let id = merge::BatchId {
            run: &self.run,
            seq,
        };
        match merge::apply(db, id, batch, self.observed, &self.o.merge) {
            Ok(a) => {
                self.c.connected.store(true, Relaxed);
                self.c.batches.fetch_add(1, Relaxed);
                self.c.stored.fetch_add(batch.len() as u64, Relaxed);
                self.c
                    .sightings_dropped
                    .fetch_add(a.sightings_dropped, Relaxed);
                self.c.pruned.fetch_add(a.pruned, Relaxed);
                for m in a.merged {
                    let _ = self.merged.try_send(m);
                }
                self.observed_new = false;
                Ok(())
            }
            Err(e) => {
                let name = db.name.clone();
                if db.is_pg() && db.is_closed() {
                    // reconnect next time (a server restart closes the connection)
                    self.db = None;
                    self.c.connected.store(false, Relaxed);
                }
                self.c.fail(format!("ledger database {name}: {e}"));
                Err(())
            }
        }
    }

    /// A batch the database kept refusing: each update on its own, the ones
    /// it still refuses set aside and counted (one bad value must not stop
    /// the ledger).
    fn one_by_one(&mut self, batch: Vec<Update>) -> bool {
        for u in batch {
            let seq = self.next;
            self.next += 1;
            if self.store(seq, std::slice::from_ref(&u)).is_err() {
                self.c.dropped.fetch_add(1, Relaxed);
            }
        }
        self.attempts = 0;
        true
    }
}

/// Merges updates of one period (same host and tool, intervals within
/// `idle`) into one: fewer statements, and a bounded buffer holds more.
fn coalesce(v: &mut Vec<Update>, idle: Duration) {
    v.sort_by(|a, b| (a.host, &a.tool, a.first_seen).cmp(&(b.host, &b.tool, b.first_seen)));
    let mut out: Vec<Update> = Vec::with_capacity(v.len());
    for u in v.drain(..) {
        match out.last_mut() {
            Some(p)
                if p.host == u.host
                    && p.tool == u.tool
                    && u.first_seen.0 <= p.last_seen.0.saturating_add(idle.0) =>
            {
                p.absorb(u)
            }
            _ => out.push(u),
        }
    }
    *v = out;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SegmentKind;

    fn update(host: u8, first: i64, flows: u64) -> Update {
        Update {
            host: std::net::IpAddr::from([10, 0, 0, host]),
            tool: "ngrok".into(),
            first_seen: Timestamp(first * 1_000_000_000),
            last_seen: Timestamp(first * 1_000_000_000),
            flows,
            bytes: 0,
            sanctioned_flows: 0,
            categories: Default::default(),
            evidence: Default::default(),
            segment: None,
            segment_kind: SegmentKind::Other,
            strong: true,
            unsanctioned: true,
            max_active_reported: false,
            sightings: Vec::new(),
        }
    }

    fn worker(buffer: usize) -> (Worker, Arc<StoreCounters>) {
        let site = SiteConfig::default();
        let mut o = StoreOptions::for_site("postgres://nobody@127.0.0.1:1/x", &site);
        o.buffer = buffer;
        let c = Arc::new(StoreCounters::default());
        let (tx, _rx) = crossbeam_channel::bounded(1);
        (Worker::new(None, o, Arc::clone(&c), tx), c)
    }

    #[test]
    fn waiting_updates_merge_per_period_then_are_bounded_and_counted() {
        let (mut w, c) = worker(3);
        // one period of host 1 in three pieces: merged into one
        w.add(vec![
            update(1, 100, 1),
            update(1, 110, 2),
            update(1, 120, 0),
        ]);
        w.add(vec![update(2, 100, 1), update(3, 100, 1)]);
        assert_eq!(w.held(), 3);
        assert_eq!(c.dropped.load(Relaxed), 0);
        let one = w.pending.iter().find(|u| u.host == update(1, 0, 0).host);
        assert_eq!(one.map(|u| u.flows), Some(3));
        // a fourth period does not fit: counted, never silently
        w.add(vec![update(4, 100, 1), update(5, 100, 1)]);
        assert_eq!(w.held(), 3);
        assert_eq!(c.dropped.load(Relaxed), 2);
        assert_eq!(c.pending.load(Relaxed), 3);
        // a pause longer than idle_after is another period: not merged
        let mut v = vec![update(1, 0, 1), update(1, 4_000, 1)];
        coalesce(&mut v, DEFAULT_IDLE_AFTER);
        assert_eq!(v.len(), 2);
    }
}
