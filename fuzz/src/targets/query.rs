//! Query strings and the values read from them. The hub's own query parsing
//! (`query_u64` and friends in its transports) is private, so this fuzzes
//! what it is built on and from: `serde_urlencoded` into a map, the
//! protocol's checks of epochs, idempotency keys and execution ids, the
//! hub's `Epoch::parse`, `auth::bearer` (the `access_token` a browser puts
//! in the query) and the NATS subject escaping of execution ids.

use std::collections::HashMap;

use exechub::auth::bearer;
use exechub::event::Epoch;
use exechub::providers::nats::{decode_token, subject_token};
use exechub_protocol::ws::MAX_EPOCH_BYTES;
use exechub_protocol::{
    MAX_EXECUTION_ID_BYTES, MAX_IDEMPOTENCY_KEY_BYTES, is_epoch, is_idempotency_key,
    validate_execution_id,
};

/// Parameter names, escapes and delimiters.
pub const WORDS: &[&str] = &[
    "after=",
    "limit=",
    "epoch=",
    "access_token=",
    "execution_id=",
    "idempotency_key=",
    "&",
    "=",
    "%",
    "%00",
    "%FF",
    "%zz",
    "%2",
    "+",
    ";",
    "#",
    "*",
    ".",
    ">",
    "{",
    "}",
    "%7B",
];

/// Parses `input` as a query string and checks every key and value.
pub fn query(input: &[u8]) -> String {
    let text = String::from_utf8_lossy(input);
    let mut label = match serde_urlencoded::from_str::<HashMap<String, String>>(&text) {
        Ok(pairs) => {
            let mut kinds: Vec<String> = pairs
                .iter()
                .flat_map(|(key, value)| [check(key), check(value)])
                .collect();
            kinds.sort();
            kinds.dedup();
            format!("ok:{}", kinds.join(","))
        }
        Err(_) => "err".to_owned(),
    };
    if let Some(token) = bearer(None, Some(&text)) {
        assert!(text.contains(token), "a token that is not in the query");
        label.push_str("+token");
    }
    if let Some(token) = bearer(Some(&text), None) {
        assert!(text.contains(token), "a token that is not in the header");
        label.push_str("+bearer");
    }
    label
}

/// Checks one value against every rule that reads it; names what it passed.
fn check(value: &str) -> String {
    let epoch = is_epoch(value);
    assert_eq!(
        Epoch::parse(value).is_some(),
        epoch,
        "Epoch::parse disagrees"
    );
    if epoch {
        assert!(value.len() <= MAX_EPOCH_BYTES && !value.is_empty());
    }
    let key = is_idempotency_key(value);
    if key {
        assert!(value.len() <= MAX_IDEMPOTENCY_KEY_BYTES && value.is_ascii());
    }
    let id = validate_execution_id(value).is_ok();
    if id {
        assert!(!value.is_empty() && value.len() <= MAX_EXECUTION_ID_BYTES);
        assert!(!value.contains(['{', '}']) && !value.chars().any(char::is_control));
        let token = subject_token(value);
        assert!(
            !token.contains(['.', '*', '>', ' ']),
            "subject token {token}"
        );
        assert_eq!(
            decode_token(&token).as_deref(),
            Some(value),
            "token {token}"
        );
    }
    let number = value.parse::<u64>().is_ok();
    format!(
        "{}{}{}{}",
        u8::from(epoch),
        u8::from(key),
        u8::from(id),
        u8::from(number)
    )
}
