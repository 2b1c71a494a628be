/* Context switches at a chosen rate: two threads pass a byte back and
 * forth over two pipes (each pass blocks one thread in read() and wakes
 * the other), with a little work in pass_work() between passes.
 *
 * usage: switches [RATE [TRIPS [GO]]]
 *   RATE   context switches per second to aim at (0, the default: as fast
 *          as the machine goes), paced in 10 ms slices; a round trip is two
 *          switches (each thread blocks once)
 *   TRIPS  make this many round trips, then exit 0 (default: forever): a
 *          fixed amount of work, whose CPU time benchmarks compare
 *   GO     if "wait", wait for a byte on stdin first (a profiler attaches)
 * Prints "ready" once both threads run. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))

static int ping[2], pong[2];
static volatile unsigned long sink;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

NOINLINE void pass_work(void) {
    for (int i = 0; i < 200; i++) sink += i;
}

NOINLINE void wait_for_ball(int fd) {
    char c;
    if (read(fd, &c, 1) != 1) exit(3);
}

NOINLINE void throw_ball(int fd) {
    if (write(fd, "b", 1) != 1) exit(4);
}

static void *partner(void *arg) {
    (void)arg;
    for (;;) {
        wait_for_ball(ping[0]);
        pass_work();
        throw_ball(pong[1]);
    }
    return NULL;
}

int main(int argc, char **argv) {
    double rate = argc > 1 ? atof(argv[1]) : 0;
    long trips = argc > 2 ? atol(argv[2]) : 0;
    if (pipe(ping) || pipe(pong)) return 2;
    pthread_t t;
    if (pthread_create(&t, NULL, partner, NULL)) return 1;
    printf("ready\n");
    fflush(stdout);
    if (argc > 3) {
        char go;
        if (read(0, &go, 1) != 1) return 5;
    }
    double slice = now();
    long in_slice = 0;
    /* One round trip blocks each thread once: two switches. */
    long per_slice = rate > 0 ? (long)(rate / 2 / 100) : 0;
    for (;;) {
        throw_ball(ping[1]);
        wait_for_ball(pong[0]);
        pass_work();
        if (per_slice && ++in_slice >= per_slice) {
            double next = slice + 0.01, t = now();
            if (next > t) {
                struct timespec ts = {0, (long)((next - t) * 1e9)};
                nanosleep(&ts, NULL);
            }
            slice = next;
            in_slice = 0;
        }
        if (trips > 0 && --trips == 0) return 0;
    }
}
