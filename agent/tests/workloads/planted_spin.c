/* Busy in a function with a name, for a profile of a binary that an app
 * planted debug files beside (.dwp, .gnu_debuglink target). */
#include <stdint.h>
#include <stdio.h>
volatile uint64_t sink;
__attribute__((noinline)) void spin_in_planted_binary(void) {
    for (;;)
        for (int i = 0; i < 1000000; i++) sink += (uint64_t)i;
}
int main(void) {
    printf("ready\n");
    fflush(stdout);
    spin_in_planted_binary();
}
