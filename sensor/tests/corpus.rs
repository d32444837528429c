//! Differential and robustness tests on the public corpus in `../shared/corpus`
//! (other projects' captures with tshark- and FoxIO-derived expected values).
//! Skipped, with a message, where the corpus is absent.

mod common;

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

/// Why a known disagreement with an oracle is not a spanwatch bug.
const KNOWN: &[(&str, &str)] = &[
    (
        "ndpi/tls_cipher_lens.pcap",
        "malformed ClientHello (cipher-suite length overruns the message): tshark writes a row with no SNI, spanwatch counts it malformed and logs no hello",
    ),
    (
        "suricata-verify/bug-1450-0",
        "deliberately truncated certificate DER (Suricata bug 1450): the length fields overrun the capture, and tshark and spanwatch hash different byte ranges",
    ),
    (
        "ndpi/tls-rdn-extract.pcap",
        "a 1,500-character subject: spanwatch caps logged names at 1,024 characters (analyzer::tls::cert::MAX_STRING)",
    ),
];

fn reason(what: &str) -> &'static str {
    KNOWN
        .iter()
        .find(|(f, _)| what.contains(f))
        .map(|(_, r)| *r)
        .unwrap_or("UNEXPLAINED")
}

/// Prints each disagreement with its reason; fails on unexplained ones.
fn report(diffs: &[String]) {
    let mut unexplained = 0;
    for d in diffs {
        let r = reason(d);
        unexplained += usize::from(r == "UNEXPLAINED");
        eprintln!(
            "  differs: {d}
    reason: {r}"
        );
    }
    assert_eq!(
        unexplained, 0,
        "{unexplained} disagreements without a known reason"
    );
}

/// Connection key: file and the unordered pair of endpoints.
type Conn = (String, String, String);

fn conn(file: &str, a: &str, ap: &str, b: &str, bp: &str) -> Conn {
    let x = format!("{a}|{ap}");
    let y = format!("{b}|{bp}");
    let (lo, hi) = if x <= y { (x, y) } else { (y, x) };
    (file.to_string(), lo, hi)
}

fn ev_conn(file: &str, e: &Value) -> Conn {
    conn(
        file,
        e["src_ip"].as_str().unwrap_or(""),
        &e["src_port"].to_string(),
        e["dest_ip"].as_str().unwrap_or(""),
        &e["dest_port"].to_string(),
    )
}

/// Every TLS event of every corpus file that has an expectation, by connection.
struct Corpus {
    root: std::path::PathBuf,
    tls: HashMap<Conn, Vec<Value>>,
    quic: HashMap<Conn, Vec<Value>>,
}

fn load(files: impl IntoIterator<Item = String>) -> Option<Corpus> {
    let Some(root) = common::corpus() else {
        eprintln!("SKIP: ../shared/corpus not found (set SPANWATCH_CORPUS)");
        return None;
    };
    let mut tls: HashMap<Conn, Vec<Value>> = HashMap::new();
    let mut quic: HashMap<Conn, Vec<Value>> = HashMap::new();
    let mut seen = std::collections::BTreeSet::new();
    for f in files {
        if !seen.insert(f.clone()) {
            continue;
        }
        let run = common::run(&root.join(&f), &f);
        for e in common::resolve_chains(&run.events) {
            let map = match e["event_type"].as_str() {
                Some("tls") => &mut tls,
                Some("quic") => &mut quic,
                _ => continue,
            };
            map.entry(ev_conn(&f, &e)).or_default().push(e);
        }
    }
    Some(Corpus { root, tls, quic })
}

/// Our certificate objects (server or client chain) at a tshark certificate
/// row's position on its connection.
fn our_certs<'a>(c: &'a Corpus, r: &HashMap<String, String>) -> Vec<&'a Value> {
    let k = conn(
        &r["file"],
        &r["server_ip"],
        &r["server_port"],
        &r["client_ip"],
        &r["client_port"],
    );
    let idx: usize = r["cert_index"].parse().unwrap_or(0);
    c.tls
        .get(&k)
        .into_iter()
        .flatten()
        .flat_map(|e| [&e["tls"]["chain"], &e["tls"]["client_chain"]])
        .filter_map(|chain| chain.get(idx))
        .collect()
}

