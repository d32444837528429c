//! `spanwatch report` on the events of the lab recordings and of `pcaps/`:
//! snapshots of the table, JSON and Markdown; the HTML page opened in a real
//! headless Chromium (Debian's, installed by `scripts/deps`): no console
//! error, no network request, one row per finding, one lane per host, a
//! screenshot under `target/`; hostile names inert in every format.

mod common;

use common::{spanwatch, spanwatch_with_input};
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

fn tmp(name: &str) -> common::Scratch {
    common::Scratch::new(&format!("report-{name}"))
}

/// The events of each capture of `dir` read on its own (as an analyst would
/// run them one by one), concatenated.
fn events_of(dir: &str, site: Option<&str>) -> Vec<u8> {
    let mut files: Vec<String> = std::fs::read_dir(common::workspace().join(dir))
        .expect("capture dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".pcap") || n.ends_with(".pcapng"))
        .collect();
    files.sort();
    let mut all = Vec::new();
    for f in files {
        let path = format!("{dir}/{f}");
        let mut args = vec!["read", "-q", "--workers", "1"];
        if let Some(s) = site {
            args.extend(["-c", s]);
        }
        args.push(&path);
        let (code, out, err) = spanwatch(&args);
        assert_eq!(code, 0, "{path}: {err}");
        all.extend_from_slice(out.as_bytes());
    }
    all
}

fn lab_events() -> Vec<u8> {
    events_of("pcaps/lab", Some("pcaps/lab/site.toml"))
}

#[test]
fn table_json_and_markdown_of_the_lab_and_of_pcaps() {
    let lab = lab_events();
    for (format, name) in [
        ("table", "lab-table"),
        ("json", "lab-json"),
        ("markdown", "lab-markdown"),
    ] {
        let (code, out, err) = spanwatch_with_input(&["report", "--format", format], &lab);
        assert_eq!(code, 0, "{err}");
        insta::assert_snapshot!(name, out);
    }
    let (_, json, _) = spanwatch_with_input(&["report", "--format", "json"], &lab);
    let v: Value = serde_json::from_str(&json).expect("json");
    let rows = v["findings"].as_array().expect("rows");
    assert!(rows.len() >= 7, "{json}");
    for r in rows {
        for k in [
            "tool",
            "host",
            "segment_kind",
            "first_seen",
            "last_seen",
            "flows",
            "evidence",
        ] {
            assert!(!r[k].is_null(), "{k} missing: {r}");
        }
    }
    let pcaps = events_of("pcaps", None);
    for (format, name) in [
        ("table", "pcaps-table"),
        ("json", "pcaps-json"),
        ("markdown", "pcaps-markdown"),
    ] {
        let (code, out, err) = spanwatch_with_input(&["report", "--format", format], &pcaps);
        assert_eq!(code, 0, "{err}");
        insta::assert_snapshot!(name, out);
    }
    // gzip-compressed events give the same
    let dir = tmp("gz");
    let gz = dir.join("lab.json.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&lab).expect("gzip");
    std::fs::write(&gz, enc.finish().expect("gzip")).expect("write");
    let (_, from_gz, _) = spanwatch(&["report", "--format", "json", gz.to_str().expect("utf-8")]);
    assert_eq!(from_gz, json);
}

/// Hostile event lines, as a capture with markup, escape sequences and very
/// long labels in its names makes them (`pcaps.rs` and `cli.rs` show the
/// sensor writes such names as they came; the report must keep them inert).
fn hostile() -> Vec<u8> {
    let names = [
        "<script>document.title='pwned'</script>.ngrok-free.app".to_string(),
        "<img src=x onerror=alert(1)>.ngrok.io".to_string(),
        "\u{1b}]0;pwned\u{7}\u{1b}[2J.ngrok.app".to_string(),
        format!("{}.ngrok-free.app", "a".repeat(5000)),
        "\"><svg onload=alert(1)>\u{202e}.ngrok.dev".to_string(),
    ];
    let mut out = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let e = serde_json::json!({
            "timestamp": format!("2026-11-01T10:0{i}:00.000000+0000"), "flow_id": i, "event_type": "alert",
            "pcap_file": format!("<b>{i}</b>.pcap"), "pcap_frame": 1, "community_id": "1:<i>x</i>=",
            "alert": {"signature_id": 9100020, "signature": n, "category": "tunnel-endpoint", "tool": "ngrok",
                "confidence": "high", "severity": 1, "host": format!("10.1.0.{}", 10 + i),
                "segment": "<u>prod</u>", "segment_kind": "production",
                "evidence": [{"fact": "sni", "value": n, "pattern": "ngrok"}]}});
        out.extend_from_slice(e.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

#[test]
fn hostile_names_are_inert_in_the_terminal_and_in_markdown() {
    let h = hostile();
    let (code, table, _) = spanwatch_with_input(&["report"], &h);
    assert_eq!(code, 0);
    assert!(!table.contains('\u{1b}') && !table.contains('\u{7}') && !table.contains('\u{202e}'));
    let (_, md, _) = spanwatch_with_input(&["report", "--format", "markdown"], &h);
    assert!(!md.contains('<') && !md.contains('\u{1b}'), "{md}");
    assert_eq!(md.lines().count(), 2 + 5);
}

/// Debian's Chromium, if installed (`scripts/deps` installs it).
fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Runs headless Chromium on `page` with every request sent to a proxy on
/// loopback that counts them; returns (dumped DOM, stderr, requests).
fn browse(chromium: &Path, page: &Path, shot: &Path) -> (String, String, Vec<String>) {
    let proxy = TcpListener::bind("127.0.0.1:0").expect("proxy port");
    proxy.set_nonblocking(true).expect("nonblocking");
    let port = proxy.local_addr().expect("addr").port();
    let profile = tmp("chromium-profile");
    let url = format!("file://{}", page.display());
    let base = |extra: &[String]| {
        let mut c = Command::new(chromium);
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--enable-logging=stderr",
            "--v=0",
        ]);
        c.arg(format!("--user-data-dir={}", profile.display()));
        c.arg(format!("--proxy-server=http://127.0.0.1:{port}"));
        c.args(extra).arg(&url);
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    };
    let run = |extra: &[String]| {
        let child = base(extra).spawn().expect("chromium starts");
        child.wait_with_output().expect("chromium ends")
    };
    let dom = run(&["--dump-dom".into(), "--virtual-time-budget=3000".into()]);
    let shot_out = run(&[
        format!("--screenshot={}", shot.display()),
        "--window-size=1400,1100".into(),
        "--hide-scrollbars".into(),
    ]);
    let mut requests = Vec::new();
    while let Ok((s, _)) = proxy.accept() {
        let _ = s.set_nonblocking(false);
        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
        let mut first = String::new();
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(&s), &mut first);
        // a connection that never sent a line is a preconnect Chromium
        // opened and dropped, not a request
        if !first.trim().is_empty() {
            requests.push(first.trim().to_string());
        }
    }
    let err = String::from_utf8_lossy(&dom.stderr).into_owned()
        + &String::from_utf8_lossy(&shot_out.stderr);
    (
        String::from_utf8_lossy(&dom.stdout).into_owned(),
        err,
        requests,
    )
}

#[test]
fn the_html_page_in_a_real_browser() {
    let Some(chromium) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the browser test: scripts/deps installs chromium"
        );
        eprintln!("SKIP: chromium not installed (scripts/deps installs it)");
        return;
    };
    let mut events = lab_events();
    events.extend(hostile());
    // and a capture whose names attack the reader (pcapgen evasion)
    let (code, out, err) = spanwatch(&["read", "-q", "pcaps/evasion-hostile-names.pcap"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("<script>document.title"),
        "the capture's names reach the events"
    );
    events.extend_from_slice(out.as_bytes());
    let dir = tmp("html");
    let page = dir.join("report.html");
    let input = dir.join("events.json");
    std::fs::write(&input, &events).expect("events");
    let (code, json, err) = spanwatch(&[
        "report",
        "--format",
        "json",
        "--html",
        page.to_str().expect("utf-8"),
        input.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&json).expect("json");
    let rows = v["findings"].as_array().expect("rows");
    let mut hosts: Vec<&str> = rows.iter().filter_map(|r| r["host"].as_str()).collect();
    hosts.sort();
    hosts.dedup();
    let target = common::workspace().join("target");
    std::fs::create_dir_all(&target).expect("target");
    let shot = target.join("report-screenshot.png");
    let _ = std::fs::remove_file(&shot);
    let (dom, stderr, requests) = browse(&chromium, &page, &shot);
    assert!(
        dom.contains("data-ready=\"1\""),
        "the page's script ran to its end: {stderr}"
    );
    assert_eq!(
        dom.matches("<tr class=\"finding").count(),
        rows.len(),
        "one row per finding"
    );
    assert_eq!(
        dom.matches("<g class=\"lane\"").count(),
        hosts.len(),
        "one lane per host"
    );
    assert_eq!(dom.matches("<script").count(), 1, "no injected script");
    assert!(
        !dom.contains("<img") && !dom.contains("<svg onload"),
        "no injected markup"
    );
    assert!(!dom.contains("<title>pwned"), "the page's title is its own");
    assert!(!stderr.contains("Uncaught"), "console errors: {stderr}");
    assert!(!stderr.contains("Refused to"), "CSP violations: {stderr}");
    // Chromium's own calls home (time, updates, accounts) leave whatever
    // the flags say; the page's would go anywhere else
    let own = |r: &&String| {
        [
            "google.com",
            "googleapis.com",
            "gstatic.com",
            "gvt1.com",
            "gvt2.com",
        ]
        .iter()
        .any(|d| {
            r.contains(&format!(".{d}"))
                || r.contains(&format!("/{d}"))
                || r.contains(&format!(" {d}"))
        })
    };
    let page_requests: Vec<&String> = requests.iter().filter(|r| !own(r)).collect();
    assert!(
        page_requests.is_empty(),
        "the page made network requests: {page_requests:?}"
    );
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000);
    eprintln!("screenshot: {}", shot.display());
    std::thread::sleep(Duration::from_millis(10));
}
