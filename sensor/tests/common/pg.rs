//! A real PostgreSQL server for tests, from Debian's `postgresql` package:
//! `initdb` in a temp dir, the server on a loopback port and a Unix socket
//! in that dir, run as the `postgres` user, stopped by PID at the end.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Pg {
    pub dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
    uid: u32,
    gid: u32,
    child: Option<Child>,
}

/// The newest installed server's programs.
fn bin_dir() -> Option<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists() && p.join("postgres").exists())
        .collect();
    v.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    v.pop()
}

impl Pg {
    /// Makes and starts a cluster with a `spanwatch` role and database; `None`
    /// (after saying why) without the package or root.
    pub fn start(name: &str) -> Option<Pg> {
        let Some(bin) = bin_dir() else {
            eprintln!("SKIP: PostgreSQL server not installed (scripts/deps installs postgresql)");
            return None;
        };
        let Ok(Some(user)) = nix::unistd::User::from_name("postgres") else {
            eprintln!("SKIP: no postgres user");
            return None;
        };
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: the PostgreSQL tests run the server as postgres: need root");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("swpg-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("pg dir");
        std::os::unix::fs::chown(&dir, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
            .expect("chown");
        let mut pg = Pg {
            port: super::free_tcp_port(),
            dir,
            bin,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            child: None,
        };
        let ok = pg
            .as_postgres(&pg.bin.join("initdb"))
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(pg.data())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "initdb");
        pg.run();
        pg.psql("CREATE ROLE spanwatch LOGIN");
        pg.psql("CREATE DATABASE spanwatch OWNER spanwatch");
        Some(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn as_postgres(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        c.uid(self.uid).gid(self.gid).env("LC_ALL", "C");
        c
    }

    /// Starts the server (again) and waits (bounded) until it answers.
    pub fn run(&mut self) {
        let log = std::fs::File::create(self.dir.join("server.log")).expect("log");
        let child = self
            .as_postgres(&self.bin.join("postgres"))
            .arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.dir)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("postgres starts");
        self.child = Some(child);
        let t = Instant::now();
        while !self.try_psql("SELECT 1") {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "PostgreSQL did not start: {}",
                std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server by PID (fast shutdown) and waits (bounded).
    pub fn halt(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-INT", &c.id().to_string()])
            .status();
        let t = Instant::now();
        while c.try_wait().ok().flatten().is_none() {
            if t.elapsed() > Duration::from_secs(20) {
                let _ = c.kill();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn try_psql(&self, sql: &str) -> bool {
        Command::new("psql")
            .args(["-X", "-q", "-h"])
            .arg(&self.dir)
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-c", sql])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    pub fn psql(&self, sql: &str) {
        assert!(self.try_psql(sql), "psql {sql}");
    }

    /// The database over TCP on loopback.
    pub fn url(&self) -> String {
        format!("postgresql://spanwatch@127.0.0.1:{}/spanwatch", self.port)
    }

    /// The database over the Unix socket (reachable from any network
    /// namespace).
    pub fn socket_url(&self) -> String {
        let host = self.dir.display().to_string().replace('/', "%2F");
        format!("postgresql://spanwatch@{host}:{}/spanwatch", self.port)
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.halt();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
