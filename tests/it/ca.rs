//! Integration tests of the certificate authority: files, certificate contents, and what
//! real verifiers (openssl, rustls, Python's ssl) make of the certificates.

// clippy's allow-unwrap-in-tests covers `#[test]` functions only, not their helpers.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use common::{have, require_tool};
use mitm::tls::ca::{CA_CERT_FILE, CA_KEY_FILE};
use mitm::{CertificateAuthority, Error};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{parse_x509_certificate, X509Certificate};

const DAY: i64 = 24 * 3600;

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn parse(der: &[u8]) -> X509Certificate<'_> {
    let (rest, cert) = parse_x509_certificate(der).unwrap();
    assert!(rest.is_empty());
    cert
}

fn ski(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        })
}

fn aki(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref(),
            _ => None,
        })
        .map(|id| id.0.to_vec())
}

fn sans(cert: &X509Certificate<'_>) -> (Vec<String>, Vec<Vec<u8>>) {
    let ext = cert.subject_alternative_name().unwrap().expect("a SAN");
    let (mut dns, mut ips) = (Vec::new(), Vec::new());
    for name in &ext.value.general_names {
        match name {
            GeneralName::DNSName(d) => dns.push(d.to_string()),
            GeneralName::IPAddress(ip) => ips.push(ip.to_vec()),
            other => panic!("unexpected SAN {other:?}"),
        }
    }
    (dns, ips)
}

fn common_names(cert: &X509Certificate<'_>) -> Vec<String> {
    let cns = cert.subject().iter_common_name();
    cns.map(|cn| cn.as_str().unwrap().to_owned()).collect()
}

/// The names in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let entries = fs::read_dir(dir).unwrap();
    let mut names: Vec<_> = entries
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn is_invalid(err: &Error, expected_path: &Path, expected_what: &str) -> bool {
    matches!(err, Error::CaInvalid { path, what, .. } if path == expected_path && *what == expected_what)
}

// ---- files ----

#[test]
fn init_twice_gives_the_same_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("nested").join("ca");
    let first = CertificateAuthority::init(&ca_dir).unwrap();
    let second = CertificateAuthority::init(&ca_dir).unwrap();
    assert_eq!(first.cert_pem(), second.cert_pem());
    assert_eq!(first.fingerprint_sha256(), second.fingerprint_sha256());

    let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&ca_dir.join(CA_KEY_FILE)), 0o600);
    assert_eq!(mode(&ca_dir), 0o700);
    assert_eq!(
        mode(&ca_dir.join(CA_CERT_FILE)) & 0o133,
        0,
        "cert is not writable by others"
    );
    let on_disk = fs::read_to_string(ca_dir.join(CA_CERT_FILE)).unwrap();
    assert_eq!(on_disk, first.cert_pem());
    let key = fs::read_to_string(ca_dir.join(CA_KEY_FILE)).unwrap();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));

    assert_eq!(
        names_in(&ca_dir),
        [CA_KEY_FILE, CA_CERT_FILE],
        "no temporary files are left"
    );
}

#[test]
fn save_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("ca.pem"), dir.path().join("ca.key"));
    let first = CertificateAuthority::generate().unwrap();
    first.save(&cert, &key).unwrap();
    let (cert_before, key_before) = (fs::read(&cert).unwrap(), fs::read(&key).unwrap());

    let other = CertificateAuthority::generate().unwrap();
    let err = other.save(&cert, &key).unwrap_err();
    assert!(
        matches!(&err, Error::CaExists { path } if path == &cert),
        "{err}"
    );
    assert_eq!(fs::read(&cert).unwrap(), cert_before);
    assert_eq!(fs::read(&key).unwrap(), key_before);

    // Only the key is in the way: nothing is written, not even the certificate.
    let fresh_cert = dir.path().join("fresh.pem");
    let err = other.save(&fresh_cert, &key).unwrap_err();
    assert!(
        matches!(&err, Error::CaExists { path } if path == &key),
        "{err}"
    );
    assert!(!fresh_cert.exists());
    assert_eq!(fs::read(&key).unwrap(), key_before);

    let loaded = CertificateAuthority::load(&cert, &key).unwrap();
    assert_eq!(loaded.cert_der(), first.cert_der());
}

#[test]
fn one_file_alone_is_incomplete() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::init(dir.path()).unwrap();
    let (cert, key) = (dir.path().join(CA_CERT_FILE), dir.path().join(CA_KEY_FILE));

    fs::remove_file(&key).unwrap();
    let err = CertificateAuthority::init(dir.path()).unwrap_err();
    assert!(
        matches!(&err, Error::CaIncomplete { present, missing } if present == &cert && missing == &key),
        "{err}"
    );
    assert_eq!(
        fs::read_to_string(&cert).unwrap(),
        ca.cert_pem(),
        "the certificate is kept"
    );
    assert!(!key.exists());

    fs::rename(&cert, &key).unwrap();
    let err = CertificateAuthority::init(dir.path()).unwrap_err();
    assert!(
        matches!(&err, Error::CaIncomplete { present, missing } if present == &key && missing == &cert),
        "{err}"
    );
}

