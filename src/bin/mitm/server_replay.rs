//! `--server-replay FILE` and its options (mitmproxy's `server_replay_*`) made into the
//! library's [`ServerReplay`] middleware.

use anyhow::Context as _;
use mitm::capture::server_replay::{ServerReplay, ServerReplayOptions, Unmatched};

use super::args::{self, ReplayExtra};

/// The server replay the options ask for (`None` without `--server-replay`): every
/// file read a flow at a time into its index, which keeps of each flow what it
/// answers with; the first damage in a file stops the proxy's start.
pub(crate) fn handler(args: &args::ServerReplay) -> anyhow::Result<Option<ServerReplay>> {
    if args.server_replay.is_empty() {
        return Ok(None);
    }
    let options = options(args);
    let mut files = Vec::new();
    for path in &args.server_replay {
        let records = mitm::capture::open(path)
            .with_context(|| format!("--server-replay {}", path.display()))?;
        files.push((path, records));
    }
    let mut damage = None;
    let recorded = files
        .into_iter()
        .flat_map(|(path, records)| records.map(move |r| (path, r)));
    let recorded = recorded.map_while(|(path, r)| match r {
        Ok(record) => Some(record),
        Err(e) => {
            damage =
                Some(anyhow::Error::from(e).context(format!("--server-replay {}", path.display())));
            None
        }
    });
    let replay = ServerReplay::new(recorded, options).context("--server-replay-extra")?;
    if let Some(e) = damage {
        return Err(e);
    }
    tracing::info!(responses = replay.len(), "server replay");
    Ok(Some(replay))
}

/// The library's options from the command line's, with mitmproxy's deprecated names
/// taken as it takes them (and a warning, as it gives).
fn options(args: &args::ServerReplay) -> ServerReplayOptions {
    let mut extra = match args.server_replay_extra {
        ReplayExtra::Forward => Unmatched::Forward,
        ReplayExtra::Kill => Unmatched::Kill,
        ReplayExtra::NoContent => Unmatched::Status(204),
        ReplayExtra::BadRequest => Unmatched::Status(400),
        ReplayExtra::NotFound => Unmatched::Status(404),
        ReplayExtra::ServerError => Unmatched::Status(500),
    };
    if args.server_replay_kill_extra {
        tracing::warn!("--server-replay-kill-extra is deprecated: use --server-replay-extra kill");
        extra = Unmatched::Kill;
    }
    if args.server_replay_nopop {
        tracing::warn!("--server-replay-nopop is now called --server-replay-reuse");
    }
    ServerReplayOptions::new()
        .extra(extra)
        .reuse(args.server_replay_reuse || args.server_replay_nopop)
        .refresh(args.server_replay_refresh)
        .ignore_content(args.server_replay_ignore_content)
        .ignore_host(args.server_replay_ignore_host)
        .ignore_port(args.server_replay_ignore_port)
        .ignore_params(args.server_replay_ignore_params.iter().cloned())
        .ignore_payload_params(args.server_replay_ignore_payload_params.iter().cloned())
        .use_headers(args.server_replay_use_headers.iter().cloned())
}

#[cfg(test)]
mod tests {
    use super::super::config::{try_parse_from, Command};
    use super::*;

    fn options_of(line: &str) -> ServerReplayOptions {
        let config = try_parse_from(line.split_whitespace()).unwrap();
        let Command::Proxy(args) = config.command else {
            panic!("{line}: not the proxy");
        };
        options(&args.server_replay)
    }

    #[test]
    fn each_flag_sets_the_option_of_its_name() {
        assert_eq!(options_of("mitm"), ServerReplayOptions::new());
        assert_eq!(
            options_of(
                "mitm --server-replay-extra 500 --server-replay-reuse \
                 --server-replay-refresh false --server-replay-ignore-params t \
                 --server-replay-ignore-params nonce --server-replay-ignore-payload-params csrf \
                 --server-replay-ignore-content --server-replay-ignore-host \
                 --server-replay-ignore-port --server-replay-use-headers accept"
            ),
            ServerReplayOptions::new()
                .extra(Unmatched::Status(500))
                .reuse(true)
                .refresh(false)
                .ignore_params(["t", "nonce"])
                .ignore_payload_params(["csrf"])
                .ignore_content(true)
                .ignore_host(true)
                .ignore_port(true)
                .use_headers(["accept"])
        );
        // mitmproxy's former names.
        assert_eq!(
            options_of("mitm --server-replay-nopop --server-replay-kill-extra"),
            ServerReplayOptions::new()
                .reuse(true)
                .extra(Unmatched::Kill)
        );
        assert!(try_parse_from(["mitm", "--server-replay-extra", "418"]).is_err());
    }
}
