//! Compile-time behaviour of `#[distributed_lock]`: every supported shape compiles, every
//! mistake is an error on the offending token (snapshots in `ui/fail/*.stderr`; regenerate with
//! `TRYBUILD=overwrite` after a compiler upgrade).

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