#[test]
fn bad_files_are_reported_by_path() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("ca.pem"), dir.path().join("ca.key"));
    CertificateAuthority::generate()
        .unwrap()
        .save(&cert, &key)
        .unwrap();
    let missing = dir.path().join("missing.pem");

    let err = CertificateAuthority::load(&missing, &key).unwrap_err();
    assert!(
        matches!(&err, Error::CaRead { path, .. } if path == &missing),
        "{err}"
    );

    let garbage = dir.path().join("garbage.pem");
    fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = CertificateAuthority::load(&garbage, &key).unwrap_err();
    assert!(is_invalid(&err, &garbage, "certificate"), "{err}");
    assert!(err.to_string().contains("garbage.pem"), "{err}");

    let err = CertificateAuthority::load(&cert, &garbage).unwrap_err();
    assert!(is_invalid(&err, &garbage, "private key"), "{err}");

    // A key swapped in from another CA.
    let (cert2, key2) = (dir.path().join("ca2.pem"), dir.path().join("ca2.key"));
    CertificateAuthority::generate()
        .unwrap()
        .save(&cert2, &key2)
        .unwrap();
    let err = CertificateAuthority::load(&cert, &key2).unwrap_err();
    assert!(is_invalid(&err, &key2, "private key"), "{err}");

    let err = CertificateAuthority::from_pem("", "").unwrap_err();
    assert!(is_invalid(&err, Path::new(""), "certificate"), "{err}");
}

// ---- first starts at once ----

/// How many starts race for one fresh directory.
const RACERS: usize = 8;

/// Runs `start` in [`RACERS`] threads released together; returns what each returned.
fn at_once<T: Send + 'static>(start: impl Fn() -> T + Send + Sync + 'static) -> Vec<T> {
    let (start, barrier) = (Arc::new(start), Arc::new(Barrier::new(RACERS)));
    let racers: Vec<_> = (0..RACERS)
        .map(|_| {
            let (start, barrier) = (start.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                start()
            })
        })
        .collect();
    racers.into_iter().map(|r| r.join().unwrap()).collect()
}

/// `rounds` times, runs `start` [`at_once`] on one fresh CA directory, and checks that
/// every start succeeded with the CA now on disk and that nothing but the two CA files
/// is left. `start` returns the fingerprint of the CA it ended up with.
fn race_first_starts(rounds: usize, start: fn(&Path) -> Result<String, String>) {
    for round in 0..rounds {
        let dir = tempfile::tempdir().unwrap();
        // Not there yet: creating the directory is part of the race.
        let ca_dir = dir.path().join("ca");
        let results = at_once({
            let ca_dir = ca_dir.clone();
            move || start(&ca_dir)
        });
        let failures: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        assert!(failures.is_empty(), "round {round}: {failures:#?}");

        let on_disk =
            CertificateAuthority::load(ca_dir.join(CA_CERT_FILE), ca_dir.join(CA_KEY_FILE))
                .unwrap()
                .fingerprint_sha256();
        for fingerprint in results.into_iter().map(Result::unwrap) {
            assert_eq!(
                fingerprint, on_disk,
                "round {round}: a start has another CA"
            );
        }
        assert_eq!(
            names_in(&ca_dir),
            [CA_KEY_FILE, CA_CERT_FILE],
            "round {round}: temporary files are left"
        );
    }
}

#[test]
fn concurrent_first_inits_in_one_process_share_one_ca() {
    race_first_starts(20, |dir| {
        let ca = CertificateAuthority::init(dir).map_err(|e| e.to_string())?;
        Ok(ca.fingerprint_sha256())
    });
}

#[test]
fn concurrent_first_builders_in_one_process_share_one_ca() {
    race_first_starts(10, |dir| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let bind = mitm::Mitm::builder().ca_dir(dir).port(0).bind();
        let proxy = runtime.block_on(bind).map_err(|e| e.to_string())?;
        Ok(proxy.ca().fingerprint_sha256())
    });
}

#[test]
fn concurrent_first_mitm_ca_processes_share_one_ca() {
    race_first_starts(5, |dir| {
        let output = Command::new(env!("CARGO_BIN_EXE_mitm"))
            .arg("ca")
            .arg("--ca-dir")
            .arg(dir)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).into_owned());
        }
        let fingerprint = stdout
            .lines()
            .find_map(|line| line.strip_prefix("SHA-256 fingerprint: "));
        fingerprint
            .map(str::to_owned)
            .ok_or_else(|| format!("no fingerprint in {stdout}"))
    });
}

