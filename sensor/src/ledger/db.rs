//! The ledger's database: a SQLite file on the sensor (rusqlite, SQLite
//! built in, WAL) or a PostgreSQL server several sensors share (the
//! synchronous `postgres` client). One schema, one set of statements: they
//! are written with `$1` parameters, which SQLite reads as `?1`.
//!
//! Opening checks what is there: a file that is not a SQLite database, a
//! damaged one, a database of something else, or one written by a newer
//! spanwatch (a schema version this build does not know) is refused with an
//! error naming it; it is never reset.

use std::time::Duration;

/// A value bound to or read from a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum V {
    I(i64),
    T(String),
    Null,
}

impl V {
    pub fn int(&self) -> i64 {
        match self {
            V::I(i) => *i,
            V::T(t) => t.parse().unwrap_or(0),
            V::Null => 0,
        }
    }

    pub fn text(&self) -> Option<&str> {
        match self {
            V::T(t) => Some(t),
            _ => None,
        }
    }
}

impl From<&str> for V {
    fn from(s: &str) -> V {
        V::T(s.to_string())
    }
}

impl From<String> for V {
    fn from(s: String) -> V {
        V::T(s)
    }
}

impl From<i64> for V {
    fn from(i: i64) -> V {
        V::I(i)
    }
}

impl rusqlite::ToSql for V {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, Value, ValueRef};
        Ok(match self {
            V::I(i) => ToSqlOutput::Owned(Value::Integer(*i)),
            V::T(t) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
            V::Null => ToSqlOutput::Owned(Value::Null),
        })
    }
}

enum Conn {
    Lite(rusqlite::Connection),
    Pg(Box<postgres::Client>),
}

/// An open ledger database.
pub struct Db {
    conn: Conn,
    /// The file or the server (without a password), for messages.
    pub name: String,
}

/// The schema version this build writes; each entry of [`MIGRATIONS`]
/// takes a database one version up.
pub const SCHEMA_VERSION: i64 = 1;

/// `{ID}` is the backend's auto-numbered key.
const MIGRATIONS: [&str; 1] = [
    "CREATE TABLE entries (host TEXT NOT NULL, tool TEXT NOT NULL, PRIMARY KEY (host, tool));
     CREATE TABLE periods (
        id {ID}, host TEXT NOT NULL, tool TEXT NOT NULL,
        first_seen BIGINT NOT NULL, last_seen BIGINT NOT NULL,
        flows BIGINT NOT NULL, bytes BIGINT NOT NULL, sanctioned_flows BIGINT NOT NULL,
        categories TEXT NOT NULL, evidence TEXT NOT NULL,
        segment TEXT, segment_kind TEXT NOT NULL,
        strong BIGINT NOT NULL, unsanctioned BIGINT NOT NULL,
        max_active_reported BIGINT NOT NULL, sensors TEXT NOT NULL);
     CREATE INDEX periods_by_pair ON periods (host, tool, last_seen);
     CREATE INDEX periods_by_time ON periods (last_seen);
     CREATE TABLE sightings (
        host TEXT NOT NULL, tool TEXT NOT NULL, category TEXT NOT NULL,
        fact TEXT NOT NULL, value TEXT NOT NULL,
        first_seen BIGINT NOT NULL, last_seen BIGINT NOT NULL, count BIGINT NOT NULL,
        sensors TEXT NOT NULL,
        PRIMARY KEY (host, tool, category, fact, value));
     CREATE TABLE sensors (name TEXT PRIMARY KEY, observed_until BIGINT NOT NULL,
        last_run TEXT NOT NULL, last_batch BIGINT NOT NULL);",
];

/// Is this a PostgreSQL connection string?
pub fn is_postgres(spec: &str) -> bool {
    spec.starts_with("postgres://") || spec.starts_with("postgresql://")
}

/// A connection string without its password.
fn display_name(spec: &str) -> String {
    if !is_postgres(spec) {
        return spec.to_string();
    }
    match (spec.find("://"), spec.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let user = &spec[s + 3..at];
            let user = user.split(':').next().unwrap_or("");
            format!("{}{user}@{}", &spec[..s + 3], &spec[at + 1..])
        }
        _ => spec.to_string(),
    }
}

