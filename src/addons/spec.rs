//! The option syntax mitmproxy's traffic-changing options share:
//! `[SEP FILTER] SEP SUBJECT SEP REPLACEMENT`, where the first character is the
//! separator (any character, usually `/`, `|` or `:`).

use std::fmt;
use std::str::FromStr;

use crate::filter::{Filter, FilterError};

/// One rule in mitmproxy's syntax: `/subject/replacement` or
/// `/filter/subject/replacement`. The first character separates the parts (so a part
/// may hold `/` when another separator is chosen: `|~d example|^/a|/b`); a rule
/// with three parts starts with a [`Filter`], one with two matches every flow.
///
/// ```
/// use mitm::addons::Spec;
///
/// let spec: Spec = "|~d example\\.com|^http://|https://".parse()?;
/// assert_eq!(spec.filter.as_ref().unwrap().as_str(), "~d example\\.com");
/// assert_eq!((spec.subject.as_str(), spec.replacement.as_str()), ("^http://", "https://"));
///
/// let spec: Spec = "/x-debug/1".parse()?;
/// assert!(spec.filter.is_none());
/// # Ok::<(), mitm::addons::SpecError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Spec {
    /// The flows the rule applies to; `None` for every flow.
    pub filter: Option<Filter>,
    /// What the rule looks for (a regex, a header name: each option says).
    pub subject: String,
    /// What it puts there (each option says).
    pub replacement: String,
    /// The text the rule was parsed from.
    text: String,
}

impl Spec {
    /// The text the rule was parsed from.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for Spec {
    type Err = SpecError;

    fn from_str(text: &str) -> Result<Self, SpecError> {
        let mut chars = text.chars();
        let sep = chars.next().ok_or(SpecError::Empty)?;
        let parts: Vec<&str> = chars.as_str().splitn(3, sep).collect();
        let (filter, subject, replacement) = match parts[..] {
            [subject, replacement] => (None, subject, replacement),
            [filter, subject, replacement] => {
                let filter = Filter::parse(filter).map_err(|error| SpecError::Filter {
                    filter: filter.to_owned(),
                    error,
                })?;
                (Some(filter), subject, replacement)
            }
            _ => return Err(SpecError::Parts { separator: sep }),
        };
        Ok(Spec {
            filter,
            subject: subject.to_owned(),
            replacement: replacement.to_owned(),
            text: text.to_owned(),
        })
    }
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Why a rule in mitmproxy's option syntax ([`Spec`]) could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The rule is empty.
    #[error("empty rule: expected [/filter]/subject/replacement")]
    Empty,
    /// The rule does not have two or three parts.
    #[error(
        "expected 2 or 3 parts separated by {separator:?} (the rule's first character): \
         [{separator}filter]{separator}subject{separator}replacement"
    )]
    Parts {
        /// The separator: the rule's first character.
        separator: char,
    },
    /// The filter part is not a valid filter.
    #[error("invalid filter {filter:?}: {error}")]
    Filter {
        /// The filter part, as written.
        filter: String,
        /// What is wrong with it.
        error: FilterError,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_or_three_parts_split_on_the_first_character() {
        let s: Spec = "/a/b".parse().unwrap();
        assert!(s.filter.is_none());
        assert_eq!((s.subject.as_str(), s.replacement.as_str()), ("a", "b"));
        // The third separator and after belong to the replacement.
        let s: Spec = ":~q:a:b:c".parse().unwrap();
        assert_eq!(s.filter.unwrap().as_str(), "~q");
        assert_eq!((s.subject.as_str(), s.replacement.as_str()), ("a", "b:c"));
        // An empty replacement is a part.
        let s: Spec = "/h/".parse().unwrap();
        assert_eq!((s.subject.as_str(), s.replacement.as_str()), ("h", ""));
        // A multi-byte separator.
        let s: Spec = "→a→b".parse().unwrap();
        assert_eq!(s.subject, "a");
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        assert_eq!("".parse::<Spec>().unwrap_err(), SpecError::Empty);
        assert_eq!(
            "/a".parse::<Spec>().unwrap_err(),
            SpecError::Parts { separator: '/' }
        );
        let e = "/~x/a/b".parse::<Spec>().unwrap_err();
        assert!(e.to_string().starts_with("invalid filter \"~x\""), "{e}");
    }
}
