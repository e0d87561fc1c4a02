//! A message of the SQS API as SQS checks, measures, digests and stores it: the body, its
//! message attributes (`MessageAttributes`: a name → `{DataType, StringValue | BinaryValue}`)
//! and its system attributes (`MessageSystemAttributes`: only `AWSTraceHeader`). Pure code: the
//! request is the JSON protocol's shape, which [`super::query`] also produces.

use std::collections::BTreeMap;

use base64::Engine as _;
use md5::{Digest as _, Md5};
use serde_json::{Map, Value};

/// The most message attributes a message may carry.
pub const MAX_ATTRIBUTES: usize = 10;

/// The longest message attribute name.
const MAX_NAME: usize = 256;

/// The key of the system attributes in the stored document. Message attribute names are
/// letters, digits, `_`, `-` and `.` only, so no attribute can take it.
const SYSTEM_KEY: &str = "$system";

/// The system attributes a sender may set.
const SENDABLE_SYSTEM_ATTRIBUTES: &[&str] = &["AWSTraceHeader"];

/// Why SQS refuses a message; each is `InvalidParameterValue` but for the body's characters,
/// `InvalidMessageContents`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    InvalidParameterValue(String),
    #[error("{0}")]
    InvalidMessageContents(String),
}

/// The characters SQS allows in a body and in string values: `#x9 | #xA | #xD | #x20-#xD7FF |
/// #xE000-#xFFFD | #x10000-#x10FFFF` (a Rust `char` is never a surrogate).
fn allowed(c: char) -> bool {
    matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{FFFD}' | '\u{10000}'..)
}

const ALLOWED_SET: &str =
    "#x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF";

/// The first character of `text` SQS does not allow, as SQS writes it (`#x1F`).
fn invalid_character(text: &str) -> Option<String> {
    text.chars()
        .find(|c| !allowed(*c))
        .map(|c| format!("#x{:X}", u32::from(c)))
}

/// Checks a body's characters.
pub fn check_body(body: &str) -> Result<(), Refusal> {
    match invalid_character(body) {
        None => Ok(()),
        Some(c) => Err(Refusal::InvalidMessageContents(format!(
            "Invalid binary character '{c}' was found in the message body, the set of allowed \
             characters is {ALLOWED_SET}"
        ))),
    }
}

fn refuse(message: String) -> Refusal {
    Refusal::InvalidParameterValue(message)
}

/// A name SQS takes for a message attribute.
fn check_name(name: &str) -> Result<(), Refusal> {
    let lower = name.to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..");
    if !valid {
        return Err(refuse(format!(
            "Message (user) attribute name '{name}' is invalid. Attribute names can contain \
             A-Z, a-z, 0-9, underscore (_), hyphen (-) and period (.), may not begin or end \
             with a period, may not contain two periods in a row and must be at most {MAX_NAME} \
             characters long."
        )));
    }
    if lower.starts_with("aws.") || lower.starts_with("amazon.") {
        return Err(refuse(format!(
            "Message (user) attribute name '{name}' is invalid. The AWS. and Amazon. prefixes \
             are reserved."
        )));
    }
    Ok(())
}

/// The bytes of a binary value (base64 in both protocols).
fn binary(value: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(value).ok()
}

/// Checks one attribute value (`kind` names the map it is in, as SQS's messages do) and returns
/// the bytes it adds to the message's size: its type and value.
fn check_value(kind: &str, name: &str, value: &Value) -> Result<usize, Refusal> {
    let data_type = value["DataType"].as_str().unwrap_or("");
    if data_type.is_empty() {
        return Err(refuse(format!(
            "The {kind} attribute '{name}' must contain non-empty {kind} attribute type."
        )));
    }
    let base = data_type.split('.').next().unwrap_or("");
    if !matches!(base, "String" | "Number" | "Binary") {
        return Err(refuse(format!(
            "The type of {kind} attribute '{name}' is invalid. You must use only the following \
             supported type prefixes: Binary, Number, String."
        )));
    }
    let empty = || {
        refuse(format!(
            "The {kind} attribute '{name}' must contain non-empty {kind} attribute value for \
             {kind} attribute type '{data_type}'."
        ))
    };
    let value_bytes = if base == "Binary" {
        let bytes = value["BinaryValue"]
            .as_str()
            .and_then(binary)
            .filter(|b| !b.is_empty())
            .ok_or_else(empty)?;
        bytes.len()
    } else {
        let text = value["StringValue"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(empty)?;
        if let Some(c) = invalid_character(text) {
            return Err(refuse(format!(
                "Invalid binary character '{c}' was found in the {kind} attribute '{name}' \
                 value, the set of allowed characters is {ALLOWED_SET}"
            )));
        }
        if base == "Number" && !is_number(text) {
            return Err(refuse(format!(
                "Can't cast the value of {kind} attribute '{name}' to a number."
            )));
        }
        text.len()
    };
    Ok(data_type.len() + value_bytes)
}

/// A decimal number as SQS takes one for a `Number` attribute (sign, digits, fraction,
/// exponent).
fn is_number(text: &str) -> bool {
    let text = text.trim();
    !text.is_empty()
        && text.parse::<f64>().is_ok_and(f64::is_finite)
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'))
}

/// A message of a send, checked: its body, its message attributes and system attributes, and
/// its size as SQS counts it against `MaximumMessageSize` — the body and every message
/// attribute's name, type and value (system attributes do not count).
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub attributes: Map<String, Value>,
    pub system: Map<String, Value>,
    pub size: usize,
}

