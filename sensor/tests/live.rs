//! Live capture, end to end: a network namespace with a veth pair, captures
//! from `pcaps/` replayed into one end with tcpreplay, `spanwatch live` on the
//! other, stopped with SIGTERM. Needs root, `ip` and `tcpreplay`
//! (`scripts/deps` installs them); skips with a message otherwise.
//! Traffic stays inside the namespace the test creates and deletes.

mod common;

use common::netlab::{events, lab_config, tcpreplay, Lab};

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// What must be the same live and offline: alerts, TLS and DNS facts, flows.
fn summary(events: &[Value]) -> (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>, usize) {
    let alerts = events
        .iter()
        .filter(|e| e["event_type"] == "alert")
        .map(|e| {
            format!(
                "{} {} {} {}",
                e["alert"]["signature_id"],
                e["alert"]["tool"],
                e["alert"]["category"],
                e["alert"]["host"]
            )
        })
        .collect();
    let tls = events
        .iter()
        .filter(|e| e["event_type"] == "tls")
        .map(|e| {
            format!(
                "{} {} {} {}",
                e["src_ip"], e["dest_ip"], e["tls"]["sni"], e["tls"]["ja4"]
            )
        })
        .collect();
    let dns = events
        .iter()
        .filter(|e| e["event_type"] == "dns")
        .map(|e| {
            format!(
                "{} {} {}",
                e["dns"]["type"], e["dns"]["id"], e["dns"]["queries"]
            )
        })
        .collect();
    let flows = events.iter().filter(|e| e["event_type"] == "flow").count();
    (alerts, tls, dns, flows)
}

