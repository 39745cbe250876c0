//! The manual page doc/etl.1 is generated from the command line's definitions (`etl man`, with
//! clap_mangen) and checked in, so it can be installed without building. This test keeps the copy
//! in the repository equal to what the current command line generates.

mod common;

use std::path::Path;

use common::etl_in;

const REGENERATE: &str = "cargo run -q -- man > doc/etl.1";

#[test]
fn checked_in_man_page_matches_the_command_line() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let generated = etl_in(root, &["man"]);
    generated.expect_code(0);
    let page = generated.stdout;
    let checked_in = std::fs::read_to_string(root.join("doc/etl.1")).unwrap_or_default();
    if page != checked_in {
        let first = page
            .lines()
            .zip(checked_in.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| page.lines().count().min(checked_in.lines().count()));
        panic!(
            "doc/etl.1 differs from what `etl man` generates (from line {}: {:?} in the checked-in \
             page, {:?} generated); regenerate it with `{REGENERATE}` and commit it",
            first + 1,
            checked_in.lines().nth(first).unwrap_or("<end>"),
            page.lines().nth(first).unwrap_or("<end>"),
        );
    }

    // One page for everything: every public subcommand with its options, the exit codes; not the
    // internal ones.
    for sub in ["run", "gen-fake-data", "demo", "completions"] {
        assert!(page.contains(&format!(".SS \"etl {sub}\"")), "etl {sub}");
    }
    for flag in [
        "\\-\\-shard",
        "\\-\\-seed",
        "\\-\\-report",
        "\\-\\-log\\-format",
    ] {
        assert!(page.contains(flag), "{flag}");
    }
    assert!(page.contains(".SH \"EXIT STATUS\""));
    assert!(page.contains("75 another run holds the lock"));
    assert!(!page.contains(".SS \"etl worker\"") && !page.contains(".SS \"etl man\""));
}
