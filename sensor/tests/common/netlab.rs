//! A network lab for live-capture tests: a namespace with a veth pair,
//! captures replayed into one end with tcpreplay, `spanwatch live` on the
//! other. Needs root, `ip` and `tcpreplay`; skips with a message otherwise.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn available() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    let tools = ["ip", "tcpreplay"].iter().all(|t| {
        Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    });
    if !(root && tools) {
        eprintln!("SKIP: live tests need root, ip and tcpreplay (root={root}, tools={tools})");
    }
    root && tools
}

/// A namespace with a veth pair `va` (replay) — `vb` (capture); deleted on drop.
pub struct Lab {
    pub ns: String,
    pub child: Option<Child>,
    pub dir: PathBuf,
    /// Where spanwatch writes its events (`-o`).
    pub output: PathBuf,
    /// The configuration names the outputs (no `-o`; `output` is its file).
    pub own_outputs: bool,
}

impl Lab {
    pub fn new(name: &str) -> Option<Lab> {
        if !available() {
            return None;
        }
        let ns = format!("swt-{}-{name}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &ns])
            .stderr(Stdio::null())
            .status();
        let run = |args: &[&str]| {
            let ok = Command::new("ip")
                .args(["netns", "exec", &ns])
                .args(args)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(ok, "ip netns exec {args:?}");
        };
        if !Command::new("ip")
            .args(["netns", "add", &ns])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
        {
            eprintln!("SKIP: cannot create a network namespace");
            return None;
        }
        let dir = std::env::temp_dir().join(&ns);
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let lab = Lab {
            ns: ns.clone(),
            child: None,
            output: dir.join("events.json"),
            dir,
            own_outputs: false,
        };
        // no IPv6 autoconfiguration chatter (router solicitations, MLD) on the wire
        run(&["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"]);
        run(&["sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1"]);
        run(&[
            "ip", "link", "add", "va", "type", "veth", "peer", "name", "vb",
        ]);
        run(&["ip", "link", "set", "va", "up"]);
        run(&["ip", "link", "set", "vb", "up"]);
        run(&["ip", "link", "set", "lo", "up"]);
        Some(lab)
    }

    pub fn out(&self) -> PathBuf {
        self.output.clone()
    }

    pub fn start(&mut self, config: &Path, workers: usize) {
        self.start_with(config, workers, &[]);
    }

    pub fn start_with(&mut self, config: &Path, workers: usize, extra: &[&str]) {
        let w = workers.to_string();
        let mut args = vec!["-i", "vb", "--workers", &w];
        args.extend(extra);
        self.start_args(config, &args);
    }

    /// `spanwatch live` with these arguments besides the configuration,
    /// the output and a 1 s stats interval.
    pub fn start_args(&mut self, config: &Path, extra: &[&str]) {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                env!("CARGO_BIN_EXE_spanwatch"),
                "live",
                "--stats-interval",
                "1s",
                "-c",
            ])
            .arg(config)
            .args(if self.own_outputs {
                Vec::new()
            } else {
                vec!["-o".into(), self.out().into_os_string()]
            })
            .args(extra)
            .current_dir(super::workspace())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("stderr")).expect("stderr file"))
            .spawn()
            .expect("spanwatch live starts");
        self.child = Some(child);
        self.wait_for("capturing on");
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    /// Replays a capture into the veth; the packets tcpreplay sent (frames
    /// recorded larger than the veth's MTU are not).
    pub fn replay(&self, capture: &str) -> u64 {
        self.replay_at(capture, Some("20"))
    }

    /// Replays at `mbps`, or with the capture's own timing (what round-trip
    /// measurements need).
    pub fn replay_at(&self, capture: &str, mbps: Option<&str>) -> u64 {
        let rate = mbps.map(|m| ["--mbps", m]);
        let out = tcpreplay(&self.ns, capture, rate.iter().flatten().copied())
            .stderr(Stdio::null())
            .output()
            .expect("tcpreplay runs");
        assert!(out.status.success(), "tcpreplay {capture}");
        std::thread::sleep(Duration::from_millis(500));
        let text = String::from_utf8_lossy(&out.stdout);
        text.split("Actual: ")
            .nth(1)
            .and_then(|t| t.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("tcpreplay said: {text}"))
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.pid().to_string();
        assert!(Command::new("kill")
            .args([sig, &pid])
            .status()
            .map(|s| s.success())
            .unwrap_or(false));
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGTERM and wait (bounded): how it exited.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("-TERM");
        let mut child = self.child.take().expect("running");
        let t = Instant::now();
        loop {
            if let Some(s) = child.try_wait().expect("wait") {
                return s;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "spanwatch live did not stop"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (bounded) for the process to end, however it ended.
    pub fn reap(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let t = Instant::now();
        loop {
            if let Some(s) = child.try_wait().expect("wait") {
                return s;
            }
            assert!(t.elapsed() < Duration::from_secs(20), "did not end");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, wait (bounded), and the events written.
    pub fn stop(&mut self) -> Vec<Value> {
        let status = self.terminate();
        assert!(status.success(), "exit status {status}: {}", self.stderr());
        events(&self.out())
    }

    /// Waits (bounded) until spanwatch has said `what` on stderr.
    pub fn wait_for(&self, what: &str) {
        let t = Instant::now();
        while !self.stderr().contains(what) {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "no {what:?} on stderr: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The events in a file, every line whole JSON.
/// tcpreplay onto the lab's `va` in namespace `ns`, with `opts`.
pub fn tcpreplay<'a>(ns: &str, capture: &str, opts: impl IntoIterator<Item = &'a str>) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, "tcpreplay", "-q", "-i", "va"])
        .args(opts)
        .arg(super::workspace().join(capture));
    c
}

pub fn events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("events written")
        .lines()
        .map(|l| serde_json::from_str(l).expect("whole JSON lines"))
        .collect()
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn lab_config() -> PathBuf {
    super::workspace().join("pcaps/lab/site.toml")
}
