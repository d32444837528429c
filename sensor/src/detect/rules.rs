//! The signature format (`signatures/*.toml`), its loader and validator.
//!
//! ```toml
//! format = 1
//! family = "ngrok"
//!
//! [[signature]]
//! id = 9100001
//! name = "ngrok agent control connection"
//! tool = "ngrok"
//! category = "tunnel-agent"
//! confidence = "high"                  # high | medium | low
//! references = ["https://ngrok.com/docs/..."]
//! sni = { exact = ["connect.ngrok-agent.com"], suffix = ["ngrok-agent.com"] }
//! ```
//!
//! Every condition a signature lists must hold (AND); inside one condition any
//! value may match (OR). Names (`sni`, `dns_query`, `dns_answer`, `http_host`,
//! `http_connect`, `cert_san`) match exactly or as label-aligned suffixes,
//! ignoring case and a trailing dot. Text conditions match `exact`, `prefix`,
//! `contains` (ASCII case-insensitive) or `regex`. Errors name the file, line,
//! column and what is wrong.

use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

/// The version of the format this build reads.
pub const FORMAT: u32 = 1;

/// Categories a signature may have.
pub const CATEGORIES: &[&str] = &[
    "tunnel-agent",
    "tunnel-endpoint",
    "interception-cert",
    "interception-cert-structural",
    "interception-ui",
    "interception-proxy",
    "interception-onboarding",
];

/// A rule file error, located.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}:{col}: {msg}")]
pub struct RuleError {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub msg: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    Low,
    Medium,
    High,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameCond {
    #[serde(default)]
    pub exact: Vec<String>,
    #[serde(default)]
    pub suffix: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextCond {
    #[serde(default)]
    pub exact: Vec<String>,
    #[serde(default)]
    pub prefix: Vec<String>,
    #[serde(default)]
    pub contains: Vec<String>,
    #[serde(default)]
    pub regex: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtCond {
    /// OIDs the leaf must carry.
    #[serde(default)]
    pub all: Vec<String>,
    /// OIDs the leaf must not carry.
    #[serde(default)]
    pub none: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostSide {
    Client,
    Server,
}

/// One signature as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSignature {
    pub id: Spanned<u32>,
    pub name: String,
    pub tool: String,
    pub category: Spanned<String>,
    pub confidence: Confidence,
    #[serde(default)]
    pub rev: Option<u32>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub references: Vec<String>,
    /// Weak evidence: recorded for a host, alerted on only once the same tool
    /// is already active there on stronger evidence.
    #[serde(default)]
    pub supporting: bool,
    /// Which end of the flow the verdict is about, when not the category's
    /// default (tunnels: the client; interception: the server).
    #[serde(default)]
    pub host: Option<HostSide>,

    pub sni: Option<NameCond>,
    pub dns_query: Option<NameCond>,
    pub dns_answer: Option<NameCond>,
    pub http_host: Option<NameCond>,
    pub http_connect: Option<NameCond>,
    pub cert_san: Option<NameCond>,

    pub http_url: Option<TextCond>,
    pub http_server: Option<TextCond>,
    pub http_title: Option<TextCond>,
    pub http_reason: Option<TextCond>,
    pub http_cookie: Option<TextCond>,
    pub http_user_agent: Option<TextCond>,
    pub cert_subject_cn: Option<TextCond>,
    pub cert_subject_o: Option<TextCond>,
    pub cert_subject_ou: Option<TextCond>,
    pub cert_issuer_cn: Option<TextCond>,
    pub cert_issuer_o: Option<TextCond>,
    pub cert_issuer_ou: Option<TextCond>,
    pub cert_crl_url: Option<TextCond>,

    pub http_status: Option<Vec<u16>>,
    pub http_header_count: Option<Vec<usize>>,
    pub cert_sha256: Option<Vec<String>>,
    pub cert_spki_sha256: Option<Vec<String>>,
    pub ja3: Option<Vec<String>>,
    pub ja4: Option<Vec<String>>,
    pub dest_port: Option<Vec<u16>>,
    pub chain_len: Option<Vec<usize>>,
    pub leaf_validity_days: Option<Vec<i64>>,
    pub leaf_extensions: Option<ExtCond>,
    pub leaf_self_signed: Option<bool>,
    /// Stateful: the leaf's public key has been seen on certificates for at
    /// least this many unrelated names (a proxy signing every leaf with one key).
    pub shared_spki_names: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    format: Spanned<u32>,
    #[serde(default)]
    family: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default, rename = "signature")]
    signatures: Vec<RawSignature>,
}

/// A validated signature with where it came from.
#[derive(Debug, Clone)]
pub struct Signature {
    pub raw: RawSignature,
    pub file: String,
    pub line: usize,
}

impl Signature {
    pub fn id(&self) -> u32 {
        *self.raw.id.get_ref()
    }
    pub fn category(&self) -> &str {
        self.raw.category.get_ref()
    }
}

/// The signatures shipped in the binary (`signatures/` at build time).
pub const BUNDLED: &[(&str, &str)] = &[
    ("ngrok.toml", include_str!("../../../signatures/ngrok.toml")),
    (
        "mitmproxy.toml",
        include_str!("../../../signatures/mitmproxy.toml"),
    ),
    (
        "interception-tools.toml",
        include_str!("../../../signatures/interception-tools.toml"),
    ),
    (
        "tunnel-services.toml",
        include_str!("../../../signatures/tunnel-services.toml"),
    ),
];

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    crate::config::line_col(text, offset)
}

