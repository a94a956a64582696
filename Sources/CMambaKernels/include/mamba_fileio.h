#ifndef MAMBA_FILEIO_H
#define MAMBA_FILEIO_H

/// copy_file_range(fd_in, NULL, fd_out, NULL, len, 0): bytes copied, or -1 with errno set.
long mq_copy_file_range(int fd_in, int fd_out, unsigned long len);

#endif
