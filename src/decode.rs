//! Decoding (and re-encoding) HTTP message bodies by their `Content-Encoding`.
//!
//! A proxy sees bodies as the server compressed them. [`decode`] undoes the codings
//! named in a `Content-Encoding` header value (`gzip`, `x-gzip`, `deflate`, `br`,
//! `zstd`, `identity`, or a comma-separated list of them applied in order) so that
//! middleware can inspect the plain bytes, and [`encode`] compresses a changed body
//! again. Decoding streams into a buffer that may never grow past a caller-chosen
//! limit, so a small compressed bomb cannot exhaust memory. Every codec is pure Rust.

use std::borrow::Cow;
use std::io::{self, Read, Write};

use flate2::read::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};
use flate2::write::{GzEncoder, ZlibEncoder};
use flate2::Compression;
use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
use ruzstd::decoding::{FrameDecoder, StreamingDecoder, DEFAULT_MAX_WINDOW_SIZE};
use ruzstd::encoding::CompressionLevel;

/// Why a body could not be decoded (or encoded).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// An encoding this crate does not know, as written in the header.
    #[error("unsupported content encoding {0:?}")]
    Unsupported(String),
    /// The bytes are not valid for the encoding.
    #[error("invalid {encoding} data")]
    Invalid {
        /// The coding that failed, lower-cased as named in the header (`gzip`, `br`, ...).
        encoding: String,
        /// What the decoder reported.
        #[source]
        source: io::Error,
    },
    /// Decoded output would exceed the limit (a guard against decompression bombs).
    #[error("decoded body exceeds {limit} bytes")]
    TooLarge {
        /// The limit that was passed to [`decode`].
        limit: usize,
    },
}

/// One content coding this module understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Identity,
    Gzip,
    Deflate,
    Brotli,
    Zstd,
}

impl Coding {
    /// Parses one coding name, case-insensitively.
    fn parse(name: &str) -> Result<Self, DecodeError> {
        const NAMES: [(&str, Coding); 6] = [
            ("identity", Coding::Identity),
            ("gzip", Coding::Gzip),
            ("x-gzip", Coding::Gzip),
            ("deflate", Coding::Deflate),
            ("br", Coding::Brotli),
            ("zstd", Coding::Zstd),
        ];
        NAMES
            .iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(name))
            .map(|&(_, coding)| coding)
            .ok_or_else(|| DecodeError::Unsupported(name.to_owned()))
    }
}

/// The zstd window always accepted, whatever the limit: 8 MiB, the most RFC 9659
/// lets HTTP senders use and what browsers accept.
const ZSTD_MIN_WINDOW: u64 = 8 << 20;

/// Decodes `body` as encoded by `content_encoding` (a header value, possibly a list),
/// producing at most `limit` bytes.
///
/// The header lists codings in the order they were applied (`gzip, br` means gzip
/// first, then brotli), so they are undone from last to first. Names are
/// case-insensitive, whitespace around commas and empty list items are ignored, and
/// an empty header means `identity`. `deflate` accepts both the zlib-wrapped stream
/// RFC 9110 specifies and the raw deflate some servers send; `gzip` and `zstd` accept
/// concatenated members or frames. An empty body decodes to an empty body whatever
/// the coding, as for responses to `HEAD`. A zstd frame may use a window (allocated
/// up front) of 8 MiB, the most RFC 9659 allows, or of up to `limit` if larger.
///
/// Each coding is decoded in chunks into a buffer that stops one byte past `limit`,
/// so no stage (the result, or the input of the next coding) ever decodes more than
/// `limit + 1` bytes, however small and however compressed the body.
///
/// # Errors
///
/// [`DecodeError::Unsupported`] if any coding is unknown (checked before decoding
/// anything), [`DecodeError::Invalid`] naming the first coding whose data is corrupt
/// or truncated, and [`DecodeError::TooLarge`] if the output of any stage, and so
/// also `identity` content, would be longer than `limit` (or a zstd window larger).
pub fn decode(content_encoding: &str, body: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let codings = content_encoding
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| Ok((Coding::parse(name)?, name.to_ascii_lowercase())))
        .collect::<Result<Vec<_>, DecodeError>>()?;
    let mut data = Cow::Borrowed(body);
    for (coding, name) in codings.iter().rev() {
        if *coding != Coding::Identity {
            data = Cow::Owned(decode_one(*coding, name, &data, limit)?);
        }
    }
    if data.len() > limit {
        return Err(DecodeError::TooLarge { limit });
    }
    Ok(data.into_owned())
}

