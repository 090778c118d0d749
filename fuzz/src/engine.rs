//! The fuzzing loop for one target: run the seeds, then derive new inputs
//! from the corpus until the budget is spent, keeping every input whose
//! outcome label is new. A panic (or an input slower than [`SLOW`]) ends the
//! target's run; the input is shrunk and saved.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::mutate;
use crate::rng::Rng;
use crate::targets::Target;

/// An input taking longer than this is a failure: a decoder facing the
/// network must not be made to spin (inputs are at most 64 KiB).
pub const SLOW: Duration = Duration::from_secs(2);
/// Most inputs kept per target; past it, new outcomes are counted, not kept.
const MAX_CORPUS: usize = 4096;
/// Most executions spent shrinking a crashing input.
const SHRINK_RUNS: usize = 4000;

/// How long each target runs.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    /// For this long.
    Time(Duration),
    /// For this many executions (seeds included).
    Runs(u64),
}

/// What fuzzing one target came to.
#[derive(Debug)]
pub struct Report {
    /// Inputs run.
    pub executions: u64,
    /// Distinct outcome labels seen.
    pub outcomes: usize,
    /// Inputs in the corpus at the end (seeds included).
    pub corpus: usize,
    /// The slowest single execution.
    pub slowest: Duration,
    /// The failure that ended the run, if any.
    pub crash: Option<Crash>,
}

/// A failing input.
#[derive(Debug)]
pub struct Crash {
    /// The panic message (or how slow it was).
    pub message: String,
    /// The input, shrunk as far as it still fails.
    pub input: Vec<u8>,
}

thread_local! {
    /// The message of the latest panic on this thread, taken by [`execute`].
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Routes panic messages to [`execute`] instead of stderr; call once.
pub fn capture_panics() {
    panic::set_hook(Box::new(|info| {
        LAST_PANIC.with(|last| *last.borrow_mut() = Some(info.to_string()));
    }));
}

/// Runs `input` once: its outcome label, or why it failed.
pub fn execute(target: &Target, input: &[u8]) -> Result<String, String> {
    let started = Instant::now();
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| (target.run)(input)));
    let took = started.elapsed();
    match outcome {
        Ok(_) if took > SLOW => Err(format!("slow input: one execution took {took:?}")),
        Ok(label) => Ok(label),
        Err(_) => Err(LAST_PANIC
            .with(|last| last.borrow_mut().take())
            .unwrap_or_else(|| "panicked".to_owned())),
    }
}

/// Fuzzes `target` from `seeds` within `budget`, with a PRNG seeded by `seed`.
pub fn fuzz(target: &Target, seeds: Vec<Vec<u8>>, budget: Budget, seed: u64) -> Report {
    let mut rng = Rng::new(seed ^ name_hash(target.name));
    let mut corpus = if seeds.is_empty() {
        vec![Vec::new()]
    } else {
        seeds
    };
    let mut seen = HashSet::new();
    let mut report = Report {
        executions: 0,
        outcomes: 0,
        corpus: 0,
        slowest: Duration::ZERO,
        crash: None,
    };
    let started = Instant::now();
    let mut next_seed = 0;
    while within(budget, started, report.executions) {
        // The seeds first, as they are; then inputs derived from the corpus.
        let input = if next_seed < corpus.len() && report.executions == next_seed as u64 {
            next_seed += 1;
            corpus[next_seed - 1].clone()
        } else {
            // The shorter of two picks: small inputs mutate and run faster.
            let (a, b) = (
                &corpus[rng.below(corpus.len())],
                &corpus[rng.below(corpus.len())],
            );
            let base = if a.len() <= b.len() { a } else { b };
            let other = &corpus[rng.below(corpus.len())];
            mutate::derive(base, other, &mut rng, target.dictionary)
        };
        let began = Instant::now();
        let outcome = execute(target, &input);
        report.slowest = report.slowest.max(began.elapsed());
        report.executions += 1;
        match outcome {
            Ok(label) => {
                if seen.insert(label) && corpus.len() < MAX_CORPUS {
                    corpus.push(input);
                }
            }
            Err(message) => {
                report.crash = Some(shrink(target, input, message));
                break;
            }
        }
    }
    report.outcomes = seen.len();
    report.corpus = corpus.len();
    report
}

