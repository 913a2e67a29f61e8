//! The command line as clap parses it: every option defined once, in groups by what it
//! is for (`group!`); the proxy (no subcommand) takes every group, each subcommand
//! the groups that apply to it, so that its `--help` lists exactly those. How the
//! values given before a subcommand join those given after it is in `config`.
//!
//! Defaults come from the library's constants (`default_value_t`, which `--help`
//! shows). Values clap cannot check (modes, filters, credentials, patterns) are checked
//! in `config` before anything runs.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use clap::{ArgAction, CommandFactory, Parser, Subcommand, ValueEnum};

/// A man-in-the-middle proxy for HTTP and HTTPS: see, log and change your own clients'
/// traffic. Point a client at it as its HTTP proxy, and make the client trust the CA
/// certificate it prints to see inside HTTPS.
///
/// Without a subcommand, mitm runs the proxy. A subcommand's options may go before or
/// after it (given on both sides, with the same value); `mitm SUBCOMMAND --help` lists
/// them.
#[derive(Debug, Parser)]
#[command(name = "mitm", version)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Sub>,

    #[command(flatten)]
    pub(crate) proxy: ProxyArgs,
}

/// Defines a group of options: a clap [`clap::Args`] struct, and its
/// [`Merge`](super::config::Merge), which joins the values given before a subcommand
/// with those given after it, field by field. Each option is written once, in a group,
/// with its help and its default; the proxy and the subcommands flatten the groups. (An
/// alias or a config-file name for an option goes on its one definition.)
macro_rules! group {
    (
        $(#[$meta:meta])*
        pub(crate) struct $name:ident {
            $( $(#[$field_meta:meta])* pub(crate) $field:ident : $ty:ty, )*
        }
    ) => {
        #[derive(Debug, Clone, PartialEq, clap::Args)]
        $(#[$meta])*
        pub(crate) struct $name {
            $( $(#[$field_meta])* pub(crate) $field: $ty, )*
        }

        impl super::config::Merge for $name {
            // A group with no options yet uses neither.
            #[allow(unused_variables)]
            fn merge(
                self,
                before: Self,
                sides: &super::config::Sides<'_>,
                _id: &str,
            ) -> Result<Self, clap::Error> {
                Ok(Self {
                    $(
                        $field: self.$field.merge(before.$field, sides, stringify!($field))?,
                    )*
                })
            }
        }
    };
}

// --- The groups ---------------------------------------------------------------------

group! {
    /// Where the proxy listens (also the address `mitm ca`'s examples name).
    #[command(next_help_heading = "Proxy address")]
    pub(crate) struct Address {
        /// Address the proxy listens on (for `mitm ca`, the one its examples name). Use
        /// 0.0.0.0 only if other machines should reach the proxy: anyone on your
        /// networks who can connect can use it (clients from public addresses are
        /// refused, see --block-global).
        #[arg(long, alias = "listen-host", value_name = "HOST", default_value = mitm::DEFAULT_HOST)]
        pub(crate) host: String,

        /// Port the proxy listens on; 0 picks a free port (printed on start).
        #[arg(
            long,
            short,
            alias = "listen-port",
            value_name = "PORT",
            default_value_t = mitm::DEFAULT_PORT,
        )]
        pub(crate) port: u16,
    }
}

group! {
    /// What the proxy is and who may use it.
    #[command(next_help_heading = "Modes and access")]
    pub(crate) struct Listen {

        /// What the proxy is, as MODE[:DATA][@[HOST:]PORT]; repeatable, each mode with
        /// its own listener. MODE is `regular` (an explicit HTTP proxy), `socks5`,
        /// `reverse:http[s]://HOST[:PORT]` (poses as that origin),
        /// `upstream:http[s]|socks5://[USER:PASS@]HOST:PORT` (an explicit proxy whose
        /// traffic leaves through that proxy) or `transparent` (connections redirected
        /// by the firewall; Linux). `@PORT` or `@HOST:PORT` gives a mode its own
        /// address; at most one mode goes without, on --host and --port. Example:
        /// `--mode regular --mode socks5@1080`.
        #[arg(long = "mode", short_alias = 'm', value_name = "SPEC", default_value = "regular")]
        // Parsed after clap (`Listen::modes`), whose errors would echo a URL's password.
        pub(crate) modes: Vec<String>,

        /// Ask clients for these proxy credentials (HTTP Basic; SOCKS5 username and
        /// password), as USER:PASSWORD; others get 407. Also on CONNECT.
        #[arg(long, alias = "proxyauth", value_name = "USER:PASSWORD")]
        pub(crate) proxy_auth: Option<String>,

        /// Log in to the upstream proxy of `--mode upstream:URL` with these
        /// credentials (HTTP Basic, or SOCKS5's), as USER:PASSWORD, when its URL has
        /// none (mitmproxy's `upstream_auth`).
        #[arg(long, value_name = "USER:PASSWORD")]
        pub(crate) upstream_auth: Option<String>,

        /// In reverse mode, send the client's Host header to the origin as it is,
        /// instead of the target's host and port.
        #[arg(long)]
        pub(crate) keep_host_header: bool,

        /// Refuse clients from public (globally reachable) addresses: true or false
        /// (mitmproxy's block_global). A refused client gets 403 and the log says so.
        /// Not applied while --proxy-auth asks for credentials. Loopback is always
        /// served.
        #[arg(long, value_name = "BOOL", default_value_t = true, action = ArgAction::Set,
              num_args = 0..=1, default_missing_value = "true")]
        pub(crate) block_global: bool,

        /// Refuse clients from private addresses (10/8, 192.168/16, fc00::/7, link-local
        /// …): true or false (mitmproxy's block_private). Loopback is always served.
        #[arg(long, value_name = "BOOL", default_value_t = false, action = ArgAction::Set,
              num_args = 0..=1, default_missing_value = "true")]
        pub(crate) block_private: bool,

        // Last: its heading would otherwise stay on the options after it.
        #[command(flatten)]
        pub(crate) address: Address,
    }
}

