//! The bounded ELF reader, fed what an app can put in a binary or library
//! it maps: every part of it is read only within its limits, and nothing
//! panics or allocates what a header claims.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracecar_agent::elf::{Elf, Symbols};

fuzz_target!(|input: &[u8]| {
    let Ok(mut elf) = Elf::from_bytes(input.to_vec(), "fuzz".into()) else {
        return;
    };
    let _ = elf.is_go();
    let _ = elf.build_id();
    for name in [".text", ".eh_frame", ".eh_frame_hdr", ".debug_frame"] {
        let _ = elf.section_data(name);
    }
    if let Ok(symbols) = Symbols::of(&mut elf) {
        for offset in [0u64, 64, 4096, u64::MAX] {
            let _ = symbols.at_offset(offset);
        }
    }
    let _ = elf.is_code_offset(4096);
});
