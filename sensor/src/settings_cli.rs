//! Settings the command line leaves open: workers, and `live`'s capture
//! settings from the site configuration.

use super::LiveArgs;
use spanwatch::sink::{FileSink, Outputs};

/// Where events go: `--output` (a file, or standard output when neither it
/// nor the site configuration names one), else the site's `[[output]]`s.
pub fn outputs(
    output: Option<&std::path::Path>,
    site: &spanwatch::config::SiteConfig,
    live: bool,
) -> Result<Outputs, String> {
    if output.is_none() && !site.outputs.is_empty() {
        return Outputs::open(&site.outputs, live).map_err(|e| format!("output {e}"));
    }
    let sink: Box<dyn spanwatch::sink::Sink> = match output {
        Some(p) => Box::new(
            FileSink::open(p, live).map_err(|e| format!("{}: cannot create: {e}", p.display()))?,
        ),
        None => Box::new(std::io::stdout()),
    };
    let mut o = Outputs::default();
    o.add("main".into(), Vec::new(), sink);
    Ok(o)
}

/// One worker per core the process may use.
pub fn auto_workers() -> u16 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.clamp(1, 256) as u16
}

/// The engine's settings for a site (its timeouts from `[flow.timeouts]`):
/// the flow table's size and the memory cap from the flags, else the site
/// configuration's `[flow]`, else the defaults.
pub fn engine_for_site(
    max_flows: Option<u64>,
    memcap_mib: Option<u64>,
    site: spanwatch::config::SiteConfig,
) -> spanwatch::pipeline::engine::EngineConfig {
    let flows = (max_flows.map(|n| n as usize))
        .or(site.flow.max_flows)
        .unwrap_or(spanwatch::flow::DEFAULT_MAX_FLOWS);
    let memcap = (memcap_mib.or(site.flow.stream_memcap_mib))
        .map_or(spanwatch::pipeline::engine::DEFAULT_STREAM_MEMCAP, |m| {
            m.saturating_mul(1 << 20) as usize
        });
    spanwatch::pipeline::engine::EngineConfig {
        max_flows: flows,
        stream_memcap: memcap,
        ..spanwatch::pipeline::engine::EngineConfig::for_site(site)
    }
}

/// `--workers`: `auto` is one per core the process may use.
pub fn parse_workers(s: &str) -> Result<u16, String> {
    if s == "auto" {
        return Ok(auto_workers());
    }
    match s.parse::<u16>() {
        Ok(n) if (1..=256).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{s}` is not a number of workers (1-256) or `auto`"
        )),
    }
}

/// `live`'s settings the flags leave open, from the site configuration's
/// `[capture]` (flags win); an error when no interface is named anywhere.
pub fn capture_settings(args: &mut LiveArgs) -> Result<(), String> {
    let site = match &args.common.config {
        Some(p) => spanwatch::load::site(Some(p)).map_err(|e| e.to_string())?,
        None => Default::default(),
    };
    let c = site.capture;
    if args.interfaces.is_empty() {
        args.interfaces = c.interfaces;
    }
    if args.interfaces.is_empty() {
        return Err("no interface to capture on: give -i IFACE or `[capture] interfaces` in the site configuration".into());
    }
    args.bpf = args.bpf.take().or(c.bpf);
    args.buffer_size = args
        .buffer_size
        .or(c.buffer_mib.map(|m| m.min(i32::MAX as u32) as i32));
    args.common.workers = args.common.workers.or(match c.workers {
        Some(spanwatch::config::WorkersSetting::Count(n)) => Some(n),
        _ => None,
    });
    args.common.workers = Some(args.common.workers.unwrap_or_else(auto_workers));
    Ok(())
}

/// Serves Prometheus metrics when `[metrics] listen` is set: a sink that
/// reads the stats and alerts joins the outputs, a thread answers scrapes.
pub fn metrics(args: &LiveArgs, out: &mut spanwatch::sink::Outputs) -> Result<(), String> {
    let site = match &args.common.config {
        Some(p) => spanwatch::load::site(Some(p)).map_err(|e| e.to_string())?,
        None => return Ok(()),
    };
    let Some(listen) = site.metrics.listen else {
        return Ok(());
    };
    let l = std::net::TcpListener::bind(&listen).map_err(|e| format!("{listen}: {e}"))?;
    let shared = spanwatch::metrics::Shared::default();
    let sink = spanwatch::metrics::MetricsSink(std::sync::Arc::clone(&shared));
    out.add(
        "metrics".into(),
        vec!["stats".into(), "alert".into()],
        Box::new(sink),
    );
    spanwatch::metrics::serve(l, shared).map_err(|e| e.to_string())?;
    eprintln!("spanwatch: metrics on http://{listen}/metrics");
    Ok(())
}
