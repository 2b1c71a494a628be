/* Deep random call chains: two threads each walk 100 to 120 calls deep
 * through 16 functions chosen at random, then spin a little at the
 * bottom, so nearly every CPU sample has a call stack never seen before.
 * A profile's distinct stacks, and the agent's memory, grow with its
 * samples (agent/tests/memory.rs). Prints "ready"; runs until killed. */
#include <pthread.h>
#include <stdio.h>

typedef long (*step_fn)(unsigned long, int);
static step_fn steps[16];
static volatile long sink;

static unsigned long next(unsigned long k) {
    return k * 6364136223846793005ul + 1442695040888963407ul;
}

/* The "+ 1" keeps each call a real call (no tail call), so each level
 * leaves a frame. */
#define STEP(n)                                                      \
    __attribute__((noinline)) static long step##n(unsigned long k, int depth) { \
        if (depth == 0) {                                            \
            long x = 0;                                              \
            for (int i = 0; i < 4000; i++) x += i ^ (long)k;         \
            return x;                                                \
        }                                                            \
        k = next(k);                                                 \
        return steps[(k >> 33) & 15](k, depth - 1) + 1;              \
    }
STEP(0) STEP(1) STEP(2) STEP(3) STEP(4) STEP(5) STEP(6) STEP(7)
STEP(8) STEP(9) STEP(10) STEP(11) STEP(12) STEP(13) STEP(14) STEP(15)

static void *walk(void *seed) {
    unsigned long k = (unsigned long)seed;
    for (;;) {
        k = next(k);
        sink += steps[k >> 60](k, 100 + (int)((k >> 40) % 21));
    }
    return NULL;
}

int main(void) {
    step_fn all[16] = {step0, step1, step2,  step3,  step4,  step5,  step6,  step7,
                       step8, step9, step10, step11, step12, step13, step14, step15};
    for (int i = 0; i < 16; i++) steps[i] = all[i];
    pthread_t threads[2];
    for (unsigned long i = 0; i < 2; i++) pthread_create(&threads[i], NULL, walk, (void *)(i * 7919 + 1));
    printf("ready\n");
    fflush(stdout);
    pthread_join(threads[0], NULL);
    return 0;
}
