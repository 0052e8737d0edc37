//! JSONL datasets in the shapes mlx-lm and LLaMA-Factory users write:
//!
//! - `{"text": "..."}`: plain text, one unit per line;
//! - `{"prompt": "...", "completion": "..."}` (also Alpaca's `instruction` / `input` /
//!   `output`): a completion example, the prompt masked from the loss;
//! - `{"messages": [{"role": "...", "content": "..."}, ...]}` (also ShareGPT's
//!   `conversations` with `from` / `value`): a chat, only the assistant turns trained on.
//!
//! The shape is taken from a file's first valid record unless the caller forces one;
//! records of another shape, or lines that are not JSON, are skipped with a warning. A
//! file with no usable record is an error.

use serde_json::Value;

use super::error::{IngestError, Result};
use super::text::decode_text;
use super::{Document, Example, Record, Unit};
use nf_tokenizer::ChatMessage;

/// The shape of the records in a JSONL file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JsonlShape {
    /// `{"text"}`.
    Text,
    /// `{"prompt", "completion"}`.
    Completions,
    /// `{"messages"}`.
    Chat,
}

impl std::str::FromStr for JsonlShape {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "text" => Ok(JsonlShape::Text),
            "completions" | "completion" => Ok(JsonlShape::Completions),
            "chat" | "messages" => Ok(JsonlShape::Chat),
            other => Err(format!(
                "unknown format `{other}`: use auto, text, completions or chat"
            )),
        }
    }
}

/// Warnings listed one by one before the rest are counted.
const MAX_LISTED: usize = 5;

pub(super) fn read_jsonl(
    doc: &mut Document,
    bytes: &[u8],
    forced: Option<JsonlShape>,
) -> Result<()> {
    let text = decode_text(&doc.source, bytes, &mut doc.warnings)?;
    let mut shape = forced;
    let (mut bad, mut first_error) = (0usize, None::<String>);
    let mut lines = 0u32;
    for (i, line) in text.lines().enumerate() {
        let n = i as u32 + 1;
        if line.trim().is_empty() {
            continue;
        }
        lines += 1;
        let parsed = serde_json::from_str::<Value>(line)
            .map_err(|e| format!("not JSON: {e}"))
            .and_then(|v| parse_record(&v, &mut shape));
        match parsed {
            Ok(Parsed::Text(t)) => doc.units.push(Unit::paragraph(t, n)),
            Ok(Parsed::Example(example)) => doc.examples.push(Record { line: n, example }),
            Ok(Parsed::Empty) => {}
            Err(e) => {
                bad += 1;
                if bad <= MAX_LISTED {
                    doc.warnings
                        .push(format!("{}:{n}: skipped: {e}", doc.source.display()));
                }
                first_error.get_or_insert(format!("line {n}: {e}"));
            }
        }
    }
    if bad > MAX_LISTED {
        doc.warnings.push(format!(
            "{}: {} more lines skipped",
            doc.source.display(),
            bad - MAX_LISTED
        ));
    }
    doc.paragraphs = Some(lines);
    if doc.units.is_empty() && doc.examples.is_empty() {
        return Err(match first_error {
            Some(e) => {
                IngestError::corrupt(&doc.source, "JSONL", format!("no usable record ({e})"))
            }
            None => IngestError::empty(&doc.source, "no records"),
        });
    }
    Ok(())
}

enum Parsed {
    Text(String),
    Example(Example),
    /// A record of the right shape with nothing to learn (empty text).
    Empty,
}

