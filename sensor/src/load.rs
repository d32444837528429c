//! Configuration from files, at the edge: the site configuration, signature
//! directories, and the signatures bundled in the binary. The core (`config`,
//! `detect`) parses text it is handed; this module is what reads it.

use std::path::Path;
use std::sync::Arc;

use crate::config::{ConfigError, SiteConfig};
use crate::detect::rules::{self, Signature};
use crate::detect::RuleSet;

/// The signatures shipped in the binary (`signatures/` at build time).
pub const BUNDLED: &[(&str, &str)] = &[
    ("ngrok.toml", include_str!("../../signatures/ngrok.toml")),
    (
        "mitmproxy.toml",
        include_str!("../../signatures/mitmproxy.toml"),
    ),
    (
        "interception-tools.toml",
        include_str!("../../signatures/interception-tools.toml"),
    ),
    (
        "tunnel-services.toml",
        include_str!("../../signatures/tunnel-services.toml"),
    ),
];

fn unreadable(file: &Path, e: std::io::Error) -> ConfigError {
    ConfigError {
        file: file.display().to_string(),
        line: 0,
        col: 0,
        msg: format!("cannot read: {e}"),
    }
}

/// Reads a site configuration file; none given is the empty configuration
/// (every host in no segment).
pub fn site(path: Option<&Path>) -> Result<SiteConfig, ConfigError> {
    let Some(path) = path else {
        return Ok(SiteConfig::default());
    };
    let text = std::fs::read_to_string(path).map_err(|e| unreadable(path, e))?;
    SiteConfig::parse(&path.display().to_string(), &text)
}

/// The signatures in `dir` (every `*.toml`, sorted by name), or the bundled
/// ones; an empty directory is an error, not an empty set.
pub fn rules(dir: Option<&Path>) -> Result<RuleSet, ConfigError> {
    let Some(dir) = dir else {
        return bundled();
    };
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| unreadable(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ConfigError {
            file: dir.display().to_string(),
            line: 0,
            col: 0,
            msg: "no *.toml signature files".into(),
        });
    }
    let mut all = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| unreadable(&f, e))?;
        all.extend(rules::parse_file(&f.display().to_string(), &text)?);
    }
    compile(all)
}

/// The bundled signatures. An error here is a bug of the build (a test
/// checks the set); it is reported, never replaced by an empty set.
pub fn bundled() -> Result<RuleSet, ConfigError> {
    let mut all = Vec::new();
    for (name, text) in BUNDLED {
        all.extend(rules::parse_file(&format!("signatures/{name}"), text)?);
    }
    compile(all)
}

fn compile(all: Vec<Signature>) -> Result<RuleSet, ConfigError> {
    rules::check_unique(&all)?;
    Ok(RuleSet::compile(all))
}

/// The bundled signatures, compiled once per process (for the defaults of
/// tools, tests and fuzzing; the sensor itself loads through [`rules()`] and
/// reports an error).
///
/// # Panics
/// If the bundled set does not load: the binary was built from broken
/// signature files, which `bundled_signatures_load` catches first.
pub fn bundled_rules() -> Arc<RuleSet> {
    static RULES: std::sync::OnceLock<Arc<RuleSet>> = std::sync::OnceLock::new();
    let set = RULES.get_or_init(|| match bundled() {
        Ok(r) => Arc::new(r),
        Err(e) => panic!("the bundled signatures do not load: {e}"),
    });
    Arc::clone(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_signatures_load() {
        let set = bundled().expect("bundled signatures are valid");
        assert!(set.len() > 40, "{}", set.len());
        for tool in ["ngrok", "mitmproxy", "burp", "cloudflared"] {
            assert!(set.sigs.iter().any(|c| c.sig.raw.tool == tool), "{tool}");
        }
    }

    #[test]
    fn directories_duplicates_and_missing_files_are_errors() {
        let dir = std::env::temp_dir().join(format!("spanwatch-rules-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        let e = rules(Some(&dir)).expect_err("empty").to_string();
        assert!(e.ends_with("no *.toml signature files"), "{e}");
        let body = "format = 1\n[[signature]]\nid = 5\nname = \"n\"\ntool = \"t\"\ncategory = \"tunnel-agent\"\nconfidence = \"high\"\nsni = { exact = [\"a.example\"] }\n";
        std::fs::write(dir.join("a.toml"), body).expect("write");
        assert_eq!(rules(Some(&dir)).expect("one file").len(), 1);
        std::fs::write(dir.join("b.toml"), body).expect("write");
        let e = rules(Some(&dir)).expect_err("duplicate").to_string();
        assert!(
            e.contains("b.toml:3:1: signature id 5 is already used at") && e.contains("a.toml:3"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).ok();
        let e = site(Some(&dir.join("missing.toml")))
            .expect_err("missing")
            .to_string();
        assert!(e.contains("missing.toml:0:0: cannot read"), "{e}");
    }
}
