//! Options by name: `--set NAME[=VALUE]` and the `config.yaml` of the config directory,
//! as mitmproxy takes them.
//!
//! Every long option of the command is settable by its name with `_` for `-`
//! (`--max-connections` is `max_connections`), and so is each of its aliases
//! (`--listen-port` is `listen_port`): the names come from clap's [`clap::Command`],
//! so an option added to `args` is settable with no change here. mitmproxy's names
//! that are none of ours are in [`MITMPROXY`]: another name for one of ours, the
//! opposite of one of ours, a value mitm always has, or nothing here.
//!
//! A setting becomes its option's *default* (clap's `default_value`), checked first
//! with the option's own value parser, so that:
//! - a flag on the command line wins over `--set`, and `--set` over `config.yaml`
//!   (mitmproxy lets the file win over `--set`; the README says we differ);
//! - options given before and after a subcommand still join as given options do, and a
//!   setting the subcommand has no use for is no warning (a config file names options
//!   of every command).
//!
//! Values: a boolean takes `true` or `false`, and is true given bare (`--set
//! ssl_insecure`); a list takes each value of a repeated `--set` (or a YAML list), which
//! replace its default; any other option takes one value, and given bare keeps its
//! default (mitmproxy's "unset").

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use clap::builder::{ArgAction, Resettable};
use clap::error::ErrorKind;
use clap::{Arg, ArgMatches, Command};

/// The id and long name of the `--set` option.
pub(crate) const SET: &str = "set";

/// The id of `-s`/`--scripts` (addon scripts).
pub(crate) const SCRIPTS: &str = "scripts";

/// The names of the config file in a config directory, in the order they are looked
/// for (mitmproxy reads both, the second over the first; we read the first found).
pub(crate) const CONFIG_FILES: [&str; 2] = ["config.yaml", "config.yml"];

/// `--set`, which the proxy and every subcommand take.
pub(crate) fn set_arg() -> Arg {
    Arg::new(SET)
        .long(SET)
        .value_name("NAME[=VALUE]")
        .action(ArgAction::Append)
        .help_heading("Options by name")
        .help(
            "Set an option by name, as mitmproxy's --set does: by mitmproxy's name \
             (ssl_insecure, listen_port, confdir, …) or by a long option's name with _ \
             for - (max_connections). A boolean given bare is true; a list takes each \
             value of a repeated --set. Options given as flags win over --set, and --set \
             over config.yaml in the config directory (README: Coming from mitmproxy).",
        )
}

