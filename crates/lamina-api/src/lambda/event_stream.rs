//! The AWS event stream (`application/vnd.amazon.eventstream`) as InvokeWithResponseStream
//! answers in it: `PayloadChunk` events as the function writes, then one `InvokeComplete`.
//!
//! A message is: total length (u32 BE), headers length (u32 BE), CRC32 of those eight bytes,
//! the headers (name length u8, name, type 7 = string, value length u16 BE, value), the
//! payload, and the CRC32 of everything before it.

use bytes::Bytes;
use serde_json::{Map, Value, json};

const STRING: u8 = 7;

fn message(headers: &[(&str, &str)], payload: &[u8]) -> Bytes {
    let mut encoded = Vec::new();
    for (name, value) in headers {
        encoded.push(name.len() as u8);
        encoded.extend_from_slice(name.as_bytes());
        encoded.push(STRING);
        encoded.extend_from_slice(&(value.len() as u16).to_be_bytes());
        encoded.extend_from_slice(value.as_bytes());
    }
    let total = 12 + encoded.len() + payload.len() + 4;
    let mut message = Vec::with_capacity(total);
    message.extend_from_slice(&(total as u32).to_be_bytes());
    message.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    let prelude_crc = crc32fast::hash(&message);
    message.extend_from_slice(&prelude_crc.to_be_bytes());
    message.extend_from_slice(&encoded);
    message.extend_from_slice(payload);
    let crc = crc32fast::hash(&message);
    message.extend_from_slice(&crc.to_be_bytes());
    Bytes::from(message)
}

/// A chunk of the function's response.
pub fn payload_chunk(data: &[u8]) -> Bytes {
    message(
        &[
            (":event-type", "PayloadChunk"),
            (":content-type", "application/octet-stream"),
            (":message-type", "event"),
        ],
        data,
    )
}

/// The end of the stream: how the invocation ended, and its log tail (base64) if asked for.
pub fn invoke_complete(error: Option<(&str, &str)>, log_result: Option<&str>) -> Bytes {
    let mut body = Map::new();
    if let Some((code, details)) = error {
        body.insert("ErrorCode".into(), json!(code));
        body.insert("ErrorDetails".into(), json!(details));
    }
    if let Some(log) = log_result {
        body.insert("LogResult".into(), json!(log));
    }
    message(
        &[
            (":event-type", "InvokeComplete"),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        Value::Object(body).to_string().as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes one message, checking both CRCs: (headers, payload, rest).
    fn decode(bytes: &[u8]) -> (Vec<(String, String)>, Vec<u8>, &[u8]) {
        let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let (total, headers_len) = (be(0), be(4));
        assert_eq!(be(8) as u32, crc32fast::hash(&bytes[..8]), "prelude crc");
        assert_eq!(
            be(total - 4) as u32,
            crc32fast::hash(&bytes[..total - 4]),
            "message crc"
        );
        let mut headers = Vec::new();
        let mut at = 12;
        while at < 12 + headers_len {
            let name_len = bytes[at] as usize;
            let name = String::from_utf8(bytes[at + 1..at + 1 + name_len].to_vec()).unwrap();
            at += 1 + name_len;
            assert_eq!(bytes[at], STRING);
            let value_len = u16::from_be_bytes([bytes[at + 1], bytes[at + 2]]) as usize;
            let value = String::from_utf8(bytes[at + 3..at + 3 + value_len].to_vec()).unwrap();
            at += 3 + value_len;
            headers.push((name, value));
        }
        (headers, bytes[at..total - 4].to_vec(), &bytes[total..])
    }

    #[test]
    fn messages_round_trip_with_their_crcs() {
        let mut stream = payload_chunk(b"hello ").to_vec();
        stream.extend_from_slice(&invoke_complete(
            Some(("Sandbox.Timedout", "late")),
            Some("bG9n"),
        ));
        let (headers, payload, rest) = decode(&stream);
        assert!(headers.contains(&(":event-type".into(), "PayloadChunk".into())));
        assert_eq!(payload, b"hello ");
        let (headers, payload, rest) = decode(rest);
        assert!(headers.contains(&(":event-type".into(), "InvokeComplete".into())));
        let body: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(
            body,
            json!({"ErrorCode": "Sandbox.Timedout", "ErrorDetails": "late", "LogResult": "bG9n"})
        );
        assert!(rest.is_empty());
    }
}