impl Db {
    /// Opens (creating if need be) and checks the database `spec` names,
    /// bringing its schema up to this build's.
    pub fn open(spec: &str) -> Result<Db, String> {
        Db::open_or_unreachable(spec).map_err(|(e, _)| e)
    }

    /// As [`Db::open`]; the flag says the server could not be reached (as
    /// opposed to a database that cannot be used).
    pub fn open_or_unreachable(spec: &str) -> Result<Db, (String, bool)> {
        let name = display_name(spec);
        let conn = if is_postgres(spec) {
            Conn::Pg(Box::new(connect_pg(spec).map_err(|(e, down)| {
                (format!("ledger database {name}: {e}"), down)
            })?))
        } else {
            Conn::Lite(
                open_sqlite(spec, false)
                    .map_err(|e| (format!("ledger database {name}: {e}"), false))?,
            )
        };
        let mut db = Db { conn, name };
        db.migrate().map_err(|e| (e, false))?;
        if let Conn::Lite(c) = &db.conn {
            // only once the file is known to be a ledger: never rewrites another
            wal(c).map_err(|e| (format!("ledger database {}: {e}", db.name), false))?;
        }
        Ok(db)
    }

    /// Opens an existing ledger to read it (the audit): nothing is created,
    /// migrated or written; a file is opened read-only.
    pub fn open_read_only(spec: &str) -> Result<Db, String> {
        let name = display_name(spec);
        let fail = |e: String| format!("ledger database {name}: {e}");
        let conn = if is_postgres(spec) {
            Conn::Pg(Box::new(connect_pg(spec).map_err(|(e, _)| fail(e))?))
        } else {
            Conn::Lite(open_sqlite(spec, true).map_err(fail)?)
        };
        let mut db = Db { conn, name };
        match db.schema_version()? {
            0 => Err(db.err("empty: no ledger has been written to it")),
            v if v < SCHEMA_VERSION => Err(db.err(&format!(
                "ledger schema version {v}: let the sensor (this version) open it once to migrate"
            ))),
            _ => Ok(db),
        }
    }

    /// The file, or the server without a password.
    pub fn name_of(spec: &str) -> String {
        display_name(spec)
    }

    pub fn is_pg(&self) -> bool {
        matches!(self.conn, Conn::Pg(_))
    }

    /// Whether the server connection is gone (PostgreSQL).
    pub fn is_closed(&self) -> bool {
        match &self.conn {
            Conn::Pg(c) => c.is_closed(),
            Conn::Lite(_) => false,
        }
    }

    pub fn exec(&mut self, sql: &str, p: &[V]) -> Result<u64, String> {
        match &mut self.conn {
            Conn::Lite(c) => c
                .prepare_cached(&sql.replace('$', "?"))
                .and_then(|mut st| st.execute(rusqlite::params_from_iter(p.iter())))
                .map(|n| n as u64)
                .map_err(|e| e.to_string()),
            Conn::Pg(c) => c
                .execute(sql, &pg_params(&pg_safe(p)))
                .map_err(|e| pg_error(&e)),
        }
    }

    pub fn query(&mut self, sql: &str, p: &[V]) -> Result<Vec<Vec<V>>, String> {
        match &mut self.conn {
            Conn::Lite(c) => lite_query(c, &sql.replace('$', "?"), p).map_err(|e| e.to_string()),
            Conn::Pg(c) => {
                let rows = c
                    .query(sql, &pg_params(&pg_safe(p)))
                    .map_err(|e| pg_error(&e))?;
                Ok(rows.iter().map(pg_row).collect())
            }
        }
    }

    /// Statements without parameters.
    pub fn batch(&mut self, sql: &str) -> Result<(), String> {
        match &mut self.conn {
            Conn::Lite(c) => c.execute_batch(sql).map_err(|e| e.to_string()),
            Conn::Pg(c) => c.batch_execute(sql).map_err(|e| pg_error(&e)),
        }
    }

