//! The filter language against mitmproxy's rules, on records.

use std::io::Write;
use std::time::SystemTime;

use bytes::Bytes;
use rand::{Rng, SeedableRng};

use super::*;
use crate::capture::{
    Record, RecordedBody, RecordedMessage, RecordedRequest, RecordedResponse, RecordedTimings,
};

/// A record of `method url` (`scheme://host[:port]/path`) with no response.
pub(crate) fn record(method: &str, url: &str) -> Record {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().unwrap()),
        None => (authority, if scheme == "https" { 443 } else { 80 }),
    };
    let mut headers = Headers::new();
    headers.append("Host", authority.to_owned());
    Record {
        annotations: Default::default(),
        websocket: None,
        facts: Default::default(),
        started_at: SystemTime::UNIX_EPOCH,
        client: None,
        server: None,
        client_tls: scheme == "https",
        tls: Default::default(),
        request: RecordedRequest {
            method: method.into(),
            scheme: scheme.into(),
            host: host.into(),
            port,
            path: if path.is_empty() { "/" } else { path }.into(),
            version: "HTTP/1.1".into(),
            headers,
            body: RecordedBody::default(),
        },
        response: None,
        timings: RecordedTimings::default(),
        error: None,
    }
}

/// `r` with a response of `status`, `headers` and `body`.
pub(crate) fn answered(
    mut r: Record,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Record {
    let mut h = Headers::new();
    for (n, v) in headers {
        h.append(n.to_string(), v.to_string());
    }
    r.response = Some(RecordedResponse {
        status,
        reason: String::new(),
        version: "HTTP/1.1".into(),
        headers: h,
        body: RecordedBody::whole(Bytes::copy_from_slice(body)),
    });
    r
}

fn get() -> Record {
    record("GET", "https://www.example.com/search?q=rust")
}

fn post() -> Record {
    let mut r = record("POST", "http://api.test.localhost:8080/upload");
    r.request.headers.append("Content-Type", "application/json");
    r.request.headers.append("X-Token", "Secret");
    r.request.body = RecordedBody::whole(Bytes::from_static(b"{\"name\":\"Ferris\"}"));
    answered(
        r,
        201,
        &[("Content-Type", "text/plain; charset=utf-8")],
        b"created",
    )
}

fn is(filter: &str, r: &Record) -> bool {
    Filter::parse(filter)
        .unwrap_or_else(|e| panic!("{filter:?}: {e}"))
        .matches(r)
}

fn error(filter: &str) -> (usize, FilterErrorKind) {
    let e = Filter::parse(filter).expect_err(filter);
    (e.position(), e.kind().clone())
}

#[test]
fn domain_matches_the_host_or_the_host_field_without_its_port() {
    assert!(is("~d example.com", &get()));
    assert!(is("~d ^www\\.EXAMPLE\\.com$", &get()));
    assert!(!is("~d ^example", &get()));
    assert!(is("~d ^api\\.test\\.localhost$", &post()));
    let mut r = record("GET", "http://10.0.0.1/");
    r.request.headers.insert("Host", "named.localhost:8080");
    assert!(is("~d ^named\\.localhost$", &r));
    r.request.headers.insert("Host", "[::1]:8080");
    assert!(is("~d ^::1$", &r));
}

#[test]
fn only_body_operators_need_bodies() {
    let needs = |f: &str| Filter::parse(f).unwrap().needs_bodies();
    assert!(!needs(
        "~d a & ~m GET | ~c 200 ~h x ~t json ~u y ~q ~s ~websocket"
    ));
    assert!(needs("~b x"));
    assert!(needs("~d a & !(~m GET | ~bs x)"));
    assert!(needs("~bq x | ~c 200"));
}

#[test]
fn prefilters_are_the_simple_conditions_joined_by_and_at_the_top() {
    let pre = |f: &str| Filter::parse(f).unwrap().prefilters();
    use Prefilter::*;
    assert_eq!(
        pre("~d Rare\\.Host ~m POST & ~c 200 & ~s & !~q & ~u x"),
        [
            HostOrRequestHead("rare.host".into()),
            Method("post".into()),
            Status(200),
            HasResponse
        ]
    );
    assert_eq!(
        pre("~q & (~c 200 & ~d a-b_c:8/x)"),
        [
            NoResponse,
            Status(200),
            HostOrRequestHead("a-b_c:8/x".into())
        ]
    );
    for none in [
        "~c 200 | ~c 404",
        "!~c 200",
        "~d ^a",
        "~d a.b",
        "~d a\\d",
        "~m GET|POST",
        "~d ''",
        "~h host",
    ] {
        assert_eq!(pre(none), [], "{none}");
    }
}

#[test]
fn method_matches_case_insensitively() {
    assert!(is("~m GET", &get()));
    assert!(is("~m get", &get()));
    assert!(!is("~m POST", &get()));
    assert!(is("~m ^p", &post()));
}

#[test]
fn code_matches_the_response_status_only() {
    assert!(is("~c 201", &post()));
    assert!(!is("~c 200", &post()));
    assert!(!is("~c 200", &get()), "no response, no status");
    assert_eq!(error("~c x2").1, FilterErrorKind::BadStatus("x2".into()));
    assert_eq!(error("~c +1").1, FilterErrorKind::BadStatus("+1".into()));
    assert_eq!(
        error("~c 70000"),
        (3, FilterErrorKind::BadStatus("70000".into()))
    );
    // As in mitmproxy, the code is its digits; what follows is the next filter.
    assert!(is("~c 201&~s", &post()));
    assert!(is("~c 201upload", &post()));
    assert!(!is("~c 201nothing", &post()));
}

#[test]
fn url_matches_the_whole_url_and_bare_words_are_urls() {
    assert!(is("~u ^https://www\\.example\\.com/search", &get()));
    assert!(is("~u q=RUST", &get()));
    assert!(is("search", &get()));
    assert!(is("\"example\\.com/search\"", &get()));
    assert!(is("'search\\?q='", &get()));
    assert!(is(":8080/upload$", &post()));
    assert!(!is("nothing", &get()));
    // As in mitmproxy, `|` inside a word belongs to the word's regex.
    assert!(is("nothing|search", &get()));
}

#[test]
fn urls_take_the_host_field_as_mitmproxy_pretty_url_does() {
    let mut r = record("GET", "http://10.0.0.1:8080/x");
    r.request.headers.insert("Host", "named.localhost:8080");
    assert!(is("~u ^http://named\\.localhost:8080/x$", &r));
    assert!(!is("~u 10\\.0", &r));
    // The scheme's default port is left out, whether the field names it or not.
    r.request.headers.insert("Host", "named.localhost:80");
    assert!(is("~u ^http://named\\.localhost/x$", &r));
    r.request.headers.insert("Host", "named.localhost");
    assert!(is("~u ^http://named\\.localhost/x$", &r));
    // IPv6 addresses lose their brackets.
    r.request.headers.insert("Host", "[::1]:8080");
    assert!(is("~u '^http://::1:8080/x$'", &r));
    // Without a field (or with an empty one), the request's own host and port.
    r.request.headers.insert("Host", "");
    assert!(is("~u ^http://10\\.0\\.0\\.1:8080/x$", &r));
    // A field that is no authority is taken whole.
    r.request.headers.insert("Host", "a:b:c");
    assert!(is("~u '^http://a:b:c/x$'", &r));
}

#[test]
fn authorities_split_as_mitmproxy_splits_them() {
    assert_eq!(authority("a.localhost"), ("a.localhost", None));
    assert_eq!(authority("a.localhost:81"), ("a.localhost", Some(81)));
    assert_eq!(authority("[::1]"), ("::1", None));
    assert_eq!(authority("[::1]:81"), ("::1", Some(81)));
    for whole in [
        "a:", ":81", "a:81x", "a:99999", "[]:1", "[::1", "[::1]x", "a:b:1",
    ] {
        assert_eq!(authority(whole), (whole, None), "{whole}");
    }
}

#[test]
fn headers_are_name_value_lines_of_either_or_one_side() {
    let r = post();
    assert!(is("~h '^X-Token: Secret'", &r));
    // Lines end in CR LF, and `$` matches before the LF only, as in mitmproxy.
    assert!(!is("~h '^X-Token: Secret$'", &r));
    assert!(is("~h '^X-Token: Secret\r$'", &r));
    // Case counts, as in mitmproxy, unless the regex says otherwise.
    assert!(!is("~h x-token", &r));
    assert!(is("~h '(?i)x-token'", &r));
    // Unquoted, the space ends the regex: `Secret` is a second filter, on the URL.
    assert!(!is("~h ^X-Token: Secret", &r));
    assert!(is("~hq X-Token", &r));
    assert!(!is("~hs X-Token", &r));
    assert!(is("~h text/plain", &r));
    assert!(is("~hs '^Content-Type: text/plain'", &r));
    assert!(!is("~hq text/plain", &r));
    assert!(!is("~hs Host", &get()), "no response, no response headers");
}

#[test]
fn bodies_match_decoded_when_encoded_and_raw_when_decoding_fails() {
    let r = post();
    assert!(is("~b Ferris", &r));
    assert!(!is("~b ferris", &r), "case counts, as in mitmproxy");
    assert!(is("~b '(?i)ferris'", &r));
    assert!(is("~bq Ferris", &r));
    assert!(!is("~bs Ferris", &r));
    assert!(is("~bs ^created$", &r));
    assert!(is("~b created", &r));
    assert!(!is("~bq created", &r));

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"hello compressed world").unwrap();
    let gz = gz.finish().unwrap();
    let zipped = answered(get(), 200, &[("Content-Encoding", "gzip")], &gz);
    assert!(is("~bs compressed", &zipped));
    // Cut short, it does not decode: the raw bytes are matched.
    let cut = answered(
        get(),
        200,
        &[("Content-Encoding", "gzip")],
        b"not gzip at all",
    );
    assert!(is("~bs gzip", &cut));
    // Invalid UTF-8 is matched as text, replaced.
    let binary = answered(get(), 200, &[], b"\xff\xfeab\x00cd");
    assert!(is("~bs ab.cd", &binary));
    // `.` matches a line end too.
    let lines = answered(get(), 200, &[], b"one\ntwo");
    assert!(is("~bs one.two", &lines));
}

