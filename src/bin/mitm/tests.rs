//! The command line as users write it: the README's examples, options before and after
//! a subcommand, each subcommand's options, defaults from the library.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::args::{command, LogChoice, Secs};
use crate::cli::config::{parse_with, try_parse_from, Command, Config};
use crate::cli::settings::{self, edit_distance, Names, Sources};

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

/// Each name given, with its values.
fn names_and_values(given: &[settings::Given]) -> Vec<(&str, Vec<&str>)> {
    given
        .iter()
        .map(|g| {
            (
                g.name.as_str(),
                g.values.iter().map(String::as_str).collect(),
            )
        })
        .collect()
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
                // A script named in an example is not here to read: parsing is enough.
                let scripts =
                    matches!(&config.command, Command::Proxy(p) if !p.files.scripts.is_empty());
                if let Err(e) =
                    config
                        .command
                        .check(false)
                        .or_else(|e| if scripts { Ok(()) } else { Err(e) })
                {
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
    let logging = ["verbose", "quiet", "set"];
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
                    "flow-detail",
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
    let check = |line: &str| format!("{:#}", parsed(line).check(false).unwrap_err());
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
    use crate::cli::proxy::key_log_path;
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

/// mitmdump's words for our options, as a mitmdump user types them.
#[test]
fn a_mitmdump_command_line_parses_as_ours() {
    let Command::Proxy(dump) = parsed(
        "mitm --listen-host 127.0.0.1 --listen-port 0 -w out.flows -k --proxyauth u:p \
         --upstream-auth a:b -m upstream:http://up.example:3128 --ignore-hosts '^x' \
         -S rec.flows -C again.flows --flow-detail 3 -q",
    ) else {
        panic!()
    };
    let Command::Proxy(ours) = parsed(
        "mitm --host 127.0.0.1 --port 0 --save out.flows --insecure --proxy-auth u:p \
         --upstream-auth a:b --mode upstream:http://up.example:3128 --ignore-hosts '^x' \
         --server-replay rec.flows --client-replay again.flows --flow-detail 3 --quiet",
    ) else {
        panic!()
    };
    assert_eq!(format!("{dump:?}"), format!("{ours:?}"));
    assert_eq!(dump.listen.address.host, "127.0.0.1");
    assert_eq!(dump.listen.address.port, 0);
    assert_eq!(dump.save.save, [PathBuf::from("out.flows")]);
    assert!(dump.upstream_tls.insecure);
    assert_eq!(dump.listen.proxy_auth.as_deref(), Some("u:p"));
    assert_eq!(dump.log.flow_detail, Some(3));
    assert_eq!(dump.verbosity.quiet, 1);
    assert_eq!(dump.files.client_replay, [PathBuf::from("again.flows")]);
    // --upstream-auth goes to the upstream proxy that has no credentials of its own.
    let modes = crate::cli::mitmdump::modes(&dump.listen).unwrap();
    let mitm::server::mode::Mode::Upstream(up) = &modes[0].mode else {
        panic!("{modes:?}")
    };
    assert_eq!(up.credentials(), Some(("a", "b")));
    assert!(parsed("mitm -p 0").check(false).is_ok());
    // -nr FILE, -r FILE -n, --rfile.
    for line in [
        "mitm -nr f.flows",
        "mitm -r f.flows -n",
        "mitm --rfile f.flows --no-server",
    ] {
        let Command::Proxy(p) = parsed(line) else {
            panic!()
        };
        assert!(p.files.no_server, "{line}");
        assert_eq!(p.files.rfile, Some(PathBuf::from("f.flows")), "{line}");
    }
    // Accepted by the parser, refused at start saying why.
    let check = |line: &str| format!("{:#}", parsed(line).check(false).unwrap_err());
    // -s: the binary says how to get the command that runs scripts.
    let scripts = check("mitm -s addon.py");
    assert!(
        scripts.starts_with("-s addon.py: ")
            && scripts.contains("pip install ./python")
            && scripts.contains("environment's `mitm`"),
        "{scripts}"
    );
    assert!(check("mitm --scripts a.py").contains("pip install ./python"));
    assert!(check("mitm -n").contains("-r FILE"));
    assert!(check("mitm -w +out.flows").contains("appends"));
    assert!(parsed("mitm -w ./+out.flows").check(false).is_ok());
    assert!(check("mitm --upstream-auth ab -m upstream:http://u:1").contains("USER:PASSWORD"));
    assert!(check("mitm --upstream-auth a:b").contains("--mode upstream:URL"));
    assert!(parse("mitm --flow-detail 5").is_err());
}

/// The aliases stay out of `--help`; the options they stand for are in it.
#[test]
fn mitmdumps_aliases_stay_out_of_the_help() {
    let help = command().render_long_help().to_string();
    for hidden in [
        "--listen-host",
        "--listen-port",
        "--save-stream-file",
        "--ssl-insecure",
        "--proxyauth",
        "-w,",
        "-k,",
        "-S,",
    ] {
        assert!(!help.contains(hidden), "{hidden} in --help");
    }
    for shown in [
        "--host",
        "--port",
        "--save",
        "--insecure",
        "--proxy-auth",
        "--rfile",
        "--set",
    ] {
        assert!(help.contains(shown), "{shown} not in --help");
    }
}

/// `--set` by mitmproxy's names and by ours, lists, booleans, and the command line
/// winning over it.
#[test]
fn set_takes_mitmproxys_names_and_ours() {
    let Command::Proxy(p) = parsed(
        "mitm --set listen_port=0 --set ssl_insecure --set ignore_hosts=a \
         --set ignore_hosts=b --set max_connections=10 --set proxyauth=u:p \
         --set save_stream_file=x.har --set mode=socks5 --set confdir=/m \
         --set connection_strategy=eager --set flow_detail=2 --set save_stream_filter=~q",
    ) else {
        panic!()
    };
    assert_eq!(p.listen.address.port, 0);
    assert!(p.upstream_tls.insecure);
    assert_eq!(p.intercept.ignore_hosts, ["a", "b"]);
    assert_eq!(p.limits.max_connections, 10);
    assert_eq!(p.listen.proxy_auth.as_deref(), Some("u:p"));
    assert_eq!(p.save.save, [PathBuf::from("x.har")]);
    assert_eq!(p.listen.modes, ["socks5"]);
    assert_eq!(p.ca.confdir, Some(PathBuf::from("/m")));
    assert_eq!(p.log.flow_detail, Some(2));
    assert_eq!(p.save.save_filter.as_deref(), Some("~q"));
    // A flag wins over --set, whichever comes first.
    let Command::Proxy(p) = parsed("mitm -p 9 --set listen_port=0 --set ssl_insecure=false -k")
    else {
        panic!()
    };
    assert_eq!(p.listen.address.port, 9);
    assert!(p.upstream_tls.insecure);
    // mitmproxy's `server` is our -n, inverted; bare means true.
    let Command::Proxy(p) = parsed("mitm --set server=false") else {
        panic!()
    };
    assert!(p.files.no_server);
    let Command::Proxy(p) = parsed("mitm --set server") else {
        panic!()
    };
    assert!(!p.files.no_server);
    // Given bare, an option that is not a boolean keeps its default.
    let Command::Proxy(p) = parsed("mitm --set max_connections") else {
        panic!()
    };
    assert_eq!(p.limits.max_connections, mitm::DEFAULT_MAX_CONNECTIONS);
    // A subcommand's options too, on either side of it.
    let Command::Replay(r) = parsed("mitm --set ssl_insecure=true replay f --set filter=~m\\ GET")
    else {
        panic!()
    };
    assert!(r.upstream_tls.insecure);
    assert_eq!(r.filter.as_deref(), Some("~m GET"));
    let config = parse("mitm --set listen_port=1 read f").unwrap();
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}

#[test]
fn set_refuses_bad_values_and_unknown_names_saying_what_to_give() {
    let error = |line: &str| match parse(line) {
        Ok(config) => panic!("{line} was taken: {config:?}"),
        Err(e) => {
            assert_eq!(e.exit_code(), 2, "{line}");
            e.render().to_string()
        }
    };
    for (line, wants) in [
        (
            "mitm --set listen_prot=0",
            &["no option is named listen_prot: did you mean listen_port?"][..],
        ),
        (
            "mitm --set max_conections=1",
            &["did you mean max_connections?"],
        ),
        (
            "mitm --set ssl_insecure=yes",
            &["\"yes\" is not a boolean: give true or false"],
        ),
        (
            "mitm --set listen_port=eighty",
            &["--set listen_port=eighty: invalid value 'eighty'"],
        ),
        (
            "mitm --set listen_port=1 --set listen_port=2",
            &["takes one value, and was given 2"],
        ),
        (
            "mitm --set http3=false",
            &["mitmproxy's option http3 has no equivalent here"],
        ),
        (
            "mitm --set connection_strategy=lazy",
            &["can only be eager here"],
        ),
        ("mitm --set termlog_verbosity=debug", &["-q", "-v"]),
        ("mitm --set timeout=-1", &["give a number of seconds"]),
    ] {
        let e = error(line);
        for want in wants {
            assert!(e.contains(want), "{line}: {e}");
        }
    }
    // Harmless ones are taken, with a warning when ignored; so are mitmweb's and the
    // console's, which share config.yaml with mitmdump.
    let config =
        parse("mitm --set stream_large_bodies=1m --set http2=true --set web_open_browser=false")
            .unwrap();
    assert_eq!(config.warnings.len(), 2, "{:?}", config.warnings);
    assert!(config.warnings[0].contains("stream_large_bodies"));
    assert!(config.warnings[1].contains("web_open_browser=false: ignored"));
}

#[test]
fn the_names_come_from_the_command_and_mitmproxys_table() {
    let names = Names::of(&command());
    // Ours (with `_`), mitmproxy's that are our aliases, a subcommand's.
    for (name, id) in [
        ("max_connections", "max_connections"),
        ("listen_port", "port"),
        ("listen_host", "host"),
        ("ssl_insecure", "insecure"),
        ("save_stream_file", "save"),
        ("proxyauth", "proxy_auth"),
        ("confdir", "confdir"),
        ("mode", "modes"),
        ("ignore_hosts", "ignore_hosts"),
        ("keep_host_header", "keep_host_header"),
        ("upstream_auth", "upstream_auth"),
        ("rfile", "rfile"),
        ("client_replay", "client_replay"),
        ("server_replay", "server_replay"),
        ("flow_detail", "flow_detail"),
        ("filter", "filter"),
    ] {
        match names.meaning(name) {
            Ok(settings::Meaning::Option(got)) => assert_eq!(got, id, "{name}"),
            other => panic!("{name}: {other:?}"),
        }
    }
    // Every row of the table names one of mitmdump's options that is none of ours, and
    // points to an option that exists.
    for (name, meaning) in settings::MITMPROXY {
        assert!(
            !matches!(names.meaning(name), Ok(settings::Meaning::Option(_))),
            "{name} is one of ours now: take its row out of MITMPROXY"
        );
        if let settings::Mitmproxy::Rename(ours) | settings::Mitmproxy::Inverse(ours) = meaning {
            assert!(
                matches!(names.meaning(ours), Ok(settings::Meaning::Option(_))),
                "{name} -> {ours}"
            );
        }
    }
    assert_eq!(names.closest("listen_prot"), Some("listen_port"));
    assert_eq!(names.closest("sslinsecure"), Some("ssl_insecure"));
    assert_eq!(edit_distance("", "abc"), 3);
    assert_eq!(edit_distance("kitten", "sitting"), 3);
    assert_eq!(edit_distance("same", "same"), 0);
    assert_eq!(edit_distance("ab", "ba"), 2);
}

#[test]
fn config_files_are_mitmproxys_yaml_maps() {
    let path = std::path::Path::new("/c/config.yaml");
    let got = settings::parse_config(
        "# a comment\nlisten_port: 8081\nssl_insecure: true\nignore_hosts:\n  - a\n  - 'b c'\n\
         mode: [regular, socks5@1080]\nbody: 1.5\nproxyauth:\nname: yes\n",
        path,
    )
    .unwrap();
    assert_eq!(
        names_and_values(&got),
        [
            ("listen_port", vec!["8081"]),
            ("ssl_insecure", vec!["true"]),
            ("ignore_hosts", vec!["a", "b c"]),
            ("mode", vec!["regular", "socks5@1080"]),
            ("body", vec!["1.5"]),
            // YAML 1.2, as mitmproxy reads it: `yes` is a string.
            ("name", vec!["yes"]),
        ]
    );
    assert!(got
        .iter()
        .all(|g| g.origin == settings::Origin::File(path.to_path_buf())));
    assert!(settings::parse_config("", path).unwrap().is_empty());
    assert!(settings::parse_config("# nothing\n", path)
        .unwrap()
        .is_empty());
    for (bad, says) in [
        ("just a string", "not a map"),
        ("a: {b: 1}", "a: give a value or a list"),
        ("a: [1, [2]]", "a: give a value or a list"),
        ("a: [unclosed", "not YAML"),
    ] {
        let e = settings::parse_config(bad, path).unwrap_err();
        assert!(e.contains(says), "{bad}: {e}");
    }
    // Repeated --set gathers the values of one name, in order.
    let sets = settings::parse_sets(["a=1", "b", "a=2", "c=x=y"]);
    assert_eq!(
        names_and_values(&sets),
        [("a", vec!["1", "2"]), ("b", vec![]), ("c", vec!["x=y"])]
    );
}

/// The config file: in --confdir (or `--set confdir`), else in --ca-dir, else in the
/// first default directory that has one; the command line wins over it.
#[test]
fn the_config_file_is_read_from_the_config_directory_and_loses_to_the_command_line() {
    let home = tempfile::tempdir().unwrap();
    let dir = |name: &str, text: &str| {
        let d = home.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        if !text.is_empty() {
            std::fs::write(d.join("config.yaml"), text).unwrap();
        }
        d
    };
    let ours = dir("mitm", "listen_port: 1001\nssl_insecure: true\n");
    let theirs = dir("mitmproxy", "listen_port: 1002\n");
    let confdir = dir("conf", "listen_port: 1003\nignore_hosts: [a, b]\n");
    let yml = dir("yml", "");
    std::fs::write(yml.join("config.yml"), "listen_port: 1004\n").unwrap();
    let empty = dir("empty", "");
    let port = |args: &[&str], sources: &Sources| -> u16 {
        let argv = std::iter::once("mitm").chain(args.iter().copied());
        match parse_with(argv, sources).unwrap().command {
            Command::Proxy(p) => p.listen.address.port,
            Command::Ca(c) => c.address.port,
            other => panic!("{other:?}"),
        }
    };
    let both = Sources {
        default_dirs: vec![ours.clone(), theirs.clone()],
        home: None,
    };
    let theirs_only = Sources {
        default_dirs: vec![empty.clone(), theirs.clone()],
        home: None,
    };
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    assert_eq!(port(&[], &both), 1001);
    assert_eq!(port(&[], &theirs_only), 1002);
    assert_eq!(port(&[], &Sources::default()), mitm::DEFAULT_PORT);
    assert_eq!(port(&["--confdir", &s(&confdir)], &both), 1003);
    assert_eq!(
        port(&["--set", &format!("confdir={}", s(&confdir))], &both),
        1003
    );
    assert_eq!(port(&["--ca-dir", &s(&yml)], &both), 1004);
    // A directory named on the command line with no config file: none is read.
    assert_eq!(port(&["--ca-dir", &s(&empty)], &both), mitm::DEFAULT_PORT);
    // The command line wins: a flag, and --set.
    assert_eq!(port(&["-p", "7"], &both), 7);
    assert_eq!(port(&["--set", "listen_port=8"], &both), 8);
    // For a subcommand as for the proxy.
    assert_eq!(port(&["ca", "--confdir", &s(&confdir)], &both), 1003);
    let Command::Proxy(p) = parse_with(["mitm", "--confdir", &s(&confdir)], &both)
        .unwrap()
        .command
    else {
        panic!()
    };
    assert_eq!(p.intercept.ignore_hosts, ["a", "b"]);
    // ssl_insecure came from ours only.
    assert!(!p.upstream_tls.insecure);
    // `~/` in a value is the home directory (mitmproxy's paths are expanded so).
    let with_home = Sources {
        default_dirs: vec![],
        home: Some(home.path().to_path_buf()),
    };
    assert_eq!(port(&["--set", "confdir=~/conf"], &with_home), 1003);
    std::fs::write(
        confdir.join("config.yaml"),
        "save_stream_file: ~/out.flows\n",
    )
    .unwrap();
    let Command::Proxy(p) = parse_with(["mitm", "--confdir", &s(&confdir)], &with_home)
        .unwrap()
        .command
    else {
        panic!()
    };
    assert_eq!(p.save.save, [home.path().join("out.flows")]);
    // A bad file says which file and what.
    let bad = dir("bad", "listen_port: [1, 2]\n");
    let e = parse_with(["mitm", "--ca-dir", &s(&bad)], &both).unwrap_err();
    let text = e.render().to_string();
    assert!(
        text.contains("config.yaml: listen_port: takes one value"),
        "{text}"
    );
}

/// An option added to the command later (as other groups add theirs) is settable by
/// its name with no change to the settings: a list from repeated `--set`, a boolean.
#[test]
fn an_option_added_to_the_command_is_settable_by_its_name() {
    use clap::{Arg, ArgAction};
    let cmd = command()
        .arg(
            Arg::new("rewrite_rule")
                .long("rewrite-rule")
                .action(ArgAction::Append),
        )
        .arg(
            Arg::new("no_store")
                .long("no-store")
                .action(ArgAction::SetTrue),
        );
    let argv: Vec<std::ffi::OsString> = [
        "mitm",
        "--set",
        "rewrite_rule=|a|b",
        "--set",
        "rewrite_rule=|c|d",
        "--set",
        "no_store",
    ]
    .iter()
    .map(Into::into)
    .collect();
    let settings::Applied {
        command: cmd,
        warnings,
        ..
    } = settings::apply(cmd, &argv, &Sources::default()).unwrap();
    assert!(warnings.is_empty());
    let matches = cmd.try_get_matches_from(&argv).unwrap();
    let rules: Vec<&String> = matches.get_many("rewrite_rule").unwrap().collect();
    assert_eq!(rules, ["|a|b", "|c|d"]);
    assert!(matches.get_flag("no_store"));
    // Given as a flag, the flag's values replace the settings'.
    let argv: Vec<std::ffi::OsString> = [
        "mitm",
        "--rewrite-rule",
        "|x|y",
        "--set",
        "rewrite_rule=|a|b",
    ]
    .iter()
    .map(Into::into)
    .collect();
    let cmd = command().arg(
        Arg::new("rewrite_rule")
            .long("rewrite-rule")
            .action(ArgAction::Append),
    );
    let cmd = settings::apply(cmd, &argv, &Sources::default())
        .unwrap()
        .command;
    let matches = cmd.try_get_matches_from(&argv).unwrap();
    let rules: Vec<&String> = matches.get_many("rewrite_rule").unwrap().collect();
    assert_eq!(rules, ["|x|y"]);
}

/// `--body-size-limit` reads sizes as mitmproxy's `human.parse_size` does, refuses bad
/// ones with what is wrong, and is `body_size_limit` for `--set`.
#[test]
fn body_size_limit_takes_mitmproxys_sizes() {
    use crate::cli::args::parse_size;
    for (text, bytes) in [
        ("0", 0),
        ("1500", 1500),
        ("12b", 12),
        ("1k", 1024),
        ("10m", 10 << 20),
        ("2g", 2 << 30),
        ("1t", 1 << 40),
        ("3K", 3072),
    ] {
        assert_eq!(parse_size(text), Ok(bytes), "{text}");
    }
    for bad in [
        "",
        "k",
        "-1",
        "1.5m",
        "10x",
        "m10",
        "1 k",
        "99999999999999999999",
        "20000000t",
    ] {
        let e = parse_size(bad).expect_err(bad);
        assert!(
            e.contains("invalid size") && e.contains("10m"),
            "{bad}: {e}"
        );
    }
    let Command::Proxy(p) = parsed("mitm --set body_size_limit=1k") else {
        panic!()
    };
    assert_eq!(p.limits.body_size_limit, Some(1024));
    let Command::Proxy(p) = parsed("mitm --body-size-limit 2m") else {
        panic!()
    };
    assert_eq!(p.limits.body_size_limit, Some(2 << 20));
    let Command::Proxy(p) = parsed("mitm") else {
        panic!()
    };
    assert_eq!(p.limits.body_size_limit, None);
    let e = parse("mitm --set body_size_limit=ten")
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid size"), "{e}");
}

/// With addon scripts (`-s`, `--scripts`, or `scripts` set by name), a setting no
/// option takes is left for the scripts, in order, the command line's over the config
/// file's; without scripts it is still refused. mitmproxy's own options with no
/// equivalent here are refused either way.
#[test]
fn settings_no_option_takes_are_left_for_addon_scripts() {
    let options = |line: &str| -> Vec<(String, Vec<String>)> {
        let config = parse(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        config
            .script_options
            .into_iter()
            .map(|g| (g.name, g.values))
            .collect()
    };
    let pair = |name: &str, values: &[&str]| {
        (
            name.to_string(),
            values.iter().map(|v| v.to_string()).collect::<Vec<_>>(),
        )
    };
    assert_eq!(
        options(
            "mitm -s a.py --set greeting=hi --set listen_port=0 --set flag --set tag=x --set tag=y"
        ),
        [
            pair("greeting", &["hi"]),
            pair("flag", &[]),
            pair("tag", &["x", "y"])
        ]
    );
    // Our options still apply: listen_port is ours.
    let Command::Proxy(p) = parsed("mitm --scripts a.py --set listen_port=0 --set x=1") else {
        panic!()
    };
    assert_eq!(p.listen.address.port, 0);
    assert_eq!(p.files.scripts, [PathBuf::from("a.py")]);
    // Scripts set by name count as given.
    assert_eq!(
        options("mitm --set scripts=a.py --set greeting=hi"),
        [pair("greeting", &["hi"])]
    );
    // Without scripts: refused, as before, and nothing is left over.
    let refused = parse("mitm --set greeting=hi").unwrap_err().to_string();
    assert!(refused.contains("no option is named greeting"), "{refused}");
    assert!(options("mitm -p 0").is_empty());
    // mitmproxy's options with no equivalent here are refused, scripts or not.
    let refused = parse("mitm -s a.py --set http3=true")
        .unwrap_err()
        .to_string();
    assert!(refused.contains("has no equivalent here"), "{refused}");
    // The config file's, under the command line's of the same name.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.yaml"),
        "greeting: file\nother: [1, 2]\nlisten_port: 0\n",
    )
    .unwrap();
    let confdir = dir.path().to_str().unwrap().to_string();
    let config = parse_with(
        [
            "mitm",
            "--confdir",
            &confdir,
            "-s",
            "a.py",
            "--set",
            "greeting=line",
        ],
        &Sources::default(),
    )
    .unwrap();
    let left: Vec<(&str, Vec<&str>)> = names_and_values(&config.script_options);
    assert_eq!(
        left,
        [("other", vec!["1", "2"]), ("greeting", vec!["line"])]
    );
}

/// Scripts are checked before anything starts: the binary refuses them (saying how to
/// get the command that runs them); the Python package's command refuses a file that is
/// not there, and `-n` (no proxy for them to see).
#[test]
fn scripts_are_checked_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("addon.py");
    std::fs::write(&script, "def request(flow):\n    pass\n").unwrap();
    let line = format!("mitm -s {}", script.display());
    assert!(parsed(&line).check(true).is_ok());
    let binary = format!("{:#}", parsed(&line).check(false).unwrap_err());
    assert!(binary.contains("pip install ./python"), "{binary}");
    let missing = dir.path().join("missing.py");
    let line = format!("mitm -s {} -s {}", script.display(), missing.display());
    let error = format!("{:#}", parsed(&line).check(true).unwrap_err());
    assert!(
        error.starts_with(&format!("-s {}: cannot read the script", missing.display())),
        "{error}"
    );
    let line = format!("mitm -s {}", dir.path().display());
    let error = format!("{:#}", parsed(&line).check(true).unwrap_err());
    assert!(error.contains("not a file"), "{error}");
    let line = format!("mitm -n -r f.flows -s {}", script.display());
    let error = format!("{:#}", parsed(&line).check(true).unwrap_err());
    assert!(error.contains("-n runs no proxy"), "{error}");
}