/// Checks the body and attributes of a send entry (`SendMessage` or a batch entry).
pub fn check(body: &str, entry: &Value) -> Result<Checked, Refusal> {
    check_body(body)?;
    let attributes = entry["MessageAttributes"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(refuse(format!(
            "Number of message attributes [{}] exceeds the allowed maximum [{MAX_ATTRIBUTES}].",
            attributes.len()
        )));
    }
    let mut size = body.len();
    for (name, value) in &attributes {
        check_name(name)?;
        size += name.len() + check_value("message", name, value)?;
    }
    let system = entry["MessageSystemAttributes"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for (name, value) in &system {
        if !SENDABLE_SYSTEM_ATTRIBUTES.contains(&name.as_str()) {
            return Err(refuse(format!(
                "Message system attribute name '{name}' is invalid."
            )));
        }
        check_value("message system", name, value)?;
        if value["DataType"] != "String" {
            return Err(refuse(format!(
                "The message system attribute '{name}' must be of type String."
            )));
        }
    }
    Ok(Checked {
        attributes,
        system,
        size,
    })
}

/// The MD5 of attributes (message or system ones), as SQS computes it: each attribute by name,
/// in order, as length-prefixed name, data type, a transport byte (1 string, 2 binary) and
/// length-prefixed value. `None` for no attributes.
pub fn attributes_md5(attributes: &Map<String, Value>) -> Option<String> {
    if attributes.is_empty() {
        return None;
    }
    fn put(digest: &mut Md5, bytes: &[u8]) {
        digest.update((bytes.len() as u32).to_be_bytes());
        digest.update(bytes);
    }
    let mut digest = Md5::new();
    let sorted: BTreeMap<&String, &Value> = attributes.iter().collect();
    for (name, value) in sorted {
        let data_type = value
            .get("DataType")
            .and_then(Value::as_str)
            .unwrap_or("String");
        put(&mut digest, name.as_bytes());
        put(&mut digest, data_type.as_bytes());
        match value.get("BinaryValue").and_then(Value::as_str) {
            Some(encoded) => {
                digest.update([2u8]);
                put(&mut digest, &binary(encoded).unwrap_or_default());
            }
            None => {
                digest.update([1u8]);
                let text = value
                    .get("StringValue")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                put(&mut digest, text.as_bytes());
            }
        }
    }
    Some(hex::encode(digest.finalize()))
}

pub fn body_md5(body: &[u8]) -> String {
    hex::encode(Md5::digest(body))
}

/// The document the engine keeps for a message: its message attributes by name, and under
/// [`SYSTEM_KEY`] its system attributes, with the `SenderId` of who sent it.
pub fn stored(checked: &Checked, sender: &str) -> String {
    let mut document = checked.attributes.clone();
    let mut system = checked.system.clone();
    system.insert(
        "SenderId".to_owned(),
        serde_json::json!({ "DataType": "String", "StringValue": sender }),
    );
    document.insert(SYSTEM_KEY.to_owned(), Value::Object(system));
    Value::Object(document).to_string()
}

/// A stored document read back: the message attributes and the system attributes' string
/// values (`AWSTraceHeader` → its value).
pub fn read_stored(document: &str) -> (Map<String, Value>, BTreeMap<String, String>) {
    let mut attributes: Map<String, Value> = serde_json::from_str(document).unwrap_or_default();
    let system = attributes
        .remove(SYSTEM_KEY)
        .and_then(|s| s.as_object().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, value)| Some((name, value["StringValue"].as_str()?.to_owned())))
        .collect();
    (attributes, system)
}

