/* Uprobe targets: calc(int) and a recursive fib(int), called in a loop
 * with known arguments. */
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>
__attribute__((noinline)) int calc(int x) { return x * 3 + 1; }
__attribute__((noinline)) int fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
__attribute__((noinline)) const char *echo(const char *s) { return s; }
volatile int sink;
int main(void) {
    for (int i = 0;; i++) {
        sink += calc(i % 1000);
        sink += fib(i % 8);
        char buf[32];
        snprintf(buf, sizeof buf, "hello-%d", i % 1000);
        sink += echo(buf)[0];
        usleep(2000);
    }
}
