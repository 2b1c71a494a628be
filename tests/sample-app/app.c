/* tracecar's sample application: stands in for a real service in the
 * end-to-end test and the demo. It "serves requests" in a loop that keeps
 * one CPU busy, mostly in the recursive fib(); every request calls
 * calc(id) and echo(path) and emits a sample_app:request LTTng event.
 *
 *   sample-app [FIB_N]   (default 27)
 *
 * Built with frame pointers and symbols so that profiles and uprobes name
 * its functions. Like a JIT runtime, it also copies a small spin loop into
 * anonymous executable memory and names it in /tmp/perf-PID.map, so that
 * profiles show whether the agent finds perf maps (x86_64 only). */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
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

typedef void (*jit_fn)(void);

/* mov ecx, 200000; 1: dec ecx; jnz 1b; ret */
static const unsigned char spin_code[] = {0xb9, 0x40, 0x0d, 0x03, 0x00, 0xff, 0xc9, 0x75, 0xfc, 0xc3};

static jit_fn make_jit_spin(void) {
#if defined(__x86_64__)
    void *code = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (code == MAP_FAILED) return NULL;
    memcpy(code, spin_code, sizeof spin_code);
    char path[64];
    snprintf(path, sizeof path, "/tmp/perf-%d.map", getpid());
    FILE *map = fopen(path, "w");
    if (!map) {
        perror("sample-app: cannot write the perf map");
    } else {
        fprintf(map, "%lx %zx jit_spin\n", (unsigned long)code, sizeof spin_code);
        fclose(map);
    }
    return (jit_fn)code;
#else
    return NULL;
#endif
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 27;
    char path[64];
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("sample-app %d: serving fib(%d) requests\n", getpid(), n);
    jit_fn jit_spin = make_jit_spin();
    for (long id = 0;; id++) {
        snprintf(path, sizeof path, "/fib/%d?id=%ld", n, id);
        long result = fib(n);
        calc(id);
        echo(path);
        if (jit_spin) jit_spin();
        lttng_ust_tracepoint(sample_app, request, id, path, n, result);
        if (id % 1000 == 0) printf("request %ld: fib(%d) = %ld\n", id, n, result);
        /* ~1 ms idle per request: busy, but not only busy. */
        usleep(1000);
    }
}
