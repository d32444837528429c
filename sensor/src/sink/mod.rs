//! Sinks: where events go. A sink receives whole event lines in order, each
//! with its event type and (for alerts) severity, and says how many it took;
//! what it could not take is counted lost, per sink.
//!
//! Any `Write` is a sink (tests write to a `Vec<u8>`). [`FileSink`] appends
//! to a path and reopens it on request (log rotation); [`Outputs`] fans out
//! to several sinks, each with its own event-type filter, as the site
//! configuration's `[[output]]` tables say.

use std::io::{IoSlice, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

pub mod net;

use crate::config::{OutputConfig, OutputKind};

/// One event as sinks see it: its JSON line (newline included), its type,
/// and the severity of an alert.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    pub event_type: &'static str,
    pub severity: Option<u8>,
    pub json: &'a [u8],
}

/// Lines that lie next to each other in one buffer, as one slice.
#[derive(Debug, Clone, Copy)]
pub struct Run<'a> {
    pub bytes: &'a [u8],
    pub lines: u64,
}

/// Lines handed to a sink: each with its type, and the same bytes as runs of
/// adjacent lines (what a sink that takes every line writes, one slice per
/// run).
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    pub lines: &'a [Line<'a>],
    pub runs: &'a [Run<'a>],
}

/// What a sink did with lines handed to it.
#[derive(Debug, Default)]
pub struct Sent {
    /// Lines taken whole (by every sink that wanted them, counted per sink).
    pub written: u64,
    /// Lines lost (likewise).
    pub lost: u64,
    /// Why lines were lost.
    pub error: Option<String>,
}

impl Sent {
    fn add(&mut self, o: Sent) {
        self.written += o.written;
        self.lost += o.lost;
        if o.error.is_some() {
            self.error = o.error;
        }
    }
}

