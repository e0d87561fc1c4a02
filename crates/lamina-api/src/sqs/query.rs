//! SQS's query protocol, which SDKs spoke before the JSON protocol (botocore before 1.31.81 and
//! again from 1.32 to 1.34.9x, the AWS SDK for Java 1.x, and most tools built on them): a
//! form-encoded `POST` with `Action=<Operation>` and the members flattened into numbered
//! parameters (`Attribute.1.Name=…`), answered in XML. This module only translates: a request
//! becomes the JSON protocol's request shape and a result or error the XML the clients parse;
//! [`super`] serves both protocols with the same code.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// The namespace of SQS's XML answers.
const NAMESPACE: &str = "http://queue.amazonaws.com/doc/2012-11-05/";

/// Flattened lists: their parameter name, and the member they fill in the JSON shape.
const LISTS: &[(&str, &str)] = &[
    ("AttributeName", "AttributeNames"),
    ("MessageAttributeName", "MessageAttributeNames"),
    ("MessageSystemAttributeName", "MessageSystemAttributeNames"),
    ("SendMessageBatchRequestEntry", "Entries"),
    ("DeleteMessageBatchRequestEntry", "Entries"),
    ("ChangeMessageVisibilityBatchRequestEntry", "Entries"),
    ("StringListValue", "StringListValues"),
    ("TagKey", "TagKeys"),
    ("BinaryListValue", "BinaryListValues"),
];

/// Flattened maps: their parameter name, the member they fill, and the names of an entry's
/// key and value.
const MAPS: &[(&str, &str, &str, &str)] = &[
    ("Attribute", "Attributes", "Name", "Value"),
    ("MessageAttribute", "MessageAttributes", "Name", "Value"),
    (
        "MessageSystemAttribute",
        "MessageSystemAttributes",
        "Name",
        "Value",
    ),
    ("Tag", "Tags", "Key", "Value"),
];

/// Members the JSON shape types as integers (the query protocol sends every value as text).
const INTEGERS: &[&str] = &[
    "DelaySeconds",
    "MaxNumberOfMessages",
    "MaxResults",
    "VisibilityTimeout",
    "WaitTimeSeconds",
];

/// Operations whose answer has no result element.
const NO_RESULT: &[&str] = &[
    "ChangeMessageVisibility",
    "DeleteMessage",
    "DeleteQueue",
    "PurgeQueue",
    "SetQueueAttributes",
    "TagQueue",
    "UntagQueue",
];

/// The parameters of a request, split at their dots.
#[derive(Debug, Default)]
struct Tree {
    value: Option<String>,
    children: BTreeMap<String, Tree>,
}

impl Tree {
    fn insert(&mut self, path: &str, value: String) {
        let mut node = self;
        for part in path.split('.') {
            node = node.children.entry(part.to_owned()).or_default();
        }
        node.value = Some(value);
    }

    /// The numbered children (`.1`, `.2`, …) in their order.
    fn numbered(&self) -> Vec<&Tree> {
        let mut items: Vec<(u32, &Tree)> = self
            .children
            .iter()
            .filter_map(|(index, child)| Some((index.parse().ok()?, child)))
            .collect();
        items.sort_by_key(|(index, _)| *index);
        items.into_iter().map(|(_, child)| child).collect()
    }

    /// This node as a member of the JSON shape named `name`.
    fn member(&self, name: &str) -> Value {
        if let Some(text) = &self.value
            && self.children.is_empty()
        {
            return match text.parse::<u64>() {
                Ok(number) if INTEGERS.contains(&name) => Value::from(number),
                _ => Value::String(text.clone()),
            };
        }
        Value::Object(self.structure())
    }

    /// This node's children as the members of a structure.
    fn structure(&self) -> Map<String, Value> {
        let mut out = Map::new();
        for (name, child) in &self.children {
            if let Some((_, member)) = LISTS.iter().find(|(list, _)| list == name) {
                let items = child.numbered().into_iter().map(|item| item.member(name));
                out.insert((*member).to_owned(), Value::Array(items.collect()));
            } else if let Some((_, member, key, value)) = MAPS.iter().find(|(map, ..)| map == name)
            {
                let mut entries = Map::new();
                for entry in child.numbered() {
                    let Some(key) = entry.children.get(*key).and_then(|k| k.value.clone()) else {
                        continue;
                    };
                    let value = entry
                        .children
                        .get(*value)
                        .map_or(Value::Null, |v| v.member(value));
                    entries.insert(key, value);
                }
                out.insert((*member).to_owned(), Value::Object(entries));
            } else {
                out.insert(name.clone(), child.member(name));
            }
        }
        out
    }
}

