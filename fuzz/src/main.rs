//! `exechub-fuzz`: fuzzes exechub's decoders on stable Rust, without
//! libFuzzer (which needs nightly).
//!
//! Coverage-free but guided: each target starts from a seed corpus kept in
//! the repository (`fuzz/corpus/<target>/`: valid and near-valid inputs),
//! derives new inputs with stacked mutations (bit flips, byte edits, splices
//! of two corpus entries, JSON-aware edits: other value types, deep nesting,
//! huge numbers, long strings, invalid UTF-8, a BOM), and keeps each input
//! whose outcome (an `Ok` variant, an error code and its fields) is new. The
//! PRNG is seeded (`--seed`), so a run can be repeated exactly.
//!
//! ```text
//! cargo run --release -p exechub-fuzz -- --seconds 60            # every target, 60 s each
//! cargo run --release -p exechub-fuzz -- --target jwt_claims --runs 100000
//! cargo run --release -p exechub-fuzz -- --target ws_frame fuzz/crashes/ws_frame-…  # replay
//! ```
//!
//! A panic — in a decoder, or in one of the targets' checks of what a
//! decoder promises — is a crash: the input is shrunk, saved to
//! `fuzz/crashes/<target>-<hash>`, and the run exits with status 1 after
//! the other targets. The last line is `fuzz: N passed, M failed`.

mod engine;
mod mutate;
mod rng;
mod targets;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use engine::{Budget, Report};
use targets::Target;

/// Fuzzes exechub's decoders; see the crate documentation.
#[derive(Debug, Parser)]
#[command(name = "exechub-fuzz")]
struct Args {
    /// Seconds per target (the default budget is 10).
    #[arg(long, conflicts_with = "runs")]
    seconds: Option<f64>,
    /// Executions per target, instead of a time budget.
    #[arg(long)]
    runs: Option<u64>,
    /// PRNG seed: the same seed, budget in runs and corpus give the same inputs.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Only these targets (repeatable); all when absent.
    #[arg(long = "target", value_name = "NAME", value_parser = target_name)]
    targets: Vec<String>,
    /// Seed corpus folder, one sub-folder per target.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/corpus"))]
    corpus: PathBuf,
    /// Where crashing inputs are saved.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/crashes"))]
    crashes: PathBuf,
    /// Input files to run once through the targets instead of fuzzing.
    inputs: Vec<PathBuf>,
}

fn target_name(name: &str) -> Result<String, String> {
    match targets::find(name) {
        Some(target) => Ok(target.name.to_owned()),
        None => {
            let names: Vec<&str> = targets::ALL.iter().map(|t| t.name).collect();
            Err(format!("no such target; targets: {}", names.join(", ")))
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let selected: Vec<&Target> = if args.targets.is_empty() {
        targets::ALL.iter().collect()
    } else {
        args.targets
            .iter()
            .filter_map(|n| targets::find(n))
            .collect()
    };
    engine::capture_panics();
    let failed = if args.inputs.is_empty() {
        fuzz_all(&args, &selected)
    } else {
        replay(&args.inputs, &selected)
    };
    let passed = selected.len() - failed;
    say(&format!("fuzz: {passed} passed, {failed} failed"));
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Fuzzes each target in turn; returns how many crashed.
fn fuzz_all(args: &Args, selected: &[&Target]) -> usize {
    let budget = match (args.runs, args.seconds) {
        (Some(runs), _) => Budget::Runs(runs),
        (None, seconds) => Budget::Time(Duration::from_secs_f64(seconds.unwrap_or(10.0))),
    };
    let mut failed = 0;
    for target in selected {
        let seeds = engine::seeds(&args.corpus, target.name).unwrap_or_else(|error| {
            say(&format!(
                "fuzz {}: cannot read its corpus: {error}",
                target.name
            ));
            Vec::new()
        });
        let seed_count = seeds.len();
        let report = engine::fuzz(target, seeds, budget, args.seed);
        failed += usize::from(report.crash.is_some());
        summarize(target, seed_count, &report, &args.crashes);
    }
    failed
}

/// One target's lines: counts, then the crash if there is one.
fn summarize(target: &Target, seed_count: usize, report: &Report, crashes: &Path) {
    let name = target.name;
    say(&format!(
        "fuzz {name}: {} executions, {} crashes ({seed_count} seeds, {} outcomes, corpus {}, slowest {:.1?})",
        report.executions,
        usize::from(report.crash.is_some()),
        report.outcomes,
        report.corpus,
        report.slowest,
    ));
    if let Some(crash) = &report.crash {
        let saved = match engine::save(crashes, name, &crash.input) {
            Ok(path) => path.display().to_string(),
            Err(error) => format!("(not saved: {error})"),
        };
        say(&format!("  crash: {}", crash.message.replace('\n', " ")));
        say(&format!(
            "  input ({} bytes): {}",
            crash.input.len(),
            escape(&crash.input)
        ));
        say(&format!("  saved: {saved}"));
    }
}

/// Runs each file once through each target; returns how many targets failed one.
fn replay(inputs: &[PathBuf], selected: &[&Target]) -> usize {
    let mut failed = 0;
    for target in selected {
        let mut ok = true;
        for path in inputs {
            let outcome = std::fs::read(path)
                .map_err(|error| format!("cannot read: {error}"))
                .and_then(|input| engine::execute(target, &input));
            let line = match outcome {
                Ok(label) => format!("ok ({label})"),
                Err(message) => {
                    ok = false;
                    format!("FAILED: {}", message.replace('\n', " "))
                }
            };
            say(&format!("fuzz {} {}: {line}", target.name, path.display()));
        }
        failed += usize::from(!ok);
    }
    failed
}

/// At most 300 characters of `input`, printable ASCII as is, the rest escaped.
fn escape(input: &[u8]) -> String {
    let full = input.escape_ascii().to_string();
    match full.get(..300) {
        Some(shown) if full.len() > 300 => format!("{shown}…"),
        _ => full,
    }
}

/// One line on stdout (a broken pipe is not worth a panic).
fn say(line: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}
