//! What the proxy command does for mitmdump's options that are more than other names
//! for ours: `-r FILE` (flows read at start), `-C FILE` (client replay through the
//! proxy), `-n` (no proxy), `-s` (checked here, run by the Python package's build),
//! `--upstream-auth` and `--flow-detail`.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use mitm::server::mode::{Mode, ModeSpec};

use super::args::{self, ProxyArgs};
use super::emit;

/// Refuses what cannot run: `-s` in a build without Python (`scripts` false) or of a
/// file that is not there, `-w +FILE` (mitmdump's append), `-n` with nothing to do,
/// `--upstream-auth` with no upstream mode or not as USER:PASSWORD.
pub(crate) fn check(args: &ProxyArgs, scripts: bool) -> anyhow::Result<()> {
    if let Some(script) = args.files.scripts.first() {
        if !scripts {
            anyhow::bail!("-s {}: {}", script.display(), super::SCRIPTS_HOWTO);
        }
        if args.files.no_server {
            anyhow::bail!(
                "-s {}: -n runs no proxy, so addon scripts would see no traffic: give one \
                 or the other",
                script.display()
            );
        }
    }
    for script in &args.files.scripts {
        match std::fs::metadata(script) {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => anyhow::bail!("-s {}: not a file: give a Python script", script.display()),
            Err(e) => anyhow::bail!("-s {}: cannot read the script: {e}", script.display()),
        }
    }
    if let Some(plus) = args
        .save
        .save
        .iter()
        .find(|f| f.to_string_lossy().starts_with('+'))
    {
        anyhow::bail!(
            "--save {}: mitmdump's -w +FILE appends to FILE; mitm never writes into an \
             existing file (for a file whose name starts with +, write ./{})",
            plus.display(),
            plus.display()
        );
    }
    if args.files.no_server && args.files.rfile.is_none() && args.files.client_replay.is_empty() {
        anyhow::bail!(
            "-n runs no proxy: give -r FILE (print its flows) or -C FILE (send its requests)"
        );
    }
    modes(&args.listen).map(drop)
}

/// The `--mode` specs, the upstream proxies given `--upstream-auth`'s credentials when
/// their URLs have none.
pub(crate) fn modes(listen: &args::Listen) -> anyhow::Result<Vec<ModeSpec>> {
    let mut specs = listen.modes()?;
    let Some(auth) = &listen.upstream_auth else {
        return Ok(specs);
    };
    let Some((user, password)) = auth.split_once(':') else {
        anyhow::bail!("--upstream-auth takes USER:PASSWORD, with a colon between");
    };
    let mut upstreams = 0;
    for spec in &mut specs {
        if let Mode::Upstream(proxy) = &mut spec.mode {
            upstreams += 1;
            if proxy.credentials().is_none() {
                *proxy = proxy.clone().with_credentials(user, password);
            }
        }
    }
    if upstreams == 0 {
        anyhow::bail!(
            "--upstream-auth logs in to the proxy of --mode upstream:URL, and no mode is one \
             (mitmproxy also sends it to a reverse proxy's origin; mitm does not)"
        );
    }
    Ok(specs)
}

/// The `--flow-detail` writer, if asked for (level 0 writes nothing: none).
pub(crate) fn flow_detail(log: &args::Log) -> Option<Arc<mitm::FlowDetail>> {
    let detail = mitm::middleware::Detail::from_level(log.flow_detail?)?;
    if detail == mitm::middleware::Detail::Quiet {
        return None;
    }
    let mut writer = mitm::FlowDetail::new(detail);
    // As mitmdump: the terminal's width less 25 (COLUMNS, as the shell says it).
    if let Some(columns) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse::<usize>().ok())
    {
        writer = writer.max_url(columns.saturating_sub(25).max(50));
    }
    Some(Arc::new(writer))
}

/// `mitm -n`: `-r`'s flows printed (and written to the --save files), `-C`'s requests
/// sent, then done.
pub(crate) async fn run_without_server(args: &ProxyArgs) -> anyhow::Result<()> {
    let detail = flow_detail(&args.log);
    if let Some(file) = &args.files.rfile {
        if args.save.save.is_empty() && detail.is_none() {
            super::files::read(&args::ReadArgs {
                file: file.clone(),
                filter: None,
                curl: false,
                verbosity: args.verbosity.clone(),
            })?;
        } else {
            let capture = super::proxy::capture(&args.save)?;
            let result = load(file, None, capture.as_deref(), detail.as_deref()).await;
            super::proxy::finish_capture(capture.as_deref(), &args.save.save);
            result?;
        }
    }
    for file in &args.files.client_replay {
        super::files::replay(&args::ReplayArgs {
            file: file.clone(),
            filter: None,
            ca: args.ca.clone(),
            upstream_tls: args.upstream_tls.clone(),
            upstream_timeouts: args.upstream_timeouts.clone(),
            save: args.save.clone(),
            log: args.log.clone(),
            verbosity: args.verbosity.clone(),
            threads: args.runtime.threads.clone(),
        })
        .await?;
    }
    Ok(())
}