/// What a mitmproxy option name that is none of ours means here.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Mitmproxy {
    /// Our option of this name (`_` form) under another name.
    Rename(&'static str),
    /// Our boolean option of this name, inverted (mitmproxy's `server` is our
    /// `no_server`).
    Inverse(&'static str),
    /// What mitm always does: accepted with this value (any spelling of it), refused
    /// with another, saying why.
    Fixed(&'static str, &'static str),
    /// Accepted and ignored, saying why (in a warning).
    Ignored(&'static str),
    /// No equivalent here: refused, with what to do instead.
    Refused(&'static str),
}

/// mitmproxy's option names that are not names of our options (long or alias), and
/// what each means here. Names of mitmproxy's that are ours too (`listen_port`,
/// `ssl_insecure`, `confdir`, `mode`, `ignore_hosts`, …) are found from the command;
/// once an option of mitmproxy's name is added to the command, its row here goes.
pub(crate) const MITMPROXY: &[(&str, Mitmproxy)] = &[
    ("server", Mitmproxy::Inverse("no_server")),
    (
        "ssl_verify_upstream_trusted_ca",
        Mitmproxy::Rename("upstream_ca"),
    ),
    ("client_certs", Mitmproxy::Rename("upstream_client_cert")),
    ("save_stream_filter", Mitmproxy::Rename("save_filter")),
    (
        "connection_strategy",
        Mitmproxy::Fixed(
            "eager",
            "mitm always connects to the target before answering CONNECT",
        ),
    ),
    (
        "http2",
        Mitmproxy::Fixed(
            "true",
            "mitm always speaks HTTP/2 where both sides offer it",
        ),
    ),
    (
        "websocket",
        Mitmproxy::Fixed("true", "mitm always relays WebSocket"),
    ),
    (
        "rawtcp",
        Mitmproxy::Fixed("true", "mitm always relays what is not HTTP as it is"),
    ),
    (
        "upstream_cert",
        Mitmproxy::Fixed(
            "true",
            "mitm always connects upstream first to learn the server's names",
        ),
    ),
    (
        "onboarding",
        Mitmproxy::Fixed("true", "mitm always serves its CA at the magic host"),
    ),
    (
        "onboarding_host",
        Mitmproxy::Fixed("mitm.it", "mitm's magic host is mitm.it"),
    ),
    (
        "stream_large_bodies",
        Mitmproxy::Ignored("mitm streams every body that no hook holds"),
    ),
    (
        "keepserving",
        Mitmproxy::Ignored("mitm keeps serving after -r and -C unless -n is given"),
    ),
    (
        "termlog_verbosity",
        Mitmproxy::Refused("give -q (warnings), -qq (errors) or -v (debug) instead"),
    ),
];

/// Every option mitmdump 11 has (`mitmdump --options`), to tell a name of mitmproxy's
/// that has no equivalent here from a name nothing declares.
const MITMDUMP_OPTIONS: &[&str] = &[
    "add_upstream_certs_to_client_chain",
    "allow_hosts",
    "anticache",
    "anticomp",
    "block_global",
    "block_list",
    "block_private",
    "body_size_limit",
    "cert_passphrase",
    "certs",
    "ciphers_client",
    "ciphers_server",
    "client_certs",
    "client_replay",
    "client_replay_concurrency",
    "command_history",
    "confdir",
    "connect_addr",
    "connection_strategy",
    "content_view_lines_cutoff",
    "dns_name_servers",
    "dns_use_hosts_file",
    "dumper_default_contentview",
    "dumper_filter",
    "export_preserve_original_ip",
    "flow_detail",
    "hardump",
    "http2",
    "http2_ping_keepalive",
    "http3",
    "http_connect_send_host_header",
    "ignore_hosts",
    "keep_alt_svc_header",
    "keep_host_header",
    "keepserving",
    "key_size",
    "listen_host",
    "listen_port",
    "map_local",
    "map_remote",
    "mode",
    "modify_body",
    "modify_headers",
    "normalize_outbound_headers",
    "onboarding",
    "onboarding_host",
    "proxy_debug",
    "proxyauth",
    "rawtcp",
    "readfile_filter",
    "request_client_cert",
    "rfile",
    "save_stream_file",
    "save_stream_filter",
    "scripts",
    "server",
    "server_replay",
    "server_replay_extra",
    "server_replay_ignore_content",
    "server_replay_ignore_host",
    "server_replay_ignore_params",
    "server_replay_ignore_payload_params",
    "server_replay_ignore_port",
    "server_replay_kill_extra",
    "server_replay_nopop",
    "server_replay_refresh",
    "server_replay_reuse",
    "server_replay_use_headers",
    "show_ignored_hosts",
    "showhost",
    "ssl_insecure",
    "ssl_verify_upstream_trusted_ca",
    "ssl_verify_upstream_trusted_confdir",
    "stickyauth",
    "stickycookie",
    "stream_large_bodies",
    "strip_ech",
    "tcp_hosts",
    "termlog_verbosity",
    "tls_ecdh_curve_client",
    "tls_ecdh_curve_server",
    "tls_version_client_max",
    "tls_version_client_min",
    "tls_version_server_max",
    "tls_version_server_min",
    "udp_hosts",
    "upstream_auth",
    "upstream_cert",
    "validate_inbound_headers",
    "websocket",
];

/// The options mitmweb and mitmproxy's console add to mitmdump's (11), none of which
/// is ours: they share one `config.yaml` with mitmdump, so a file written for them is
/// read with these ignored (with a warning), as mitmdump ignores them.
const OTHER_TOOLS: &[&str] = &[
    "console_default_contentview",
    "console_eventlog_verbosity",
    "console_flowlist_layout",
    "console_focus_follow",
    "console_layout",
    "console_layout_headers",
    "console_mouse",
    "console_palette",
    "console_palette_transparent",
    "console_strip_trailing_newlines",
    "intercept",
    "intercept_active",
    "view_filter",
    "view_order",
    "view_order_reversed",
    "web_columns",
    "web_debug",
    "web_open_browser",
    "web_static_viewer",
];

/// Where a setting was given, for its errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// On the command line, `--set`.
    Set,
    /// In this config file.
    File(PathBuf),
}

/// One setting as given: a name, and its values (none when given bare).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Given {
    pub(crate) name: String,
    pub(crate) values: Vec<String>,
    pub(crate) origin: Origin,
}

impl Given {
    /// How the user wrote it: `--set name=value` or `FILE: name`.
    fn source(&self) -> String {
        match &self.origin {
            Origin::Set => match self.values.as_slice() {
                [] => format!("--set {}", self.name),
                values => values
                    .iter()
                    .map(|v| format!("--set {}={v}", self.name))
                    .collect::<Vec<_>>()
                    .join(" "),
            },
            Origin::File(path) => format!("{}: {}", path.display(), self.name),
        }
    }
}

/// `--set` specs as given (`NAME=VALUE` or `NAME`), the values of one name gathered in
/// order, as mitmproxy gathers them.
pub(crate) fn parse_sets<'a>(specs: impl IntoIterator<Item = &'a str>) -> Vec<Given> {
    let mut out: Vec<Given> = Vec::new();
    for spec in specs {
        let (name, value) = match spec.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (spec, None),
        };
        let name = name.trim().to_string();
        let index = match out.iter().position(|g| g.name == name) {
            Some(i) => i,
            None => {
                out.push(Given {
                    name,
                    values: Vec::new(),
                    origin: Origin::Set,
                });
                out.len() - 1
            }
        };
        out[index].values.extend(value.map(str::to_string));
    }
    out
}

