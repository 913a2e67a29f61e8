//! `map_local`: mitmproxy's `[/filter]/url-regex/file-or-directory`, answering
//! requests from local files, never from outside the directory named.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use regex_lite::Regex;

use super::rule::{self, RuleError};
use crate::core::Connection;
use crate::filter::Filter;
use crate::http::message::{HttpFlow, Response, Verdict};
use crate::middleware::HttpHandler;

const OPTION: &str = "map_local";

/// The largest file [`MapLocal`] serves by default: 64 MiB.
pub const DEFAULT_MAX_FILE: u64 = 64 << 20;

/// mitmproxy's `map_local` option: each rule `[/filter]/url-regex/file-or-directory`
/// answers the requests its filter matches and whose URL `url-regex` finds, with a
/// local file, without contacting the origin.
///
/// - A file is served as it is, for every URL the rule takes.
/// - A directory serves the file the rest of the URL names: the text of the regex's
///   first group if it has one, else what follows the match, without its query and
///   without `/` at either end, percent-decoded. That file, else `index.html` in a
///   directory of that name, else the same two with every character outside
///   `0-9a-zA-Z-_.=(),/` made `_`. An empty rest serves the directory's
///   `index.html`.
/// - `Content-Type` from the file's extension (none for one it does not know); `404`
///   with an empty body when no candidate exists. Of several matching rules, the
///   first with a file answers.
///
/// Nothing outside a rule's directory is ever served: a rest with a `..` segment
/// (written or percent-encoded), and a file that is a symlink (or under one) leading
/// out of the directory, are answered `403` (mitmdump sends the first to the origin
/// and serves the second). Files are read without blocking the proxy's threads, and
/// one larger than [`with_max_file`](Self::with_max_file) is not served (as one that
/// cannot be read: the next rule, else `404`).
///
/// ```no_run
/// use std::sync::Arc;
/// use mitm::addons::MapLocal;
///
/// // https://example.com/static/app.js is answered with ./build/app.js.
/// let local = MapLocal::new([r"|example\.com/static/|./build"])?;
/// let builder = mitm::Mitm::builder().http_handler(Arc::new(local));
/// # let _ = builder;
/// # Ok::<(), mitm::addons::RuleError>(())
/// ```
#[derive(Debug)]
pub struct MapLocal {
    rules: Vec<Rule>,
    max_file: u64,
}

#[derive(Debug)]
struct Rule {
    filter: Option<Filter>,
    regex: Regex,
    /// The file or directory, with every symlink resolved (as when the rule was made).
    path: PathBuf,
    is_dir: bool,
}

/// What a rule found for a URL.
enum Found {
    /// This file (in the rule's directory, or the rule's file).
    File(PathBuf),
    /// These candidates, none of which exists.
    Missing,
    /// A request for something outside the rule's directory.
    Outside,
}

impl MapLocal {
    /// The option with these rules, in mitmproxy's syntax.
    ///
    /// # Errors
    ///
    /// [`RuleError`] for the first rule that does not parse, whose regex does not
    /// compile, or whose file or directory does not exist.
    pub fn new<I, S>(rules: I) -> Result<Self, RuleError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let rules = rule::parse_all(rules, Rule::parse)?;
        Ok(MapLocal {
            rules,
            max_file: DEFAULT_MAX_FILE,
        })
    }

    /// Serves files of up to `bytes`; a larger one is treated as unreadable. Default:
    /// [`DEFAULT_MAX_FILE`].
    pub fn with_max_file(mut self, bytes: u64) -> Self {
        self.max_file = bytes;
        self
    }

    /// Reads `file` whole, if it is a regular file of at most `max_file` bytes.
    async fn read(&self, file: &Path) -> Option<Bytes> {
        let meta = tokio::fs::metadata(file).await.ok()?;
        if !meta.is_file() {
            return None;
        }
        if meta.len() > self.max_file {
            tracing::warn!(file = %file.display(), "map_local: file larger than the limit, not served");
            return None;
        }
        match tokio::fs::read(file).await {
            // It may have grown since.
            Ok(data) if data.len() as u64 <= self.max_file => Some(Bytes::from(data)),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "map_local: cannot read");
                None
            }
        }
    }
}

impl Rule {
    fn parse(text: &str) -> Result<Rule, RuleError> {
        let spec = rule::parse(OPTION, text)?;
        let regex = rule::regex(OPTION, &spec, "", &spec.subject)?;
        let named = expand_home(&spec.replacement);
        let path = std::fs::canonicalize(&named).map_err(rule::file_error(OPTION, text, &named))?;
        let is_dir = path.is_dir();
        Ok(Rule {
            filter: spec.filter,
            regex,
            path,
            is_dir,
        })
    }

