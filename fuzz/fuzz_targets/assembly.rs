//! The ECMA-335 reader, fed what an app can put in an assembly the runtime
//! loaded (the agent reads the app's own assemblies to say why a method has
//! no code): every offset is checked, and nothing panics or allocates what
//! a header claims.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracecar_agent::dotnet::assembly::Assembly;

fuzz_target!(|input: &[u8]| {
    let Ok(assembly) = Assembly::parse(input) else {
        return;
    };
    for index in 0..assembly.methods.len().min(64) {
        let _ = assembly.methods[index].qualified();
        let _ = assembly.callers(index);
    }
});
