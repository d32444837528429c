//! The Debian package: built by `scripts/package` (cargo-deb), its contents
//! and conffiles, installed with `dpkg -i` (as root: CI runs on a throw-away
//! machine), the shipped configuration accepted by `spanwatch check`, its
//! user made, the unit verified (`systemd-analyze verify`) and hardened
//! (`systemd-analyze security --offline=yes`: exposure at most 2.5), then
//! purged.

mod common;

use std::process::{Command, Output, Stdio};

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .current_dir(common::workspace())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn the_package_installs_a_checked_config_and_a_hardened_unit() {
    let root = nix::unistd::Uid::effective().is_root();
    let tools = ["cargo-deb", "dpkg", "dpkg-deb", "systemd-analyze"]
        .iter()
        .all(|t| have(t));
    if !(root && tools) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must build and install the package (root, scripts/deps installs cargo-deb)"
        );
        eprintln!("SKIP: needs root, cargo-deb, dpkg and systemd-analyze");
        return;
    }
    let built = run("scripts/package", &[]);
    assert!(built.status.success(), "{}", text(&built));
    let deb = String::from_utf8_lossy(&built.stdout)
        .lines()
        .last()
        .expect("the package's path")
        .trim()
        .to_string();
    let contents = text(&run("dpkg-deb", &["-c", &deb]));
    for f in [
        "./usr/bin/spanwatch",
        "./etc/spanwatch/spanwatch.toml",
        "./lib/systemd/system/spanwatch.service",
        "./etc/logrotate.d/spanwatch",
        "./usr/share/spanwatch/signatures/ngrok.toml",
        "./usr/share/doc/spanwatch/README.md",
    ] {
        assert!(contents.contains(f), "{f} missing:\n{contents}");
    }
    let conffiles = text(&run("dpkg-deb", &["-I", &deb, "conffiles"]));
    assert!(
        conffiles.contains("/etc/spanwatch/spanwatch.toml"),
        "{conffiles}"
    );
    let installed = run("dpkg", &["-i", &deb]);
    assert!(installed.status.success(), "{}", text(&installed));
    let checks = || {
        let check = run(
            "/usr/bin/spanwatch",
            &["check", "--config", "/etc/spanwatch/spanwatch.toml"],
        );
        assert!(check.status.success(), "{}", text(&check));
        let user = run("id", &["spanwatch"]);
        assert!(user.status.success(), "the service's user: {}", text(&user));
        let unit = "/lib/systemd/system/spanwatch.service";
        let verify = run("systemd-analyze", &["verify", unit]);
        assert!(verify.status.success(), "{}", text(&verify));
        let sec = text(&run(
            "systemd-analyze",
            &["security", "--offline=yes", unit],
        ));
        let exposure: f64 = sec
            .lines()
            .find_map(|l| {
                l.split("Overall exposure level for spanwatch.service:")
                    .nth(1)
            })
            .and_then(|r| r.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level:\n{sec}"));
        eprintln!("systemd-analyze security exposure: {exposure}");
        assert!(exposure <= 2.5, "{sec}");
    };
    let outcome = std::panic::catch_unwind(checks);
    let purged = run("dpkg", &["--purge", "spanwatch"]);
    assert!(purged.status.success(), "{}", text(&purged));
    assert!(!std::path::Path::new("/usr/bin/spanwatch").exists());
    if let Err(e) = outcome {
        std::panic::resume_unwind(e);
    }
}
