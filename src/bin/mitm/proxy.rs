//! `mitm` without a subcommand: the proxy the options describe, and the web UI beside
//! it; and the pieces of it that `mitm replay` and `mitm web` share.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use mitm::tls::ca::CaSource;
use mitm::{CertificateAuthority, HttpLog, Log, Mitm, MitmBuilder};

use super::args::{self, LogChoice, ProxyArgs};
use super::{emit, shutdown_signal, Scripted, Scripts};

/// The TLS key log file the environment names, and the variable that named it:
/// `MITMPROXY_SSLKEYLOGFILE`, else `SSLKEYLOGFILE` (as mitmproxy reads them; an empty
/// value counts as unset). A leading `~/` is the home directory.
pub(crate) fn key_log_path(
    var: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Option<(&'static str, PathBuf)> {
    let (name, value) = ["MITMPROXY_SSLKEYLOGFILE", "SSLKEYLOGFILE"]
        .into_iter()
        .find_map(|name| var(name).filter(|v| !v.is_empty()).map(|v| (name, v)))?;
    let path = PathBuf::from(value);
    let path = match (path.strip_prefix("~"), var("HOME")) {
        (Ok(rest), Some(home)) if !home.is_empty() => PathBuf::from(home).join(rest),
        _ => path,
    };
    Some((name, path))
}

/// Runs the proxy until Ctrl-C or SIGTERM, with the hooks of `-s`'s addon scripts when
/// given (loaded by `scripts`' host, and told when the proxy has stopped).
pub(crate) async fn run(args: &ProxyArgs, scripts: &Scripted<'_>) -> anyhow::Result<()> {
    if args.files.no_server {
        return super::mitmdump::run_without_server(args).await;
    }
    // Scripts first: one that fails to load stops the start before any port is open.
    let mut scripts = scripts.load(&args.files.scripts)?;
    let web = if args.web.web {
        Some(bind_web(args).await?)
    } else {
        None
    };
    let (mut builder, capture) = builder(args, scripts.as_mut())?;
    if let Some(web) = &web {
        // Last, so the UI shows requests as they go upstream, after every other hook.
        builder = builder.http_handler(web.feed());
    }
    let proxy = match builder.bind().await {
        Ok(proxy) => proxy,
        Err(e) => {
            // Loaded scripts are told the proxy is done, as they are when it stops.
            if let Some(scripts) = scripts {
                scripts.stopped.await;
            }
            return Err(e).context("cannot start the proxy");
        }
    };
    // Listen for signals before saying we are up, so a signal sent as soon as the
    // banner appears is never missed.
    let stop = shutdown_signal().context("cannot listen for Ctrl-C")?;
    print_banner(&proxy)?;
    if let Some(file) = &args.files.rfile {
        let detail = super::mitmdump::flow_detail(&args.log);
        super::mitmdump::load(file, web.as_ref(), capture.as_deref(), detail.as_deref()).await?;
    }
    if !args.files.client_replay.is_empty() {
        let (files, sender) = (args.files.client_replay.clone(), proxy.sender());
        tokio::spawn(async move { super::mitmdump::client_replay(&files, &sender).await });
    }
    if let Some(web) = web {
        // Replays go through the proxy itself: its hooks (the capture, the UI's own
        // feed, so a replayed flow shows), its routes and its pool.
        let web = web
            .ca(proxy.ca().clone())
            .replayer(Arc::new(proxy.sender()));
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
    let outcome = proxy.run_until(stop).await;
    if let Some(scripts) = scripts {
        scripts.stopped.await;
    }
    outcome?;
    finish_capture(capture.as_deref(), &args.save.save);
    Ok(())
}

/// The proxy the options describe (every option maps to one builder call), with the
/// hooks of `scripts` (taken from it), and its capture when flows are saved.
fn builder(
    args: &ProxyArgs,
    scripts: Option<&mut Scripts>,
) -> anyhow::Result<(MitmBuilder, Option<Arc<mitm::capture::Capture>>)> {
    let address = &args.listen.address;
    let mut b = ca_and_upstream_tls(
        Mitm::builder()
            .host(address.host.clone())
            .port(address.port),
        &args.ca,
        &args.upstream_tls,
    )?;
    if let Some((user, password)) = args.listen.credentials()? {
        b = b.proxy_auth(user, password);
    }
    let limits = &args.limits;
    let mut http = mitm::Http::new().timeout(limits.timeout.0);
    if let Some(secs) = limits.handshake_timeout {
        http = http.handshake_timeout(secs.0);
    }
    let http = upstream_timeouts(http, &args.upstream_timeouts)
        .idle_timeout(limits.idle_timeout.0)
        .max_head(limits.max_head)
        .max_headers(limits.max_headers)
        .max_body(limits.body_size_limit)
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_upstream_connections(limits.max_upstream_connections)
        .zero_copy(!args.runtime.no_zero_copy);
    for spec in &super::mitmdump::modes(&args.listen)? {
        let listener = spec
            .listener(&http, args.listen.keep_host_header)
            .with_context(|| format!("--mode {spec}"))?;
        b = b.listener(listener);
    }
    if let Some(secs) = args.intercept.tls_fail_open {
        b = b.tls_fail_open(Some(secs.0));
    }
    if let Some((var, path)) = key_log_path(|name| std::env::var_os(name)) {
        tracing::info!(
            "{var}: appending the TLS secrets of both hops to {}",
            path.display()
        );
        b = b.key_log(path);
    }
    b = b
        .max_connections(limits.max_connections)
        .grace_period(args.runtime.grace.0);
    b = with_log(b, args.log.log);
    b = addons(b, &args.modify, scripts)?;
    if let Some(flow_detail) = super::mitmdump::flow_detail(&args.log) {
        b = b.http_handler(flow_detail);
    }
    if let Some(replay) = super::server_replay::handler(&args.server_replay)? {
        b = b.http_handler(Arc::new(replay));
    }
    let capture = capture(&args.save)?;
    if let Some(capture) = &capture {
        b = b.http_handler(capture.clone());
    }
    if let Some(ignore) = args.intercept.ignore_hosts()? {
        b = b.router(Arc::new(ignore));
    }
    if let Some(raw) = args.intercept.tcp_hosts()? {
        b = b.router(Arc::new(raw));
    }
    for (domain, path) in args.intercept.certs() {
        b = b.cert(domain, path);
    }
    b = b
        .block_global(args.listen.block_global)
        .block_private(args.listen.block_private);
    Ok((b, capture))
}

/// mitmproxy's traffic-changing options and the addon scripts' hooks, in mitmproxy's
/// order: before the capture and the web UI's feed, so that what is saved and shown is
/// the flow as changed.
fn addons(
    b: MitmBuilder,
    modify: &args::Modify,
    scripts: Option<&mut Scripts>,
) -> anyhow::Result<MitmBuilder> {
    // block_list, anticache, anticomp first, as mitmproxy runs them.
    let mut b = requests_first(b, modify)?;
    // Then the scripts (mitmproxy's script loader comes next in its addon chain).
    if let Some(scripts) = scripts {
        if let Some(middleware) = scripts.middleware.take() {
            b = b.middleware(middleware);
        }
        if let Some(handler) = scripts.handler.take() {
            b = b.http_handler(handler);
        }
    }
    // modify_headers, map_remote, map_local, modify_body.
    b = changing_traffic(
        b,
        &modify.map_remote,
        &modify.map_local,
        &modify.modify_headers,
        &modify.modify_body,
    )?;
    // stickyauth, stickycookie last, as mitmproxy runs them.
    sticky(b, modify)
}

/// `--block-list`, `--anticache`, `--anticomp`: before the other traffic-changing
/// options, where mitmproxy runs them (a blocked request is judged as the client sent
/// it).
fn requests_first(mut b: MitmBuilder, modify: &args::Modify) -> anyhow::Result<MitmBuilder> {
    if !modify.block_list.is_empty() {
        let rules = modify
            .block_list
            .iter()
            .map(|text| text.parse().with_context(|| format!("--block-list {text}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        b = b.http_handler(Arc::new(mitm::addons::BlockList::new(rules)));
    }
    if modify.anticache {
        b = b.http_handler(Arc::new(mitm::addons::AntiCache));
    }
    if modify.anticomp {
        b = b.http_handler(Arc::new(mitm::addons::AntiComp));
    }
    Ok(b)
}

/// `--stickyauth`, `--stickycookie`: after the other traffic-changing options, where
/// mitmproxy runs them.
fn sticky(mut b: MitmBuilder, modify: &args::Modify) -> anyhow::Result<MitmBuilder> {
    if let Some(text) = &modify.stickyauth {
        let filter = super::config::parse_filter(text).context("--stickyauth")?;
        b = b.http_handler(Arc::new(mitm::addons::StickyAuth::new(filter)));
    }
    if let Some(text) = &modify.stickycookie {
        let filter = super::config::parse_filter(text).context("--stickycookie")?;
        b = b.http_handler(Arc::new(mitm::addons::StickyCookie::new(filter)));
    }
    Ok(b)
}

/// `http` with the upstream timeouts of the options: the proxy's and `mitm replay`'s.
pub(crate) fn upstream_timeouts(
    mut http: mitm::Http,
    timeouts: &args::UpstreamTimeouts,
) -> mitm::Http {
    if let Some(secs) = timeouts.connect_timeout {
        http = http.connect_timeout(secs.0);
    }
    http.response_timeout(timeouts.response_timeout.0)
}

/// `b` with no hooks but the log `--log` asks for (the library's default `[Log]` is
/// replaced either way).
pub(crate) fn with_log(b: MitmBuilder, log: LogChoice) -> MitmBuilder {
    let b = b.middlewares(vec![]);
    match log {
        LogChoice::None => b,
        LogChoice::Log => b.middleware(Arc::new(Log)),
        LogChoice::Http => b.http_handler(Arc::new(HttpLog::default())),
    }
}

/// The capture `--save` asks for, its files created (never over existing ones).
pub(crate) fn capture(save: &args::Save) -> anyhow::Result<Option<Arc<mitm::capture::Capture>>> {
    capture_annotated(save, None)
}

/// As [`capture`], each record given `annotations` (`mitm replay` marks its flows
/// replayed).
pub(crate) fn capture_annotated(
    save: &args::Save,
    annotations: Option<mitm::capture::Annotations>,
) -> anyhow::Result<Option<Arc<mitm::capture::Capture>>> {
    if save.save.is_empty() {
        return Ok(None);
    }
    let mut capture = mitm::capture::Capture::builder().body_limit(save.save_body_limit);
    if let Some(annotations) = annotations {
        capture = capture.annotations(annotations);
    }
    if let Some(text) = &save.save_filter {
        capture = capture.filter(super::config::parse_filter(text).context("--save-filter")?);
    }
    let options = mitm::capture::SaveOptions::default().keep_connects(save.save_connects);
    for path in &save.save {
        let sink = mitm::capture::create_with(path, options)
            .with_context(|| format!("--save {}", path.display()))?;
        capture = capture.sink(sink);
    }
    Ok(Some(Arc::new(capture.start())))
}

/// Writes what the capture still has queued, and says what was saved.
pub(crate) fn finish_capture(capture: Option<&mitm::capture::Capture>, files: &[PathBuf]) {
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

/// The CA (`--ca-dir`, `--confdir`, see [`load_ca`]) and the TLS towards origins
/// (`--upstream-ca`, `--upstream-client-cert`, `--insecure`) of `b`: what the proxy,
/// `mitm replay` and the web UI's replay share.
pub(crate) fn ca_and_upstream_tls(
    b: MitmBuilder,
    ca: &args::Ca,
    tls: &args::UpstreamTls,
) -> anyhow::Result<MitmBuilder> {
    let mut b = b.certificate_authority(load_ca(ca)?);
    for file in &tls.upstream_ca {
        b = b.upstream_ca_file(file);
    }
    if let Some(pem) = &tls.upstream_client_cert {
        b = b.upstream_client_cert(pem);
    }
    Ok(b.dangerous_accept_invalid_upstream_certs(tls.insecure))
}

/// The CA the options name: mitmproxy's in `--confdir` (read only); ours in
/// `--ca-dir` (created there on first use); or by default ours in the user data
/// directory, unless that holds no CA yet and `~/.mitmproxy` holds mitmproxy's, which
/// is then used read only.
pub(crate) fn load_ca(ca: &args::Ca) -> anyhow::Result<Arc<CertificateAuthority>> {
    let loaded = match (&ca.confdir, &ca.ca_dir) {
        // Given on both sides of a subcommand, which clap does not see as a conflict.
        (Some(_), Some(_)) => anyhow::bail!("--confdir and --ca-dir name two CAs: give one"),
        (Some(confdir), None) => {
            CertificateAuthority::load_mitmproxy(confdir).context("cannot load mitmproxy's CA")
        }
        (None, Some(dir)) => {
            CertificateAuthority::init(dir).context("cannot load or create the CA")
        }
        (None, None) => {
            let dir = mitm::default_ca_dir().context(
                "this platform has no user data directory: give a CA directory with --ca-dir",
            )?;
            let confdir = mitm::tls::ca::default_mitmproxy_confdir();
            CertificateAuthority::init_or_mitmproxy(dir, confdir.as_deref())
                .context("cannot load or create the CA")
        }
    };
    Ok(Arc::new(loaded?))
}

/// Which CA is in use and where it comes from, as the banner and `mitm ca` say it.
pub(crate) fn describe_ca(ca: &CertificateAuthority) -> String {
    let whose = match ca.source() {
        CaSource::Mitmproxy(_) => "mitmproxy's CA",
        _ => "mitm's own CA",
    };
    format!(
        "CA in use: {whose}, from {}\nCA subject: {}\n",
        ca.source(),
        ca.subject()
    )
}

/// The web UI, bound where --web-host and --web-port say (its replayer comes with the
/// proxy).
async fn bind_web(args: &ProxyArgs) -> anyhow::Result<mitm::web::WebUi> {
    mitm::web::WebUi::builder()
        .host(args.web.at.web_host.clone())
        .port(args.web.at.web_port)
        .bind()
        .await
        .context("cannot start the web UI")
}

/// A sender with no listener, for `mitm web FILE`'s replay: the CA and upstream TLS
/// settings the options give, and no hooks. Upstream proxy modes do not apply to
/// replays.
pub(crate) async fn replayer(
    ca: &args::Ca,
    tls: &args::UpstreamTls,
) -> anyhow::Result<mitm::Sender> {
    let b = Mitm::builder().middlewares(vec![]);
    ca_and_upstream_tls(b, ca, tls)?
        .sender()
        .await
        .context("cannot set up the web UI's replay")
}

/// Prints the web UI's URL (with its token), warning first when other machines can
/// reach it.
pub(crate) fn print_web(web: &mitm::web::WebUi) -> anyhow::Result<()> {
    let addr = web.local_addr();
    if !addr.ip().is_loopback() {
        eprintln!(
            "mitm: warning: web UI listening on {addr}, reachable from the network: anyone \
             who can connect and has the token sees all traffic"
        );
    }
    emit(&format!("web UI: {}\n", web.url()))
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
    out.push_str(&describe_ca(proxy.ca()));
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

/// `--modify-headers`, `--map-remote`, `--map-local`, `--modify-body`: each added only
/// when given, in the order mitmproxy runs them on a request (its header rules run
/// when the head arrives, before the others).
fn changing_traffic(
    mut b: MitmBuilder,
    map_remote: &[String],
    map_local: &[String],
    modify_headers: &[String],
    modify_body: &[String],
) -> anyhow::Result<MitmBuilder> {
    use mitm::addons::{MapLocal, MapRemote, ModifyBody, ModifyHeaders};
    if !modify_headers.is_empty() {
        b = b.http_handler(Arc::new(ModifyHeaders::new(modify_headers)?));
    }
    if !map_remote.is_empty() {
        b = b.http_handler(Arc::new(MapRemote::new(map_remote)?));
    }
    if !map_local.is_empty() {
        b = b.http_handler(Arc::new(MapLocal::new(map_local)?));
    }
    if !modify_body.is_empty() {
        b = b.http_handler(Arc::new(ModifyBody::new(modify_body)?));
    }
    Ok(b)
}