/// Parses one rule file.
pub fn parse_file(file: &str, text: &str) -> Result<Vec<Signature>, RuleError> {
    let err_at = |offset: usize, msg: String| {
        let (line, col) = line_col(text, offset);
        RuleError {
            file: file.to_string(),
            line,
            col,
            msg,
        }
    };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let off = e.span().map(|s| s.start).unwrap_or(0);
        err_at(off, e.message().to_string())
    })?;
    let _ = (&raw.family, &raw.description);
    if *raw.format.get_ref() != FORMAT {
        return Err(err_at(
            raw.format.span().start,
            format!(
                "format {} is not supported (this build reads format {FORMAT})",
                raw.format.get_ref()
            ),
        ));
    }
    let mut out = Vec::new();
    for s in raw.signatures {
        let at = s.id.span().start;
        if !CATEGORIES.contains(&s.category.get_ref().as_str()) {
            return Err(err_at(
                s.category.span().start,
                format!(
                    "unknown category `{}` (expected one of {})",
                    s.category.get_ref(),
                    CATEGORIES.join(", ")
                ),
            ));
        }
        validate(&s).map_err(|msg| err_at(at, format!("signature {}: {msg}", s.id.get_ref())))?;
        let (line, _) = line_col(text, at);
        out.push(Signature {
            raw: s,
            file: file.to_string(),
            line,
        });
    }
    Ok(out)
}

