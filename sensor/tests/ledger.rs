//! The persistent ledger, end to end with real databases: SQLite files
//! continued by later runs and restarts (and surviving `kill -9`), a real
//! PostgreSQL server shared by two sensors and restarted under one, and
//! `spanwatch ledger`'s audit of the lab recordings.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::netlab::Lab;
use common::pg::Pg;
use common::spanwatch;
use serde_json::Value;

/// The lab's site policy as sensor `name`, with `ledger` settings instead of
/// its own.
fn site(dir: &Path, name: &str, ledger: &str) -> PathBuf {
    let lab =
        std::fs::read_to_string(common::workspace().join("pcaps/lab/site.toml")).expect("lab site");
    let text = lab
        .replace("name = \"lab-span\"", &format!("name = \"{name}\""))
        .replace("max_active = \"8h\"", ledger);
    let p = dir.join(format!("site-{name}.toml"));
    std::fs::write(&p, text).expect("site");
    p
}

fn tmp(name: &str) -> common::Scratch {
    common::Scratch::new(&format!("ledger-{name}"))
}

fn lab(capture: &str) -> String {
    common::workspace()
        .join("pcaps/lab")
        .join(capture)
        .display()
        .to_string()
}

/// `spanwatch read` of `captures` into the ledger `db`; asserts success.
fn read_into(db: &str, site: &Path, captures: &[&str]) {
    let site = site.display().to_string();
    let mut args = vec!["read", "-q", "-o", "/dev/null", "-c", &site, "--ledger", db];
    let paths: Vec<String> = captures.iter().map(|c| lab(c)).collect();
    args.extend(paths.iter().map(String::as_str));
    let (code, _, err) = spanwatch(&args);
    assert_eq!(code, 0, "read {captures:?}: {err}");
}

/// `spanwatch ledger --database db` with `extra`: its output.
fn audit(db: &str, extra: &[&str]) -> String {
    let mut args = vec!["ledger", "--database", db];
    args.extend(extra);
    let (code, out, err) = spanwatch(&args);
    assert_eq!(code, 0, "ledger {extra:?}: {err}");
    out
}

/// The audit's JSON rows, without what says which sensor saw them and how
/// far it had got (those differ between one sensor and two).
fn rows(db: &str, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["--format", "json"];
    args.extend(extra);
    audit(db, &args)
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).expect("JSON row");
            for k in ["sensors", "observed_until", "still_active"] {
                v.as_object_mut().expect("object").remove(k);
            }
            v
        })
        .collect()
}

fn row<'a>(rows: &'a [Value], host: &str, tool: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["host"] == host && r["tool"] == tool)
        .unwrap_or_else(|| panic!("no {host} {tool} in {rows:#?}"))
}

/// Every stored period of the lab's hosts.
fn histories(db: &str) -> Vec<Value> {
    ["10.1.0.10", "10.1.0.20", "10.20.0.10", "10.20.0.20"]
        .iter()
        .flat_map(|h| rows(db, &["--history", h]))
        .collect()
}

const DAY1: [&str; 2] = ["lab-ngrok-v2-agent.pcap", "lab-mitmproxy-explicit.pcap"];
/// The same ngrok agent's host on the first day, minutes later.
const NGROK_TOO: &str = "lab-ngrok-endpoints.pcap";
const DAY2: [&str; 2] = ["lab-mitm-tls13-explicit.pcap", "lab-cloudflared-quic.pcap"];

#[test]
fn two_read_runs_continue_one_ledger_as_one_run_over_both() {
    let dir = tmp("continue");
    let site = site(&dir, "lab-span", "");
    let both = dir.join("both.db").display().to_string();
    read_into(&both, &site, &[DAY1[0], DAY1[1], DAY2[0], DAY2[1]]);
    let two = dir.join("two.db").display().to_string();
    read_into(&two, &site, &DAY1);
    read_into(&two, &site, &DAY2);
    assert_eq!(rows(&two, &[]), rows(&both, &[]));
    assert_eq!(histories(&two), histories(&both));
    // later capture first: the earlier one still lands in its own period
    let reversed = dir.join("reversed.db").display().to_string();
    read_into(&reversed, &site, &DAY2);
    read_into(&reversed, &site, &DAY1);
    assert_eq!(histories(&reversed), histories(&both));
    // mitmproxy on 10.1.0.20 on two days, more than idle_after apart: two periods
    let r = rows(&both, &[]);
    let m = row(&r, "10.1.0.20", "mitmproxy");
    assert_eq!(m["periods"], 2, "{m}");
    let h = rows(&both, &["--history", "10.1.0.20"]);
    assert_eq!(h.len(), 2, "{h:#?}");
    assert!(h[0]["last_seen"].as_str() < h[1]["first_seen"].as_str());
}

