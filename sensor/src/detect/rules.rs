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
//! value may match (OR). The facts a condition can test, and how each is
//! written, are declared in [`super::facts::FACTS`]: names match exactly or as
//! label-aligned suffixes, ignoring case and a trailing dot; text matches
//! `exact`, `prefix`, `contains` (ASCII case-insensitive) or `regex`. Errors
//! name the file, line, column and what is wrong.

use serde::de::{MapAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

use crate::analyzer::facts::{Fact, Shape, FACTS};

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
    "interception-relay",
];

/// A rule file error, located: the same type as a site configuration's.
pub type RuleError = crate::config::ConfigError;

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

/// A condition as written: its form follows the fact's [`Shape`].
#[derive(Debug, Clone)]
pub enum Cond {
    Name(NameCond),
    Text(TextCond),
    Numbers(Vec<i64>),
    /// Hex digests or JA4 fingerprints.
    Strings(Vec<String>),
    Extensions(ExtCond),
    Flag(bool),
    Threshold(usize),
}

impl Shape {
    /// Reads a condition on a fact of this shape.
    fn read<'de, A: MapAccess<'de>>(self, m: &mut A) -> Result<Cond, A::Error> {
        Ok(match self {
            Shape::Name => Cond::Name(m.next_value()?),
            Shape::Text => Cond::Text(m.next_value()?),
            Shape::Numbers { .. } => Cond::Numbers(m.next_value()?),
            Shape::Hex(_) | Shape::Ja4 => Cond::Strings(m.next_value()?),
            Shape::Extensions => Cond::Extensions(m.next_value()?),
            Shape::Flag => Cond::Flag(m.next_value()?),
            Shape::Threshold => Cond::Threshold(m.next_value()?),
        })
    }
}

/// One signature as written: what it is, and its conditions on facts in the
/// order of [`FACTS`].
#[derive(Debug, Clone)]
pub struct RawSignature {
    pub id: Spanned<u32>,
    pub name: String,
    pub tool: String,
    pub category: Spanned<String>,
    pub confidence: Confidence,
    pub rev: Option<u32>,
    pub description: Option<String>,
    pub references: Vec<String>,
    /// Weak evidence: recorded for a host, alerted on only once the same tool
    /// is already active there on stronger evidence.
    pub supporting: bool,
    /// Which end of the flow the verdict is about, when not the category's
    /// default (tunnels: the client; interception: the server).
    pub host: Option<HostSide>,
    pub conds: Vec<(Fact, Cond)>,
}

impl RawSignature {
    pub fn cond(&self, fact: Fact) -> Option<&Cond> {
        self.conds.iter().find(|(f, _)| *f == fact).map(|(_, c)| c)
    }
}

/// The keys a signature may have besides its conditions.
const META: [&str; 10] = [
    "id",
    "name",
    "tool",
    "category",
    "confidence",
    "rev",
    "description",
    "references",
    "supporting",
    "host",
];

/// Every key a signature may have, for "unknown field" errors.
fn keys() -> &'static [&'static str] {
    static KEYS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        META.iter()
            .copied()
            .chain(FACTS.iter().map(|d| d.name))
            .collect()
    })
}

/// A signature key: known, or an error located at the key.
struct Key(Result<usize, Fact>);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let k = String::deserialize(d)?;
        if let Some(i) = META.iter().position(|m| *m == k) {
            return Ok(Key(Ok(i)));
        }
        match Fact::by_name(&k) {
            Some(f) => Ok(Key(Err(f))),
            None => Err(serde::de::Error::unknown_field(&k, keys())),
        }
    }
}

struct SigVisitor;

impl<'de> Visitor<'de> for SigVisitor {
    type Value = RawSignature;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a signature table")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<RawSignature, A::Error> {
        use serde::de::Error;
        let (mut id, mut name, mut tool, mut category, mut confidence) =
            (None, None, None, None, None);
        let (mut rev, mut description, mut references) = (None, None, Vec::new());
        let (mut supporting, mut host, mut conds) = (false, None, Vec::new());
        while let Some(Key(k)) = m.next_key()? {
            match k {
                Ok(0) => id = Some(m.next_value()?),
                Ok(1) => name = Some(m.next_value()?),
                Ok(2) => tool = Some(m.next_value()?),
                Ok(3) => category = Some(m.next_value()?),
                Ok(4) => confidence = Some(m.next_value()?),
                Ok(5) => rev = Some(m.next_value()?),
                Ok(6) => description = Some(m.next_value()?),
                Ok(7) => references = m.next_value()?,
                Ok(8) => supporting = m.next_value()?,
                Ok(_) => host = Some(m.next_value()?),
                Err(fact) => conds.push((fact, fact.decl().shape.read(&mut m)?)),
            }
        }
        conds.sort_by_key(|(f, _)| *f);
        Ok(RawSignature {
            id: id.ok_or_else(|| A::Error::missing_field("id"))?,
            name: name.ok_or_else(|| A::Error::missing_field("name"))?,
            tool: tool.ok_or_else(|| A::Error::missing_field("tool"))?,
            category: category.ok_or_else(|| A::Error::missing_field("category"))?,
            confidence: confidence.ok_or_else(|| A::Error::missing_field("confidence"))?,
            rev,
            description,
            references,
            supporting,
            host,
            conds,
        })
    }
}

