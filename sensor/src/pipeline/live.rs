//! The live run loop: batches from the capture threads into the pipeline,
//! capture time kept moving on an idle link, periodic `stats` and ledger
//! events, reload and reopen on request, and an orderly end.
//!
//! Everything the loop asks of the world (the clock, stop and reload requests,
//! new configuration, what to tell the operator) goes through
//! [`Host`], so the loop is tested with a manual clock and no network (see the
//! tests below); `main` wires signals, files and standard error to it.

use std::sync::Arc;

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::writer::{StatsRequest, Writer};
use super::Pipeline;
use crate::capture::Frames;
use crate::config::SiteConfig;
use crate::detect::RuleSet;
use crate::sink::Sink;
use crate::stats::InterfaceStats;
use crate::time::{Duration, Timestamp};

/// How long the loop waits for a batch before moving capture time on.
pub const IDLE_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

/// What the loop tells the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Reloaded,
    /// The new configuration or signatures were refused; the old ones stay.
    ReloadFailed(String),
}

/// The world as the loop sees it.
pub trait Host {
    /// Wall-clock time: capture time on an idle link, and `stats` events.
    fn now(&mut self) -> Timestamp;
    /// Time since the sensor started (monotonic): stats intervals and uptime.
    fn uptime(&mut self) -> std::time::Duration;
    /// Has a stop been asked for (SIGINT, SIGTERM)?
    fn stop_requested(&mut self) -> bool;
    /// Has a reload been asked for (SIGHUP)? Taking it clears it.
    fn take_reload(&mut self) -> bool;
    /// The configuration and signatures to reload, or why they were refused.
    fn load(&mut self) -> Result<(SiteConfig, RuleSet), String>;
    /// The capture threads' counters, for `stats`.
    fn interfaces(&mut self) -> Vec<InterfaceStats>;
    fn notice(&mut self, n: Notice);
}

