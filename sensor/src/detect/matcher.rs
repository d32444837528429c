//! Text conditions, compiled.

use regex::RegexSet;

use super::rules::TextCond;

/// A compiled text condition: ASCII case-insensitive exact/prefix/contains, or regex.
#[derive(Debug)]
pub struct TextMatcher {
    exact: Vec<String>,
    prefix: Vec<String>,
    contains: Vec<String>,
    regex: Option<(RegexSet, Vec<String>)>,
}

impl TextMatcher {
    pub fn new(t: &TextCond) -> Self {
        let low = |v: &Vec<String>| v.iter().map(|s| s.to_ascii_lowercase()).collect();
        TextMatcher {
            exact: low(&t.exact),
            prefix: low(&t.prefix),
            contains: low(&t.contains),
            // validated when the file was loaded
            regex: (!t.regex.is_empty())
                .then(|| RegexSet::new(&t.regex).ok().map(|s| (s, t.regex.clone())))
                .flatten(),
        }
    }

    /// The pattern that matches `s`, as evidence. Patterns are stored lower
    /// case; `s` is compared without being copied (this runs on every
    /// certificate of every handshake).
    pub fn find(&self, s: &str) -> Option<String> {
        let b = s.as_bytes();
        if let Some(p) = self
            .exact
            .iter()
            .find(|p| b.eq_ignore_ascii_case(p.as_bytes()))
        {
            return Some(p.clone());
        }
        let starts = |p: &str| {
            b.get(..p.len())
                .is_some_and(|h| h.eq_ignore_ascii_case(p.as_bytes()))
        };
        if let Some(p) = self.prefix.iter().find(|p| starts(p)) {
            return Some(format!("{p}*"));
        }
        let contains = |p: &str| {
            let p = p.as_bytes();
            p.is_empty() || b.windows(p.len()).any(|w| w.eq_ignore_ascii_case(p))
        };
        if let Some(p) = self.contains.iter().find(|p| contains(p)) {
            return Some(format!("*{p}*"));
        }
        let (set, src) = self.regex.as_ref()?;
        set.matches(s)
            .iter()
            .next()
            .map(|i| format!("/{}/", src[i]))
    }
}