/// A config file's text (mitmproxy's format: a YAML map of option names to values,
/// lists as YAML lists) as settings. An empty file sets nothing.
pub(crate) fn parse_config(text: &str, path: &Path) -> Result<Vec<Given>, String> {
    use yaml_rust2::{Yaml, YamlLoader};
    let docs = YamlLoader::load_from_str(text).map_err(|e| format!("not YAML: {e}"))?;
    let map = match docs.into_iter().next() {
        None | Some(Yaml::Null) => return Ok(Vec::new()),
        Some(Yaml::Hash(map)) => map,
        Some(_) => return Err("not a map of option names to values".into()),
    };
    let scalar = |name: &str, value: &Yaml| -> Result<Option<String>, String> {
        Ok(Some(match value {
            Yaml::String(s) | Yaml::Real(s) => s.clone(),
            Yaml::Integer(i) => i.to_string(),
            Yaml::Boolean(b) => b.to_string(),
            Yaml::Null => return Ok(None),
            _ => return Err(format!("{name}: give a value or a list of values")),
        }))
    };
    let mut out = Vec::new();
    for (key, value) in map {
        let Some(name) = scalar("a key", &key)? else {
            return Err("an option with no name".into());
        };
        let values = match &value {
            Yaml::Array(items) => {
                let mut values = Vec::new();
                for item in items {
                    values.extend(scalar(&name, item)?);
                }
                values
            }
            // `name:` with nothing: unset, as mitmproxy takes None.
            Yaml::Null => continue,
            other => scalar(&name, other)?.into_iter().collect(),
        };
        out.push(Given {
            name,
            values,
            origin: Origin::File(path.to_path_buf()),
        });
    }
    Ok(out)
}

