/* A process that listens on the .NET diagnostic socket's name and never
 * accepts: its backlog is full (it queued one connection itself), so
 * every connect(2) to it blocks until a deadline ends it. Copied to a file
 * named `dotnet`, the agent takes it for a .NET runtime. */
#include <fcntl.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static unsigned long long start_time(void) {
    char buf[4096];
    FILE *f = fopen("/proc/self/stat", "r");
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')') + 2; /* field 3 */
    for (int field = 3; field < 22; field++) p = strchr(p, ' ') + 1;
    return strtoull(p, 0, 10);
}

int main(void) {
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    snprintf(addr.sun_path, sizeof addr.sun_path, "/tmp/dotnet-diagnostic-%d-%llu-socket",
             getpid(), start_time());
    unlink(addr.sun_path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) || listen(fd, 0)) return perror("listen"), 1;
    /* Fill the backlog: one queued connection, never accepted. */
    int mine = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
    connect(mine, (struct sockaddr *)&addr, sizeof addr);
    printf("ready\n");
    fflush(stdout);
    for (;;) pause();
}
