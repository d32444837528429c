//! `spanwatch`: the command-line front. All the work is in the library.

#[path = "live_host.rs"]
mod live_host;
#[path = "report_cli.rs"]
mod report;
#[path = "settings_cli.rs"]
mod settings;
use live_host::LiveHost;
use settings::{auto_workers, capture_settings, engine_for_site, parse_workers};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, Subcommand, ValueEnum};
use spanwatch::capture::{CaptureError, FileReader, Frames, LibpcapReader};
use spanwatch::config::SiteConfig;
use spanwatch::detect::RuleSet;
use spanwatch::pipeline::engine::EngineConfig;
use spanwatch::pipeline::output::EventTypes;
use spanwatch::pipeline::{Pipeline, Settings};
use spanwatch::sink::Outputs;
use spanwatch::stats::Counters;

/// mimalloc: events are built from many small allocations, and the pipeline
/// frees in the writer what workers allocated; glibc's allocator was ~10 % of
/// the profile on handshake-heavy input (`benches/README.md`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "spanwatch",
    version,
    about = "Finds developer tunnels and TLS-interception proxies on the wire"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Read pcap/pcapng files and write EVE JSON events, one per line.
    Read(ReadArgs),
    /// Validate a site configuration and signatures; exits non-zero on errors.
    Check(CheckArgs),
    /// Capture live from interfaces (span port, tap) until SIGINT/SIGTERM.
    Live(LiveArgs),
    /// Summarise EVE event files (or standard input; gzip too): the findings
    /// as a table, JSON or Markdown, and a self-contained HTML page.
    Report(report::ReportArgs),
    /// The host activity ledger (`[ledger] database`): which tool ran on
    /// which host, since when, is it still active, is it allowed.
    Ledger(spanwatch::ledger::cli::LedgerArgs),
}

#[derive(clap::Args)]
struct LiveArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Interface to capture on (repeat for several; default: the site
    /// configuration's `[capture] interfaces`).
    #[arg(long = "interface", short = 'i')]
    interfaces: Vec<String>,
    /// BPF filter, e.g. 'not port 22'.
    #[arg(long)]
    bpf: Option<String>,
    /// Seconds between `stats` events.
    #[arg(long, default_value = "30s")]
    stats_interval: String,
    /// Kernel capture buffer per interface, in MiB (default: `[capture]
    /// buffer_mib`, else 64).
    #[arg(long)]
    buffer_size: Option<i32>,
    /// Drop privileges to this user once the interfaces are open.
    #[arg(long)]
    user: Option<String>,
}

#[derive(clap::Args)]
struct CheckArgs {
    /// Site configuration (TOML).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Signature directory (default: the bundled signatures).
    #[arg(long)]
    signatures: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Reader {
    /// Memory-mapped pcap/pcapng reader (zero-copy; any mix of link types).
    Native,
    /// libpcap's reader (copies each packet; one link type per file).
    Libpcap,
}

/// Options `read` and `live` share.
#[derive(clap::Args)]
struct CommonArgs {
    /// Site configuration (TOML); `live` reloads it on SIGHUP.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Signature directory replacing the bundled signatures.
    #[arg(long)]
    signatures: Option<PathBuf>,
    /// Write events here instead of standard output (`live` appends, and
    /// reopens it on SIGHUP).
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// Write only these event types (comma-separated, e.g. `alert,host_activity`).
    #[arg(long, value_delimiter = ',')]
    event_types: Vec<String>,
    /// Worker threads, each owning a share of the flows: a number (1-256) or
    /// `auto`, one per core. The output is the same for every number.
    #[arg(long, value_parser = parse_workers)]
    workers: Option<u16>,
    /// Flows tracked at most, all workers together [default: `[flow] max_flows`, else 65536].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_flows: Option<u64>,
    /// MiB all TCP streams (and HTTP requests awaiting a response) may hold, all workers
    /// together; over it, the biggest flows stop being read [default: `[flow] stream_memcap_mib`, else 256].
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..))]
    stream_memcap: Option<u64>,
    /// Keep the host activity ledger in this database (a SQLite file, or
    /// postgres://...) and go on from what it holds. `live` defaults to
    /// `[ledger] database`; `read` keeps it in memory unless given this.
    #[arg(long, value_name = "DATABASE")]
    ledger: Option<String>,
}

#[derive(clap::Args)]
struct ReadArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Which capture reader to use.
    #[arg(long, value_enum, default_value = "native")]
    reader: Reader,
    /// No findings table at the end.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Capture files or directories, read in the order given.
    #[arg(required = true)]
    captures: Vec<PathBuf>,
}