fn flow_list(events: &[Value]) -> String {
    events
        .iter()
        .filter(|e| e["event_type"] == "flow")
        .map(|e| {
            format!(
                "{} {}:{}>{}:{}",
                e["proto"], e["src_ip"], e["src_port"], e["dest_ip"], e["dest_port"]
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn offline(capture: &str) -> Vec<Value> {
    let site = spanwatch::load::site(Some(&lab_config())).expect("lab config");
    common::run_with(
        &common::workspace().join(capture),
        capture,
        spanwatch::pipeline::engine::EngineConfig::for_site(site),
    )
    .events
}

#[test]
fn live_capture_equals_offline_read_with_no_drops() {
    for (capture, workers, mbps) in [
        ("pcaps/lab/lab-mitmproxy-explicit.pcap", 2, Some("20")),
        ("pcaps/lab/lab-ngrok-endpoints.pcap", 3, Some("20")),
        ("pcaps/tls12-tiny-mss.pcap", 1, Some("20")),
        // a transparent proxy's legs are told by round trips: real timing
        ("pcaps/lab/lab-mitm-tls13-transparent.pcap", 2, None),
    ] {
        let Some(mut lab) = Lab::new("eq") else {
            return;
        };
        lab.start(&lab_config(), workers);
        lab.replay_at(capture, mbps);
        let live = lab.stop();
        let (la, lt, ld, lf) = summary(&live);
        let (oa, ot, od, of) = summary(&offline(capture));
        assert_eq!(la, oa, "{capture}: alerts");
        assert_eq!(lt, ot, "{capture}: TLS");
        assert_eq!(ld, od, "{capture}: DNS");
        assert_eq!(lf, of, "{capture}: flows ({})", flow_list(&live));
        let stats: Vec<&Value> = live.iter().filter(|e| e["event_type"] == "stats").collect();
        let last = stats.last().expect("a stats event at exit");
        let iface = &last["stats"]["interfaces"][0];
        assert_eq!(iface["name"], "vb");
        assert_eq!(
            (
                iface["kernel_dropped"].as_u64(),
                iface["queue_dropped"].as_u64()
            ),
            (Some(0), Some(0)),
            "{capture}"
        );
        assert!(last["stats"]["latency_ns"]["p99"]
            .as_u64()
            .is_some_and(|p| p > 0));
        let packets = last["stats"]["packets"].as_u64().unwrap_or(0);
        assert!(packets > 0);
        // per-worker shares: every worker reported, none dropped, they add up
        let per = last["stats"]["workers"]
            .as_array()
            .expect("per-worker stats");
        assert_eq!(per.len(), workers, "{capture}");
        assert!(
            per.iter().all(|w| w["queue_dropped"] == 0),
            "{capture}: {per:?}"
        );
        let sum: u64 = per.iter().filter_map(|w| w["packets"].as_u64()).sum();
        assert_eq!(sum, packets, "{capture}: {per:?}");
    }
}

#[test]
fn sigterm_mid_capture_ends_every_flow() {
    let Some(mut lab) = Lab::new("term") else {
        return;
    };
    lab.start(&lab_config(), 1);
    // the agent's connections are cut off mid-way: no FIN for several of them
    lab.replay("pcaps/lab/lab-ngrok-v2-agent.pcap");
    // let one stats interval (1 s) pass with the agent in the ledger
    std::thread::sleep(Duration::from_millis(1500));
    let live = lab.stop();
    let (_, _, _, flows) = summary(&live);
    let (_, _, _, offline_flows) = summary(&offline("pcaps/lab/lab-ngrok-v2-agent.pcap"));
    assert_eq!(
        flows, offline_flows,
        "every flow that started has its flow event"
    );
    assert!(live
        .iter()
        .any(|e| e["event_type"] == "flow" && e["flow"]["reason"] == "shutdown"));
    let reasons: Vec<&Value> = live
        .iter()
        .filter(|e| e["event_type"] == "host_activity")
        .map(|e| &e["host_activity"]["reason"])
        .collect();
    assert!(reasons.iter().any(|r| **r == "end_of_run"), "{reasons:?}");
    // with a 1 s stats interval the ledger was also reported while running
    assert!(reasons.iter().any(|r| **r == "periodic"), "{reasons:?}");
}

/// A copy of the lab's site configuration in the lab's directory, for a
/// test to change under the running sensor.
fn own_config(lab: &Lab) -> std::path::PathBuf {
    let cfg = lab.dir.join("site.toml");
    std::fs::copy(lab_config(), &cfg).expect("copy config");
    cfg
}

#[test]
fn sighup_with_a_broken_config_keeps_the_old_one() {
    let Some(mut lab) = Lab::new("hup") else {
        return;
    };
    let cfg = own_config(&lab);
    lab.start(&cfg, 2);
    std::fs::write(&cfg, "[sensor]\nname = \"x\"\n[[segment]]\nname = \"p\"\nkind = \"prod\"\ncidrs = [\"10.0.0.0/8\"]\n").expect("break it");
    lab.signal("-HUP");
    lab.wait_for("keeping the previous configuration");
    assert!(
        lab.stderr()
            .contains("site.toml:5:8: unknown variant `prod`"),
        "{}",
        lab.stderr()
    );
    // still running, still with the old segments
    lab.replay("pcaps/lab/lab-mitmweb-ui.pcap");
    let live = lab.stop();
    let alert = live
        .iter()
        .find(|e| e["event_type"] == "alert")
        .expect("alert");
    assert_eq!(alert["alert"]["segment"], "prod-core");
}

/// A reload applies what it can and names what it cannot: the table's size
/// is read at start, the timeouts are applied.
#[test]
fn sighup_names_the_settings_read_at_start_it_changed() {
    let Some(mut lab) = Lab::new("hupflow") else {
        return;
    };
    let cfg = own_config(&lab);
    lab.start(&cfg, 2);
    let mut text = std::fs::read_to_string(&cfg).expect("read config");
    text.push_str("\n[flow]\nmax_flows = 1000\n[flow.timeouts]\ntcp_closed = \"1s\"\n");
    std::fs::write(&cfg, text).expect("change it");
    lab.signal("-HUP");
    lab.wait_for("configuration and signatures reloaded");
    let err = lab.stderr();
    assert!(
        err.contains("[flow] max_flows / stream_memcap_mib changed: read at start, applied at the next restart"),
        "{err}"
    );
    assert!(!err.contains("[capture]"), "nothing else changed: {err}");
    lab.replay("pcaps/lab/lab-mitmweb-ui.pcap");
    let live = lab.stop();
    assert!(
        live.iter().any(|e| e["event_type"] == "alert"),
        "still running"
    );
}

/// TLS events as (client, server, SNI, JA4): what each file must hold.
fn tls_of(events: &[Value]) -> BTreeSet<String> {
    summary(events).1
}

#[test]
fn sighup_reopens_the_output_for_log_rotation() {
    let Some(mut lab) = Lab::new("rot") else {
        return;
    };
    let (first, second) = (
        "pcaps/lab/lab-mitmweb-ui.pcap",
        "pcaps/lab/lab-ngrok-endpoints.pcap",
    );
    lab.start(&lab_config(), 2);
    lab.replay(first);
    // what logrotate does: move the file, then tell the sensor
    let rotated = lab.dir.join("events.json.1");
    std::fs::rename(lab.out(), &rotated).expect("rotate");
    lab.signal("-HUP");
    lab.wait_for("configuration and signatures reloaded");
    lab.replay(second);
    let new = lab.stop();
    let old = events(&rotated);
    let (a, b) = (offline(first), offline(second));
    // each capture's handshakes are in the file that was open when they came
    assert_eq!(tls_of(&old), tls_of(&a), "before the rotation");
    assert_eq!(tls_of(&new), tls_of(&b), "after the rotation");
    // every flow of both, once, across the two files (the first capture's
    // may end after the rotation)
    let flows = |e: &[Value]| summary(e).3;
    assert_eq!(flows(&old) + flows(&new), flows(&a) + flows(&b));
    let lines = |e: &[Value]| -> BTreeSet<String> { e.iter().map(|v| v.to_string()).collect() };
    assert!(
        lines(&old).is_disjoint(&lines(&new)),
        "no event written to both"
    );
}

#[test]
fn runs_as_the_named_user_after_opening_the_interface() {
    let Some(mut lab) = Lab::new("user") else {
        return;
    };
    let id = |flag: &str| -> Option<String> {
        let o = Command::new("id").args([flag, "nobody"]).output().ok()?;
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let (Some(uid), Some(gid)) = (id("-u"), id("-g")) else {
        eprintln!("SKIP: no user `nobody` to drop to");
        return;
    };
    let capture = "pcaps/lab/lab-mitmweb-ui.pcap";
    lab.start_with(&lab_config(), 2, &["--user", "nobody"]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", lab.pid())).expect("status");
    let field = |name: &str| -> Vec<String> {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l.split_whitespace().skip(1).map(String::from).collect())
            .unwrap_or_default()
    };
    // real, effective, saved and file-system ids: all of them nobody's
    assert_eq!(field("Uid:"), vec![uid.clone(); 4], "{status}");
    assert_eq!(field("Gid:"), vec![gid; 4], "{status}");
    assert_eq!(
        field("CapEff:"),
        vec!["0000000000000000"],
        "no capability kept"
    );
    // the interface opened before the drop still captures
    lab.replay(capture);
    let live = lab.stop();
    assert_eq!(summary(&live).0, summary(&offline(capture)).0, "alerts");
    assert!(!summary(&live).0.is_empty());
}

#[test]
fn a_full_disk_loses_events_not_the_capture() {
    let Some(mut lab) = Lab::new("full") else {
        return;
    };
    lab.output = PathBuf::from("/dev/full");
    lab.start(&lab_config(), 2);
    let mut sent = lab.replay("pcaps/lab/lab-mitmweb-ui.pcap");
    // said while running, at the next stats interval (1 s)
    lab.wait_for("writing events: No space left on device");
    assert!(lab.stderr().contains("lost so far"), "{}", lab.stderr());
    // still capturing
    sent += lab.replay("pcaps/lab/lab-ngrok-endpoints.pcap");
    let status = lab.terminate();
    let err = lab.stderr();
    assert_eq!(
        status.code(),
        Some(1),
        "a run that lost events fails: {err}"
    );
    assert!(err.contains(" events could not be written"), "{err}");
    let seen: u64 = err
        .split("1 interface(s): ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary: {err}"));
    assert_eq!(
        seen, sent,
        "every packet sent, before and after, captured: {err}"
    );
}

/// A service needs no arguments: the interfaces and the workers come from
/// the site configuration's `[capture]`.
#[test]
fn live_takes_its_capture_settings_from_the_site_configuration() {
    let Some(mut lab) = Lab::new("cfg") else {
        return;
    };
    let config = lab.dir.join("site.toml");
    let site = std::fs::read_to_string(lab_config()).expect("site");
    std::fs::write(
        &config,
        format!("{site}\n[capture]\ninterfaces = [\"vb\"]\nworkers = 2\nbuffer_mib = 8\n"),
    )
    .expect("config");
    lab.start_args(&config, &[]);
    assert!(
        lab.stderr().contains("capturing on vb (2 workers)"),
        "{}",
        lab.stderr()
    );
    lab.replay("pcaps/lab/lab-ngrok-endpoints.pcap");
    let live = lab.stop();
    let stats: Vec<&Value> = live.iter().filter(|e| e["event_type"] == "stats").collect();
    let last = stats.last().expect("stats");
    assert_eq!(last["stats"]["interfaces"][0]["name"], "vb");
    assert_eq!(last["stats"]["workers"].as_array().map(Vec::len), Some(2));
    assert!(live.iter().any(|e| e["event_type"] == "alert"));
}

/// `[metrics]`: scraped with curl (inside the lab's namespace) while the
/// sensor runs; the counters agree with its `stats` events; POST gets 405.
#[test]
fn metrics_are_scraped_while_live_and_agree_with_stats() {
    let Some(mut lab) = Lab::new("metrics") else {
        return;
    };
    let config = lab.dir.join("site.toml");
    let site = std::fs::read_to_string(lab_config()).expect("site");
    std::fs::write(
        &config,
        format!("{site}\n[metrics]\nlisten = \"127.0.0.1:19917\"\n"),
    )
    .expect("config");
    lab.start(&config, 2);
    lab.wait_for("metrics on http://127.0.0.1:19917/metrics");
    let curl = |extra: &[&str]| {
        let out = Command::new("ip")
            .args(["netns", "exec", &lab.ns, "curl", "-s", "--max-time", "5"])
            .args(extra)
            .arg("http://127.0.0.1:19917/metrics")
            .output()
            .expect("curl runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // scraped while traffic flows (a replay looped at 1 Mbit/s, ~2 s)
    let ns = lab.ns.clone();
    let traffic = std::thread::spawn(move || {
        tcpreplay(
            &ns,
            "pcaps/lab/lab-ngrok-endpoints.pcap",
            ["--mbps", "1", "--loop", "20"],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    });
    std::thread::sleep(Duration::from_millis(1500));
    let during = curl(&[]);
    assert!(traffic.join().expect("replay thread"), "tcpreplay");
    assert!(
        during.contains("spanwatch_packets_total{interface=\"vb\"}"),
        "{during}"
    );
    // a stats interval (1 s) passes with the traffic over
    std::thread::sleep(Duration::from_millis(2500));
    let text = curl(&[]);
    let code = curl(&["-X", "POST", "-o", "/dev/null", "-w", "%{http_code}"]);
    let live = lab.stop();
    assert_eq!(code, "405", "POST");
    let metric = |name: &str| -> f64 {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let stats: Vec<&Value> = live.iter().filter(|e| e["event_type"] == "stats").collect();
    let last = stats.last().expect("stats");
    let packets = last["stats"]["interfaces"][0]["packets"]
        .as_f64()
        .unwrap_or(-1.0);
    assert_eq!(
        metric("spanwatch_packets_total{interface=\"vb\"}"),
        packets,
        "{text}"
    );
    // the stats event the scrape was made from (its uptime) counts the same
    // alerts (the end of the run may raise more, after the scrape)
    let uptime = metric("spanwatch_uptime_seconds");
    let then = stats
        .iter()
        .find(|e| e["stats"]["uptime"].as_f64() == Some(uptime))
        .expect("the scraped stats event");
    let alerts: f64 = then["stats"]["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_f64)
        .sum();
    assert!(alerts > 0.0);
    assert_eq!(metric("spanwatch_alerts_total{"), alerts, "{text}");
    assert!(
        text.contains("spanwatch_queue_drops_total{worker=\"1\"} 0"),
        "{text}"
    );
    assert!(text.contains("spanwatch_build_info{version="), "{text}");
}

/// The Redis output's counts in the last `stats` event.
fn redis_counts(events: &[Value]) -> Option<&Value> {
    let last = events.iter().rev().find(|e| e["event_type"] == "stats")?;
    last["stats"]["outputs"]
        .as_array()?
        .iter()
        .find(|o| o["name"].as_str().is_some_and(|n| n.starts_with("redis:")))
}

/// A Redis output while its server goes away and comes back (all inside
/// the lab's namespace): a short outage loses nothing (the queue holds it);
/// a long one drops what does not fit, and what arrived plus what was
/// counted lost is exactly what the output was given.
#[test]
fn a_redis_output_rides_out_an_outage_and_counts_what_it_dropped() {
    let Some(bin) = common::installed(
        &["/usr/bin/redis-server", "/usr/sbin/redis-server"],
        "redis-server",
    ) else {
        return;
    };
    let Some(mut lab) = Lab::new("redis") else {
        return;
    };
    let ns = lab.ns.clone();
    let db = lab.dir.join("db");
    std::fs::create_dir_all(&db).expect("db dir");
    let server = || {
        Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(&bin)
            .args(common::redis_server_args(16379, &db))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts")
    };
    let cli = |args: &[&str]| {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns, "redis-cli", "-p", "16379"])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let up = |cli: &dyn Fn(&[&str]) -> String| {
        let t = Instant::now();
        while cli(&["ping"]) != "PONG" {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let mut redis = server();
    up(&cli);
    let config = lab.dir.join("site.toml");
    let file = lab.dir.join("all.json");
    let site = std::fs::read_to_string(lab_config()).expect("site");
    std::fs::write(
        &config,
        format!(
            "{site}\n[[output]]\ntype = \"file\"\npath = \"{}\"\n\
[[output]]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:16379/0\"\nmode = \"list\"\nkey = \"events\"\nqueue_mib = 1\nevent_types = [\"flow\", \"dns\", \"tls\", \"http\", \"alert\"]\n",
            file.display()
        ),
    )
    .expect("config");
    lab.own_outputs = true;
    lab.output = file.clone();
    lab.start_with(&config, 1, &[]);
    // a short outage: the queue holds what comes meanwhile
    lab.replay("pcaps/lab/lab-ngrok-endpoints.pcap");
    std::thread::sleep(Duration::from_millis(500));
    // the server keeps nothing on disk: count what each instance got
    let first: u64 = cli(&["llen", "events"]).parse().unwrap_or(0);
    let _ = redis.kill();
    let _ = redis.wait();
    lab.replay("pcaps/lab/lab-mitmproxy-explicit.pcap");
    std::thread::sleep(Duration::from_millis(1500));
    redis = server();
    up(&cli);
    std::thread::sleep(Duration::from_millis(6000)); // the backoff is at most 5 s
    let after_short: u64 = cli(&["llen", "events"]).parse().unwrap_or(0);
    assert_eq!(
        redis_counts(&events(&file)).and_then(|o| o["lost"].as_u64()),
        Some(0),
        "the short outage lost nothing"
    );
    // a long outage: far more than the 1 MiB queue
    let _ = redis.kill();
    let _ = redis.wait();
    let looped = tcpreplay(
        &ns,
        "pcaps/lab/lab-mitmproxy-explicit.pcap",
        ["--mbps", "50", "--loop", "150"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .status()
    .expect("tcpreplay");
    assert!(looped.success());
    std::thread::sleep(Duration::from_millis(1500));
    redis = server();
    up(&cli);
    // the run lost events: it says so and exits 1
    let status = lab.terminate();
    assert_eq!(status.code(), Some(1), "{}", lab.stderr());
    assert!(lab.stderr().contains("events could not be written"));
    let live = events(&lab.out());
    let last_instance: u64 = cli(&["llen", "events"]).parse().unwrap_or(0);
    let delivered = first + after_short + last_instance;
    let _ = redis.kill();
    let _ = redis.wait();
    let given = live
        .iter()
        .filter(|e| {
            ["flow", "dns", "tls", "http", "alert"]
                .contains(&e["event_type"].as_str().unwrap_or(""))
        })
        .count() as u64;
    let out = redis_counts(&live).expect("the redis output's counts");
    let lost = out["lost"].as_u64().unwrap_or(0);
    // the file says what the output was given before the end; the events
    // of the run's end (flows) come after the last stats event's counts
    assert!(after_short > 0, "the short outage's events arrived");
    assert!(lost > 0, "the long outage dropped some: {out}");
    assert_eq!(delivered + lost, given, "delivered + lost == given: {out}");
}
