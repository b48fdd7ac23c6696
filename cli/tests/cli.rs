//! Snapshots of the `blackbox` command: `--help` and each text subcommand on
//! the fixtures in `tests/fixtures/`. Update them after an intended change
//! with `TRYCMD=overwrite cargo test --test cli`.

#[test]
fn cli() {
    trycmd::TestCases::new()
        .default_bin_name("blackbox")
        .env("NO_COLOR", "1")
        .case("tests/cli/*.toml");
}