    /// The file this rule serves for `url` (which its regex finds).
    async fn find(&self, url: &str) -> Found {
        if !self.is_dir {
            return Found::File(self.path.clone());
        }
        let Some(rest) = rest_of(&self.regex, url) else {
            return Found::Missing;
        };
        if rest.is_empty() {
            return self.inside(self.path.join("index.html")).await;
        }
        let decoded = percent_decode(&rest);
        let Some(relative) = safe_relative(&decoded) else {
            return Found::Outside;
        };
        let escaped: String = decoded
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.=(),/".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let mut candidates = vec![
            self.path.join(&relative),
            self.path.join(&relative).join("index.html"),
        ];
        if escaped != decoded {
            // Made only of safe characters, so safe_relative keeps it inside.
            if let Some(relative) = safe_relative(&escaped) {
                candidates.push(self.path.join(&relative));
                candidates.push(self.path.join(&relative).join("index.html"));
            }
        }
        for candidate in candidates {
            match self.inside(candidate).await {
                Found::Missing => continue,
                found => return found,
            }
        }
        Found::Missing
    }

    /// `candidate` if it is a file whose real path is in the rule's directory.
    async fn inside(&self, candidate: PathBuf) -> Found {
        let Ok(real) = tokio::fs::canonicalize(&candidate).await else {
            return Found::Missing;
        };
        if !real.starts_with(&self.path) {
            tracing::warn!(file = %candidate.display(), "map_local: leads out of {}, refused", self.path.display());
            return Found::Outside;
        }
        match tokio::fs::metadata(&real).await {
            Ok(meta) if meta.is_file() => Found::File(real),
            _ => Found::Missing,
        }
    }
}

/// The part of `url` a directory rule looks up: the regex's first group when it has
/// groups, else what follows its first match, without the query and without `/` at
/// either end.
fn rest_of(regex: &Regex, url: &str) -> Option<String> {
    let caps = regex.captures(url)?;
    if caps.len() > 1 {
        return Some(caps.get(1).map_or("", |m| m.as_str()).to_owned());
    }
    let after = &url[caps.get(0)?.end()..];
    let after = after.split('?').next().unwrap_or("");
    Some(after.trim_matches('/').to_owned())
}

/// `text` with its `%XX` escapes undone (invalid UTF-8 made U+FFFD, as Python's
/// `unquote` does).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 3 <= bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
        {
            // Two ASCII hex digits: a char boundary on both sides.
            if let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `rest` as a path relative to a rule's directory, or `None` when it would leave
/// it: a `..` segment, a NUL. Empty and `.` segments are dropped.
fn safe_relative(rest: &str) -> Option<PathBuf> {
    let mut path = PathBuf::new();
    for segment in rest.split(['/', '\\']) {
        match segment {
            "" | "." => {}
            ".." => return None,
            s if s.contains('\0') => return None,
            s => path.push(s),
        }
    }
    Some(path)
}

/// `~` or `~/…` at the start made the home directory, as mitmproxy expands it.
fn expand_home(path: &str) -> PathBuf {
    if let Some(rest) = path.strip_prefix('~') {
        if rest.is_empty() || rest.starts_with('/') {
            if let Some(home) = std::env::var_os("HOME") {
                return PathBuf::from(home).join(rest.trim_start_matches('/'));
            }
        }
    }
    PathBuf::from(path)
}

/// The media type of a file, by its extension, as Python's `mimetypes` names the
/// common ones; `None` for others.
fn content_type(file: &Path) -> Option<&'static str> {
    let ext = file.extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "html" | "htm" => "text/html",
        "css" => "text/css",
        "js" | "mjs" => "text/javascript",
        "json" => "application/json",
        "txt" => "text/plain",
        "csv" => "text/csv",
        "md" => "text/markdown",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/vnd.microsoft.icon",
        "avif" => "image/avif",
        "pdf" => "application/pdf",
        "wasm" => "application/wasm",
        "zip" => "application/zip",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        "wav" => "audio/x-wav",
        _ => return None,
    })
}

