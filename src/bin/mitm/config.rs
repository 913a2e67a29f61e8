//! The command line made into what to run ([`Config`]): the settings of `--set` and
//! `config.yaml` made the options' defaults first (`settings`), the options given
//! before a subcommand joined with those given after it ([`Merge`]), and the values
//! clap cannot check checked ([`Command::check`]).
//!
//! An option of a subcommand may be given before the subcommand or after it
//! (`mitm --save out.har replay FILE` or `mitm replay FILE --save out.har`). Given on
//! both sides it must have the same value (a repeatable one, the same list), else the
//! command line is refused. Options given before a subcommand that does not take them
//! are ignored, with a warning ([`Config::warnings`]): wrappers that put their options
//! first keep working.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgMatches, FromArgMatches};

use super::args::{
    command, CaArgs, Cli, ConvertArgs, Intercept, Listen, LogChoice, ProxyArgs, ReadArgs,
    ReplayArgs, ReplayExtra, Secs, Sub, Verbosity, WebArgs,
};
use super::settings::Sources;

/// The matches of the proxy's options (before the subcommand) and of the
/// subcommand's (after it), to tell which were given where.
pub(crate) struct Sides<'a> {
    before: &'a ArgMatches,
    after: &'a ArgMatches,
    /// The subcommand, for its name and its usage in errors.
    command: &'a clap::Command,
}

impl Sides<'_> {
    fn given(matches: &ArgMatches, id: &str) -> bool {
        matches
            .value_source(id)
            .is_some_and(|source| source != ValueSource::DefaultValue)
    }

    fn conflict(&self, id: &str) -> clap::Error {
        let option = self
            .command
            .get_arguments()
            .find(|a| a.get_id() == id)
            .map_or_else(|| id.to_string(), option_name);
        let name = self.command.get_name();
        clap::Error::raw(
            ErrorKind::ArgumentConflict,
            format!(
                "{option} is given both before and after `{name}`, with different values: \
                 give it on one side only"
            ),
        )
        .format(&mut self.command.clone())
    }
}

/// Joins an option's value given after the subcommand (`self`) with its value given
/// before it: the one that was given, the default when neither was; given on both
/// sides, the values must be equal.
pub(crate) trait Merge: Sized {
    fn merge(self, before: Self, sides: &Sides<'_>, id: &str) -> Result<Self, clap::Error>;
}

/// [`Merge`] for a single option: its value is compared whole (a list as a list).
fn merge_value<T: PartialEq>(
    after: T,
    before: T,
    sides: &Sides<'_>,
    id: &str,
) -> Result<T, clap::Error> {
    match (
        Sides::given(sides.before, id),
        Sides::given(sides.after, id),
    ) {
        (true, true) if after != before => Err(sides.conflict(id)),
        (true, false) => Ok(before),
        _ => Ok(after),
    }
}

macro_rules! merge_values {
    ($($ty:ty),*) => {$(
        impl Merge for $ty {
            fn merge(self, before: Self, sides: &Sides<'_>, id: &str) -> Result<Self, clap::Error> {
                merge_value(self, before, sides, id)
            }
        }
    )*};
}

merge_values!(
    String,
    PathBuf,
    bool,
    u8,
    u16,
    u32,
    usize,
    Secs,
    LogChoice,
    ReplayExtra
);

impl<T: PartialEq> Merge for Option<T> {
    fn merge(self, before: Self, sides: &Sides<'_>, id: &str) -> Result<Self, clap::Error> {
        merge_value(self, before, sides, id)
    }
}

impl<T: PartialEq> Merge for Vec<T> {
    fn merge(self, before: Self, sides: &Sides<'_>, id: &str) -> Result<Self, clap::Error> {
        merge_value(self, before, sides, id)
    }
}

/// The command line, parsed and joined: what to run ([`Command::check`] checks the
/// values clap cannot).
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) command: Command,
    /// What to warn about: options given before the subcommand that it does not take,
    /// ignored.
    pub(crate) warnings: Vec<String>,
    /// The settings no option takes, for the addon scripts of `-s` (none without it).
    pub(crate) script_options: Vec<super::settings::Given>,
}

/// What to run, with the options that apply to it.
#[derive(Debug)]
pub(crate) enum Command {
    Proxy(Box<ProxyArgs>),
    Ca(CaArgs),
    Read(ReadArgs),
    Replay(Box<ReplayArgs>),
    Convert(ConvertArgs),
    Web(Box<WebArgs>),
}

impl Command {
    pub(crate) fn verbosity(&self) -> &Verbosity {
        match self {
            Command::Proxy(a) => &a.verbosity,
            Command::Ca(a) => &a.verbosity,
            Command::Read(a) => &a.verbosity,
            Command::Replay(a) => &a.verbosity,
            Command::Convert(a) => &a.verbosity,
            Command::Web(a) => &a.verbosity,
        }
    }

