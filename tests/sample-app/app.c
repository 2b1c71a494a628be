/* tracecar's sample application: stands in for a real service in the
 * end-to-end test and the demo. It "serves requests" in a loop that keeps
 * one CPU busy, mostly in the recursive fib(); every request calls
 * calc(id) and echo(path) and emits a sample_app:request LTTng event.
 *
 *   sample-app [FIB_N]   (default 27)
 *
 * Built with frame pointers and symbols so that profiles and uprobes name
 * its functions. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sample_app.h"

__attribute__((noinline)) long fib(int n) {
    return n < 2 ? n : fib(n - 1) + fib(n - 2);
}

/* Checked by the end-to-end test: calc(x) == 3 * x + 1. */
__attribute__((noinline)) long calc(long x) {
    __asm__ volatile("" ::: "memory");
    return 3 * x + 1;
}

static volatile size_t echoed;

__attribute__((noinline)) size_t echo(const char *message) {
    __asm__ volatile("" ::: "memory");
    echoed += strlen(message);
    return strlen(message);
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 27;
    char path[64];
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("sample-app %d: serving fib(%d) requests\n", getpid(), n);
    for (long id = 0;; id++) {
        snprintf(path, sizeof path, "/fib/%d?id=%ld", n, id);
        long result = fib(n);
        calc(id);
        echo(path);
        lttng_ust_tracepoint(sample_app, request, id, path, n, result);
        if (id % 1000 == 0) printf("request %ld: fib(%d) = %ld\n", id, n, result);
        /* ~1 ms idle per request: busy, but not only busy. */
        usleep(1000);
    }
}
