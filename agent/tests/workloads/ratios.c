/* Three hot functions with known relative costs 1:2:3, called from mid().
 * Each spins for a fixed amount of its thread's CPU time, so the ratios
 * hold whatever the micro-architecture does with the loop. */
#include <stdint.h>
#include <time.h>
volatile uint64_t sink;
static double cpu_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}
#define SPIN_MS(ms)                                              \
    do {                                                         \
        double end = cpu_ms() + (ms);                            \
        while (cpu_ms() < end)                                   \
            for (int i = 0; i < 20000; i++) sink += (uint64_t)i; \
    } while (0)
__attribute__((noinline)) void leaf_one(void) { SPIN_MS(10); }
__attribute__((noinline)) void leaf_two(void) { SPIN_MS(20); }
__attribute__((noinline)) void leaf_three(void) { SPIN_MS(30); }
__attribute__((noinline)) void mid(void) { leaf_one(); leaf_two(); leaf_three(); }
int main(void) { for (;;) mid(); }