#[test]
fn retention_prunes_periods_that_ended_long_ago() {
    let dir = tmp("retain");
    let site = site(&dir, "lab-span", "retain = \"1d\"");
    let db = dir.join("l.db").display().to_string();
    read_into(&db, &site, &DAY1);
    read_into(&db, &site, &DAY2);
    let h = rows(&db, &["--history", "10.1.0.20"]);
    assert_eq!(h.len(), 1, "the first day's period is pruned: {h:#?}");
    assert!(h[0]["first_seen"]
        .as_str()
        .is_some_and(|t| t.starts_with("2026-12-03")));
}

#[test]
fn a_damaged_file_a_foreign_database_and_a_newer_schema_are_refused() {
    let dir = tmp("refuse");
    let site = site(&dir, "lab-span", "").display().to_string();
    let capture = lab(DAY1[0]);
    let refused = |db: &Path, why: &str| {
        let d = db.display().to_string();
        let before = std::fs::read(db).expect("file");
        let (code, _, err) = spanwatch(&["read", "-q", "-c", &site, "--ledger", &d, &capture]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(&d) && err.contains(why), "{err}");
        let (code, _, err) = spanwatch(&["ledger", "--database", &d]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(&d) && err.contains(why), "{err}");
        assert_eq!(std::fs::read(db).expect("file"), before, "never reset");
    };
    let junk = dir.join("junk.db");
    std::fs::write(&junk, vec![0x5a; 8192]).expect("junk");
    refused(&junk, "not a SQLite database, or damaged");

    let foreign = dir.join("foreign.db");
    rusqlite::Connection::open(&foreign)
        .and_then(|c| c.execute_batch("CREATE TABLE invoices (id INTEGER)"))
        .expect("foreign db");
    refused(&foreign, "not a spanwatch ledger");

    let newer = dir.join("newer.db");
    read_into(&newer.display().to_string(), Path::new(&site), &DAY1);
    rusqlite::Connection::open(&newer)
        .and_then(|c| {
            c.execute_batch(
                "UPDATE meta SET value = '99' WHERE key = 'schema_version'; \
                 PRAGMA wal_checkpoint(TRUNCATE);",
            )
        })
        .expect("bump version");
    refused(&newer, "newer spanwatch (ledger schema version 99");
    rusqlite::Connection::open(&newer)
        .and_then(|c| {
            c.execute_batch(
                "UPDATE meta SET value = '-1' WHERE key = 'schema_version'; \
                 PRAGMA wal_checkpoint(TRUNCATE);",
            )
        })
        .expect("negative version");
    refused(&newer, "ledger schema version -1 makes no sense");

    let (code, _, err) = spanwatch(&["ledger", "--database", "/nonexistent/l.db"]);
    assert!(code == 2 && err.contains("no such file"), "{err}");
}