group! {
    /// The proxy's certificate authority.
    #[command(next_help_heading = "CA")]
    pub(crate) struct Ca {
        /// Directory of the CA certificate (mitm.pem) and key (mitm.key); both are
        /// created there on first use and reused afterwards, never overwritten.
        /// Default: the user data directory (~/.local/share/mitm on Linux); while that
        /// holds no CA and ~/.mitmproxy/mitmproxy-ca.pem exists, mitmproxy's CA is used
        /// instead, read only (the start banner and `mitm ca` say which).
        #[arg(long, value_name = "DIR")]
        pub(crate) ca_dir: Option<PathBuf>,
        /// mitmproxy's `confdir`: sign with the CA mitmproxy keeps there
        /// (mitmproxy-ca.pem, key and certificate in one file), so that devices which
        /// trust mitmproxy trust this proxy too. Nothing is ever written there.
        #[arg(long, value_name = "DIR", conflicts_with = "ca_dir")]
        pub(crate) confdir: Option<PathBuf>,
    }
}

group! {
    /// Which TLS the proxy intercepts.
    #[command(next_help_heading = "Interception")]
    pub(crate) struct Intercept {
        /// Let TLS to hosts matching this regular expression through untouched (searched
        /// in host:port of the CONNECT and in SNI:port, ignoring case); the client then
        /// sees the server's own certificate. Repeatable. Example: '(^|\.)bank\.example'.
        #[arg(long = "ignore-hosts", value_name = "REGEX")]
        pub(crate) ignore_hosts: Vec<String>,

        /// Intercept TLS only to hosts matching this regular expression (host:port of
        /// the CONNECT, or SNI:port); every other host's TLS goes through untouched.
        /// Repeatable; with --ignore-hosts too, a host must match this and not that.
        #[arg(long = "allow-hosts", value_name = "REGEX")]
        pub(crate) allow_hosts: Vec<String>,

        /// Relay the tunnels to hosts matching this regular expression (the host, or
        /// the SNI name) as raw bytes, without parsing HTTP; their TLS is still
        /// intercepted. Repeatable.
        #[arg(long = "tcp-hosts", value_name = "REGEX")]
        pub(crate) tcp_hosts: Vec<String>,

        /// Serve this certificate (a PEM file with the certificate, its chain and its
        /// key) instead of a minted one, for DOMAIN (a host, *.parent, or * for all
        /// hosts; * when left out) and the names the certificate carries. Repeatable.
        #[arg(long, value_name = "[DOMAIN=]PATH")]
        pub(crate) certs: Vec<String>,

        /// Pass TLS through untouched, for a while, to hosts whose clients refused the
        /// proxy's certificate (pinned apps): the client then sees the origin's own
        /// certificate. Hosts whose origins fail verification are never passed through.
        /// The value is how long, in seconds; it may be left out.
        #[arg(
            long,
            value_name = "SECS",
            allow_negative_numbers = true,
            num_args = 0..=1,
            default_missing_value = bare_fail_open(),
        )]
        pub(crate) tls_fail_open: Option<Secs>,
    }
}