/// A query-protocol request as its operation (`Action`, if given) and the JSON protocol's
/// request. `Version` and the signature's own parameters are not members. A second `Action`
/// that differs from the first is refused (its value is the error): the operation must be one.
pub fn request(
    params: impl IntoIterator<Item = (String, String)>,
) -> Result<(Option<String>, Value), String> {
    let mut tree = Tree::default();
    let mut action: Option<String> = None;
    for (name, value) in params {
        match name.as_str() {
            "Action" => match &action {
                Some(first) if *first != value => return Err(value),
                _ => action = Some(value),
            },
            "Version" => {}
            _ if name.starts_with("X-Amz-") => {}
            _ => tree.insert(&name, value),
        }
    }
    Ok((action, Value::Object(tree.structure())))
}

fn escape(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // A carriage return would be read back as a line feed.
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
}

fn element(name: &str, value: &Value, action: &str, out: &mut String) {
    out.push('<');
    out.push_str(name);
    out.push('>');
    match value {
        Value::String(text) => escape(text, out),
        Value::Object(members) => structure(members, action, out),
        Value::Null => {}
        other => out.push_str(&other.to_string()),
    }
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

/// The XML element each item of a flattened list of the JSON shape is written as.
fn item_name<'a>(member: &'a str, action: &str) -> Option<&'a str> {
    Some(match member {
        "QueueUrls" | "queueUrls" => "QueueUrl",
        "Messages" => "Message",
        "Failed" => "BatchResultErrorEntry",
        "StringListValues" => "StringListValue",
        "BinaryListValues" => "BinaryListValue",
        "Successful" => match action {
            "SendMessageBatch" => "SendMessageBatchResultEntry",
            "DeleteMessageBatch" => "DeleteMessageBatchResultEntry",
            _ => "ChangeMessageVisibilityBatchResultEntry",
        },
        _ => return None,
    })
}

fn structure(members: &Map<String, Value>, action: &str, out: &mut String) {
    for (name, value) in members {
        match (name.as_str(), value) {
            ("Attributes" | "MessageAttributes" | "Tags", Value::Object(entries)) => {
                let entry = &name[..name.len() - 1];
                let key_name = if name == "Tags" { "Key" } else { "Name" };
                for (key, value) in entries {
                    out.push_str(&format!("<{entry}><{key_name}>"));
                    escape(key, out);
                    out.push_str(&format!("</{key_name}>"));
                    element("Value", value, action, out);
                    out.push_str(&format!("</{entry}>"));
                }
            }
            (_, Value::Array(items)) => {
                let item = item_name(name, action).unwrap_or(name);
                for value in items {
                    element(item, value, action, out);
                }
            }
            _ => element(name, value, action, out),
        }
    }
}