#[test]
fn bodies_include_websocket_messages_of_their_side() {
    let message = |from_client: bool, data: &'static [u8]| RecordedMessage {
        from_client,
        text: true,
        data: Bytes::from_static(data),
        at: SystemTime::UNIX_EPOCH,
    };
    let mut ws = answered(get(), 101, &[("Upgrade", "websocket")], b"");
    ws.websocket = Some(vec![
        message(true, b"ping from client"),
        message(false, b"pong\xff"),
    ]);
    assert!(is("~b ping", &ws));
    assert!(is("~b pong", &ws));
    assert!(is("~bq ping", &ws));
    assert!(!is("~bq pong", &ws));
    assert!(is("~bs pong", &ws));
    assert!(!is("~bs ping", &ws));
    assert!(!is("~b nothing", &ws));
    assert!(Filter::parse("~bq ping").unwrap().needs_bodies());
}

#[test]
fn content_type_matches_either_side_or_one() {
    let r = post();
    assert!(is("~t json", &r));
    assert!(is("~t ^text/plain", &r));
    assert!(!is("~t ^TEXT/plain", &r), "case counts, as in mitmproxy");
    assert!(is("~t '(?i)^TEXT/plain'", &r));
    assert!(!is("~t html", &r));
    assert!(!is("~t .", &get()));
    assert!(is("~tq json", &r));
    assert!(!is("~tq plain", &r));
    assert!(is("~ts plain", &r));
    assert!(!is("~ts json", &r));
    // Each field on its own: a regex across two of them finds nothing.
    let mut two = post();
    two.request.headers.append("Content-Type", "text/extra");
    assert!(is("~tq ^text/extra$", &two));
    assert!(!is("~tq 'json.*extra'", &two));
}

