//! The command line as users write it: the README's examples, options before and after
//! a subcommand, each subcommand's options, defaults from the library.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use crate::args::{command, LogChoice, Secs};
use crate::config::{try_parse_from, Command, Config};

const README: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));

/// The line before a fenced block whose `mitm` lines are a synopsis (`[OPTIONS]`,
/// `...`, `a|b`, lines indented to go on): their option names are checked, not the lines
/// parsed.
const SYNOPSIS: &str = "<!-- synopsis -->";

/// The line before a fenced `text` block that shows what mitm prints, not commands.
const OUTPUT: &str = "<!-- output -->";

/// A `mitm` command line of the README: where it is, and what it says.
#[derive(Debug)]
struct Example {
    line: usize,
    text: String,
    synopsis: bool,
}

/// Every command line that starts with `mitm` in `markdown`'s fenced code blocks marked
/// `sh`, `text` or nothing (indented ones too), lines continued with `\` joined; not
/// those of a block after [`OUTPUT`]; those of a block after [`SYNOPSIS`] marked so.
fn examples(markdown: &str) -> Vec<Example> {
    let mut found: Vec<Example> = Vec::new();
    // Inside a block: whether its lines are read, whether it is a synopsis, and how
    // many examples were found before it.
    let mut block: Option<(bool, bool, usize)> = None;
    let mut previous = "";
    let mut pending: Option<(usize, String)> = None;
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim();
        let marker = std::mem::replace(&mut previous, trimmed).to_string();
        if let Some(info) = trimmed.strip_prefix("```") {
            block = match block {
                Some(_) => None,
                None => Some((
                    matches!(info.trim(), "" | "sh" | "text") && marker != OUTPUT,
                    marker == SYNOPSIS,
                    found.len(),
                )),
            };
            continue;
        }
        let Some((true, synopsis, before)) = block else {
            continue;
        };
        if synopsis && line.starts_with(char::is_whitespace) && found.len() > before {
            // A synopsis line going on.
            let last = found.last_mut().expect("a line before");
            last.text.push(' ');
            last.text.push_str(trimmed);
            continue;
        }
        let (start, mut text) = pending.take().unwrap_or((i + 1, String::new()));
        if let Some(continued) = trimmed.strip_suffix('\\') {
            text.push_str(continued);
            text.push(' ');
            pending = Some((start, text));
            continue;
        }
        text.push_str(trimmed);
        if text == "mitm" || text.starts_with("mitm ") {
            found.push(Example {
                line: start,
                text,
                synopsis,
            });
        }
    }
    found
}

/// `line` split into words as a POSIX shell does it for a simple command: quotes
/// (single, double) and backslashes respected, a comment (`#` starting a word) left
/// out. No expansions.
fn shell_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(format!("unclosed ' in {line}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(format!("unclosed \" in {line}")),
                        },
                        Some(c) => word.push(c),
                        None => return Err(format!("unclosed \" in {line}")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    word.push(c);
                }
            }
            '#' if !in_word => break,
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

fn parse(line: &str) -> Result<Config, clap::Error> {
    try_parse_from(shell_words(line).expect("shell words"))
}

fn parsed(line: &str) -> Command {
    match parse(line) {
        Ok(config) => config.command,
        Err(e) => panic!("{line}: {e}"),
    }
}

