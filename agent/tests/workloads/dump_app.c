/* A native process to dump: three threads parked in pause(), and the
 * main thread spinning two calls deep, so that a core file's backtrace
 * has known frames. Prints "ready" once its threads exist. */
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

volatile unsigned long tracecar_counter;

static void *parked(void *arg) {
    (void)arg;
    for (;;)
        pause();
    return NULL;
}

__attribute__((noinline)) void tracecar_dump_innermost(void) {
    for (;;)
        tracecar_counter++;
}

__attribute__((noinline)) void tracecar_dump_middle(void) {
    tracecar_dump_innermost();
    __asm__ volatile("");
}

int main(void) {
    pthread_t threads[3];
    for (int i = 0; i < 3; i++)
        pthread_create(&threads[i], NULL, parked, NULL);
    printf("ready\n");
    fflush(stdout);
    tracecar_dump_middle();
    return 0;
}
