// Weight formats: how a kernel reads element i of a weight matrix bound as
// an array of 32-bit words. The format is a specialization constant (one
// of interface.h's MVK_WFMT_*, chosen by src/formats.c), so each pipeline
// compiles only its own branch.
//
// f32 is one word per element; f16 and bf16 pack two elements per word
// (element i in the low half of word i/2 when i is even). This reads 16-bit
// data on every Vulkan 1.1 device, with or without 16-bit storage features.

float unpack_half_word(uint word, uint half_index, uint wfmt)
{
    uint h = half_index != 0u ? (word >> 16) : (word & 0xffffu);
    if (wfmt == MVK_WFMT_F16)
        return unpackHalf2x16(h).x;
    return uintBitsToFloat(h << 16);
}

// Declares `float NAME(uint i)` reading element i of word array BUF in WFMT.
#define DEFINE_LOADER(NAME, BUF, WFMT)                                        \
    float NAME(uint i)                                                         \
    {                                                                          \
        if (WFMT == MVK_WFMT_F32)                                              \
            return uintBitsToFloat(BUF[i]);                                    \
        return unpack_half_word(BUF[i >> 1], i & 1u, WFMT);                    \
    }

// Elements in one 128-bit (uvec4) load of a format.
#define VEC_ELEMS(WFMT) ((WFMT) == MVK_WFMT_F32 ? 4u : 8u)

// Declares `void NAME(uint i, out float v[8])` loading elements i ..
// i + VEC_ELEMS - 1 (i a multiple of VEC_ELEMS) of uvec4 array BUFV in one
// 128-bit load; v[VEC_ELEMS..7] are left 0.
#define DEFINE_VEC_LOADER(NAME, BUFV, WFMT)                                   \
    void NAME(uint i, out float v[8])                                          \
    {                                                                          \
        if (WFMT == MVK_WFMT_F32) {                                            \
            uvec4 q = BUFV[i >> 2];                                            \
            v[0] = uintBitsToFloat(q.x);                                       \
            v[1] = uintBitsToFloat(q.y);                                       \
            v[2] = uintBitsToFloat(q.z);                                       \
            v[3] = uintBitsToFloat(q.w);                                       \
            v[4] = 0.0;                                                        \
            v[5] = 0.0;                                                        \
            v[6] = 0.0;                                                        \
            v[7] = 0.0;                                                        \
        } else {                                                               \
            uvec4 q = BUFV[i >> 3];                                            \
            v[0] = unpack_half_word(q.x, 0u, WFMT);                            \
            v[1] = unpack_half_word(q.x, 1u, WFMT);                            \
            v[2] = unpack_half_word(q.y, 0u, WFMT);                            \
            v[3] = unpack_half_word(q.y, 1u, WFMT);                            \
            v[4] = unpack_half_word(q.z, 0u, WFMT);                            \
            v[5] = unpack_half_word(q.z, 1u, WFMT);                            \
            v[6] = unpack_half_word(q.w, 0u, WFMT);                            \
            v[7] = unpack_half_word(q.w, 1u, WFMT);                            \
        }                                                                      \
    }
