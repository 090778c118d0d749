//! Turning corpus entries into new inputs: a few stacked mutations per
//! input, each either format-blind ([`bytes`]) or JSON-aware ([`json`]).

pub mod bytes;
pub mod json;

use crate::rng::Rng;

/// Largest input a target is given (longer results are cut): big enough
/// for long strings and deep nesting, small enough to keep runs fast.
pub const MAX_INPUT: usize = 64 * 1024;

/// A new input derived from `base` (spliced with `other` at times), using
/// the target's `dictionary` of tokens.
pub fn derive(base: &[u8], other: &[u8], rng: &mut Rng, dictionary: &[&str]) -> Vec<u8> {
    let mut data = base.to_vec();
    for _ in 0..rng.between(1, 4) {
        let structured = rng.one_in(2) && json::mutate(&mut data, rng, dictionary);
        if !structured {
            bytes::mutate(&mut data, rng, dictionary, other);
        }
        data.truncate(MAX_INPUT);
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_inputs_are_reproducible_and_bounded() {
        let run = |seed| {
            let mut rng = Rng::new(seed);
            (0..200)
                .map(|_| derive(br#"{"a":[1,"x"]}"#, b"other", &mut rng, &["op"]))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(9), run(9));
        assert!(run(9).iter().all(|input| input.len() <= MAX_INPUT));
    }
}
