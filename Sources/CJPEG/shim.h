// jpeglib.h needs stdio.h's FILE and size_t first.
#include <stdio.h>
#include <jpeglib.h>
