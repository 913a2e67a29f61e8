//! The `mitm` command: a thin layer over the library. Flags become a [`MitmBuilder`],
//! the proxy runs until Ctrl-C (SIGINT) or SIGTERM, and errors print as one line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{ArgAction, Parser, Subcommand, ValueEnum};
use mitm::middleware::IgnoreHosts;
use mitm::{CertificateAuthority, HttpLog, Log, Mitm, MitmBuilder};

/// A man-in-the-middle proxy for HTTP and HTTPS: see, log and change your own clients'
/// traffic. Point a client at it as its HTTP proxy, and make the client trust the CA
/// certificate it prints to see inside HTTPS.
#[derive(Debug, Parser)]
#[command(name = "mitm", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// What the proxy is, as MODE[:DATA][@[HOST:]PORT]; repeatable, each mode with its
    /// own listener. MODE is `regular` (an explicit HTTP proxy), `socks5`,
    /// `reverse:http[s]://HOST[:PORT]` (poses as that origin),
    /// `upstream:http[s]|socks5://[USER:PASS@]HOST:PORT` (an explicit proxy whose
    /// traffic leaves through that proxy) or `transparent` (connections redirected by
    /// the firewall; Linux). `@PORT` or `@HOST:PORT` gives a mode its own address; at
    /// most one mode goes without, on --host and --port. Example:
    /// `--mode regular --mode socks5@1080`.
    #[arg(long = "mode", value_name = "SPEC", default_value = "regular")]
    // Parsed after clap, whose errors would echo a URL's password.
    modes: Vec<String>,

    /// Save every finished flow to FILE as it finishes, in the format its name says:
    /// `.har` (HAR 1.2), `.sqlite` or `.db` (an SQLite database), anything else
    /// mitmproxy's flow format (`mitmdump -nr FILE` reads it). Repeatable. FILE must not exist yet. Bodies up to --save-body-limit
    /// are then held whole by the proxy before they go on.
    #[arg(long = "save", value_name = "FILE")]
    save: Vec<PathBuf>,

    /// Save only the flows that match EXPR, in mitmproxy's filter language (e.g.
    /// `~d example.com & ~c 200`, `~m POST | ~websocket`, `!~t image`).
    #[arg(long, value_name = "EXPR")]
    save_filter: Option<String>,

    /// Most bytes kept of each body of a saved flow; longer ones are saved cut, marked
    /// so.
    #[arg(long, value_name = "BYTES", default_value_t = mitm::capture::DEFAULT_BODY_LIMIT)]
    save_body_limit: usize,

    /// Answer requests that match a flow recorded in FILE (same method, scheme, host,
    /// port, path, query and body) with its recorded response, without contacting the
    /// origin; several recordings of one request are served in order. Repeatable; any
    /// format `mitm read` reads.
    #[arg(long = "server-replay", value_name = "FILE")]
    server_replay: Vec<PathBuf>,

    /// What requests that match no recording get during --server-replay: `forward`
    /// (to their origins) or `404`.
    #[arg(long, value_enum, default_value_t = ReplayExtra::Forward)]
    server_replay_extra: ReplayExtra,

    /// In reverse mode, send the client's Host header to the origin as it is, instead of
    /// the target's host and port.
    #[arg(long)]
    keep_host_header: bool,

    /// Pass TLS through untouched, for a while, to hosts whose clients refused the
    /// proxy's certificate (pinned apps): the client then sees the origin's own
    /// certificate. Hosts whose origins fail verification are never passed through.
    /// The value is how long, in seconds (default 600 when given without one).
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "600")]
    tls_fail_open: Option<f64>,

    /// Address to listen on. Use 0.0.0.0 only if other machines should reach the proxy:
    /// anyone who can connect can use it.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,

    /// Port to listen on; 0 picks a free port (printed on start).
    #[arg(long, short, default_value_t = 8888)]
    port: u16,

    /// Directory of the CA certificate (mitm.pem) and key (mitm.key); both are created
    /// there on first use and reused afterwards, never overwritten. Default: the user
    /// data directory (~/.local/share/mitm on Linux).
    #[arg(long, value_name = "DIR", global = true)]
    ca_dir: Option<PathBuf>,

    /// Also trust the CA certificate(s) in this PEM file when verifying upstream
    /// servers (besides the bundled web roots and the system store). Repeatable.
    #[arg(long = "upstream-ca", value_name = "FILE")]
    upstream_ca: Vec<PathBuf>,

    /// Present the certificate chain and private key in this PEM file to upstream
    /// servers that ask for a client certificate (mutual TLS).
    #[arg(long, value_name = "PEM")]
    upstream_client_cert: Option<PathBuf>,

    /// Let TLS to hosts matching this regular expression through untouched (matched
    /// against host:port of the CONNECT and against the SNI name); the client then sees
    /// the server's own certificate. Repeatable. Example: '(^|\.)bank\.example'.
    #[arg(long = "ignore-hosts", value_name = "REGEX")]
    ignore_hosts: Vec<String>,

    /// Do not verify upstream servers' certificates at all. Unsafe: anyone between the
    /// proxy and the server can read and change the traffic.
    #[arg(long)]
    insecure: bool,

    /// Ask clients for these proxy credentials (HTTP Basic), as USER:PASSWORD; others
    /// get 407. Also on CONNECT.
    #[arg(long, value_name = "USER:PASSWORD")]
    proxy_auth: Option<String>,

    /// Most connections open at once, client and upstream connections together; a new
    /// client is refused at once unless there is room for it and one upstream.
    #[arg(long, value_name = "N", default_value_t = mitm::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,

    /// Most streams an HTTP/2 client may have open at once.
    #[arg(long, value_name = "N", default_value_t = mitm::protocol::regular::DEFAULT_MAX_STREAMS)]
    max_concurrent_streams: u32,

    /// Most upstream connections one client connection holds at once (an HTTP/2
    /// client's streams to an HTTP/1.1-only origin wait for one).
    #[arg(long, value_name = "N", default_value_t = mitm::protocol::regular::DEFAULT_MAX_UPSTREAMS)]
    max_upstream_connections: usize,

    /// Seconds allowed for a request head once begun (slowloris); also the default of
    /// --connect-timeout and --handshake-timeout.
    #[arg(long, value_name = "SECS", default_value_t = 15.0)]
    timeout: f64,

    /// Seconds allowed for connecting to an upstream server, TLS included (504 after).
    /// Default: --timeout.
    #[arg(long, value_name = "SECS")]
    connect_timeout: Option<f64>,

    /// Seconds a client has for its TLS handshake with the proxy. Default: --timeout.
    #[arg(long, value_name = "SECS")]
    handshake_timeout: Option<f64>,

    /// Seconds a keep-alive client connection may stay idle between requests.
    #[arg(long, value_name = "SECS", default_value_t = 120.0)]
    idle_timeout: f64,

    /// Seconds an origin has to start its response (and send each part of its body)
    /// before the client gets a 504.
    #[arg(long, value_name = "SECS", default_value_t = 120.0)]
    response_timeout: f64,

    /// Largest request head accepted, in bytes (for HTTP/2 clients, header list);
    /// larger ones get 431.
    #[arg(long, value_name = "BYTES", default_value_t = mitm::protocol::regular::DEFAULT_MAX_HEAD)]
    max_head: usize,

    /// Most header fields in a request head; more get 431.
    #[arg(long, value_name = "N", default_value_t = mitm::protocol::regular::DEFAULT_MAX_HEADERS)]
    max_headers: usize,

    /// Copy large plain-HTTP bodies and untouched tunnels through the proxy's buffers
    /// instead of moving them with splice(2) (Linux); for comparison and debugging.
    #[arg(long)]
    no_zero_copy: bool,

    /// Worker threads of the async runtime: 0 for one per core, 1 for a single thread
    /// (to keep the proxy to one core).
    #[arg(long, value_name = "N", default_value_t = 0)]
    threads: usize,

    /// Seconds connections in flight may go on after Ctrl-C or SIGTERM.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    grace: f64,

    /// What to log: `none`; `log`, one line per connection event; `http`, each request
    /// and response pretty-printed.
    #[arg(long, value_enum, default_value_t = LogChoice::Log)]
    log: LogChoice,

    /// Serve the web UI beside the proxy (at http://127.0.0.1:8081/ by default): a live
    /// list of flows, a filter, and each flow's heads and bodies. Its URL, with the
    /// token every visit needs, is printed on start.
    #[arg(long)]
    web: bool,

    /// Address the web UI listens on. Anything but loopback lets other machines ask for
    /// it (they still need the token).
    #[arg(long, value_name = "HOST", default_value = "127.0.0.1", global = true)]
    web_host: String,

    /// Port of the web UI; 0 picks a free port (printed on start).
    #[arg(long, value_name = "PORT", default_value_t = mitm::web::DEFAULT_PORT, global = true)]
    web_port: u16,

    /// More output: -v adds debug lines (with the relayed data for --log log), -vv
    /// trace. RUST_LOG, when set, overrides -v and -q.
    #[arg(short, long, action = ArgAction::Count)]
    verbose: u8,

    /// Less output: -q shows warnings and errors only, -qq errors only.
    #[arg(short, long, action = ArgAction::Count, conflicts_with = "verbose")]
    quiet: u8,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the CA certificate (creating it in --ca-dir if missing): its path, PEM,
    /// SHA-256 fingerprint, SPKI hash, and how to trust it on each platform.
    Ca,
    /// Print the flows of a capture file (HAR, or mitmproxy's flow files, also those
    /// mitmproxy wrote), one line each: time, method, URL, status, size, duration.
    Read {
        /// The capture file.
        file: PathBuf,
        /// Only the flows that match EXPR (mitmproxy's filter language).
        #[arg(long, value_name = "EXPR")]
        filter: Option<String>,
        /// Print each request as a curl command line that sends it again.
        #[arg(long)]
        curl: bool,
    },
    /// Send the requests of a capture file again, each to its origin through the
    /// proxy's own upstream layer (so --upstream-ca, --insecure, upstream modes and
    /// --save apply), printing the new status of each; exits non-zero if any failed.
    Replay {
        /// The capture file.
        file: PathBuf,
        /// Only the flows that match EXPR (mitmproxy's filter language).
        #[arg(long, value_name = "EXPR")]
        filter: Option<String>,
    },
    /// Copy the flows of one capture file into a new one, converting between formats
    /// by the files' names (e.g. `mitm convert dump.flows dump.har`).
    Convert {
        /// The capture file to read.
        input: PathBuf,
        /// The file to write; it must not exist yet.
        output: PathBuf,
        /// Only the flows that match EXPR (mitmproxy's filter language).
        #[arg(long, value_name = "EXPR")]
        filter: Option<String>,
    },
    /// Serve the web UI over the flows of a capture file (any format `mitm read`
    /// reads), with no proxy, until Ctrl-C; --web-host and --web-port say where.
    Web {
        /// The capture file.
        file: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ReplayExtra {
    Forward,
    #[value(name = "404")]
    NotFound,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogChoice {
    None,
    Log,
    Http,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli);
    let runtime = match cli.threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        0 => tokio::runtime::Runtime::new(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mitm: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mitm: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Some(Command::Ca) => return print_ca(&cli),
        Some(Command::Read { file, filter, curl }) => {
            return read_capture(file, filter.as_deref(), *curl)
        }
        Some(Command::Convert {
            input,
            output,
            filter,
        }) => return convert(input, output, filter.as_deref()),
        Some(Command::Replay { file, filter }) => {
            return replay(&cli, file, filter.as_deref()).await
        }
        Some(Command::Web { file }) => return serve_capture(&cli, file).await,
        None => {}
    }
    let web = if cli.web {
        Some(bind_web(&cli).await?)
    } else {
        None
    };
    let (mut builder, capture) = builder(&cli)?;
    if let Some(web) = &web {
        // Last, so the UI shows requests as they go upstream, after every other hook.
        builder = builder.http_handler(web.feed());
    }
    let proxy = builder.bind().await.context("cannot start the proxy")?;
    // Listen for signals before saying we are up, so a signal sent as soon as the
    // banner appears is never missed.
    let stop = shutdown_signal().context("cannot listen for Ctrl-C")?;
    print_banner(&proxy)?;
    if let Some(web) = web {
        let web = web.ca(proxy.ca().clone());
        print_web(&web)?;
        tokio::spawn(async move {
            if let Err(e) = web.run().await {
                tracing::error!(
                    error = format!("{:#}", anyhow::Error::from(e)),
                    "web UI stopped"
                );
            }
        });
    }
    proxy.run_until(stop).await?;
    finish_capture(capture.as_deref(), &cli.save);
    Ok(())
}

/// Writes what the capture still has queued, and says what was saved.
fn finish_capture(capture: Option<&mitm::capture::Capture>, files: &[PathBuf]) {
    let Some(capture) = capture else { return };
    let (written, dropped) = capture.finish();
    let failed = capture.failed();
    let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    if dropped > 0 || failed > 0 {
        tracing::warn!(
            written,
            dropped,
            failed,
            "saved {written} flows to {}; {dropped} were dropped (the writer fell behind) and \
             {failed} writes failed",
            files.join(", ")
        );
    } else {
        tracing::info!("saved {written} flows to {}", files.join(", "));
    }
}

/// The web UI, bound where --web-host and --web-port say, replaying with
/// [`replayer`].
async fn bind_web(cli: &Cli) -> anyhow::Result<mitm::web::WebUi> {
    let web = mitm::web::WebUi::builder()
        .host(cli.web_host.clone())
        .port(cli.web_port)
        .bind()
        .await
        .context("cannot start the web UI")?;
    Ok(web.replayer(Arc::new(replayer(cli).await?)))
}

/// A proxy that only sends, for the web UI's replay: the real one's CA and upstream TLS
/// settings, listening on a port nobody is told of, with no hooks (so that no --save
/// file is opened twice). Upstream proxy modes do not apply to replays.
async fn replayer(cli: &Cli) -> anyhow::Result<Mitm> {
    let b = Mitm::builder()
        .host("127.0.0.1")
        .port(0)
        .middlewares(vec![]);
    ca_and_upstream_tls(b, cli)
        .bind()
        .await
        .context("cannot set up the web UI's replay")
}

/// Prints the web UI's URL (with its token), warning first when other machines can
/// reach it.
fn print_web(web: &mitm::web::WebUi) -> anyhow::Result<()> {
    let addr = web.local_addr();
    if !addr.ip().is_loopback() {
        eprintln!(
            "mitm: warning: web UI listening on {addr}, reachable from the network: anyone \
             who can connect and has the token sees all traffic"
        );
    }
    emit(&format!("web UI: {}\n", web.url()))
}

/// `mitm web FILE`: the web UI over a saved capture, until Ctrl-C.
async fn serve_capture(cli: &Cli, file: &std::path::Path) -> anyhow::Result<()> {
    use mitm::web::FlowSource as _;
    // An SQLite capture is read page by page from the file; the other formats are
    // read whole into memory, every flow of the file: the user asked for this one.
    let (source, records) = match mitm::capture::Format::of(file) {
        mitm::capture::Format::Sqlite => (Some(mitm::web::SqliteSource::open(file)?), Vec::new()),
        _ => (None, mitm::capture::read(file)?),
    };
    let sender = replayer(cli).await?;
    let ca = sender.ca().clone();
    let mut web = mitm::web::WebUi::builder()
        .host(cli.web_host.clone())
        .port(cli.web_port)
        .max_flows(records.len().max(1))
        .max_bytes(usize::MAX)
        .bind()
        .await
        .context("cannot start the web UI")?
        .ca(ca)
        .replayer(Arc::new(sender));
    let flows = match source {
        Some(source) => {
            let flows = source.len();
            web = web.source(Arc::new(source));
            flows
        }
        None => {
            let flows = records.len();
            web.store().extend(records);
            flows
        }
    };
    let stop = shutdown_signal().context("cannot listen for Ctrl-C")?;
    emit(&format!("mitm: {flows} flows from {}\n", file.display()))?;
    print_web(&web)?;
    web.run_until(stop).await?;
    Ok(())
}

/// The flows of the capture `file` that match `filter` (all without one).
fn records(
    file: &std::path::Path,
    filter: Option<&str>,
) -> anyhow::Result<Vec<mitm::capture::Record>> {
    let filter = filter.map(parse_filter).transpose()?;
    let mut records = mitm::capture::read(file)?;
    if let Some(filter) = filter {
        records.retain(|r| filter.matches(r));
    }
    Ok(records)
}

/// A filter from the command line, its error saying where it went wrong.
fn parse_filter(text: &str) -> anyhow::Result<mitm::capture::Filter> {
    text.parse()
        .map_err(|e| anyhow::anyhow!("invalid filter {text:?}: {e}"))
}

/// `mitm read`: a line per flow, or a curl command per request.
fn read_capture(file: &std::path::Path, filter: Option<&str>, curl: bool) -> anyhow::Result<()> {
    let records = records(file, filter)?;
    let mut out = String::new();
    for record in &records {
        out.push_str(&if curl {
            record.to_curl()
        } else {
            record.summary()
        });
        out.push('\n');
    }
    emit(&out)
}

/// `mitm replay`: each recorded request sent again; fails if any could not be.
async fn replay(cli: &Cli, file: &std::path::Path, filter: Option<&str>) -> anyhow::Result<()> {
    let records = records(file, filter)?;
    // The proxy's own setup (CA, upstream TLS, routes, hooks), listening nowhere useful.
    let (builder, capture) = builder(cli)?;
    let proxy = builder
        .host("127.0.0.1")
        .port(0)
        .bind()
        .await
        .context("cannot set up the proxy")?;
    let mut failed = 0;
    let mut out = String::new();
    for record in &records {
        let request = record.request.to_request();
        let url = record.request.url();
        let was = record
            .response
            .as_ref()
            .map_or_else(|| "none".to_string(), |r| r.status.to_string());
        match proxy.send(request).await {
            Ok(response) => out.push_str(&format!(
                "{} {} {url} (was {was})\n",
                response.status, record.request.method
            )),
            Err(e) => {
                failed += 1;
                out.push_str(&format!(
                    "ERR {} {url}: {:#}\n",
                    record.request.method,
                    anyhow::Error::from(e)
                ));
            }
        }
    }
    emit(&out)?;
    drop(proxy);
    finish_capture(capture.as_deref(), &cli.save);
    if failed > 0 {
        anyhow::bail!("{failed} of {} requests failed", records.len());
    }
    Ok(())
}

/// `mitm convert`: every flow of `input` into the new file `output`.
fn convert(
    input: &std::path::Path,
    output: &std::path::Path,
    filter: Option<&str>,
) -> anyhow::Result<()> {
    let records = records(input, filter)?;
    let mut sink = mitm::capture::create(output)?;
    for record in &records {
        sink.write(record)
            .with_context(|| format!("cannot write {}", output.display()))?;
    }
    sink.flush()
        .with_context(|| format!("cannot write {}", output.display()))?;
    eprintln!(
        "mitm: {} flows from {} written to {}",
        records.len(),
        input.display(),
        output.display()
    );
    Ok(())
}

/// `mitm ca`: everything a user needs to trust the CA.
fn print_ca(cli: &Cli) -> anyhow::Result<()> {
    let dir = ca_dir(cli)?;
    let ca = CertificateAuthority::init(&dir).context("cannot load or create the CA")?;
    let path = dir.join(mitm::tls::ca::CA_CERT_FILE);
    let mut out = format!(
        "CA certificate: {}\nSHA-256 fingerprint: {}\n",
        path.display(),
        ca.fingerprint_sha256()
    );
    if let Some(spki) = mitm::tls::trust::spki_sha256(&ca) {
        out.push_str(&format!("SPKI SHA-256 (base64): {spki}\n"));
    }
    out.push('\n');
    out.push_str(ca.cert_pem());
    out.push_str("\nHow to trust it:\n");
    let proxy = format!("{}:{}", cli.host, cli.port);
    out.push_str(&mitm::tls::trust::instructions(
        &path.display().to_string(),
        &proxy,
    ));
    emit(&out)
}

/// Writes `text` to stdout. A closed pipe (`mitm ca | head`) is not an error: the
/// reader has what it wanted.
fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to stdout")
        }
        _ => Ok(()),
    }
}

