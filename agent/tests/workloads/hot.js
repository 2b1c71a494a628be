// A hot JavaScript function for node --perf-basic-prof.
function tracecarJsSpin(n) {
  let s = 0;
  for (let i = 0; i < n; i++) s += Math.sqrt(i) * Math.sin(i);
  return s;
}
let total = 0;
for (;;) {
  total += tracecarJsSpin(1e6);
  if (total === 42) console.log(total);
}