/// Reads one record, fixing the file's shape from the first record when not yet known.
fn parse_record(v: &Value, shape: &mut Option<JsonlShape>) -> std::result::Result<Parsed, String> {
    let obj = v.as_object().ok_or("not a JSON object")?;
    let detected = if obj.contains_key("messages") || obj.contains_key("conversations") {
        Some(JsonlShape::Chat)
    } else if obj.contains_key("completion")
        || (obj.contains_key("instruction") && obj.contains_key("output"))
    {
        Some(JsonlShape::Completions)
    } else if obj.contains_key("text") {
        Some(JsonlShape::Text)
    } else {
        None
    };
    let shape = *shape.get_or_insert(
        detected.ok_or("no `text`, `prompt`/`completion` or `messages` field: an unknown shape")?,
    );
    let str_field = |k: &str| obj.get(k).and_then(Value::as_str);
    match shape {
        JsonlShape::Text => {
            let t = str_field("text").ok_or("no string `text` field")?;
            Ok(if t.trim().is_empty() {
                Parsed::Empty
            } else {
                Parsed::Text(super::clean::normalize(t))
            })
        }
        JsonlShape::Completions => {
            let (prompt, completion) = match (str_field("prompt"), str_field("completion")) {
                (Some(p), Some(c)) => (p.to_string(), c.to_string()),
                _ => {
                    let ins =
                        str_field("instruction").ok_or("no string `prompt` and `completion`")?;
                    let out = str_field("output").ok_or("no string `output`")?;
                    let prompt = match str_field("input").filter(|s| !s.trim().is_empty()) {
                        Some(input) => format!("{ins}\n\n{input}"),
                        None => ins.to_string(),
                    };
                    (prompt, out.to_string())
                }
            };
            if completion.trim().is_empty() {
                return Ok(Parsed::Empty);
            }
            Ok(Parsed::Example(Example::Completion { prompt, completion }))
        }
        JsonlShape::Chat => {
            let list = obj
                .get("messages")
                .or_else(|| obj.get("conversations"))
                .and_then(Value::as_array)
                .ok_or("no `messages` array")?;
            let messages = list
                .iter()
                .map(message)
                .collect::<std::result::Result<Vec<_>, _>>()?;
            if !messages.iter().any(|m| m.role == "assistant") {
                return Err("no assistant message: nothing to learn".into());
            }
            Ok(Parsed::Example(Example::Chat { messages }))
        }
    }
}

/// One message: `{"role", "content"}` (content a string, or OpenAI-style parts whose
/// `text` is joined) or ShareGPT's `{"from", "value"}`.
fn message(v: &Value) -> std::result::Result<ChatMessage, String> {
    let role = v
        .get("role")
        .or_else(|| v.get("from"))
        .and_then(Value::as_str)
        .ok_or("a message without a string `role`")?;
    let role = match role {
        "human" | "user" => "user",
        "gpt" | "assistant" | "model" => "assistant",
        "system" => "system",
        other => other,
    };
    let content = match v.get("content").or_else(|| v.get("value")) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        Some(Value::Null) | None => String::new(),
        Some(_) => return Err("a message whose `content` is not text".into()),
    };
    Ok(ChatMessage::new(role, content))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn read(text: &str, forced: Option<JsonlShape>) -> Result<Document> {
        let mut d = Document::new(Path::new("d.jsonl"), text.as_bytes(), "jsonl");
        read_jsonl(&mut d, text.as_bytes(), forced).map(|()| d)
    }

    #[test]
    fn three_shapes_are_detected() {
        let d = read(
            "{\"text\": \"first\"}\n\n{\"text\": \"second  one\"}\n",
            None,
        )
        .unwrap();
        assert_eq!(
            d.units,
            [
                Unit::paragraph("first", 1),
                Unit::paragraph("second one", 3)
            ]
        );

        let d = read(
            "{\"prompt\": \"2+2=\", \"completion\": \"4\"}\n{\"instruction\": \"Add\", \"input\": \"1 1\", \"output\": \"2\"}\n",
            None,
        )
        .unwrap();
        assert_eq!(
            d.examples[1].example,
            Example::Completion {
                prompt: "Add\n\n1 1".into(),
                completion: "2".into()
            }
        );

        let d = read(
            r#"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "Hi"}]}, {"role": "assistant", "content": "Hello"}]}
{"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]}"#,
            None,
        )
        .unwrap();
        assert_eq!(d.examples.len(), 2);
        let Example::Chat { messages } = &d.examples[1].example else {
            panic!()
        };
        assert_eq!(messages[1], ChatMessage::new("assistant", "A"));
        assert_eq!(d.examples[1].line, 2);
    }

    #[test]
    fn bad_lines_are_skipped_and_all_bad_is_an_error() {
        let d = read(
            "{\"text\": \"ok\"}\nnot json\n{\"prompt\": \"p\", \"completion\": \"c\"}\n",
            None,
        )
        .unwrap();
        assert_eq!(d.units.len(), 1);
        assert_eq!(d.warnings.len(), 2, "{:?}", d.warnings);
        assert!(d.warnings[0].contains("d.jsonl:2"), "{:?}", d.warnings);

        let e = read("garbage\n[1,2]\n", None).unwrap_err();
        assert!(matches!(e, IngestError::Corrupt { .. }), "{e}");
        let e = read(
            "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n",
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("no assistant"), "{e}");
        let e = read("{\"text\": \"x\"}\n", Some(JsonlShape::Chat)).unwrap_err();
        assert!(e.to_string().contains("messages"), "{e}");
    }
}
