/* The memory benchmark's target: THREADS threads (default 1000) running
 * through ENTRIES (default 100,000) copies of one small function in
 * anonymous executable memory, each named in /tmp/perf-PID.map as a JIT
 * runtime names its methods, so that a profile sees many threads, many
 * distinct JIT frames and a large perf map. Prints "ready" on stdout once
 * the map is written and the threads run; runs until killed.
 *
 *   many_threads [THREADS [ENTRIES]]
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define JIT_AT ((void *)0x7e0000000000)
#define SLOT 128

__attribute__((noinline, section("jitwork"))) long jit_work(long n) {
    long s = 0;
    for (long i = 0; i < n; i++) s += i ^ (s >> 3);
    return s;
}
extern char __start_jitwork[], __stop_jitwork[];

typedef long (*work_fn)(long);
static char *code;
static long entries;
static volatile long sink;

static void *worker(void *arg) {
    unsigned long k = (unsigned long)(uintptr_t)arg * 7919u;
    for (;;) {
        for (int i = 0; i < 64; i++) {
            k = k * 6364136223846793005ul + 1442695040888963407ul;
            work_fn f = (work_fn)(code + (k >> 33) % (unsigned long)entries * SLOT);
            sink += f(200);
        }
        usleep(1000);
    }
    return 0;
}

int main(int argc, char **argv) {
    long threads = argc > 1 ? atol(argv[1]) : 1000;
    entries = argc > 2 ? atol(argv[2]) : 100000;
    size_t size = (size_t)(__stop_jitwork - __start_jitwork);
    if (size > SLOT) return 2;
    code = mmap(JIT_AT, (size_t)entries * SLOT, PROT_READ | PROT_WRITE | PROT_EXEC,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (code == MAP_FAILED) return 1;
    char path[64];
    snprintf(path, sizeof path, "/tmp/perf-%d.map", getpid());
    FILE *map = fopen(path, "w");
    if (!map) return 1;
    for (long i = 0; i < entries; i++) {
        memcpy(code + i * SLOT, __start_jitwork, size);
        fprintf(map, "%lx %zx Jit.Method%ld(long)\n", (unsigned long)(uintptr_t)(code + i * SLOT), size, i);
    }
    fclose(map);
    for (long t = 0; t < threads; t++) {
        pthread_t id;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 64 * 1024);
        if (pthread_create(&id, &attr, worker, (void *)(uintptr_t)t) != 0) return 3;
    }
    printf("ready\n");
    fflush(stdout);
    for (;;) pause();
}
