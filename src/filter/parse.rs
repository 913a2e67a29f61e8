//! The parser of the filter language: text to an [`Expr`], with positioned errors.

use regex_lite::{Regex, RegexBuilder};

use super::{Expr, FilterError, FilterErrorKind, Replayed, Sides, MAX_FILTER_DEPTH};

/// A recursive-descent parser over `text`, at byte offset `pos`. Every token it looks
/// for is ASCII, so `pos` always sits on a character boundary.
pub(super) struct Parser<'a> {
    pub(super) text: &'a str,
    pub(super) pos: usize,
    /// Parentheses open around `pos`.
    pub(super) depth: usize,
}

impl Parser<'_> {
    /// The next character after white space (skipped).
    pub(super) fn peek(&mut self) -> Option<char> {
        let rest = &self.text[self.pos..];
        let trimmed = rest.trim_start();
        self.pos += rest.len() - trimmed.len();
        trimmed.chars().next()
    }

    pub(super) fn error(&self, kind: FilterErrorKind) -> FilterError {
        FilterError::new(self.pos, kind)
    }

    /// `or+`, joined by `&`: up to the end or a `)`.
    pub(super) fn filter(&mut self) -> Result<Expr, FilterError> {
        let mut all = vec![self.or()?];
        while !matches!(self.peek(), None | Some(')')) {
            all.push(self.or()?);
        }
        Ok(joined(all, Expr::And))
    }

    fn or(&mut self) -> Result<Expr, FilterError> {
        let mut any = vec![self.and()?];
        while self.peek() == Some('|') {
            self.pos += 1;
            any.push(self.and()?);
        }
        Ok(joined(any, Expr::Or))
    }

    fn and(&mut self) -> Result<Expr, FilterError> {
        let mut all = vec![self.not()?];
        while self.peek() == Some('&') {
            self.pos += 1;
            all.push(self.not()?);
        }
        Ok(joined(all, Expr::And))
    }

    /// `!`s are counted, not nested: `!!!a` is `!a`.
    fn not(&mut self) -> Result<Expr, FilterError> {
        let mut negate = false;
        while self.peek() == Some('!') {
            self.pos += 1;
            negate = !negate;
        }
        let atom = self.atom()?;
        Ok(if negate {
            Expr::Not(Box::new(atom))
        } else {
            atom
        })
    }

    fn atom(&mut self) -> Result<Expr, FilterError> {
        match self.peek() {
            None => Err(self.error(FilterErrorKind::MissingExpression("the end".into()))),
            Some(c @ (')' | '&' | '|')) => {
                Err(self.error(FilterErrorKind::MissingExpression(format!("'{c}'"))))
            }
            Some('(') => {
                if self.depth == MAX_FILTER_DEPTH {
                    return Err(self.error(FilterErrorKind::TooDeep(MAX_FILTER_DEPTH)));
                }
                let open = self.pos;
                self.pos += 1;
                self.depth += 1;
                let inner = self.filter()?;
                self.depth -= 1;
                if self.peek() != Some(')') {
                    return Err(FilterError::new(open, FilterErrorKind::UnclosedParenthesis));
                }
                self.pos += 1;
                Ok(inner)
            }
            Some('~') => self.operator(),
            Some(c) => {
                let Some(word) = self.argument() else {
                    return Err(self.error(FilterErrorKind::MissingExpression(format!("'{c}'"))));
                };
                let (at, word) = word?;
                Ok(Expr::Url(regex(&word, at, Flags::IgnoreCase)?))
            }
        }
    }

    /// `~NAME` and its argument.
    fn operator(&mut self) -> Result<Expr, FilterError> {
        let text = self.text;
        let start = self.pos;
        let rest = &text[start + 1..];
        let len = rest
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(rest.len());
        self.pos = start + 1 + len;
        let name = &text[start..self.pos];
        let flags = match name {
            "~d" | "~m" | "~u" => Flags::IgnoreCase,
            "~h" | "~hq" | "~hs" | "~comment" => Flags::Lines,
            "~b" | "~bq" | "~bs" => Flags::DotAll,
            "~t" | "~tq" | "~ts" | "~src" | "~dst" | "~marker" => Flags::Plain,
            _ => {
                return Ok(match name {
                    "~all" | "~http" => Expr::Always,
                    "~tcp" | "~udp" | "~dns" => Expr::Never,
                    "~a" => Expr::Asset,
                    "~e" => Expr::Failed,
                    "~marked" => Expr::Marked,
                    "~replay" => Expr::Replay(Replayed::Any),
                    "~replayq" => Expr::Replay(Replayed::Request),
                    "~replays" => Expr::Replay(Replayed::Response),
                    "~q" => Expr::NoResponse,
                    "~s" => Expr::HasResponse,
                    "~websocket" => Expr::WebSocket,
                    "~c" => self.status()?,
                    _ => {
                        return Err(FilterError::new(
                            start,
                            FilterErrorKind::UnknownOperator(name.into()),
                        ))
                    }
                })
            }
        };
        let (at, pattern) = self.required(name)?;
        let re = regex(&pattern, at, flags)?;
        Ok(match name {
            "~d" => Expr::Domain(re),
            "~m" => Expr::Method(re),
            "~u" => Expr::Url(re),
            "~src" => Expr::Source(re),
            "~dst" => Expr::Destination(re),
            "~marker" => Expr::Marker(re),
            "~comment" => Expr::Comment(re),
            _ => {
                let sides = Sides::of(&name[2..]);
                match &name[..2] {
                    "~h" => Expr::Header(sides, re),
                    "~b" => Expr::Body(sides, re),
                    _ => Expr::ContentType(sides, re),
                }
            }
        })
    }

    /// The argument of `~c`: the digits that follow (as in mitmproxy, what comes after
    /// them is the next expression: `~c 200&~q` is `~c 200 & ~q`).
    fn status(&mut self) -> Result<Expr, FilterError> {
        self.peek();
        let start = self.pos;
        let digits = self.text[start..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count();
        if digits == 0 {
            let (at, word) = self.required("~c")?;
            return Err(FilterError::new(at, FilterErrorKind::BadStatus(word)));
        }
        self.pos += digits;
        let code = &self.text[start..self.pos];
        code.parse()
            .map(Expr::Status)
            .map_err(|_| FilterError::new(start, FilterErrorKind::BadStatus(code.into())))
    }

    /// The argument `operator` needs, with its position.
    fn required(&mut self, operator: &str) -> Result<(usize, String), FilterError> {
        self.argument()
            .unwrap_or_else(|| Err(self.error(FilterErrorKind::MissingArgument(operator.into()))))
    }

    /// A word or a quoted string at the next token, with its position; `None` when the
    /// next token is neither.
    fn argument(&mut self) -> Option<Result<(usize, String), FilterError>> {
        let next = self.peek()?;
        let text = self.text;
        let start = self.pos;
        let quote = match next {
            q @ ('"' | '\'') => q,
            c if is_word_char(c) => {
                let rest = &text[start..];
                let len = rest.find(|c: char| !is_word_char(c)).unwrap_or(rest.len());
                self.pos += len;
                return Some(Ok((start, rest[..len].to_owned())));
            }
            _ => return None,
        };
        let mut value = String::new();
        let mut chars = text[start + 1..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, e)) if e == quote => value.push(e),
                    Some((_, e)) => {
                        value.push('\\');
                        value.push(e);
                    }
                    None => break,
                },
                _ if c == quote => {
                    self.pos = start + 1 + i + 1;
                    return Some(Ok((start, value)));
                }
                _ => value.push(c),
            }
        }
        Some(Err(FilterError::new(
            start,
            FilterErrorKind::UnterminatedString,
        )))
    }
}