fn within(budget: Budget, started: Instant, executions: u64) -> bool {
    match budget {
        Budget::Time(limit) => started.elapsed() < limit,
        Budget::Runs(runs) => executions < runs,
    }
}

/// Removes chunks of `input` (halves, then quarters… then single bytes)
/// while it still fails, within [`SHRINK_RUNS`] executions.
fn shrink(target: &Target, mut input: Vec<u8>, mut message: String) -> Crash {
    let mut runs = 0;
    let mut chunk = input.len() / 2;
    while chunk > 0 && runs < SHRINK_RUNS {
        let mut at = 0;
        while at < input.len() && runs < SHRINK_RUNS {
            let mut smaller = input.clone();
            smaller.drain(at..(at + chunk).min(input.len()));
            runs += 1;
            match execute(target, &smaller) {
                Err(still) => (input, message) = (smaller, still),
                Ok(_) => at += chunk,
            }
        }
        chunk /= 2;
    }
    Crash { message, input }
}

/// Saves `input` as `<dir>/<target>-<16 hex digits of its SHA-256>`.
///
/// # Errors
/// When the folder cannot be made or the file written.
pub fn save(dir: &Path, target: &str, input: &[u8]) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let digest = Sha256::digest(input);
    let mut name = format!("{target}-");
    for byte in &digest[..8] {
        let _ = write!(name, "{byte:02x}");
    }
    let path = dir.join(name);
    std::fs::write(&path, input)?;
    Ok(path)
}

/// The corpus of `target` under `dir`: every file in `dir/<target>/`, by name.
///
/// # Errors
/// When the folder exists but cannot be read.
pub fn seeds(dir: &Path, target: &str) -> std::io::Result<Vec<Vec<u8>>> {
    let folder = dir.join(target);
    if !folder.is_dir() {
        return Ok(Vec::new());
    }
    let mut paths: Vec<PathBuf> = std::fs::read_dir(folder)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    paths.retain(|path| path.is_file());
    paths.sort();
    paths.iter().map(std::fs::read).collect()
}

/// A stable per-target PRNG offset (FNV-1a), so targets get different inputs.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picky(input: &[u8]) -> String {
        assert!(!input.windows(3).any(|w| w == b"bug"), "found the bug");
        "fine".to_owned()
    }

    const PICKY: Target = Target {
        name: "picky",
        dictionary: &["bug"],
        run: picky,
    };

    #[test]
    fn a_panic_is_caught_shrunk_and_reported() {
        capture_panics();
        let report = fuzz(
            &PICKY,
            vec![b"a harmless seed".to_vec()],
            Budget::Runs(100_000),
            1,
        );
        let crash = report.crash.expect("the dictionary token gets inserted");
        assert_eq!(crash.input, b"bug");
        assert!(crash.message.contains("found the bug"), "{}", crash.message);
        let _ = panic::take_hook();
    }

    /// Never fails; every input length is a new outcome.
    const LENGTHS: Target = Target {
        name: "lengths",
        dictionary: &["token"],
        run: |input| input.len().to_string(),
    };

    #[test]
    fn runs_are_reproducible_and_keep_new_outcomes() {
        let run = |seed| {
            let report = fuzz(&LENGTHS, vec![b"seed".to_vec()], Budget::Runs(500), seed);
            (report.executions, report.outcomes, report.corpus)
        };
        let (executions, outcomes, corpus) = run(4);
        assert_eq!(run(4), (executions, outcomes, corpus));
        assert_eq!(executions, 500);
        assert!(outcomes > 10, "only {outcomes} lengths");
        assert_eq!(corpus, outcomes + 1, "each new outcome kept, plus the seed");
    }
}
