// tracecarJsWork(n, m) for breakpoint probes: called with (k, 2k), k counting
// 0..999. It is too big for TurboFan to inline into its caller, so it has
// an entry of its own.
function tracecarJsWork(n, m) {
  let s = 0;
  for (let i = 0; i < 50; i++) {
    s = (s * 31 + n + i) % 1000003; s ^= (s << 3); s = s % 999983; s += n & 7; s -= (i * 13) % 11;
    s = (s * 7 + 3) % 1000003; s ^= (s >> 2); s = s % 999979; s += (n * i) & 15; s -= (i * 17) % 13;
    s = (s * 5 + 1) % 1000003; s ^= (s << 1); s = s % 999961; s += (n + i) & 31; s -= (i * 19) % 7;
    s = (s * 3 + 9) % 1000003; s ^= (s >> 3); s = s % 999953; s += (n - i) & 63; s -= (i * 23) % 5;
    s = (s * 37 + n + i) % 1000003; s ^= (s << 3); s = s % 999983; s += n & 7; s -= (i * 13) % 11;
    s = (s * 7 + 3) % 1000003; s ^= (s >> 2); s = s % 999979; s += (n * i) & 15; s -= (i * 29) % 13;
    s = (s * 5 + 1) % 1000003; s ^= (s << 1); s = s % 999961; s += (n + i) & 31; s -= (i * 19) % 7;
    s = (s * 3 + 9) % 1000003; s ^= (s >> 3); s = s % 999953; s += (n - i) & 63; s -= (i * 23) % 5;
  }
  return s + m;
}
let k = 0, t = 0;
setInterval(() => { for (let i = 0; i < 100; i++) { t += tracecarJsWork(k, 2 * k); k = (k + 1) % 1000; } }, 1);
