//! A recorded flow as text: one summary line (`mitm read`), or a `curl` command line
//! that sends its request again.

use std::fmt::Write as _;

use super::Record;

/// Header fields curl sets itself from the command line, left out of its `-H` list.
const CURL_SETS: &[&str] = &["content-length", "transfer-encoding", "connection"];

impl Record {
    /// One line: start time (UTC), method, URL, status (or `ERR` and the error), body
    /// size, and duration, e.g.
    /// `2026-11-28 04:31:07.123 GET http://a.localhost/x 200 1.2 KiB 14 ms`.
    pub fn summary(&self) -> String {
        let when = time::OffsetDateTime::from(self.started_at);
        let mut line = format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03} {} {}",
            when.year(),
            u8::from(when.month()),
            when.day(),
            when.hour(),
            when.minute(),
            when.second(),
            when.millisecond(),
            self.request.method,
            self.request.url()
        );
        match (&self.response, &self.error) {
            (Some(r), _) => {
                let _ = write!(line, " {} {}", r.status, human_size(r.body.size));
            }
            (None, Some(e)) => {
                let _ = write!(line, " ERR {e}");
            }
            (None, None) => line.push_str(" -"),
        }
        if let Some(end) = self.timings.response_end {
            let _ = write!(line, " {} ms", end.as_millis());
        }
        line
    }

    /// A `curl` command line that sends this request again: method, URL, header fields
    /// (but those curl sets itself), and the body, quoted for a POSIX shell. A body the
    /// capture kept only in part is sent as kept, and a comment says so.
    /// A `CONNECT` opened a tunnel, which no curl command sends again: its line is a
    /// shell comment saying so.
    pub fn to_curl(&self) -> String {
        let request = &self.request;
        if request.is_connect() {
            return format!(
                "# CONNECT {}: a tunnel, not a request curl can send again",
                request.authority()
            );
        }
        let mut out = String::from("curl");
        if request.method != "GET" || !request.body.data.is_empty() {
            let _ = write!(out, " -X {}", shell_quote(request.method.as_bytes()));
        }
        if request.version == "HTTP/2.0" {
            out.push_str(" --http2");
        }
        let _ = write!(out, " {}", shell_quote(request.url().as_bytes()));
        for (name, value) in request.headers.iter() {
            if CURL_SETS.iter().any(|s| name.eq_ignore_ascii_case(s)) {
                continue;
            }
            let mut field = name.as_bytes().to_vec();
            field.extend_from_slice(b": ");
            field.extend_from_slice(value);
            let _ = write!(out, " -H {}", shell_quote(&field));
        }
        if !request.body.data.is_empty() {
            let _ = write!(out, " --data-binary {}", shell_quote(&request.body.data));
            if request.body.truncated {
                let _ = write!(
                    out,
                    "  # the body was {} bytes; the capture kept {}",
                    request.body.size,
                    request.body.data.len()
                );
            }
        }
        out
    }
}

/// `bytes` quoted for a POSIX shell: in single quotes when they are printable text,
/// else as `$'…'` with escapes.
fn shell_quote(bytes: &[u8]) -> String {
    let plain = bytes
        .iter()
        .all(|&b| (b.is_ascii_graphic() || b == b' ') && b != b'\'');
    if plain && !bytes.is_empty() {
        return format!("'{}'", String::from_utf8_lossy(bytes));
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        if !text.chars().any(char::is_control) {
            return format!("'{}'", text.replace('\'', r"'\''"));
        }
    }
    let mut out = String::from("$'");
    for &b in bytes {
        match b {
            b'\\' => out.push_str(r"\\"),
            b'\'' => out.push_str(r"\'"),
            b'\n' => out.push_str(r"\n"),
            b'\r' => out.push_str(r"\r"),
            b'\t' => out.push_str(r"\t"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out.push('\'');
    out
}

/// `bytes` for people: `512 B`, `1.2 KiB`, `3.4 MiB`, `1.0 GiB`.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 3] = ["KiB", "MiB", "GiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    for unit in UNITS {
        if value < 1024.0 || unit == "GiB" {
            return format!("{value:.1} {unit}");
        }
        value /= 1024.0;
    }
    unreachable!("the loop returns at GiB")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::RecordedBody;
    use crate::core::{Connection, Host, Target};
    use crate::http::message::{Body, HttpFlow, Request, Response};

    fn record(method: &str, body: &'static [u8]) -> Record {
        let mut request = Request::new_to(
            method.into(),
            Target::new("a.localhost", 8443, true),
            "/x?q=1".into(),
        );
        request.headers.insert("Accept", "*/*");
        request
            .headers
            .insert("Content-Length", body.len().to_string());
        request.body = Body::Full(bytes::Bytes::from_static(body));
        let mut flow = HttpFlow::new(1, request);
        flow.request_body_size = body.len() as u64;
        flow.response = Some(Response::new(201).with_body("text/plain", "made"));
        flow.response_body_size = 4;
        Record::from_flow(&Connection::new(1, Host::default()), &flow, 1 << 20)
    }

    #[test]
    fn curl_lines_send_the_request_again() {
        let r = record("POST", b"a=1&b='2'");
        assert_eq!(
            r.to_curl(),
            "curl -X 'POST' 'https://a.localhost:8443/x?q=1' -H 'Accept: */*' \
             --data-binary 'a=1&b='\\''2'\\'''"
        );
        let r = record("GET", b"");
        assert_eq!(
            r.to_curl(),
            "curl 'https://a.localhost:8443/x?q=1' -H 'Accept: */*'"
        );
    }

    #[test]
    fn binary_bodies_are_escaped_and_cut_ones_said_so() {
        let mut r = record("PUT", b"\x00\xff'\n");
        assert!(
            r.to_curl().ends_with(r"--data-binary $'\x00\xff\'\n'"),
            "{}",
            r.to_curl()
        );
        r.request.body = RecordedBody {
            data: bytes::Bytes::from_static(b"ab"),
            size: 10,
            truncated: true,
        };
        assert!(r
            .to_curl()
            .ends_with("# the body was 10 bytes; the capture kept 2"));
    }

    #[test]
    fn summaries_name_method_url_status_and_size() {
        let line = record("GET", b"").summary();
        assert!(
            line.ends_with(" GET https://a.localhost:8443/x?q=1 201 4 B"),
            "{line}"
        );
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(3 << 30), "3.0 GiB");
    }
}