enum Source {
    Native(FileReader),
    Libpcap(LibpcapReader),
}

impl Source {
    fn open(reader: Reader, path: &std::path::Path) -> Result<Source, CaptureError> {
        Ok(match reader {
            Reader::Native => Source::Native(FileReader::open(path)?),
            Reader::Libpcap => Source::Libpcap(LibpcapReader::open(path)?),
        })
    }
    /// Every packet of the file to the pipeline: with several workers they
    /// read a file in our own format themselves; otherwise this thread hands
    /// packets over one by one. `progress` hears how far into the file the reading is.
    fn feed_all<W: spanwatch::sink::Sink>(
        self,
        p: &mut Pipeline<W>,
        progress: impl FnMut(usize, usize),
    ) -> Result<(), CaptureError> {
        match self {
            Source::Native(r) if p.workers() > 1 => p.walk(r, progress),
            // one worker: this thread reads while the worker works
            Source::Native(r) => p.dispatch(r, progress),
            Source::Libpcap(mut r) => {
                while let Some(pkt) = r.next() {
                    p.packet(pkt?);
                }
                Ok(())
            }
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SPANWATCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Read(args) => read(args),
        Cmd::Check(args) => check(args),
        Cmd::Live(args) => live(args),
        Cmd::Report(args) => report::run(args),
        Cmd::Ledger(args) => spanwatch::ledger::cli::run(args),
    }
}

/// The site configuration and signatures the options name (at start, and
/// again on SIGHUP).
fn load(c: &CommonArgs) -> Result<(SiteConfig, RuleSet), String> {
    let site = spanwatch::load::site(c.config.as_deref()).map_err(|e| e.to_string())?;
    let rules = spanwatch::load::rules(c.signatures.as_deref()).map_err(|e| e.to_string())?;
    Ok((site, rules))
}

/// Pipeline settings from the options `read` and `live` share, and the
/// outputs they name: `-o FILE` (or standard output) when given or when the
/// site configuration lists no `[[output]]`, else the configured ones. Files
/// are appended to by `live` (which reopens them on SIGHUP) and made anew by
/// `read`. `--event-types` filters every output.
fn settings(c: &CommonArgs, live: bool) -> Result<(Settings, Outputs), String> {
    spanwatch::config::check_event_types(&c.event_types)
        .map_err(|e| format!("--event-types: {e}"))?;
    let (site, rules) = load(c)?;
    let outputs = settings::outputs(c.output.as_deref(), &site, live)?;
    let types = match c.event_types.is_empty() {
        true => outputs.wanted(),
        false => c.event_types.clone(),
    };
    let settings = Settings {
        workers: c.workers.unwrap_or_else(auto_workers) as usize,
        engine: EngineConfig {
            rules: Arc::new(rules),
            ..engine_for_site(c.max_flows, c.stream_memcap, site)
        },
        types: Arc::new(EventTypes::new(&types)),
        live,
        latency: live,
        defer: None,
        decode_ahead: None,
    };
    Ok((settings, outputs))
}

/// The ledger's store thread and the writer's end of it, when there is one.
type Store = Option<(spanwatch::ledger::Store, spanwatch::ledger::Link)>;

/// Starts the pipeline, or says why not.
fn start(s: Settings, out: Outputs) -> Result<Pipeline<Outputs>, ExitCode> {
    Pipeline::start(s, out).map_err(|e| {
        eprintln!("spanwatch: starting worker threads: {e}");
        ExitCode::from(2)
    })
}

fn drop_privileges(user: &str) -> Result<(), String> {
    use nix::unistd::{setgid, setgroups, setuid, User};
    let u = User::from_name(user)
        .map_err(|e| format!("user {user}: {e}"))?
        .ok_or_else(|| format!("user {user}: no such user"))?;
    setgroups(&[u.gid]).map_err(|e| format!("setgroups: {e}"))?;
    setgid(u.gid).map_err(|e| format!("setgid: {e}"))?;
    setuid(u.uid).map_err(|e| format!("setuid: {e}"))?;
    Ok(())
}

fn live(mut args: LiveArgs) -> ExitCode {
    use spanwatch::capture::live;

    if let Err(e) = capture_settings(&mut args) {
        eprintln!("spanwatch: {e}");
        return ExitCode::from(2);
    }
    let Some(stats_every) =
        spanwatch::config::parse_duration(&args.stats_interval).filter(|d| d.0 > 0)
    else {
        eprintln!(
            "spanwatch: --stats-interval {}: write e.g. 30s, 5m",
            args.stats_interval
        );
        return ExitCode::from(2);
    };
    let (settings, opened, mut out, store) = match open_live(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("spanwatch: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = settings::metrics(&args, &mut out) {
        eprintln!("spanwatch: metrics: {e}");
        return ExitCode::from(2);
    }
    let (term, hup) = match signals() {
        Ok(flags) => flags,
        Err(e) => {
            eprintln!("spanwatch: signal handler: {e}");
            return ExitCode::from(2);
        }
    };
    let at_start = Arc::clone(&settings.engine.site);
    let mut p = match start(settings, out) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let store = spanwatch::ledger::attach(&mut p, store);
    let (tx, rx) = crossbeam_channel::bounded::<Frames>(1024);
    let stop = Arc::new(AtomicBool::new(false));
    let (threads, ifstats) = live::start(opened, tx, Arc::clone(&stop));
    eprintln!(
        "spanwatch: capturing on {} ({} worker{})",
        args.interfaces.join(", "),
        args.common.workers.unwrap_or(1),
        if args.common.workers == Some(1) {
            ""
        } else {
            "s"
        }
    );
    let mut host = LiveHost {
        args: &args,
        started: Instant::now(),
        term,
        hup,
        ifstats,
        at_start,
    };
    spanwatch::pipeline::live::run(&mut p, &rx, &mut host, stats_every);
    // Stop capture, drain every queue, end every flow, flush and fsync.
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let w = spanwatch::pipeline::live::finish(p, &rx, &mut host);
    let sources = format!("{} interface(s)", args.interfaces.len());
    end_live(
        w,
        store,
        args.common.output.as_deref(),
        &sources,
        host.started,
    )
}

/// The pipeline's settings, the open interfaces and the output, opened while
/// still privileged; then privileges are dropped if asked.
#[allow(clippy::type_complexity)]
fn open_live(
    args: &LiveArgs,
) -> Result<
    (
        Settings,
        Vec<spanwatch::capture::live::Opened>,
        Outputs,
        Store,
    ),
    String,
> {
    use spanwatch::capture::live;
    let (settings, out) = settings(&args.common, true)?;
    let opened = live::open(
        &args.interfaces,
        &live::LiveOptions {
            bpf: args.bpf.as_deref(),
            buffer_size: args.buffer_size.unwrap_or(64).saturating_mul(1 << 20),
        },
    )
    .map_err(|e| e.to_string())?;
    if let Some(u) = &args.user {
        drop_privileges(u).map_err(|e| format!("dropping privileges: {e}"))?;
    }
    // as the user the sensor runs as: the files it makes are its own
    let store =
        spanwatch::ledger::for_run(args.common.ledger.as_deref(), &settings.engine.site, true)?;
    Ok((settings, opened, out, store))
}

/// SIGTERM and SIGINT ask the run to stop, SIGHUP to reload: the flags.
#[allow(clippy::type_complexity)]
fn signals() -> std::io::Result<(Arc<AtomicBool>, Arc<AtomicBool>)> {
    let term = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    for (sig, flag) in [
        (signal_hook::consts::SIGTERM, &term),
        (signal_hook::consts::SIGINT, &term),
        (signal_hook::consts::SIGHUP, &hup),
    ] {
        signal_hook::flag::register(sig, Arc::clone(flag))?;
    }
    Ok((term, hup))
}

/// Flushes and syncs the output, reports losses and the summary: exit 1 if
/// events were lost.
fn end_live(
    mut w: spanwatch::pipeline::writer::Writer<Outputs>,
    store: Option<spanwatch::ledger::Store>,
    output: Option<&std::path::Path>,
    sources: &str,
    started: Instant,
) -> ExitCode {
    let mut failed = false;
    if let Err(e) = w.flush() {
        eprintln!("spanwatch: writing events: {e}");
        failed = true;
    }
    w.drain(DRAIN_DEADLINE);
    if lost_events(&mut w) {
        failed = true;
    }
    if !spanwatch::ledger::close(&mut w, store) {
        failed = true;
    }
    if let Some(path) = output {
        if let Ok(f) = std::fs::File::open(path) {
            let _ = f.sync_all();
        }
    }
    summary(&w.counters(), sources, w.written, started.elapsed());
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// How long network outputs get, at the end, to send what they queued.
const DRAIN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// Says how many events could not be written, if any (with the last error
/// not yet reported): a run that lost events fails.
fn lost_events<W: spanwatch::sink::Sink>(w: &mut spanwatch::pipeline::writer::Writer<W>) -> bool {
    let last = w.take_error().map(|e| format!(": {e}")).unwrap_or_default();
    if w.errors > 0 {
        eprintln!("spanwatch: {} events could not be written{last}", w.errors);
    }
    w.errors > 0
}

/// Wall-clock time, for stats events only (everything else is capture time).
fn wall_clock() -> spanwatch::time::Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    spanwatch::time::Timestamp(d.as_nanos() as i64)
}

fn check(args: CheckArgs) -> ExitCode {
    let mut ok = true;
    match &args.config {
        Some(p) => match spanwatch::load::site(Some(p)) {
            Ok(c) => eprintln!(
                "spanwatch: {}: ok ({} segments, {} allowed names)",
                p.display(),
                c.segments.len(),
                c.allow.names.len()
            ),
            Err(e) => {
                eprintln!("spanwatch: {e}");
                ok = false;
            }
        },
        None => eprintln!(
            "spanwatch: no site configuration given (--config): every host is in no segment"
        ),
    }
    match spanwatch::load::rules(args.signatures.as_deref()) {
        Ok(r) => eprintln!(
            "spanwatch: signatures ({}): ok ({} signatures)",
            args.signatures
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "bundled".into()),
            r.len()
        ),
        Err(e) => {
            eprintln!("spanwatch: {e}");
            ok = false;
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The captures to read: files as given, and for a directory every capture
/// below it, ordered by each one's first packet time (then by name); files
/// in it that are not captures are reported and skipped.
fn expand(args: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for a in args {
        if !a.is_dir() {
            out.push(a.clone());
            continue;
        }
        let mut found = Vec::new();
        walk(a, &mut found);
        let mut dated: Vec<(i64, PathBuf)> = Vec::new();
        for f in found {
            match FileReader::open(&f) {
                Ok(mut r) => {
                    let first = r.next().and_then(|p| p.ok()).map_or(i64::MAX, |p| p.ts.0);
                    dated.push((first, f));
                }
                Err(e) => eprintln!("spanwatch: skipped: {e}"),
            }
        }
        dated.sort();
        out.extend(dated.into_iter().map(|(_, f)| f));
    }
    out
}

/// Every file below `dir` (links are not followed), sorted by path.
fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        eprintln!("spanwatch: {}: cannot read the directory", dir.display());
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => walk(&p, out),
            Ok(m) if m.is_file() => out.push(p),
            _ => {}
        }
    }
}

fn read(args: ReadArgs) -> ExitCode {
    let (settings, out, store) = match settings(&args.common, false).and_then(|(s, o)| {
        let ledger = args.common.ledger.as_deref();
        Ok((
            spanwatch::ledger::for_run(ledger, &s.engine.site, false)?,
            s,
            o,
        ))
    }) {
        Ok((store, s, o)) => (s, o, store),
        Err(e) => {
            eprintln!("spanwatch: {e}");
            return ExitCode::from(2);
        }
    };
    let mut p = match start(settings, out) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let store = spanwatch::ledger::attach(&mut p, store);
    let started = Instant::now();
    let mut failed = 0usize;
    let bar = progress_bar();
    let captures = expand(&args.captures);
    for path in &captures {
        let name = path.display().to_string();
        let src = match Source::open(args.reader, path) {
            Ok(s) => s,
            Err(e) => {
                bar.suspend(|| eprintln!("spanwatch: {e}"));
                failed += 1;
                continue;
            }
        };
        bar.set_message(name.clone());
        p.set_origin(Some(name.as_str().into()));
        if let Err(e) = feed_all(src, &mut p, &bar, started) {
            bar.suspend(|| eprintln!("spanwatch: {e}"));
            failed += 1;
        }
    }
    p.end_flows();
    p.ledger("end_of_run");
    let mut w = p.close();
    bar.finish_and_clear();
    if let Err(e) = w.flush() {
        eprintln!("spanwatch: writing events: {e}");
        failed += 1;
    }
    w.drain(DRAIN_DEADLINE);
    if lost_events(&mut w) {
        failed += 1;
    }
    if !spanwatch::ledger::close(&mut w, store) {
        failed += 1;
    }
    summary(
        &w.counters(),
        &format!("{} file(s)", captures.len()),
        w.written,
        started.elapsed(),
    );
    if !args.quiet {
        findings(&w.findings(), args.common.output.as_deref());
    }
    // Everything is written, flushed, drained and closed above; what is left
    // is memory (the writer's correlation state, caches, tens of MiB) that
    // the process would free piece by piece before exiting: some 10 ms of a
    // run of a few hundred. Exit without dropping it (standard output is
    // flushed by `exit`). Nothing after `read` in `main` runs.
    std::process::exit(i32::from(failed > 0))
}

/// Every packet of one capture to the pipeline, with the progress bar.
fn feed_all(
    src: Source,
    p: &mut Pipeline<Outputs>,
    bar: &indicatif::ProgressBar,
    started: Instant,
) -> Result<(), CaptureError> {
    let terminal = std::io::stderr().is_terminal();
    src.feed_all(p, |pos, len| {
        if started.elapsed().as_secs() < 1 || !terminal {
            return;
        }
        if bar.is_hidden() {
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        }
        bar.set_length(len as u64);
        bar.set_position(pos as u64);
    })
}

fn progress_bar() -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    // Hidden until the run has taken a second (see `read`).
    let bar =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::hidden());
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// The findings table on stderr (coloured on a terminal unless NO_COLOR is
/// set), and where the events are.
fn findings(f: &[spanwatch::findings::Finding], output: Option<&std::path::Path>) {
    if f.is_empty() {
        eprintln!("spanwatch: no findings: no tool was seen on any host");
        return;
    }
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    eprint!(
        "spanwatch: findings, one row per tool and host (severity 1 is the highest):\n{}",
        spanwatch::findings::table(f, color)
    );
    match output {
        Some(p) => eprintln!("spanwatch: every event is in {}", p.display()),
        None => eprintln!(
            "spanwatch: every event went to the outputs (standard output unless configured)"
        ),
    }
}