group! {
    /// How the proxy verifies and authenticates to upstream servers.
    #[command(next_help_heading = "Upstream")]
    pub(crate) struct UpstreamTls {
        /// Also trust the CA certificate(s) in this PEM file when verifying upstream
        /// servers (besides the bundled web roots and the system store). Repeatable.
        #[arg(long = "upstream-ca", value_name = "FILE")]
        pub(crate) upstream_ca: Vec<PathBuf>,

        /// Present the certificate chain and private key in this PEM file to upstream
        /// servers that ask for a client certificate (mutual TLS).
        #[arg(long, value_name = "PEM")]
        pub(crate) upstream_client_cert: Option<PathBuf>,

        /// Do not verify upstream servers' certificates at all. Unsafe: anyone between
        /// the proxy and the server can read and change the traffic.
        #[arg(long, alias = "ssl-insecure", short_alias = 'k')]
        pub(crate) insecure: bool,
    }
}

group! {
    /// How long upstream servers have.
    #[command(next_help_heading = "Upstream")]
    pub(crate) struct UpstreamTimeouts {
        /// Seconds allowed for connecting to an upstream server, TLS included (504
        /// after). Default: the same as --timeout (for `mitm replay`, --timeout's
        /// default).
        #[arg(long, value_name = "SECS", allow_negative_numbers = true)]
        pub(crate) connect_timeout: Option<Secs>,

        /// Seconds an origin has to start its response (and send each part of its
        /// body) before the client gets a 504.
        #[arg(
            long,
            value_name = "SECS",
            allow_negative_numbers = true,
            default_value_t = Secs(mitm::protocol::regular::DEFAULT_RESPONSE_TIMEOUT),
        )]
        pub(crate) response_timeout: Secs,
    }
}

group! {
    /// What clients may ask of the proxy, and for how long.
    #[command(next_help_heading = "Limits and timeouts")]
    pub(crate) struct Limits {
        /// Seconds allowed for a request head once begun (slowloris); also the default
        /// of --connect-timeout and --handshake-timeout.
        #[arg(
            long,
            value_name = "SECS",
            allow_negative_numbers = true,
            default_value_t = Secs(mitm::protocol::regular::DEFAULT_HEAD_TIMEOUT),
        )]
        pub(crate) timeout: Secs,

        /// Seconds a client has for its TLS handshake with the proxy. Default: as
        /// --timeout.
        #[arg(long, value_name = "SECS", allow_negative_numbers = true)]
        pub(crate) handshake_timeout: Option<Secs>,

        /// Seconds a keep-alive client connection may stay idle between requests.
        #[arg(
            long,
            value_name = "SECS",
            allow_negative_numbers = true,
            default_value_t = Secs(mitm::protocol::regular::DEFAULT_IDLE_TIMEOUT),
        )]
        pub(crate) idle_timeout: Secs,

        /// Most connections open at once, client and upstream connections together; a
        /// new client is refused at once unless there is room for it and one upstream.
        #[arg(long, value_name = "N", default_value_t = mitm::DEFAULT_MAX_CONNECTIONS)]
        pub(crate) max_connections: usize,

        /// Most streams an HTTP/2 client may have open at once.
        #[arg(
            long,
            value_name = "N",
            default_value_t = mitm::protocol::regular::DEFAULT_MAX_STREAMS,
        )]
        pub(crate) max_concurrent_streams: u32,

        /// Most upstream connections one client connection holds at once (an HTTP/2
        /// client's streams to an HTTP/1.1-only origin wait for one).
        #[arg(
            long,
            value_name = "N",
            default_value_t = mitm::protocol::regular::DEFAULT_MAX_UPSTREAMS,
        )]
        pub(crate) max_upstream_connections: usize,

        /// Largest request head accepted, in bytes (for HTTP/2 clients, header list);
        /// larger ones get 431.
        #[arg(
            long,
            value_name = "BYTES",
            default_value_t = mitm::protocol::regular::DEFAULT_MAX_HEAD,
        )]
        pub(crate) max_head: usize,

        /// Most header fields in a request head; more get 431.
        #[arg(
            long,
            value_name = "N",
            default_value_t = mitm::protocol::regular::DEFAULT_MAX_HEADERS,
        )]
        pub(crate) max_headers: usize,

        /// Largest request or response body let through (mitmproxy's
        /// `body_size_limit`): a larger request gets 413 and never reaches its origin, a
        /// larger response becomes a 502. SIZE in bytes, or with a suffix b, k, m, g, t
        /// (powers of 1024): `10m`. A body without a Content-Length is held until it
        /// ends or passes SIZE. Default: no limit, bodies stream.
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        pub(crate) body_size_limit: Option<u64>,
    }
}

