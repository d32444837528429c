//! `spanwatch report`: reads event files (plain or gzip) into a
//! [`spanwatch::report::Report`] and prints its findings.

use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;
use spanwatch::report::{self, html, Report};

#[derive(clap::Args)]
pub struct ReportArgs {
    /// Event files (`-` or none: standard input), plain or gzip-compressed.
    events: Vec<PathBuf>,
    /// What to print on standard output.
    #[arg(long, value_enum, default_value = "table")]
    format: ReportFormat,
    /// Also write the findings as one self-contained HTML page here.
    #[arg(long)]
    html: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ReportFormat {
    Table,
    Json,
    Markdown,
}

/// A reader of `r` that undoes gzip when the bytes start with its magic.
fn maybe_gzip<'a>(r: impl Read + 'a) -> std::io::Result<Box<dyn BufRead + 'a>> {
    let mut b = BufReader::with_capacity(1 << 16, r);
    let gz = b.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    Ok(if gz {
        Box::new(BufReader::with_capacity(
            1 << 16,
            flate2::bufread::MultiGzDecoder::new(b),
        ))
    } else {
        Box::new(b)
    })
}

pub fn run(args: ReportArgs) -> ExitCode {
    let mut r = Report::default();
    let inputs: Vec<Option<&std::path::Path>> = if args.events.is_empty() {
        vec![None]
    } else {
        args.events
            .iter()
            .map(|p| (p.as_os_str() != "-").then_some(p.as_path()))
            .collect()
    };
    for input in inputs {
        let read = match input {
            None => maybe_gzip(std::io::stdin().lock()).and_then(|b| r.read(b)),
            Some(p) => std::fs::File::open(p)
                .and_then(maybe_gzip)
                .and_then(|b| r.read(b)),
        };
        if let Err(e) = read {
            let name = input.map_or("standard input".into(), |p| p.display().to_string());
            eprintln!("spanwatch: report: {name}: {e}");
            return ExitCode::from(1);
        }
    }
    let findings = r.findings();
    if let Some(path) = &args.html {
        if let Err(e) = std::fs::write(path, html::page(&r, &findings)) {
            eprintln!("spanwatch: report: {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    let out = match args.format {
        ReportFormat::Table => {
            let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            match spanwatch::findings::table(&findings, color) {
                t if t.is_empty() => "no findings: no tool was seen on any host\n".to_string(),
                t => t,
            }
        }
        ReportFormat::Json => report::json(&r, &findings),
        ReportFormat::Markdown => report::markdown(&findings),
    };
    if std::io::stdout().lock().write_all(out.as_bytes()).is_err() {
        return ExitCode::from(1);
    }
    if r.run.unreadable > 0 {
        eprintln!(
            "spanwatch: report: {} lines were not events (skipped)",
            r.run.unreadable
        );
    }
    ExitCode::SUCCESS
}
