// PNG (libpng) and JPEG (libjpeg-turbo) decoding for image folders (docs/DESIGN.md section 9).
// Both libraries report errors by longjmp, which Swift cannot catch: this file owns the setjmp
// and turns every failure into a return code and a message.
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <png.h>
#include <jpeglib.h>
#include <jerror.h>
#include "mamba_image.h"

typedef struct {
    jmp_buf jump;
    char *err;
    size_t err_len;
} failure;

static void fail_with(failure *f, const char *message) {
    snprintf(f->err, f->err_len, "%s", message);
}

// ---- PNG ----

static void png_error_fn(png_structp png, png_const_charp message) {
    failure *f = (failure *)png_get_error_ptr(png);
    fail_with(f, message);
    longjmp(f->jump, 1);
}

static void png_warning_fn(png_structp png, png_const_charp message) {
    (void)png;
    (void)message;  // ancillary-chunk complaints; Pillow reads such files too
}

static int decode_png(FILE *file, size_t max_pixels, unsigned char **pixels, int *width, int *height, int *channels,
                      failure *f) {
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, f, png_error_fn, png_warning_fn);
    if (!png) { fail_with(f, "out of memory"); return 1; }
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        fail_with(f, "out of memory");
        return 1;
    }
    // Written after setjmp, read after a longjmp: volatile so the cleanup sees their values.
    unsigned char *volatile out = NULL;
    png_bytep *volatile rows = NULL;
    if (setjmp(f->jump)) {
        free(out);
        free(rows);
        png_destroy_read_struct(&png, &info, NULL);
        return 1;
    }
    png_init_io(png, file);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    int color = png_get_color_type(png, info), depth = png_get_bit_depth(png, info);
    if ((size_t)w * h > max_pixels) {
        snprintf(f->err, f->err_len, "%ux%u pixels is more than the %zu an image may have", (unsigned)w, (unsigned)h, max_pixels);
        longjmp(f->jump, 1);
    }
    if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (depth == 16) png_set_strip_16(png);
    png_set_strip_alpha(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int c = png_get_channels(png, info);
    size_t row_bytes = png_get_rowbytes(png, info);
    if (c != 1 && c != 3) {
        snprintf(f->err, f->err_len, "decodes to %d channels, expected 1 or 3", c);
        longjmp(f->jump, 1);
    }
    out = malloc(row_bytes * h);
    rows = malloc(sizeof(png_bytep) * h);
    if (!out || !rows) { fail_with(f, "out of memory"); longjmp(f->jump, 1); }
    for (png_uint_32 y = 0; y < h; y++) rows[y] = out + y * row_bytes;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    free(rows);
    png_destroy_read_struct(&png, &info, NULL);
    *pixels = out;
    *width = (int)w;
    *height = (int)h;
    *channels = c;
    return 0;
}

// ---- JPEG ----

typedef struct {
    struct jpeg_error_mgr manager;
    failure *failure;
} jpeg_failure;

static void jpeg_error_exit(j_common_ptr cinfo) {
    jpeg_failure *jf = (jpeg_failure *)cinfo->err;
    char message[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, message);
    fail_with(jf->failure, message);
    longjmp(jf->failure->jump, 1);
}

// Warnings pass silently except a premature end of file, which Pillow refuses as truncated
// (libjpeg would fill the rest of the image with gray).
static void jpeg_emit_message(j_common_ptr cinfo, int level) {
    if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) jpeg_error_exit(cinfo);
}

static int decode_jpeg(FILE *file, size_t max_pixels, unsigned char **pixels, int *width, int *height, int *channels,
                       failure *f) {
    struct jpeg_decompress_struct cinfo;
    jpeg_failure jf;
    cinfo.err = jpeg_std_error(&jf.manager);
    jf.manager.error_exit = jpeg_error_exit;
    jf.manager.emit_message = jpeg_emit_message;
    jf.failure = f;
    unsigned char *volatile out = NULL;
    if (setjmp(f->jump)) {
        free(out);
        jpeg_destroy_decompress(&cinfo);
        return 1;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_stdio_src(&cinfo, file);
    jpeg_read_header(&cinfo, TRUE);
    if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
        fail_with(f, "is a CMYK JPEG; convert it to RGB first");
        longjmp(f->jump, 1);
    }
    if ((size_t)cinfo.image_width * cinfo.image_height > max_pixels) {
        snprintf(f->err, f->err_len, "%ux%u pixels is more than the %zu an image may have", cinfo.image_width,
                 cinfo.image_height, max_pixels);
        longjmp(f->jump, 1);
    }
    // libjpeg's defaults (islow DCT, fancy upsampling) are what Pillow decodes with.
    cinfo.out_color_space = cinfo.num_components == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_start_decompress(&cinfo);
    size_t row_bytes = (size_t)cinfo.output_width * cinfo.output_components;
    out = malloc(row_bytes * cinfo.output_height);
    if (!out) { fail_with(f, "out of memory"); longjmp(f->jump, 1); }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = out + cinfo.output_scanline * row_bytes;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_decompress(&cinfo);
    *pixels = out;
    *width = (int)cinfo.output_width;
    *height = (int)cinfo.output_height;
    *channels = cinfo.output_components;
    jpeg_destroy_decompress(&cinfo);
    return 0;
}

int mq_image_decode(const char *path, size_t max_pixels, unsigned char **pixels, int *width, int *height,
                    int *channels, char *err, size_t err_len) {
    *pixels = NULL;
    failure f = {.err = err, .err_len = err_len};
    FILE *file = fopen(path, "rb");
    if (!file) { fail_with(&f, "cannot be opened"); return 1; }
    unsigned char head[8] = {0};
    size_t n = fread(head, 1, sizeof head, file);
    rewind(file);
    int rc;
    if (n == 8 && png_sig_cmp(head, 0, 8) == 0) {
        rc = decode_png(file, max_pixels, pixels, width, height, channels, &f);
    } else if (n >= 3 && head[0] == 0xFF && head[1] == 0xD8 && head[2] == 0xFF) {
        rc = decode_jpeg(file, max_pixels, pixels, width, height, channels, &f);
    } else {
        fail_with(&f, "is neither a PNG nor a JPEG file");
        rc = 1;
    }
    fclose(file);
    return rc;
}
