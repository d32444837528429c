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
        load(&self.args.common)
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