/// Leaves in `dir` what a first start that crashed leaves: its staging directory
/// (`.mitm.<pid>.<random>.tmp`) holding a complete pair for `ca`, of which nothing, or
/// only the key, was linked into place. Returns that directory.
fn crashed_start(dir: &Path, ca: &CertificateAuthority) -> PathBuf {
    let temp = dir.join(".mitm.4242.00c0ffee00c0ffee.tmp");
    fs::create_dir_all(&temp).unwrap();
    ca.save(temp.join(CA_CERT_FILE), temp.join(CA_KEY_FILE))
        .unwrap();
    temp
}

/// Sets `path`'s modification time an hour back.
fn age(path: &Path) {
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    fs::File::open(path)
        .unwrap()
        .set_modified(an_hour_ago)
        .unwrap();
}

#[test]
fn a_lone_user_file_stays_incomplete_and_untouched() {
    // The files a user saved by hand, from a CA made elsewhere.
    let theirs = tempfile::tempdir().unwrap();
    let (cert, key) = (theirs.path().join("c.pem"), theirs.path().join("k.pem"));
    CertificateAuthority::generate()
        .unwrap()
        .save(&cert, &key)
        .unwrap();
    // A crashed start of ours beside them, with a CA of its own, is not the missing half.
    let other = CertificateAuthority::generate().unwrap();

    for (source, present, missing) in [
        (&key, CA_KEY_FILE, CA_CERT_FILE),
        (&cert, CA_CERT_FILE, CA_KEY_FILE),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (present, missing) = (dir.path().join(present), dir.path().join(missing));
        let bytes = fs::read(source).unwrap();
        fs::write(&present, &bytes).unwrap();
        crashed_start(dir.path(), &other);

        // Several starts at once: none of them "repairs" it.
        let ca_dir = dir.path().to_owned();
        for result in at_once(move || CertificateAuthority::init(&ca_dir)) {
            let err = result.unwrap_err();
            assert!(
                matches!(&err, Error::CaIncomplete { present: p, missing: m } if p == &present && m == &missing),
                "{err}"
            );
        }
        assert_eq!(fs::read(&present).unwrap(), bytes, "kept byte for byte");
        assert!(!missing.exists(), "{} was made up", missing.display());
    }
}

#[test]
fn leftovers_of_a_crashed_first_start_do_not_block_the_next() {
    let crashed = CertificateAuthority::generate().unwrap();

    // Crashed before publishing anything: its files are not a CA, and are ignored.
    let dir = tempfile::tempdir().unwrap();
    let temp_dir = crashed_start(dir.path(), &crashed);
    // A half-written temporary file, as `save` (and older versions of `init`) make.
    let temp_file = dir.path().join(".mitm.key.4242.00c0ffee00c0ffee.tmp");
    fs::write(&temp_file, "-----BEGIN PRIV").unwrap();
    let ca = CertificateAuthority::init(dir.path()).unwrap();
    assert_ne!(ca.cert_der(), crashed.cert_der());
    // A recent leftover may be another start at work, so it is kept ...
    assert!(temp_dir.exists() && temp_file.exists());
    // ... and removed by a later start once it is old.
    age(&temp_dir);
    age(&temp_file);
    let again = CertificateAuthority::init(dir.path()).unwrap();
    assert_eq!(again.cert_der(), ca.cert_der());
    assert_eq!(names_in(dir.path()), [CA_KEY_FILE, CA_CERT_FILE]);

    // Crashed after publishing the key, before the certificate: the next starts (here
    // several at once) finish publishing that CA rather than calling it incomplete or
    // making another.
    let dir = tempfile::tempdir().unwrap();
    let temp_dir = crashed_start(dir.path(), &crashed);
    fs::hard_link(temp_dir.join(CA_KEY_FILE), dir.path().join(CA_KEY_FILE)).unwrap();
    let ca_dir = dir.path().to_owned();
    for result in at_once(move || CertificateAuthority::init(&ca_dir)) {
        assert_eq!(result.unwrap().cert_der(), crashed.cert_der());
    }
    assert_eq!(names_in(dir.path()), [CA_KEY_FILE, CA_CERT_FILE]);
}

// ---- certificate contents ----