#[async_trait]
impl HttpHandler for MapLocal {
    async fn request(&self, conn: &Connection, flow: &mut HttpFlow) -> Verdict {
        if flow.request.is_connect() {
            return Verdict::Continue;
        }
        let url = flow.request.url();
        let mut tried = false;
        for r in &self.rules {
            if !r.regex.is_match(&url) || !rule::applies(r.filter.as_ref(), conn, flow) {
                continue;
            }
            tried = true;
            match r.find(&url).await {
                Found::File(file) => {
                    let Some(data) = self.read(&file).await else {
                        continue;
                    };
                    let mut response = Response::new(200);
                    response
                        .headers
                        .insert("Server", concat!("mitm ", env!("CARGO_PKG_VERSION")));
                    if let Some(kind) = content_type(&file) {
                        response.headers.insert("Content-Type", kind);
                    }
                    response.body = crate::http::message::Body::Full(data);
                    return Verdict::Respond(response);
                }
                Found::Outside => return Verdict::Respond(Response::new(403)),
                Found::Missing => {}
            }
        }
        if tried {
            return Verdict::Respond(Response::new(404));
        }
        Verdict::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rest_of_the_url_names_the_file() {
        let re = Regex::new(r"example\.com/static").unwrap();
        assert_eq!(
            rest_of(&re, "http://example.com/static/a/b.js?x=1").unwrap(),
            "a/b.js"
        );
        assert_eq!(rest_of(&re, "http://example.com/static/").unwrap(), "");
        let re = Regex::new(r"example\.com/s/(.*)\.map").unwrap();
        assert_eq!(
            rest_of(&re, "http://example.com/s/x.js.map").unwrap(),
            "x.js"
        );
        assert_eq!(percent_decode("a%20b%2e%2E%zz%"), "a b..%zz%");
        assert_eq!(percent_decode("%e2%9c%93"), "\u{2713}");
    }

    #[test]
    fn dot_dot_never_leaves_the_directory() {
        assert_eq!(safe_relative("a//./b").unwrap(), PathBuf::from("a/b"));
        assert!(safe_relative("../etc/passwd").is_none());
        assert!(safe_relative("a/../../b").is_none());
        assert!(safe_relative("a\\..\\b").is_none());
        assert!(safe_relative("a\0").is_none());
        assert_eq!(content_type(Path::new("x/INDEX.HTML")), Some("text/html"));
        assert_eq!(content_type(Path::new("x/unknown.zzz")), None);
    }

    #[test]
    fn a_missing_path_or_bad_regex_is_refused_at_start() {
        let e = MapLocal::new(["/x//nonexistent/dir"]).unwrap_err();
        assert!(matches!(e, RuleError::File { .. }), "{e}");
        assert!(e.to_string().contains("/nonexistent/dir"), "{e}");
        let e = MapLocal::new(["/[/tmp"]).unwrap_err();
        assert!(matches!(e, RuleError::Regex { .. }), "{e}");
    }

    #[tokio::test]
    async fn serves_files_inside_and_refuses_symlinks_out() {
        let root = std::env::temp_dir().join(format!("mitm-ml-{}", std::process::id()));
        let dir = root.join("www");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(root.join("secret.txt"), "secret").unwrap();
        std::fs::write(dir.join("index.html"), "home").unwrap();
        std::fs::write(dir.join("sub/index.html"), "sub home").unwrap();
        std::fs::write(dir.join("a b.txt"), "spaced").unwrap();
        std::fs::write(dir.join("q_x.txt"), "escaped").unwrap();
        let _ = std::fs::remove_file(dir.join("out.txt"));
        std::os::unix::fs::symlink(root.join("secret.txt"), dir.join("out.txt")).unwrap();
        let m = MapLocal::new([format!("|example.test/|{}", dir.display())]).unwrap();
        let r = &m.rules[0];
        let file = |found: Found| match found {
            Found::File(f) => std::fs::read_to_string(f).unwrap(),
            Found::Missing => "missing".into(),
            Found::Outside => "outside".into(),
        };
        assert_eq!(file(r.find("http://example.test/").await), "home");
        assert_eq!(file(r.find("http://example.test/sub/?x").await), "sub home");
        assert_eq!(
            file(r.find("http://example.test/a%20b.txt").await),
            "spaced"
        );
        assert_eq!(
            file(r.find("http://example.test/q%3Fx.txt").await),
            "escaped"
        );
        assert_eq!(file(r.find("http://example.test/nope").await), "missing");
        assert_eq!(file(r.find("http://example.test/out.txt").await), "outside");
        assert_eq!(
            file(r.find("http://example.test/%2e%2e/secret.txt").await),
            "outside"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