#[test]
fn assets_are_responses_of_scripts_styles_images_and_fonts() {
    let typed = |t: &str| answered(get(), 200, &[("Content-Type", t)], b"");
    for asset in [
        "text/javascript",
        "application/javascript; charset=utf-8",
        "application/x-javascript",
        "text/css",
        "image/png",
        "image/svg+xml",
        "font/woff2",
        "application/font-woff",
    ] {
        assert!(is("~a", &typed(asset)), "{asset}");
    }
    for other in ["text/html", "application/json", "Text/CSS", "text/plain"] {
        assert!(!is("~a", &typed(other)), "{other}");
    }
    assert!(!is("~a", &get()), "no response");
    // The request's content type does not count.
    let mut sent = record("POST", "http://a.localhost/");
    sent.request.headers.append("Content-Type", "image/png");
    assert!(!is("~a", &answered(sent, 200, &[], b"")));
}

#[test]
fn errors_marks_comments_and_replays() {
    let mut r = get();
    assert!(!is("~e", &r));
    assert!(!is("~marked", &r));
    assert!(!is("~replay", &r));
    assert!(is("~marker ^$", &r));
    r.error = Some("connection refused".into());
    r.annotations.marked = ":default:".into();
    r.annotations.comment = "first\nSecond line".into();
    assert!(is("~e", &r));
    assert!(is("~marked", &r));
    assert!(is("~marker default", &r));
    assert!(!is("~marker star", &r));
    assert!(is("~comment ^Second", &r), "^ at each line's start");
    assert!(is("~comment first$", &r));
    assert!(!is("~comment second", &r), "case counts");
    assert!(!is("~replay", &r));
    r.annotations.is_replay = Some("request".into());
    assert!(is("~replay", &r));
    assert!(is("~replayq", &r));
    assert!(!is("~replays", &r));
    r.annotations.is_replay = Some("response".into());
    assert!(is("~replays & ~replay & !~replayq", &r));
}