#[test]
fn root_has_every_field() {
    let ca = CertificateAuthority::generate().unwrap();
    let root = parse(ca.cert_der());
    let subject = root.subject().to_string();
    assert_eq!(
        subject,
        "C=US, ST=New York, L=New York, O=mitm, OU=mitm, CN=mitm"
    );
    assert_eq!(
        root.issuer().as_raw(),
        root.subject().as_raw(),
        "self-signed"
    );
    assert!(root.verify_signature(None).is_ok());

    let serial = root.raw_serial();
    assert!(
        serial.len() >= 8 && serial[0] & 0x80 == 0,
        "positive, 64+ bits: {serial:02x?}"
    );
    let other = CertificateAuthority::generate().unwrap();
    assert_ne!(
        parse(other.cert_der()).raw_serial(),
        serial,
        "serials are random"
    );

    let bc = root.basic_constraints().unwrap().unwrap();
    assert!(bc.critical && bc.value.ca);
    assert_eq!(bc.value.path_len_constraint, Some(0));
    let ku = root.key_usage().unwrap().unwrap();
    assert!(ku.critical);
    assert!(ku.value.key_cert_sign() && ku.value.crl_sign() && ku.value.digital_signature());
    assert!(ski(&root).is_some_and(|id| !id.is_empty()));

    let validity = root.validity();
    let (start, end) = (
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    );
    assert!((now() - 2 * DAY - 60..=now() - 2 * DAY + 60).contains(&start));
    assert!((now() + 3650 * DAY - 60..=now() + 3660 * DAY).contains(&end));
}

#[test]
fn fingerprints_hash_the_root_and_its_key() {
    use base64::Engine as _;
    let sha256 = |bytes: &[u8]| ring::digest::digest(&ring::digest::SHA256, bytes);
    let ca = CertificateAuthority::generate().unwrap();
    let hex: Vec<_> = (sha256(ca.cert_der()).as_ref().iter())
        .map(|b| format!("{b:02X}"))
        .collect();
    assert_eq!(ca.fingerprint_sha256(), hex.join(":"));
    let spki = sha256(parse(ca.cert_der()).public_key().raw);
    let spki = base64::engine::general_purpose::STANDARD.encode(spki);
    assert_eq!(mitm::tls::trust::spki_sha256(&ca), Some(spki));
}

fn assert_leaf_fields(ca: &CertificateAuthority, host: &str) {
    let root = parse(ca.cert_der());
    let der = ca.issue_leaf(host).unwrap();
    let leaf = parse(&der);
    assert_eq!(leaf.issuer().as_raw(), root.subject().as_raw());
    assert!(leaf.verify_signature(Some(root.public_key())).is_ok());
    assert_eq!(aki(&leaf), ski(&root), "AKI equals the root's SKI");
    assert!(aki(&leaf).is_some());

    let bc = leaf.basic_constraints().unwrap().unwrap();
    assert!(!bc.value.ca);
    let ku = leaf.key_usage().unwrap().unwrap();
    assert!(ku.value.digital_signature() && !ku.value.key_cert_sign());
    let eku = leaf.extended_key_usage().unwrap().unwrap();
    assert!(eku.value.server_auth);

    let validity = leaf.validity();
    let (start, end) = (
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    );
    assert!(
        end - start <= 199 * DAY,
        "span {} days",
        (end - start) / DAY
    );
    assert!(start <= now() - DAY);
    assert!(end >= now() + 180 * DAY);
    assert!(leaf.raw_serial().len() >= 8);
    assert_ne!(
        parse(&ca.issue_leaf(host).unwrap()).raw_serial(),
        leaf.raw_serial()
    );
}

#[test]
fn leaves_have_every_field() {
    let ca = CertificateAuthority::generate().unwrap();
    let long = format!("{}.{}.test", "x".repeat(40), "y".repeat(40));
    for host in ["example.com", "127.0.0.1", "[::1]", &long] {
        assert_leaf_fields(&ca, host);
    }
}

#[test]
fn subject_alt_names_are_typed() {
    let ca = CertificateAuthority::generate().unwrap();
    let leaf = ca.issue_leaf("127.0.0.1").unwrap();
    let cert = parse(&leaf);
    assert_eq!(sans(&cert), (vec![], vec![vec![127, 0, 0, 1]]));
    assert_eq!(common_names(&cert), ["127.0.0.1"]);

    for host in ["[::1]", "::1"] {
        let leaf = ca.issue_leaf(host).unwrap();
        let v6 = Ipv6Addr::LOCALHOST.octets().to_vec();
        assert_eq!(sans(&parse(&leaf)), (vec![], vec![v6]), "{host}");
    }

    for host in ["example.com", "Example.COM."] {
        let leaf = ca.issue_leaf(host).unwrap();
        let cert = parse(&leaf);
        assert_eq!(
            sans(&cert),
            (vec!["example.com".to_owned()], vec![]),
            "{host}"
        );
        assert_eq!(common_names(&cert), ["example.com"]);
    }
}

