//! The parts of a HAR 1.2 document this crate reads, as types: the log's entries, each
//! entry's request, response, bodies, timings, and the extra fields of this crate and
//! of Chromium (`_tls`, `_webSocketMessages`, …). What a record needs of them, and
//! what it makes of a field missing, is the reader's to say.
//!
//! HARs come from many tools, which disagree on details (`bodySize: -1`, `_error:
//! null`, a field of some other type): every field inside an entry is optional, and
//! one that is not of the type read here counts as absent (a struct must be an
//! object), as does an item of a list that is not an object. Only the document's frame must be as HAR says: an
//! object whose `log.entries` is a list of objects (`scan.rs` follows the frame and
//! hands over each entry, read with these types).

use serde::de::{DeserializeOwned, Deserializer};
use serde::Deserialize;
use serde_json::Value;

/// One entry: an exchange.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Entry {
    /// When the request started (RFC 3339).
    #[serde(rename = "startedDateTime", deserialize_with = "lenient")]
    pub started: Option<String>,
    #[serde(deserialize_with = "object")]
    pub request: Option<Request>,
    #[serde(deserialize_with = "object")]
    pub response: Option<Response>,
    #[serde(deserialize_with = "object")]
    pub timings: Option<Timings>,
    /// The server's IP address (browsers may bracket an IPv6 one).
    #[serde(rename = "serverIPAddress", deserialize_with = "lenient")]
    pub server_ip: Option<String>,
    /// This crate's: the server's port.
    #[serde(rename = "_serverPort", deserialize_with = "lenient")]
    pub server_port: Option<u64>,
    /// This crate's: the client's address and port.
    #[serde(rename = "_clientAddress", deserialize_with = "lenient")]
    pub client_address: Option<String>,
    /// This crate's: whether the client spoke TLS with the proxy.
    #[serde(rename = "_clientTls", deserialize_with = "lenient")]
    pub client_tls: Option<bool>,
    /// This crate's: what the client's TLS with the proxy settled.
    #[serde(rename = "_tls", deserialize_with = "object")]
    pub tls: Option<super::facts::Tls>,
    /// This crate's: the connection facts (`facts.rs`).
    #[serde(rename = "_facts")]
    pub facts: Option<Value>,
    /// Why the exchange failed (this crate's; Chromium puts one on the response).
    #[serde(rename = "_error", deserialize_with = "lenient")]
    pub error: Option<String>,
    /// Chromium's (and this crate's): a WebSocket's messages.
    #[serde(rename = "_webSocketMessages", deserialize_with = "objects")]
    pub websocket_messages: Option<Vec<WebSocketMessage>>,
    /// HAR 1.2's comment on the entry: mitmproxy's comment on the flow.
    #[serde(deserialize_with = "lenient")]
    pub comment: Option<String>,
    /// This crate's: mitmproxy's mark of the flow.
    #[serde(rename = "_marked", deserialize_with = "lenient")]
    pub marked: Option<String>,
    /// This crate's: mitmproxy's `is_replay` (`request` or `response`).
    #[serde(rename = "_isReplay", deserialize_with = "lenient")]
    pub is_replay: Option<String>,
}

/// An entry's request.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Request {
    #[serde(deserialize_with = "lenient")]
    pub method: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub url: Option<String>,
    #[serde(rename = "httpVersion", deserialize_with = "lenient")]
    pub http_version: Option<String>,
    #[serde(deserialize_with = "objects")]
    pub headers: Option<Vec<Header>>,
    /// The body, when there is one (any value here counts as one, as an object with
    /// nothing read in it when it is not an object).
    #[serde(rename = "postData", deserialize_with = "present")]
    pub post_data: Option<Content>,
    /// Bytes of the body on the wire; `-1` (unknown) reads as absent.
    #[serde(rename = "bodySize", deserialize_with = "lenient")]
    pub body_size: Option<u64>,
    /// This crate's: the path as it went on the wire, when `url` has it
    /// percent-encoded (a client sent raw UTF-8 or spaces).
    #[serde(rename = "_path", deserialize_with = "lenient")]
    pub raw_path: Option<String>,
}

/// An entry's response; `status` 0 (browsers' "none") is no response.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Response {
    #[serde(deserialize_with = "lenient")]
    pub status: Option<u64>,
    #[serde(rename = "statusText", deserialize_with = "lenient")]
    pub status_text: Option<String>,
    #[serde(rename = "httpVersion", deserialize_with = "lenient")]
    pub http_version: Option<String>,
    #[serde(deserialize_with = "objects")]
    pub headers: Option<Vec<Header>>,
    #[serde(deserialize_with = "object")]
    pub content: Option<Content>,
    /// Bytes of the body on the wire; `-1` (unknown) reads as absent.
    #[serde(rename = "bodySize", deserialize_with = "lenient")]
    pub body_size: Option<u64>,
    /// Chromium's: why there was no response.
    #[serde(rename = "_error", deserialize_with = "lenient")]
    pub error: Option<String>,
}

/// A header field.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Header {
    #[serde(deserialize_with = "lenient")]
    pub name: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub value: Option<String>,
}

/// A body as saved: a response's `content`, or a request's `postData` (which has no
/// `encoding` in HAR 1.2: this crate writes `_encoding` there).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Content {
    /// The body as text, or base64 (`encoding`); absent when it was not saved.
    #[serde(deserialize_with = "lenient")]
    pub text: Option<String>,
    /// `base64` when `text` is base64 (a response's `content`).
    #[serde(deserialize_with = "lenient")]
    pub encoding: Option<String>,
    /// `base64` when `text` is base64 (this crate's, in `postData`).
    #[serde(rename = "_encoding", deserialize_with = "lenient")]
    pub post_encoding: Option<String>,
    /// The length of the body, decoded.
    #[serde(deserialize_with = "lenient")]
    pub size: Option<u64>,
    /// This crate's: the body was cut by the capture.
    #[serde(rename = "_truncated", deserialize_with = "lenient")]
    pub truncated: Option<bool>,
    /// This crate's: the length on the wire of a body that was cut.
    #[serde(rename = "_size", deserialize_with = "lenient")]
    pub wire_size: Option<u64>,
    /// This crate's: `text` is the body as sent, still content-encoded.
    #[serde(rename = "_contentEncoded", deserialize_with = "lenient")]
    pub content_encoded: Option<bool>,
}