    /// Starts a write transaction (SQLite takes the write lock at once).
    pub fn begin(&mut self) -> Result<(), String> {
        match self.conn {
            Conn::Lite(_) => self.batch("BEGIN IMMEDIATE"),
            Conn::Pg(_) => self.batch("BEGIN"),
        }
    }

    pub fn commit(&mut self) -> Result<(), String> {
        self.batch("COMMIT")
    }

    pub fn rollback(&mut self) {
        let _ = self.batch("ROLLBACK");
    }

    /// Creates the schema, or brings it up to [`SCHEMA_VERSION`]; refuses a
    /// newer one, or a database of something else.
    fn migrate(&mut self) -> Result<(), String> {
        self.begin().map_err(|e| self.err(&e))?;
        let r = self.migrate_in_transaction();
        match r {
            Ok(()) => self.commit().map_err(|e| self.err(&e)),
            Err(e) => {
                self.rollback();
                Err(e)
            }
        }
    }

    fn migrate_in_transaction(&mut self) -> Result<(), String> {
        if self.is_pg() {
            // one sensor at a time creates the schema
            self.exec("SELECT pg_advisory_xact_lock(7301)", &[])
                .map_err(|e| self.err(&e))?;
        }
        let version = self.schema_version()?;
        if version == 0 {
            self.batch("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                .map_err(|e| self.err(&e))?;
            self.exec(
                "INSERT INTO meta (key, value) VALUES ('schema_version', '0')",
                &[],
            )
            .map_err(|e| self.err(&e))?;
        }
        let id = match self.conn {
            Conn::Lite(_) => "INTEGER PRIMARY KEY",
            Conn::Pg(_) => "BIGSERIAL PRIMARY KEY",
        };
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            self.batch(&m.replace("{ID}", id))
                .map_err(|e| self.err(&format!("migrating to schema {}: {e}", i + 1)))?;
        }
        self.exec(
            "UPDATE meta SET value = $1 WHERE key = 'schema_version'",
            &[V::T(SCHEMA_VERSION.to_string())],
        )
        .map_err(|e| self.err(&e))?;
        Ok(())
    }

    /// The schema version written in the database (0: empty); refuses a
    /// database of something else, a newer one, a nonsensical one.
    fn schema_version(&mut self) -> Result<i64, String> {
        let tables_sql = match self.conn {
            Conn::Lite(_) => "SELECT name FROM sqlite_master WHERE type = 'table'",
            Conn::Pg(_) => {
                "SELECT table_name::text FROM information_schema.tables \
                 WHERE table_schema = current_schema()"
            }
        };
        let tables: Vec<String> = self
            .query(tables_sql, &[])
            .map_err(|e| self.err(&e))?
            .iter()
            .filter_map(|r| r.first().and_then(V::text).map(String::from))
            .collect();
        let version = if tables.iter().any(|t| t == "meta") {
            let v = self
                .query("SELECT value FROM meta WHERE key = 'schema_version'", &[])
                .map_err(|e| self.err(&e))?;
            v.first()
                .and_then(|r| r.first())
                .and_then(V::text)
                .and_then(|t| t.parse::<i64>().ok())
                .ok_or_else(|| self.err("no schema version in its meta table"))?
        } else if tables.is_empty() {
            0
        } else {
            return Err(self.err(&format!(
                "not a spanwatch ledger (it has tables {} but no schema version); not touched",
                tables.join(", ")
            )));
        };
        if version > SCHEMA_VERSION {
            return Err(self.err(&format!(
                "written by a newer spanwatch (ledger schema version {version}; this build \
                 knows up to {SCHEMA_VERSION}): not opened; upgrade spanwatch"
            )));
        }
        if version < 0 || (version == 0 && !tables.is_empty() && tables.len() > 1) {
            return Err(self.err(&format!(
                "ledger schema version {version} makes no sense: not opened"
            )));
        }
        Ok(version)
    }

    fn err(&self, e: &str) -> String {
        format!("ledger database {}: {e}", self.name)
    }
}

