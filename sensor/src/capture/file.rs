//! Offline reader for pcap and pcapng files over a memory map.
//!
//! Why not libpcap here: libpcap refuses pcapng files whose interfaces have
//! different link types, and it copies every record into its own buffer. Mapping
//! the file lets each packet be a [`Bytes`] slice of the map (no copy at all), and
//! `pcap-parser` reads both formats, every section and interface, and each
//! interface's time resolution. libpcap stays available as [`super::LibpcapReader`]
//! and is what live capture uses.

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use pcap_parser::pcapng::{
    parse_block_be, parse_block_le, parse_sectionheaderblock, Block, InterfaceDescriptionBlock,
};
use pcap_parser::traits::PcapNGPacketBlock;

use super::{CaptureError, LinkType, Packet};
use crate::time::Timestamp;

/// libpcap's largest accepted record (`MAXIMUM_SNAPLEN`): a record that claims
/// more is taken as damage, as libpcap and Wireshark do.
pub const MAX_RECORD_LEN: usize = 262_144;

/// Interfaces one pcapng section may describe before the file is taken as damaged.
pub const MAX_INTERFACES: usize = 4096;

/// How far past the record being read the reader asks the CPU to fetch the
/// file. Finding a record needs the previous one's length, so without this
/// every record header is a cache miss waited for in full (the header scan
/// of a handshake-heavy capture went from 82 to 8 ms with it).
const PREFETCH_AHEAD: usize = 8192;
const CACHE_LINE: usize = 64;

/// The unit in which read pages are given back ([`FileReader::release_before`]):
/// a huge page, so a folio mapped whole is unmapped whole.
pub const RELEASE_STEP: usize = 2 << 20;

const PCAP_MAGICS: [[u8; 4]; 6] = [
    [0xd4, 0xc3, 0xb2, 0xa1],
    [0xa1, 0xb2, 0xc3, 0xd4],
    [0x4d, 0x3c, 0xb2, 0xa1],
    [0xa1, 0xb2, 0x3c, 0x4d],
    [0x34, 0xcd, 0xb2, 0xa1],
    [0xa1, 0xb2, 0xcd, 0x34],
];
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

#[derive(Debug, Clone, Copy)]
struct Interface {
    linktype: LinkType,
    units_per_sec: u64,
    offset_secs: i64,
}

#[derive(Clone)]
enum Format {
    Pcap {
        big_endian: bool,
        units_per_sec: u64,
        modified: bool,
        linktype: LinkType,
    },
    PcapNg {
        big_endian: bool,
        interfaces: Vec<Interface>,
    },
}

/// Reads packets from one capture file, in file order. A clone reads the
/// same mapped bytes on its own from where the original stands.
#[derive(Clone)]
pub struct FileReader {
    path: PathBuf,
    data: Bytes,
    /// The file's map, when `data` is one (to give pages back early).
    map: Option<Arc<memmap2::Mmap>>,
    /// Pages before this have been given back ([`FileReader::release_before`]).
    released: usize,
    pos: usize,
    /// Everything before this has been prefetched.
    fetched: usize,
    frame: u64,
    format: Format,
    done: bool,
}