/// An entry's timings, in milliseconds; `-1` is "does not apply".
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Timings {
    #[serde(deserialize_with = "lenient")]
    pub blocked: Option<f64>,
    #[serde(deserialize_with = "lenient")]
    pub dns: Option<f64>,
    /// Setting up the connection, TLS included (`ssl`).
    #[serde(deserialize_with = "lenient")]
    pub connect: Option<f64>,
    #[serde(deserialize_with = "lenient")]
    pub ssl: Option<f64>,
    #[serde(deserialize_with = "lenient")]
    pub send: Option<f64>,
    #[serde(deserialize_with = "lenient")]
    pub wait: Option<f64>,
    #[serde(deserialize_with = "lenient")]
    pub receive: Option<f64>,
    /// This crate's: the phases among `send`, `wait` and `receive` written as 0
    /// because the flow never reached their end (HAR wants a number there).
    #[serde(rename = "_unknown", deserialize_with = "lenient")]
    pub unknown: Option<Vec<String>>,
}

/// A WebSocket message as Chromium saves it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct WebSocketMessage {
    /// `send` (from the client) or `receive`.
    #[serde(rename = "type", deserialize_with = "lenient")]
    pub kind: Option<String>,
    /// Seconds since the epoch.
    #[serde(deserialize_with = "lenient")]
    pub time: Option<f64>,
    /// 1 for text, 2 for binary.
    #[serde(deserialize_with = "lenient")]
    pub opcode: Option<u64>,
    /// The payload: text, or base64 for binary.
    #[serde(deserialize_with = "lenient")]
    pub data: Option<String>,
}

/// A field read as a `T`, or as absent when it is not one (or is `null`).
fn lenient<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Option<T>, D::Error> {
    let value = Value::deserialize(d)?;
    Ok(T::deserialize(value).ok())
}

/// A field read as the struct `T` when it is an object, else as absent.
fn object<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Option<T>, D::Error> {
    Ok(struct_of(Value::deserialize(d)?))
}

/// A list of the structs `T`, its items that are not objects dropped; absent when it
/// is not a list.
fn objects<'de, D: Deserializer<'de>, T: DeserializeOwned>(
    d: D,
) -> Result<Option<Vec<T>>, D::Error> {
    let Value::Array(items) = Value::deserialize(d)? else {
        return Ok(None);
    };
    Ok(Some(items.into_iter().filter_map(struct_of).collect()))
}

/// A field that is there, whatever its value: the struct `T` if it is an object, else
/// `T`'s default.
fn present<'de, D: Deserializer<'de>, T: DeserializeOwned + Default>(
    d: D,
) -> Result<Option<T>, D::Error> {
    Ok(Some(struct_of(Value::deserialize(d)?).unwrap_or_default()))
}

/// `value` as the struct `T`, if it is an object (a struct also reads from a list, by
/// position: not here).
fn struct_of<T: DeserializeOwned>(value: Value) -> Option<T> {
    match value {
        Value::Object(_) => T::deserialize(value).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_another_type_read_as_absent_and_the_rest_is_kept() {
        let entry: Entry = serde_json::from_str(
            r#"{"startedDateTime": 5, "_error": null, "_clientTls": "yes",
                "serverIPAddress": "10.0.0.1", "_tls": [], "unknown": {"a": 1},
                "timings": ["send", 1],
                "request": {"method": "GET", "url": "http://a/", "bodySize": -1,
                    "headers": [{"name": "A", "value": "1"}, "junk", {"name": 2},
                        {"name": "B"}],
                    "postData": null},
                "response": {"status": 200.5, "content": "none", "_error": "x"},
                "_webSocketMessages": [{"type": "send", "opcode": 2}, 7]}"#,
        )
        .unwrap();
        assert_eq!(entry.started, None);
        assert_eq!(entry.error, None);
        assert_eq!(entry.client_tls, None);
        assert_eq!(entry.server_ip.as_deref(), Some("10.0.0.1"));
        assert!(entry.tls.is_none());
        let request = entry.request.unwrap();
        assert_eq!(request.method.as_deref(), Some("GET"));
        assert_eq!(request.body_size, None);
        let headers: Vec<_> = request
            .headers
            .unwrap()
            .into_iter()
            .map(|h| (h.name, h.value))
            .collect();
        assert_eq!(
            headers,
            [
                (Some("A".into()), Some("1".into())),
                (None, None),
                (Some("B".into()), None)
            ]
        );
        // A `postData` of `null` is there, with nothing in it.
        assert!(request.post_data.is_some_and(|p| p.text.is_none()));
        let response = entry.response.unwrap();
        assert_eq!(response.status, None);
        assert!(response.content.is_none());
        assert_eq!(response.error.as_deref(), Some("x"));
        let timings: Timings =
            serde_json::from_str(r#"{"send": 1, "wait": "2", "receive": 3.5}"#).unwrap();
        assert_eq!(
            (timings.send, timings.wait, timings.receive),
            (Some(1.0), None, Some(3.5))
        );
        // A list where an object belongs is not one.
        assert!(entry.timings.is_none());
        let messages = entry.websocket_messages.unwrap();
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].opcode, Some(2));
    }
}