/// The config file of `dir`, if it has one.
pub(crate) fn config_file(dir: &Path) -> Option<PathBuf> {
    CONFIG_FILES
        .iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_file())
}

/// What a name means: one of our options, or one of mitmproxy's.
#[derive(Debug, Clone)]
pub(crate) enum Meaning {
    /// Our option with this id.
    Option(String),
    /// One of mitmproxy's names that is none of ours.
    Mitmproxy(&'static str, Mitmproxy),
}

/// Why a name means nothing here (the text says it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unknown {
    /// One of mitmproxy's options, with no equivalent here.
    Mitmproxy(String),
    /// No option of ours or mitmproxy's: an addon script's, or a mistake.
    Nothing(String),
}

impl std::fmt::Display for Unknown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unknown::Mitmproxy(text) | Unknown::Nothing(text) => f.write_str(text),
        }
    }
}

/// Every name `--set` takes, from the command's options (every subcommand's too) and
/// their aliases, and [`MITMPROXY`].
#[derive(Debug)]
pub(crate) struct Names {
    ours: BTreeMap<String, String>,
}

impl Names {
    /// The names of `cmd`'s options and its subcommands'.
    pub(crate) fn of(cmd: &Command) -> Names {
        let mut ours = BTreeMap::new();
        let commands = std::iter::once(cmd).chain(cmd.get_subcommands());
        for command in commands {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if [SET, "help", "version"].contains(&id) {
                    continue;
                }
                let longs = arg
                    .get_long()
                    .into_iter()
                    .chain(arg.get_all_aliases().unwrap_or_default());
                for long in longs {
                    ours.entry(long.replace('-', "_"))
                        .or_insert_with(|| id.to_string());
                }
            }
        }
        Names { ours }
    }

    /// What `name` means, or why it is refused.
    pub(crate) fn meaning(&self, name: &str) -> Result<Meaning, Unknown> {
        if let Some(id) = self.ours.get(name) {
            return Ok(Meaning::Option(id.clone()));
        }
        if let Some((name, m)) = MITMPROXY.iter().find(|(n, _)| *n == name) {
            return Ok(Meaning::Mitmproxy(name, *m));
        }
        if let Some(name) = OTHER_TOOLS.iter().find(|n| **n == name) {
            return Ok(Meaning::Mitmproxy(
                name,
                Mitmproxy::Ignored("an option of mitmweb or mitmproxy's console"),
            ));
        }
        if MITMDUMP_OPTIONS.contains(&name) {
            return Err(Unknown::Mitmproxy(format!(
                "mitmproxy's option {name} has no equivalent here"
            )));
        }
        let hint = match self.closest(name) {
            Some(close) => format!(": did you mean {close}?"),
            None => String::new(),
        };
        Err(Unknown::Nothing(format!("no option is named {name}{hint}")))
    }

    /// The known name closest to `name` (fewest edits; the first in order among
    /// equals).
    pub(crate) fn closest(&self, name: &str) -> Option<&str> {
        self.ours
            .keys()
            .map(String::as_str)
            .chain(MITMPROXY.iter().map(|(n, _)| *n))
            .min_by_key(|known| edit_distance(name, known))
    }
}

