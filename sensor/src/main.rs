//! `spanwatch`: the command-line front. All the work is in the library.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, Subcommand, ValueEnum};
use spanwatch::capture::{CaptureError, FileReader, LibpcapReader, Packet};
use spanwatch::config::SiteConfig;
use spanwatch::detect::RuleSet;
use spanwatch::engine::{Engine, EngineConfig, Origin};
use spanwatch::event::JsonLines;
use spanwatch::stats::Counters;

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

#[derive(clap::Args)]
struct ReadArgs {
    /// Site configuration (TOML).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Signature directory replacing the bundled signatures.
    #[arg(long)]
    signatures: Option<PathBuf>,
    /// Write events here instead of standard output.
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// Worker threads (the offline reader is single-threaded for now).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Which capture reader to use.
    #[arg(long, value_enum, default_value = "native")]
    reader: Reader,
    /// Write only these event types (comma-separated, e.g. `alert,host_activity`).
    #[arg(long, value_delimiter = ',')]
    event_types: Vec<String>,
    /// Flows tracked at most.
    #[arg(long, default_value_t = spanwatch::flow::DEFAULT_MAX_FLOWS)]
    max_flows: usize,
    /// Capture files, read in the order given.
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
    fn next(&mut self) -> Option<Result<Packet, CaptureError>> {
        match self {
            Source::Native(r) => r.next(),
            Source::Libpcap(r) => r.next(),
        }
    }
    fn progress(&self) -> Option<(usize, usize)> {
        match self {
            Source::Native(r) => Some((r.position(), r.len())),
            Source::Libpcap(_) => None,
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
    }
}

fn check(args: CheckArgs) -> ExitCode {
    let mut ok = true;
    match &args.config {
        Some(p) => match SiteConfig::load(p) {
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
    match RuleSet::load(args.signatures.as_deref()) {
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

fn read(args: ReadArgs) -> ExitCode {
    let site = match &args.config {
        Some(p) => match SiteConfig::load(p) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("spanwatch: {e}");
                return ExitCode::from(2);
            }
        },
        None => SiteConfig::default(),
    };
    if args.workers > 1 {
        eprintln!(
            "spanwatch: note: --workers {} accepted; offline reading runs on one worker for now",
            args.workers
        );
    }
    let out: Box<dyn Write> = match &args.output {
        Some(p) => match std::fs::File::create(p) {
            Ok(f) => Box::new(std::io::BufWriter::with_capacity(1 << 16, f)),
            Err(e) => {
                eprintln!("spanwatch: {}: cannot create: {e}", p.display());
                return ExitCode::from(2);
            }
        },
        None => Box::new(std::io::BufWriter::with_capacity(
            1 << 16,
            std::io::stdout().lock(),
        )),
    };
    let mut sink = Filtered {
        inner: JsonLines::new(out),
        types: args.event_types.clone(),
    };
    let rules = match RuleSet::load(args.signatures.as_deref()) {
        Ok(r) => Arc::new(r),
        Err(e) => {
            eprintln!("spanwatch: {e}");
            return ExitCode::from(2);
        }
    };
    let cfg = EngineConfig {
        rules,
        max_flows: args.max_flows,
        ..EngineConfig::for_site(site)
    };
    let (shared, site) = (Arc::clone(&cfg.shared), Arc::clone(&cfg.site));
    let mut engine = Engine::new(cfg);
    let started = Instant::now();
    let mut failed = 0usize;
    let bar = progress_bar();
    let terminal = std::io::stderr().is_terminal();
    let mut last_name = String::new();
    for path in &args.captures {
        let name = path.display().to_string();
        let mut src = match Source::open(args.reader, path) {
            Ok(s) => s,
            Err(e) => {
                bar.suspend(|| eprintln!("spanwatch: {e}"));
                failed += 1;
                continue;
            }
        };
        bar.set_message(name.clone());
        let origin = Origin {
            pcap_file: Some(&name),
        };
        let mut n = 0u64;
        while let Some(item) = src.next() {
            match item {
                Ok(pkt) => engine.process(&pkt, origin, &mut sink),
                Err(e) => {
                    bar.suspend(|| eprintln!("spanwatch: {e}"));
                    failed += 1;
                    break;
                }
            }
            n += 1;
            if n.is_multiple_of(8192) {
                if let Some((pos, len)) = src.progress() {
                    if started.elapsed().as_secs() >= 1 && terminal {
                        if bar.is_hidden() {
                            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                        }
                        bar.set_length(len as u64);
                        bar.set_position(pos as u64);
                    }
                }
            }
        }
        last_name = name;
    }
    engine.finish(
        Origin {
            pcap_file: Some(&last_name),
        },
        &mut sink,
    );
    Engine::report_ledger(&shared, &site, "end_of_run", engine.now(), &mut sink);
    bar.finish_and_clear();
    if let Err(e) = sink.inner.flush() {
        eprintln!("spanwatch: writing events: {e}");
        failed += 1;
    }
    if let Some(e) = sink.inner.take_error() {
        eprintln!(
            "spanwatch: {} events could not be written: {e}",
            sink.inner.errors
        );
        failed += 1;
    }
    summary(
        &engine.counters,
        args.captures.len(),
        sink.inner.written,
        started.elapsed(),
    );
    if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Passes on only the event types asked for (all when none is).
struct Filtered<W: Write> {
    inner: JsonLines<W>,
    types: Vec<String>,
}

impl<W: Write> spanwatch::event::EventSink for Filtered<W> {
    fn emit(&mut self, ev: &spanwatch::event::Event<'_>) {
        if self.types.is_empty() || self.types.iter().any(|t| t == ev.event_type) {
            self.inner.emit(ev);
        }
    }
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

fn summary(c: &Counters, files: usize, events: u64, elapsed: std::time::Duration) {
    let secs = elapsed.as_secs_f64().max(1e-9);
    eprintln!(
        "spanwatch: {files} file(s): {} packets, {} bytes, {} flows, {} TLS handshakes, {} certificate chains ({} certificates parsed, {} cache hits), {} DNS messages, {} HTTP transactions",
        c.packets, c.bytes, c.flows_created, c.tls_client_hellos, c.tls_certificate_msgs, c.certs_parsed, c.cert_cache_hits, c.dns_packets, c.http_transactions
    );
    eprintln!(
        "spanwatch: skipped: {} malformed ({} truncated, {} bad headers, {} TLS, {} certificates, {} DNS), {} unknown link type, {} not IP; {} stream gaps",
        c.malformed(), c.decode_truncated, c.decode_malformed, c.tls_malformed, c.certs_malformed, c.dns_malformed,
        c.decode_unknown_linktype, c.decode_not_ip, c.stream_gaps
    );
    eprintln!(
        "spanwatch: {} alerts (severity 1: {}, 2: {}, 3: {}, 4: {}), {} sanctioned sightings",
        c.alerts_total(),
        c.alerts[0],
        c.alerts[1],
        c.alerts[2],
        c.alerts[3],
        c.sanctioned
    );
    eprintln!(
        "spanwatch: {events} events in {secs:.3} s: {:.1} Mbit/s, {:.0} packets/s",
        c.bytes as f64 * 8.0 / secs / 1e6,
        c.packets as f64 / secs
    );
}