#[test]
fn every_flow_is_an_http_flow() {
    for r in [get(), post()] {
        assert!(is("~all", &r));
        assert!(is("~http", &r));
        assert!(!is("~tcp | ~udp | ~dns", &r));
    }
}

#[test]
fn addresses_are_ip_colon_port() {
    let mut r = get();
    assert!(!is("~src .", &r), "no client address");
    assert!(!is("~dst .", &r), "no server reached");
    r.client = Some("127.0.0.1:5000".parse().unwrap());
    r.server = Some("[::1]:8443".parse().unwrap());
    assert!(is("~src ^127\\.0\\.0\\.1:5000$", &r));
    assert!(!is("~dst example", &r));
    assert!(is("~dst '^::1:8443$'", &r), "IPv6 without brackets");
    assert!(!is("~src 8443", &r));
}

#[test]
fn q_and_s_tell_whether_there_is_a_response() {
    assert!(is("~q", &get()));
    assert!(!is("~s", &get()));
    assert!(is("~s", &post()));
    assert!(!is("~q", &post()));
}

#[test]
fn websocket_is_a_flow_with_messages_or_a_101_upgrade() {
    let mut asked = record("GET", "http://ws.localhost/chat");
    asked.request.headers.append("Connection", "Upgrade");
    asked.request.headers.append("Upgrade", "websocket");
    assert!(!is("~websocket", &asked), "asked, not (yet) switched");
    let switched = answered(asked.clone(), 101, &[("Upgrade", "WebSocket")], b"");
    assert!(is("~websocket", &switched));
    let mut with_messages = answered(asked.clone(), 101, &[], b"");
    with_messages.websocket = Some(Vec::new());
    assert!(is("~websocket", &with_messages));
    let refused = answered(asked, 403, &[], b"");
    assert!(!is("~websocket", &refused));
    assert!(!is("~websocket", &get()));
    assert!(!is(
        "~websocket",
        &answered(get(), 101, &[("Upgrade", "h2c")], b"")
    ));
}

#[test]
fn not_binds_tightest_then_and_then_or() {
    let (g, p) = (get(), post());
    assert!(is("!~m POST", &g));
    assert!(!is("!~m GET", &g));
    assert!(is("!!~m GET", &g));
    assert!(is("! ! ! ~m POST", &g));
    // `!a & b` is `(!a) & b`.
    assert!(!is("!~m POST & ~q", &p));
    assert!(is("!(~m POST & ~q)", &p));
    // `a | b & c` is `a | (b & c)`.
    assert!(is("~m GET | ~m POST & ~c 404", &g));
    assert!(!is("(~m GET | ~m POST) & ~c 404", &g));
    // `a & b | c` is `(a & b) | c`.
    assert!(is("~m PUT & ~q | ~s", &p));
    assert!(is("((~m GET))", &g));
    assert!(is("( ~m GET | ~m PUT ) & ~q", &g));
}

#[test]
fn side_by_side_means_and_loosest_of_all_as_in_mitmproxy() {
    let (g, p) = (get(), post());
    assert!(is("~m GET ~q", &g));
    assert!(!is("~m GET ~s", &g));
    // `a | b c` is `(a | b) & c`, not `a | (b & c)`.
    assert!(!is("~m GET | ~m PUT ~s", &g));
    assert!(is("~m GET | ~m POST ~s", &p));
    assert!(is("(~m GET ~q) | ~s", &p));
    assert!(is("example search", &g));
}