/// Undoes one coding of `data`, naming it `name` in errors.
fn decode_one(
    coding: Coding,
    name: &str,
    data: &[u8],
    limit: usize,
) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    if data.is_empty() {
        return Ok(out);
    }
    match coding {
        Coding::Identity => out.extend_from_slice(data),
        Coding::Gzip => read_limited(MultiGzDecoder::new(data), &mut out, limit, name)?,
        Coding::Deflate if is_zlib_header(data) => {
            read_limited(ZlibDecoder::new(data), &mut out, limit, name)?;
        }
        Coding::Deflate => read_limited(DeflateDecoder::new(data), &mut out, limit, name)?,
        Coding::Brotli => {
            let decoder = brotli_decompressor::Decompressor::new(data, 16 * 1024);
            read_limited(decoder, &mut out, limit, name)?;
        }
        Coding::Zstd => decode_zstd(data, &mut out, limit, name)?,
    }
    Ok(out)
}

/// Whether `data` starts with a valid zlib header (RFC 1950): method 8 (deflate),
/// a window of at most 32 KiB, and a check value making the first two bytes a
/// multiple of 31. Raw deflate data almost never passes this test.
fn is_zlib_header(data: &[u8]) -> bool {
    match data {
        [cmf, flg, ..] => {
            cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0
        }
        _ => false,
    }
}

/// Decodes every zstd frame in `data` into `out`, skipping skippable frames and
/// checking content checksums when the frames carry them.
fn decode_zstd(
    mut data: &[u8],
    out: &mut Vec<u8>,
    limit: usize,
    name: &str,
) -> Result<(), DecodeError> {
    let invalid = |error: io::Error| DecodeError::Invalid {
        encoding: name.to_owned(),
        source: error,
    };
    // The window is allocated up front: allow what the limit allows, at least the
    // 8 MiB of RFC 9659, at most ruzstd's own default of 128 MiB.
    let limit64 = u64::try_from(limit).unwrap_or(u64::MAX);
    let max_window = limit64.clamp(ZSTD_MIN_WINDOW, DEFAULT_MAX_WINDOW_SIZE);
    while !data.is_empty() {
        let mut decoder = FrameDecoder::new();
        decoder.set_max_window_size(max_window);
        match StreamingDecoder::new_with_decoder(&mut data, decoder) {
            Ok(mut frame) => {
                read_limited(&mut frame, out, limit, name)?;
                let decoder = frame.into_frame_decoder();
                let expected = decoder.get_checksum_from_data();
                if expected.is_some() && expected != decoder.get_calculated_checksum() {
                    return Err(invalid(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "checksum mismatch",
                    )));
                }
            }
            Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                length,
                ..
            })) => {
                let length = usize::try_from(length).unwrap_or(usize::MAX);
                data = data.get(length..).ok_or_else(|| {
                    invalid(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "truncated skippable frame",
                    ))
                })?;
            }
            // Too big a window for the limit: as good as too big an output.
            Err(FrameDecoderError::WindowSizeTooBig { requested, .. }) if requested > limit64 => {
                return Err(DecodeError::TooLarge { limit });
            }
            Err(error) => return Err(invalid(io::Error::new(io::ErrorKind::InvalidData, error))),
        }
    }
    Ok(())
}

/// Appends what `reader` decodes to `out`, reading in chunks and stopping as soon as
/// `out` would pass `limit` bytes.
fn read_limited(
    mut reader: impl Read,
    out: &mut Vec<u8>,
    limit: usize,
    name: &str,
) -> Result<(), DecodeError> {
    let room = u64::try_from(limit.saturating_sub(out.len())).unwrap_or(u64::MAX);
    reader
        .by_ref()
        .take(room.saturating_add(1))
        .read_to_end(out)
        .map_err(|source| DecodeError::Invalid {
            encoding: name.to_owned(),
            source,
        })?;
    if out.len() > limit {
        return Err(DecodeError::TooLarge { limit });
    }
    Ok(())
}