fn expected(name: &str) -> Option<Vec<HashMap<String, String>>> {
    let root = common::corpus()?;
    Some(common::tsv(&root.join("expected").join(name)))
}

#[test]
fn every_corpus_file_reads_without_panic_or_unbounded_state() {
    let Some(root) = common::corpus() else {
        eprintln!("SKIP: ../shared/corpus not found");
        return;
    };
    let catalog = common::tsv(&root.join("catalog.tsv"));
    let mut failures = Vec::new();
    let mut damaged = Vec::new();
    for row in &catalog {
        let f = &row["file"];
        let path = root.join(f);
        let started = std::time::Instant::now();
        let r = std::panic::catch_unwind(|| common::run(&path, f));
        match r {
            Ok(run) => {
                if let Some(e) = run.error {
                    damaged.push(e);
                }
                // each file finishes quickly even in a debug build (no hang)
                assert!(
                    started.elapsed().as_secs() < 60,
                    "{f} took {:?}",
                    started.elapsed()
                );
            }
            Err(_) => failures.push(f.clone()),
        }
    }
    eprintln!(
        "{} files read; {} reported damage:",
        catalog.len(),
        damaged.len()
    );
    for d in &damaged {
        eprintln!("  {d}");
    }
    assert!(failures.is_empty(), "panicked on: {failures:?}");
    assert!(catalog.len() >= 300);
}

#[test]
fn sni_matches_tshark_on_tcp_client_hellos() {
    let Some(rows) = expected("tshark-tls.tsv") else {
        eprintln!("SKIP: corpus not found");
        return;
    };
    let rows: Vec<_> = rows
        .into_iter()
        .filter(|r| r["transport"] == "tcp")
        .collect();
    let Some(c) = load(rows.iter().map(|r| r["file"].clone())) else {
        return;
    };
    let (mut same, mut tunnelled) = (0, 0);
    let mut diffs = BTreeMap::new();
    let mut considered = 0;
    for r in &rows {
        // tunnelled hellos (GRE, VXLAN, 6in4 …) are compared too: the decoder
        // follows tunnels to the innermost addresses, as tshark reports them
        if r["ip_layers"] != "1" {
            tunnelled += 1;
        }
        considered += 1;
        let k = conn(
            &r["file"],
            &r["src"],
            &r["srcport"],
            &r["dst"],
            &r["dstport"],
        );
        let ours: Vec<&str> = c
            .tls
            .get(&k)
            .map(|v| {
                v.iter()
                    .flat_map(|e| [&e["tls"]["sni"], &e["tls"]["second_client_hello"]["sni"]])
                    .map(|s| s.as_str().unwrap_or(""))
                    .collect()
            })
            .unwrap_or_default();
        if ours.contains(&r["sni"].as_str()) {
            same += 1;
        } else {
            diffs.insert(
                format!("{} frame {}", r["file"], r["frame"]),
                format!("tshark {:?}, spanwatch {:?}", r["sni"], ours),
            );
        }
    }
    let ratio = same as f64 / considered as f64;
    eprintln!(
        "SNI: {same}/{considered} TCP ClientHellos agree ({:.2} %), {tunnelled} of them tunnelled",
        ratio * 100.0
    );
    report(
        &diffs
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>(),
    );
    assert!(
        ratio >= 0.995,
        "SNI agreement {:.2} % < 99.5 %",
        ratio * 100.0
    );
    let _ = &c.root;
}

/// The server names of every ClientHello our `quic` events log on a connection.
fn quic_names<'a>(c: &'a Corpus, k: &Conn) -> Vec<&'a str> {
    c.quic
        .get(k)
        .into_iter()
        .flatten()
        .flat_map(|e| {
            let q = &e["quic"];
            std::iter::once(&q["sni"]).chain(
                q["other_client_hellos"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|h| &h["sni"]),
            )
        })
        .map(|s| s.as_str().unwrap_or(""))
        .collect()
}