/// Levenshtein distance between `a` and `b`, by characters.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == *cb {
                diagonal
            } else {
                1 + diagonal.min(above).min(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

/// Where settings come from besides the command line: the directories whose
/// `config.yaml` is read when neither `--confdir` nor `--ca-dir` names one (the first
/// that has one).
#[derive(Debug, Clone, Default)]
pub(crate) struct Sources {
    pub(crate) default_dirs: Vec<PathBuf>,
    /// The home directory: a setting's value starting with `~/` is taken from there,
    /// as mitmproxy expands its paths (a shell does it for `--set`, not in a file).
    pub(crate) home: Option<PathBuf>,
}

impl Sources {
    /// The user's: mitm's data directory (where its CA lives), then mitmproxy's
    /// `~/.mitmproxy`.
    pub(crate) fn from_env() -> Sources {
        let confdir = mitm::tls::ca::default_mitmproxy_confdir();
        Sources {
            home: confdir
                .as_deref()
                .and_then(Path::parent)
                .map(Path::to_path_buf),
            default_dirs: mitm::default_ca_dir().into_iter().chain(confdir).collect(),
        }
    }
}

/// An error at start, as clap reports its own (exit code 2).
fn error(kind: ErrorKind, message: String) -> clap::Error {
    clap::Error::raw(kind, format!("{message}\n"))
}

/// The values `id` was given on the command line, before the subcommand or after.
fn given_values<'a>(matches: &'a ArgMatches, id: &str) -> Vec<&'a OsStr> {
    let sub = matches.subcommand().map(|(_, m)| m);
    let mut values = Vec::new();
    for m in std::iter::once(matches).chain(sub) {
        // `try_get_raw` first: asking a subcommand's matches for an option it does not
        // have panics in `value_source`.
        let Ok(Some(raw)) = m.try_get_raw(id) else {
            continue;
        };
        if m.value_source(id) == Some(clap::parser::ValueSource::CommandLine) {
            values.extend(raw);
        }
    }
    values
}

/// The config file to read: in `--confdir` (or `--set confdir=DIR`), else in
/// `--ca-dir`, else in the first of `sources`' directories that has one.
fn config_path(matches: &ArgMatches, sets: &[Given], sources: &Sources) -> Option<PathBuf> {
    let named = given_values(matches, "confdir")
        .last()
        .map(PathBuf::from)
        .or_else(|| {
            let dir = sets
                .iter()
                .find(|g| g.name == "confdir")
                .and_then(|g| g.values.last())?;
            match (dir.strip_prefix("~/"), &sources.home) {
                (Some(rest), Some(home)) => Some(home.join(rest)),
                _ => Some(PathBuf::from(dir)),
            }
        })
        .or_else(|| given_values(matches, "ca_dir").last().map(PathBuf::from));
    match named {
        Some(dir) => config_file(&dir),
        None => sources.default_dirs.iter().find_map(|d| config_file(d)),
    }
}

/// What [`apply`] makes of the settings.
#[derive(Debug)]
pub(crate) struct Applied {
    /// The command, with the settings as its options' defaults.
    pub(crate) command: Command,
    /// What to warn about: settings accepted and ignored.
    pub(crate) warnings: Vec<String>,
    /// The settings no option takes, left for addon scripts to declare (only when
    /// scripts are given: `-s`, or `scripts` set by name); the command line's replace
    /// the config file's of the same name.
    pub(crate) for_scripts: Vec<Given>,
}