/// Encodes `body` with one coding (`gzip`, `x-gzip`, `deflate`, `br`, `zstd` or
/// `identity`, case-insensitive), for tests and for hooks that re-encode after
/// changing a body.
///
/// `deflate` writes the zlib-wrapped stream RFC 9110 specifies, and `zstd` uses the
/// fastest level of the pure-Rust `ruzstd` encoder. `br` output is valid brotli made
/// of uncompressed meta-blocks: every decoder accepts it, but it is slightly *larger*
/// than `body`, since no pure-Rust brotli compressor is worth its build cost here.
///
/// # Errors
///
/// [`DecodeError::Unsupported`] for any other name, including a list such as
/// `gzip, br`: encode one coding at a time.
pub fn encode(coding: &str, body: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let name = coding.trim();
    let invalid = |source| DecodeError::Invalid {
        encoding: name.to_ascii_lowercase(),
        source,
    };
    match Coding::parse(name)? {
        Coding::Identity => Ok(body.to_vec()),
        Coding::Gzip => {
            let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
            encoder
                .write_all(body)
                .and_then(|()| encoder.finish())
                .map_err(invalid)
        }
        Coding::Deflate => {
            let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
            encoder
                .write_all(body)
                .and_then(|()| encoder.finish())
                .map_err(invalid)
        }
        Coding::Brotli => Ok(encode_brotli_stored(body)),
        Coding::Zstd => Ok(ruzstd::encoding::compress_to_vec(
            body,
            CompressionLevel::Fastest,
        )),
    }
}

/// Wraps `body` in a brotli stream (RFC 7932) of uncompressed meta-blocks of up to
/// 64 KiB each, closed by an empty last meta-block.
fn encode_brotli_stored(body: &[u8]) -> Vec<u8> {
    const BLOCK: usize = 1 << 16;
    let mut bits = BitWriter {
        out: Vec::with_capacity(body.len() + body.len() / BLOCK * 3 + 4),
        acc: 0,
        used: 0,
    };
    bits.put(0, 1); // WBITS = 16, the smallest window; nothing refers back anyway.
    for block in body.chunks(BLOCK) {
        bits.put(0, 1); // ISLAST = 0
        bits.put(0, 2); // MNIBBLES = 4
        bits.put(block.len() as u64 - 1, 16); // MLEN - 1
        bits.put(1, 1); // ISUNCOMPRESSED = 1
        bits.flush(); // Zero padding to a byte boundary, then the raw bytes.
        bits.out.extend_from_slice(block);
    }
    bits.put(0b11, 2); // ISLAST = 1, ISLASTEMPTY = 1
    bits.flush();
    bits.out
}

/// Writes bits least significant first, as brotli (like deflate) packs them.
struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    used: u32,
}

