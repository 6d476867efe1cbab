//! Every rsa decoder on arbitrary bytes: no panic, and whatever decodes re-encodes identically.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sintra_crypto::fuzzing::{Family, decode};

fuzz_target!(|data: &[u8]| {
    decode(Family::Rsa, data);
});