fn open_sqlite(path: &str, read_only: bool) -> Result<rusqlite::Connection, String> {
    let c = if read_only {
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
        rusqlite::Connection::open_with_flags(path, flags)
    } else {
        rusqlite::Connection::open(path)
    }
    .map_err(|e| e.to_string())?;
    let damaged = |e: rusqlite::Error| format!("not a SQLite database, or damaged: {e}");
    c.busy_timeout(Duration::from_secs(10)).map_err(damaged)?;
    let check: String = c
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(damaged)?;
    if check != "ok" {
        return Err(format!("damaged (integrity check: {check}); not touched"));
    }
    Ok(c)
}

/// Write-ahead logging: readers (the audit) beside the writer, and a
/// committed transaction survives a crash of the process.
fn wal(c: &rusqlite::Connection) -> Result<(), String> {
    let mode: String = c
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!(
            "cannot use write-ahead logging (journal mode {mode})"
        ));
    }
    c.execute_batch("PRAGMA synchronous = NORMAL")
        .map_err(|e| e.to_string())
}

/// Connects; on failure, whether the server was unreachable (as opposed to a
/// wrong address, name or password, which retrying does not fix).
fn connect_pg(spec: &str) -> Result<postgres::Client, (String, bool)> {
    let mut cfg: postgres::Config = spec.parse().map_err(|e| (format!("{e}"), false))?;
    cfg.connect_timeout(Duration::from_secs(5));
    cfg.keepalives(true);
    cfg.keepalives_idle(Duration::from_secs(30));
    // a server that stops answering fails the statement, never hangs the store
    cfg.options("-c statement_timeout=30000 -c lock_timeout=20000");
    cfg.application_name("spanwatch");
    cfg.connect(postgres::NoTls)
        .map_err(|e| (pg_error(&e), e.as_db_error().is_none()))
}

/// The server's own message, when there is one.
fn pg_error(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{}: {}", d.severity(), d.message()),
        None => e.to_string(),
    }
}

const NULL_TEXT: Option<&str> = None;

/// PostgreSQL text cannot hold NUL (a hostile name can): shown as U+FFFD.
fn pg_safe(p: &[V]) -> std::borrow::Cow<'_, [V]> {
    if !p.iter().any(|v| v.text().is_some_and(|t| t.contains('\0'))) {
        return std::borrow::Cow::Borrowed(p);
    }
    std::borrow::Cow::Owned(
        p.iter()
            .map(|v| match v {
                V::T(t) => V::T(t.replace('\0', "\u{fffd}")),
                v => v.clone(),
            })
            .collect(),
    )
}

fn pg_params(p: &[V]) -> Vec<&(dyn postgres::types::ToSql + Sync)> {
    p.iter()
        .map(|v| -> &(dyn postgres::types::ToSql + Sync) {
            match v {
                V::I(i) => i,
                V::T(t) => t,
                V::Null => &NULL_TEXT,
            }
        })
        .collect()
}

fn pg_row(r: &postgres::Row) -> Vec<V> {
    use postgres::types::Type;
    (0..r.len())
        .map(|i| match *r.columns()[i].type_() {
            Type::INT8 => r.get::<_, Option<i64>>(i).map_or(V::Null, V::I),
            Type::INT4 => r
                .get::<_, Option<i32>>(i)
                .map_or(V::Null, |x| V::I(x.into())),
            _ => r
                .try_get::<_, Option<String>>(i)
                .ok()
                .flatten()
                .map_or(V::Null, V::T),
        })
        .collect()
}

fn lite_query(c: &rusqlite::Connection, sql: &str, p: &[V]) -> rusqlite::Result<Vec<Vec<V>>> {
    use rusqlite::types::ValueRef;
    let mut st = c.prepare_cached(sql)?;
    let n = st.column_count();
    let rows = st.query_map(rusqlite::params_from_iter(p.iter()), |r| {
        (0..n)
            .map(|i| {
                Ok(match r.get_ref(i)? {
                    ValueRef::Integer(x) => V::I(x),
                    ValueRef::Text(t) => V::T(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Real(f) => V::I(f as i64),
                    ValueRef::Null | ValueRef::Blob(_) => V::Null,
                })
            })
            .collect::<rusqlite::Result<Vec<V>>>()
    })?;
    rows.collect()
}