impl BitWriter {
    /// Appends the low `count` (at most 32) bits of `value`.
    fn put(&mut self, value: u64, count: u32) {
        self.acc |= (value & ((1 << count) - 1)) << self.used;
        self.used += count;
        while self.used >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.used -= 8;
        }
    }

    /// Pads with zero bits to a byte boundary.
    fn flush(&mut self) {
        if self.used > 0 {
            self.out.push(self.acc as u8);
            self.acc = 0;
            self.used = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    const MIB: usize = 1 << 20;

    /// `fx.txt` below, compressed by the `brotli` 1.0.9 command-line tool (`-q 11`).
    const BROTLI_FIXTURE: [u8; 56] = [
        0xa1, 0x48, 0x02, 0x00, 0xe3, 0x48, 0xb0, 0x71, 0x96, 0x8b, 0x79, 0x20, 0xae, 0x4d, 0x07,
        0x87, 0xa8, 0x7b, 0x3d, 0xb0, 0x12, 0x64, 0xec, 0xad, 0x42, 0xda, 0x60, 0x03, 0x0e, 0xd8,
        0x0b, 0x16, 0x9a, 0x71, 0x93, 0x61, 0x03, 0x4e, 0xb8, 0x20, 0x7c, 0x0f, 0xad, 0x44, 0xb5,
        0x2f, 0x2a, 0xbc, 0x85, 0x07, 0x0e, 0x28, 0xa7, 0x7a, 0xf6, 0x00,
    ];
    /// The same text compressed by the `zstd` command-line tool (`-19`, with a checksum).
    const ZSTD_FIXTURE: [u8; 63] = [
        0x28, 0xb5, 0x2f, 0xfd, 0x24, 0x4a, 0x95, 0x01, 0x00, 0xa4, 0x02, 0x48, 0x65, 0x6c, 0x6c,
        0x6f, 0x20, 0x66, 0x72, 0x6f, 0x6d, 0x20, 0x74, 0x68, 0x65, 0x20, 0x63, 0x6f, 0x6d, 0x70,
        0x72, 0x65, 0x73, 0x73, 0x65, 0x64, 0x20, 0x73, 0x69, 0x64, 0x65, 0x21, 0x20, 0x30, 0x31,
        0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x01, 0x00, 0x18, 0xb8, 0x7a, 0x02, 0x64,
        0x48, 0xc9, 0xf9,
    ];
    const FIXTURE_TEXT: &[u8] =
        b"Hello from the compressed side! Hello from the compressed side! 0123456789";
    /// 10 MiB of zeros, compressed by `brotli -q 11`.
    const BROTLI_BOMB: [u8; 14] = [
        0x9f, 0xff, 0xff, 0x9f, 0xf8, 0x27, 0x00, 0xe2, 0xb1, 0x40, 0x20, 0xf7, 0xfe, 0x13,
    ];

    /// A body that compresses somewhat but not trivially, longer than one brotli
    /// stored meta-block.
    fn sample(len: usize) -> Vec<u8> {
        let mut state = 0x2545_f491_u32;
        (0..len)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                if i % 3 == 0 {
                    b"mitm proxy "[i % 11]
                } else {
                    (state % 16) as u8 + b'a'
                }
            })
            .collect()
    }

    fn raw_deflate(body: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(body).unwrap();
        encoder.finish().unwrap()
    }

    fn assert_invalid(result: Result<Vec<u8>, DecodeError>, coding: &str) {
        match result {
            Err(DecodeError::Invalid { encoding, .. }) => assert_eq!(encoding, coding),
            other => panic!("expected invalid {coding} data, got {other:?}"),
        }
    }

    fn assert_too_large(result: Result<Vec<u8>, DecodeError>, expected: usize) {
        match result {
            Err(DecodeError::TooLarge { limit }) => assert_eq!(limit, expected),
            other => panic!("expected TooLarge, got {:?}", other.map(|body| body.len())),
        }
    }

    /// Pipes `input` through a command-line tool, or returns `None` (saying why) if
    /// the tool is not installed.
    fn run_tool(program: &str, args: &[&str], input: &[u8]) -> Option<Vec<u8>> {
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn();
        let Ok(mut child) = child else {
            // Under the switch `.ci/run` sets, a missing tool fails the test.
            let required =
                std::env::var("MITM_REQUIRE_TOOLS").is_ok_and(|v| !v.is_empty() && v != "0");
            assert!(
                !required,
                "`{program}` is not installed (apt-get install {program}), and MITM_REQUIRE_TOOLS is set"
            );
            eprintln!("skipped: `{program}` is not installed (apt-get install {program})");
            return None;
        };
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let output = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(output.status.success(), "`{program}` failed");
        Some(output.stdout)
    }

    #[test]
    fn every_coding_round_trips_through_encode_and_decode() {
        for body in [Vec::new(), b"x".to_vec(), sample(200_000)] {
            for coding in ["gzip", "x-gzip", "deflate", "br", "zstd", "identity"] {
                let encoded = encode(coding, &body).unwrap();
                let decoded = decode(coding, &encoded, MIB).unwrap();
                assert_eq!(decoded, body, "{coding}, {} bytes", body.len());
            }
        }
    }

    #[test]
    fn gzip_deflate_and_zstd_encodings_compress() {
        let body = sample(100_000);
        for coding in ["gzip", "deflate", "zstd"] {
            assert!(
                encode(coding, &body).unwrap().len() < body.len() * 3 / 4,
                "{coding}"
            );
        }
    }

    #[test]
    fn brotli_and_zstd_from_reference_tools_decode() {
        assert_eq!(decode("br", &BROTLI_FIXTURE, MIB).unwrap(), FIXTURE_TEXT);
        assert_eq!(decode("zstd", &ZSTD_FIXTURE, MIB).unwrap(), FIXTURE_TEXT);
    }

    #[test]
    fn reference_tools_decode_what_encode_writes() {
        let body = sample(150_000);
        if let Some(plain) = run_tool("brotli", &["-d", "-c"], &encode("br", &body).unwrap()) {
            assert_eq!(plain, body);
        }
        if let Some(plain) = run_tool("zstd", &["-d", "-q", "-c"], &encode("zstd", &body).unwrap())
        {
            assert_eq!(plain, body);
        }
    }

    #[test]
    fn listed_codings_are_undone_last_first() {
        let body = sample(10_000);
        let gzip_then_br = encode("br", &encode("gzip", &body).unwrap()).unwrap();
        assert_eq!(decode("gzip, br", &gzip_then_br, MIB).unwrap(), body);
        let deflate_then_gzip = encode("gzip", &encode("deflate", &body).unwrap()).unwrap();
        assert_eq!(
            decode("deflate,gzip", &deflate_then_gzip, MIB).unwrap(),
            body
        );
        assert_invalid(decode("gzip, deflate", &deflate_then_gzip, MIB), "deflate");
    }

    #[test]
    fn deflate_accepts_raw_deflate_as_well_as_zlib() {
        let body = sample(5_000);
        assert_eq!(decode("deflate", &raw_deflate(&body), MIB).unwrap(), body);
        assert_eq!(decode("deflate", &raw_deflate(b"hi"), MIB).unwrap(), b"hi");
        assert_eq!(
            decode("deflate", &encode("deflate", &body).unwrap(), MIB).unwrap(),
            body
        );
    }

    #[test]
    fn coding_names_are_case_insensitive_and_trimmed() {
        let body = sample(1_000);
        let gzipped = encode("GZip", &body).unwrap();
        for header in ["GZIP", " X-Gzip ", "Identity , gzip,"] {
            assert_eq!(decode(header, &gzipped, MIB).unwrap(), body, "{header:?}");
        }
        assert_eq!(decode("BR", &BROTLI_FIXTURE, MIB).unwrap(), FIXTURE_TEXT);
        assert_eq!(decode("ZSTD", &ZSTD_FIXTURE, MIB).unwrap(), FIXTURE_TEXT);
    }

    #[test]
    fn identity_and_empty_header_return_the_body_unchanged() {
        let body = b"\x1f\x8b not really gzip";
        for header in ["", "  ", "identity", "IDENTITY, identity"] {
            assert_eq!(decode(header, body, MIB).unwrap(), body, "{header:?}");
        }
    }

    #[test]
    fn empty_body_decodes_to_empty_whatever_the_coding() {
        for header in ["gzip", "deflate", "br", "zstd", "gzip, br"] {
            assert_eq!(decode(header, b"", 0).unwrap(), b"", "{header:?}");
        }
    }

    #[test]
    fn unknown_coding_is_unsupported_before_anything_is_decoded() {
        let error = decode("compress", b"data", MIB).unwrap_err();
        assert!(matches!(&error, DecodeError::Unsupported(name) if name == "compress"));
        assert_eq!(
            error.to_string(),
            "unsupported content encoding \"compress\""
        );
        // `gzip` would fail on this body, but the unknown `LZMA` is reported first.
        let error = decode("LZMA, gzip", b"not gzip", MIB).unwrap_err();
        assert!(matches!(&error, DecodeError::Unsupported(name) if name == "LZMA"));
    }

    #[test]
    fn encode_rejects_unknown_codings_and_lists() {
        for coding in ["compress", "gzip, br", ""] {
            assert!(
                matches!(encode(coding, b"x"), Err(DecodeError::Unsupported(_))),
                "{coding:?}"
            );
        }
    }

    #[test]
    fn corrupt_or_truncated_data_is_invalid_naming_the_coding() {
        let body = sample(20_000);
        let error = decode("gzip", b"definitely not gzip", MIB).unwrap_err();
        assert_eq!(error.to_string(), "invalid gzip data");
        assert!(std::error::Error::source(&error).is_some());
        for coding in ["gzip", "deflate", "br", "zstd"] {
            let encoded = match coding {
                "br" => BROTLI_FIXTURE.to_vec(),
                _ => encode(coding, &body).unwrap(),
            };
            let truncated = &encoded[..encoded.len() / 2];
            assert_invalid(decode(coding, truncated, MIB), coding);
            let mut flipped = encoded.clone();
            let middle = flipped.len() / 2;
            flipped[middle] ^= 0xff;
            flipped[middle + 1] ^= 0x55;
            assert_invalid(decode(coding, &flipped, MIB), coding);
        }
        assert_invalid(decode("x-gzip", b"\x1f\x8bbad", MIB), "x-gzip");
        assert_invalid(decode("br", b"\xff\xff\xff\xff", MIB), "br");
        assert_invalid(decode("zstd", b"\x28\xb5\x2f\xfd\xff", MIB), "zstd");
        assert_invalid(decode("deflate", b"\xff\xff\xff\xff", MIB), "deflate");
    }

    #[test]
    fn zstd_checksum_mismatch_is_invalid() {
        let mut data = ZSTD_FIXTURE;
        data[data.len() - 1] ^= 1;
        assert_invalid(decode("zstd", &data, MIB), "zstd");
    }

    #[test]
    fn zstd_concatenated_and_skippable_frames_decode() {
        let mut data = encode("zstd", b"first ").unwrap();
        data.extend_from_slice(&[0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, b'x', b'y', b'z']);
        data.extend_from_slice(&ZSTD_FIXTURE);
        let mut expected = b"first ".to_vec();
        expected.extend_from_slice(FIXTURE_TEXT);
        assert_eq!(decode("zstd", &data, MIB).unwrap(), expected);
        // A skippable frame claiming more bytes than there are.
        assert_invalid(
            decode("zstd", &[0x50, 0x2a, 0x4d, 0x18, 9, 0, 0, 0, 1], MIB),
            "zstd",
        );
    }

    #[test]
    fn gzip_concatenated_members_decode() {
        let mut data = encode("gzip", b"one, ").unwrap();
        data.extend_from_slice(&encode("gzip", b"two").unwrap());
        assert_eq!(decode("gzip", &data, MIB).unwrap(), b"one, two");
    }

    #[test]
    fn output_of_exactly_the_limit_is_allowed_and_one_more_byte_is_not() {
        let body = sample(4_096);
        for coding in ["gzip", "deflate", "br", "zstd", "identity"] {
            let encoded = encode(coding, &body).unwrap();
            assert_eq!(
                decode(coding, &encoded, body.len()).unwrap(),
                body,
                "{coding}"
            );
            assert_too_large(decode(coding, &encoded, body.len() - 1), body.len() - 1);
        }
        let gzip_then_br = encode("br", &encode("gzip", &body).unwrap()).unwrap();
        assert_too_large(decode("gzip, br", &gzip_then_br, 100), 100);
    }

    #[test]
    fn decompression_bombs_stop_at_the_limit_quickly() {
        let zeros = vec![0u8; 10 * MIB];
        // gzip and zstd allow concatenation: 100 members or frames make 1000 MiB,
        // which could not be decoded in time, let alone allocated, without the limit.
        let gzip = encode("gzip", &zeros).unwrap().repeat(100);
        let zstd = encode("zstd", &zeros).unwrap().repeat(100);
        let bombs = [
            ("gzip", gzip),
            ("deflate", raw_deflate(&zeros)),
            ("br", BROTLI_BOMB.to_vec()),
            ("zstd", zstd),
        ];
        for (coding, bomb) in &bombs {
            let started = Instant::now();
            assert_too_large(decode(coding, bomb, MIB), MIB);
            let elapsed = started.elapsed();
            assert!(
                elapsed < Duration::from_secs(2),
                "{coding} took {elapsed:?}"
            );
        }
        // The brotli bomb really is 10 MiB of zeros.
        assert_eq!(decode("br", &BROTLI_BOMB, 10 * MIB).unwrap(), zeros);
    }

    #[test]
    fn reading_stops_one_byte_past_the_limit_of_an_endless_stream() {
        let mut out = b"ab".to_vec();
        let result = read_limited(io::repeat(7), &mut out, 1000, "gzip");
        assert!(matches!(result, Err(DecodeError::TooLarge { limit: 1000 })));
        assert_eq!(out.len(), 1001);
    }

    #[test]
    fn zstd_window_beyond_8_mib_and_the_limit_is_too_large() {
        // 10 MiB of zeros in a frame whose 16 MiB window ruzstd would allocate up front.
        let args = ["-q", "-c", "-19", "--zstd=wlog=24"];
        let Some(bomb) = run_tool("zstd", &args, &vec![0u8; 10 * MIB]) else {
            return;
        };
        assert_too_large(decode("zstd", &bomb, MIB), MIB);
        assert_too_large(decode("zstd", &bomb, 10 * MIB), 10 * MIB);
        assert_eq!(decode("zstd", &bomb, 16 * MIB).unwrap().len(), 10 * MIB);
    }
}