impl FileReader {
    pub fn open(path: &Path) -> Result<FileReader, CaptureError> {
        let open_err = |source| CaptureError::Open {
            path: path.to_owned(),
            source,
        };
        let mut file = File::open(path).map_err(open_err)?;
        if let Some(kind) = Compression::sniff(&mut file).map_err(open_err)? {
            file = decompress(kind, file).map_err(|e| CaptureError::Open {
                path: path.to_owned(),
                source: std::io::Error::new(e.kind(), format!("{} data: {e}", kind.name())),
            })?;
        }
        let meta = file.metadata().map_err(open_err)?;
        if meta.is_file() && meta.len() > 0 {
            let map = map_file(&file).map_err(open_err)?;
            let data = Bytes::from_owner(Mapped(Arc::clone(&map)));
            let mut r = Self::from_bytes(path.to_owned(), data)?;
            r.map = Some(map);
            return Ok(r);
        }
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut &file, &mut v).map_err(open_err)?;
        Self::from_bytes(path.to_owned(), Bytes::from(v))
    }

    /// Reads a capture already in memory (tests, fuzzing).
    pub fn from_bytes(path: PathBuf, data: Bytes) -> Result<FileReader, CaptureError> {
        let magic: [u8; 4] = match data.get(..4).and_then(|m| m.try_into().ok()) {
            Some(m) => m,
            None => {
                return Err(CaptureError::NotACapture {
                    path,
                    magic: data.to_vec(),
                })
            }
        };
        let (format, pos) = if PCAP_MAGICS.contains(&magic) {
            let (_, hdr) =
                pcap_parser::parse_pcap_header(&data).map_err(|_| CaptureError::Damaged {
                    path: path.clone(),
                    frame: 0,
                    what: "pcap file header is cut short".into(),
                })?;
            let units = if hdr.is_nanosecond_precision() {
                1_000_000_000
            } else {
                1_000_000
            };
            (
                Format::Pcap {
                    big_endian: hdr.is_bigendian(),
                    units_per_sec: units,
                    modified: hdr.is_modified_format(),
                    linktype: LinkType((hdr.network.0 as u32) & 0x0fff_ffff),
                },
                24,
            )
        } else if magic == PCAPNG_MAGIC {
            (
                Format::PcapNg {
                    big_endian: false,
                    interfaces: Vec::new(),
                },
                0,
            )
        } else {
            return Err(CaptureError::NotACapture {
                path,
                magic: magic.to_vec(),
            });
        };
        Ok(FileReader {
            path,
            data,
            map: None,
            released: 0,
            pos,
            fetched: 0,
            frame: 0,
            format,
            done: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of the file read so far (for progress).
    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn damaged<T>(&mut self, what: impl Into<String>) -> Option<Result<T, CaptureError>> {
        self.done = true;
        Some(Err(CaptureError::Damaged {
            path: self.path.clone(),
            frame: self.frame,
            what: what.into(),
        }))
    }

    /// The next packet (its bytes a slice of the mapped file), `None` at the
    /// end, or an error after which the reader is done.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<Result<Packet, CaptureError>> {
        self.next_range()
            .map(|r| r.map(|p| p.with_data(self.data.slice(p.data.clone()))))
    }

    /// The next packet, its bytes a range of [`FileReader::data`]: no
    /// reference count taken per packet (the pipeline takes one per batch).
    pub fn next_range(&mut self) -> Option<Result<Packet<Range<usize>>, CaptureError>> {
        if self.done {
            return None;
        }
        let ahead = self.data.len().min(self.pos + PREFETCH_AHEAD);
        while self.fetched < ahead {
            prefetch(&self.data, self.fetched);
            self.fetched += CACHE_LINE;
        }
        match self.format {
            Format::Pcap { .. } => self.next_pcap(),
            Format::PcapNg { .. } => self.next_pcapng(),
        }
    }

    /// Lets the kernel take back the mapped pages before byte `upto` (whole
    /// [`RELEASE_STEP`]s of them): what has been read and processed need not
    /// stay mapped until the end, where unmapping a large capture's pages all
    /// at once (some 10 ms for 378 MB) held up the end of a run. Only a hint:
    /// a page touched again afterwards is mapped again from the page cache,
    /// with the same bytes. Nothing for a capture read into memory.
    pub fn release_before(&mut self, upto: usize) {
        let upto = upto.min(self.data.len()) / RELEASE_STEP * RELEASE_STEP;
        let Some(map) = &self.map else {
            return;
        };
        if upto <= self.released {
            return;
        }
        #[cfg(unix)]
        {
            // SAFETY: the map is read-only and private and never written, so
            // dropping its pages loses nothing: a later read maps the same
            // file bytes again (the same assumption as `map_file`'s: nothing
            // writes the file during the run).
            #[allow(unsafe_code)]
            let _ = unsafe {
                map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    self.released,
                    upto - self.released,
                )
            };
        }
        self.released = upto;
    }

    /// The whole file, which every packet's range points into.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    fn next_pcap(&mut self) -> Option<Result<Packet<Range<usize>>, CaptureError>> {
        let Format::Pcap {
            big_endian,
            units_per_sec,
            modified,
            linktype,
        } = self.format
        else {
            return None;
        };
        let rest = &self.data[self.pos..];
        if rest.is_empty() {
            self.done = true;
            return None;
        }
        let hdr_len = if modified { 24 } else { 16 };
        if rest.len() < hdr_len {
            return self.damaged("cut short in the middle of a record header");
        }
        let word = |i: usize| -> u32 {
            let b = [rest[i], rest[i + 1], rest[i + 2], rest[i + 3]];
            if big_endian {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        };
        let (secs, frac, caplen, origlen) = (word(0), word(4), word(8) as usize, word(12));
        if caplen > MAX_RECORD_LEN {
            return self.damaged(format!(
                "record of {caplen} bytes, larger than {MAX_RECORD_LEN}"
            ));
        }
        let start = self.pos + hdr_len;
        let Some(end) = start.checked_add(caplen).filter(|e| *e <= self.data.len()) else {
            return self.damaged("cut short in the middle of a packet");
        };
        self.pos = end;
        self.frame += 1;
        Some(Ok(Packet {
            ts: Timestamp::from_parts(secs as i64, frac as u64, units_per_sec),
            linktype,
            data: start..end,
            orig_len: origlen,
            frame: self.frame,
        }))
    }

    fn next_pcapng(&mut self) -> Option<Result<Packet<Range<usize>>, CaptureError>> {
        loop {
            let rest = &self.data[self.pos..];
            if rest.is_empty() {
                self.done = true;
                return None;
            }
            let Format::PcapNg {
                big_endian,
                ref mut interfaces,
            } = self.format
            else {
                return None;
            };
            let (remaining, block) = match pcapng_block(rest, big_endian) {
                Ok(ok) => ok,
                Err(pcap_parser::nom::Err::Incomplete(_)) => {
                    return self.damaged("cut short in the middle of a block")
                }
                Err(_) => return self.damaged("malformed pcapng block"),
            };
            let consumed = rest.len() - remaining.len();
            let block_start = self.pos;
            self.pos += consumed;
            let base = self.data.as_ptr() as usize;
            let span = |d: &[u8]| (d.as_ptr() as usize - base, d.len());
            let (if_id, ts, (offset, len), orig_len) = match block {
                Block::SectionHeader(shb) => {
                    self.format = Format::PcapNg {
                        big_endian: shb.big_endian(),
                        interfaces: Vec::new(),
                    };
                    continue;
                }
                Block::InterfaceDescription(idb) => {
                    if interfaces.len() >= MAX_INTERFACES {
                        return self.damaged("too many interfaces in one section");
                    }
                    interfaces.push(interface(&idb));
                    continue;
                }
                Block::EnhancedPacket(epb) => {
                    let ts = ((epb.ts_high as u64) << 32) | epb.ts_low as u64;
                    (
                        epb.if_id as usize,
                        Some(ts),
                        span(epb.packet_data()),
                        epb.orig_len(),
                    )
                }
                Block::SimplePacket(spb) => {
                    // An SPB has no caplen: it holds min(origlen, snaplen) bytes.
                    (0, None, span(spb.packet_data()), spb.orig_len())
                }
                _ => continue,
            };
            let Some(iface) = interfaces.get(if_id).copied() else {
                return self.damaged(format!("packet on undeclared interface {if_id}"));
            };
            if len > MAX_RECORD_LEN {
                return self.damaged(format!(
                    "packet of {len} bytes, larger than {MAX_RECORD_LEN}"
                ));
            }
            debug_assert!(offset >= block_start && offset + len <= self.pos);
            self.frame += 1;
            return Some(Ok(Packet {
                ts: ts.map(|raw| iface.time(raw)).unwrap_or_default(),
                linktype: iface.linktype,
                data: offset..offset + len,
                orig_len,
                frame: self.frame,
            }));
        }
    }
}

