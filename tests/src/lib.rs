//! End-to-end tests of posledger across crates; the tests live in `tests/tests/`, the
//! fixtures in `tests/fixtures/`.
