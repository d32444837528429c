//! The `spanwatch` binary: exit codes, error lines, output options.

mod common;

use common::spanwatch;

fn tmp(name: &str) -> common::Scratch {
    common::Scratch::new(&format!("cli-{name}"))
}

#[test]
fn a_file_that_is_not_a_capture_is_named_and_the_run_goes_on() {
    let (code, out, err) = spanwatch(&["read", "README.md", "pcaps/tls12-chain.pcap"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("README.md: not a pcap or pcapng capture"),
        "{err}"
    );
    assert_eq!(err.matches("not a pcap").count(), 1);
    assert!(
        out.lines().any(|l| l.contains("\"event_type\":\"tls\"")),
        "the second file was read"
    );
    assert!(err.contains("1 TLS handshakes"), "summary: {err}");
}

#[test]
fn output_file_and_event_type_filter() {
    let d = tmp("out");
    let o = d.join("events.json");
    let (code, out, err) = spanwatch(&[
        "read",
        "-c",
        "pcaps/lab/site.toml",
        "--event-types",
        "alert,host_activity",
        "-o",
        o.to_str().expect("utf-8"),
        "pcaps/lab/lab-ngrok-v2-agent.pcap",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.is_empty());
    let text = std::fs::read_to_string(&o).expect("written");
    assert!(text.lines().count() >= 2);
    for l in text.lines() {
        let v: serde_json::Value = serde_json::from_str(l).expect("json line");
        assert!(
            v["event_type"] == "alert" || v["event_type"] == "host_activity",
            "{l}"
        );
    }
    assert!(err.contains("alerts (severity 1: "), "{err}");
}

#[test]
fn check_reports_bad_config_and_rules_with_location() {
    let (code, _, err) = spanwatch(&["check", "-c", "pcaps/lab/site.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("signatures (bundled): ok"), "{err}");

    let d = tmp("check");
    let cfg = d.join("site.toml");
    std::fs::write(&cfg, "[sensor]\nname = \"x\"\n[[segment]]\nname = \"p\"\nkind = \"prod\"\ncidrs = [\"10.0.0.0/8\"]\n").expect("write");
    let (code, _, err) = spanwatch(&["check", "-c", cfg.to_str().expect("utf-8")]);
    assert_eq!(code, 1);
    assert!(
        err.contains("site.toml:5:8: unknown variant `prod`"),
        "{err}"
    );

    let rules = d.join("rules");
    std::fs::create_dir_all(&rules).expect("dir");
    std::fs::write(
        rules.join("bad.toml"),
        "format = 1\n[[signature]]\nid = 1\nname = \"x\"\ntool = \"t\"\ncategory = \"tunnel-agent\"\nconfidence = \"high\"\nsni = { suffix = [\"*.ngrok.io\"] }\n",
    )
    .expect("write");
    let (code, _, err) = spanwatch(&["check", "--signatures", rules.to_str().expect("utf-8")]);
    assert_eq!(code, 1);
    assert!(
        err.contains("bad.toml:3:6: signature 1: `*.ngrok.io` is not a DNS name"),
        "{err}"
    );
    // read refuses to start with bad rules, and says why
    let (code, _, err) = spanwatch(&[
        "read",
        "--signatures",
        rules.to_str().expect("utf-8"),
        "pcaps/tls12-chain.pcap",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("bad.toml:3:6"), "{err}");
}

/// A full disk loses events, says so, and counts them; nothing is counted as
/// written that the system did not take.
#[test]
fn a_full_disk_is_reported_and_lost_events_counted() {
    let (code, _, err) = spanwatch(&["read", "-o", "/dev/full", "pcaps/tls12-chain.pcap"]);
    assert_eq!(code, 1, "{err}");
    let lost: u64 = err
        .split("spanwatch: ")
        .find_map(|l| {
            l.strip_suffix(" events could not be written: No space left on device (os error 28)\n")
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no loss reported: {err}"));
    assert!(lost >= 3, "the TLS, flow and ledger events at least: {err}");
    assert!(
        err.contains(": 0 events in "),
        "none counted written: {err}"
    );
    assert!(err.contains("1 TLS handshakes"), "the run went on: {err}");
}

/// The five fuzz inputs that made etherparse's IPv6 extension iterator read
/// past the packet (the release binary died of SIGSEGV): each as a one-packet
/// capture through `read`, which must count the packet and exit normally.
#[test]
fn crafted_ipv6_extension_chains_do_not_kill_read() {
    let d = tmp("ipv6-oob");
    let seeds = common::workspace().join("fuzz/corpus/packet");
    for i in 1..=5 {
        let input = std::fs::read(seeds.join(format!("ipv6-oob-{i}"))).expect("seed");
        let frame = &input[1..]; // first byte: the link type (Ethernet)
        let pcap = common::classic_pcap(&[(1_000_000, frame)]);
        let path = d.join(format!("oob-{i}.pcap"));
        std::fs::write(&path, &pcap).expect("write capture");
        let (code, out, err) = spanwatch(&["read", path.to_str().expect("utf-8")]);
        assert_eq!(code, 0, "input {i}: {err}");
        assert!(err.contains("1 packets"), "input {i}: {err}");
        assert!(out.lines().all(|l| l.starts_with('{')), "input {i}: {out}");
    }
}

/// `[[output]]` tables: each output takes its own event types; `-o` replaces
/// them; an unknown event type is an error naming the known ones.
#[test]
fn outputs_from_the_site_configuration() {
    let d = tmp("outputs");
    let (all, alerts) = (d.join("all.json"), d.join("alerts.json"));
    let site = std::fs::read_to_string(common::workspace().join("pcaps/lab/site.toml"))
        .expect("lab site")
        + &format!(
            "[[output]]\ntype = \"file\"\npath = \"{}\"\n[[output]]\ntype = \"file\"\npath = \"{}\"\nevent_types = [\"alert\", \"host_activity\"]\n",
            all.display(),
            alerts.display()
        );
    let cfg = d.join("site.toml");
    std::fs::write(&cfg, site).expect("write config");
    let cfg = cfg.to_str().expect("utf-8");
    let capture = "pcaps/lab/lab-ngrok-v2-agent.pcap";
    let (code, out, err) = spanwatch(&["read", "-c", cfg, capture]);
    assert_eq!(code, 0, "{err}");
    assert!(out.is_empty(), "events went to the outputs, not stdout");
    let read = |p: &std::path::Path| std::fs::read_to_string(p).expect("written");
    let types = |t: &str| -> Vec<String> {
        t.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json");
                v["event_type"].as_str().expect("type").to_string()
            })
            .collect()
    };
    let (all_types, alert_types) = (types(&read(&all)), types(&read(&alerts)));
    assert!(all_types.iter().any(|t| t == "flow") && all_types.iter().any(|t| t == "alert"));
    assert!(!alert_types.is_empty());
    assert!(alert_types
        .iter()
        .all(|t| t == "alert" || t == "host_activity"));
    // the alerts file holds exactly the alert and host_activity lines of the other
    let everything = read(&all);
    let picked: Vec<&str> = everything
        .lines()
        .filter(|l| {
            l.contains("\"event_type\":\"alert\"") || l.contains("\"event_type\":\"host_activity\"")
        })
        .collect();
    assert_eq!(read(&alerts).lines().collect::<Vec<_>>(), picked);
    // -o replaces the configured outputs
    let one = d.join("one.json");
    let (code, _, err) = spanwatch(&[
        "read",
        "-c",
        cfg,
        "-o",
        one.to_str().expect("utf-8"),
        capture,
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(read(&one), read(&all));
    let (code, _, err) = spanwatch(&["read", "--event-types", "alert,bogus", capture]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--event-types: unknown event type `bogus` (known: alert, flow, tls, certificate, quic, dns, http, tls_legs, host_activity, stats)"),
        "{err}"
    );
}

/// `--workers` defaults to `auto` (one per core); every number gives the
/// same events; a number out of range names what is allowed.
#[test]
fn workers_default_to_one_per_core_with_the_same_output() {
    let capture = "pcaps/lab/lab-ngrok-v2-agent.pcap";
    let (code, one, err) = spanwatch(&[
        "read",
        "-c",
        "pcaps/lab/site.toml",
        "--workers",
        "1",
        capture,
    ]);
    assert_eq!(code, 0, "{err}");
    for w in [None, Some("auto"), Some("3")] {
        let mut args = vec!["read", "-c", "pcaps/lab/site.toml"];
        if let Some(w) = w {
            args.extend(["--workers", w]);
        }
        args.push(capture);
        let (code, out, err) = spanwatch(&args);
        assert_eq!(code, 0, "{w:?}: {err}");
        assert_eq!(out, one, "{w:?}");
    }
    let (code, _, err) = spanwatch(&["read", "--workers", "0", capture]);
    assert_eq!(code, 2);
    assert!(
        err.contains("`0` is not a number of workers (1-256) or `auto`"),
        "{err}"
    );
}

/// Captures as analysts receive them: a directory (read recursively, in the
/// order of each capture's first packet; other files reported and skipped)
/// and gzip, zstd and xz captures, recognised by content, giving exactly the
/// events of the plain capture.
#[test]
fn directories_and_compressed_captures() {
    use std::io::Write;
    let d = tmp("case");
    let lab = common::workspace().join("pcaps/lab");
    let plain = std::fs::read(lab.join("lab-mitmweb-ui.pcap")).expect("capture");
    let compress = |name: &str| -> Vec<u8> {
        match name {
            "gz" => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(&plain).expect("gzip");
                e.finish().expect("gzip")
            }
            "zst" => zstd::encode_all(&plain[..], 3).expect("zstd"),
            _ => {
                let mut e = xz2::write::XzEncoder::new(Vec::new(), 6);
                e.write_all(&plain).expect("xz");
                e.finish().expect("xz")
            }
        }
    };
    let events = |p: &std::path::Path| -> Vec<String> {
        let (code, out, err) = spanwatch(&["read", "--workers", "1", p.to_str().expect("utf-8")]);
        assert_eq!(code, 0, "{}: {err}", p.display());
        out.lines()
            .map(|l| l.replace(p.to_str().expect("utf-8"), "CAPTURE"))
            .collect()
    };
    let original = d.join("ui.pcap");
    std::fs::write(&original, &plain).expect("write");
    let want = events(&original);
    assert!(want.len() > 3);
    for ext in ["gz", "zst", "xz"] {
        let p = d.join(format!("ui.pcap.{ext}"));
        std::fs::write(&p, compress(ext)).expect("write");
        assert_eq!(events(&p), want, "{ext}");
    }
    // a case directory: a capture below a subdirectory, one at the top that
    // starts earlier, and notes
    let case = d.join("dir");
    std::fs::create_dir_all(case.join("sub")).expect("mkdir");
    std::fs::write(case.join("sub/late.pcap.gz"), compress("gz")).expect("write");
    std::fs::copy(lab.join("lab-ngrok-v2-agent.pcap"), case.join("early.pcap")).expect("copy");
    std::fs::write(case.join("notes.txt"), "who ran ngrok?\n").expect("write");
    let (code, out, err) = spanwatch(&["read", case.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("skipped:") && err.contains("notes.txt: not a pcap"),
        "{err}"
    );
    assert!(err.contains("2 file(s)"), "{err}");
    let mut files: Vec<String> = Vec::new();
    for l in out.lines() {
        let v: serde_json::Value = serde_json::from_str(l).expect("json");
        if let Some(f) = v["pcap_file"].as_str() {
            if !files.iter().any(|x| x == f) {
                files.push(f.to_string());
            }
        }
    }
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(
        files[0].ends_with("early.pcap") && files[1].ends_with("late.pcap.gz"),
        "{files:?}"
    );
}

/// The findings table at the end of `read`: one row per tool and host,
/// production first, no colour when standard error is not a terminal;
/// `--quiet` leaves it out.
#[test]
fn read_ends_with_the_findings() {
    let d = tmp("findings");
    let o = d.join("events.json");
    let o = o.to_str().expect("utf-8");
    let lab = [
        "pcaps/lab/lab-ngrok-v2-agent.pcap",
        "pcaps/lab/lab-mitmproxy-custom-ca.pcap",
    ];
    let mut args = vec!["read", "-c", "pcaps/lab/site.toml", "-o", o];
    args.extend(lab);
    let (code, _, err) = spanwatch(&args);
    assert_eq!(code, 0, "{err}");
    let table: Vec<&str> = err
        .lines()
        .skip_while(|l| !l.contains("findings, one row per tool and host"))
        .skip(1)
        .take_while(|l| !l.starts_with("spanwatch:"))
        .collect();
    assert!(table[0].starts_with("SEV"), "{err}");
    let rows: Vec<Vec<&str>> = table[1..]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{err}");
    assert_eq!(
        &rows[0][..5],
        ["1", "prod-core", "(production)", "ngrok", "10.1.0.10"],
        "{err}"
    );
    assert_eq!(
        &rows[1][..5],
        ["4", "dev-lab", "(development)", "mitmproxy", "10.20.0.20"],
        "{err}"
    );
    assert!(!err.contains('\u{1b}'), "no colour off a terminal");
    assert!(err.contains(&format!("every event is in {o}")), "{err}");
    let mut quiet = args.clone();
    quiet.insert(1, "--quiet");
    let (code, _, err) = spanwatch(&quiet);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("findings"), "{err}");
}

/// A capture whose names attack the reader: the findings table on a
/// terminal shows them inert (no escape sequence or control byte gets out).
#[test]
fn hostile_names_in_a_capture_are_inert_in_the_findings_table() {
    let (code, _, err) = spanwatch(&[
        "read",
        "-o",
        "/dev/null",
        "pcaps/evasion-hostile-names.pcap",
    ]);
    assert_eq!(code, 0, "{err}");
    let table = err.split("findings").nth(1).expect("the findings table");
    assert!(
        !table
            .chars()
            .any(|c| c.is_control() && c != '\n' || matches!(c, '\u{202a}'..='\u{202e}')),
        "{table:?}"
    );
    assert!(table.contains("ngrok"), "{table}");
}

#[test]
fn live_without_an_interface_says_where_to_name_one() {
    let (code, _, err) = spanwatch(&["live"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("give -i IFACE or `[capture] interfaces`"),
        "{err}"
    );
}

/// Connections that each leave a gap and pile up out-of-order data: with
/// `--stream-memcap` the biggest are let go and counted in the summary, with
/// every worker count; the default cap holds this capture whole.
#[test]
fn the_stream_memory_cap_lets_the_biggest_flows_go() {
    let d = tmp("memcap");
    let chunk = [0x17u8; 1400];
    let mut frames: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut us = 1_700_000_000_000_000u64;
    for c in 0..200u16 {
        let client = [10, 9, (c >> 8) as u8, c as u8];
        let server = [192, 0, 2, 1];
        let seg = |to_server: bool, seq: u32, syn: bool, data: &[u8]| {
            let (s, t, sp, dp) = if to_server {
                (client, server, 40000, 443)
            } else {
                (server, client, 443, 40000)
            };
            let mut b = etherparse::PacketBuilder::ethernet2([1; 6], [2; 6])
                .ipv4(s, t, 64)
                .tcp(sp, dp, seq, 65535);
            b = if syn { b.syn() } else { b.ack(1) };
            let mut v = Vec::new();
            b.write(&mut v, data).expect("frame");
            v
        };
        us += 100;
        frames.push((us, seg(true, 0, true, &[])));
        frames.push((us, seg(false, 0, true, &[])));
        for i in 0..60u32 {
            us += 10;
            frames.push((us, seg(true, 1001 + i * chunk.len() as u32, false, &chunk)));
        }
    }
    let refs: Vec<(u64, &[u8])> = frames.iter().map(|(t, f)| (*t, &f[..])).collect();
    let path = d.join("gaps.pcap");
    std::fs::write(&path, common::classic_pcap(&refs)).expect("write capture");
    let path = path.to_str().expect("utf-8");
    let let_go = |err: &str| -> u64 {
        let at = err
            .find(" flows let go at the reassembly memory cap")
            .expect("counted");
        let n = err[..at].rsplit(' ').next().expect("a number");
        n.parse().expect("a number")
    };
    let (code, _, err) = spanwatch(&["read", "-q", "--workers", "1", path]);
    assert_eq!((code, let_go(&err)), (0, 0), "{err}");
    for workers in ["1", "2"] {
        let args = [
            "read",
            "-q",
            "--workers",
            workers,
            "--stream-memcap",
            "1",
            path,
        ];
        let (code, _, err) = spanwatch(&args);
        assert_eq!(code, 0, "{err}");
        // 200 flows of 84 KB each into 1 MiB: all but a few let go
        assert!(let_go(&err) > 150, "{workers} workers: {err}");
    }
    // the same cap from the site configuration, and the flag winning over it
    let site = d.join("site.toml");
    std::fs::write(&site, "[flow]\nstream_memcap_mib = 1\n").expect("write");
    let site = site.to_str().expect("utf-8");
    let (code, _, err) = spanwatch(&["read", "-q", "--workers", "1", "--config", site, path]);
    assert_eq!(code, 0, "{err}");
    assert!(let_go(&err) > 150, "[flow] stream_memcap_mib: {err}");
    let args = [
        "read",
        "-q",
        "--workers",
        "1",
        "--stream-memcap",
        "256",
        "--config",
        site,
        path,
    ];
    let (code, _, err) = spanwatch(&args);
    assert_eq!((code, let_go(&err)), (0, 0), "the flag wins: {err}");
    let (code, _, err) = spanwatch(&["read", "--stream-memcap", "0", path]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--stream-memcap"), "{err}");
    // the flag's default is the engine's
    let (_, help, _) = spanwatch(&["read", "--help"]);
    let default = spanwatch::pipeline::engine::DEFAULT_STREAM_MEMCAP >> 20;
    assert!(help.contains(&format!("else {default}]")), "{help}");
}
