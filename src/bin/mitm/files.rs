//! The subcommands: `mitm ca`, and those over capture files (`read`, `convert`,
//! `replay`, `web`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use mitm::{CertificateAuthority, Mitm};

use crate::args::{self, CaArgs, ConvertArgs, ReadArgs, ReplayArgs, WebArgs};
use crate::proxy::{self, print_web};
use crate::{emit, shutdown_signal};

/// `mitm ca`: everything a user needs to trust the CA.
pub(crate) fn print_ca(args: &CaArgs) -> anyhow::Result<()> {
    let dir = ca_dir(&args.ca)?;
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
    let proxy = format!("{}:{}", args.address.host, args.address.port);
    out.push_str(&mitm::tls::trust::instructions(
        &path.display().to_string(),
        &proxy,
    ));
    emit(&out)
}

fn ca_dir(ca: &args::Ca) -> anyhow::Result<PathBuf> {
    match &ca.ca_dir {
        Some(dir) => Ok(dir.clone()),
        None => mitm::default_ca_dir()
            .context("this platform has no user data directory: give one with --ca-dir"),
    }
}

/// The flows of the capture `file` that match `filter` (all without one).
fn records(file: &Path, filter: Option<&str>) -> anyhow::Result<Vec<mitm::capture::Record>> {
    let filter = filter.map(crate::config::parse_filter).transpose()?;
    let mut records = mitm::capture::read(file)?;
    if let Some(filter) = filter {
        records.retain(|r| filter.matches(r));
    }
    Ok(records)
}

/// `mitm read`: a line per flow, or a curl command per request.
pub(crate) fn read(args: &ReadArgs) -> anyhow::Result<()> {
    let records = records(&args.file, args.filter.as_deref())?;
    let mut out = String::new();
    for record in &records {
        out.push_str(&if args.curl {
            record.to_curl()
        } else {
            record.summary()
        });
        out.push('\n');
    }
    emit(&out)
}

/// `mitm convert`: every flow of `input` into the new file `output`.
pub(crate) fn convert(args: &ConvertArgs) -> anyhow::Result<()> {
    let (input, output) = (&args.input, &args.output);
    let records = records(input, args.filter.as_deref())?;
    let options = mitm::capture::SaveOptions::default().keep_connects(args.keep_connects);
    let mut sink = mitm::capture::create_with(output, options)?;
    for record in &records {
        sink.write(record)
            .with_context(|| format!("cannot write {}", output.display()))?;
    }
    sink.flush()
        .with_context(|| format!("cannot write {}", output.display()))?;
    // HAR and flow files leave CONNECTs out unless kept; SQLite keeps them.
    let left_out = if args.keep_connects
        || mitm::capture::Format::of(output) == mitm::capture::Format::Sqlite
    {
        0
    } else {
        records.iter().filter(|r| r.request.is_connect()).count()
    };
    let note = match left_out {
        0 => String::new(),
        n => format!(" ({n} CONNECT flows left out: --keep-connects keeps them)"),
    };
    eprintln!(
        "mitm: {} flows from {} written to {}{note}",
        records.len() - left_out,
        input.display(),
        output.display()
    );
    Ok(())
}

/// `mitm replay`: each recorded request sent again; fails if any could not be.
pub(crate) async fn replay(args: &ReplayArgs) -> anyhow::Result<()> {
    let records = records(&args.file, args.filter.as_deref())?;
    // The proxy's own setup (CA, upstream TLS and timeouts, hooks), with no listener.
    let timeouts = &args.upstream_timeouts;
    let http = proxy::upstream_timeouts(mitm::Http::new(), timeouts);
    // The flows sent again are saved as mitmproxy saves a client replay's.
    let mut replayed = mitm::capture::Annotations::default();
    replayed.is_replay = Some("request".into());
    let capture = proxy::capture_annotated(&args.save, Some(replayed))?;
    let mut builder = proxy::with_log(Mitm::builder().http(http), args.log.log);
    if let Some(capture) = &capture {
        builder = builder.http_handler(capture.clone());
    }
    let sender = proxy::ca_and_upstream_tls(builder, &args.ca, &args.upstream_tls)
        .sender()
        .await
        .context("cannot set up the requests' sender")?;
    let mut failed = 0;
    let mut out = String::new();
    for record in &records {
        if record.request.is_connect() {
            // A tunnel: the requests inside it are flows of their own.
            out.push_str(&format!("skipped CONNECT {}\n", record.request.authority()));
            continue;
        }
        let request = record.request.to_request();
        let url = record.request.url();
        let was = record
            .response
            .as_ref()
            .map_or_else(|| "none".to_string(), |r| r.status.to_string());
        let sent = sender.send(request).await.map_err(anyhow::Error::from);
        match sent {
            Ok(response) => out.push_str(&format!(
                "{} {} {url} (was {was})\n",
                response.status, record.request.method
            )),
            Err(e) => {
                failed += 1;
                out.push_str(&format!("ERR {} {url}: {e:#}\n", record.request.method));
            }
        }
    }
    emit(&out)?;
    drop(sender);
    proxy::finish_capture(capture.as_deref(), &args.save.save);
    if failed > 0 {
        anyhow::bail!("{failed} of {} requests failed", records.len());
    }
    Ok(())
}

/// `mitm web FILE`: the web UI over a saved capture, until Ctrl-C.
pub(crate) async fn serve(args: &WebArgs) -> anyhow::Result<()> {
    use mitm::web::FlowSource as _;
    let file = &args.file;
    // An SQLite capture is read page by page from the file; the other formats are
    // read whole into memory, every flow of the file: the user asked for this one.
    let (source, records) = match mitm::capture::Format::of(file) {
        mitm::capture::Format::Sqlite => (Some(mitm::web::SqliteSource::open(file)?), Vec::new()),
        _ => (None, mitm::capture::read(file)?),
    };
    let sender = proxy::replayer(&args.ca, &args.upstream_tls).await?;
    let ca = sender.ca().clone();
    let mut web = mitm::web::WebUi::builder()
        .host(args.at.web_host.clone())
        .port(args.at.web_port)
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
