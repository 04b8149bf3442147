//! cargo-fuzz target `admin_json`: the body is `harness/admin_json.rs`, which tests/fuzz_replay.rs also runs
//! over the checked-in corpus.
#![no_main]

#[path = "../harness/admin_json.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
