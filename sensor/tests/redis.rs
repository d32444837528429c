//! The Redis output against a real redis-server (Debian's, started here on
//! a loopback port in a temp dir, stopped by PID; `scripts/deps` installs
//! it): stream and list modes hold every event as the file output has it;
//! a server that comes up late gets everything the queue held; a server
//! that never comes costs an exact, reported count.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn free_port() -> u16 {
    common::free_tcp_port()
}

/// redis-server on `port`, its files in `dir`; killed by PID when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(bin: &Path, dir: &Path, port: u16) -> Server {
    std::fs::create_dir_all(dir).expect("dir");
    let child = Command::new(bin)
        .args(common::redis_server_args(port, dir))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts");
    let s = Server(child);
    common::wait_listening(port, "redis-server");
    s
}

fn conn(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/0"))
        .and_then(|c| c.get_connection())
        .expect("redis connection")
}

fn need() -> Option<PathBuf> {
    common::installed(
        &["/usr/bin/redis-server", "/usr/sbin/redis-server"],
        "redis-server",
    )
}

#[test]
fn stream_and_list_hold_every_event_as_the_file_has_it() {
    let Some(bin) = need() else { return };
    let dir = std::env::temp_dir().join(format!("sw-redis-{}", std::process::id()));
    let port = free_port();
    let _s = start(&bin, &dir.join("db"), port);
    let all = dir.join("all.json");
    let site = common::lab_site(
        &dir,
        &format!(
            "[[output]]\ntype = \"file\"\npath = \"{}\"\n\
[[output]]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:{port}/0\"\nmode = \"stream\"\nkey = \"sw-stream\"\nevent_types = [\"alert\", \"host_activity\"]\n\
[[output]]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:{port}/0\"\nmode = \"list\"\nkey = \"sw-list\"\n",
            all.display()
        ),
    );
    let (code, err) = common::read_lab(&site);
    assert_eq!(code, 0, "{err}");
    let mut c = conn(port);
    // the list has no event_types: it holds everything the file does
    let every = common::event_lines(&all, &[]);
    let list: Vec<String> = redis::cmd("LRANGE")
        .arg("sw-list")
        .arg(0)
        .arg(-1)
        .query(&mut c)
        .expect("lrange");
    assert_eq!(list, every, "the list holds every event, in order");
    let want = common::event_lines(&all, &["alert", "host_activity"]);
    assert!(want.len() >= 10);
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg("sw-stream")
        .arg("-")
        .arg("+")
        .query(&mut c)
        .expect("xrange");
    let got: Vec<String> = entries
        .into_iter()
        .map(|(_, fields)| {
            assert_eq!(fields.len(), 1);
            assert_eq!(fields[0].0, "event");
            fields[0].1.clone()
        })
        .collect();
    assert_eq!(
        got, want,
        "the stream holds the alerts and host_activity, in order"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_late_server_gets_what_the_queue_held_and_an_absent_one_an_exact_loss() {
    let Some(bin) = need() else { return };
    let dir = std::env::temp_dir().join(format!("sw-redis-late-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let port = free_port();
    let all = dir.join("all.json");
    let outputs = format!(
        "[[output]]\ntype = \"file\"\npath = \"{}\"\n\
[[output]]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:{port}/0\"\nmode = \"list\"\nkey = \"late\"\nevent_types = [\"alert\"]\n",
        all.display()
    );
    let site = common::lab_site(&dir, &outputs);
    // the server comes up a second after spanwatch starts: the run ends at
    // once, and its drain delivers what the queue held
    let db = dir.join("db");
    let bin2 = bin.clone();
    let starter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1000));
        start(&bin2, &db, port)
    });
    let (code, err) = common::read_lab(&site);
    let server = starter.join().expect("server");
    assert_eq!(code, 0, "{err}");
    let want = common::event_lines(&all, &["alert"]);
    let got: Vec<String> = redis::cmd("LRANGE")
        .arg("late")
        .arg(0)
        .arg(-1)
        .query(&mut conn(port))
        .expect("lrange");
    assert_eq!(got, want, "nothing lost while the queue held");
    drop(server);
    // no server at all: every alert is lost, and the count says so exactly
    let (code, err) = common::read_lab(&site);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("{} events could not be written", want.len())),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
