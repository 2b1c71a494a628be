/* A call graph with known paths to leaf(): a -> b -> leaf runs twice for
 * every c -> leaf, and make(size) allocates 100 bytes from path_small and
 * 300 bytes from path_large, once each per round: so callers of leaf()
 * split 2:1, and bytes allocated by path split 1:3. Built with and without
 * frame pointers. */
#include <stdlib.h>
#include <unistd.h>

volatile long sink;
__attribute__((noinline, noipa)) int leaf(int x) { return x + 1; }
__attribute__((noinline, noipa)) int b(int x) { return leaf(x) * 2; }
__attribute__((noinline, noipa)) int a(int x) { return b(x) + 1; }
__attribute__((noinline, noipa)) int c(int x) { return leaf(x) - 1; }
__attribute__((noinline, noipa)) void make(size_t size) {
    char *volatile p = malloc(size);
    p[0] = 1;
    sink += p[0];
    free(p);
}
__attribute__((noinline, noipa)) void path_small(void) { make(100); }
__attribute__((noinline, noipa)) void path_large(void) { make(300); }
int main(void) {
    for (int i = 0;; i++) {
        sink += a(i);
        sink += a(i);
        sink += c(i);
        path_small();
        path_large();
        usleep(500);
    }
}
