//! The subcommands: `mitm ca`, and those over capture files (`read`, `convert`,
//! `replay`, `web`).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use mitm::Mitm;

use super::args::{CaArgs, ConvertArgs, ReadArgs, ReplayArgs, WebArgs};
use super::proxy::{self, print_web};
use super::{emit, shutdown_signal};

/// `mitm ca`: everything a user needs to trust the CA.
pub(crate) fn print_ca(args: &CaArgs) -> anyhow::Result<()> {
    let ca = proxy::load_ca(&args.ca)?;
    let path = ca
        .cert_path()
        .context("the CA has no certificate file")?
        .to_path_buf();
    let mut out = proxy::describe_ca(&ca);
    out.push_str(&format!(
        "CA certificate: {}\nSHA-256 fingerprint: {}\n",
        path.display(),
        ca.fingerprint_sha256()
    ));
    if let Some(spki) = mitm::tls::trust::spki_sha256(&ca) {
        out.push_str(&format!("SPKI SHA-256 (base64): {spki}\n"));
    }
    out.push('\n');
    out.push_str(ca.cert_pem());
    out.push_str("\nHow to trust it:\n");
    let proxy = format!("{}:{}", args.address.host, args.address.port);
    out.push_str(&mitm::tls::trust::instructions(
        &path.display().to_string(),
        &proxy,
    ));
    emit(&out)
}

/// The flows of the capture `file` that match `filter` (all without one), read one at
/// a time: a damaged file gives those before the damage, then the error, then stops.
fn records(
    file: &Path,
    filter: Option<&str>,
) -> anyhow::Result<impl Iterator<Item = mitm::Result<mitm::capture::Record>>> {
    let filter = filter.map(super::config::parse_filter).transpose()?;
    let records = mitm::capture::open(file)?;
    Ok(records.filter(move |r| match (r, &filter) {
        (Ok(record), Some(filter)) => filter.matches(record),
        _ => true,
    }))
}

/// `mitm read`: a line per flow, or a curl command per request, each printed as it
/// is read; a damaged file prints the flows before the damage, then fails.
pub(crate) fn read(args: &ReadArgs) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    let mut line = String::new();
    let mut written = Ok(());
    for record in records(&args.file, args.filter.as_deref())? {
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                // What was read before the damage is out before the error is.
                quiet_pipe(out.flush())?;
                return Err(e.into());
            }
        };
        line.clear();
        line.push_str(&if args.curl {
            record.to_curl()
        } else {
            record.summary()
        });
        line.push('\n');
        written = out.write_all(line.as_bytes());
        if written.is_err() {
            break;
        }
    }
    quiet_pipe(written.and_then(|()| out.flush()))
}

/// A write to stdout's result: a closed pipe (`mitm read x | head`) is no error, the
/// reader has what it wanted.
fn quiet_pipe(written: std::io::Result<()>) -> anyhow::Result<()> {
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to stdout")
        }
        _ => Ok(()),
    }
}

/// `mitm convert`: every flow of `input` into the new file `output`, one at a time. A
/// damaged input converts up to the damage: `output` is a whole capture of the flows
/// before it, and the command fails.
pub(crate) fn convert(args: &ConvertArgs) -> anyhow::Result<()> {
    let (input, output) = (&args.input, &args.output);
    let records = records(input, args.filter.as_deref())?;
    let options = mitm::capture::SaveOptions::default().keep_connects(args.keep_connects);
    let mut sink = mitm::capture::create_with(output, options)?;
    // HAR and flow files leave CONNECTs out unless kept; SQLite keeps them.
    let drops_connects =
        !args.keep_connects && mitm::capture::Format::of(output) != mitm::capture::Format::Sqlite;
    let (mut written, mut left_out) = (0u64, 0u64);
    let mut failed = None;
    for record in records {
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                failed = Some(e);
                break;
            }
        };
        if drops_connects && record.request.is_connect() {
            left_out += 1;
        } else {
            written += 1;
        }
        sink.write(&record)
            .with_context(|| format!("cannot write {}", output.display()))?;
    }
    sink.flush()
        .with_context(|| format!("cannot write {}", output.display()))?;
    drop(sink);
    let note = match left_out {
        0 => String::new(),
        n => format!(" ({n} CONNECT flows left out: --keep-connects keeps them)"),
    };
    eprintln!(
        "mitm: {written} flows from {} written to {}{note}",
        input.display(),
        output.display()
    );
    match failed {
        Some(e) => Err(anyhow::Error::from(e).context(format!(
            "{} holds the {written} flows before the damage",
            output.display()
        ))),
        None => Ok(()),
    }
}