#[test]
fn every_command_line_of_the_readme_parses() {
    let examples = examples(README);
    let lines: Vec<&Example> = examples.iter().filter(|e| !e.synopsis).collect();
    let mut failures = Vec::new();
    for example in &lines {
        let words = match shell_words(&example.text) {
            Ok(words) => words,
            Err(e) => {
                failures.push(format!("README.md:{}: {e}", example.line));
                continue;
            }
        };
        match try_parse_from(&words) {
            Ok(config) => {
                if let Err(e) = config.command.check() {
                    failures.push(format!(
                        "README.md:{}: {}\n{e:#}",
                        example.line, example.text
                    ));
                }
                for warning in config.warnings {
                    failures.push(format!(
                        "README.md:{}: {}\n{warning}",
                        example.line, example.text
                    ));
                }
            }
            Err(e) => failures.push(format!(
                "README.md:{}: {}\n{}",
                example.line,
                example.text,
                e.render()
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // The test must not pass by finding nothing: the README has examples of the proxy
    // and of each subcommand, the one of issue #19 among them.
    assert!(lines.len() >= 10, "{lines:#?}");
    for sub in ["read", "replay", "convert"] {
        assert!(
            lines
                .iter()
                .any(|e| e.text.starts_with(&format!("mitm {sub} "))),
            "no `mitm {sub}` example in {lines:#?}"
        );
    }
    assert!(lines.iter().any(|e| e
        .text
        .starts_with("mitm replay today.flows --filter '~m GET' --save again.har")));
}

#[test]
fn the_readme_synopsis_names_only_options_and_subcommands_that_exist() {
    let examples = examples(README);
    let synopsis: Vec<&Example> = examples.iter().filter(|e| e.synopsis).collect();
    assert!(synopsis.len() >= 6, "no synopsis block: {synopsis:#?}");
    let mut cmd = command();
    cmd.build();
    let mut failures = Vec::new();
    for example in synopsis {
        let words = shell_words(&example.text).unwrap();
        let target = match words.get(1).and_then(|w| cmd.find_subcommand(w)) {
            Some(sub) => sub,
            None => &cmd,
        };
        for word in &words[1..] {
            for name in word
                .split(['[', ']', '|', '='])
                .filter(|n| n.starts_with('-'))
                .map(|n| n.trim_end_matches("..."))
            {
                let known = target.get_arguments().any(|a| {
                    name.strip_prefix("--")
                        .is_some_and(|long| a.get_long() == Some(long))
                        || name.strip_prefix('-').and_then(|s| s.chars().next()) == a.get_short()
                            && name.len() == 2
                });
                if !known {
                    failures.push(format!(
                        "README.md:{}: `mitm {}` has no option {name}",
                        example.line,
                        target.get_name()
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn shell_words_respects_quotes_backslashes_and_comments() {
    assert_eq!(
        shell_words(r#"mitm read a.har --filter '~m POST & !~c 200' --curl  # each request"#)
            .unwrap(),
        [
            "mitm",
            "read",
            "a.har",
            "--filter",
            "~m POST & !~c 200",
            "--curl"
        ]
    );
    assert_eq!(
        shell_words(r#"mitm --ignore-hosts "(^|\.)bank#1" a\ b x#y"#).unwrap(),
        ["mitm", "--ignore-hosts", r"(^|\.)bank#1", "a b", "x#y"]
    );
    assert!(shell_words("mitm --save 'open").is_err());
    let md = "text\n\n```sh\nmitm --save a.har \\\n  --save b.flows # two\ncurl x\n```\n\n\
              ```rust\nmitm nope\n```\n<!-- output -->\n```text\nmitm listening\n```\n\
              <!-- synopsis -->\n```text\nmitm [OPTIONS]\n   [--more]\nmitm read\n```\n";
    let found = examples(md);
    assert_eq!(found.len(), 3, "{found:?}");
    assert_eq!(found[0].line, 4);
    assert_eq!(found[0].text, "mitm --save a.har  --save b.flows # two");
    assert!(!found[0].synopsis);
    assert_eq!(found[1].text, "mitm [OPTIONS] [--more]");
    assert!(found[1].synopsis && found[2].synopsis);
}

/// The issue's own example, options after the subcommand, and the same options before
/// it, give the same command.
#[test]
fn a_subcommands_options_go_after_it_or_before_it() {
    let after = parsed(
        "mitm replay today.flows --filter '~m GET' --upstream-ca ca.pem --save out.har \
         --response-timeout 3 --log none -q",
    );
    let before = parsed(
        "mitm --upstream-ca ca.pem --save out.har --response-timeout 3 --log none -q \
         replay today.flows --filter '~m GET'",
    );
    let split = parsed(
        "mitm --upstream-ca ca.pem --log none replay today.flows --save out.har -q \
         --filter '~m GET' --response-timeout 3",
    );
    let Command::Replay(replay) = &after else {
        panic!("{after:?}")
    };
    assert_eq!(replay.filter.as_deref(), Some("~m GET"));
    assert_eq!(replay.upstream_tls.upstream_ca, [PathBuf::from("ca.pem")]);
    assert_eq!(replay.save.save, [PathBuf::from("out.har")]);
    assert_eq!(
        replay.upstream_timeouts.response_timeout,
        Secs(Duration::from_secs(3))
    );
    assert_eq!(replay.log.log, LogChoice::None);
    assert_eq!(replay.verbosity.quiet, 1);
    assert_eq!(format!("{after:?}"), format!("{before:?}"));
    assert_eq!(format!("{after:?}"), format!("{split:?}"));

    let web = parsed("mitm web a.har --web-port 0 --ca-dir ca --insecure --threads 1");
    assert_eq!(
        format!("{web:?}"),
        format!(
            "{:?}",
            parsed("mitm --web-port 0 --ca-dir ca --insecure --threads 1 web a.har")
        )
    );
    let Command::Ca(ca) = parsed("mitm --port 9000 ca --ca-dir d --host 10.0.0.1") else {
        panic!()
    };
    assert_eq!(
        (ca.address.host.as_str(), ca.address.port, ca.ca.ca_dir),
        ("10.0.0.1", 9000, Some(PathBuf::from("d")))
    );
}

#[test]
fn an_option_given_on_both_sides_must_agree() {
    let e = parse("mitm --save a.har replay f.flows --save b.har").unwrap_err();
    let text = e.render().to_string();
    assert!(
        text.contains("--save is given both before and after `replay`"),
        "{text}"
    );
    assert!(text.contains("give it on one side only"), "{text}");
    assert!(text.contains("mitm replay"), "{text}");
    assert_eq!(e.exit_code(), 2);
    assert!(parse("mitm --response-timeout 1 replay f --response-timeout 2").is_err());
    // The same value twice is no conflict.
    let Command::Replay(r) = parsed("mitm --insecure --log http replay f --insecure --log http")
    else {
        panic!()
    };
    assert!(r.upstream_tls.insecure);
    assert_eq!(r.log.log, LogChoice::Http);
    // -v on one side and -q on the other, as on one side.
    assert!(parse("mitm -v read f -q").is_err());
    assert!(parse("mitm read f -v -q").is_err());
}

#[test]
fn options_before_a_subcommand_that_does_not_take_them_are_ignored_with_a_warning() {
    let config = parse("mitm --log none -q --ca-dir d --port 0 web f.sqlite --web-port 0").unwrap();
    assert_eq!(
        config.warnings,
        [
            "--port does not apply to `mitm web`: ignored",
            "--log does not apply to `mitm web`: ignored"
        ]
    );
    let Command::Web(web) = config.command else {
        panic!()
    };
    assert_eq!(web.ca.ca_dir, Some(PathBuf::from("d")));
    assert_eq!(web.verbosity.quiet, 1);
    // After the subcommand, they are errors.
    let e = parse("mitm read f.har --save x.har").unwrap_err();
    assert!(
        e.render()
            .to_string()
            .contains("unexpected argument '--save'"),
        "{e}"
    );
    assert!(parse("mitm replay f.har --web-host 0.0.0.0").is_err());
}

/// The long options each subcommand's `--help` lists: exactly those that apply.
#[test]
fn each_subcommand_takes_exactly_the_options_that_apply_to_it() {
    let cmd = command();
    let longs = |c: &clap::Command| -> BTreeSet<String> {
        c.get_arguments()
            .filter_map(|a| a.get_long().map(str::to_string))
            .collect()
    };
    let set =
        |names: &[&str]| -> BTreeSet<String> { names.iter().map(|n| n.to_string()).collect() };
    let logging = ["verbose", "quiet"];
    let upstream_tls = ["upstream-ca", "upstream-client-cert", "insecure"];
    let expected: [(&str, Vec<&str>); 5] = [
        (
            "ca",
            [&["ca-dir", "confdir", "host", "port"][..], &logging].concat(),
        ),
        ("read", [&["filter", "curl"][..], &logging].concat()),
        (
            "convert",
            [&["filter", "keep-connects"][..], &logging].concat(),
        ),
        (
            "replay",
            [
                &[
                    "filter",
                    "ca-dir",
                    "confdir",
                    "connect-timeout",
                    "response-timeout",
                ][..],
                &upstream_tls,
                &[
                    "save",
                    "save-filter",
                    "save-body-limit",
                    "save-connects",
                    "log",
                    "threads",
                ],
                &logging,
            ]
            .concat(),
        ),
        (
            "web",
            [
                &["web-host", "web-port", "ca-dir", "confdir", "threads"][..],
                &upstream_tls,
                &logging,
            ]
            .concat(),
        ),
    ];
    let top = longs(&cmd);
    for (name, options) in expected {
        let sub = cmd.find_subcommand(name).unwrap();
        assert_eq!(longs(sub), set(&options), "mitm {name}");
        // Each of them is also an option of the proxy, so it may come before `name`.
        for option in longs(sub) {
            assert!(
                top.contains(&option)
                    || ["filter", "curl", "keep-connects"].contains(&option.as_str()),
                "--{option} of `mitm {name}` cannot go before it"
            );
        }
    }
    // The help says so.
    let mut replay = command();
    let help = replay
        .find_subcommand_mut("replay")
        .unwrap()
        .render_long_help()
        .to_string();
    for present in ["--save ", "--upstream-ca", "--response-timeout", "--filter"] {
        assert!(help.contains(present), "{present} missing:\n{help}");
    }
    for absent in ["--web-host", "--web-port", "--mode", "--timeout <"] {
        assert!(!help.contains(absent), "{absent} in:\n{help}");
    }
}

#[test]
fn defaults_are_the_librarys() {
    let Command::Proxy(proxy) = parsed("mitm") else {
        panic!()
    };
    assert_eq!(proxy.listen.address.host, mitm::DEFAULT_HOST);
    assert_eq!(proxy.listen.address.port, mitm::DEFAULT_PORT);
    assert_eq!(proxy.limits.max_connections, mitm::DEFAULT_MAX_CONNECTIONS);
    assert_eq!(
        proxy.limits.max_concurrent_streams,
        mitm::protocol::regular::DEFAULT_MAX_STREAMS
    );
    assert_eq!(
        proxy.limits.max_upstream_connections,
        mitm::protocol::regular::DEFAULT_MAX_UPSTREAMS
    );
    assert_eq!(
        proxy.limits.max_head,
        mitm::protocol::regular::DEFAULT_MAX_HEAD
    );
    assert_eq!(
        proxy.limits.max_headers,
        mitm::protocol::regular::DEFAULT_MAX_HEADERS
    );
    assert_eq!(
        proxy.limits.timeout,
        Secs(mitm::protocol::regular::DEFAULT_HEAD_TIMEOUT)
    );
    assert_eq!(
        proxy.limits.idle_timeout,
        Secs(mitm::protocol::regular::DEFAULT_IDLE_TIMEOUT)
    );
    assert_eq!(
        proxy.upstream_timeouts.response_timeout,
        Secs(mitm::protocol::regular::DEFAULT_RESPONSE_TIMEOUT)
    );
    assert_eq!(proxy.runtime.grace, Secs(mitm::DEFAULT_GRACE));
    assert_eq!(
        proxy.save.save_body_limit,
        mitm::capture::DEFAULT_BODY_LIMIT
    );
    assert_eq!(proxy.web.at.web_host, mitm::web::DEFAULT_HOST);
    assert_eq!(proxy.web.at.web_port, mitm::web::DEFAULT_PORT);
    assert_eq!(proxy.intercept.tls_fail_open, None);
    let Command::Proxy(proxy) = parsed("mitm --tls-fail-open") else {
        panic!()
    };
    assert_eq!(
        proxy.intercept.tls_fail_open,
        Some(Secs(mitm::DEFAULT_TLS_FAIL_OPEN))
    );
    let Command::Proxy(proxy) = parsed("mitm --tls-fail-open=30 --grace 0.5") else {
        panic!()
    };
    assert_eq!(
        proxy.intercept.tls_fail_open,
        Some(Secs(Duration::from_secs(30)))
    );
    assert_eq!(proxy.runtime.grace, Secs(Duration::from_millis(500)));
    // And --help shows them.
    let help = command().render_long_help().to_string();
    for shown in [
        format!("[default: {}]", mitm::DEFAULT_PORT),
        format!("[default: {}]", mitm::DEFAULT_MAX_CONNECTIONS),
        format!("[default: {}]", mitm::capture::DEFAULT_BODY_LIMIT),
        format!("[default: {}]", mitm::web::DEFAULT_PORT),
        format!(
            "[default: {}]",
            mitm::protocol::regular::DEFAULT_RESPONSE_TIMEOUT.as_secs()
        ),
        format!(
            "[without a value: {}]",
            mitm::DEFAULT_TLS_FAIL_OPEN.as_secs()
        ),
    ] {
        assert!(help.contains(&shown), "{shown} missing from:\n{help}");
    }
}

#[test]
fn a_bad_value_says_what_was_wrong_and_what_to_give() {
    for line in [
        "mitm --timeout soon",
        "mitm --grace -1",
        "mitm replay f --response-timeout NaN",
        "mitm --idle-timeout inf",
    ] {
        let text = parse(line).unwrap_err().render().to_string();
        assert!(
            text.contains("give a number of seconds, 0 or more (e.g. 15 or 0.5)"),
            "{line}: {text}"
        );
    }
    let check = |line: &str| format!("{:#}", parsed(line).check().unwrap_err());
    assert!(check("mitm --proxy-auth alice").contains("USER:PASSWORD"));
    assert!(check("mitm read f --filter '~x'").contains("invalid filter"));
    assert!(check("mitm --mode regular --mode socks5").contains("an address of its own"));
}

#[test]
fn the_command_is_well_formed() {
    command().debug_assert();
}

#[test]
fn the_key_log_file_comes_from_mitmproxys_variables() {
    use crate::proxy::key_log_path;
    use std::ffi::OsString;
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| OsString::from(v))
        }
    };
    assert_eq!(key_log_path(env(&[])), None);
    assert_eq!(
        key_log_path(env(&[("SSLKEYLOGFILE", "/k/a.log")])),
        Some(("SSLKEYLOGFILE", PathBuf::from("/k/a.log")))
    );
    // Both set: mitmproxy's own wins.
    assert_eq!(
        key_log_path(env(&[
            ("SSLKEYLOGFILE", "/k/a.log"),
            ("MITMPROXY_SSLKEYLOGFILE", "/k/b.log")
        ])),
        Some(("MITMPROXY_SSLKEYLOGFILE", PathBuf::from("/k/b.log")))
    );
    // Empty counts as unset.
    assert_eq!(
        key_log_path(env(&[
            ("SSLKEYLOGFILE", "/k/a.log"),
            ("MITMPROXY_SSLKEYLOGFILE", "")
        ])),
        Some(("SSLKEYLOGFILE", PathBuf::from("/k/a.log")))
    );
    assert_eq!(
        key_log_path(env(&[("SSLKEYLOGFILE", "~/keys.log"), ("HOME", "/home/u")])),
        Some(("SSLKEYLOGFILE", PathBuf::from("/home/u/keys.log")))
    );
}