/// Whether `ReceiveMessage`'s `MessageAttributeNames` choose the attribute `name`: by name,
/// `All`, `*` or `.*`, or a `prefix.*`.
pub fn chosen(wanted: &[String], name: &str) -> bool {
    wanted.iter().any(|w| {
        matches!(w.as_str(), "All" | "*" | ".*")
            || w == name
            || w.strip_suffix(".*")
                .is_some_and(|prefix| name.starts_with(prefix))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(attributes: Value) -> Value {
        json!({ "MessageAttributes": attributes })
    }

    #[test]
    fn attribute_digest_matches_sqs() {
        // One string attribute, digested by hand as the SQS documentation describes.
        let attributes: Map<String, Value> = serde_json::from_value(json!({
            "color": {"DataType": "String", "StringValue": "red"}
        }))
        .unwrap();
        let mut expected = Md5::new();
        for part in [&b"color"[..], b"String"] {
            expected.update((part.len() as u32).to_be_bytes());
            expected.update(part);
        }
        expected.update([1u8]);
        expected.update(3u32.to_be_bytes());
        expected.update(b"red");
        assert_eq!(
            attributes_md5(&attributes),
            Some(hex::encode(expected.finalize()))
        );
        assert_eq!(attributes_md5(&Map::new()), None);
        assert_eq!(body_md5(b"hello"), "5d41402abc4b2a76b9719d911017c592");
    }

    #[test]
    fn size_counts_attribute_names_types_and_values() {
        let cases = [
            (json!({}), 3),
            (
                json!({"a": {"DataType": "String", "StringValue": "xy"}}),
                3 + 1 + 6 + 2,
            ),
            (
                json!({"bin": {"DataType": "Binary", "BinaryValue": "AAEC"}}),
                3 + 3 + 6 + 3,
            ),
            (
                json!({"n": {"DataType": "Number.int", "StringValue": "42"}}),
                3 + 1 + 10 + 2,
            ),
        ];
        for (attributes, size) in cases {
            let checked = check("abc", &entry(attributes.clone())).unwrap();
            assert_eq!(checked.size, size, "{attributes}");
        }
    }

    #[test]
    fn refuses_what_sqs_refuses() {
        let parameter = |attributes: Value| check("b", &entry(attributes)).unwrap_err();
        let cases = [
            json!({"a": {"DataType": "String", "StringValue": ""}}),
            json!({"a": {"DataType": "String"}}),
            json!({"a": {"DataType": "Binary", "BinaryValue": ""}}),
            json!({"a": {"StringValue": "x"}}),
            json!({"a": {"DataType": "Text", "StringValue": "x"}}),
            json!({"a": {"DataType": "String", "StringValue": "bell \u{7}"}}),
            json!({"a": {"DataType": "String", "StringValue": "\u{FFFF}"}}),
            json!({"a": {"DataType": "Number", "StringValue": "twelve"}}),
            json!({"has space": {"DataType": "String", "StringValue": "x"}}),
            json!({"AWS.x": {"DataType": "String", "StringValue": "x"}}),
            json!({"a..b": {"DataType": "String", "StringValue": "x"}}),
        ];
        for attributes in cases {
            assert!(
                matches!(
                    parameter(attributes.clone()),
                    Refusal::InvalidParameterValue(_)
                ),
                "{attributes}"
            );
        }
        let eleven: Map<String, Value> = (0..11)
            .map(|n| {
                (
                    format!("a{n}"),
                    json!({"DataType": "String", "StringValue": "x"}),
                )
            })
            .collect();
        assert!(check("b", &entry(Value::Object(eleven))).is_err());
        assert_eq!(
            check("nul \u{0}", &json!({})).unwrap_err(),
            Refusal::InvalidMessageContents(format!(
                "Invalid binary character '#x0' was found in the message body, the set of \
                 allowed characters is {ALLOWED_SET}"
            ))
        );
        let fine =
            json!({"a": {"DataType": "String", "StringValue": "tab\there \u{10348} \u{E000}"}});
        assert!(check("ok", &entry(fine)).is_ok());
        let trace = json!({"MessageSystemAttributes": {"Other": {"DataType": "String", "StringValue": "x"}}});
        assert!(check("ok", &trace).is_err());
    }

    #[test]
    fn the_stored_document_keeps_system_attributes_apart() {
        let request = json!({
            "MessageAttributes": {"k": {"DataType": "String", "StringValue": "v"}},
            "MessageSystemAttributes": {"AWSTraceHeader": {"DataType": "String", "StringValue": "Root=1"}},
        });
        let checked = check("b", &request).unwrap();
        let (attributes, system) = read_stored(&stored(&checked, "AROAEXAMPLE:f"));
        assert_eq!(attributes, checked.attributes);
        assert_eq!(system["AWSTraceHeader"], "Root=1");
        assert_eq!(system["SenderId"], "AROAEXAMPLE:f");
        // Documents written before system attributes were kept read as before.
        let (old, none) = read_stored(r#"{"k":{"DataType":"String","StringValue":"v"}}"#);
        assert_eq!((old.len(), none.len()), (1, 0));
    }

    #[test]
    fn attribute_names_choose() {
        let wanted = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        for (names, name, chosen_) in [
            (&["All"][..], "x", true),
            (&["*"], "x", true),
            (&[".*"], "x", true),
            (&["col.*"], "colour", true),
            (&["col.*"], "size", false),
            (&["size"], "size", true),
            (&[], "size", false),
        ] {
            assert_eq!(chosen(&wanted(names), name), chosen_, "{names:?} {name}");
        }
    }
}
