//! Reading JIT code with a disassembler (iced-x86): where a compiled
//! method is entered, and where it returns. Pure: code bytes and their
//! address in, addresses out.
//!
//! Returns are found by a linear sweep of the method's code range, as the
//! runtime reported it (perf map or method-load event). Only `ret`
//! instructions count as returns: a method that leaves through a tail
//! call (`jmp` to another method) or an exception never reaches one, and
//! its calls are reported as still pending rather than guessed at.

use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic};

/// The `ret` instructions of the code at `start`, by address.
pub fn returns(code: &[u8], start: u64) -> Vec<u64> {
    let mut decoder = Decoder::with_ip(64, code, start, DecoderOptions::NONE);
    let mut out = Vec::new();
    let mut instruction = Instruction::default();
    while decoder.can_decode() {
        decoder.decode_out(&mut instruction);
        if !instruction.is_invalid() && instruction.flow_control() == FlowControl::Return {
            out.push(instruction.ip());
        }
    }
    out
}

/// Where calls enter a HotSpot-compiled method. An instance method starts
/// with its unverified entry: an inline-cache check that compares the
/// receiver's class and jumps out to the IC-miss stub when it differs,
/// then padding, then the verified entry, where direct calls land and the
/// check falls through. A breakpoint there sees every call. Static
/// methods (and code without the check) are entered at `start`.
pub fn java_verified_entry(code: &[u8], start: u64) -> u64 {
    let end = start + code.len() as u64;
    let mut decoder = Decoder::with_ip(64, code, start, DecoderOptions::NONE);
    let mut instruction = Instruction::default();
    let mut compared = false;
    let mut after_check = None;
    // The check is a handful of instructions; look no further.
    for _ in 0..12 {
        if !decoder.can_decode() {
            break;
        }
        decoder.decode_out(&mut instruction);
        if instruction.is_invalid() {
            return start;
        }
        match after_check {
            None => {
                if instruction.mnemonic() == Mnemonic::Cmp {
                    compared = true;
                } else if compared
                    && instruction.flow_control() == FlowControl::ConditionalBranch
                    && !(start..end).contains(&instruction.near_branch_target())
                {
                    after_check = Some(instruction.next_ip());
                } else if instruction.flow_control() != FlowControl::Next {
                    return start;
                }
            }
            // The first instruction after the padding.
            Some(_) if instruction.mnemonic() == Mnemonic::Nop => {}
            Some(_) => return instruction.ip(),
        }
    }
    start
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The start of a C2-compiled instance method, as HotSpot 17 wrote it
    /// here (`int Work.inst(int)`): the inline-cache check, padding, the
    /// verified entry, the body, a safepoint poll and the return.
    const JAVA_INSTANCE: &[u8] = &[
        0x44, 0x8b, 0x56, 0x08, // mov r10d, [rsi+8]
        0x49, 0xbb, 0x00, 0x00, 0x00, 0x53, 0x57, 0x7f, 0x00, 0x00, // movabs r11, …
        0x4d, 0x03, 0xd3, // add r10, r11
        0x49, 0x3b, 0xc2, // cmp rax, r10
        0x0f, 0x85, 0x66, 0x17, 0xac, 0xff, // jne <ic miss stub>
        0x66, 0x90, // nop
        0x0f, 0x1f, 0x40, 0x00, // nop
        0x48, 0x81, 0xec, 0x18, 0x00, 0x00, 0x00, // sub rsp, 0x18  <- verified entry
        0x48, 0x89, 0x6c, 0x24, 0x10, // mov [rsp+0x10], rbp
        0x8b, 0xc2, // mov eax, edx
        0x48, 0x83, 0xc4, 0x10, // add rsp, 0x10
        0x5d, // pop rbp
        0x49, 0x3b, 0xa7, 0x40, 0x03, 0x00, 0x00, // cmp rsp, [r15+0x340]
        0x0f, 0x87, 0x01, 0x00, 0x00, 0x00, // ja +1
        0xc3, // ret
        0x49, 0xba, // (the poll's slow path follows)
    ];
    const BASE: u64 = 0x7f57_c4ec_7a00;

    #[test]
    fn the_verified_entry_follows_the_inline_cache_check() {
        assert_eq!(java_verified_entry(JAVA_INSTANCE, BASE), BASE + 0x20);
        // A static method starts with its frame: entered at the start.
        let static_method = &JAVA_INSTANCE[0x20..];
        assert_eq!(java_verified_entry(static_method, BASE), BASE);
        // Garbage is entered at the start, not guessed at.
        assert_eq!(java_verified_entry(&[0xff, 0xff], BASE), BASE);
    }

    #[test]
    fn returns_are_found_by_address() {
        assert_eq!(returns(JAVA_INSTANCE, BASE), vec![BASE + 0x40]);
        // push rbp; mov rbp, rsp; test edi, edi; je +2; pop rbp; ret; pop rbp; ret 8
        let two = [
            0x55, 0x48, 0x89, 0xe5, 0x85, 0xff, 0x74, 0x02, 0x5d, 0xc3, 0x5d, 0xc2, 0x08, 0x00,
        ];
        assert_eq!(returns(&two, 0x1000), vec![0x1009, 0x100b]);
        assert!(returns(&[], 0x1000).is_empty());
    }
}