#[test]
fn common_name_only_up_to_64_characters() {
    let ca = CertificateAuthority::generate().unwrap();
    let host64 = format!("{}.test", "a".repeat(59));
    let host65 = format!("{}.test", "a".repeat(60));
    let leaf = ca.issue_leaf(&host64).unwrap();
    assert_eq!(common_names(&parse(&leaf)), [host64.as_str()]);
    let leaf = ca.issue_leaf(&host65).unwrap();
    let cert = parse(&leaf);
    assert!(common_names(&cert).is_empty());
    assert_eq!(sans(&cert).0, [host65]);
    let san = cert.subject_alternative_name().unwrap().unwrap();
    assert!(san.critical, "an empty subject makes the SAN critical");
}

#[test]
fn invalid_hosts_are_errors() {
    let ca = CertificateAuthority::generate().unwrap();
    let long = format!("{}.test", "a".repeat(300));
    for host in [
        "",
        "a b",
        "bell\x07",
        "x\r\n",
        "[nope]",
        "a..b",
        long.as_str(),
    ] {
        let is_invalid_host = |e: Error| matches!(e, Error::InvalidHost { .. });
        assert!(ca.issue_leaf(host).is_err_and(is_invalid_host), "{host:?}");
        assert!(
            ca.certified_key(host).is_err_and(is_invalid_host),
            "{host:?}"
        );
        assert!(
            ca.server_config(host).is_err_and(is_invalid_host),
            "{host:?}"
        );
    }
    assert_eq!(ca.cached_hosts(), 0);
}

#[test]
fn chain_is_leaf_then_root() {
    let ca = CertificateAuthority::generate().unwrap();
    let key = ca.certified_key("example.com").unwrap();
    assert_eq!(key.cert.len(), 2);
    assert_eq!(&key.cert[1], ca.cert_der());
    assert!(key.keys_match().is_ok());
    let config = ca.server_config("example.com").unwrap();
    assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
    assert!(Arc::ptr_eq(
        &config,
        &ca.server_config("EXAMPLE.com.").unwrap()
    ));
    assert_eq!(ca.cached_hosts(), 1);
}

// ---- cache ----

#[test]
fn concurrent_first_requests_make_one_leaf() {
    let ca = Arc::new(CertificateAuthority::generate().unwrap());
    let barrier = Arc::new(Barrier::new(16));
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let (ca, barrier) = (ca.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                ca.certified_key("same.example").unwrap()
            })
        })
        .collect();
    let keys: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(keys.iter().all(|key| Arc::ptr_eq(key, &keys[0])));
    assert_eq!(ca.cached_hosts(), 1);
}

#[test]
fn cache_is_bounded() {
    let ca = CertificateAuthority::generate().unwrap().with_cache_size(2);
    let first = ca.certified_key("a.example").unwrap();
    ca.certified_key("b.example").unwrap();
    ca.certified_key("c.example").unwrap();
    assert_eq!(ca.cached_hosts(), 2);
    let again = ca.certified_key("a.example").unwrap();
    assert!(
        !Arc::ptr_eq(&first, &again),
        "the least recently used host was evicted"
    );

    let tiny = CertificateAuthority::generate().unwrap().with_cache_size(0);
    tiny.certified_key("a.example").unwrap();
    tiny.certified_key("b.example").unwrap();
    assert_eq!(tiny.cached_hosts(), 1);
}

// ---- openssl ----

/// Runs openssl in `dir`, returning stdout and stderr; `None` when it is not installed
/// (see [`require_tool`]).
fn openssl(dir: &Path, args: &[&str]) -> Option<String> {
    let output = match Command::new("openssl").args(args).current_dir(dir).output() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            require_tool(false, "openssl", "apt-get install openssl");
            return None;
        }
        output => output.unwrap(),
    };
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "openssl {args:?}: {text}");
    Some(text)
}

/// Makes an RSA-2048 CA with openssl in `dir`: (cert, PKCS#8 key). `extra` adds
/// arguments to `openssl req`.
fn openssl_rsa_ca(dir: &Path, subject: &str, extra: &[&str]) -> Option<(PathBuf, PathBuf)> {
    let args = [
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "k.pem",
    ];
    let more = ["-out", "c.pem", "-subj", subject, "-days", "30"];
    openssl(dir, &[&args[..], &more, extra].concat())?;
    Some((dir.join("c.pem"), dir.join("k.pem")))
}

/// OpenSSL's strict mode also requires a keyUsage in the root, which `openssl req -x509`
/// does not add by default.
const ROOT_KEY_USAGE: [&str; 2] = ["-addext", "keyUsage=critical,keyCertSign,cRLSign"];