fn ca_dir(cli: &Cli) -> anyhow::Result<PathBuf> {
    match &cli.ca_dir {
        Some(dir) => Ok(dir.clone()),
        None => mitm::default_ca_dir()
            .context("this platform has no user data directory: give one with --ca-dir"),
    }
}

/// The CA (`--ca-dir`) and the TLS towards origins (`--upstream-ca`,
/// `--upstream-client-cert`, `--insecure`) of `b`: what the proxy and the web UI's
/// replay share.
fn ca_and_upstream_tls(mut b: MitmBuilder, cli: &Cli) -> MitmBuilder {
    if let Some(dir) = &cli.ca_dir {
        b = b.ca_dir(dir);
    }
    for file in &cli.upstream_ca {
        b = b.upstream_ca_file(file);
    }
    if let Some(pem) = &cli.upstream_client_cert {
        b = b.upstream_client_cert(pem);
    }
    b.dangerous_accept_invalid_upstream_certs(cli.insecure)
}

/// The validated configuration: every flag maps to one builder call.
/// The proxy the command line describes, and its capture when flows are saved.
fn builder(cli: &Cli) -> anyhow::Result<(MitmBuilder, Option<Arc<mitm::capture::Capture>>)> {
    let mut b = ca_and_upstream_tls(Mitm::builder().host(cli.host.clone()).port(cli.port), cli);
    if let Some(credentials) = &cli.proxy_auth {
        let Some((user, password)) = credentials.split_once(':') else {
            anyhow::bail!("--proxy-auth takes USER:PASSWORD");
        };
        b = b.proxy_auth(user, password);
    }
    let mut http = mitm::Http::new().timeout(seconds("--timeout", cli.timeout)?);
    if let Some(secs) = cli.connect_timeout {
        http = http.connect_timeout(seconds("--connect-timeout", secs)?);
    }
    if let Some(secs) = cli.handshake_timeout {
        http = http.handshake_timeout(seconds("--handshake-timeout", secs)?);
    }
    let http = http
        .idle_timeout(seconds("--idle-timeout", cli.idle_timeout)?)
        .response_timeout(seconds("--response-timeout", cli.response_timeout)?)
        .max_head(cli.max_head)
        .max_headers(cli.max_headers)
        .max_concurrent_streams(cli.max_concurrent_streams)
        .max_upstream_connections(cli.max_upstream_connections)
        .zero_copy(!cli.no_zero_copy);
    let modes = cli
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
            "--mode {} all want --host/--port: give all but one of them an address of its \
             own, e.g. `--mode {}@8081`",
            unaddressed.join(", --mode "),
            unaddressed[1]
        );
    }
    for spec in &modes {
        let listener = spec
            .listener(&http, cli.keep_host_header)
            .with_context(|| format!("--mode {spec}"))?;
        b = b.listener(listener);
    }
    if let Some(secs) = cli.tls_fail_open {
        b = b.tls_fail_open(Some(seconds("--tls-fail-open", secs)?));
    }
    b = b
        .max_connections(cli.max_connections)
        .grace_period(seconds("--grace", cli.grace)?);
    // No hooks at all unless asked for (the library's default is `[Log]`).
    b = b.middlewares(vec![]);
    b = match cli.log {
        LogChoice::None => b,
        LogChoice::Log => b.middleware(Arc::new(Log)),
        LogChoice::Http => b.http_handler(Arc::new(HttpLog::default())),
    };
    let mut saving = None;
    if !cli.server_replay.is_empty() {
        let mut recorded = Vec::new();
        for path in &cli.server_replay {
            recorded.extend(
                mitm::capture::read(path)
                    .with_context(|| format!("--server-replay {}", path.display()))?,
            );
        }
        let unmatched = match cli.server_replay_extra {
            ReplayExtra::Forward => mitm::capture::server_replay::Unmatched::Forward,
            ReplayExtra::NotFound => mitm::capture::server_replay::Unmatched::NotFound,
        };
        let replay = mitm::capture::server_replay::ServerReplay::new(recorded, unmatched);
        tracing::info!(responses = replay.len(), "server replay");
        b = b.http_handler(Arc::new(replay));
    }
    if !cli.save.is_empty() {
        let mut capture = mitm::capture::Capture::builder().body_limit(cli.save_body_limit);
        if let Some(text) = &cli.save_filter {
            capture = capture.filter(parse_filter(text).context("--save-filter")?);
        }
        for path in &cli.save {
            let sink = mitm::capture::create(path)
                .with_context(|| format!("--save {}", path.display()))?;
            capture = capture.sink(sink);
        }
        let capture = Arc::new(capture.start());
        saving = Some(capture.clone());
        b = b.http_handler(capture);
    }
    if !cli.ignore_hosts.is_empty() {
        let ignore = IgnoreHosts::new(&cli.ignore_hosts)
            .map_err(|e| anyhow::anyhow!("--ignore-hosts: {e}"))?;
        b = b.router(Arc::new(ignore));
    }
    Ok((b, saving))
}

