//! What `map_remote`, `map_local`, `modify_headers` and `modify_body` share: their
//! error ([`RuleError`]), a rule's filter check, Python's string escapes and
//! replacement templates turned into ours.

use std::path::PathBuf;

use regex_lite::Regex;

use super::spec::{Spec, SpecError};
use crate::core::Connection;
use crate::filter::{Filter, Live};
use crate::http::message::HttpFlow;

/// Why a rule of `map_remote`, `map_local`, `modify_headers` or `modify_body` was
/// refused when the option was built. Each names the rule as written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    /// The rule is not `[/filter]/subject/replacement`.
    #[error("{option} rule {rule:?}: {error}")]
    Spec {
        /// The option (`map_remote`, …).
        option: &'static str,
        /// The rule, as written.
        rule: String,
        /// What is wrong with it.
        error: SpecError,
    },
    /// The rule's regular expression does not compile.
    #[error("{option} rule {rule:?}: invalid regular expression {regex:?}: {error}")]
    Regex {
        /// The option (`map_remote`, …).
        option: &'static str,
        /// The rule, as written.
        rule: String,
        /// The regular expression, as given to the regex engine.
        regex: String,
        /// The regex engine's message.
        error: String,
    },
    /// A file the rule names cannot be read (`@file` of `modify_headers` and
    /// `modify_body`, the file or directory of `map_local`).
    #[error("{option} rule {rule:?}: cannot read {}: {source}", path.display())]
    File {
        /// The option (`map_remote`, …).
        option: &'static str,
        /// The rule, as written.
        rule: String,
        /// The file.
        path: PathBuf,
        /// Why it cannot be read.
        #[source]
        source: std::io::Error,
    },
    /// A header name or value that no HTTP message may carry.
    #[error("{option} rule {rule:?}: {what}")]
    Header {
        /// The option (`modify_headers`).
        option: &'static str,
        /// The rule, as written.
        rule: String,
        /// What is wrong.
        what: String,
    },
}

/// Each of `rules` parsed with `parse`, in order; the first error stops it.
pub(crate) fn parse_all<I, S, R>(
    rules: I,
    parse: impl Fn(&str) -> Result<R, RuleError>,
) -> Result<Vec<R>, RuleError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    rules.into_iter().map(|text| parse(text.as_ref())).collect()
}

/// Parses `rule` as a [`Spec`] for `option`.
pub(crate) fn parse(option: &'static str, rule: &str) -> Result<Spec, RuleError> {
    rule.parse().map_err(|error| RuleError::Spec {
        option,
        rule: rule.to_owned(),
        error,
    })
}

/// The error for a file `rule` of `option` names that cannot be read: for
/// `map_err` on the read.
pub(crate) fn file_error(
    option: &'static str,
    rule: &str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> RuleError {
    let (rule, path) = (rule.to_owned(), path.into());
    move |source| RuleError::File {
        option,
        rule,
        path,
        source,
    }
}

/// Compiles `regex` (with `flags`, such as `(?s)`, in front) for `rule`.
pub(crate) fn regex(
    option: &'static str,
    rule: &Spec,
    flags: &str,
    regex: &str,
) -> Result<Regex, RuleError> {
    Regex::new(&format!("{flags}{regex}")).map_err(|e| RuleError::Regex {
        option,
        rule: rule.as_str().to_owned(),
        regex: regex.to_owned(),
        error: e.to_string(),
    })
}

/// Whether a rule with `filter` applies to `flow`: always without a filter, which
/// costs no matching.
pub(crate) fn applies(filter: Option<&Filter>, conn: &Connection, flow: &HttpFlow) -> bool {
    filter.is_none_or(|f| f.matches(&Live::new(conn, flow)))
}

/// Python's backslash escapes undone, as mitmproxy reads the header names and values
/// and the body regexes and replacements of its options (`\n`, `\t`, `\xHH`, octal
/// `\ooo`, `\\`, quotes; an unknown escape such as `\d` stays as written, so regex
/// escapes pass).
pub(crate) fn unescape(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'\\' || i + 1 == bytes.len() {
            out.push(b);
            i += 1;
            continue;
        }
        let next = bytes[i + 1];
        i += 2;
        match next {
            b'\\' => out.push(b'\\'),
            b'\'' => out.push(b'\''),
            b'"' => out.push(b'"'),
            b'a' => out.push(0x07),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'\n' => {}
            b'x' if bytes.len() >= i + 2
                && bytes[i].is_ascii_hexdigit()
                && bytes[i + 1].is_ascii_hexdigit() =>
            {
                let hex = std::str::from_utf8(&bytes[i..i + 2]).unwrap_or("0");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(0));
                i += 2;
            }
            b'0'..=b'7' => {
                let mut value = u32::from(next - b'0');
                let mut digits = 1;
                while digits < 3 && i < bytes.len() && (b'0'..=b'7').contains(&bytes[i]) {
                    value = value * 8 + u32::from(bytes[i] - b'0');
                    i += 1;
                    digits += 1;
                }
                out.push((value & 0xff) as u8);
            }
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    out
}

/// A replacement in Python's `re.sub` template syntax (`\1`, `\g<1>`, `\g<name>`,
/// `\n`, `\\`) as a replacement the regex engine takes (`${1}`, `$$` for a `$`).
pub(crate) fn template(python: &str) -> String {
    let mut out = String::with_capacity(python.len() + 8);
    let mut chars = python.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' => match chars.next() {
                Some(d @ '0'..='9') => {
                    let mut group = String::from(d);
                    if let Some(&e @ '0'..='9') = chars.peek() {
                        group.push(e);
                        chars.next();
                    }
                    out.push_str(&format!("${{{group}}}"));
                }
                Some('g') if chars.peek() == Some(&'<') => {
                    chars.next();
                    let name: String = chars.by_ref().take_while(|&c| c != '>').collect();
                    out.push_str(&format!("${{{name}}}"));
                }
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('t') => out.push('\t'),
                Some('\\') => out.push('\\'),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_escapes_are_undone_and_unknown_ones_kept() {
        assert_eq!(unescape(r"a\nb\t\x41\101\\"), b"a\nb\tAA\\");
        assert_eq!(unescape(r"\d+\.x"), br"\d+\.x");
        assert_eq!(unescape("trailing\\"), b"trailing\\");
        assert_eq!(unescape(r"\xZZ"), br"\xZZ");
    }

    #[test]
    fn python_templates_become_ours() {
        assert_eq!(template(r"\1-\g<2>-\g<name>"), "${1}-${2}-${name}");
        assert_eq!(template("cost: $5"), "cost: $$5");
        assert_eq!(template(r"a\\b\nc"), "a\\b\nc");
        let re = Regex::new("(a)(b)").unwrap();
        assert_eq!(re.replace_all("ab", template(r"\2\1$").as_str()), "ba$");
    }
}
