//! The README's Configuration table and the hub's `--help` name the same
//! flags: a flag added to `hub/src/config.rs` without a row, or a row left
//! behind by a flag that was removed or renamed, fails this test.
//!
//! Only the main command's flags count (`exechub token` has its own, which
//! the table does not list); `--help` and `--version` are left out.

mod helpers;

use std::collections::BTreeSet;

/// Flags clap adds itself, which the table does not list.
const BUILT_IN: [&str; 2] = ["--help", "--version"];

/// The long flags `--help` defines: the first tokens of each option line
/// (`  -h, --help`, `      --listen <LISTEN>`), never flags named in the
/// descriptions below them.
fn flags_in_help(help: &str) -> BTreeSet<String> {
    let mut flags = BTreeSet::new();
    for line in help.lines() {
        let line = line.trim_start();
        if !line.starts_with('-') {
            continue;
        }
        for token in line.split_whitespace() {
            let token = token.trim_end_matches(',');
            if !token.starts_with('-') {
                break;
            }
            if let Some(name) = token.strip_prefix("--") {
                let name = name.split(['=', '[', '<']).next().unwrap_or_default();
                if !name.is_empty() {
                    flags.insert(format!("--{name}"));
                }
            }
        }
    }
    flags
}

/// The flags in the first column of the table under `## Configuration`
/// (rows starting with "| `--"; a cell may hold two, as in
/// "`--publish-rate` / `--publish-burst`").
fn flags_in_readme(readme: &str) -> BTreeSet<String> {
    let section = readme
        .split("\n## ")
        .find(|section| section.starts_with("Configuration\n"))
        .expect("README.md has a `## Configuration` section");
    let mut flags = BTreeSet::new();
    for row in section.lines().filter(|line| line.starts_with("| `--")) {
        let first_cell = row.split('|').nth(1).unwrap_or_default();
        // Between backticks: the odd pieces of a split on '`'.
        for code in first_cell.split('`').skip(1).step_by(2) {
            if code.starts_with("--") {
                flags.insert(code.to_owned());
            }
        }
    }
    flags
}

#[test]
fn the_configuration_table_lists_every_flag_of_help() {
    let output = std::process::Command::new(helpers::hub_binary())
        .arg("--help")
        .output()
        .expect("the exechub binary runs");
    assert!(
        output.status.success(),
        "exechub --help failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let help = String::from_utf8(output.stdout).expect("--help prints UTF-8");
    let mut in_help = flags_in_help(&help);
    for flag in BUILT_IN {
        in_help.remove(flag);
    }

    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    let readme = std::fs::read_to_string(path).expect("README.md is readable");
    let in_readme = flags_in_readme(&readme);

    assert!(
        in_help.len() > 10,
        "found only {in_help:?} in --help; did its format change?\n{help}"
    );
    let missing: Vec<_> = in_help.difference(&in_readme).collect();
    let unknown: Vec<_> = in_readme.difference(&in_help).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "README.md's Configuration table and `exechub --help` disagree.\n\
         missing from the README: {missing:?}\n\
         in the README, not in --help: {unknown:?}"
    );
}

#[test]
fn flags_are_read_from_option_lines_and_table_cells_only() {
    let help = "Options:\n      --listen <LISTEN>\n          Address; see `--publish-rate`\n\
                \x20     --log-format <LOG_FORMAT>\n          Possible values:\n\
                \x20         - json: one object per line (--not-an-option)\n\
                \x20     --dev-token\n  -h, --help\n          Print help\n";
    let expected: BTreeSet<String> = ["--listen", "--log-format", "--dev-token", "--help"]
        .map(String::from)
        .into();
    assert_eq!(flags_in_help(help), expected);

    let readme = "# x\n\n## Configuration\n\n| Flag | Env |\n|---|---|\n\
                  | `--publish-rate` / `--publish-burst` | `EXECHUB_PUBLISH_RATE` |\n\
                  | `--listen` | `--not-a-flag-column` |\n\n## Next\n\n| `--elsewhere` | x |\n";
    let expected: BTreeSet<String> = ["--publish-rate", "--publish-burst", "--listen"]
        .map(String::from)
        .into();
    assert_eq!(flags_in_readme(readme), expected);
}