/// A duration from a flag's seconds, refusing what is not a finite, non-negative number.
fn seconds(flag: &str, secs: f64) -> anyhow::Result<std::time::Duration> {
    std::time::Duration::try_from_secs_f64(secs)
        .map_err(|_| anyhow::anyhow!("{flag} takes a number of seconds, not {secs}"))
}

/// Prints one line per listener (its address as a client would name it, and its
/// mode), the CA certificate, and how to use the proxy.
fn print_banner(proxy: &Mitm) -> anyhow::Result<()> {
    let mut out = String::new();
    for bound in proxy.listeners() {
        let addr = bound.addr;
        if addr.ip().is_unspecified() || !addr.ip().is_loopback() {
            eprintln!(
                "mitm: warning: listening on {addr} ({}), reachable from the network: anyone \
                 who can connect can use this proxy",
                bound.name
            );
        }
        let scheme = if bound.name == "socks5" {
            "socks5"
        } else {
            "http"
        };
        out.push_str(&format!(
            "mitm listening on {scheme}://{addr} ({})\n",
            bound.name
        ));
    }
    if let Some(path) = proxy.ca_cert_path() {
        let path = path.display();
        out.push_str(&format!("CA certificate: {path}\n"));
        out.push_str("Trust it to see inside HTTPS, for example:\n");
        for bound in proxy.listeners() {
            out.push_str(&example(&bound, &path.to_string()));
        }
        out.push_str("(`mitm ca` shows how to trust it elsewhere.) Press Ctrl-C to stop.\n");
    }
    emit(&out)
}

