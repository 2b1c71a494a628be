//! The runtime presets' options the webhook injects, shared with the tests
//! that check them against the real runtimes.

/// `NODE_OPTIONS` for `tracecar.dev/runtime: node`.
///
/// - `--perf-basic-prof-only-functions` writes `/tmp/perf-PID.map` with
///   JavaScript functions (what profiles need) and, unlike
///   `--perf-basic-prof`, no `isolate-*-v8.log` in the app's working
///   directory (Node 20: a stray file, and a write into a directory that
///   may be read-only). V8's `--logfile` would move that log, but Node
///   refuses it in `NODE_OPTIONS`.
/// - `--interpreted-frames-native-stack` gives each interpreted function
///   its own copy of the interpreter entry trampoline, listed in the perf
///   map as `JS:~name`, so interpreted callers are named instead of all
///   being `Builtins_InterpreterEntryTrampoline`.
pub const NODE_OPTIONS: &str = "--perf-basic-prof-only-functions --interpreted-frames-native-stack";