fn validate(s: &RawSignature) -> Result<(), String> {
    if s.name.trim().is_empty() {
        return Err("name is empty".into());
    }
    if s.tool.trim().is_empty() {
        return Err("tool is empty".into());
    }
    let names = [
        &s.sni,
        &s.dns_query,
        &s.dns_answer,
        &s.http_host,
        &s.http_connect,
        &s.cert_san,
    ];
    let texts = [
        &s.http_url,
        &s.http_server,
        &s.http_title,
        &s.http_reason,
        &s.http_cookie,
        &s.http_user_agent,
        &s.cert_subject_cn,
        &s.cert_subject_o,
        &s.cert_subject_ou,
        &s.cert_issuer_cn,
        &s.cert_issuer_o,
        &s.cert_issuer_ou,
        &s.cert_crl_url,
    ];
    let mut conditions = 0;
    for n in names.iter().copied().flatten() {
        conditions += 1;
        if n.exact.is_empty() && n.suffix.is_empty() {
            return Err("a name condition needs `exact` or `suffix` values".into());
        }
        for v in n.exact.iter().chain(&n.suffix) {
            let v = v.strip_suffix('.').unwrap_or(v);
            // letters, digits, hyphen and underscore in dot-separated labels
            let label_ok = |l: &str| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            };
            if v.is_empty() || v.len() > 253 || !v.split('.').all(label_ok) {
                return Err(format!(
                    "`{v}` is not a DNS name (write suffixes without a leading dot or `*`)"
                ));
            }
        }
    }
    for t in texts.iter().copied().flatten() {
        conditions += 1;
        if t.exact.is_empty() && t.prefix.is_empty() && t.contains.is_empty() && t.regex.is_empty()
        {
            return Err(
                "a text condition needs `exact`, `prefix`, `contains` or `regex` values".into(),
            );
        }
        for r in &t.regex {
            regex::Regex::new(r).map_err(|e| format!("bad regex `{r}`: {e}"))?;
        }
    }
    let hex_lists = [
        (&s.cert_sha256, 64),
        (&s.cert_spki_sha256, 64),
        (&s.ja3, 32),
    ];
    for (list, len) in hex_lists {
        if let Some(l) = list {
            conditions += 1;
            for h in l {
                if h.len() != len || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(format!("`{h}` is not {len} hex digits"));
                }
            }
        }
    }
    if let Some(l) = &s.ja4 {
        conditions += 1;
        for j in l {
            // a whole fingerprint, or a prefix ending in `*` (`t13d2812h2_a01be8c064b6_*`)
            let ok = match j.strip_suffix('*') {
                Some(p) => !p.is_empty() && p.len() < 36,
                None => j.len() == 36 && j.matches('_').count() == 2,
            };
            if !ok {
                return Err(format!(
                    "`{j}` is not a JA4 fingerprint (a_b_c, 36 characters) or a prefix ending in `*`"
                ));
            }
        }
    }
    conditions += [
        s.http_status.is_some(),
        s.http_header_count.is_some(),
        s.dest_port.is_some(),
        s.chain_len.is_some(),
        s.leaf_validity_days.is_some(),
        s.leaf_extensions.is_some(),
        s.leaf_self_signed.is_some(),
        s.shared_spki_names.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if conditions == 0 {
        return Err("has no condition".into());
    }
    // A port or status alone would fire on ordinary traffic.
    let only_weak = conditions
        == [
            s.dest_port.is_some(),
            s.http_status.is_some(),
            s.http_header_count.is_some(),
            s.chain_len.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
    if only_weak {
        return Err("only port/status/count conditions: add a name, text, fingerprint or certificate condition".into());
    }
    if s.shared_spki_names.is_some_and(|n| n < 2) {
        return Err("shared_spki_names must be at least 2".into());
    }
    Ok(())
}

/// Loads every `*.toml` in `dir` (sorted by name), or the bundled set.
pub fn load(dir: Option<&Path>) -> Result<Vec<Signature>, RuleError> {
    let mut all = Vec::new();
    match dir {
        None => {
            for (name, text) in BUNDLED {
                all.extend(parse_file(&format!("signatures/{name}"), text)?);
            }
        }
        Some(dir) => {
            let io_err = |e: std::io::Error| RuleError {
                file: dir.display().to_string(),
                line: 0,
                col: 0,
                msg: format!("cannot read: {e}"),
            };
            let mut files: Vec<_> = std::fs::read_dir(dir)
                .map_err(io_err)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(RuleError {
                    file: dir.display().to_string(),
                    line: 0,
                    col: 0,
                    msg: "no *.toml signature files".into(),
                });
            }
            for f in files {
                let text = std::fs::read_to_string(&f).map_err(io_err)?;
                all.extend(parse_file(&f.display().to_string(), &text)?);
            }
        }
    }
    let mut seen = std::collections::HashMap::new();
    for s in &all {
        if let Some((file, line)) = seen.insert(s.id(), (s.file.clone(), s.line)) {
            return Err(RuleError {
                file: s.file.clone(),
                line: s.line,
                col: 1,
                msg: format!("signature id {} is already used at {file}:{line}", s.id()),
            });
        }
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_signatures_load() {
        let all = load(None).expect("bundled signatures are valid");
        assert!(all.len() > 40, "{}", all.len());
        for tool in ["ngrok", "mitmproxy", "burp", "cloudflared"] {
            assert!(all.iter().any(|s| s.raw.tool == tool), "{tool}");
        }
    }

    fn err(text: &str) -> String {
        parse_file("r.toml", text).expect_err("invalid").to_string()
    }

    const HEAD: &str = "format = 1\n[[signature]]\nid = 5\nname = \"n\"\ntool = \"t\"\ncategory = \"tunnel-agent\"\nconfidence = \"high\"\n";

    #[test]
    fn errors_name_file_line_and_problem() {
        assert!(err(&format!("{HEAD}snii = {{ exact = [\"a\"] }}\n"))
            .starts_with("r.toml:8:1: unknown field `snii`"));
        let e = err(&format!("{HEAD}sni = {{ exact = [\".a.com\"] }}\n"));
        assert!(
            e.starts_with("r.toml:3:") && e.contains("not a DNS name"),
            "{e}"
        );
        let e = err(&HEAD.replace("tunnel-agent", "tunnel"));
        assert!(
            e.starts_with("r.toml:6:") && e.contains("unknown category"),
            "{e}"
        );
        let e = err(HEAD);
        assert!(e.contains("has no condition"), "{e}");
        let e = err(&format!("{HEAD}dest_port = [443]\n"));
        assert!(e.contains("only port"), "{e}");
        let e = err(&format!("{HEAD}http_title = {{ regex = [\"(\"] }}\n"));
        assert!(e.contains("bad regex"), "{e}");
        let e = err(&format!("{HEAD}ja3 = [\"abc\"]\n"));
        assert!(e.contains("32 hex digits"), "{e}");
        let e = err("format = 2\n");
        assert!(e.starts_with("r.toml:1:10: format 2"), "{e}");
        let e = err(&format!("{HEAD}confidence = \"x\"\n"));
        assert!(e.starts_with("r.toml:8:1:"), "{e}");
    }

    #[test]
    fn duplicate_ids_across_files_are_errors() {
        let dir = std::env::temp_dir().join(format!("spanwatch-rules-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        let body = format!("{HEAD}sni = {{ exact = [\"a.example\"] }}\n");
        std::fs::write(dir.join("a.toml"), &body).expect("write");
        std::fs::write(dir.join("b.toml"), &body).expect("write");
        let e = load(Some(&dir)).expect_err("duplicate").to_string();
        assert!(
            e.contains("b.toml:3:1: signature id 5 is already used at") && e.contains("a.toml:3"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