/// `-r FILE` beside a proxy: each flow printed (as `--flow-detail` writes flows, else a
/// line as `mitm read` prints it), handed to the capture (the --save files) and put in
/// the web UI's list. A damaged file loads the flows before the damage, then fails.
pub(crate) async fn load(
    file: &Path,
    web: Option<&mitm::web::WebUi>,
    capture: Option<&mitm::capture::Capture>,
    detail: Option<&mitm::FlowDetail>,
) -> anyhow::Result<()> {
    let records = mitm::capture::open(file).with_context(|| format!("-r {}", file.display()))?;
    let mut pushed = 0u64;
    let mut out = String::new();
    for record in records {
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                // The flows before the damage are out before the error is.
                emit(&out)?;
                return Err(anyhow::Error::from(e).context(format!("-r {}", file.display())));
            }
        };
        shown(&mut out, &record, detail);
        if let Some(capture) = capture {
            capture.push(record.clone());
            pushed += 1;
            if pushed.is_multiple_of(256) {
                drain(capture, pushed).await;
            }
        }
        if let Some(web) = web {
            web.store().extend([record]);
        }
        if out.len() > 64 * 1024 {
            emit(&std::mem::take(&mut out))?;
        }
    }
    emit(&out)?;
    if let Some(capture) = capture {
        drain(capture, pushed).await;
    }
    Ok(())
}

/// `record` as `detail` writes a flow (with its error, which a record keeps as text),
/// or as `mitm read`'s line without one.
fn shown(out: &mut String, record: &mitm::capture::Record, detail: Option<&mitm::FlowDetail>) {
    let Some(detail) = detail else {
        out.push_str(&record.summary());
        out.push('\n');
        return;
    };
    let (conn, flow) = record.to_flow();
    let text = detail.render(&conn, &flow);
    if text.is_empty() {
        return;
    }
    out.push_str(&text);
    if let Some(error) = &record.error {
        out.push_str(&format!(" << {error}\n"));
    }
}

/// Waits until the capture's writer has dealt with (written, failed or dropped) the
/// first `pushed` records, so that a long file does not overrun its queue.
async fn drain(capture: &mitm::capture::Capture, pushed: u64) {
    while capture.written() + capture.failed() + capture.dropped() < pushed {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

/// `-C FILE` beside a proxy: each request of each file sent again through `sender`
/// (the proxy's hooks, routes and pool), its new status printed beside the recorded
/// one, as `mitm replay` prints it. Failures are printed, not fatal: the proxy goes on.
pub(crate) async fn client_replay(files: &[std::path::PathBuf], sender: &mitm::Sender) {
    for file in files {
        let records = match mitm::capture::open(file) {
            Ok(records) => records,
            Err(e) => {
                tracing::error!("-C {}: {e}", file.display());
                continue;
            }
        };
        let (mut sent, mut failed) = (0usize, 0usize);
        for record in records {
            let record = match record {
                Ok(record) => record,
                Err(e) => {
                    tracing::error!("-C {}: {e}", file.display());
                    break;
                }
            };
            if record.request.is_connect() {
                continue;
            }
            sent += 1;
            let was = record
                .response
                .as_ref()
                .map_or_else(|| "none".to_string(), |r| r.status.to_string());
            let url = record.request.url();
            let line = match sender.replay(record.request.to_request()).await {
                Ok(response) => format!(
                    "{} {} {url} (was {was})\n",
                    response.status, record.request.method
                ),
                Err(e) => {
                    failed += 1;
                    format!(
                        "ERR {} {url}: {:#}\n",
                        record.request.method,
                        anyhow::Error::from(e)
                    )
                }
            };
            if emit(&line).is_err() {
                return;
            }
        }
        tracing::info!(
            "-C {}: {sent} requests sent again, {failed} failed",
            file.display()
        );
    }
}
