// copy_file_range(2) needs _GNU_SOURCE, which Swift's Glibc module does not define: this wrapper
// lets the checkpoint writer move shard data from file to file inside the kernel.
#define _GNU_SOURCE
#include <unistd.h>
#include "mamba_fileio.h"

long mq_copy_file_range(int fd_in, int fd_out, unsigned long len) {
    return (long)copy_file_range(fd_in, NULL, fd_out, NULL, (size_t)len, 0);
}

// SIGINT/SIGTERM to a pipe (the self-pipe trick): the handler only write(2)s the signal number,
// which is async-signal-safe, and is installed by sigaction before this returns, so no signal
// arriving afterwards is lost. A thread reading the pipe does the cleanup.
#include <signal.h>
#include <string.h>

static int interrupt_pipe[2] = {-1, -1};

static void on_interrupt(int sig) {
    unsigned char b = (unsigned char)sig;
    ssize_t ignored = write(interrupt_pipe[1], &b, 1);
    (void)ignored;
}

int mq_install_interrupt_pipe(void) {
    if (interrupt_pipe[0] >= 0) return interrupt_pipe[0];
    if (pipe(interrupt_pipe) != 0) return -1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_interrupt;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    return interrupt_pipe[0];
}