/// The run's summary on stderr; `sources` is what was read, e.g. "2 file(s)".
fn summary(c: &Counters, sources: &str, events: u64, elapsed: std::time::Duration) {
    let secs = elapsed.as_secs_f64().max(1e-9);
    eprintln!(
        "spanwatch: {sources}: {} packets, {} bytes, {} flows ({} evicted from a full table), {} TLS handshakes, {} certificate chains ({} certificates parsed, {} cache hits), {} DNS messages, {} HTTP transactions ({} not logged), {} QUIC ClientHellos ({} Initial packets opened)",
        c.packets, c.bytes, c.flows_created, c.flows_evicted, c.tls_client_hellos, c.tls_certificate_msgs, c.certs_parsed, c.cert_cache_hits, c.dns_packets, c.http_transactions, c.http_unlogged, c.quic.client_hellos, c.quic.initials_opened
    );
    eprintln!(
        "spanwatch: skipped: {} malformed ({} truncated, {} bad headers, {} TLS, {} certificates, {} DNS, {} QUIC, {} QUIC CRYPTO out of bounds), {} unknown link type, {} not IP; {} stream gaps, {} flows let go at the reassembly memory cap, {} retransmitted segments, {} differing copies of stream bytes, {} TCP segments with a bad checksum; QUIC: {} Initial packets that did not open, {} flows at the Initial bound, {} of an unknown version",
        c.malformed(), c.decode_truncated, c.decode_malformed, c.tls_malformed, c.certs_malformed, c.dns_malformed, c.quic.malformed, c.quic.crypto_out_of_bounds,
        c.decode_unknown_linktype, c.decode_not_ip, c.stream_gaps, c.stream_memcap_shed, c.stream_retransmissions, c.stream_overlap_conflicts, c.tcp_checksum_bad,
        c.quic.decrypt_failed, c.quic.initial_limit, c.quic.unknown_version
    );
    eprintln!(
        "spanwatch: {} alerts (severity 1: {}, 2: {}, 3: {}, 4: {}), {} sanctioned sightings; not alerted again: {} repeats of a sighting, {} in the same flow, {} supporting evidence only; proxy legs: {} re-originated, {} relayed ({} hellos dropped early from the correlation)",
        c.alerts_total(),
        c.alerts[0],
        c.alerts[1],
        c.alerts[2],
        c.alerts[3],
        c.sanctioned,
        c.alerts_held.repeat,
        c.alerts_held.same_flow,
        c.alerts_held.supporting_only,
        c.tls_legs.reoriginated,
        c.tls_legs.relays,
        c.tls_legs.evicted
    );
    eprintln!(
        "spanwatch: {events} events in {secs:.3} s: {:.1} Mbit/s, {:.0} packets/s",
        c.bytes as f64 * 8.0 / secs / 1e6,
        c.packets as f64 / secs
    );
}
