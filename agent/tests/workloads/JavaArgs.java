// Two methods for breakpoint probes: a static one (twice) and an instance
// one (scaled), called with k = 0..999 over and over. The test runs it
// with -XX:CompileCommand=dontinline,JavaArgs::* so that each keeps an
// entry of its own.
public class JavaArgs {
    int bias = 3;

    static int twice(int n) {
        return n * 2;
    }

    int scaled(int n) {
        return n * 5 + bias;
    }

    public static void main(String[] args) throws Exception {
        JavaArgs self = new JavaArgs();
        long total = 0;
        int k = 0;
        while (true) {
            for (int i = 0; i < 1000; i++) {
                total += twice(k);
                total += self.scaled(k);
                k = (k + 1) % 1000;
            }
            Thread.sleep(1);
            if (total == 42) {
                System.out.println(total);
            }
        }
    }
}