    /// Worker threads asked for: 0 for one per core (also where there is no option).
    pub(crate) fn threads(&self) -> usize {
        match self {
            Command::Proxy(a) => a.runtime.threads.threads,
            Command::Replay(a) => a.threads.threads,
            Command::Web(a) => a.threads.threads,
            Command::Ca(_) | Command::Read(_) | Command::Convert(_) => 0,
        }
    }

    /// Checks the values clap does not (modes, filters, credentials, patterns), so that
    /// a mistake is reported before anything starts or any file is made. `scripts`:
    /// whether this build runs addon scripts (`-s`).
    pub(crate) fn check(&self, scripts: bool) -> anyhow::Result<()> {
        let filter = |text: &Option<String>, flag: &str| {
            text.as_deref()
                .map(parse_filter)
                .transpose()
                .with_context(|| flag.to_string())
                .map(drop)
        };
        match self {
            Command::Proxy(a) => {
                super::mitmdump::check(a, scripts)?;
                a.listen.credentials()?;
                a.intercept.ignore_hosts()?;
                a.intercept.tcp_hosts()?;
                filter(&a.save.save_filter, "--save-filter")
            }
            Command::Replay(a) => {
                filter(&a.filter, "--filter")?;
                filter(&a.save.save_filter, "--save-filter")
            }
            Command::Read(ReadArgs { filter: f, .. })
            | Command::Convert(ConvertArgs { filter: f, .. }) => filter(f, "--filter"),
            Command::Ca(_) | Command::Web(_) => Ok(()),
        }
    }
}

impl Listen {
    /// The `--mode` specs, refusing more than one without an address of its own.
    pub(crate) fn modes(&self) -> anyhow::Result<Vec<mitm::server::mode::ModeSpec>> {
        let modes = self
            .modes
            .iter()
            .map(|m| m.parse::<mitm::server::mode::ModeSpec>())
            .collect::<Result<Vec<_>, _>>()?;
        let unaddressed: Vec<String> = modes
            .iter()
            .filter(|m| m.listen.is_none())
            .map(ToString::to_string)
            .collect();
        if unaddressed.len() > 1 {
            anyhow::bail!(
                "--mode {} all want --host/--port: give all but one of them an address of \
                 its own, e.g. `--mode {}@8081`",
                unaddressed.join(", --mode "),
                unaddressed[1]
            );
        }
        Ok(modes)
    }

    /// `--proxy-auth` as user and password.
    pub(crate) fn credentials(&self) -> anyhow::Result<Option<(&str, &str)>> {
        let Some(credentials) = &self.proxy_auth else {
            return Ok(None);
        };
        match credentials.split_once(':') {
            Some(pair) => Ok(Some(pair)),
            None => anyhow::bail!("--proxy-auth takes USER:PASSWORD, with a colon between"),
        }
    }
}

impl Intercept {
    /// The `--ignore-hosts` and `--allow-hosts` router, if any pattern is given.
    pub(crate) fn ignore_hosts(&self) -> anyhow::Result<Option<mitm::IgnoreHosts>> {
        if self.ignore_hosts.is_empty() && self.allow_hosts.is_empty() {
            return Ok(None);
        }
        let hosts = mitm::IgnoreHosts::new(&self.ignore_hosts)
            .map_err(|e| anyhow::anyhow!("--ignore-hosts: {e}"))?;
        if self.allow_hosts.is_empty() {
            return Ok(Some(hosts));
        }
        hosts
            .and_allow_only(&self.allow_hosts)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("--allow-hosts: {e}"))
    }

    /// The `--tcp-hosts` router, if any pattern is given.
    pub(crate) fn tcp_hosts(&self) -> anyhow::Result<Option<mitm::middleware::TcpHosts>> {
        if self.tcp_hosts.is_empty() {
            return Ok(None);
        }
        mitm::middleware::TcpHosts::new(&self.tcp_hosts)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("--tcp-hosts: {e}"))
    }

    /// `--certs` as (domain, file): `*` when no domain is given, as mitmproxy splits
    /// at the first `=`.
    pub(crate) fn certs(&self) -> Vec<(&str, &str)> {
        self.certs
            .iter()
            .map(|spec| spec.split_once('=').unwrap_or(("*", spec)))
            .collect()
    }
}

/// A filter from the command line, its error saying where it went wrong.
pub(crate) fn parse_filter(text: &str) -> anyhow::Result<mitm::capture::Filter> {
    text.parse()
        .map_err(|e| anyhow::anyhow!("invalid filter {text:?}: {e}"))
}

