/* uprobe benchmark target: waits for a byte on stdin (so probes can attach
 * first), calls calc() N times in total over T threads, and prints the
 * wall time in seconds. With "jit" as the third argument, it calls a copy
 * of calc() in anonymous executable memory instead (named jit_calc in
 * /tmp/perf-PID.map), which only a breakpoint probe can trace. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
__attribute__((noinline, section("calccode"))) int calc(int x) { return x * 3 + 1; }
extern char __start_calccode[], __stop_calccode[];
static int (*volatile fn)(int) = calc;
static long per_thread;
static void *worker(void *arg) {
    (void)arg;
    volatile int sink = 0;
    for (long i = 0; i < per_thread; i++) sink += fn((int)(i & 0x7fffffff));
    return 0;
}
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    int threads = argc > 2 ? atoi(argv[2]) : 1;
    if (threads < 1 || threads > 64) threads = 1;
    if (argc > 3 && strcmp(argv[3], "jit") == 0) {
        size_t size = (size_t)(__stop_calccode - __start_calccode);
        char *code = mmap(0, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (code == MAP_FAILED) return 1;
        memcpy(code, __start_calccode, size);
        fn = (int (*)(int))code;
        char path[64];
        snprintf(path, sizeof path, "/tmp/perf-%d.map", getpid());
        FILE *map = fopen(path, "w");
        if (!map) return 1;
        fprintf(map, "%lx %zx jit_calc\n", (unsigned long)(uintptr_t)code, size);
        fclose(map);
    }
    per_thread = n / threads;
    char go;
    if (read(0, &go, 1) != 1) return 1;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    pthread_t t[64];
    for (int i = 0; i < threads; i++) pthread_create(&t[i], 0, worker, 0);
    for (int i = 0; i < threads; i++) pthread_join(t[i], 0);
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.6f\n", (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9);
    if (argc > 3) {
        char path[64];
        snprintf(path, sizeof path, "/tmp/perf-%d.map", getpid());
        unlink(path);
    }
    return 0;
}