/// Checks with `openssl verify` (strict or not) that `ca` issues valid server certificates.
fn openssl_verifies(ca: &CertificateAuthority, dir: &Path, host: &str, strict: bool) {
    fs::write(dir.join("root.pem"), ca.cert_pem()).unwrap();
    fs::write(dir.join("leaf.der"), ca.issue_leaf(host).unwrap()).unwrap();
    let convert = [
        "x509", "-inform", "DER", "-in", "leaf.der", "-out", "leaf.pem",
    ];
    openssl(dir, &convert).unwrap();
    let mut verify = vec![
        "verify",
        "-CAfile",
        "root.pem",
        "-purpose",
        "sslserver",
        "leaf.pem",
    ];
    if strict {
        verify.insert(1, "-x509_strict");
    }
    let out = openssl(dir, &verify).unwrap();
    assert!(out.contains("leaf.pem: OK"), "{out}");
}

#[test]
fn openssl_accepts_leaves_of_a_generated_root() {
    let dir = tempfile::tempdir().unwrap();
    if openssl(dir.path(), &["version"]).is_none() {
        return;
    }
    let ca = CertificateAuthority::generate().unwrap();
    for host in ["localhost", "127.0.0.1", "[::1]"] {
        openssl_verifies(&ca, dir.path(), host, true);
    }
}

#[test]
fn openssl_rsa_root_is_usable() {
    let dir = tempfile::tempdir().unwrap();
    let Some((cert, key)) = openssl_rsa_ca(dir.path(), "/CN=test", &[]) else {
        return;
    };
    let ca = CertificateAuthority::load(&cert, &key).unwrap();
    let original = CertificateDer::from_pem_file(&cert).unwrap();
    assert_eq!(
        ca.cert_der(),
        &original,
        "the loaded root is kept byte for byte"
    );
    let fingerprint = openssl(
        dir.path(),
        &["x509", "-in", "c.pem", "-noout", "-fingerprint", "-sha256"],
    );
    assert!(fingerprint.unwrap().contains(&ca.fingerprint_sha256()));

    openssl_verifies(&ca, dir.path(), "localhost", false);
    assert_leaf_fields(&ca, "localhost");
    let leaf = ca.issue_leaf("localhost").unwrap();
    let sha256_with_rsa = "1.2.840.113549.1.1.11";
    assert_eq!(
        parse(&leaf).signature_algorithm.algorithm.to_id_string(),
        sha256_with_rsa
    );

    // The same key in PKCS#1 form.
    let pkcs1 = ["rsa", "-in", "k.pem", "-traditional", "-out", "k1.pem"];
    openssl(dir.path(), &pkcs1).unwrap();
    assert!(fs::read_to_string(dir.path().join("k1.pem"))
        .unwrap()
        .contains("BEGIN RSA PRIVATE KEY"));
    let ca = CertificateAuthority::load(&cert, dir.path().join("k1.pem")).unwrap();
    openssl_verifies(&ca, dir.path(), "localhost", false);

    // Saving a loaded CA writes PKCS#8, which loads back to the same root.
    let saved = dir.path().join("saved");
    fs::create_dir(&saved).unwrap();
    ca.save(saved.join("c.pem"), saved.join("k.pem")).unwrap();
    let reloaded = CertificateAuthority::load(saved.join("c.pem"), saved.join("k.pem")).unwrap();
    assert_eq!(reloaded.cert_der(), ca.cert_der());
}

#[test]
fn openssl_strict_accepts_leaves_of_an_rsa_root() {
    let dir = tempfile::tempdir().unwrap();
    let Some((cert, key)) = openssl_rsa_ca(dir.path(), "/CN=test", &ROOT_KEY_USAGE) else {
        return;
    };
    let ca = CertificateAuthority::load(&cert, &key).unwrap();
    openssl_verifies(&ca, dir.path(), "localhost", true);
    openssl_verifies(&ca, dir.path(), "127.0.0.1", true);
    let pkcs1 = ["rsa", "-in", "k.pem", "-traditional", "-out", "k1.pem"];
    openssl(dir.path(), &pkcs1).unwrap();
    let ca = CertificateAuthority::load(&cert, dir.path().join("k1.pem")).unwrap();
    openssl_verifies(&ca, dir.path(), "localhost", true);
}

#[test]
fn openssl_sec1_ec_root_is_usable() {
    let dir = tempfile::tempdir().unwrap();
    let genkey = [
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-out",
        "ec.key",
    ];
    if openssl(dir.path(), &genkey).is_none() {
        return;
    }
    let key_pem = fs::read_to_string(dir.path().join("ec.key")).unwrap();
    assert!(key_pem.contains("BEGIN EC PARAMETERS") && key_pem.contains("BEGIN EC PRIVATE KEY"));
    let req = [
        "req",
        "-x509",
        "-key",
        "ec.key",
        "-out",
        "ec.pem",
        "-subj",
        "/O=Example/CN=ec test",
    ];
    openssl(dir.path(), &[&req[..], &ROOT_KEY_USAGE].concat()).unwrap();
    let ca =
        CertificateAuthority::load(dir.path().join("ec.pem"), dir.path().join("ec.key")).unwrap();
    openssl_verifies(&ca, dir.path(), "localhost", true);
    assert_leaf_fields(&ca, "localhost");
}