#[test]
fn sni_matches_tshark_on_quic_client_hellos() {
    let Some(rows) = expected("tshark-tls.tsv") else {
        eprintln!("SKIP: corpus not found");
        return;
    };
    let rows: Vec<_> = rows
        .into_iter()
        .filter(|r| r["transport"] == "quic")
        .collect();
    let Some(c) = load(rows.iter().map(|r| r["file"].clone())) else {
        return;
    };
    // distinct (connection, SNI) pairs: tshark shows a ClientHello again on
    // each retransmission of its Initials
    let mut pairs = BTreeMap::new();
    for r in &rows {
        let k = conn(
            &r["file"],
            &r["src"],
            &r["srcport"],
            &r["dst"],
            &r["dstport"],
        );
        pairs
            .entry((k, r["sni"].clone()))
            .or_insert_with(|| format!("{} frame {}", r["file"], r["frame"]));
    }
    let mut diffs = Vec::new();
    for ((k, sni), at) in &pairs {
        let ours = quic_names(&c, k);
        if !ours.contains(&sni.as_str()) {
            diffs.push(format!("{at}: tshark {sni:?}, spanwatch {ours:?}"));
        }
    }
    let same = pairs.len() - diffs.len();
    let ratio = same as f64 / pairs.len() as f64;
    eprintln!(
        "QUIC SNI: {same}/{} distinct (connection, SNI) pairs agree ({:.2} %), from {} ClientHello rows",
        pairs.len(),
        ratio * 100.0,
        rows.len()
    );
    report(&diffs);
    assert!(pairs.len() >= 100, "the corpus has QUIC ClientHellos");
    assert!(
        ratio >= 0.99,
        "QUIC SNI agreement {:.2} % < 99 %",
        ratio * 100.0
    );
}

#[test]
fn quic_ja4_matches_foxio() {
    let Some(rows) = expected("ja4/ja4-client-consensus.tsv") else {
        eprintln!("SKIP: corpus not found");
        return;
    };
    let rows: Vec<_> = rows
        .into_iter()
        .filter(|r| r["transport"] == "udp" && r["ja4_foxio_rust"].starts_with('q'))
        .collect();
    let Some(c) = load(rows.iter().map(|r| r["file"].clone())) else {
        return;
    };
    let mut bad = Vec::new();
    for r in &rows {
        let k = conn(
            &r["file"],
            &r["client_ip"],
            &r["client_port"],
            &r["server_ip"],
            &r["server_port"],
        );
        let ours: Vec<&str> = c
            .quic
            .get(&k)
            .into_iter()
            .flatten()
            .filter_map(|e| e["quic"]["ja4"].as_str())
            .collect();
        if !ours.contains(&r["ja4_foxio_rust"].as_str()) {
            bad.push(format!(
                "JA4 {} {}:{}: FoxIO {}, spanwatch {ours:?}",
                r["file"], r["client_ip"], r["client_port"], r["ja4_foxio_rust"]
            ));
        }
    }
    eprintln!("QUIC JA4 compared on {} connections", rows.len());
    report(&bad);
    assert!(!rows.is_empty());
}

#[test]
fn certificate_hashes_match_tshark() {
    let Some(rows) = expected("tshark-certs.tsv") else {
        eprintln!("SKIP: corpus not found");
        return;
    };
    let rows: Vec<_> = rows
        .into_iter()
        .filter(|r| r["transport"] == "tcp" && r["decrypted_by_tshark"] != "Y")
        .collect();
    let Some(c) = load(rows.iter().map(|r| r["file"].clone())) else {
        return;
    };
    let mut same = 0;
    let mut diffs = Vec::new();
    for r in &rows {
        let idx = &r["cert_index"];
        let ours: Vec<String> = our_certs(&c, r)
            .iter()
            .filter_map(|x| x["sha256"].as_str().map(String::from))
            .collect();
        if ours.contains(&r["sha256"]) {
            same += 1;
        } else {
            diffs.push(format!(
                "{} frame {} cert {}: tshark {}, spanwatch {:?}",
                r["file"], r["frame"], idx, r["sha256"], ours
            ));
        }
    }
    let ratio = same as f64 / rows.len() as f64;
    eprintln!(
        "certificates: {same}/{} agree ({:.2} %)",
        rows.len(),
        ratio * 100.0
    );
    report(&diffs);
    assert!(
        ratio >= 0.995,
        "certificate agreement {:.2} % < 99.5 %",
        ratio * 100.0
    );
}

