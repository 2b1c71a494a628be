public class Hot {
    static double tracecarJavaSpin(int n) {
        double s = 0;
        for (int i = 0; i < n; i++) {
            s += Math.sqrt(i);
        }
        return s;
    }

    public static void main(String[] args) {
        double total = 0;
        while (true) {
            total += tracecarJavaSpin(1_000_000);
            if (total < 0) {
                System.out.println(total);
            }
        }
    }
}
