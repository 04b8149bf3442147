//! cargo-fuzz target `tokens`: the body is `harness/tokens.rs`, which tests/fuzz_replay.rs also runs
//! over the checked-in corpus.
#![no_main]

#[path = "../harness/tokens.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