#[test]
fn certificate_names_match_rfc4514() {
    let Some(rows) = expected("tshark-certs.tsv") else {
        eprintln!("SKIP: corpus not found");
        return;
    };
    let rows: Vec<_> = rows
        .into_iter()
        .filter(|r| {
            r["transport"] == "tcp"
                && r["decrypted_by_tshark"] != "Y"
                && !r["subject_rfc4514"].starts_with("openssl:")
                && !r["subject_rfc4514"].starts_with("PARSE-ERROR")
        })
        .collect();
    let Some(c) = load(rows.iter().map(|r| r["file"].clone())) else {
        return;
    };
    let mut same = 0;
    let mut diffs = Vec::new();
    for r in &rows {
        let idx = &r["cert_index"];
        let found = our_certs(&c, r).iter().any(|x| {
            x["subject_rfc4514"] == r["subject_rfc4514"].as_str()
                && x["issuer_rfc4514"] == r["issuer_rfc4514"].as_str()
        });
        if found {
            same += 1;
        } else {
            diffs.push(format!(
                "{} frame {} cert {}: expected {:?}",
                r["file"], r["frame"], idx, r["subject_rfc4514"]
            ));
        }
    }
    eprintln!("RFC 4514 names: {same}/{} agree", rows.len());
    report(&diffs);
    let ratio = same as f64 / rows.len() as f64;
    assert!(ratio >= 0.99, "name agreement {:.2} %", ratio * 100.0);
}

#[test]
fn ja3_matches_tshark_and_ja4_matches_foxio() {
    let (Some(tls_rows), Some(ja4_rows)) = (
        expected("tshark-tls.tsv"),
        expected("ja4/ja4-client-consensus.tsv"),
    ) else {
        eprintln!("SKIP: corpus not found");
        return;
    };
    let tls_rows: Vec<_> = tls_rows
        .into_iter()
        .filter(|r| r["transport"] == "tcp" && !r["ja3"].is_empty())
        .collect();
    let ja4_rows: Vec<_> = ja4_rows
        .into_iter()
        .filter(|r| r["transport"] == "tcp")
        .collect();
    let files = tls_rows.iter().chain(&ja4_rows).map(|r| r["file"].clone());
    let Some(c) = load(files) else { return };
    let mut bad = Vec::new();
    let mut partial = Vec::new();
    for r in &tls_rows {
        // tshark hashes whatever it dissected of a malformed ClientHello; a JA3
        // string without its five fields is such a partial parse, not a JA3.
        if r["ja3_full"].split(',').count() != 5 {
            partial.push(format!(
                "{} frame {}: {:?}",
                r["file"], r["frame"], r["ja3_full"]
            ));
            continue;
        }
        let k = conn(
            &r["file"],
            &r["src"],
            &r["srcport"],
            &r["dst"],
            &r["dstport"],
        );
        let ours: Vec<&str> = c
            .tls
            .get(&k)
            .into_iter()
            .flatten()
            .flat_map(|e| {
                [
                    &e["tls"]["ja3"]["hash"],
                    &e["tls"]["second_client_hello"]["ja3"]["hash"],
                ]
            })
            .filter_map(|h| h.as_str())
            .collect();
        if !ours.contains(&r["ja3"].as_str()) {
            bad.push(format!(
                "JA3 {} frame {}: tshark {} ({}), spanwatch {:?}",
                r["file"], r["frame"], r["ja3"], r["ja3_full"], ours
            ));
        }
    }
    let mut ja4_checked = 0;
    for r in &ja4_rows {
        let k = conn(
            &r["file"],
            &r["client_ip"],
            &r["client_port"],
            &r["server_ip"],
            &r["server_port"],
        );
        let ours: Vec<&str> = c
            .tls
            .get(&k)
            .into_iter()
            .flatten()
            .filter_map(|e| e["tls"]["ja4"].as_str())
            .collect();
        ja4_checked += 1;
        if !ours.contains(&r["ja4_foxio_rust"].as_str()) {
            bad.push(format!(
                "JA4 {} {}:{}: FoxIO {}, spanwatch {:?}",
                r["file"], r["client_ip"], r["client_port"], r["ja4_foxio_rust"], ours
            ));
        }
    }
    eprintln!(
        "JA3 checked on {} ClientHellos, JA4 on {ja4_checked} connections; not compared (tshark's partial parse of a malformed hello):",
        tls_rows.len() - partial.len()
    );
    for p in &partial {
        eprintln!("  {p}");
    }
    for b in &bad {
        eprintln!("  {b}");
    }
    assert!(bad.is_empty(), "{} fingerprint disagreements", bad.len());
}