#[test]
fn roots_whose_name_rcgen_cannot_copy_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for subject in ["/CN=x/OU=a/OU=b", "/CN=x+O=y"] {
        let Some((cert, key)) = openssl_rsa_ca(dir.path(), subject, &[]) else {
            return;
        };
        let err = CertificateAuthority::load(&cert, &key).unwrap_err();
        assert!(is_invalid(&err, &cert, "certificate"), "{subject}: {err}");
    }
}

// ---- authority key identifier ----

/// A key identifier as openssl prints it: uppercase hex pairs joined by colons.
fn colon_hex(id: &[u8]) -> String {
    let pairs: Vec<_> = id.iter().map(|b| format!("{b:02X}")).collect();
    pairs.join(":")
}

/// The key identifier of the extension `ext` (`subjectKeyIdentifier` or
/// `authorityKeyIdentifier`) of the PEM certificate `file` in `dir`, as openssl reads it.
fn openssl_key_id(dir: &Path, file: &str, ext: &str) -> String {
    let text = openssl(dir, &["x509", "-in", file, "-noout", "-ext", ext]).unwrap();
    // The extension's name on one line, its value on the next (OpenSSL 1.1 put
    // `keyid:` before an authority key identifier).
    let value = text.lines().nth(1).unwrap_or_default().trim();
    value.trim_start_matches("keyid:").to_owned()
}

/// The identifier rcgen derives from a public key when it is told nothing (RFC 7093's
/// SHA-256 method: the hash of the SubjectPublicKeyInfo, cut to 20 bytes). A leaf whose
/// AKI were made from the CA's key instead of copied from its SKI would carry this.
fn derived_key_id(cert: &X509Certificate<'_>) -> Vec<u8> {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.public_key().raw);
    digest.as_ref()[..20].to_vec()
}

/// Checks that every leaf `ca` makes for `host` (issued, and the one its TLS config
/// presents) names the root's own subject key identifier, `root_ski`, as its authority
/// key identifier, as x509-parser and openssl both read them.
fn leaves_name_the_root_ski(ca: &CertificateAuthority, dir: &Path, host: &str, root_ski: &[u8]) {
    let presented = ca.certified_key(host).unwrap().cert[0].clone();
    for (name, leaf) in [
        ("issued", ca.issue_leaf(host).unwrap()),
        ("presented", presented),
    ] {
        assert_eq!(aki(&parse(&leaf)).as_deref(), Some(root_ski), "{name} leaf");
        fs::write(dir.join("leaf.der"), &leaf).unwrap();
        let convert = [
            "x509", "-inform", "DER", "-in", "leaf.der", "-out", "leaf.pem",
        ];
        openssl(dir, &convert).unwrap();
        let leaf_aki = openssl_key_id(dir, "leaf.pem", "authorityKeyIdentifier");
        assert_eq!(
            leaf_aki,
            colon_hex(root_ski),
            "{name} leaf, as openssl reads it"
        );
    }
}

#[test]
fn leaf_aki_is_the_ski_of_an_openssl_req_ca() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    // An RSA root with openssl's own SKI (the SHA-1 of the key, from its default
    // config), and an ECDSA root whose SKI the user chose.
    let rsa = ["-newkey", "rsa:2048", "-nodes"];
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let chosen = ["-addext", "subjectKeyIdentifier=0123456789ABCDEF"];
    let no_aki = ["-addext", "authorityKeyIdentifier=none"];
    let cases = [
        (&[&rsa[..], &ROOT_KEY_USAGE].concat(), None),
        (
            &[&ec[..], &ROOT_KEY_USAGE, &chosen, &no_aki].concat(),
            Some("01:23:45:67:89:AB:CD:EF"),
        ),
    ];
    for (key_args, chosen_ski) in cases {
        let req = [
            "req", "-x509", "-keyout", "k.pem", "-out", "c.pem", "-days", "30",
        ];
        let subject = ["-subj", "/O=Someone else/CN=their CA"];
        if openssl(dir, &[&req[..], &subject, key_args].concat()).is_none() {
            return;
        }
        let root_ski = openssl_key_id(dir, "c.pem", "subjectKeyIdentifier");
        if let Some(chosen) = chosen_ski {
            assert_eq!(root_ski, chosen);
        }
        let ca = CertificateAuthority::load(dir.join("c.pem"), dir.join("k.pem")).unwrap();
        let root = parse(ca.cert_der());
        let ski = ski(&root).unwrap();
        assert_eq!(colon_hex(&ski), root_ski, "x509-parser reads openssl's SKI");
        // Otherwise this test could not tell an SKI copied from one made from the key.
        assert_ne!(
            ski,
            derived_key_id(&root),
            "{root_ski}: not rcgen's own SKI"
        );

        leaves_name_the_root_ski(&ca, dir, "localhost", &ski);
        // Strict verification also checks that a leaf's AKI names its issuer.
        openssl_verifies(&ca, dir, "localhost", true);
        openssl_verifies(&ca, dir, "127.0.0.1", true);
    }
}

