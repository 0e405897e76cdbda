/*
 * A stand-in libcublas for the CPU emulation of the CUDA backends (see
 * emu.h): the four functions the backends look up, on host memory.
 * cublasGemmEx is a plain column-major GEMM with f32 accumulation that
 * checks its arguments the way cuBLAS documents (leading dimensions, types,
 * compute type) and returns CUBLAS_STATUS_INVALID_VALUE /
 * CUBLAS_STATUS_NOT_SUPPORTED otherwise, so layout mistakes fail the tests.
 * Plain C with the ABI of cublas_api.h (enums as int, handles as pointers).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

enum {
    ST_SUCCESS = 0,
    ST_INVALID_VALUE = 7,
    ST_NOT_SUPPORTED = 15,
    OP_N = 0,
    OP_T = 1,
    R_32F = 0,
    R_16F = 2,
    R_16BF = 14,
    COMPUTE_32F = 68,
};

static int handle_token;
static int calls; /* GEMMs run, for the curious debugger */

int cublasCreate_v2(void **handle)
{
    *handle = &handle_token;
    return ST_SUCCESS;
}

int cublasDestroy_v2(void *handle)
{
    return handle == &handle_token ? ST_SUCCESS : ST_INVALID_VALUE;
}

int cublasSetStream_v2(void *handle, void *stream)
{
    (void)stream;
    return handle == &handle_token ? ST_SUCCESS : ST_INVALID_VALUE;
}

const char *cublasGetStatusString(int status)
{
    switch (status) {
    case ST_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case ST_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case ST_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    }
    return "CUBLAS_STATUS_(fake)";
}

static float bits_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static float load(const void *p, int type, size_t i)
{
    if (type == R_32F)
        return ((const float *)p)[i];
    uint16_t h = ((const uint16_t *)p)[i];
    if (type == R_16BF)
        return bits_float((uint32_t)h << 16);
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    if (exp == 0) {
        float mag = ldexpf((float)mant, -24);
        return sign ? -mag : mag;
    }
    if (exp == 31)
        return bits_float(sign | 0x7f800000u | (mant << 13));
    return bits_float(sign | ((exp - 15u + 127u) << 23) | (mant << 13));
}

int cublasGemmEx(void *handle, int transa, int transb, int m, int n, int k, const void *alpha,
                 const void *A, int Atype, int lda, const void *B, int Btype, int ldb,
                 const void *beta, void *C, int Ctype, int ldc, int computeType, int algo)
{
    (void)algo;
    if (handle != &handle_token)
        return ST_INVALID_VALUE;
    if ((transa != OP_N && transa != OP_T) || (transb != OP_N && transb != OP_T) || m < 0 ||
        n < 0 || k < 0)
        return ST_INVALID_VALUE;
    /* stored shapes: A is m x k (N) or k x m (T), B is k x n (N) or n x k (T) */
    int a_rows = transa == OP_N ? m : k, b_rows = transb == OP_N ? k : n;
    if (lda < (a_rows > 1 ? a_rows : 1) || ldb < (b_rows > 1 ? b_rows : 1) ||
        ldc < (m > 1 ? m : 1))
        return ST_INVALID_VALUE;
    if (computeType != COMPUTE_32F || Ctype != R_32F || Atype != Btype ||
        (Atype != R_32F && Atype != R_16F && Atype != R_16BF))
        return ST_NOT_SUPPORTED;
    if (!A || !B || !C || !alpha || !beta)
        return ST_INVALID_VALUE;
    float al = *(const float *)alpha, be = *(const float *)beta;
    float *c = (float *)C;
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            float acc = 0.0f;
            for (int p = 0; p < k; p++) {
                size_t ai = transa == OP_N ? (size_t)i + (size_t)p * lda
                                           : (size_t)p + (size_t)i * lda;
                size_t bi = transb == OP_N ? (size_t)p + (size_t)j * ldb
                                           : (size_t)j + (size_t)p * ldb;
                acc = fmaf(load(A, Atype, ai), load(B, Btype, bi), acc);
            }
            size_t ci = (size_t)i + (size_t)j * ldc;
            /* beta == 0: C is not read (it may hold NaN), as in BLAS */
            c[ci] = be == 0.0f ? al * acc : al * acc + be * c[ci];
        }
    calls++;
    return ST_SUCCESS;
}