group! {
    /// Saving flows to files.
    #[command(next_help_heading = "Saving")]
    pub(crate) struct Save {
        /// Save every finished flow to FILE as it finishes, in the format its name says:
        /// `.har` (HAR 1.2), `.sqlite` or `.db` (an SQLite database), anything else
        /// mitmproxy's flow format (`mitmdump -nr FILE` reads it). Repeatable. FILE must
        /// not exist yet. Bodies are not held back: they stream on as they would
        /// without saving, their first bytes copied as they pass.
        #[arg(
            long = "save",
            alias = "save-stream-file",
            short_alias = 'w',
            value_name = "FILE"
        )]
        pub(crate) save: Vec<PathBuf>,

        /// Save only the flows that match EXPR, in mitmproxy's filter language (e.g.
        /// `~d example.com & ~c 200`, `~m POST | ~websocket`, `!~t image`).
        #[arg(long, value_name = "EXPR")]
        pub(crate) save_filter: Option<String>,

        /// Most bytes kept of each body of a saved flow; longer ones are saved cut,
        /// marked so. WebSocket messages are seen whole up to this size: a longer one
        /// closes its WebSocket (1009).
        #[arg(
            long,
            value_name = "BYTES",
            default_value_t = mitm::capture::DEFAULT_BODY_LIMIT,
        )]
        pub(crate) save_body_limit: usize,

        /// Save CONNECT flows to .har and .flows files too. They are left out by
        /// default, as mitmproxy and browsers leave them out (the requests inside a
        /// tunnel are flows of their own); .sqlite stores keep them always.
        #[arg(long)]
        pub(crate) save_connects: bool,
    }
}

group! {
    /// Answering from recorded flows.
    #[command(next_help_heading = "Server replay")]
    pub(crate) struct ServerReplay {
        /// Answer requests that match a flow recorded in FILE (same method, scheme,
        /// host, port, path, query and body, as the --server-replay-* options below
        /// change) with its recorded response, without contacting the origin; several
        /// recordings of one request are served in order. Repeatable; any format `mitm
        /// read` reads.
        #[arg(long = "server-replay", short_alias = 'S', value_name = "FILE")]
        pub(crate) server_replay: Vec<PathBuf>,

        /// What requests that match no recording (left) get during --server-replay:
        /// `forward` (to their origins), `kill` (the connection closed), or a status
        /// with an empty body.
        #[arg(long, value_enum, value_name = "WHAT", default_value_t = ReplayExtra::Forward)]
        pub(crate) server_replay_extra: ReplayExtra,

        /// Serve recordings again: a request gets the first one that matches it, every
        /// time (else each is served once, in order).
        #[arg(long)]
        pub(crate) server_replay_reuse: bool,

        /// Move the dates of replayed responses (Date, Expires, Last-Modified, cookie
        /// expiries) forward by the time since they were recorded; `false` serves them
        /// as recorded.
        #[arg(long, value_name = "BOOL", default_value_t = true, action = ArgAction::Set)]
        pub(crate) server_replay_refresh: bool,

        /// mitmproxy's former name of --server-replay-reuse.
        #[arg(long, hide = true)]
        pub(crate) server_replay_nopop: bool,

        /// mitmproxy's former way to say --server-replay-extra kill.
        #[arg(long, hide = true)]
        pub(crate) server_replay_kill_extra: bool,

        /// A query parameter left out when matching (by name, decoded). Repeatable.
        #[arg(long, value_name = "NAME")]
        pub(crate) server_replay_ignore_params: Vec<String>,

        /// A form field left out when matching urlencoded and multipart bodies (their
        /// other fields are compared, not their bytes). Repeatable.
        #[arg(long, value_name = "NAME")]
        pub(crate) server_replay_ignore_payload_params: Vec<String>,

        /// Leave the request body out when matching.
        #[arg(long)]
        pub(crate) server_replay_ignore_content: bool,

        /// Leave the host out when matching.
        #[arg(long)]
        pub(crate) server_replay_ignore_host: bool,

        /// Leave the port out when matching.
        #[arg(long)]
        pub(crate) server_replay_ignore_port: bool,

        /// A request header that must match too (by name; absent on both sides
        /// matches). Repeatable.
        #[arg(long, value_name = "NAME")]
        pub(crate) server_replay_use_headers: Vec<String>,
    }
}

