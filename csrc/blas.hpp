// The BLAS symbols we call, declared once. They come from the scipy-openblas32 wheel, whose
// exported names carry a `scipy_` prefix (and 32-bit integers), so no system cblas.h applies.
#pragma once

extern "C" {
/// Fortran SGEMM: C = alpha * op(A) * op(B) + beta * C, all column-major.
void scipy_sgemm_(const char* transa, const char* transb, const int* m, const int* n,
                  const int* k, const float* alpha, const float* a, const int* lda, const float* b,
                  const int* ldb, const float* beta, float* c, const int* ldc);
void scipy_openblas_set_num_threads(int num_threads);
int scipy_openblas_get_num_threads(void);
}

namespace trajtransfer::blas {

/// C (n x n, row-major) = alpha * T^T S + beta * C for T, S stored as L rows of n floats
/// (row-major L x n): C[i][j] = alpha * sum_l T[l][i] * S[l][j] + beta * C[i][j].
/// In column-major terms the buffers are n x L matrices and C^T = S * T^T.
inline void sgemm_tn_rows(int n, int rows, float alpha, const float* t, const float* s, float beta,
                          float* c) {
  const char na = 'N', tr = 'T';
  scipy_sgemm_(&na, &tr, &n, &n, &rows, &alpha, s, &n, t, &n, &beta, c, &n);
}

}  // namespace trajtransfer::blas
