//! WebSocket (RFC 6455) framing: an incremental [`FrameParser`] that takes frames off
//! the front of a byte buffer, [`encode`] that writes them back, and an [`Assembler`]
//! that joins fragmented data frames into whole messages so hooks can see them.
//!
//! The bytes come from untrusted peers, so every length is checked from the frame
//! header before any payload is buffered, and every malformed input is a
//! [`FrameError`], never a panic. The codec enforces the framing rules of RFC 6455
//! section 5 (masking direction, control frame limits, reserved opcodes, the
//! fragmentation sequence) but not the meaning of payloads: text is not validated as
//! UTF-8 and the RSV bits, used by extensions such as permessage-deflate, are carried
//! through untouched.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Largest payload a control frame (close, ping, pong) may carry (RFC 6455 5.5).
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// Frame opcodes (RFC 6455 5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpCode {
    /// `0x0`: continues a fragmented data message.
    Continuation,
    /// `0x1`: starts a text message.
    Text,
    /// `0x2`: starts a binary message.
    Binary,
    /// `0x8`: closes the connection.
    Close,
    /// `0x9`: asks the peer for a pong.
    Ping,
    /// `0xA`: answers a ping.
    Pong,
    /// A reserved opcode (`0x3`-`0x7`, `0xB`-`0xF`); the parser rejects these.
    Other(u8),
}

impl OpCode {
    /// Decodes the low four bits of `bits`.
    pub(crate) fn from_u8(bits: u8) -> Self {
        match bits & 0x0f {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xa => OpCode::Pong,
            other => OpCode::Other(other),
        }
    }

    /// The four-bit wire value.
    pub(crate) fn as_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xa,
            OpCode::Other(bits) => bits & 0x0f,
        }
    }

    /// Whether this is a control opcode (close, ping, pong or a reserved `0xB`-`0xF`).
    pub(crate) fn is_control(self) -> bool {
        self.as_u8() & 0x08 != 0
    }
}

/// One WebSocket frame, with its payload already unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    /// Whether this is the last frame of its message.
    pub(crate) fin: bool,
    /// The three RSV bits (RSV1 is the most significant), as a value in `0..=7`.
    pub(crate) rsv: u8,
    /// What the frame carries.
    pub(crate) opcode: OpCode,
    /// The application data, unmasked.
    pub(crate) payload: Bytes,
}

impl Frame {
    /// A final frame without RSV bits: a whole message or a control frame.
    pub(crate) fn new(opcode: OpCode, payload: impl Into<Bytes>) -> Self {
        Frame {
            fin: true,
            rsv: 0,
            opcode,
            payload: payload.into(),
        }
    }
}

/// Which end of the WebSocket connection sent (or is writing) the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The client: its frames must be masked.
    Client,
    /// The server: its frames must not be masked.
    Server,
}

/// A violation of the WebSocket framing rules; the connection should then be failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FrameError {
    /// A frame's payload is longer than the parser's limit.
    #[error("frame payload of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The length the header announced.
        len: u64,
        /// The parser's limit.
        max: usize,
    },
    /// A client frame without a mask, or a server frame with one (RFC 6455 5.1).
    #[error("{}", bad_mask_message(.from))]
    BadMask {
        /// Who sent the frame.
        from: Role,
    },
    /// A 64-bit payload length with its most significant bit set (RFC 6455 5.2).
    #[error("frame payload length has its most significant bit set")]
    BadLength,
    /// A control frame with more than 125 bytes of payload (RFC 6455 5.5).
    #[error("control frame payload of {len} bytes exceeds 125 bytes")]
    ControlTooLong {
        /// The length the header announced.
        len: u64,
    },
    /// A control frame without the FIN bit (RFC 6455 5.5).
    #[error("control frame is fragmented")]
    FragmentedControl,
    /// A frame with a reserved opcode.
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// A continuation frame while no fragmented message was started.
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is unfinished.
    #[error("new data frame while a fragmented message is unfinished")]
    MessageInProgress,
    /// A message longer than the assembler's limit.
    #[error("message exceeds the limit of {max} bytes")]
    MessageTooLarge {
        /// The assembler's limit.
        max: usize,
    },
}

