//! cargo-fuzz target `config`: the body is `harness/config.rs`, which tests/fuzz_replay.rs also runs
//! over the checked-in corpus.
#![no_main]

#[path = "../harness/config.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