group! {
    /// mitmproxy's traffic-changing options (`mitm::addons`), in its syntax: a rule's
    /// first character separates its parts, `[/FILTER]/SUBJECT/REPLACEMENT`.
    #[command(next_help_heading = "Changing traffic")]
    pub(crate) struct Modify {
        // map_remote, map_local, modify_headers, modify_body (mitm::addons).
        /// Send matching requests elsewhere: `[/FILTER]/URL-REGEX/REPLACEMENT` (the
        /// URL rewritten by the regex; groups as `\1`). Repeatable.
        #[arg(long, value_name = "SPEC")]
        pub(crate) map_remote: Vec<String>,

        /// Answer matching requests from a local file or directory:
        /// `[/FILTER]/URL-REGEX/PATH` (a directory serves the file the rest of the URL
        /// names, never one outside it). Repeatable.
        #[arg(long, value_name = "SPEC")]
        pub(crate) map_local: Vec<String>,

        /// Set a header on matching requests and responses: `[/FILTER]/NAME/[@]VALUE`
        /// (empty removes it; `@FILE` reads the value). Repeatable.
        #[arg(long, value_name = "SPEC")]
        pub(crate) modify_headers: Vec<String>,

        /// Replace text in matching bodies, decoded: `[/FILTER]/REGEX/[@]REPLACEMENT`
        /// (`@FILE` reads the replacement). Repeatable.
        #[arg(long, value_name = "SPEC")]
        pub(crate) modify_body: Vec<String>,

        // block_list, anticache, anticomp, stickycookie, stickyauth.
        /// Answer requests matching FILTER with STATUS and an empty body, without
        /// contacting the origin; 444 closes the connection without an answer.
        /// `/FILTER/STATUS` (mitmproxy's `block_list`). Repeatable; of several rules
        /// that match, a 444 wins, else the last. Example: `--block-list '/~d ads/404'`.
        #[arg(long = "block-list", value_name = "SPEC", value_parser = block_rule)]
        pub(crate) block_list: Vec<String>,

        /// Remove If-None-Match and If-Modified-Since from requests, so that origins
        /// send whole resources instead of 304 Not Modified.
        #[arg(long)]
        pub(crate) anticache: bool,

        /// Ask origins for uncompressed bodies (Accept-Encoding: identity).
        #[arg(long)]
        pub(crate) anticomp: bool,

        /// Remember the cookies origins set, and send them with later requests that
        /// match FILTER, whichever client makes them (by domain and path, as
        /// browsers do). Example: `--stickycookie '~d example.com'`.
        #[arg(long, value_name = "FILTER", value_parser = filter_arg)]
        pub(crate) stickycookie: Option<String>,

        /// Remember the Authorization header requests send to each host:port, and add it
        /// to later requests there that match FILTER and have none.
        #[arg(long, value_name = "FILTER", value_parser = filter_arg)]
        pub(crate) stickyauth: Option<String>,
    }
}

