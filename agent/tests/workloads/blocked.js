// Blocks its main thread in a known JavaScript function, tracecarJsWait,
// which waits on a SharedArrayBuffer with Atomics.wait (a futex) 50 ms at a
// time: for mode=offcpu, a JIT runtime blocked in a named function.
const cell = new Int32Array(new SharedArrayBuffer(4));
function tracecarJsWait() {
  return Atomics.wait(cell, 0, 0, 50);
}
function tracecarJsLoop() {
  for (;;) tracecarJsWait();
}
tracecarJsLoop();
