//! The fuzz targets: each takes arbitrary bytes to one of the decoders that
//! face the network (or Redis), checks what the answer promises, and names
//! the outcome. A panic — in the decoder or in a check here — is a crash.
//!
//! The outcome label is the engine's only feedback: an input that leads to
//! an outcome not seen before is kept and mutated further.

mod frames;
mod jwt;
mod query;
mod redis;

use exechub_protocol::ValidationError;

/// One thing to fuzz.
pub struct Target {
    /// The name on the command line, of the corpus folder and of crash files.
    pub name: &'static str,
    /// Tokens the mutators insert: field names, keywords, delimiters.
    pub dictionary: &'static [&'static str],
    /// Runs one input; returns a label of the outcome.
    pub run: fn(&[u8]) -> String,
}

/// Every target, in the order they run.
pub const ALL: &[Target] = &[
    Target {
        name: "ws_frame",
        dictionary: frames::WORDS,
        run: frames::ws_frame,
    },
    Target {
        name: "publish_body",
        dictionary: frames::WORDS,
        run: frames::publish_body,
    },
    Target {
        name: "query",
        dictionary: query::WORDS,
        run: query::query,
    },
    Target {
        name: "jwt_token",
        dictionary: jwt::TOKEN_WORDS,
        run: jwt::jwt_token,
    },
    Target {
        name: "jwt_claims",
        dictionary: jwt::CLAIM_WORDS,
        run: jwt::jwt_claims,
    },
    Target {
        name: "redis_range",
        dictionary: redis::WORDS,
        run: redis::redis_range,
    },
];

/// The target called `name`.
pub fn find(name: &str) -> Option<&'static Target> {
    ALL.iter().find(|target| target.name == name)
}

/// A label for validation problems: their kinds and named locations (not
/// byte offsets, which would make every input look new).
fn problems(errors: &[ValidationError]) -> String {
    let mut label: Vec<String> = errors
        .iter()
        .map(|e| {
            let loc = serde_json::to_string(&e.loc).unwrap_or_default();
            let named: String = loc.chars().filter(|c| !c.is_ascii_digit()).collect();
            format!("{}@{named}", e.kind)
        })
        .collect();
    label.sort();
    label.dedup();
    label.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found() {
        let names: std::collections::HashSet<_> = ALL.iter().map(|t| t.name).collect();
        assert_eq!(names.len(), ALL.len());
        for name in names {
            assert_eq!(find(name).map(|t| t.name), Some(name));
        }
        assert!(find("nope").is_none());
    }

    #[test]
    fn every_target_takes_empty_and_garbage_input() {
        for target in ALL {
            for input in [&b""[..], b"\xff\xfe", b"{}", b"[]", b"null"] {
                assert!(!(target.run)(input).is_empty(), "{}", target.name);
            }
        }
    }
}
