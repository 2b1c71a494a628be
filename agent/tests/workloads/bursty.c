/* Idle for a second, then busy in burst_work() for about six seconds,
 * over and over: the intermittent spike trigger mode is for. The burst is
 * long enough that two 1 s captures started by a trigger that looks every
 * 0.5 s both fall inside one burst, whatever the machine's speed: with a
 * 2 s burst, the second capture started just as the burst ended on a fast
 * machine, and caught only idle time. */
#include <stdint.h>
#include <time.h>
#include <unistd.h>
volatile uint64_t sink;
static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}
__attribute__((noinline)) void burst_work(void) {
    double end = now_s() + 6.0;
    while (now_s() < end)
        for (int i = 0; i < 100000; i++) sink += (uint64_t)i;
}
int main(void) {
    for (;;) {
        sleep(1);
        burst_work();
    }
}
