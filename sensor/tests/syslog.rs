//! The syslog output against a real rsyslog (Debian's, started here on
//! loopback ports in a temp dir, stopped by PID; `scripts/deps` installs
//! it): every alert and host_activity event arrives once, in order, its
//! JSON byte-identical to the file output's line, over TCP (octet counting)
//! and UDP; the header says who, what and how bad; an output whose far end
//! is away counts what it could not deliver and fails the run.

mod common;

use common::spanwatch;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn rsyslogd() -> Option<PathBuf> {
    common::installed(&["/usr/sbin/rsyslogd", "/sbin/rsyslogd"], "rsyslog")
}

fn free_tcp() -> u16 {
    common::free_tcp_port()
}

fn free_udp() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port()
}

/// rsyslogd with its own configuration; killed by PID when dropped.
struct Rsyslog {
    child: Child,
    dir: PathBuf,
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// rsyslogd on `conf` (its files in `dir`), listening on TCP `port`.
fn start_conf(bin: &Path, dir: &Path, conf: &str, port: u16) -> Rsyslog {
    std::fs::write(dir.join("rsyslog.conf"), conf).expect("conf");
    let child = Command::new(bin)
        .args(["-n", "-f"])
        .arg(dir.join("rsyslog.conf"))
        .arg("-i")
        .arg(dir.join("rsyslog.pid"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("rsyslogd starts");
    let r = Rsyslog {
        child,
        dir: dir.to_path_buf(),
    };
    common::wait_listening(port, "rsyslogd");
    r
}

fn start(bin: &Path, dir: &Path, tcp: u16, udp: u16) -> Rsyslog {
    std::fs::create_dir_all(dir.join("work")).expect("dir");
    let conf = format!(
        r#"global(workDirectory="{d}/work" maxMessageSize="256k")
module(load="imtcp")
module(load="imudp")
template(name="msg" type="string" string="%pri% %app-name% %msgid% %msg%\n")
ruleset(name="tcp") {{ action(type="omfile" file="{d}/tcp.log" template="msg") }}
ruleset(name="udp") {{ action(type="omfile" file="{d}/udp.log" template="msg") }}
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="tcp")
input(type="imudp" address="127.0.0.1" port="{udp}" ruleset="udp")
"#,
        d = dir.display()
    );
    start_conf(bin, dir, &conf, tcp)
}

/// Lines of `path` once it holds `n` of them (or the wait is over).
fn lines_when(path: &Path, n: usize) -> Vec<String> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let v: Vec<String> = text.lines().map(String::from).collect();
        if v.len() >= n || Instant::now() > until {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn every_alert_reaches_rsyslog_once_in_order_as_the_file_has_it() {
    let Some(bin) = rsyslogd() else { return };
    let dir = std::env::temp_dir().join(format!("sw-syslog-{}", std::process::id()));
    let (tcp, udp) = (free_tcp(), free_udp());
    let _r = start(&bin, &dir, tcp, udp);
    let all = dir.join("all.json");
    let site = common::lab_site(
        &dir,
        &format!(
            "[[output]]\ntype = \"file\"\npath = \"{}\"\n\
[[output]]\ntype = \"syslog\"\naddress = \"tcp://127.0.0.1:{tcp}\"\nevent_types = [\"alert\", \"host_activity\"]\n\
[[output]]\ntype = \"syslog\"\naddress = \"udp://127.0.0.1:{udp}\"\nevent_types = [\"alert\", \"host_activity\"]\n",
            all.display()
        ),
    );
    let (code, err) = common::read_lab(&site);
    assert_eq!(code, 0, "{err}");
    let want = common::event_lines(&all, &["alert", "host_activity"]);
    assert!(want.len() >= 10, "{}", want.len());
    for (name, file) in [("tcp", "tcp.log"), ("udp", "udp.log")] {
        let got = lines_when(&dir.join(file), want.len());
        assert_eq!(got.len(), want.len(), "{name}: every event once");
        for (g, w) in got.iter().zip(&want) {
            let mut parts = g.splitn(4, ' ');
            let (pri, app, msgid, msg) = (
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
            );
            assert_eq!(
                msg.trim_start(),
                w,
                "{name}: the JSON as the file has it, in order"
            );
            assert_eq!(app, "spanwatch");
            let v: serde_json::Value = serde_json::from_str(w).expect("json");
            assert_eq!(
                msgid,
                v["event_type"].as_str().unwrap_or(""),
                "MSGID is the event type"
            );
            let want_pri = match (v["event_type"].as_str(), v["alert"]["severity"].as_u64()) {
                (Some("alert"), Some(1)) => 130,
                (Some("alert"), Some(2)) => 131,
                (Some("alert"), Some(3)) => 132,
                (Some("alert"), _) => 133,
                _ => 134,
            };
            assert_eq!(pri, want_pri.to_string(), "local0 and the alert's severity");
        }
    }
}

#[test]
fn an_output_whose_far_end_is_away_counts_what_it_lost_and_fails_the_run() {
    let dir = std::env::temp_dir().join(format!("sw-syslog-away-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let site = dir.join("site.toml");
    // a port nobody listens on
    let port = free_tcp();
    std::fs::write(
        &site,
        format!("[[output]]\ntype = \"syslog\"\naddress = \"tcp://127.0.0.1:{port}\"\nevent_types = [\"alert\"]\n"),
    )
    .expect("site");
    let started = Instant::now();
    let (code, _, err) = spanwatch(&[
        "read",
        "-q",
        "-c",
        site.to_str().expect("utf-8"),
        common::LAB_CAPTURES[0],
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("events could not be written"), "{err}");
    assert!(err.contains("not delivered by a network output"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the drain has a deadline"
    );
}

/// A test CA and a certificate for 127.0.0.1 it signed (openssl).
fn certificates(dir: &Path) {
    let sh = |cmd: &str| {
        let ok = Command::new("sh")
            .args(["-c", cmd])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "{cmd}");
    };
    sh("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=spanwatch-test-ca -keyout ca.key -out ca.pem");
    sh("openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr");
    sh("printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > ext.cnf");
    sh("openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext.cnf -out server.pem");
}

#[test]
fn alerts_over_tls_reach_rsyslog_with_the_certificate_checked() {
    let Some(bin) = rsyslogd() else { return };
    let dir = std::env::temp_dir().join(format!("sw-syslog-tls-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("work")).expect("dir");
    certificates(&dir);
    let port = free_tcp();
    let d = dir.display();
    let conf = format!(
        r#"global(workDirectory="{d}/work" maxMessageSize="256k"
  DefaultNetstreamDriver="gtls" DefaultNetstreamDriverCAFile="{d}/ca.pem"
  DefaultNetstreamDriverCertFile="{d}/server.pem" DefaultNetstreamDriverKeyFile="{d}/server.key")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
template(name="msg" type="string" string="%msg%\n")
ruleset(name="tls") {{ action(type="omfile" file="{d}/tls.log" template="msg") }}
input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="tls")
"#
    );
    let _r = start_conf(&bin, &dir, &conf, port);
    let all = dir.join("all.json");
    let site = common::lab_site(
        &dir,
        &format!(
            "[[output]]\ntype = \"file\"\npath = \"{}\"\n\
[[output]]\ntype = \"syslog\"\naddress = \"tls://127.0.0.1:{port}\"\nca_file = \"{d}/ca.pem\"\nevent_types = [\"alert\"]\n",
            all.display()
        ),
    );
    let (code, err) = common::read_lab(&site);
    assert_eq!(code, 0, "{err}");
    let want = common::event_lines(&all, &["alert"]);
    assert!(!want.is_empty());
    let got = lines_when(&dir.join("tls.log"), want.len());
    let got: Vec<String> = got.iter().map(|l| l.trim_start().to_string()).collect();
    assert_eq!(got, want, "every alert, once, in order, over TLS");
    // a certificate the output does not trust: nothing is sent, all counted
    let site = common::lab_site(
        &dir,
        &format!("[[output]]\ntype = \"syslog\"\naddress = \"tls://127.0.0.1:{port}\"\nevent_types = [\"alert\"]\n"),
    );
    let (code, err) = common::read_lab(&site);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("{} events could not be written", want.len())),
        "{err}"
    );
}