/// The audit of every lab recording, as people and scripts see it.
#[test]
fn the_audit_of_the_lab_recordings() {
    let dir = tmp("audit");
    let site = site(&dir, "lab-span", "");
    let db = dir.join("l.db").display().to_string();
    let mut all: Vec<String> = std::fs::read_dir(common::workspace().join("pcaps/lab"))
        .expect("lab dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".pcap"))
        .collect();
    all.sort();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    read_into(&db, &site, &all);
    // the audit reads; it writes nothing
    let before = std::fs::read(&db).expect("db");
    insta::assert_snapshot!("audit_table", audit(&db, &[]));
    assert_eq!(std::fs::read(&db).expect("db"), before);
    insta::assert_snapshot!("audit_json", audit(&db, &["--format", "json"]));
    insta::assert_snapshot!("audit_csv", audit(&db, &["--format", "csv"]));
    insta::assert_snapshot!("audit_history", audit(&db, &["--history", "10.1.0.20"]));

    let r = rows(&db, &[]);
    // severity first (production before development), then duration
    let kinds: Vec<&str> = r
        .iter()
        .filter_map(|x| x["segment_kind"].as_str())
        .collect();
    let first_dev = kinds
        .iter()
        .position(|k| *k == "development")
        .expect("dev rows");
    assert!(
        kinds[..first_dev].iter().all(|k| *k == "production"),
        "{kinds:?}"
    );
    assert!(r.iter().all(|x| [
        "host",
        "tool",
        "segment",
        "first_seen",
        "last_seen",
        "flows",
        "bytes",
        "sightings"
    ]
    .iter()
    .all(|k| x.get(k).is_some())));
    // the sanctioned ngrok agent is listed as such
    let tools = |args: &[&str]| -> Vec<(String, String)> {
        rows(&db, args)
            .iter()
            .map(|x| {
                (
                    x["host"].as_str().unwrap_or("").into(),
                    x["tool"].as_str().unwrap_or("").into(),
                )
            })
            .collect()
    };
    assert!(tools(&["--tool", "ngrok"])
        .iter()
        .all(|(_, t)| t == "ngrok"));
    assert!(!tools(&["--tool", "ngrok"]).is_empty());
    let dev = tools(&["--segment-kind", "development"]);
    assert!(
        !dev.is_empty() && dev.iter().all(|(h, _)| h.starts_with("10.20.")),
        "{dev:?}"
    );
    assert_eq!(tools(&["--host", "10.20.0.0/16"]), dev);
    assert_eq!(
        tools(&["--host", "10.1.0.20"]),
        tools(&["--host", "10.1.0.20/32"])
    );
    // only what was seen within the last hour of what the sensor observed
    let recent = tools(&["--active-within", "1h"]);
    assert!(!recent.is_empty() && recent.len() < r.len(), "{recent:?}");
    let (code, _, err) = spanwatch(&["ledger", "--database", &db, "--host", "nope"]);
    assert!(code == 2 && err.contains("--host nope"), "{err}");
}

/// Waits (bounded) until the audit of `db` lists `host` with `tool`.
fn wait_listed(db: &str, host: &str, tool: &str) -> Vec<Value> {
    let t = Instant::now();
    loop {
        let r = rows(db, &[]);
        if r.iter().any(|x| x["host"] == host && x["tool"] == tool) {
            return r;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{host} {tool} never stored: {r:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Flows per (host, tool) of one capture read offline with its own ledger.
fn offline_rows(capture: &str) -> Vec<Value> {
    let dir = tmp(&format!("offline-{capture}"));
    let db = dir.join("l.db").display().to_string();
    read_into(&db, &site(&dir, "lab-span", ""), &[capture]);
    rows(&db, &[])
}

#[test]
fn live_restart_keeps_first_seen_and_raises_max_active() {
    let Some(mut lab) = Lab::new("ledger-restart") else {
        return;
    };
    let cfg = site(
        &lab.dir,
        "lab-span",
        "max_active = \"3s\"\ncommit_every = \"1s\"",
    );
    let db = lab.dir.join("ledger.db").display().to_string();
    lab.start_with(&cfg, 1, &["--ledger", &db]);
    lab.replay("pcaps/lab/lab-ngrok-endpoints.pcap");
    let first = lab.stop();
    let begun = first
        .iter()
        .find(|e| {
            let a = &e["host_activity"];
            a["reason"] == "first_seen" && a["host"] == "10.1.0.10" && a["tool"] == "ngrok"
        })
        .map(|e| e["host_activity"]["first_seen"].clone())
        .expect("first sighting logged");
    assert!(!first
        .iter()
        .any(|e| e["alert"]["signature_id"] == 9_000_001));
    std::thread::sleep(Duration::from_secs(4));

    lab.output = lab.dir.join("events-2.json");
    lab.start_with(&cfg, 1, &["--ledger", &db]);
    lab.replay("pcaps/lab/lab-ngrok-endpoints.pcap");
    let second = lab.stop();
    let long = second
        .iter()
        .find(|e| e["alert"]["signature_id"] == 9_000_001)
        .unwrap_or_else(|| panic!("no max_active alert after the restart: {second:#?}"));
    assert_eq!(long["alert"]["host"], "10.1.0.10");
    let activity: Vec<&Value> = second
        .iter()
        .filter(|e| {
            let a = &e["host_activity"];
            a["host"] == "10.1.0.10" && a["tool"] == "ngrok"
        })
        .map(|e| &e["host_activity"])
        .collect();
    assert!(
        activity.iter().all(|a| a["reason"] != "first_seen"),
        "{activity:#?}"
    );
    assert!(activity.iter().any(|a| a["reason"] == "max_active"));
    assert!(
        activity.iter().all(|a| a["first_seen"] == begun),
        "{activity:#?}"
    );
    let r = rows(&db, &[]);
    assert_eq!(row(&r, "10.1.0.10", "ngrok")["first_seen"], begun);
}

#[test]
fn kill_9_loses_at_most_the_last_batch() {
    let Some(mut lab) = Lab::new("ledger-kill") else {
        return;
    };
    let cfg = site(&lab.dir, "lab-span", "commit_every = \"1s\"");
    let db = lab.dir.join("ledger.db").display().to_string();
    lab.start_with(&cfg, 1, &["--ledger", &db]);
    lab.replay("pcaps/lab/lab-ngrok-endpoints.pcap");
    // committed while running, readable beside the writer (WAL)
    wait_listed(&db, "10.1.0.10", "ngrok");
    lab.replay("pcaps/lab/lab-mitmproxy-explicit.pcap");
    // commits every second: by now the second capture's sightings are in
    std::thread::sleep(Duration::from_millis(2500));
    let committed = rows(&db, &[]);
    row(&committed, "10.1.0.20", "mitmproxy");
    lab.replay("pcaps/lab/lab-cloudflared-quic.pcap");
    lab.signal("-KILL");
    lab.reap();
    // the file opens, and everything committed before the kill is there
    let after = rows(&db, &[]);
    for c in &committed {
        let a = row(
            &after,
            c["host"].as_str().unwrap_or(""),
            c["tool"].as_str().unwrap_or(""),
        );
        assert_eq!(a["first_seen"], c["first_seen"], "{a}");
        assert!(a["flows"].as_u64() >= c["flows"].as_u64(), "{a} / {c}");
        assert!(
            a["last_seen"].as_str() >= c["last_seen"].as_str(),
            "{a} / {c}"
        );
    }
}

#[test]
fn postgres_two_sensors_at_once_merge_as_one_sensor_would() {
    let Some(pg) = Pg::start("fleet") else {
        return;
    };
    let dir = tmp("fleet");
    let url = pg.url();
    let (s1, s2) = (site(&dir, "sensor-a", ""), site(&dir, "sensor-b", ""));
    let spawn = |site: &Path, captures: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_spanwatch"))
            .args(["read", "-q", "-o", "/dev/null", "-c"])
            .arg(site)
            .args(["--ledger", &url])
            .args(captures.iter().map(|c| lab(c)))
            .output()
            .expect("spanwatch runs")
    };
    // the same hosts, different captures, at the same time
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| spawn(&s1, &[DAY1[0], DAY2[0]]));
        let b = s.spawn(|| spawn(&s2, &[NGROK_TOO, DAY1[1], DAY2[1]]));
        (a.join().expect("a"), b.join().expect("b"))
    });
    for o in [&a, &b] {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let one = dir.join("one.db").display().to_string();
    read_into(&one, &s1, &[DAY1[0], NGROK_TOO, DAY1[1], DAY2[0], DAY2[1]]);
    assert_eq!(rows(&url, &[]), rows(&one, &[]));
    assert_eq!(histories(&url), histories(&one));
    // each merged row names the sensors that saw it
    let full = audit(&url, &["--format", "json"]);
    let m: Vec<Value> = full
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let ngrok = row(&m, "10.1.0.10", "ngrok");
    assert_eq!(
        ngrok["sensors"],
        serde_json::json!(["sensor-a", "sensor-b"]),
        "{ngrok}"
    );
    let mitm = row(&m, "10.1.0.20", "mitmproxy");
    assert_eq!(mitm["sensors"], serde_json::json!(["sensor-a"]), "{mitm}");
}

#[test]
fn postgres_restarted_under_a_live_sensor_loses_nothing_buffered() {
    let Some(mut pg) = Pg::start("outage") else {
        return;
    };
    let Some(mut lab) = Lab::new("ledger-pg") else {
        return;
    };
    let cfg = site(&lab.dir, "lab-span", "commit_every = \"1s\"");
    // the server's Unix socket reaches into the sensor's namespace
    let url = pg.socket_url();
    lab.start_with(&cfg, 1, &["--ledger", &url]);
    lab.replay("pcaps/lab/lab-ngrok-endpoints.pcap");
    wait_listed(&url, "10.1.0.10", "ngrok");
    pg.halt();
    lab.replay("pcaps/lab/lab-mitmproxy-explicit.pcap");
    // a few commits fail while the server is down
    std::thread::sleep(Duration::from_secs(3));
    pg.run();
    wait_listed(&url, "10.1.0.20", "mitmproxy");
    let events = lab.stop();
    let r = rows(&url, &[]);
    for (capture, host, tool) in [
        ("lab-ngrok-endpoints.pcap", "10.1.0.10", "ngrok"),
        ("lab-mitmproxy-explicit.pcap", "10.1.0.20", "mitmproxy"),
    ] {
        let want = offline_rows(capture);
        assert_eq!(
            row(&r, host, tool)["flows"],
            row(&want, host, tool)["flows"],
            "{capture}"
        );
    }
    let store = events
        .iter()
        .rev()
        .find_map(|e| e["stats"].get("ledger_store"))
        .expect("stats carry the store's counters");
    assert!(store["failures"].as_u64() > Some(0), "{store}");
    // and `stop` saw it exit 0: no update was lost (it would say so and fail)
    assert_eq!(store["updates_dropped"], 0, "{store}");
}

#[test]
fn an_unreachable_server_neither_stops_the_sensor_nor_hides_the_loss() {
    let dir = tmp("unreachable");
    let site = site(&dir, "lab-span", "").display().to_string();
    // nothing listens there
    let url = format!(
        "postgresql://spanwatch:sekrit@127.0.0.1:{}/spanwatch",
        common::free_tcp_port()
    );
    let out = dir.join("events.json").display().to_string();
    let capture = lab(DAY1[0]);
    let (code, _, err) = spanwatch(&[
        "read", "-q", "-c", &site, "-o", &out, "--ledger", &url, &capture,
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("updates not stored") && err.contains("127.0.0.1"),
        "{err}"
    );
    // the server is named, its password never
    assert!(
        err.contains("spanwatch@127.0.0.1:") && !err.contains("sekrit"),
        "{err}"
    );
    // the events were all written
    assert!(!common::event_lines(Path::new(&out), &["alert"]).is_empty());
}

/// Two live sensors on one PostgreSQL ledger: the second sees a tool the
/// first saw seconds before, and judges `max_active` on their merged
/// activity.
#[test]
fn postgres_max_active_is_judged_on_what_every_sensor_saw() {
    let Some(pg) = Pg::start("merged") else {
        return;
    };
    let (Some(mut a), Some(mut b)) = (Lab::new("ledger-a"), Lab::new("ledger-b")) else {
        return;
    };
    let url = pg.socket_url();
    let settings = "max_active = \"3s\"\ncommit_every = \"1s\"";
    let (ca, cb) = (
        site(&a.dir, "sensor-a", settings),
        site(&b.dir, "sensor-b", settings),
    );
    a.start_with(&ca, 1, &["--ledger", &url]);
    b.start_with(&cb, 1, &["--ledger", &url]);
    a.replay("pcaps/lab/lab-ngrok-endpoints.pcap");
    wait_listed(&url, "10.1.0.10", "ngrok");
    std::thread::sleep(Duration::from_secs(4));
    b.replay("pcaps/lab/lab-ngrok-endpoints.pcap");
    // b's first sighting is stored, and the merged interval comes back
    std::thread::sleep(Duration::from_secs(3));
    let seen_b = b.stop();
    let first_a = a.stop();
    assert!(!first_a
        .iter()
        .any(|e| e["alert"]["signature_id"] == 9_000_001));
    let long = seen_b
        .iter()
        .find(|e| e["alert"]["signature_id"] == 9_000_001)
        .unwrap_or_else(|| panic!("sensor b raised no max_active alert"));
    assert_eq!(long["alert"]["host"], "10.1.0.10");
    let r = audit(&url, &["--format", "json"]);
    let rows: Vec<Value> = r
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let ngrok = row(&rows, "10.1.0.10", "ngrok");
    assert_eq!(
        ngrok["sensors"],
        serde_json::json!(["sensor-a", "sensor-b"]),
        "{ngrok}"
    );
    assert_eq!(ngrok["periods"], 1, "{ngrok}");
}
