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
