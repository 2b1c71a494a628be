/* After SIGUSR1, mallocs and frees blocks of known sizes (run under
 * LD_PRELOAD=liblttng-ust-libc-wrapper.so), then waits to be killed. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "wait_usr1.h"

int main(void) {
    wait_for_sigusr1();
    static const size_t sizes[] = {12345, 777, 31337};
    static char *volatile kept[3];
    for (int i = 0; i < 3; i++) {
        kept[i] = malloc(sizes[i]);
        memset(kept[i], 1, sizes[i]);
    }
    for (int i = 0; i < 3; i++) free(kept[i]);
    for (;;) pause();
}