/// Runs until a stop is asked for or the capture threads are gone, writing a
/// `stats` event and the ledger every `stats_every`.
pub fn run<W, H>(p: &mut Pipeline<W>, rx: &Receiver<Frames>, host: &mut H, stats_every: Duration)
where
    W: Sink + 'static,
    H: Host,
{
    let every = std::time::Duration::from_nanos(stats_every.0.max(1) as u64);
    let mut next_stats = host.uptime() + every;
    loop {
        match rx.recv_timeout(IDLE_WAIT) {
            Ok(batch) => {
                p.frames(batch);
                if rx.is_empty() {
                    p.flush();
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                // an idle link: capture time goes on, idle flows still end
                p.clock(host.now());
                p.flush();
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if host.stop_requested() {
            break;
        }
        if host.take_reload() {
            reload(p, host);
        }
        if host.uptime() >= next_stats {
            next_stats = host.uptime() + every;
            p.stats(request(host, rx.len()));
            // the ledger, too, is reported periodically on a long-running sensor
            p.ledger("periodic");
        }
    }
}

/// Reloads both files (a bad one is reported and the old one kept) and
/// reopens the outputs (log rotation; a file that cannot be reopened is
/// reported in the log and the old one kept).
fn reload<W, H>(p: &mut Pipeline<W>, host: &mut H)
where
    W: Sink + 'static,
    H: Host,
{
    match host.load() {
        Ok((site, rules)) => {
            p.reload(Arc::new(site), Arc::new(rules));
            host.notice(Notice::Reloaded);
        }
        Err(e) => host.notice(Notice::ReloadFailed(e)),
    }
    p.reopen();
}

fn request<H: Host>(host: &mut H, queue_depth: usize) -> StatsRequest {
    StatsRequest {
        at: host.now(),
        uptime: host.uptime().as_secs(),
        interfaces: host.interfaces(),
        queue_depth,
        worker_dropped: Vec::new(),
    }
}

/// Once capture has stopped: what is still queued, every open flow's end,
/// the ledger and a last `stats` event; returns the writer, everything
/// written.
pub fn finish<W, H>(mut p: Pipeline<W>, rx: &Receiver<Frames>, host: &mut H) -> Writer<W>
where
    W: Sink + 'static,
    H: Host,
{
    while let Ok(batch) = rx.try_recv() {
        p.frames(batch);
    }
    p.end_flows();
    p.ledger("end_of_run");
    p.stats(request(host, 0));
    p.close()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{FileReader, Frames};
    use crate::pipeline::engine::EngineConfig;
    use crate::pipeline::Settings;

    /// A host with a clock that moves only when the loop asks for the time.
    struct Fake {
        uptime: std::time::Duration,
        /// Clock steps per `uptime` call.
        step: std::time::Duration,
        stop_after: u32,
        calls: u32,
        reload_at: Option<u32>,
        load_ok: bool,
        notices: Vec<Notice>,
    }

    impl Host for Fake {
        fn now(&mut self) -> Timestamp {
            Timestamp(1_700_000_000_000_000_000 + self.uptime.as_nanos() as i64)
        }
        fn uptime(&mut self) -> std::time::Duration {
            self.uptime += self.step;
            self.uptime
        }
        fn stop_requested(&mut self) -> bool {
            self.calls += 1;
            self.calls >= self.stop_after
        }
        fn take_reload(&mut self) -> bool {
            self.reload_at == Some(self.calls)
        }
        fn load(&mut self) -> Result<(SiteConfig, RuleSet), String> {
            if self.load_ok {
                let site = SiteConfig::parse("new.toml", "[sensor]\nname = \"reloaded\"\n")
                    .map_err(|e| e.to_string())?;
                Ok((site, crate::load::bundled().map_err(|e| e.to_string())?))
            } else {
                Err("new.toml:1:1: broken".into())
            }
        }
        fn interfaces(&mut self) -> Vec<InterfaceStats> {
            vec![InterfaceStats {
                name: "test0".into(),
                ..Default::default()
            }]
        }
        fn notice(&mut self, n: Notice) {
            self.notices.push(n);
        }
    }

    fn fake(stop_after: u32) -> Fake {
        Fake {
            uptime: std::time::Duration::ZERO,
            step: std::time::Duration::from_secs(1),
            stop_after,
            calls: 0,
            reload_at: None,
            load_ok: true,
            notices: Vec::new(),
        }
    }

    fn pipeline() -> Pipeline<Vec<u8>> {
        let s = Settings {
            workers: 2,
            engine: EngineConfig::default(),
            types: Default::default(),
            live: true,
            latency: true,
            defer: None,
            decode_ahead: None,
        };
        Pipeline::start(s, Vec::new()).expect("threads start")
    }

    /// The packets of a capture as the capture threads would hand them over.
    fn batches(name: &str) -> Vec<Frames> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../pcaps")
            .join(name);
        let mut r = FileReader::open(&path).expect("capture");
        let mut frames = Vec::new();
        while let Some(Ok(p)) = r.next_range() {
            frames.push(Frames {
                data: r.data().clone(),
                packets: vec![p],
            });
        }
        frames
    }

    fn lines(w: Writer<Vec<u8>>) -> Vec<serde_json::Value> {
        String::from_utf8(w.into_inner())
            .expect("utf-8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect()
    }

    #[test]
    fn stats_every_interval_and_every_packet_ends_in_a_flow() {
        let (tx, rx) = crossbeam_channel::bounded(1024);
        for b in batches("tls12-chain.pcap") {
            tx.send(b).expect("queued");
        }
        let mut p = pipeline();
        // one second a call to uptime: a stats event about every 3 s
        let mut host = fake(20);
        run(&mut p, &rx, &mut host, Duration::from_secs(3));
        drop(tx);
        let ev = lines(finish(p, &rx, &mut host));
        let stats: Vec<_> = ev.iter().filter(|e| e["event_type"] == "stats").collect();
        assert!(stats.len() >= 4, "{} stats events", stats.len());
        let last = stats.last().expect("a last stats event");
        assert_eq!(last["stats"]["interfaces"][0]["name"], "test0");
        assert!(last["stats"]["uptime"].as_u64().expect("uptime") >= 20);
        assert!(ev.iter().any(|e| e["event_type"] == "tls"));
        assert!(ev.iter().any(|e| e["event_type"] == "flow"));
    }

    #[test]
    fn reload_is_applied_or_reported_and_stop_ends_the_loop() {
        let (tx, rx) = crossbeam_channel::bounded::<Frames>(16);
        let mut p = pipeline();
        let mut host = fake(6);
        host.reload_at = Some(2);
        run(&mut p, &rx, &mut host, Duration::from_secs(3600));
        assert_eq!(host.notices, [Notice::Reloaded]);
        let ev = lines(finish(p, &rx, &mut host));
        // the last stats event names the sensor of the reloaded configuration
        let last = ev.last().expect("events");
        assert_eq!(
            (&last["event_type"], &last["sensor"]),
            (&"stats".into(), &"reloaded".into())
        );

        let mut p = pipeline();
        let mut host = fake(6);
        host.reload_at = Some(3);
        host.load_ok = false;
        run(&mut p, &rx, &mut host, Duration::from_secs(3600));
        assert_eq!(
            host.notices,
            [Notice::ReloadFailed("new.toml:1:1: broken".into())]
        );
        drop(tx);
        let ev = lines(finish(p, &rx, &mut host));
        assert!(ev.last().is_some_and(|e| e.get("sensor").is_none()));
    }

    #[test]
    fn the_loop_ends_when_capture_is_gone() {
        let (tx, rx) = crossbeam_channel::bounded::<Frames>(16);
        drop(tx);
        let mut p = pipeline();
        let mut host = fake(u32::MAX);
        run(&mut p, &rx, &mut host, Duration::from_secs(1));
        assert_eq!(host.calls, 0, "no stop was needed");
        let _ = finish(p, &rx, &mut host);
    }
}
