//! What `spanwatch live`'s run loop asks of the process: signals, the
//! configuration files, the capture threads' counters, standard error.

use std::sync::Arc;
use std::time::Instant;

use spanwatch::config::SiteConfig;
use spanwatch::detect::RuleSet;

use super::{load, wall_clock, LiveArgs};

/// What the live run loop asks of the process: signals, the configuration
/// files, the output file, the capture threads' counters, standard error.
pub struct LiveHost<'a> {
    pub args: &'a LiveArgs,
    pub started: Instant,
    pub term: Arc<std::sync::atomic::AtomicBool>,
    pub hup: Arc<std::sync::atomic::AtomicBool>,
    pub ifstats: Vec<Arc<spanwatch::capture::live::IfaceStats>>,
    /// The site configuration the sensor started with (what a reload cannot
    /// change is compared with it).
    pub at_start: Arc<SiteConfig>,
}

/// The settings a reload does not apply that differ between `old` and
/// `new`: they are read at start.
pub fn start_only_changes(old: &SiteConfig, new: &SiteConfig) -> Vec<&'static str> {
    let sizes = |s: &SiteConfig| (s.flow.max_flows, s.flow.stream_memcap_mib);
    [
        ("[capture]", old.capture != new.capture),
        ("[[output]]", old.outputs != new.outputs),
        (
            "[flow] max_flows / stream_memcap_mib",
            sizes(old) != sizes(new),
        ),
        (
            "[ledger] database",
            old.ledger.database != new.ledger.database,
        ),
        ("[metrics]", old.metrics != new.metrics),
    ]
    .into_iter()
    .filter_map(|(what, changed)| changed.then_some(what))
    .collect()
}

impl spanwatch::pipeline::live::Host for LiveHost<'_> {
    fn now(&mut self) -> spanwatch::time::Timestamp {
        wall_clock()
    }
    fn uptime(&mut self) -> std::time::Duration {
        self.started.elapsed()
    }
    fn stop_requested(&mut self) -> bool {
        self.term.load(std::sync::atomic::Ordering::Relaxed)
    }
    fn take_reload(&mut self) -> bool {
        self.hup.swap(false, std::sync::atomic::Ordering::Relaxed)
    }
    fn load(&mut self) -> Result<(SiteConfig, RuleSet), String> {
        let (site, rules) = load(&self.args.common)?;
        let changed = start_only_changes(&self.at_start, &site);
        if !changed.is_empty() {
            eprintln!(
                "spanwatch: SIGHUP: {} changed: read at start, applied at the next restart",
                changed.join(", ")
            );
        }
        Ok((site, rules))
    }
    fn interfaces(&mut self) -> Vec<spanwatch::stats::InterfaceStats> {
        use std::sync::atomic::Ordering::Relaxed;
        self.ifstats
            .iter()
            .map(|s| spanwatch::stats::InterfaceStats {
                name: s.name.clone(),
                packets: s.packets.load(Relaxed),
                bytes: s.bytes.load(Relaxed),
                kernel_dropped: s.kernel_dropped.load(Relaxed),
                if_dropped: s.if_dropped.load(Relaxed),
                queue_dropped: s.queue_dropped.load(Relaxed),
            })
            .collect()
    }
    fn notice(&mut self, n: spanwatch::pipeline::live::Notice) {
        use spanwatch::pipeline::live::Notice;
        match n {
            Notice::Reloaded => {
                eprintln!("spanwatch: SIGHUP: configuration and signatures reloaded")
            }
            Notice::ReloadFailed(e) => eprintln!(
                "spanwatch: SIGHUP: {e}; keeping the previous configuration and signatures"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a reload cannot apply is named when it changed, and only then.
    #[test]
    fn a_reload_names_the_settings_read_at_start_that_changed() {
        let parse = |t: &str| SiteConfig::parse("t", t).expect("parses");
        let old = parse("[flow]\nmax_flows = 10\n[flow.timeouts]\nudp = \"5s\"\n");
        let same_sizes = parse("[flow]\nmax_flows = 10\n[flow.timeouts]\nudp = \"9s\"\n[allow]\nnames = [\"a.example\"]\n");
        assert!(start_only_changes(&old, &same_sizes).is_empty());
        let new = parse("[flow]\nmax_flows = 20\n[capture]\nbpf = \"tcp\"\n[ledger]\ndatabase = \"/tmp/l.db\"\n");
        assert_eq!(
            start_only_changes(&old, &new),
            [
                "[capture]",
                "[flow] max_flows / stream_memcap_mib",
                "[ledger] database"
            ]
        );
    }
}