/// The text of [`FrameError::BadMask`].
fn bad_mask_message(from: &Role) -> &'static str {
    match from {
        Role::Client => "frame from the client is not masked",
        Role::Server => "frame from the server is masked",
    }
}

/// Incremental frame parser: bytes in, frames out.
///
/// After it returns an error it returns the same error on every later call, since the
/// rest of the stream cannot be framed any more.
#[derive(Debug)]
pub(crate) struct FrameParser {
    /// Largest payload accepted, in bytes.
    max_frame: usize,
    /// The error that ended the stream, if any.
    failed: Option<FrameError>,
}

impl FrameParser {
    /// A parser that rejects frames whose payload exceeds `max_frame` bytes.
    pub(crate) fn new(max_frame: usize) -> Self {
        FrameParser {
            max_frame,
            failed: None,
        }
    }

    /// Tries to take one complete frame from the front of `buf`, advancing it.
    ///
    /// `Ok(None)` means more bytes are needed; `buf` is then left as it was. Frames from
    /// a client must be masked and frames from a server must not be (RFC 6455 5.1);
    /// `from` says who sent them. The returned payload is unmasked and shares `buf`'s
    /// allocation. Limits are checked as soon as the header is in, so a frame that
    /// announces too long a payload fails before any of it is buffered.
    pub(crate) fn parse(
        &mut self,
        buf: &mut BytesMut,
        from: Role,
    ) -> Result<Option<Frame>, FrameError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let result = self.parse_frame(buf, from);
        if let Err(err) = &result {
            self.failed = Some(err.clone());
        }
        result
    }

    /// [`FrameParser::parse`] without the sticky error.
    fn parse_frame(&self, buf: &mut BytesMut, from: Role) -> Result<Option<Frame>, FrameError> {
        let (b0, b1) = match buf.get(..2) {
            Some(&[b0, b1]) => (b0, b1),
            _ => return Ok(None),
        };
        let fin = b0 & 0x80 != 0;
        let rsv = (b0 >> 4) & 0x07;
        let opcode = OpCode::from_u8(b0);
        if let OpCode::Other(bits) = opcode {
            return Err(FrameError::ReservedOpcode(bits));
        }
        if opcode.is_control() && !fin {
            return Err(FrameError::FragmentedControl);
        }
        let masked = b1 & 0x80 != 0;
        if masked != (from == Role::Client) {
            return Err(FrameError::BadMask { from });
        }

        // The payload length: 7 bits, or 126 then 16 bits, or 127 then 64 bits.
        let (len, len_end) = match b1 & 0x7f {
            126 => match buf.get(2..4) {
                Some(&[hi, lo]) => (u64::from(u16::from_be_bytes([hi, lo])), 4),
                _ => return Ok(None),
            },
            127 => match buf.get(2..10).and_then(|s| <[u8; 8]>::try_from(s).ok()) {
                Some(bytes) => (u64::from_be_bytes(bytes), 10),
                None => return Ok(None),
            },
            short => (u64::from(short), 2),
        };
        if len > i64::MAX as u64 {
            return Err(FrameError::BadLength);
        }
        if opcode.is_control() && len > MAX_CONTROL_PAYLOAD {
            return Err(FrameError::ControlTooLong { len });
        }
        let too_large = FrameError::TooLarge {
            len,
            max: self.max_frame,
        };
        let payload_len = match usize::try_from(len) {
            Ok(n) if n <= self.max_frame => n,
            _ => return Err(too_large),
        };

        let header_len = if masked { len_end + 4 } else { len_end };
        let key = match buf.get(len_end..header_len) {
            _ if !masked => None,
            Some(&[k0, k1, k2, k3]) => Some([k0, k1, k2, k3]),
            _ => return Ok(None),
        };
        let Some(frame_len) = header_len.checked_add(payload_len) else {
            return Err(too_large);
        };
        if buf.len() < frame_len {
            return Ok(None);
        }

        buf.advance(header_len);
        let mut payload = buf.split_to(payload_len);
        if let Some(key) = key {
            apply_mask(&mut payload, key);
        }
        Ok(Some(Frame {
            fin,
            rsv,
            opcode,
            payload: payload.freeze(),
        }))
    }
}

