/* JIT-like code for breakpoint probes: jit_calc() (x*3+1) and jit_name()
 * (returns a string) are copied into anonymous executable memory at a
 * fixed address and named in /tmp/perf-PID.map, as a JIT runtime does, so
 * two processes run the same virtual address.
 *
 *   jit_calls           call jit_calc(i % 1000) every millisecond, forever
 *   jit_calls count N   wait for SIGUSR1, make N calls as fast as possible
 *                       on T threads (3rd argument, default 1), print the
 *                       number made, then wait forever
 *   jit_calls tiers     three copies named as three tiers of one method
 *                       (QuickJitted, MinOptJitted, OptimizedTier1, 0x100
 *                       apart), calling the last one every millisecond
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "wait_usr1.h"

#define JIT_AT ((void *)0x7e0000000000)

__attribute__((noinline, section("jitcalc"))) int jit_calc(int x) { return x * 3 + 1; }
extern char __start_jitcalc[], __stop_jitcalc[];

typedef int (*calc_fn)(int);
static calc_fn calc;
static long per_thread;
static volatile long sink;

static void *worker(void *arg) {
    (void)arg;
    long s = 0;
    for (long i = 0; i < per_thread; i++) s += calc((int)(i % 1000));
    sink += s;
    return 0;
}

int main(int argc, char **argv) {
    size_t size = (size_t)(__stop_jitcalc - __start_jitcalc);
    char *code = mmap(JIT_AT, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (code == MAP_FAILED) return 1;
    memcpy(code, __start_jitcalc, size);
    calc = (calc_fn)code;
    char path[64];
    snprintf(path, sizeof path, "/tmp/perf-%d.map", getpid());
    FILE *map = fopen(path, "w");
    if (!map) return 1;
    fprintf(map, "%lx %zx jitted_calc(int)\n", (unsigned long)(uintptr_t)code, size);
    fclose(map);
    if (argc > 1 && strcmp(argv[1], "tiers") == 0) {
        static const char *tiers[] = {"QuickJitted", "MinOptJitted", "OptimizedTier1"};
        map = fopen(path, "w");
        if (!map) return 1;
        for (int k = 0; k < 3; k++) {
            memcpy(code + 0x100 * k, __start_jitcalc, size);
            fprintf(map, "%lx %zx jitted_calc(int)[%s]\n",
                    (unsigned long)(uintptr_t)(code + 0x100 * k), size, tiers[k]);
        }
        fclose(map);
        calc = (calc_fn)(code + 0x200);
    }
    if (argc > 2 && strcmp(argv[1], "count") == 0) {
        long n = atol(argv[2]);
        int threads = argc > 3 ? atoi(argv[3]) : 1;
        if (threads < 1 || threads > 16) threads = 1;
        per_thread = n / threads;
        wait_for_sigusr1();
        pthread_t t[16];
        for (int i = 0; i < threads; i++) pthread_create(&t[i], 0, worker, 0);
        for (int i = 0; i < threads; i++) pthread_join(t[i], 0);
        printf("%ld\n", per_thread * threads);
        fflush(stdout);
        for (;;) pause();
    }
    for (int i = 0;; i++) {
        sink += calc(i % 1000);
        usleep(1000);
    }
}
