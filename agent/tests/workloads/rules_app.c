/* What the collection rules' tests make fire, each at a known moment.
 *
 *   rules_app spin       prints "ready", waits for SIGUSR1, prints the
 *                        Unix time in ms, then burns a CPU in spin_work()
 *                        for ever.
 *   rules_app ramp MB    prints "ready", waits for SIGUSR1, then touches
 *                        1 MiB every 20 ms; when it holds MB/2 it prints
 *                        the Unix time in ms ("half"), at MB*5/8 it stops
 *                        and waits for SIGUSR1 again, then grows without
 *                        bound (until the kernel's OOM killer).
 *   rules_app crash      prints "ready", handles SIGUSR2 (prints "usr2"),
 *                        and at SIGUSR1 prints the Unix time in ms and
 *                        writes through a null pointer in crash_here()
 *                        (SIGSEGV, which it does not handle).
 *   rules_app slow       prints "ready", calls slow_call(1) (which sleeps
 *                        1 ms) every 20 ms; at SIGUSR1 prints the Unix
 *                        time in ms and calls slow_call(30) from then on. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <signal.h>

volatile uint64_t sink;

static long long unix_ms(void) {
    struct timeval t;
    gettimeofday(&t, NULL);
    return (long long)t.tv_sec * 1000 + t.tv_usec / 1000;
}

__attribute__((noinline)) void spin_work(void) {
    for (;;)
        for (int i = 0; i < 100000; i++) sink += (uint64_t)i;
}

/* Kept reachable, so that the compiler cannot drop the allocation. */
char *volatile held_blocks[1 << 16];
volatile size_t held_count;

__attribute__((noinline)) void grow(size_t mib) {
    char *block = malloc(mib << 20);
    if (!block) abort();
    memset(block, 1, mib << 20);
    held_blocks[held_count++ % (1 << 16)] = block;
}

static void on_usr2(int sig) {
    (void)sig;
    static const char line[] = "usr2\n";
    (void)!write(1, line, sizeof line - 1);
}

__attribute__((noinline)) void crash_here(volatile int *where) {
    *where = 42;
}

__attribute__((noinline)) int slow_call(int ms) {
    struct timespec t = {0, ms * 1000L * 1000L};
    nanosleep(&t, NULL);
    return ms;
}

static volatile sig_atomic_t go_slow;

static void on_usr1(int sig) {
    (void)sig;
    go_slow = 1;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "crash") == 0) signal(SIGUSR2, on_usr2);
    if (argc > 1 && strcmp(argv[1], "slow") == 0) {
        setvbuf(stdout, NULL, _IONBF, 0);
        signal(SIGUSR1, on_usr1);
        printf("ready\n");
        struct timespec pause = {0, 20 * 1000L * 1000L};
        int printed = 0;
        for (;;) {
            if (go_slow && !printed) {
                printf("%lld\n", unix_ms());
                printed = 1;
            }
            slow_call(go_slow ? 30 : 1);
            nanosleep(&pause, NULL);
        }
    }
    setvbuf(stdout, NULL, _IONBF, 0);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_BLOCK, &set, NULL);
    printf("ready\n");
    int sig;
    sigwait(&set, &sig);
    if (argc > 1 && strcmp(argv[1], "crash") == 0) {
        printf("%lld\n", unix_ms());
        crash_here((volatile int *)0);
    }
    if (argc > 1 && strcmp(argv[1], "spin") == 0) {
        printf("%lld\n", unix_ms());
        spin_work();
    }
    if (argc > 2 && strcmp(argv[1], "ramp") == 0) {
        long mb = atol(argv[2]), held = 0;
        struct timespec step = {0, 20 * 1000 * 1000};
        while (held < mb * 5 / 8) {
            grow(1);
            held++;
            if (held == mb / 2) printf("half %lld\n", unix_ms());
            nanosleep(&step, NULL);
        }
        printf("holding\n");
        sigwait(&set, &sig);
        for (;;) {
            grow(1);
            nanosleep(&step, NULL);
        }
    }
    return 2;
}