/// XORs `data` with the repeating four-byte `key`, eight bytes at a time; masking and
/// unmasking are the same operation (RFC 6455 5.3).
fn apply_mask(data: &mut [u8], key: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        if let Ok(word) = <[u8; 8]>::try_from(&*chunk) {
            chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
        }
    }
    // The remainder starts at a multiple of 8, so the key lines up from its first byte.
    for (byte, k) in chunks.into_remainder().iter_mut().zip(key.iter().cycle()) {
        *byte ^= k;
    }
}

/// Appends `frame`, encoded, to `out`.
///
/// When `mask` is true (frames sent to a server) a fresh random four-byte key is drawn
/// and the payload is masked as it is copied into `out`. The shortest length encoding is
/// used. The frame is not validated: the caller keeps control frames final and within
/// 125 bytes, and `rsv` and the opcode are cut to their 3 and 4 bits.
pub(crate) fn encode(frame: &Frame, mask: bool, out: &mut BytesMut) {
    let len = frame.payload.len();
    out.reserve(14 + len);
    out.put_u8(u8::from(frame.fin) << 7 | (frame.rsv & 0x07) << 4 | frame.opcode.as_u8());
    let mask_bit = if mask { 0x80 } else { 0 };
    match len {
        0..=125 => out.put_u8(mask_bit | len as u8),
        126..=0xffff => {
            out.put_u8(mask_bit | 126);
            out.put_u16(len as u16);
        }
        _ => {
            out.put_u8(mask_bit | 127);
            out.put_u64(len as u64);
        }
    }
    if mask {
        let key: [u8; 4] = rand::random();
        out.put_slice(&key);
        let start = out.len();
        out.put_slice(&frame.payload);
        apply_mask(&mut out[start..], key);
    } else {
        out.put_slice(&frame.payload);
    }
}

/// What [`Assembler::push`] made of a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Assembled {
    /// A whole data message.
    Message {
        /// Whether it is a text message (else binary); the text is not validated.
        text: bool,
        /// The RSV bits of the message's first frame.
        rsv: u8,
        /// All fragments' payloads, joined.
        payload: Bytes,
    },
    /// A control frame, handed over at once, even in the middle of a fragmented message.
    Control(Frame),
    /// A fragment was kept; the message is not complete yet.
    Pending,
}

/// Reassembles fragmented data messages (RFC 6455 5.4).
///
/// Control frames come out at once, even in the middle of a fragmented message. After
/// an error the message in progress is dropped; the connection should be failed.
#[derive(Debug)]
pub(crate) struct Assembler {
    /// Largest message accepted, in bytes.
    max_message: usize,
    /// The fragmented message in progress, if any.
    pending: Option<Partial>,
}

/// A fragmented message whose last frame has not come yet.
#[derive(Debug)]
struct Partial {
    /// Whether the first frame was text.
    text: bool,
    /// The first frame's RSV bits.
    rsv: u8,
    /// The payloads so far, copied out of the read buffers they came from.
    data: BytesMut,
}

impl Assembler {
    /// An assembler that rejects messages longer than `max_message` bytes.
    pub(crate) fn new(max_message: usize) -> Self {
        Assembler {
            max_message,
            pending: None,
        }
    }