/// Where events go.
pub trait Sink: Send {
    /// Writes these lines, in order. A line is written whole or counted lost.
    fn send(&mut self, b: &Batch<'_>) -> Sent;
    fn flush(&mut self) -> std::io::Result<()>;
    /// Opens the destination anew (after log rotation); a no-op where that
    /// means nothing.
    fn reopen(&mut self) -> std::io::Result<()> {
        Ok(())
    }
    /// Per-output counts, for `stats` (empty for a plain writer).
    fn outputs(&self) -> Vec<OutputStats> {
        Vec::new()
    }
    /// Does this sink choose lines by type (so [`Batch::lines`] must be
    /// filled)? Otherwise it takes every line and needs only the runs.
    fn chooses_lines(&self) -> bool {
        false
    }
    /// The end: waits up to `deadline` for what is queued to go out, and
    /// returns how many lines it took but could not deliver (counted lost).
    fn drain(&mut self, _deadline: std::time::Duration) -> u64 {
        0
    }
}

impl<W: Write + Send> Sink for W {
    fn send(&mut self, b: &Batch<'_>) -> Sent {
        write_runs(self, b.runs)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Write::flush(self)
    }
}

/// Slices per vectored write (well under any system's `IOV_MAX`).
const IOV: usize = 128;

/// Writes runs of lines with vectored writes (the kernel copies each byte
/// once). A run's lines count as written once the system has taken all of
/// it; what could not be written, a part-written run included, is lost.
pub fn write_runs(out: &mut (impl Write + ?Sized), runs: &[Run<'_>]) -> Sent {
    let mut sent = Sent::default();
    // runs[i].bytes[off..] is the first byte not yet written
    let (mut i, mut off) = (0, 0);
    while i < runs.len() {
        let mut iov = [IoSlice::new(&[]); IOV];
        let k = (runs.len() - i).min(IOV);
        for (j, r) in runs[i..i + k].iter().enumerate() {
            iov[j] = IoSlice::new(if j == 0 { &r.bytes[off..] } else { r.bytes });
        }
        match out.write_vectored(&iov[..k]) {
            // a line is never empty: nothing written is an error, not progress
            Ok(0) => {
                sent.error = Some(std::io::Error::from(std::io::ErrorKind::WriteZero).to_string());
                break;
            }
            Ok(mut n) => {
                // past every run that was written whole
                while i < runs.len() {
                    let left = runs[i].bytes.len() - off;
                    if n < left {
                        off += n;
                        break;
                    }
                    n -= left;
                    sent.written += runs[i].lines;
                    i += 1;
                    off = 0;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                sent.error = Some(e.to_string());
                break;
            }
        }
    }
    sent.lost = runs[i..].iter().map(|r| r.lines).sum();
    sent
}

/// An output's counts, as `stats` lists them.
#[derive(Debug, Clone, Serialize)]
pub struct OutputStats {
    pub name: String,
    pub written: u64,
    pub lost: u64,
}

/// A file events are appended to (or that is made anew), reopened by path on
/// request.
pub struct FileSink {
    path: PathBuf,
    file: std::fs::File,
}

impl FileSink {
    /// Opens `path`: appending (a long-running sensor) or made anew.
    pub fn open(path: &Path, append: bool) -> std::io::Result<Self> {
        Ok(FileSink {
            path: path.to_path_buf(),
            file: open(path, append)?,
        })
    }
}

fn open(path: &Path, append: bool) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(path)
}

impl Sink for FileSink {
    fn send(&mut self, b: &Batch<'_>) -> Sent {
        write_runs(&mut self.file, b.runs)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Write::flush(&mut self.file)
    }

    /// The file at the path now (logrotate moved the old one away).
    fn reopen(&mut self) -> std::io::Result<()> {
        Write::flush(&mut self.file)?;
        self.file = open(&self.path, true)?;
        Ok(())
    }
}

/// One output of several: a sink and the event types it takes.
struct Routed {
    name: String,
    types: Vec<String>,
    sink: Box<dyn Sink>,
    written: u64,
    lost: u64,
}

impl Routed {
    fn wants(&self, t: &str) -> bool {
        self.types.is_empty() || self.types.iter().any(|x| x == t)
    }
}

/// Several outputs, each with its own event-type filter and counts.
#[derive(Default)]
pub struct Outputs {
    routes: Vec<Routed>,
}

impl Outputs {
    /// The outputs the configuration lists; files are appended to when
    /// `append` (a long-running sensor) or made anew.
    pub fn open(config: &[OutputConfig], append: bool) -> std::io::Result<Self> {
        let mut o = Outputs::default();
        for c in config {
            let (name, sink): (String, Box<dyn Sink>) = match (&c.kind, &c.path) {
                (OutputKind::File, Some(p)) => (
                    format!("file:{}", p.display()),
                    Box::new(FileSink::open(p, append).map_err(|e| {
                        std::io::Error::new(e.kind(), format!("{}: {e}", p.display()))
                    })?),
                ),
                (OutputKind::File, None) => {
                    return Err(std::io::Error::other("a file output needs a path"))
                }
                (OutputKind::Stdout, _) => ("stdout".into(), Box::new(std::io::stdout())),
                (OutputKind::Syslog, _) => {
                    let a = c.address.as_deref().unwrap_or_default();
                    let (proto, addr) = crate::config::parse_net_address(a)
                        .ok_or_else(|| std::io::Error::other(format!("syslog address `{a}`")))?;
                    let q = c.queue_mib.unwrap_or(net::DEFAULT_QUEUE_MIB);
                    let ca_file = c.ca_file.clone();
                    let far = net::Far::Syslog {
                        proto,
                        addr,
                        ca_file,
                    };
                    (format!("syslog:{a}"), Box::new(net::NetSink::new(far, q)?))
                }
                (OutputKind::Redis, _) => {
                    let url = c.url.clone().unwrap_or_default();
                    let key = c.key.clone().unwrap_or_else(|| "spanwatch".into());
                    let far = net::Far::Redis {
                        url: url.clone(),
                        mode: c.mode,
                        key: key.clone(),
                        maxlen: c.maxlen.unwrap_or(1_000_000),
                    };
                    let q = c.queue_mib.unwrap_or(net::DEFAULT_QUEUE_MIB);
                    (
                        format!("redis:{url} {key}"),
                        Box::new(net::NetSink::new(far, q)?),
                    )
                }
            };
            o.add(name, c.event_types.clone(), sink);
        }
        Ok(o)
    }

    /// Adds an output taking these event types (all when empty).
    pub fn add(&mut self, name: String, types: Vec<String>, sink: Box<dyn Sink>) {
        self.routes.push(Routed {
            name,
            types,
            sink,
            written: 0,
            lost: 0,
        });
    }

    /// The event types some output takes (empty: every type).
    pub fn wanted(&self) -> Vec<String> {
        if self.routes.iter().any(|r| r.types.is_empty()) {
            return Vec::new();
        }
        let mut all: Vec<String> = self.routes.iter().flat_map(|r| r.types.clone()).collect();
        all.sort();
        all.dedup();
        all
    }
}

impl Sink for Outputs {
    fn send(&mut self, b: &Batch<'_>) -> Sent {
        let mut total = Sent::default();
        for r in &mut self.routes {
            let sent = if r.types.is_empty() {
                r.sink.send(b)
            } else {
                // the lines this output takes, each its own run
                let lines: Vec<Line<'_>> = b
                    .lines
                    .iter()
                    .filter(|l| r.wants(l.event_type))
                    .copied()
                    .collect();
                let runs: Vec<Run<'_>> = lines
                    .iter()
                    .map(|l| Run {
                        bytes: l.json,
                        lines: 1,
                    })
                    .collect();
                r.sink.send(&Batch {
                    lines: &lines,
                    runs: &runs,
                })
            };
            r.written += sent.written;
            r.lost += sent.lost;
            total.add(sent);
        }
        total
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let mut first = Ok(());
        for r in &mut self.routes {
            if let Err(e) = r.sink.flush() {
                first = first.and(Err(e));
            }
        }
        first
    }

    fn reopen(&mut self) -> std::io::Result<()> {
        let mut first = Ok(());
        for r in &mut self.routes {
            if let Err(e) = r.sink.reopen() {
                first = first.and(Err(std::io::Error::new(
                    e.kind(),
                    format!("{}: {e}", r.name),
                )));
            }
        }
        first
    }

    fn chooses_lines(&self) -> bool {
        self.routes
            .iter()
            .any(|r| !r.types.is_empty() || r.sink.chooses_lines())
    }

    fn drain(&mut self, deadline: std::time::Duration) -> u64 {
        let mut lost = 0;
        for r in &mut self.routes {
            let n = r.sink.drain(deadline);
            r.written -= n.min(r.written);
            r.lost += n;
            lost += n;
        }
        lost
    }

    fn outputs(&self) -> Vec<OutputStats> {
        self.routes
            .iter()
            .map(|r| OutputStats {
                name: r.name.clone(),
                written: r.written,
                lost: r.lost,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines of `buf`, typed, and `buf` as one run.
    fn batch<'a>(buf: &'a [u8], types: &[&'static str]) -> (Vec<Line<'a>>, Vec<Run<'a>>) {
        let lines: Vec<Line<'a>> = types
            .iter()
            .zip(buf.split_inclusive(|b| *b == b'\n'))
            .map(|(t, l)| Line {
                event_type: t,
                severity: (*t == "alert").then_some(1),
                json: l,
            })
            .collect();
        let run = Run {
            bytes: buf,
            lines: lines.len() as u64,
        };
        (lines, vec![run])
    }

    /// A sink that takes nothing (a full disk).
    struct Full;

    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from(std::io::ErrorKind::StorageFull))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn outputs_filter_by_type_and_count_per_output() {
        let buf = b"{\"a\":1}\n{\"f\":2}\n{\"a\":3}\n".to_vec();
        let (lines, runs) = batch(&buf, &["alert", "flow", "alert"]);
        let mut o = Outputs::default();
        o.add("all".into(), Vec::new(), Box::new(Vec::<u8>::new()));
        o.add(
            "alerts".into(),
            vec!["alert".into()],
            Box::new(Vec::<u8>::new()),
        );
        o.add("full".into(), vec!["flow".into()], Box::new(Full));
        assert!(o.chooses_lines());
        assert_eq!(o.wanted(), Vec::<String>::new());
        let sent = o.send(&Batch {
            lines: &lines,
            runs: &runs,
        });
        assert_eq!((sent.written, sent.lost), (5, 1));
        assert!(sent.error.is_some_and(|e| e.contains("storage")));
        let counts: Vec<_> = o
            .outputs()
            .into_iter()
            .map(|s| (s.name, s.written, s.lost))
            .collect();
        assert_eq!(
            counts,
            [
                ("all".to_string(), 3, 0),
                ("alerts".to_string(), 2, 0),
                ("full".to_string(), 0, 1)
            ]
        );
    }

    #[test]
    fn a_file_output_reopens_its_path() {
        let dir = std::env::temp_dir().join(format!("spanwatch-sink-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        let path = dir.join("eve.json");
        let mut f = FileSink::open(&path, true).expect("opens");
        let buf = b"one\n".to_vec();
        let run = [Run {
            bytes: &buf,
            lines: 1,
        }];
        let b = Batch {
            lines: &[],
            runs: &run,
        };
        assert_eq!(f.send(&b).written, 1);
        std::fs::rename(&path, dir.join("eve.json.1")).expect("rotate");
        f.reopen().expect("reopens");
        assert_eq!(f.send(&b).written, 1);
        assert_eq!(std::fs::read(&path).expect("new file"), b"one\n");
        assert_eq!(
            std::fs::read(dir.join("eve.json.1")).expect("old"),
            b"one\n"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