/// `cmd` with the settings of `--set` and the config file as its options' defaults
/// (a first parse of `argv` finds them), the warnings to give (settings accepted and
/// ignored), and the settings left for addon scripts. A bad value or an option of
/// mitmproxy's with no equivalent here is an error, and so is a name nothing declares
/// unless scripts are given (they may declare it).
pub(crate) fn apply(
    cmd: Command,
    argv: &[OsString],
    sources: &Sources,
) -> Result<Applied, clap::Error> {
    let matches = cmd.clone().try_get_matches_from(argv)?;
    let specs = given_values(&matches, SET);
    let specs: Vec<&str> = specs.iter().filter_map(|s| s.to_str()).collect();
    let sets = parse_sets(specs);
    let mut all = Vec::new();
    if let Some(path) = config_path(&matches, &sets, sources) {
        let text = std::fs::read_to_string(&path).map_err(|e| {
            error(
                ErrorKind::Io,
                format!("cannot read the config file {}: {e}", path.display()),
            )
        })?;
        let from_file = parse_config(&text, &path).map_err(|e| {
            error(
                ErrorKind::InvalidValue,
                format!("the config file {}: {e}", path.display()),
            )
        })?;
        all.extend(from_file);
    }
    all.extend(sets);
    if let Some(home) = &sources.home {
        for given in &mut all {
            for value in &mut given.values {
                if let Some(rest) = value.strip_prefix("~/") {
                    *value = home.join(rest).to_string_lossy().into_owned();
                }
            }
        }
    }
    let names = Names::of(&cmd);
    let scripts = !given_values(&matches, SCRIPTS).is_empty()
        || all.iter().any(|g| {
            !g.values.is_empty()
                && matches!(names.meaning(&g.name), Ok(Meaning::Option(id)) if id == SCRIPTS)
        });
    // By option: the later (the command line's) replaces the earlier (the file's).
    let mut defaults: BTreeMap<String, Option<Vec<String>>> = BTreeMap::new();
    let mut warnings = Vec::new();
    let mut for_scripts: Vec<Given> = Vec::new();
    for given in &all {
        let meaning = match names.meaning(&given.name) {
            Ok(meaning) => meaning,
            Err(Unknown::Nothing(_)) if scripts => {
                for_scripts.retain(|g| g.name != given.name);
                for_scripts.push(given.clone());
                continue;
            }
            Err(e) => {
                return Err(error(
                    ErrorKind::UnknownArgument,
                    format!("{}: {e}", given.source()),
                ))
            }
        };
        let (id, inverse) = match meaning {
            Meaning::Option(id) => (id, false),
            // Each row's option exists: `the_names_come_from_the_command_and_mitmproxys_table`
            // checks the table against the command.
            Meaning::Mitmproxy(_, Mitmproxy::Rename(ours)) => (names.ours[ours].clone(), false),
            Meaning::Mitmproxy(_, Mitmproxy::Inverse(ours)) => (names.ours[ours].clone(), true),
            Meaning::Mitmproxy(name, Mitmproxy::Fixed(value, why)) => {
                let ok = match given.values.as_slice() {
                    [] => value == "true",
                    [one] => one.eq_ignore_ascii_case(value),
                    _ => false,
                };
                if !ok {
                    return Err(error(
                        ErrorKind::InvalidValue,
                        format!(
                            "{}: mitmproxy's option {name} can only be {value} here: {why}",
                            given.source()
                        ),
                    ));
                }
                continue;
            }
            Meaning::Mitmproxy(name, Mitmproxy::Ignored(why)) => {
                warnings.push(format!("{}: ignored ({name}): {why}", given.source()));
                continue;
            }
            Meaning::Mitmproxy(name, Mitmproxy::Refused(what)) => {
                return Err(error(
                    ErrorKind::UnknownArgument,
                    format!(
                        "{}: mitmproxy's option {name} has no equivalent here: {what}",
                        given.source()
                    ),
                ));
            }
        };
        // `names` was made from this command's options.
        let arg = find_arg(&cmd, &id).expect("a name of the command's options");
        let values = values_for(arg, given, inverse)?;
        defaults.insert(id, values);
    }
    let mut cmd = cmd;
    for (id, values) in defaults {
        let Some(values) = values else { continue };
        cmd = set_default(cmd, &id, &values);
    }
    Ok(Applied {
        command: cmd,
        warnings,
        for_scripts,
    })
}

/// `id`'s argument in `cmd` or one of its subcommands.
fn find_arg<'a>(cmd: &'a Command, id: &str) -> Option<&'a Arg> {
    std::iter::once(cmd)
        .chain(cmd.get_subcommands())
        .flat_map(Command::get_arguments)
        .find(|a| a.get_id() == id)
}