    /// Takes the next frame of the stream.
    ///
    /// Errors: a continuation without a started message, a new text or binary frame
    /// while one is unfinished, a message over `max_message`, a fragmented control frame
    /// or a reserved opcode.
    pub(crate) fn push(&mut self, frame: Frame) -> Result<Assembled, FrameError> {
        let too_large = FrameError::MessageTooLarge {
            max: self.max_message,
        };
        match frame.opcode {
            OpCode::Other(bits) => Err(FrameError::ReservedOpcode(bits)),
            OpCode::Close | OpCode::Ping | OpCode::Pong => {
                if frame.fin {
                    Ok(Assembled::Control(frame))
                } else {
                    Err(FrameError::FragmentedControl)
                }
            }
            OpCode::Text | OpCode::Binary => {
                if self.pending.take().is_some() {
                    return Err(FrameError::MessageInProgress);
                }
                if frame.payload.len() > self.max_message {
                    return Err(too_large);
                }
                let text = frame.opcode == OpCode::Text;
                if frame.fin {
                    return Ok(Assembled::Message {
                        text,
                        rsv: frame.rsv,
                        payload: frame.payload,
                    });
                }
                // Copied, so that a long message does not pin the read buffers.
                self.pending = Some(Partial {
                    text,
                    rsv: frame.rsv,
                    data: BytesMut::from(&frame.payload[..]),
                });
                Ok(Assembled::Pending)
            }
            OpCode::Continuation => {
                let Some(mut partial) = self.pending.take() else {
                    return Err(FrameError::UnexpectedContinuation);
                };
                if partial.data.len().saturating_add(frame.payload.len()) > self.max_message {
                    return Err(too_large);
                }
                partial.data.extend_from_slice(&frame.payload);
                if !frame.fin {
                    self.pending = Some(partial);
                    return Ok(Assembled::Pending);
                }
                Ok(Assembled::Message {
                    text: partial.text,
                    rsv: partial.rsv,
                    payload: partial.data.freeze(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 1 << 20;

    fn fragment(fin: bool, opcode: OpCode, payload: &'static [u8]) -> Frame {
        Frame {
            fin,
            rsv: 0,
            opcode,
            payload: Bytes::from_static(payload),
        }
    }

    fn parse_all(bytes: &[u8], from: Role) -> Result<Vec<Frame>, FrameError> {
        let mut parser = FrameParser::new(LIMIT);
        let mut buf = BytesMut::from(bytes);
        let mut frames = Vec::new();
        while let Some(frame) = parser.parse(&mut buf, from)? {
            frames.push(frame);
        }
        assert!(buf.is_empty(), "{} bytes left over", buf.len());
        Ok(frames)
    }

    fn parse_one(bytes: &[u8], from: Role) -> Result<Option<Frame>, FrameError> {
        FrameParser::new(LIMIT).parse(&mut BytesMut::from(bytes), from)
    }

    #[test]
    fn round_trips_every_length_class_masked_and_unmasked() {
        for (len, header) in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            for mask in [false, true] {
                let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
                let frame = Frame {
                    fin: true,
                    rsv: 0b100,
                    opcode: OpCode::Binary,
                    payload: payload.into(),
                };
                let mut buf = BytesMut::new();
                encode(&frame, mask, &mut buf);
                let key_len = if mask { 4 } else { 0 };
                assert_eq!(buf.len(), header + key_len + len, "len {len} mask {mask}");
                assert_eq!(buf[1] & 0x80 != 0, mask);
                let from = if mask { Role::Client } else { Role::Server };
                let parsed = FrameParser::new(LIMIT).parse(&mut buf, from);
                assert_eq!(parsed, Ok(Some(frame)), "len {len} mask {mask}");
                assert!(buf.is_empty());
            }
        }
    }

    #[test]
    fn byte_by_byte_feeding_gives_the_same_frames() {
        let frames = [
            fragment(false, OpCode::Text, b"Hel"),
            Frame::new(OpCode::Ping, &b"ping"[..]),
            fragment(true, OpCode::Continuation, b"lo"),
            Frame::new(OpCode::Binary, vec![7u8; 300]),
            Frame::new(OpCode::Binary, vec![9u8; 70_000]),
            Frame::new(OpCode::Close, &b""[..]),
        ];
        for mask in [false, true] {
            let from = if mask { Role::Client } else { Role::Server };
            let mut wire = BytesMut::new();
            for frame in &frames {
                encode(frame, mask, &mut wire);
            }
            assert_eq!(parse_all(&wire, from).as_deref(), Ok(&frames[..]));

            let mut parser = FrameParser::new(LIMIT);
            let mut buf = BytesMut::new();
            let mut parsed = Vec::new();
            for &byte in wire.iter() {
                buf.put_u8(byte);
                if let Some(frame) = parser.parse(&mut buf, from).expect("valid stream") {
                    parsed.push(frame);
                }
            }
            assert!(buf.is_empty());
            assert_eq!(parsed, frames);
        }
    }

    #[test]
    fn two_frames_in_one_buffer_parse_in_order() {
        let mut buf = BytesMut::new();
        encode(&Frame::new(OpCode::Text, &b"one"[..]), false, &mut buf);
        encode(&Frame::new(OpCode::Binary, &b"two"[..]), false, &mut buf);
        let mut parser = FrameParser::new(LIMIT);
        let first = parser.parse(&mut buf, Role::Server);
        assert_eq!(first, Ok(Some(Frame::new(OpCode::Text, &b"one"[..]))));
        let second = parser.parse(&mut buf, Role::Server);
        assert_eq!(second, Ok(Some(Frame::new(OpCode::Binary, &b"two"[..]))));
        assert_eq!(parser.parse(&mut buf, Role::Server), Ok(None));
        assert!(buf.is_empty());
    }

    #[test]
    fn incomplete_frame_needs_more_bytes_and_leaves_buffer_alone() {
        let mut wire = BytesMut::new();
        encode(&Frame::new(OpCode::Text, &b"Hello"[..]), true, &mut wire);
        for cut in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            let parsed = FrameParser::new(LIMIT).parse(&mut buf, Role::Client);
            assert_eq!(parsed, Ok(None), "cut at {cut}");
            assert_eq!(&buf[..], &wire[..cut]);
        }
    }

    #[test]
    fn unmasked_client_frame_is_bad_mask() {
        let parsed = parse_one(&[0x81, 0x02, b'h', b'i'], Role::Client);
        let expected = FrameError::BadMask { from: Role::Client };
        assert_eq!(parsed, Err(expected));
    }

    #[test]
    fn masked_server_frame_is_bad_mask() {
        let parsed = parse_one(&[0x81, 0x82, 1, 2, 3, 4, 0, 0], Role::Server);
        let expected = FrameError::BadMask { from: Role::Server };
        assert_eq!(parsed, Err(expected));
    }

    #[test]
    fn control_frame_of_126_bytes_is_rejected() {
        let mut buf = BytesMut::new();
        encode(&Frame::new(OpCode::Ping, vec![0u8; 126]), false, &mut buf);
        let parsed = FrameParser::new(LIMIT).parse(&mut buf, Role::Server);
        assert_eq!(parsed, Err(FrameError::ControlTooLong { len: 126 }));
    }

    #[test]
    fn control_frame_of_125_bytes_is_accepted() {
        let ping = Frame::new(OpCode::Ping, vec![1u8; 125]);
        let mut buf = BytesMut::new();
        encode(&ping, true, &mut buf);
        assert_eq!(parse_all(&buf, Role::Client), Ok(vec![ping]));
    }

    #[test]
    fn fragmented_control_frame_is_rejected() {
        let parsed = parse_one(&[0x09, 0x00], Role::Server);
        assert_eq!(parsed, Err(FrameError::FragmentedControl));
        let mut assembler = Assembler::new(LIMIT);
        let pushed = assembler.push(fragment(false, OpCode::Pong, b""));
        assert_eq!(pushed, Err(FrameError::FragmentedControl));
    }

    #[test]
    fn reserved_opcodes_are_rejected() {
        for bits in [0x3, 0x7, 0xb, 0xf] {
            let parsed = parse_one(&[0x80 | bits, 0x00], Role::Server);
            assert_eq!(parsed, Err(FrameError::ReservedOpcode(bits)));
        }
    }

    #[test]
    fn length_with_top_bit_set_is_bad_length() {
        let header = [0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(parse_one(&header, Role::Server), Err(FrameError::BadLength));
    }

    #[test]
    fn non_minimal_length_encoding_is_accepted() {
        let mut wire = vec![0x82, 0x7e, 0x00, 0x03, 1, 2, 3];
        assert_eq!(
            parse_all(&wire, Role::Server),
            Ok(vec![Frame::new(OpCode::Binary, &[1u8, 2, 3][..])])
        );
        wire = vec![0x82, 0x7f, 0, 0, 0, 0, 0, 0, 0, 0x01, 9];
        assert_eq!(
            parse_all(&wire, Role::Server),
            Ok(vec![Frame::new(OpCode::Binary, &[9u8][..])])
        );
    }

    #[test]
    fn oversized_frame_is_rejected_from_the_header_alone() {
        // A masked client frame claiming 1 GiB; only the 10 length bytes are sent.
        let header = [0x82, 0xff, 0, 0, 0, 0, 0x40, 0, 0, 0];
        let parsed = parse_one(&header, Role::Client);
        let expected = FrameError::TooLarge {
            len: 1 << 30,
            max: LIMIT,
        };
        assert_eq!(parsed, Err(expected));
    }

    #[test]
    fn frame_of_exactly_max_frame_is_accepted() {
        let frame = Frame::new(OpCode::Binary, vec![5u8; 1000]);
        let mut buf = BytesMut::new();
        encode(&frame, false, &mut buf);
        let parsed = FrameParser::new(1000).parse(&mut buf.clone(), Role::Server);
        assert_eq!(parsed, Ok(Some(frame)));
        let parsed = FrameParser::new(999).parse(&mut buf, Role::Server);
        assert_eq!(
            parsed,
            Err(FrameError::TooLarge {
                len: 1000,
                max: 999
            })
        );
    }

    #[test]
    fn parser_error_is_sticky() {
        let mut parser = FrameParser::new(LIMIT);
        let mut buf = BytesMut::from(&[0x83, 0x00, 0x81, 0x00][..]);
        let first = parser.parse(&mut buf, Role::Server);
        assert_eq!(first, Err(FrameError::ReservedOpcode(3)));
        buf.advance(2);
        let again = parser.parse(&mut buf, Role::Server);
        assert_eq!(again, Err(FrameError::ReservedOpcode(3)));
    }

    #[test]
    fn rfc6455_masked_hello_parses_to_hello() {
        let wire = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let expected = Frame::new(OpCode::Text, &b"Hello"[..]);
        assert_eq!(parse_all(&wire, Role::Client), Ok(vec![expected]));
    }

    #[test]
    fn rfc6455_unmasked_vectors_parse_and_encode_identically() {
        let hello = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        let frame = Frame::new(OpCode::Text, &b"Hello"[..]);
        assert_eq!(parse_all(&hello, Role::Server), Ok(vec![frame.clone()]));
        let mut out = BytesMut::new();
        encode(&frame, false, &mut out);
        assert_eq!(&out[..], &hello[..]);

        let fragments = [0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f];
        let expected = vec![
            fragment(false, OpCode::Text, b"Hel"),
            fragment(true, OpCode::Continuation, b"lo"),
        ];
        assert_eq!(parse_all(&fragments, Role::Server), Ok(expected));

        let mut binary_256 = vec![0x82, 0x7e, 0x01, 0x00];
        binary_256.extend_from_slice(&[0xaa; 256]);
        let frames = parse_all(&binary_256, Role::Server).expect("valid frame");
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].payload.len(), 256);
    }

    #[test]
    fn masked_encoding_unmasks_with_its_own_key() {
        let frame = Frame::new(OpCode::Text, &b"masked payload!"[..]);
        let mut out = BytesMut::new();
        encode(&frame, true, &mut out);
        assert_eq!(out[1], 0x80 | 15);
        let key = [out[2], out[3], out[4], out[5]];
        let mut payload = out[6..].to_vec();
        apply_mask(&mut payload, key);
        assert_eq!(payload, b"masked payload!");
    }

    #[test]
    fn fast_mask_matches_bytewise_mask_at_every_length() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        for len in 0..40 {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut fast = plain.clone();
            apply_mask(&mut fast, key);
            let slow: Vec<u8> = plain
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[i % 4])
                .collect();
            assert_eq!(fast, slow, "len {len}");
        }
    }

    #[test]
    fn random_bytes_never_panic_the_parser_or_assembler() {
        for _ in 0..2000 {
            let len = rand::random_range(0..64);
            let mut buf: BytesMut = (0..len).map(|_| rand::random::<u8>()).collect();
            let from = if rand::random() {
                Role::Client
            } else {
                Role::Server
            };
            let mut parser = FrameParser::new(64);
            let mut assembler = Assembler::new(64);
            while let Ok(Some(frame)) = parser.parse(&mut buf, from) {
                if assembler.push(frame).is_err() {
                    break;
                }
            }
        }
    }

    #[test]
    fn fragmented_text_with_ping_between_gives_control_then_message() {
        let mut assembler = Assembler::new(LIMIT);
        let ping = Frame::new(OpCode::Ping, &b"?"[..]);
        let first = assembler.push(fragment(false, OpCode::Text, b"Hel"));
        assert_eq!(first, Ok(Assembled::Pending));
        assert_eq!(assembler.push(ping.clone()), Ok(Assembled::Control(ping)));
        let last = assembler.push(fragment(true, OpCode::Continuation, b"lo"));
        let expected = Assembled::Message {
            text: true,
            rsv: 0,
            payload: Bytes::from_static(b"Hello"),
        };
        assert_eq!(last, Ok(expected));
    }

    #[test]
    fn unfragmented_message_comes_out_at_once_with_its_rsv() {
        let mut assembler = Assembler::new(LIMIT);
        let mut frame = Frame::new(OpCode::Binary, &b"\x00\x01"[..]);
        frame.rsv = 0b100;
        let expected = Assembled::Message {
            text: false,
            rsv: 0b100,
            payload: Bytes::from_static(b"\x00\x01"),
        };
        assert_eq!(assembler.push(frame), Ok(expected));
    }

    #[test]
    fn fragmented_message_keeps_first_frame_rsv() {
        let mut assembler = Assembler::new(LIMIT);
        let mut first = fragment(false, OpCode::Binary, b"ab");
        first.rsv = 0b100;
        assert_eq!(assembler.push(first), Ok(Assembled::Pending));
        let middle = assembler.push(fragment(false, OpCode::Continuation, b""));
        assert_eq!(middle, Ok(Assembled::Pending));
        let last = assembler.push(fragment(true, OpCode::Continuation, b"cd"));
        let expected = Assembled::Message {
            text: false,
            rsv: 0b100,
            payload: Bytes::from_static(b"abcd"),
        };
        assert_eq!(last, Ok(expected));
    }

    #[test]
    fn continuation_without_start_is_rejected() {
        let mut assembler = Assembler::new(LIMIT);
        let pushed = assembler.push(fragment(true, OpCode::Continuation, b"lo"));
        assert_eq!(pushed, Err(FrameError::UnexpectedContinuation));
    }

    #[test]
    fn new_message_while_one_is_pending_is_rejected() {
        let mut assembler = Assembler::new(LIMIT);
        let first = assembler.push(fragment(false, OpCode::Text, b"Hel"));
        assert_eq!(first, Ok(Assembled::Pending));
        let second = assembler.push(Frame::new(OpCode::Binary, &b"x"[..]));
        assert_eq!(second, Err(FrameError::MessageInProgress));
    }

    #[test]
    fn message_over_max_message_is_rejected() {
        let mut assembler = Assembler::new(4);
        let first = assembler.push(fragment(false, OpCode::Text, b"abc"));
        assert_eq!(first, Ok(Assembled::Pending));
        let second = assembler.push(fragment(true, OpCode::Continuation, b"de"));
        assert_eq!(second, Err(FrameError::MessageTooLarge { max: 4 }));

        let mut assembler = Assembler::new(4);
        let whole = assembler.push(Frame::new(OpCode::Binary, &b"abcde"[..]));
        assert_eq!(whole, Err(FrameError::MessageTooLarge { max: 4 }));
    }

    #[test]
    fn errors_read_well() {
        let err = FrameError::BadMask { from: Role::Client };
        assert_eq!(err.to_string(), "frame from the client is not masked");
        assert_eq!(
            FrameError::ReservedOpcode(0xb).to_string(),
            "reserved opcode 0xb"
        );
    }
}
