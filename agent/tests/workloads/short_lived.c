/* Spins for 1.5 s of its own CPU time (whatever else the machine runs),
 * then exits. */
#include <stdint.h>
#include <time.h>
volatile uint64_t sink;
__attribute__((noinline)) void spin_then_exit(void) {
    struct timespec now;
    do {
        for (int i = 0; i < 100000; i++) sink += (uint64_t)i;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
    } while (now.tv_sec * 1000 + now.tv_nsec / 1000000 < 1500);
}
int main(void) { spin_then_exit(); return 0; }
