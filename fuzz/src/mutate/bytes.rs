//! Mutations that know nothing about the format: bit flips, byte edits,
//! insertions and deletions, splices of two corpus entries, and the byte
//! sequences parsers trip over (numbers at the edges of their types,
//! invalid UTF-8, a byte-order mark, long runs).

use super::MAX_INPUT;
use crate::rng::Rng;

/// Bytes with a meaning in JSON, URLs, JWTs or RESP.
const INTERESTING_BYTES: &[u8] = b"\0\x01\x7f\x80\xff\"\\{}[],:%&=.+-_/*>$#\r\n\t eE019";

/// Numbers at the edges of what `u64`, `i64` and `f64` hold, and odd spellings.
pub const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "-1",
    "1.5",
    "00",
    "01",
    "1E2",
    "1e309",
    "-1e309",
    "1e-400",
    "4294967296",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "340282366920938463463374607431768211456",
    "123456789012345678901234567890123456789012345678901234567890",
];

/// UTF-8 that is not: lone continuation and lead bytes, a surrogate, an
/// overlong NUL, a code point past U+10FFFF, a truncated sequence.
const INVALID_UTF8: &[&[u8]] = &[
    &[0x80],
    &[0xC3],
    &[0xFF],
    &[0xED, 0xA0, 0x80],
    &[0xC0, 0x80],
    &[0xF4, 0x90, 0x80, 0x80],
    &[0xE2, 0x82],
];

/// The UTF-8 byte-order mark.
const BOM: &[u8] = &[0xEF, 0xBB, 0xBF];

/// Applies one random format-blind mutation to `data`; `other` is another
/// corpus entry to splice with, `dictionary` the target's tokens.
pub fn mutate(data: &mut Vec<u8>, rng: &mut Rng, dictionary: &[&str], other: &[u8]) {
    match rng.below(13) {
        0 => flip_bit(data, rng),
        1 => set_byte(data, rng),
        2 => insert_random(data, rng),
        3 => delete_range(data, rng),
        4 => duplicate_range(data, rng),
        5 => splice(data, rng, other),
        6 | 7 => insert_token(data, rng, dictionary),
        8 => data.truncate(rng.below(data.len() + 1)),
        9 => replace_number(data, rng),
        10 => {
            let bytes = rng.pick(INVALID_UTF8).copied().unwrap_or_default();
            insert_at(data, rng, bytes);
        }
        11 => insert_at(data, rng, BOM),
        _ => long_run(data, rng),
    }
}

fn flip_bit(data: &mut [u8], rng: &mut Rng) {
    let at = rng.below(data.len());
    if let Some(byte) = data.get_mut(at) {
        *byte ^= 1 << rng.below(8);
    }
}

fn set_byte(data: &mut [u8], rng: &mut Rng) {
    let value = if rng.one_in(2) {
        rng.byte()
    } else {
        INTERESTING_BYTES[rng.below(INTERESTING_BYTES.len())]
    };
    let at = rng.below(data.len());
    if let Some(byte) = data.get_mut(at) {
        *byte = value;
    }
}

fn insert_random(data: &mut Vec<u8>, rng: &mut Rng) {
    let bytes: Vec<u8> = (0..rng.size(16)).map(|_| rng.byte()).collect();
    insert_at(data, rng, &bytes);
}

/// Inserts `bytes` at a random position.
pub fn insert_at(data: &mut Vec<u8>, rng: &mut Rng, bytes: &[u8]) {
    let at = rng.below(data.len() + 1);
    data.splice(at..at, bytes.iter().copied());
}

fn delete_range(data: &mut Vec<u8>, rng: &mut Rng) {
    let start = rng.below(data.len());
    let end = (start + rng.size(64)).min(data.len());
    data.drain(start..end);
}

fn duplicate_range(data: &mut Vec<u8>, rng: &mut Rng) {
    let start = rng.below(data.len());
    let end = (start + rng.size(64)).min(data.len());
    let chunk = data[start..end].to_vec();
    insert_at(data, rng, &chunk);
}

/// A prefix of `data` followed by a suffix of `other`.
fn splice(data: &mut Vec<u8>, rng: &mut Rng, other: &[u8]) {
    let cut = rng.below(data.len() + 1);
    let from = rng.below(other.len() + 1);
    data.truncate(cut);
    data.extend_from_slice(&other[from..]);
}

fn insert_token(data: &mut Vec<u8>, rng: &mut Rng, dictionary: &[&str]) {
    let token = if rng.one_in(3) || dictionary.is_empty() {
        rng.pick(NUMBERS).copied().unwrap_or_default()
    } else {
        rng.pick(dictionary).copied().unwrap_or_default()
    };
    if rng.one_in(2) {
        insert_at(data, rng, token.as_bytes());
    } else {
        // Overwrite instead, keeping the length about the same.
        let at = rng.below(data.len());
        let end = (at + token.len()).min(data.len());
        data.splice(at..end, token.bytes());
    }
}

/// Replaces a run of digits with an edge-case number (or inserts one).
fn replace_number(data: &mut Vec<u8>, rng: &mut Rng) {
    let number = rng.pick(NUMBERS).copied().unwrap_or("0").as_bytes();
    let starts: Vec<usize> = (0..data.len())
        .filter(|&i| data[i].is_ascii_digit() && (i == 0 || !data[i - 1].is_ascii_digit()))
        .collect();
    match rng.pick(&starts) {
        Some(&start) => {
            let len = data[start..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            data.splice(start..start + len, number.iter().copied());
        }
        None => insert_at(data, rng, number),
    }
}

/// Repeats one byte or a short chunk many times: long strings, long keys.
fn long_run(data: &mut Vec<u8>, rng: &mut Rng) {
    let start = rng.below(data.len());
    let end = (start + rng.size(4)).min(data.len());
    let chunk = match data.get(start..end) {
        Some(chunk) if !chunk.is_empty() => chunk.to_vec(),
        _ => vec![b'a'],
    };
    let times = rng.size(MAX_INPUT / 2 / chunk.len());
    let run: Vec<u8> = chunk.repeat(times);
    insert_at(data, rng, &run);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mutation_keeps_working_on_empty_and_tiny_inputs() {
        let mut rng = Rng::new(3);
        for _ in 0..10_000 {
            let mut data = match rng.below(3) {
                0 => Vec::new(),
                1 => vec![b'1'],
                _ => br#"{"a":12}"#.to_vec(),
            };
            mutate(&mut data, &mut rng, &["op"], b"xyz");
        }
    }

    #[test]
    fn numbers_are_replaced_in_place() {
        let mut rng = Rng::new(5);
        let mut data = b"after=12&x".to_vec();
        replace_number(&mut data, &mut rng);
        let text = String::from_utf8_lossy(&data);
        let number = text
            .strip_prefix("after=")
            .and_then(|rest| rest.strip_suffix("&x"));
        assert!(number.is_some_and(|n| NUMBERS.contains(&n)), "{text}");
    }
}