/// `mitm replay`: each recorded request sent again; fails if any could not be.
pub(crate) async fn replay(args: &ReplayArgs) -> anyhow::Result<()> {
    // Read a flow at a time, between the requests: a read of a local file is short
    // enough to block the runtime for.
    let records = records(&args.file, args.filter.as_deref())?;
    // The proxy's own setup (CA, upstream TLS and timeouts, hooks), with no listener.
    let timeouts = &args.upstream_timeouts;
    let http = proxy::upstream_timeouts(mitm::Http::new(), timeouts);
    // The flows sent again are saved as mitmproxy saves a client replay's.
    let mut replayed = mitm::capture::Annotations::default();
    replayed.is_replay = Some("request".into());
    let capture = proxy::capture_annotated(&args.save, Some(replayed))?;
    let mut builder = proxy::with_log(Mitm::builder().http(http), args.log.log);
    if let Some(flow_detail) = super::mitmdump::flow_detail(&args.log) {
        builder = builder.http_handler(flow_detail);
    }
    if let Some(capture) = &capture {
        builder = builder.http_handler(capture.clone());
    }
    let sender = proxy::ca_and_upstream_tls(builder, &args.ca, &args.upstream_tls)?
        .sender()
        .await
        .context("cannot set up the requests' sender")?;
    let (mut sent, mut failed) = (0usize, 0usize);
    let mut damage = None;
    for record in records {
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                damage = Some(e);
                break;
            }
        };
        if record.request.is_connect() {
            // A tunnel: the requests inside it are flows of their own.
            emit(&format!("skipped CONNECT {}\n", record.request.authority()))?;
            continue;
        }
        sent += 1;
        let request = record.request.to_request();
        let url = record.request.url();
        let was = record
            .response
            .as_ref()
            .map_or_else(|| "none".to_string(), |r| r.status.to_string());
        let answer = sender.replay(request).await.map_err(anyhow::Error::from);
        let line = match answer {
            Ok(response) => format!(
                "{} {} {url} (was {was})\n",
                response.status, record.request.method
            ),
            Err(e) => {
                failed += 1;
                format!("ERR {} {url}: {e:#}\n", record.request.method)
            }
        };
        emit(&line)?;
    }
    drop(sender);
    proxy::finish_capture(capture.as_deref(), &args.save.save);
    if let Some(e) = damage {
        return Err(anyhow::Error::from(e).context(format!(
            "{sent} requests were sent before the damage ({failed} failed)"
        )));
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {sent} requests failed");
    }
    Ok(())
}

/// `mitm web FILE`: the web UI over a saved capture, until Ctrl-C.
///
/// The UI reads its flows page by page from an SQLite database: the file itself, or,
/// for a HAR or flow file, a temporary copy made flow by flow (removed on exit), so
/// that memory does not grow with the file. A damaged file is shown up to the damage,
/// and the error printed. Replays join the list: they go into the temporary copy (for
/// an SQLite file, one made on the first replay), never into the file.
pub(crate) async fn serve(args: &WebArgs) -> anyhow::Result<()> {
    use mitm::web::FlowSource as _;
    let file = &args.file;
    let source = match mitm::capture::Format::of(file) {
        mitm::capture::Format::Sqlite => mitm::web::SqliteSource::open(file)?,
        _ => {
            let records = mitm::capture::open(file)?;
            let (source, damage) = mitm::web::SqliteSource::copy_of(records)?;
            if let Some(e) = damage {
                eprintln!(
                    "mitm: error: {:#}",
                    anyhow::Error::from(e).context(format!(
                        "the web UI shows the {} flows before the damage",
                        source.len()
                    ))
                );
            }
            source
        }
    };
    let sender = proxy::replayer(&args.ca, &args.upstream_tls).await?;
    let ca = sender.ca().clone();
    let mut web = mitm::web::WebUi::builder()
        .host(args.at.web_host.clone())
        .port(args.at.web_port)
        .bind()
        .await
        .context("cannot start the web UI")?
        .ca(ca)
        .replayer(Arc::new(sender));
    let flows = source.len();
    web = web.source(Arc::new(source));
    let stop = shutdown_signal().context("cannot listen for Ctrl-C")?;
    emit(&format!("mitm: {flows} flows from {}\n", file.display()))?;
    print_web(&web)?;
    web.run_until(stop).await?;
    Ok(())
}
