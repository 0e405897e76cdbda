// Configure-time check (src/cuda/meson.build) that nvcc and its host
// compiler can build for the targets of the CUDA backends.
__global__ void mvk_nvcc_check(int *p)
{
    p[threadIdx.x] = 1;
}
