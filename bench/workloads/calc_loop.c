/* uprobe benchmark target: waits for a byte on stdin (so probes can attach
 * first), calls calc() N times in total over T threads, and prints the
 * wall time in seconds. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
__attribute__((noinline)) int calc(int x) { return x * 3 + 1; }
static long per_thread;
static void *worker(void *arg) {
    (void)arg;
    volatile int sink = 0;
    for (long i = 0; i < per_thread; i++) sink += calc((int)(i & 0x7fffffff));
    return 0;
}
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    int threads = argc > 2 ? atoi(argv[2]) : 1;
    if (threads < 1 || threads > 64) threads = 1;
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
    return 0;
}
