//! The nettrace decoder, fed what a .NET runtime (or anything on its
//! socket) sends, in two pieces as a stream would deliver it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracecar_agent::dotnet::nettrace::Decoder;

fuzz_target!(|input: &[u8]| {
    let mut decoder = Decoder::new();
    let (first, second) = input.split_at(input.len() / 2);
    for piece in [first, second] {
        decoder.feed(piece);
        loop {
            match decoder.next_event() {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
    let _ = decoder.trace();
});
