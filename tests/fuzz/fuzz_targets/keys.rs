//! cargo-fuzz target `keys`: the body is `harness/keys.rs`, which tests/fuzz_replay.rs also runs
//! over the checked-in corpus.
#![no_main]

#[path = "../harness/keys.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
