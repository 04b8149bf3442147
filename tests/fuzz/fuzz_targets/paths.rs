//! cargo-fuzz target `paths`: the body is `harness/paths.rs`, which tests/fuzz_replay.rs also runs
//! over the checked-in corpus.
#![no_main]

#[path = "../harness/paths.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