/// `--block-list`: checked as clap reads it, kept as written.
fn block_rule(text: &str) -> Result<String, mitm::addons::BlockRuleError> {
    text.parse::<mitm::addons::BlockRule>()
        .map(|_| text.to_owned())
}

/// A size as mitmproxy writes one: bytes, or a number with a suffix `b`, `k`, `m`, `g`
/// or `t` (powers of 1024; capitals taken too).
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || {
        format!("invalid size {text:?}: give bytes, or a number with k, m, g or t (powers of 1024), as in 10m")
    };
    let text = text.trim();
    let (digits, unit) = match text.char_indices().last() {
        Some((at, c)) if c.is_ascii_alphabetic() => (&text[..at], c.to_ascii_lowercase()),
        _ => (text, 'b'),
    };
    let shift = match unit {
        'b' => 0,
        'k' => 10,
        'm' => 20,
        'g' => 30,
        't' => 40,
        _ => return Err(bad()),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    n.checked_mul(1 << shift).ok_or_else(bad)
}

/// A filter option: checked as clap reads it, kept as written.
fn filter_arg(text: &str) -> Result<String, mitm::filter::FilterError> {
    mitm::filter::Filter::parse(text).map(|_| text.to_owned())
}

group! {
    /// Where the web UI listens.
    #[command(next_help_heading = "Web UI")]
    pub(crate) struct WebAddress {
        /// Address the web UI listens on. Anything but loopback lets other machines ask
        /// for it (they still need the token).
        #[arg(long, value_name = "HOST", default_value = mitm::web::DEFAULT_HOST)]
        pub(crate) web_host: String,

        /// Port of the web UI; 0 picks a free port (printed on start).
        #[arg(long, value_name = "PORT", default_value_t = mitm::web::DEFAULT_PORT)]
        pub(crate) web_port: u16,
    }
}

group! {
    /// The web UI beside the proxy.
    #[command(next_help_heading = "Web UI")]
    pub(crate) struct Web {
        /// Serve the web UI beside the proxy, at --web-host and --web-port: a live list
        /// of flows, a filter, and each flow's heads and bodies. Its URL, with the token
        /// every visit needs, is printed on start.
        #[arg(long)]
        pub(crate) web: bool,

        #[command(flatten)]
        pub(crate) at: WebAddress,
    }
}

group! {
    /// What the proxy logs of the traffic.
    #[command(next_help_heading = "Logging")]
    pub(crate) struct Log {
        /// What to log: `none`; `log`, one line per connection event; `http`, each
        /// request and response pretty-printed.
        #[arg(long, value_enum, default_value_t = LogChoice::Log)]
        pub(crate) log: LogChoice,

        /// Write each flow to stdout as mitmdump does, at its level: 0 nothing, 1 the
        /// request line and the status, 2 with the headers, 3 with the bodies (cut after
        /// 512 lines), 4 with the bodies whole. Besides --log.
        #[arg(long, value_name = "0..4", value_parser = clap::value_parser!(u8).range(0..=4))]
        pub(crate) flow_detail: Option<u8>,
    }
}

group! {
    /// How much mitm says on stderr.
    #[command(next_help_heading = "Logging")]
    pub(crate) struct Verbosity {
        /// More output: -v adds debug lines (with the relayed data for --log log), -vv
        /// trace. RUST_LOG, when set, overrides -v and -q.
        #[arg(short, long, action = ArgAction::Count)]
        pub(crate) verbose: u8,

        /// Less output: -q shows warnings and errors only, -qq errors only.
        #[arg(short, long, action = ArgAction::Count, conflicts_with = "verbose")]
        pub(crate) quiet: u8,
    }
}

group! {
    /// The async runtime.
    #[command(next_help_heading = "Runtime")]
    pub(crate) struct Threads {
        /// Worker threads of the async runtime: 0 for one per core, 1 for a single
        /// thread (to keep mitm to one core).
        #[arg(long, value_name = "N", default_value_t = 0)]
        pub(crate) threads: usize,
    }
}