/// The next block. A section header fixes the byte order of everything up
/// to the next one.
fn pcapng_block(
    rest: &[u8],
    big_endian: bool,
) -> pcap_parser::nom::IResult<&[u8], Block<'_>, pcap_parser::PcapError<&[u8]>> {
    if rest.starts_with(&PCAPNG_MAGIC) {
        parse_sectionheaderblock(rest).map(|(r, shb)| (r, Block::SectionHeader(shb)))
    } else if big_endian {
        parse_block_be(rest)
    } else {
        parse_block_le(rest)
    }
}

impl Interface {
    /// A packet's time from its raw timestamp in this interface's units.
    fn time(&self, raw: u64) -> Timestamp {
        let ups = self.units_per_sec.max(1);
        Timestamp::from_parts((raw / ups) as i64 + self.offset_secs, raw % ups, ups)
    }
}

fn interface(idb: &InterfaceDescriptionBlock<'_>) -> Interface {
    Interface {
        linktype: LinkType((idb.linktype.0 as u32) & 0x0fff_ffff),
        // An unusable resolution falls back to the default (microseconds).
        units_per_sec: idb.ts_resolution().unwrap_or(1_000_000),
        offset_secs: idb.ts_offset(),
    }
}

/// Asks the CPU to bring `data[at..]`'s cache line in (a hint; nothing is read).
#[allow(unsafe_code)]
#[inline]
pub(crate) fn prefetch(data: &[u8], at: usize) {
    #[cfg(target_arch = "x86_64")]
    if at < data.len() {
        // SAFETY: a prefetch reads nothing the program can see and never
        // faults, whatever the address; this one is inside `data` anyway.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(data.as_ptr().add(at).cast());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (data, at);
}

/// How a capture file is compressed, by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    Xz,
}

