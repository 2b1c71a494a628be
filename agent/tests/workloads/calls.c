/* Uprobe targets: calc(int) and a recursive fib(int), called in a loop
 * with known arguments. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
__attribute__((noinline)) int calc(int x) { return x * 3 + 1; }
__attribute__((noinline)) int fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
__attribute__((noinline)) const char *echo(const char *s) { return s; }
struct point { int x; int y; long z; };
__attribute__((noinline)) long point_sum(const struct point *p) { return p->x + p->y + p->z; }
/* A UTF-16LE buffer, as .NET strings hold their characters. */
__attribute__((noinline)) int wide_len(const uint16_t *s) { int n = 0; while (s[n]) n++; return n; }
volatile int sink;
int main(void) {
    for (int i = 0;; i++) {
        sink += calc(i % 1000);
        sink += fib(i % 8);
        char buf[32];
        snprintf(buf, sizeof buf, "hello-%d", i % 1000);
        sink += echo(buf)[0];
        struct point p = {i % 1000, 2 * (i % 1000), 3 * (i % 1000)};
        sink += point_sum(&p);
        uint16_t wide[16];
        int k = 0;
        for (const char *c = buf; *c && k < 15; c++) wide[k++] = (uint16_t)(unsigned char)*c;
        wide[0] = 0x00e9; /* 'é': not ASCII, so UTF-16 decoding is really tested */
        wide[k] = 0;
        sink += wide_len(wide);
        void *volatile block = malloc((size_t)(i % 100) + 1);
        free(block);
        usleep(2000);
    }
}