/// The default values `given` makes for `arg`, each checked by the option's own
/// parser; `None` to keep its default (given bare, not a boolean).
fn values_for(arg: &Arg, given: &Given, inverse: bool) -> Result<Option<Vec<String>>, clap::Error> {
    let bad = |message: String| {
        error(
            ErrorKind::InvalidValue,
            format!("{}: {message}", given.source()),
        )
    };
    let action = arg.get_action();
    let values: Vec<String> = match (action, given.values.as_slice()) {
        (ArgAction::SetTrue | ArgAction::SetFalse, []) => vec!["true".into()],
        (ArgAction::SetTrue | ArgAction::SetFalse, [one]) => match one.as_str() {
            "true" | "false" => vec![one.clone()],
            _ => return Err(bad(format!("{one:?} is not a boolean: give true or false"))),
        },
        (_, []) => return Ok(None),
        (ArgAction::Append, values) => values.to_vec(),
        (_, [one]) => vec![one.clone()],
        (_, values) => {
            return Err(bad(format!(
                "takes one value, and was given {}: {}",
                values.len(),
                values.join(", ")
            )))
        }
    };
    let values = if inverse {
        values
            .into_iter()
            .map(|v| {
                if v == "true" {
                    "false".into()
                } else {
                    "true".into()
                }
            })
            .collect()
    } else {
        values
    };
    for value in &values {
        check_value(arg, value).map_err(bad)?;
    }
    Ok(Some(values))
}

/// Whether `arg` takes `value`, as its own parser says (given alone to a command of
/// that one option, as `--long=value`).
fn check_value(arg: &Arg, value: &str) -> Result<(), String> {
    match arg.get_action() {
        ArgAction::SetTrue | ArgAction::SetFalse => return Ok(()),
        ArgAction::Count => {
            return value
                .parse::<u8>()
                .map(drop)
                .map_err(|_| format!("{value:?} is not a count: give 0, 1, 2, …"));
        }
        _ => {}
    }
    let Some(long) = arg.get_long() else {
        return Ok(());
    };
    // The option alone: what ties it to others would name options not there.
    let alone = arg
        .clone()
        .conflicts_with(Resettable::<clap::Id>::Reset)
        .overrides_with(Resettable::<clap::Id>::Reset)
        .requires(Resettable::<clap::Id>::Reset)
        .group(Resettable::<clap::Id>::Reset)
        .required(false);
    Command::new("mitm")
        .no_binary_name(true)
        .arg(alone)
        .try_get_matches_from([format!("--{long}={value}")])
        .map(drop)
        .map_err(|e| clap_message(&e))
}

/// What a clap error says, without its `error:` prefix and its usage lines.
fn clap_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

/// `cmd` with `values` as the default of its option `id`, in every (sub)command that
/// has it.
fn set_default(mut cmd: Command, id: &str, values: &[String]) -> Command {
    let with = |arg: Arg| -> Arg {
        match values {
            [one] => arg.default_value(one.clone()),
            many => arg.default_values(many.iter().cloned()),
        }
    };
    if cmd.get_arguments().any(|a| a.get_id() == id) {
        cmd = cmd.mut_arg(id, with);
    }
    let subs: Vec<String> = cmd
        .get_subcommands()
        .filter(|s| s.get_arguments().any(|a| a.get_id() == id))
        .map(|s| s.get_name().to_string())
        .collect();
    for name in subs {
        cmd = cmd.mut_subcommand(name, |s| s.mut_arg(id, with));
    }
    cmd
}

/// `cmd` with `--set` on it and on each of its subcommands (no subcommand's options
/// struct has a field for it: it is read here, from the matches, before the
/// options are).
pub(crate) fn with_set(cmd: Command) -> Command {
    let mut cmd = cmd.arg(set_arg());
    let subs: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for name in subs {
        cmd = cmd.mut_subcommand(name, |s| s.arg(set_arg()));
    }
    cmd
}
