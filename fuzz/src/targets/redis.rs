//! The reply of the Redis store's range script, `[last_seq, oldest_seq,
//! epoch, [event JSON…]]`, parsed as the hub parses it: RESP into
//! `(u64, u64, String, Vec<Vec<u8>>)` by the redis crate, the epoch by
//! `Epoch::parse`, each event's seq by `exechub::event::seq_of`. (The
//! store's receipt parsers are private to it; only these are public.)

use exechub::event::{Epoch, seq_of, splice_seq};

/// RESP type markers, framing and the stored events' prefix.
pub const WORDS: &[&str] = &[
    "\r\n",
    "*",
    "$",
    ":",
    "-",
    "+",
    "_",
    "#",
    ",",
    "(",
    "=",
    "%",
    "~",
    ">",
    "$-1",
    "*-1",
    "*0",
    "-ERR x",
    "{\"seq\":",
    "{\"seq\":1,",
];

/// A range reply as the store reads it.
type Range = (u64, u64, String, Vec<Vec<u8>>);

/// `input` as a RESP reply, and as one stored event.
pub fn redis_range(input: &[u8]) -> String {
    let reply = match redis::parse_redis_value(input) {
        Ok(value) => match redis::from_redis_value::<Range>(value) {
            Ok((_, _, epoch, events)) => {
                let epoch = Epoch::parse(&epoch).is_some();
                let seqs = events.iter().filter(|e| seq_of(e).is_some()).count();
                format!("range:{epoch}:{}", seqs.min(3))
            }
            Err(_) => "other-reply".to_owned(),
        },
        Err(_) => "not-resp".to_owned(),
    };
    format!("{reply}|{}", stored_event(input))
}

/// `seq_of` on `input`, and on `input` behind a spliced seq.
fn stored_event(input: &[u8]) -> &'static str {
    let seq = u64::from_le_bytes(*input.first_chunk::<8>().unwrap_or(&[0; 8]));
    let spliced = splice_seq(seq, input);
    if input.first().is_some_and(|b| !b.is_ascii_digit()) {
        assert_eq!(
            seq_of(&spliced),
            Some(seq),
            "the spliced seq does not read back"
        );
    }
    match seq_of(input) {
        Some(n) => {
            let digits = input
                .strip_prefix(br#"{"seq":"#)
                .expect("a seq without the prefix");
            let run = digits.iter().take_while(|b| b.is_ascii_digit()).count();
            let significant = std::str::from_utf8(&digits[..run]).unwrap_or_default();
            let significant = significant.trim_start_matches('0');
            let expected = if n == 0 { String::new() } else { n.to_string() };
            assert_eq!(significant, expected, "seq_of read {n}");
            "seq"
        }
        None => "no-seq",
    }
}
