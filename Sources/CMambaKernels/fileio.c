// copy_file_range(2) needs _GNU_SOURCE, which Swift's Glibc module does not define: this wrapper
// lets the checkpoint writer move shard data from file to file inside the kernel.
#define _GNU_SOURCE
#include <unistd.h>
#include "mamba_fileio.h"

long mq_copy_file_range(int fd_in, int fd_out, unsigned long len) {
    return (long)copy_file_range(fd_in, NULL, fd_out, NULL, (size_t)len, 0);
}
