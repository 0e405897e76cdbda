// Shared helpers for all moevk kernels.
//
// Weights of any dtype are bound as arrays of 32-bit words: f32 is one word
// per element, f16 and bf16 pack two elements per word (element i in the low
// half of word i/2 when i is even). This reads 16-bit data on every Vulkan
// 1.1 device, with or without 16-bit storage features.

#define DTYPE_F32 0u
#define DTYPE_F16 1u
#define DTYPE_BF16 2u

float unpack_elem(uint word, uint half_index, uint dtype)
{
    uint h = half_index != 0u ? (word >> 16) : (word & 0xffffu);
    if (dtype == DTYPE_F16)
        return unpackHalf2x16(h).x;
    return uintBitsToFloat(h << 16);
}

// Declares `float NAME(uint i)` reading element i of word array BUF in DTYPE.
#define DEFINE_LOADER(NAME, BUF, DTYPE)                                       \
    float NAME(uint i)                                                         \
    {                                                                          \
        if (DTYPE == DTYPE_F32)                                                \
            return uintBitsToFloat(BUF[i]);                                    \
        return unpack_elem(BUF[i >> 1], i & 1u, DTYPE);                        \
    }

// NaN-aware ordering used by every selection: larger wins, NaN ranks below
// every number, equal scores go to the lower index.
bool ranks_before(float a, uint ia, float b, uint ib)
{
    bool na = isnan(a), nb = isnan(b);
    if (na != nb)
        return nb;
    if (!na && a != b)
        return a > b;
    return ia < ib;
}