/// Parses `argv` (the program's name first) into what to run, joining the options
/// given before a subcommand with those given after it; `--set` applies, and no
/// config file is read.
#[cfg(test)]
pub(crate) fn try_parse_from<I, T>(argv: I) -> Result<Config, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    parse_with(argv, &Sources::default())
}

/// As [`try_parse_from`], with the settings of `--set` and of the config file
/// (`sources` says where to look for it when the command line names no directory)
/// as the options' defaults (`settings`).
pub(crate) fn parse_with<I, T>(argv: I, sources: &Sources) -> Result<Config, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let argv: Vec<std::ffi::OsString> = argv.into_iter().map(Into::into).collect();
    let super::settings::Applied {
        command: mut cmd,
        warnings: settings_warnings,
        for_scripts: script_options,
    } = super::settings::apply(command(), &argv, sources)?;
    let matches = cmd.try_get_matches_from_mut(&argv)?;
    let cli = Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut cmd))?;
    let proxy = cli.proxy;
    let Some(sub) = cli.command else {
        return Ok(Config {
            command: Command::Proxy(Box::new(proxy)),
            warnings: settings_warnings,
            script_options,
        });
    };
    let Some((name, after)) = matches.subcommand() else {
        unreachable!("clap parsed a subcommand without its matches");
    };
    let Some(sub_cmd) = cmd.find_subcommand(name) else {
        unreachable!("clap parsed a subcommand it does not have");
    };
    let sides = Sides {
        before: &matches,
        after,
        command: sub_cmd,
    };
    let command = match sub {
        Sub::Ca(a) => Command::Ca(CaArgs {
            ca: a.ca.merge(proxy.ca, &sides, "")?,
            address: a.address.merge(proxy.listen.address, &sides, "")?,
            verbosity: a.verbosity.merge(proxy.verbosity, &sides, "")?,
        }),
        Sub::Read(a) => Command::Read(ReadArgs {
            verbosity: a.verbosity.merge(proxy.verbosity, &sides, "")?,
            ..a
        }),
        Sub::Convert(a) => Command::Convert(ConvertArgs {
            verbosity: a.verbosity.merge(proxy.verbosity, &sides, "")?,
            ..a
        }),
        Sub::Replay(a) => Command::Replay(Box::new(ReplayArgs {
            ca: a.ca.merge(proxy.ca, &sides, "")?,
            upstream_tls: a.upstream_tls.merge(proxy.upstream_tls, &sides, "")?,
            upstream_timeouts: a
                .upstream_timeouts
                .merge(proxy.upstream_timeouts, &sides, "")?,
            save: a.save.merge(proxy.save, &sides, "")?,
            log: a.log.merge(proxy.log, &sides, "")?,
            verbosity: a.verbosity.merge(proxy.verbosity, &sides, "")?,
            threads: a.threads.merge(proxy.runtime.threads, &sides, "")?,
            ..a
        })),
        Sub::Web(a) => Command::Web(Box::new(WebArgs {
            at: a.at.merge(proxy.web.at, &sides, "")?,
            ca: a.ca.merge(proxy.ca, &sides, "")?,
            upstream_tls: a.upstream_tls.merge(proxy.upstream_tls, &sides, "")?,
            verbosity: a.verbosity.merge(proxy.verbosity, &sides, "")?,
            threads: a.threads.merge(proxy.runtime.threads, &sides, "")?,
            ..a
        })),
    };
    // `-q` after the subcommand and `-v` before it would pass clap's own check.
    let verbosity = command.verbosity();
    if verbosity.verbose > 0 && verbosity.quiet > 0 {
        return Err(clap::Error::raw(
            ErrorKind::ArgumentConflict,
            "-v and -q cannot be used together: give one of them",
        )
        .format(&mut sub_cmd.clone()));
    }
    let warnings = settings_warnings
        .into_iter()
        .chain(
            cmd.get_arguments()
                .filter(|arg| Sides::given(&matches, arg.get_id().as_str()))
                .filter(|arg| sub_cmd.get_arguments().all(|a| a.get_id() != arg.get_id()))
                .map(|arg| {
                    format!(
                        "{} does not apply to `mitm {name}`: ignored",
                        option_name(arg)
                    )
                }),
        )
        .collect();
    Ok(Config {
        command,
        warnings,
        script_options,
    })
}

/// How a user writes `arg`: `--long`, else `-s`.
fn option_name(arg: &clap::Arg) -> String {
    match (arg.get_long(), arg.get_short()) {
        (Some(long), _) => format!("--{long}"),
        (None, Some(short)) => format!("-{short}"),
        (None, None) => arg.get_id().to_string(),
    }
}