/// Whether `c` may be part of an unquoted word (as in mitmproxy: anything but white
/// space, parentheses, `~` and quotes).
fn is_word_char(c: char) -> bool {
    !c.is_whitespace() && !matches!(c, '(' | ')' | '~' | '"' | '\'')
}

/// One expression, or `join` of several.
fn joined(mut parts: Vec<Expr>, join: fn(Vec<Expr>) -> Expr) -> Expr {
    if parts.len() == 1 {
        parts.remove(0)
    } else {
        join(parts)
    }
}

/// How an operator's regex matches (as mitmproxy compiles it).
#[derive(Debug, Clone, Copy)]
enum Flags {
    Plain,
    /// Ignoring ASCII case.
    IgnoreCase,
    /// With `^` and `$` matching at line ends.
    Lines,
    /// With `.` matching a line end too.
    DotAll,
}

/// `pattern` compiled with `flags`, found at `at`.
fn regex(pattern: &str, at: usize, flags: Flags) -> Result<Regex, FilterError> {
    RegexBuilder::new(pattern)
        .case_insensitive(matches!(flags, Flags::IgnoreCase))
        .multi_line(matches!(flags, Flags::Lines))
        .dot_matches_new_line(matches!(flags, Flags::DotAll))
        .build()
        .map_err(|e| {
            FilterError::new(
                at,
                FilterErrorKind::BadRegex {
                    pattern: pattern.into(),
                    error: e.to_string(),
                },
            )
        })
}
