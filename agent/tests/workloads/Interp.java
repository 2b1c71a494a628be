// An interpreted caller (kept out of the JIT with -XX:CompileCommand=exclude)
// of a hot compiled method: what a Java profile shows for interpreted frames.
public class Interp {
    static double tracecarJavaSpin(int n) {
        double s = 0;
        for (int i = 0; i < n; i++) s += Math.sqrt(i);
        return s;
    }
    static double tracecarInterpretedCaller(int rounds) {
        double t = 0;
        for (int r = 0; r < rounds; r++) t += tracecarJavaSpin(200_000);
        return t;
    }
    public static void main(String[] a) {
        double total = 0;
        while (true) { total += tracecarInterpretedCaller(10); if (total < 0) System.out.println(total); }
    }
}
