/* Maps one file, whose path is about 4 KiB long, COUNT times (argv[2]),
 * one page each: /proc/PID/maps becomes COUNT lines of 4 KiB. argv[1] is
 * the file. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) return perror(argv[1]), 1;
    long count = atol(argv[2]);
    for (long i = 0; i < count; i++) {
        /* A hole after each page keeps the kernel from merging them. */
        char *hole = mmap(0, 8192, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (hole == MAP_FAILED || munmap(hole + 4096, 4096)) return perror("hole"), 1;
        if (mmap(hole + 4096, 4096, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0) == MAP_FAILED)
            return perror("mmap"), 1;
        munmap(hole, 4096);
    }
    printf("ready\n");
    fflush(stdout);
    for (;;) pause();
}
