//! Parser micro-benchmarks: request and response heads, chunked bodies and the
//! ClientHello peek, through the hidden `mitm::internals` entry points.
//!
//! `cargo bench --bench parse`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mitm::internals::{decode_chunked, parse_request_head, parse_response_head, peek_client_hello};

/// A browser's navigation request: 12 header fields, about 500 bytes.
const BROWSER_GET: &[u8] = b"GET /search?q=rust+mitm+proxy&ia=web HTTP/1.1\r\n\
Host: www.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Referer: https://www.example.com/\r\n\
Connection: keep-alive\r\n\
Cookie: session=4f1c2a9e8b7d6c5e; theme=dark\r\n\
Upgrade-Insecure-Requests: 1\r\n\
Sec-Fetch-Dest: document\r\n\
Sec-Fetch-Mode: navigate\r\n\
Sec-Fetch-Site: same-origin\r\n\
\r\n";

/// What `curl http://example.com/` sends.
const CURL_GET: &[u8] = b"GET / HTTP/1.1\r\n\
Host: example.com\r\n\
User-Agent: curl/8.5.0\r\n\
Accept: */*\r\n\
\r\n";

/// A typical origin response head: 11 header fields, about 400 bytes.
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\n\
Date: Tue, 15 Oct 2024 08:12:31 GMT\r\n\
Content-Type: text/html; charset=utf-8\r\n\
Content-Length: 48213\r\n\
Connection: keep-alive\r\n\
Cache-Control: private, max-age=0\r\n\
Content-Encoding: gzip\r\n\
Vary: Accept-Encoding\r\n\
Server: nginx\r\n\
Set-Cookie: session=4f1c2a9e8b7d6c5e; Path=/; Secure; HttpOnly; SameSite=Lax\r\n\
Strict-Transport-Security: max-age=31536000; includeSubDomains\r\n\
X-Content-Type-Options: nosniff\r\n\
\r\n";

fn heads(c: &mut Criterion) {
    let mut group = c.benchmark_group("head");
    for (name, head, parse) in [
        (
            "request/browser",
            BROWSER_GET,
            parse_request_head as fn(&[u8]) -> bool,
        ),
        ("request/curl", CURL_GET, parse_request_head),
        ("response/typical", RESPONSE, parse_response_head),
    ] {
        assert!(parse(head), "{name} must parse");
        group.throughput(Throughput::Bytes(head.len() as u64));
        group.bench_function(name, |b| b.iter(|| parse(black_box(head))));
    }
    group.finish();
}

/// `body_len` bytes of body as chunks of `chunk` bytes, then the last chunk.
fn chunked(body_len: usize, chunk: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(body_len + body_len / chunk * 10 + 8);
    let mut left = body_len;
    let mut byte = 0u8;
    while left > 0 {
        let n = left.min(chunk);
        out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        out.extend((0..n).map(|_| {
            byte = byte.wrapping_add(1);
            byte
        }));
        out.extend_from_slice(b"\r\n");
        left -= n;
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn chunked_body(c: &mut Criterion) {
    const BODY: usize = 64 * 1024;
    let data = chunked(BODY, 1024);
    assert_eq!(
        decode_chunked(&data, data.len()).map(|b| b.len()),
        Some(BODY)
    );
    let mut group = c.benchmark_group("chunked/64KiB_in_1KiB_chunks");
    group.throughput(Throughput::Bytes(BODY as u64));
    // All the bytes at once, and as 16 KiB socket reads (chunks split across reads).
    for (name, step) in [("fed_whole", data.len()), ("fed_16KiB_reads", 16 * 1024)] {
        group.bench_function(name, |b| {
            b.iter(|| decode_chunked(black_box(&data), step));
        });
    }
    group.finish();
}

/// The exact first bytes a rustls client (ring provider, TLS 1.2 and 1.3, ALPN h2 and
/// http/1.1) writes to a server: no socket needed, the connection's output is the same.
fn rustls_client_hello() -> Vec<u8> {
    use mitm::rustls::{self, pki_types::ServerName, ClientConfig, ClientConnection};
    let provider = mitm::tls::crypto_provider();
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let name = ServerName::try_from("www.example.com").expect("server name");
    let mut conn = ClientConnection::new(Arc::new(config), name).expect("client");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("write to a Vec");
    }
    out
}

/// Appends `data` with a big-endian length prefix of `width` bytes.
fn put_vec(out: &mut Vec<u8>, width: usize, data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes()[4 - width..]);
    out.extend_from_slice(data);
}

/// An extension: type, then length-prefixed data.
fn put_ext(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
    out.extend_from_slice(&kind.to_be_bytes());
    put_vec(out, 2, data);
}