impl<'de> Deserialize<'de> for RawSignature {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(SigVisitor)
    }
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
    if s.conds.is_empty() {
        return Err("has no condition".into());
    }
    for (fact, c) in &s.conds {
        validate_cond(*fact, c)?;
    }
    // A port or status alone would fire on ordinary traffic.
    if s.conds.iter().all(|(f, _)| f.decl().weak) {
        return Err("only port/status/count conditions: add a name, text, fingerprint or certificate condition".into());
    }
    Ok(())
}

/// Checks one condition's values against its fact's shape.
fn validate_cond(fact: Fact, c: &Cond) -> Result<(), String> {
    let name = fact.name();
    match (fact.decl().shape, c) {
        (Shape::Name, Cond::Name(n)) => {
            if n.exact.is_empty() && n.suffix.is_empty() {
                return Err("a name condition needs `exact` or `suffix` values".into());
            }
            n.exact
                .iter()
                .chain(&n.suffix)
                .try_for_each(|v| dns_name(v))
        }
        (Shape::Text, Cond::Text(t)) => {
            if t.exact.is_empty()
                && t.prefix.is_empty()
                && t.contains.is_empty()
                && t.regex.is_empty()
            {
                return Err(
                    "a text condition needs `exact`, `prefix`, `contains` or `regex` values".into(),
                );
            }
            for r in &t.regex {
                regex::Regex::new(r).map_err(|e| format!("bad regex `{r}`: {e}"))?;
            }
            Ok(())
        }
        (Shape::Numbers { min, max, .. }, Cond::Numbers(l)) => {
            match l.iter().find(|n| !(min..=max).contains(n)) {
                Some(n) => Err(format!("{name}: {n} is out of range ({min} to {max})")),
                None => Ok(()),
            }
        }
        (Shape::Hex(len), Cond::Strings(l)) => match l
            .iter()
            .find(|h| h.len() != len || !h.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            Some(h) => Err(format!("`{h}` is not {len} hex digits")),
            None => Ok(()),
        },
        (Shape::Ja4, Cond::Strings(l)) => l.iter().try_for_each(|j| ja4_pattern(j)),
        (Shape::Threshold, Cond::Threshold(n)) if *n < 2 => {
            Err(format!("{name} must be at least 2"))
        }
        _ => Ok(()),
    }
}

/// Letters, digits, hyphen and underscore in dot-separated labels.
fn dns_name(v: &str) -> Result<(), String> {
    let v = v.strip_suffix('.').unwrap_or(v);
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
    Ok(())
}

/// A whole fingerprint, or a prefix ending in `*` (`t13d2812h2_a01be8c064b6_*`).
fn ja4_pattern(j: &str) -> Result<(), String> {
    let ok = match j.strip_suffix('*') {
        Some(p) => !p.is_empty() && p.len() < 36,
        None => j.len() == 36 && j.matches('_').count() == 2,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{j}` is not a JA4 fingerprint (a_b_c, 36 characters) or a prefix ending in `*`"
        ))
    }
}

/// Checks that no signature id is used twice (across all files of a set).
pub fn check_unique(all: &[Signature]) -> Result<(), RuleError> {
    let mut seen = std::collections::HashMap::new();
    for s in all {
        if let Some((file, line)) = seen.insert(s.id(), (s.file.clone(), s.line)) {
            return Err(RuleError {
                file: s.file.clone(),
                line: s.line,
                col: 1,
                msg: format!("signature id {} is already used at {file}:{line}", s.id()),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let body = format!("{HEAD}sni = {{ exact = [\"a.example\"] }}\n");
        let mut all = parse_file("a.toml", &body).expect("valid");
        all.extend(parse_file("b.toml", &body).expect("valid"));
        let e = check_unique(&all).expect_err("duplicate").to_string();
        assert_eq!(e, "b.toml:3:1: signature id 5 is already used at a.toml:3");
    }

    #[test]
    fn conditions_follow_the_fact_table() {
        let text = format!("{HEAD}dest_port = [70000]\nsni = {{ exact = [\"a.example\"] }}\n");
        let e = err(&text);
        assert!(e.contains("dest_port: 70000 is out of range"), "{e}");
        let e = err(&format!("{HEAD}shared_spki_names = 1\nchain_len = [1]\n"));
        assert!(e.contains("shared_spki_names must be at least 2"), "{e}");
        // written in any order, kept in the table's order
        let text = format!(
            "{HEAD}ja3 = [\"{}\"]\nsni = {{ exact = [\"a.example\"] }}\n",
            "a".repeat(32)
        );
        let s = parse_file("r.toml", &text).expect("valid");
        let facts: Vec<_> = s[0].raw.conds.iter().map(|(f, _)| *f).collect();
        assert_eq!(facts, [Fact::Sni, Fact::Ja3]);
    }
}