group! {
    /// How the proxy runs and stops.
    #[command(next_help_heading = "Runtime")]
    pub(crate) struct Runtime {
        #[command(flatten)]
        pub(crate) threads: Threads,

        /// Seconds connections in flight may go on after Ctrl-C or SIGTERM.
        #[arg(
            long,
            value_name = "SECS",
            allow_negative_numbers = true,
            default_value_t = Secs(mitm::DEFAULT_GRACE),
        )]
        pub(crate) grace: Secs,

        /// Copy large plain-HTTP bodies and untouched tunnels through the proxy's
        /// buffers instead of moving them with splice(2) (Linux); for comparison and
        /// debugging.
        #[arg(long)]
        pub(crate) no_zero_copy: bool,
    }
}

group! {
    /// Flows read from files at start, as mitmdump's -r, -C and -n take them.
    #[command(next_help_heading = "Flows from files")]
    pub(crate) struct Files {
        /// Read the flows of FILE (any format `mitm read` reads) at start: printed (a
        /// line each as `mitm read` prints them, or as --flow-detail says), written to
        /// the --save files, shown in the web UI with --web. With -n mitm then exits,
        /// as `mitmdump -nr FILE` does.
        #[arg(long, short = 'r', value_name = "FILE")]
        pub(crate) rfile: Option<PathBuf>,

        /// Send the requests of FILE again once the proxy is up, through its hooks
        /// (--log, --save, the web UI see them; marked replayed), each to its origin,
        /// printing each new status (as `mitm replay`). Repeatable.
        #[arg(long, short = 'C', value_name = "FILE")]
        pub(crate) client_replay: Vec<PathBuf>,

        /// Run no proxy: read -r's file and send -C's requests, then exit.
        #[arg(long = "no-server", short = 'n')]
        pub(crate) no_server: bool,

        /// Run mitmproxy's addon script FILE (hook functions, or `addons = [...]`),
        /// reloaded when it changes; options it declares are set with --set
        /// NAME=VALUE. Repeatable. Scripts run in the `mitm` command of mitm's Python
        /// package (`pip install ./python` from a checkout), in that environment's
        /// Python; the Rust binary refuses them.
        #[arg(long, short = 's', value_name = "FILE")]
        pub(crate) scripts: Vec<PathBuf>,
    }
}

// --- The commands --------------------------------------------------------------------

/// Everything the proxy takes: every group.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ProxyArgs {
    #[command(flatten)]
    pub(crate) listen: Listen,
    #[command(flatten)]
    pub(crate) ca: Ca,
    #[command(flatten)]
    pub(crate) intercept: Intercept,
    #[command(flatten)]
    pub(crate) upstream_tls: UpstreamTls,
    #[command(flatten)]
    pub(crate) upstream_timeouts: UpstreamTimeouts,
    #[command(flatten)]
    pub(crate) limits: Limits,
    #[command(flatten)]
    pub(crate) save: Save,
    #[command(flatten)]
    pub(crate) modify: Modify,
    #[command(flatten)]
    pub(crate) server_replay: ServerReplay,
    #[command(flatten)]
    pub(crate) files: Files,
    #[command(flatten)]
    pub(crate) web: Web,
    #[command(flatten)]
    pub(crate) log: Log,
    #[command(flatten)]
    pub(crate) verbosity: Verbosity,
    #[command(flatten)]
    pub(crate) runtime: Runtime,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Sub {
    /// Print which CA is in use and from where (ours, created in --ca-dir if missing,
    /// or mitmproxy's from --confdir, read only), its certificate's path, PEM,
    /// SHA-256 fingerprint, SPKI hash, and how to trust it on each platform (for a
    /// proxy at --host and --port).
    Ca(CaArgs),
    /// Print the flows of a capture file (HAR, or mitmproxy's flow files, also those
    /// mitmproxy wrote), one line each: time, method, URL, status, size, duration.
    Read(ReadArgs),
    /// Send the requests of a capture file again, each to its origin, printing the new
    /// status of each beside the recorded one; exits non-zero if any failed.
    ///
    /// Requests go straight to their origins (upstream proxy modes do not apply),
    /// through the hooks --log and --save add, verified as the proxy verifies
    /// origins. Each request is given up after --connect-timeout plus
    /// --response-timeout in all.
    Replay(ReplayArgs),
    /// Copy the flows of one capture file into a new one, converting between formats
    /// by the files' names (e.g. `mitm convert dump.flows dump.har`).
    Convert(ConvertArgs),
    /// Serve the web UI over the flows of a capture file (any format `mitm read`
    /// reads), with no proxy, until Ctrl-C.
    ///
    /// Requests replayed from the UI go straight to their origins, verified as the
    /// proxy verifies origins.
    Web(WebArgs),
}

