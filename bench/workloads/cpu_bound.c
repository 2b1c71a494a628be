/* Benchmark workload: waits for a byte on stdin (so a profiler can attach
 * first), does a fixed amount of CPU work on THREADS threads through a
 * few levels of calls, and prints the work's wall time in seconds. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static uint64_t units = 300;
__attribute__((noinline)) uint64_t hash_block(uint64_t seed) {
    uint64_t h = seed;
    for (int i = 0; i < 100000; i++) h = (h ^ (uint64_t)i) * 0x100000001b3ULL;
    return h;
}
__attribute__((noinline)) uint64_t parse_request(uint64_t seed) { return hash_block(seed) + hash_block(seed + 1); }
__attribute__((noinline)) uint64_t handle(uint64_t seed) { return parse_request(seed) ^ hash_block(seed * 3); }
static void *worker(void *arg) {
    uint64_t acc = (uint64_t)(uintptr_t)arg;
    for (uint64_t u = 0; u < units; u++) acc += handle(acc + u);
    return (void *)(uintptr_t)acc;
}
int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    if (argc > 2) units = strtoull(argv[2], 0, 10);
    char go;
    if (read(0, &go, 1) != 1) return 1;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    pthread_t t[64];
    for (int i = 0; i < threads && i < 64; i++) pthread_create(&t[i], 0, worker, (void *)(uintptr_t)i);
    for (int i = 0; i < threads && i < 64; i++) pthread_join(t[i], 0);
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.6f\n", (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9);
    return 0;
}
