#include <cblas.h>
// OpenBLAS extensions (declared in Debian's cblas.h too; repeated here for other layouts).
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
char *openblas_get_corename(void);