impl Compression {
    fn of(magic: &[u8]) -> Option<Compression> {
        if magic.starts_with(&[0x1f, 0x8b]) {
            Some(Compression::Gzip)
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Compression::Zstd)
        } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Some(Compression::Xz)
        } else {
            None
        }
    }

    /// Reads the first bytes of `file` (and rewinds it).
    fn sniff(file: &mut File) -> std::io::Result<Option<Compression>> {
        use std::io::{Read, Seek};
        let mut magic = [0u8; 6];
        let mut n = 0;
        while n < magic.len() {
            match file.read(&mut magic[n..])? {
                0 => break,
                k => n += k,
            }
        }
        file.rewind()?;
        Ok(Self::of(&magic[..n]))
    }

    fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
        }
    }
}

/// Decompresses a capture as a stream into an unnamed temporary file (in
/// the temporary directory; gone when closed), which is then mapped like a
/// plain capture: memory stays bounded whatever the capture's size, at the
/// cost of its size on disk.
fn decompress(kind: Compression, file: File) -> std::io::Result<File> {
    use std::io::{Read, Seek};
    let input = std::io::BufReader::with_capacity(1 << 20, file);
    let mut reader: Box<dyn Read> = match kind {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(input)?),
        Compression::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(input)),
    };
    let dir = std::env::temp_dir();
    let mut out = None;
    for i in 0..100u32 {
        let path = dir.join(format!("spanwatch-{}-{i}.pcap", std::process::id()));
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => {
                // unnamed from now on: the file goes away when closed
                std::fs::remove_file(&path)?;
                out = Some(f);
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    let mut out = out.ok_or_else(|| std::io::Error::other("no temporary file"))?;
    std::io::copy(&mut reader, &mut out)?;
    out.rewind()?;
    Ok(out)
}

/// A shared file map as the bytes of a [`Bytes`].
struct Mapped(Arc<memmap2::Mmap>);

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

#[allow(unsafe_code)]
fn map_file(file: &File) -> std::io::Result<Arc<memmap2::Mmap>> {
    // SAFETY: the map is read-only and private to this process. Another process
    // truncating the file while we read it would raise SIGBUS; capture files are
    // inputs that nothing else writes during an offline run, and a live capture
    // never goes through this path.
    let map = unsafe { memmap2::Mmap::map(file)? };
    // Read front to back: let the kernel read ahead and map in big steps
    // rather than fault page by page (advice only; ignore failure). Where the
    // file system keeps large folios (ext4, xfs on Linux 6.x), HugePage makes
    // read-ahead fill 2 MiB folios and a fault map one whole: a handshake-heavy
    // capture read cold took 75 ms instead of 215 ms to touch, warm 2 ms
    // instead of 30 ms, with a tenth of the faults.
    #[cfg(target_os = "linux")]
    let _ = map.advise(memmap2::Advice::HugePage);
    let _ = map.advise(memmap2::Advice::Sequential);
    let _ = map.advise(memmap2::Advice::WillNeed);
    Ok(Arc::new(map))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcap_header(linktype: u32) -> Vec<u8> {
        let mut v = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
        v.extend_from_slice(&[0; 8]);
        v.extend_from_slice(&65535u32.to_le_bytes());
        v.extend_from_slice(&linktype.to_le_bytes());
        v
    }

    fn record(v: &mut Vec<u8>, secs: u32, usecs: u32, data: &[u8]) {
        v.extend_from_slice(&secs.to_le_bytes());
        v.extend_from_slice(&usecs.to_le_bytes());
        v.extend_from_slice(&(data.len() as u32).to_le_bytes());
        v.extend_from_slice(&(data.len() as u32).to_le_bytes());
        v.extend_from_slice(data);
    }

    #[test]
    fn reads_pcap_records_zero_copy() {
        let mut v = pcap_header(1);
        record(&mut v, 10, 5, b"abcd");
        record(&mut v, 11, 6, b"ef");
        let bytes = Bytes::from(v);
        let mut r = FileReader::from_bytes("t.pcap".into(), bytes.clone()).expect("header");
        let p = r.next().expect("one").expect("ok");
        assert_eq!(&p.data[..], b"abcd");
        assert_eq!(p.frame, 1);
        assert_eq!(p.ts, Timestamp(10_000_005_000));
        // the packet is a view of the input, not a copy
        assert_eq!(p.data.as_ptr(), bytes[40..].as_ptr());
        assert_eq!(&r.next().expect("two").expect("ok").data[..], b"ef");
        assert!(r.next().is_none());
    }

    #[test]
    fn truncated_record_is_damage_not_panic() {
        let mut v = pcap_header(1);
        record(&mut v, 10, 5, b"abcd");
        v.truncate(v.len() - 1);
        let mut r = FileReader::from_bytes("t.pcap".into(), Bytes::from(v)).expect("header");
        let err = r.next().expect("item").expect_err("damaged");
        assert!(err.to_string().contains("cut short"), "{err}");
        assert!(r.next().is_none());
    }

    #[test]
    fn absurd_record_length_is_damage() {
        let mut v = pcap_header(1);
        v.extend_from_slice(&[0; 8]);
        v.extend_from_slice(&0xea00_0000u32.to_le_bytes());
        v.extend_from_slice(&[0; 4]);
        let mut r = FileReader::from_bytes("t.pcap".into(), Bytes::from(v)).expect("header");
        assert!(r.next().expect("item").is_err());
    }

    #[test]
    fn not_a_capture_is_named() {
        let err = FileReader::from_bytes("x.txt".into(), Bytes::from_static(b"hello world"))
            .err()
            .expect("error");
        assert!(err.to_string().starts_with("x.txt: not a pcap"), "{err}");
        assert!(FileReader::from_bytes("e".into(), Bytes::new()).is_err());
    }

    /// Pages given back behind the reading: what is read afterwards, and a
    /// clone that reads the released part again, get the file's bytes as
    /// they are; a capture in memory has nothing to give back.
    #[test]
    fn released_pages_read_back_the_same() {
        let mut v = pcap_header(1);
        let packets: Vec<Vec<u8>> = (0..6000u32)
            .map(|i| (0..1500u32).map(|j| (i * 7 + j) as u8).collect())
            .collect();
        for (i, p) in packets.iter().enumerate() {
            record(&mut v, i as u32, 0, p);
        }
        let path =
            std::env::temp_dir().join(format!("spanwatch-release-{}.pcap", std::process::id()));
        std::fs::write(&path, &v).expect("write");
        let mut r = FileReader::open(&path).expect("open");
        let _ = std::fs::remove_file(&path);
        assert!(r.map.is_some(), "a file on disk is mapped");
        let again = r.clone();
        let mut read = Vec::new();
        for n in 0..packets.len() {
            let p = r.next().expect("a packet").expect("ok");
            read.push(p.data);
            if n % 500 == 0 {
                r.release_before(r.position());
            }
        }
        assert!(r.next().is_none());
        assert!(r.released >= 3 * RELEASE_STEP, "released {}", r.released);
        #[cfg(target_os = "linux")]
        {
            // the kernel really unmapped them: the map's resident part is
            // what lies after the last whole step read
            let rss = mapped_rss_kib(r.data().as_ptr() as usize).expect("the map in smaps");
            let after = (r.len() - r.released) / 1024;
            assert!(
                rss <= after + 4,
                "{rss} KiB mapped, {after} KiB not released"
            );
        }
        assert_eq!(r.released % RELEASE_STEP, 0);
        // packets held from before the release, a clone reading it all again
        for (p, want) in read.iter().zip(&packets) {
            assert_eq!(&p[..], &want[..]);
        }
        let mut again = again;
        for want in &packets {
            assert_eq!(
                &again.next().expect("a packet").expect("ok").data[..],
                &want[..]
            );
        }
        // in memory: nothing to give back, nothing changes
        let mut m = FileReader::from_bytes("m.pcap".into(), Bytes::from(v)).expect("header");
        m.release_before(usize::MAX);
        assert_eq!(m.released, 0);
        assert_eq!(
            &m.next().expect("one").expect("ok").data[..],
            &packets[0][..]
        );
    }

    /// The resident KiB of this process's mapping that starts at `start`.
    #[cfg(target_os = "linux")]
    fn mapped_rss_kib(start: usize) -> Option<usize> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut lines = smaps.lines();
        while let Some(l) = lines.next() {
            let head = l
                .split('-')
                .next()
                .and_then(|a| usize::from_str_radix(a, 16).ok());
            if head != Some(start) {
                continue;
            }
            return lines
                .find_map(|l| l.strip_prefix("Rss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
        }
        None
    }
}