#[test]
fn leaf_aki_is_the_ski_of_a_ca_loaded_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let made = CertificateAuthority::init(dir.path()).unwrap();
    let (cert, key) = (dir.path().join(CA_CERT_FILE), dir.path().join(CA_KEY_FILE));
    let on_disk = CertificateDer::from_pem_file(&cert).unwrap();
    let ski = ski(&parse(&on_disk)).expect("the root has an SKI");
    for (how, ca) in [
        ("made", made),
        (
            "init again",
            CertificateAuthority::init(dir.path()).unwrap(),
        ),
        ("load", CertificateAuthority::load(&cert, &key).unwrap()),
    ] {
        assert_eq!(ca.cert_der(), &on_disk, "{how}");
        for host in ["example.com", "127.0.0.1"] {
            let issued = ca.issue_leaf(host).unwrap();
            let presented = ca.certified_key(host).unwrap().cert[0].clone();
            for leaf in [issued, presented] {
                assert_eq!(aki(&parse(&leaf)).as_ref(), Some(&ski), "{how}: {host}");
            }
        }
    }
}

// ---- TLS handshakes ----

async fn handshake(ca: &CertificateAuthority, host: &str, name: ServerName<'static>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(host).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.unwrap();
        tls.write_all(b"hello").await.unwrap();
        tls.shutdown().await.unwrap();
    });

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der().clone()).unwrap();
    let provider = mitm::tls::crypto_provider();
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut received = Vec::new();
    tls.read_to_end(&mut received).await.unwrap();
    assert_eq!(received, b"hello");
    server.await.unwrap();
}

async fn handshakes(ca: &CertificateAuthority) {
    let localhost = ServerName::try_from("localhost").unwrap();
    handshake(ca, "localhost", localhost).await;
    let ip = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
    handshake(ca, "127.0.0.1", ip).await;
}

#[tokio::test]
async fn rustls_client_trusting_only_the_root_connects() {
    handshakes(&CertificateAuthority::generate().unwrap()).await;
}

#[tokio::test]
async fn rustls_client_connects_with_an_openssl_rsa_root() {
    let dir = tempfile::tempdir().unwrap();
    let Some((cert, key)) = openssl_rsa_ca(dir.path(), "/CN=test", &[]) else {
        return;
    };
    handshakes(&CertificateAuthority::load(cert, key).unwrap()).await;
}

// ---- Python ----

const PYTHON_CLIENT: &str = r#"
import socket, ssl, sys
cafile, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
ctx = ssl.create_default_context(cafile=cafile)
ctx.verify_flags |= ssl.VERIFY_X509_STRICT
with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
    with ctx.wrap_socket(sock, server_hostname=host) as tls:
        print(tls.recv(5).decode())
"#;

/// Serves one TLS connection with `ca`'s config for `host`, sending "hello".
fn serve_once(ca: &CertificateAuthority, host: &str) -> (SocketAddr, thread::JoinHandle<()>) {
    let config = ca.server_config(host).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let conn = rustls::ServerConnection::new(config).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        // A client that rejects the certificate makes these fail; the client reports it.
        let _ = tls.write_all(b"hello").and_then(|()| tls.flush());
        tls.conn.send_close_notify();
        let _ = tls.flush();
        let _ = tls.read(&mut [0; 16]);
    });
    (addr, server)
}

#[test]
fn python_strict_verification_accepts_the_leaves() {
    if !require_tool(have("python3"), "python3", "apt-get install python3") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::generate().unwrap();
    let root = dir.path().join("root.pem");
    fs::write(&root, ca.cert_pem()).unwrap();
    fs::write(
        dir.path().join("leaf.der"),
        ca.issue_leaf("localhost").unwrap(),
    )
    .unwrap();
    for host in ["localhost", "127.0.0.1"] {
        let (addr, server) = serve_once(&ca, host);
        let port = addr.port().to_string();
        let args = ["-c", PYTHON_CLIENT, root.to_str().unwrap(), host, &port];
        let output = Command::new("python3").args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "python3 for {host}: {stderr}");
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "hello");
        server.join().unwrap();
    }
}
