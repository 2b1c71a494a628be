// An interpreted caller of a hot optimized function: `caller` runs few
// bytecodes of its own (V8 tiers functions up by bytecode budget), so it
// stays interpreted while `tracecarHot` is optimized.
function tracecarHot(n) {
  let s = 0;
  for (let i = 0; i < n; i++) s += Math.sqrt(i) * Math.sin(i);
  return s;
}
function tracecarInterpretedCaller() {
  return tracecarHot(2e6);
}
let total = 0;
for (;;) {
  total += tracecarInterpretedCaller();
  if (total === 42) console.log(total);
}
