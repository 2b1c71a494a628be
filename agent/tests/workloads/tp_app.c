/* Emits tracecar_test:tick events once it gets SIGUSR1, then waits to be
 * killed (or exits with --exit).
 *
 *   tp_app COUNT [RATE_PER_SECOND] [--exit]
 *
 * Event i has seq = i, value = 3 * i - 7, msg = "event-<i>". RATE 0 (the
 * default) emits as fast as it can; otherwise events are paced in batches
 * of 1/1000 s and the achieved rate is printed on stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "wait_usr1.h"

#include "tp_app.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s COUNT [RATE] [--exit]\n", argv[0]);
        return 2;
    }
    long count = atol(argv[1]);
    double rate = argc > 2 ? atof(argv[2]) : 0;
    int exit_after = argc > 3 && strcmp(argv[3], "--exit") == 0;

    wait_for_sigusr1();

    char msg[32];
    double start = now();
    for (long i = 0; i < count; i++) {
        if (rate > 0 && i % 64 == 0) {
            double due = start + i / rate;
            while (now() < due) usleep(200);
        }
        snprintf(msg, sizeof msg, "event-%ld", i);
        lttng_ust_tracepoint(tracecar_test, tick, (int)i, 3 * i - 7, msg);
    }
    double took = now() - start;
    fprintf(stderr, "emitted %ld events in %.3f s (%.0f/s)\n", count, took,
            took > 0 ? count / took : 0);
    if (exit_after) return 0;
    for (;;) pause();
}