/// The XML answer to `action` whose JSON protocol result is `result`.
pub fn response(action: &str, result: &Value, request_id: &str) -> String {
    let mut out = format!(r#"<?xml version="1.0"?><{action}Response xmlns="{NAMESPACE}">"#);
    if !NO_RESULT.contains(&action) {
        let empty = Map::new();
        let members = result.as_object().unwrap_or(&empty);
        out.push_str(&format!("<{action}Result>"));
        structure(members, action, &mut out);
        out.push_str(&format!("</{action}Result>"));
    }
    out.push_str("<ResponseMetadata><RequestId>");
    escape(request_id, &mut out);
    out.push_str(&format!(
        "</RequestId></ResponseMetadata></{action}Response>"
    ));
    out
}

/// The XML answer to a failed request: `code` is the query protocol's error code.
pub fn error(code: &str, message: &str, sender_fault: bool, request_id: &str) -> String {
    let mut out = format!(r#"<?xml version="1.0"?><ErrorResponse xmlns="{NAMESPACE}"><Error>"#);
    out.push_str(if sender_fault {
        "<Type>Sender</Type>"
    } else {
        "<Type>Receiver</Type>"
    });
    out.push_str("<Code>");
    escape(code, &mut out);
    out.push_str("</Code><Message>");
    escape(message, &mut out);
    out.push_str("</Message><Detail/></Error><RequestId>");
    escape(request_id, &mut out);
    out.push_str("</RequestId></ErrorResponse>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn flattened_parameters_become_the_json_shape() {
        let cases: &[(&[(&str, &str)], Value)] = &[
            (
                &[
                    ("Action", "CreateQueue"),
                    ("Version", "2012-11-05"),
                    ("QueueName", "q"),
                    ("Attribute.1.Name", "VisibilityTimeout"),
                    ("Attribute.1.Value", "5"),
                    ("Attribute.2.Name", "DelaySeconds"),
                    ("Attribute.2.Value", "1"),
                ],
                json!({"QueueName": "q", "Attributes": {"VisibilityTimeout": "5", "DelaySeconds": "1"}}),
            ),
            (
                &[
                    ("Action", "ReceiveMessage"),
                    ("QueueUrl", "http://h/0/q"),
                    ("MaxNumberOfMessages", "10"),
                    ("WaitTimeSeconds", "x"),
                    ("AttributeName.2", "SentTimestamp"),
                    ("AttributeName.1", "All"),
                    ("MessageAttributeName.1", "All"),
                ],
                json!({"QueueUrl": "http://h/0/q", "MaxNumberOfMessages": 10, "WaitTimeSeconds": "x",
                       "AttributeNames": ["All", "SentTimestamp"], "MessageAttributeNames": ["All"]}),
            ),
            (
                &[
                    ("Action", "SendMessageBatch"),
                    ("SendMessageBatchRequestEntry.10.Id", "j"),
                    ("SendMessageBatchRequestEntry.10.MessageBody", "ten"),
                    ("SendMessageBatchRequestEntry.2.Id", "b"),
                    ("SendMessageBatchRequestEntry.2.MessageBody", "two"),
                    ("SendMessageBatchRequestEntry.2.DelaySeconds", "3"),
                    (
                        "SendMessageBatchRequestEntry.2.MessageAttribute.1.Name",
                        "kind",
                    ),
                    (
                        "SendMessageBatchRequestEntry.2.MessageAttribute.1.Value.DataType",
                        "String",
                    ),
                    (
                        "SendMessageBatchRequestEntry.2.MessageAttribute.1.Value.StringValue",
                        "k",
                    ),
                ],
                json!({"Entries": [
                    {"Id": "b", "MessageBody": "two", "DelaySeconds": 3,
                     "MessageAttributes": {"kind": {"DataType": "String", "StringValue": "k"}}},
                    {"Id": "j", "MessageBody": "ten"},
                ]}),
            ),
        ];
        for (pairs, expected) in cases {
            let (action, request) = request(params(pairs)).unwrap();
            assert!(action.is_some());
            assert_eq!(&request, expected, "{pairs:?}");
        }
        let twice = [
            ("Action", "GetQueueUrl"),
            ("QueueName", "q"),
            ("Action", "DeleteQueue"),
        ];
        assert_eq!(
            request(params(&twice)).err().as_deref(),
            Some("DeleteQueue")
        );
    }

    #[test]
    fn results_become_sqs_xml() {
        let cases: &[(&str, Value, &str)] = &[
            (
                "GetQueueUrl",
                json!({"QueueUrl": "http://h/0/a&b"}),
                "<GetQueueUrlResult><QueueUrl>http://h/0/a&amp;b</QueueUrl></GetQueueUrlResult>",
            ),
            (
                "ListQueues",
                json!({"QueueUrls": ["u1", "u2"]}),
                "<ListQueuesResult><QueueUrl>u1</QueueUrl><QueueUrl>u2</QueueUrl></ListQueuesResult>",
            ),
            ("DeleteQueue", json!({}), ""),
            (
                "GetQueueAttributes",
                json!({"Attributes": {"DelaySeconds": "0"}}),
                "<GetQueueAttributesResult><Attribute><Name>DelaySeconds</Name><Value>0</Value></Attribute></GetQueueAttributesResult>",
            ),
            (
                "ReceiveMessage",
                json!({"Messages": [{"Body": "<x>", "MessageAttributes": {"k": {"DataType": "String", "StringValue": "v"}}}]}),
                "<ReceiveMessageResult><Message><Body>&lt;x&gt;</Body><MessageAttribute><Name>k</Name><Value><DataType>String</DataType><StringValue>v</StringValue></Value></MessageAttribute></Message></ReceiveMessageResult>",
            ),
            (
                "ReceiveMessage",
                json!({}),
                "<ReceiveMessageResult></ReceiveMessageResult>",
            ),
            (
                "DeleteMessageBatch",
                json!({"Successful": [{"Id": "a"}], "Failed": [{"Id": "b", "SenderFault": true}]}),
                "<DeleteMessageBatchResult><BatchResultErrorEntry><Id>b</Id><SenderFault>true</SenderFault></BatchResultErrorEntry><DeleteMessageBatchResultEntry><Id>a</Id></DeleteMessageBatchResultEntry></DeleteMessageBatchResult>",
            ),
        ];
        for (action, result, body) in cases {
            let xml = response(action, result, "rid");
            let expected = format!(
                r#"<?xml version="1.0"?><{action}Response xmlns="{NAMESPACE}">{body}<ResponseMetadata><RequestId>rid</RequestId></ResponseMetadata></{action}Response>"#
            );
            assert_eq!(xml, expected);
        }
    }

    #[test]
    fn errors_carry_the_query_code() {
        let xml = error(
            "AWS.SimpleQueueService.NonExistentQueue",
            "no <queue>",
            true,
            "rid",
        );
        assert!(xml.contains("<Type>Sender</Type><Code>AWS.SimpleQueueService.NonExistentQueue</Code><Message>no &lt;queue&gt;</Message>"));
        assert!(xml.ends_with("<RequestId>rid</RequestId></ErrorResponse>"));
    }
}