/// `mitm ca`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct CaArgs {
    #[command(flatten)]
    pub(crate) ca: Ca,
    #[command(flatten)]
    pub(crate) address: Address,
    #[command(flatten)]
    pub(crate) verbosity: Verbosity,
}

/// `mitm read`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ReadArgs {
    /// The capture file.
    pub(crate) file: PathBuf,
    /// Only the flows that match EXPR (mitmproxy's filter language).
    #[arg(long, value_name = "EXPR")]
    pub(crate) filter: Option<String>,
    /// Print each request as a curl command line that sends it again.
    #[arg(long)]
    pub(crate) curl: bool,
    #[command(flatten)]
    pub(crate) verbosity: Verbosity,
}

/// `mitm replay`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ReplayArgs {
    /// The capture file.
    pub(crate) file: PathBuf,
    /// Only the flows that match EXPR (mitmproxy's filter language).
    #[arg(long, value_name = "EXPR")]
    pub(crate) filter: Option<String>,
    #[command(flatten)]
    pub(crate) ca: Ca,
    #[command(flatten)]
    pub(crate) upstream_tls: UpstreamTls,
    #[command(flatten)]
    pub(crate) upstream_timeouts: UpstreamTimeouts,
    #[command(flatten)]
    pub(crate) save: Save,
    #[command(flatten)]
    pub(crate) log: Log,
    #[command(flatten)]
    pub(crate) verbosity: Verbosity,
    #[command(flatten)]
    pub(crate) threads: Threads,
}

/// `mitm convert`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ConvertArgs {
    /// The capture file to read.
    pub(crate) input: PathBuf,
    /// The file to write; it must not exist yet.
    pub(crate) output: PathBuf,
    /// Only the flows that match EXPR (mitmproxy's filter language).
    #[arg(long, value_name = "EXPR")]
    pub(crate) filter: Option<String>,
    /// Write CONNECT flows to a .har or .flows file too (left out by default, as
    /// mitmproxy and browsers leave them out).
    #[arg(long)]
    pub(crate) keep_connects: bool,
    #[command(flatten)]
    pub(crate) verbosity: Verbosity,
}

/// `mitm web`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct WebArgs {
    /// The capture file.
    pub(crate) file: PathBuf,
    #[command(flatten)]
    pub(crate) at: WebAddress,
    #[command(flatten)]
    pub(crate) ca: Ca,
    #[command(flatten)]
    pub(crate) upstream_tls: UpstreamTls,
    #[command(flatten)]
    pub(crate) verbosity: Verbosity,
    #[command(flatten)]
    pub(crate) threads: Threads,
}

/// What `--server-replay-extra` takes: mitmproxy's choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ReplayExtra {
    Forward,
    Kill,
    #[value(name = "204")]
    NoContent,
    #[value(name = "400")]
    BadRequest,
    #[value(name = "404")]
    NotFound,
    #[value(name = "500")]
    ServerError,
}

/// What `--log` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogChoice {
    None,
    Log,
    Http,
}

/// A number of seconds, 0 or more, as options take it (`15`, `0.5`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Secs(pub(crate) Duration);

/// [`mitm::DEFAULT_TLS_FAIL_OPEN`] as the text `--tls-fail-open` takes: its value when
/// given bare (clap wants that as a `&'static str`).
fn bare_fail_open() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| Secs(mitm::DEFAULT_TLS_FAIL_OPEN).to_string())
}

impl FromStr for Secs {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        text.trim()
            .parse::<f64>()
            .ok()
            .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
            .map(Secs)
            .ok_or_else(|| "give a number of seconds, 0 or more (e.g. 15 or 0.5)".to_string())
    }
}

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.as_secs_f64())
    }
}

/// The `mitm` command as clap sees it, with the help texts computed from the library's
/// constants that clap cannot show itself.
pub(crate) fn command() -> clap::Command {
    let cmd = Cli::command().mut_arg("tls_fail_open", |arg| {
        let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
        arg.help(format!("{help} [without a value: {}]", bare_fail_open()))
    });
    super::settings::with_set(cmd)
}
