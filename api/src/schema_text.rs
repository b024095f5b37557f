//! Schema post-processing for readable `kubectl explain` output.

use schemars::Schema;
use serde_json::Value;

/// Joins the hard-wrapped lines of doc comments in every `description` of `schema`.
///
/// Doc comments are wrapped for the source file; `kubectl explain` wraps text to the terminal
/// itself, so kept newlines would show as ragged lines. Blank lines (paragraph breaks) are kept.
pub(crate) fn unwrap_descriptions(schema: &mut Schema) {
    if let Some(object) = schema.as_object_mut() {
        for (key, value) in object.iter_mut() {
            unwrap_in(key, value);
        }
    }
}

fn unwrap_in(key: &str, value: &mut Value) {
    match value {
        Value::String(text) if key == "description" => *text = unwrap_lines(text),
        Value::Object(object) => object.iter_mut().for_each(|(k, v)| unwrap_in(k, v)),
        Value::Array(items) => items.iter_mut().for_each(|v| unwrap_in("", v)),
        _ => {}
    }
}

fn unwrap_lines(text: &str) -> String {
    text.split("\n\n")
        .map(|paragraph| {
            paragraph
                .split('\n')
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_lines_but_keeps_paragraphs() {
        assert_eq!(unwrap_lines("a\nb\n\nc\nd"), "a b\n\nc d");
        assert_eq!(unwrap_lines("single"), "single");
    }

    #[test]
    fn rewrites_only_description_strings() {
        let mut schema = Schema::try_from(serde_json::json!({
            "description": "x\ny",
            "properties": {
                "description": {"type": "string", "description": "p\nq"},
                "other": {"pattern": "a\nb"}
            }
        }))
        .unwrap();
        unwrap_descriptions(&mut schema);
        let value = schema.as_value();
        assert_eq!(value["description"], "x y");
        assert_eq!(value["properties"]["description"]["description"], "p q");
        assert_eq!(value["properties"]["other"]["pattern"], "a\nb");
    }
}