/// How a client uses the listener `bound`, trusting the CA certificate at `ca`.
fn example(bound: &mitm::Bound, ca: &str) -> String {
    let addr = bound.addr;
    let name = bound.name.as_str();
    if name == "socks5" {
        format!("  curl --socks5-hostname {addr} --cacert {ca} https://example.com/\n")
    } else if name.starts_with("reverse:") {
        format!("  curl --cacert {ca} https://{addr}/  (or http://{addr}/)\n")
    } else if name == "transparent" {
        format!(
            "  redirect clients' traffic to port {} with iptables (see the README's Modes)\n",
            addr.port()
        )
    } else {
        format!(
            "  curl --proxy http://{addr} --cacert {ca} https://example.com/\n  \
             python: requests.get(url, proxies={{\"http\": \"http://{addr}\", \"https\": \"http://{addr}\"}}, verify=\"{ca}\")\n"
        )
    }
}

/// A future that completes on Ctrl-C (SIGINT) or SIGTERM. The handlers are installed
/// when this returns, not when the future is first polled.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
    })
}

/// A future that completes on Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    })
}

fn init_tracing(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let level = match (cli.quiet, cli.verbose) {
        (q, _) if q >= 2 => "error",
        (1, _) => "warn",
        (_, 0) => "info",
        (_, 1) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // Our crates at the chosen level; dependencies only when asked for trace.
        let deps = if level == "trace" { "debug" } else { "warn" };
        EnvFilter::new(format!("{deps},mitm={level}"))
    });
    // Colours only for a terminal, and never when NO_COLOR is set.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}
