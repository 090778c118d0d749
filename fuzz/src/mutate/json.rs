//! Mutations that know JSON: they parse the input, change one node of the
//! tree and write it back, so most results still get past the parser and
//! reach the validation behind it. Some write raw text a `Value` cannot
//! hold: numbers past `u64`/`f64`, nesting deeper than any limit, lone
//! surrogates, duplicate keys.

use serde_json::{Map, Value};

use super::MAX_INPUT;
use super::bytes::NUMBERS;
use crate::rng::Rng;

/// The UTF-8 byte-order mark, kept in front when the input had one.
const BOM: &[u8] = &[0xEF, 0xBB, 0xBF];

/// String literals (raw JSON) that decoders treat specially.
const ODD_STRINGS: &[&str] = &[
    r#""""#,
    r#"" ""#,
    r#""\ud800""#,
    r#""\udfff\ud800""#,
    r#""\u0000""#,
    r#""a\u0000b""#,
    r#""\u001f""#,
    r#""\ufeff""#,
    r#""\\""#,
    r#""{}""#,
    r#""a{b}""#,
    r#""*""#,
    r#""a.b*c>d""#,
    r#""%00%zz""#,
    r#""é""#,
    r#""\u2028""#,
];

/// Applies one structure-aware mutation; `false` when `data` is not JSON
/// (the caller then mutates bytes instead).
pub fn mutate(data: &mut Vec<u8>, rng: &mut Rng, dictionary: &[&str]) -> bool {
    let (bom, body) = match data.strip_prefix(BOM) {
        Some(body) => (true, body),
        None => (false, data.as_slice()),
    };
    let Ok(mut root) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    let total = count(&root);
    let donor = node(&root, rng.below(total)).clone();
    let mut raw = Raw::default();
    let target = node_mut(&mut root, rng.below(total));
    match rng.below(10) {
        0 | 1 => *target = other_type(target, rng),
        2 => *target = raw.hold(rng.pick(NUMBERS).copied().unwrap_or("0").to_owned()),
        3 => *target = raw.hold(nested(target, rng)),
        4 => *target = Value::String(long_string(rng)),
        5 | 6 => edit(target, rng, dictionary),
        7 => *target = raw.hold(rng.pick(ODD_STRINGS).copied().unwrap_or("0").to_owned()),
        8 => duplicate_key(target, rng, &mut raw),
        _ => *target = donor,
    }
    let Ok(text) = serde_json::to_vec(&root) else {
        return false;
    };
    *data = if bom { [BOM, &text].concat() } else { text };
    raw.render(data);
    true
}

/// Nodes in the tree (pre-order), at least 1.
fn count(value: &Value) -> usize {
    1 + match value {
        Value::Array(items) => items.iter().map(count).sum(),
        Value::Object(fields) => fields.values().map(count).sum(),
        _ => 0,
    }
}

/// The `index`th node in pre-order.
fn node(value: &Value, index: usize) -> &Value {
    let path = path_to(value, index);
    path.into_iter().fold(value, |node, step| match node {
        Value::Array(items) => &items[step],
        Value::Object(fields) => fields
            .values()
            .nth(step)
            .expect("the path was taken from this tree"),
        _ => unreachable!("paths only go through containers"),
    })
}

/// The `index`th node in pre-order, mutably.
fn node_mut(value: &mut Value, index: usize) -> &mut Value {
    let path = path_to(value, index);
    path.into_iter().fold(value, |node, step| match node {
        Value::Array(items) => &mut items[step],
        Value::Object(fields) => fields
            .values_mut()
            .nth(step)
            .expect("the path was taken from this tree"),
        _ => unreachable!("paths only go through containers"),
    })
}

/// Child positions from the root to the `index`th node.
fn path_to(value: &Value, index: usize) -> Vec<usize> {
    let mut path = Vec::new();
    let mut left = index;
    let mut node = value;
    while left > 0 {
        left -= 1;
        let children: Vec<&Value> = match node {
            Value::Array(items) => items.iter().collect(),
            Value::Object(fields) => fields.values().collect(),
            _ => break,
        };
        let mut next = None;
        for (position, child) in children.into_iter().enumerate() {
            let size = count(child);
            if left < size {
                next = Some((position, child));
                break;
            }
            left -= size;
        }
        let Some((position, child)) = next else { break };
        path.push(position);
        node = child;
    }
    path
}

/// A value of another JSON type, sometimes wrapping the old one.
fn other_type(old: &Value, rng: &mut Rng) -> Value {
    match rng.below(10) {
        0 => Value::Null,
        1 => Value::Bool(rng.one_in(2)),
        2 => Value::from(0),
        3 => Value::from(-1),
        4 => Value::from(1.5),
        5 => Value::String(String::new()),
        6 => Value::String(old.to_string()),
        7 => Value::Array(vec![old.clone()]),
        8 => Value::Object(Map::from_iter([("k".to_owned(), old.clone())])),
        _ => match old {
            Value::Array(_) => Value::Object(Map::new()),
            _ => Value::Array(Vec::new()),
        },
    }
}

