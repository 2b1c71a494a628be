/* Spins for about one second, then exits. */
#include <stdint.h>
#include <time.h>
volatile uint64_t sink;
__attribute__((noinline)) void spin_then_exit(void) {
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    do {
        for (int i = 0; i < 100000; i++) sink += i;
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while (now.tv_sec - start.tv_sec < 1);
}
int main(void) { spin_then_exit(); return 0; }