#[test]
fn quoted_strings_keep_regex_escapes_and_drop_only_the_quotes_own() {
    let mut r = get();
    r.request.path = "/say?it=\"it's\"&b=a\\b (x)".into();
    assert!(is(r#""\"it's\"""#, &r));
    assert!(is(r"'it\'s'", &r));
    assert!(is(r#""a\\b \(x\)""#, &r));
    assert!(
        is(r#"~u "b=a\\""#, &r),
        "an escaped backslash does not escape the quote"
    );
    assert!(is("\"\\d\"", &record("GET", "http://h.localhost/7")));
    assert!(!is("\"\\d\"", &record("GET", "http://h.localhost/x")));
    assert!(
        is("\"s  \\(x\" | ~q", &get()),
        "spaces and parentheses inside quotes"
    );
}

#[test]
fn errors_name_the_problem_and_where_it_is() {
    use FilterErrorKind::*;
    assert_eq!(error("~m GET & ~x"), (9, UnknownOperator("~x".into())));
    assert_eq!(error("~dfoo"), (0, UnknownOperator("~dfoo".into())));
    assert_eq!(error("~ GET"), (0, UnknownOperator("~".into())));
    assert_eq!(error("~d"), (2, MissingArgument("~d".into())));
    assert_eq!(error("~m GET & ~h )"), (12, MissingArgument("~h".into())));
    assert_eq!(error("~c ~q"), (3, MissingArgument("~c".into())));
    assert_eq!(error(""), (0, MissingExpression("the end".into())));
    assert_eq!(error("   "), (3, MissingExpression("the end".into())));
    assert_eq!(error("~q &"), (4, MissingExpression("the end".into())));
    assert_eq!(error("~q & | ~s"), (5, MissingExpression("'|'".into())));
    assert_eq!(error("!"), (1, MissingExpression("the end".into())));
    assert_eq!(error("()"), (1, MissingExpression("')'".into())));
    assert_eq!(error("& ~q"), (0, MissingExpression("'&'".into())));
    assert_eq!(error("(~q | (~s)"), (0, UnclosedParenthesis));
    assert_eq!(error("~q)"), (2, UnexpectedClose));
    assert_eq!(error("(~q) ) ~s"), (5, UnexpectedClose));
    assert_eq!(error("~u 'abc"), (3, UnterminatedString));
    assert_eq!(error(r#"~u "abc\"#), (3, UnterminatedString));
    assert_eq!(error(r#""abc\"#), (0, UnterminatedString));
    let (at, kind) = error("~q & ~u a[b");
    assert_eq!(at, 8);
    let BadRegex { pattern, error } = kind else {
        panic!("{kind:?}")
    };
    assert_eq!(pattern, "a[b");
    assert!(!error.is_empty());
    let e = Filter::parse("~q & ~u a[b").unwrap_err();
    assert!(e.to_string().starts_with("invalid regex \"a[b\": "), "{e}");
    assert!(e.to_string().ends_with(" at position 8"), "{e}");
    assert_eq!(e.message(), e.kind().to_string());
}

#[test]
fn long_and_deep_filters_are_refused_without_overflowing_the_stack() {
    let long = "a".repeat(MAX_FILTER_LEN + 1);
    assert_eq!(error(&long), (0, FilterErrorKind::TooLong(MAX_FILTER_LEN)));
    assert!(Filter::parse(&"a".repeat(MAX_FILTER_LEN)).is_ok());

    let deep = "(".repeat(MAX_FILTER_LEN);
    assert_eq!(
        error(&deep),
        (MAX_FILTER_DEPTH, FilterErrorKind::TooDeep(MAX_FILTER_DEPTH))
    );
    let ok = format!("{}~q{}", "(".repeat(64), ")".repeat(64));
    assert!(is(&ok, &get()));
    let too_deep = format!("{}~q{}", "(".repeat(65), ")".repeat(65));
    assert_eq!(
        error(&too_deep).1,
        FilterErrorKind::TooDeep(MAX_FILTER_DEPTH)
    );
    let nots = format!("{}~q", "!(".repeat(64)) + &")".repeat(64);
    assert!(is(&nots, &get()));

    // Many `!` fold into one; many operands make a flat list.
    assert!(is(&format!("{}~s", "!".repeat(MAX_FILTER_LEN - 3)), &get()));
    let wide = "~q | ".repeat(MAX_FILTER_LEN / 5 - 1) + "~q";
    assert!(is(&wide, &get()));
    let side_by_side = "~q ".repeat(MAX_FILTER_LEN / 3);
    assert!(is(&side_by_side, &get()));
    // A deeply nested regex is the regex engine's to refuse, also without overflow.
    let regex = format!("'{}'", "(".repeat(MAX_FILTER_LEN - 2));
    assert!(matches!(error(&regex).1, FilterErrorKind::BadRegex { .. }));
}

/// Parses `text`; when it parses, matches it against a few records. Either way the
/// error position lies inside the text, on a character boundary.
fn exercise(text: &str, records: &[Record]) {
    match Filter::parse(text) {
        Ok(f) => {
            assert_eq!(f.as_str(), text);
            for r in records {
                f.matches(r);
            }
        }
        Err(e) => {
            assert!(e.position() <= text.len(), "{text:?}: {e}");
            assert!(text.is_char_boundary(e.position()), "{text:?}: {e}");
            assert!(!e.to_string().is_empty());
        }
    }
}

#[test]
fn tricky_inputs_never_panic() {
    let records = [
        get(),
        post(),
        answered(get(), 101, &[("Upgrade", "websocket")], b""),
    ];
    let tricky = [
        "~",
        "~~",
        "~~~",
        "!",
        "!!",
        "&",
        "|",
        "(",
        ")",
        ")(",
        "((",
        "))",
        "'",
        "\"",
        "\\",
        "'\\",
        "\"\\\"",
        "~d '",
        "~c",
        "~c -1",
        "~c 0",
        "~c 65535",
        "~c 99999999999999999999",
        "~h ~hq ~hs",
        "~b(",
        "~b (",
        "~q(",
        "~q()",
        "(~q)(~s)",
        "! (",
        "a & (",
        "a | )",
        "~websocket~q",
        "~websocketx",
        "~Q",
        "~D x",
        "é",
        "~d é",
        "~é",
        "'é",
        "\u{0}",
        "~u \u{0}",
        "a\u{3000}b",
        "~u [",
        "~u \\",
        "~u (?",
        "~u a{99999}",
        "~u a{5}{5}{5}{5}{5}",
        "~u \\p{Greek}",
        "\"(\"",
        "' '",
        "''",
        "\"\"",
        "~d ''",
        "!~q!~s",
        "~q&~s|~q",
        "~q &&",
        "~q || ~s",
        "~q & !",
        "x!y",
        "x&y",
        "~u !&|",
        "~c 200&~q",
        "~c 2x",
        "~c0",
        "~all~q",
        "~marker",
        "~comment ''",
        "~src ~dst",
        "~replayqs",
        "~a ~a",
        "~tq (",
    ];
    for text in tricky {
        exercise(text, &records);
    }
}

#[test]
fn fuzz_seeds_keep_the_invariants_stores_rely_on() {
    use crate::internals::filter_records;
    // Panics if a filter breaks a prefilter, or looks at bodies it says it needs not.
    let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/filter");
    for entry in std::fs::read_dir(&seeds).unwrap() {
        filter_records(&std::fs::read(entry.unwrap().path()).unwrap());
    }
    // The fixtures: an answered GET (marked, commented), a replayed POST that failed,
    // a WebSocket flow.
    for (filter, want) in [
        ("~marked", 1),
        ("~comment ^twice", 1),
        ("~replayq", 1),
        ("~e", 1),
        ("~src ^127\\.0\\.0\\.1:50000$", 3),
        ("~dst ^93\\.", 1),
        ("~b hello", 1),
        ("~bs hello", 0),
        ("~a | ~tcp", 0),
        ("~all", 3),
    ] {
        assert_eq!(filter_records(filter.as_bytes()), Some(want), "{filter}");
    }
}

#[test]
fn random_bytes_never_panic() {
    let records = [get(), post()];
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6d69_746d);
    const PIECES: [&str; 40] = [
        "~a",
        "~all",
        "~http",
        "~tcp",
        "~e",
        "~marked",
        "~marker ",
        "~comment ",
        "~replay",
        "~replayq",
        "~replays",
        "~src ",
        "~dst ",
        "~tq ",
        "~ts ",
        "~c 2",
        "~d ",
        "~m ",
        "~c ",
        "~u ",
        "~h ",
        "~hq ",
        "~hs ",
        "~b ",
        "~bq ",
        "~bs ",
        "~t ",
        "~q",
        "~s",
        "~websocket",
        "!",
        "&",
        "|",
        "(",
        ")",
        "'",
        "\"",
        "\\",
        " ",
        "a",
    ];
    for _ in 0..20_000 {
        let mut text = Vec::new();
        for _ in 0..rng.random_range(0..24) {
            if rng.random_bool(0.5) {
                text.extend_from_slice(PIECES[rng.random_range(0..PIECES.len())].as_bytes());
            } else {
                text.push(rng.random());
            }
        }
        exercise(&String::from_utf8_lossy(&text), &records);
    }
}