/// `old` wrapped in many arrays or objects: usually a few levels, sometimes
/// far past any parser's recursion limit.
fn nested(old: &Value, rng: &mut Rng) -> String {
    let depth = rng.size(4096);
    let (open, close) = if rng.one_in(2) {
        ("[", "]")
    } else {
        (r#"{"a":"#, "}")
    };
    format!("{}{old}{}", open.repeat(depth), close.repeat(depth))
}

fn long_string(rng: &mut Rng) -> String {
    let unit = rng
        .pick(&["x", "é", "\u{10FFFF}", "\0", "\\", "\"", "-", "%"])
        .copied()
        .unwrap_or("x");
    unit.repeat(rng.size(MAX_INPUT / 4 / unit.len()))
}

/// Adds, removes or renames a field; grows, shrinks or empties an array.
fn edit(target: &mut Value, rng: &mut Rng, dictionary: &[&str]) {
    let token = rng.pick(dictionary).copied().unwrap_or("k").to_owned();
    match target {
        Value::Object(fields) => match rng.below(3) {
            0 => {
                fields.insert(token, other_type(&Value::Null, rng));
            }
            1 => {
                let key = fields.keys().nth(rng.below(fields.len())).cloned();
                if let Some(value) = key.and_then(|key| fields.remove(&key)) {
                    fields.insert(token, value);
                }
            }
            _ => {
                let key = fields.keys().nth(rng.below(fields.len())).cloned();
                key.map(|key| fields.remove(&key));
            }
        },
        Value::Array(items) => match rng.below(3) {
            0 if !items.is_empty() => {
                let item = items[rng.below(items.len())].clone();
                // Past batch limits (1000), but not past the input size limit.
                let fit = MAX_INPUT / item.to_string().len().max(1);
                let times = rng.size(1100).min(fit);
                items.extend(std::iter::repeat_n(item, times));
            }
            1 if !items.is_empty() => {
                items.remove(rng.below(items.len()));
            }
            _ => items.push(Value::String(token)),
        },
        other => *other = Value::String(token),
    }
}

/// An object written with one of its keys twice (a `Value` cannot hold that).
fn duplicate_key(target: &mut Value, rng: &mut Rng, raw: &mut Raw) {
    let Value::Object(fields) = &*target else {
        return;
    };
    let Some(key) = fields.keys().nth(rng.below(fields.len())).cloned() else {
        return;
    };
    let again = other_type(&Value::Null, rng);
    let text = target.to_string();
    let key = Value::String(key);
    *target = raw.hold(format!("{{{key}:{again},{}", &text[1..]));
}

/// Raw JSON text spliced in where placeholders were serialized.
#[derive(Default)]
struct Raw(Vec<String>);

impl Raw {
    /// A placeholder string standing for `text`.
    fn hold(&mut self, text: String) -> Value {
        self.0.push(text);
        Value::String(format!("\u{1}raw{}\u{1}", self.0.len() - 1))
    }

    /// Replaces each placeholder's serialized form in `data` with its text.
    fn render(&self, data: &mut Vec<u8>) {
        for (i, text) in self.0.iter().enumerate() {
            let mark = format!(r#""\u0001raw{i}\u0001""#);
            if let Some(at) = find_bytes(data, mark.as_bytes()) {
                data.splice(at..at + mark.len(), text.bytes());
            }
        }
    }
}

fn find_bytes(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_are_found_in_pre_order() {
        let mut root = serde_json::json!({"a": [1, {"b": 2}], "c": 3});
        assert_eq!(count(&root), 6);
        assert_eq!(*node(&root, 4), serde_json::json!(2));
        *node_mut(&mut root, 4) = Value::Null;
        assert_eq!(root, serde_json::json!({"a": [1, {"b": null}], "c": 3}));
        assert_eq!(*node_mut(&mut root, 5), serde_json::json!(3));
    }

    #[test]
    fn raw_text_replaces_its_placeholder() {
        let mut raw = Raw::default();
        let root = serde_json::json!({ "n": raw.hold("18446744073709551616".into()) });
        let mut data = serde_json::to_vec(&root).expect("serializes");
        raw.render(&mut data);
        assert_eq!(data, br#"{"n":18446744073709551616}"#);
    }

    #[test]
    fn mutations_of_json_are_mostly_still_json_or_deliberately_not() {
        let mut rng = Rng::new(11);
        let seed = br#"{"op":"publish","execution_id":"e","event_type":"x","data":{"k":[1,2]}}"#;
        let mut parsed = 0;
        for _ in 0..2000 {
            let mut data = seed.to_vec();
            assert!(mutate(&mut data, &mut rng, &["op", "events"]));
            parsed += usize::from(serde_json::from_slice::<Value>(&data).is_ok());
        }
        assert!(parsed > 1000, "only {parsed} of 2000 still parse");
        assert!(parsed < 2000, "raw mutations never broke the syntax");
    }
}