/// A ClientHello shaped like a current Chrome's: GREASE values, 16 cipher suites,
/// 16 extensions, an X25519MLKEM768 key share (1216 bytes) and an ECH GREASE
/// extension; about 1.8 KB in one record.
fn chrome_like_client_hello() -> Vec<u8> {
    let mut ext = Vec::new();
    put_ext(&mut ext, 0x0a0a, &[]); // GREASE
                                    // server_name
    let host = b"www.example.com";
    let mut entry = vec![0u8];
    put_vec(&mut entry, 2, host);
    let mut list = Vec::new();
    put_vec(&mut list, 2, &entry);
    put_ext(&mut ext, 0x0000, &list);
    put_ext(&mut ext, 0x0017, &[]); // extended_master_secret
    put_ext(&mut ext, 0xff01, &[0]); // renegotiation_info
                                     // supported_groups: GREASE, X25519MLKEM768, x25519, secp256r1, secp384r1
    let mut groups = Vec::new();
    put_vec(
        &mut groups,
        2,
        &[0x2a, 0x2a, 0x11, 0xec, 0, 0x1d, 0, 0x17, 0, 0x18],
    );
    put_ext(&mut ext, 0x000a, &groups);
    put_ext(&mut ext, 0x000b, &[1, 0]); // ec_point_formats
    put_ext(&mut ext, 0x0023, &[]); // session_ticket
    let mut alpn = Vec::new();
    for p in [&b"h2"[..], b"http/1.1"] {
        put_vec(&mut alpn, 1, p);
    }
    let mut alpn_list = Vec::new();
    put_vec(&mut alpn_list, 2, &alpn);
    put_ext(&mut ext, 0x0010, &alpn_list);
    put_ext(&mut ext, 0x0005, &[1, 0, 0, 0, 0]); // status_request
    let mut sigs = Vec::new();
    let algs = [
        0x0403u16, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601,
    ];
    put_vec(
        &mut sigs,
        2,
        &algs
            .iter()
            .flat_map(|a| a.to_be_bytes())
            .collect::<Vec<_>>(),
    );
    put_ext(&mut ext, 0x000d, &sigs);
    put_ext(&mut ext, 0x0012, &[]); // signed_certificate_timestamp
                                    // key_share: GREASE (1 byte), X25519MLKEM768 (1216 bytes), x25519 (32 bytes)
    let mut shares = Vec::new();
    shares.extend_from_slice(&[0x2a, 0x2a]);
    put_vec(&mut shares, 2, &[0]);
    shares.extend_from_slice(&[0x11, 0xec]);
    put_vec(&mut shares, 2, &[0x5a; 1216]);
    shares.extend_from_slice(&[0x00, 0x1d]);
    put_vec(&mut shares, 2, &[0xa5; 32]);
    let mut key_share = Vec::new();
    put_vec(&mut key_share, 2, &shares);
    put_ext(&mut ext, 0x0033, &key_share);
    put_ext(&mut ext, 0x002d, &[1, 1]); // psk_key_exchange_modes
    put_ext(&mut ext, 0x002b, &[6, 0x3a, 0x3a, 3, 4, 3, 3]); // supported_versions
    put_ext(&mut ext, 0x001b, &[2, 0, 2]); // compress_certificate: brotli
    put_ext(&mut ext, 0x44cd, &[0, 3, 2, b'h', b'2']); // application_settings
                                                       // encrypted_client_hello GREASE: outer, HPKE suite, config id, enc, payload
    let mut ech = vec![0, 0, 1, 0, 1, 0x42];
    put_vec(&mut ech, 2, &[0x33; 32]);
    put_vec(&mut ech, 2, &[0x77; 208]);
    put_ext(&mut ext, 0xfe0d, &ech);
    put_ext(&mut ext, 0x1a1a, &[0]);

    let mut body = vec![3, 3];
    body.extend_from_slice(&[0x42; 32]); // random
    put_vec(&mut body, 1, &[0x24; 32]); // session id
    let suites = [
        0x0a0au16, 0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013,
        0xc014, 0x009c, 0x009d, 0x002f, 0x0035,
    ];
    put_vec(
        &mut body,
        2,
        &suites
            .iter()
            .flat_map(|s| s.to_be_bytes())
            .collect::<Vec<_>>(),
    );
    put_vec(&mut body, 1, &[0]); // null compression
    put_vec(&mut body, 2, &ext);

    let mut message = vec![1u8]; // client_hello
    put_vec(&mut message, 3, &body);
    let mut record = vec![0x16, 3, 1];
    put_vec(&mut record, 2, &message);
    record
}

fn client_hello(c: &mut Criterion) {
    let mut group = c.benchmark_group("client_hello_peek");
    for (name, hello) in [
        ("rustls", rustls_client_hello()),
        ("chrome_like", chrome_like_client_hello()),
    ] {
        assert_eq!(
            peek_client_hello(&hello),
            Some(Some("www.example.com".to_owned())),
            "{name} ClientHello must be found"
        );
        group.throughput(Throughput::Bytes(hello.len() as u64));
        group.bench_function(format!("{name}/{}B", hello.len()), |b| {
            b.iter(|| peek_client_hello(black_box(&hello)));
        });
    }
    group.finish();
}

criterion_group!(benches, heads, chunked_body, client_hello);
criterion_main!(benches);
