#ifndef MAMBA_IMAGE_H
#define MAMBA_IMAGE_H
#include <stddef.h>

// Decodes a PNG or JPEG file (told apart by its first bytes) into 8-bit interleaved pixels, rows
// top to bottom: 1 channel for a grayscale image, 3 for a color one. Alpha is dropped and palettes
// expanded, as Pillow's convert("RGB") does; 16-bit PNG samples keep their high byte. On success
// returns 0 and *pixels is a malloc'ed width * height * channels buffer the caller frees. On
// failure returns non-zero with one line in err (a truncated file, a CMYK JPEG, an image over
// max_pixels pixels, not a PNG or JPEG) and *pixels is NULL.
int mq_image_decode(const char *path, size_t max_pixels, unsigned char **pixels, int *width, int *height,
                    int *channels, char *err, size_t err_len);

#endif
