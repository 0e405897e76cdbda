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

// ---- block formats --------------------------------------------------------------
// The ggml layouts bit for bit, read through 32-bit words: blocks of 17, 18,
// 34 or 210 bytes need no 8- or 16-bit storage feature. Each branch below
// mirrors its function in src/format_decode.h (the formulas the C reference
// and the CUDA kernels share; GLSL cannot include it): the same bytes, the
// same operations in the same order, products first (precise: no
// contraction), so the kernels see exactly the reference's dequantised
// weights. A change to a formula there is made here too.

float half_bits(uint h) { return unpackHalf2x16(h).x; }

const int IQ4NL_VALUES[16] = int[16](-127, -104, -83, -65, -49, -35, -22, -10,
                                     1, 13, 25, 38, 53, 69, 89, 113);
const int E2M1_DOUBLED[16] = int[16](0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12);
// bitsandbytes' NF4 values (f32 bits, as src/format_decode.h's mvk_dq_nf4_value has them)
const uint NF4_BITS[16] = uint[16](0xbf800000u, 0xbf3239b1u, 0xbf066b30u, 0xbeca32a0u,
                                   0xbe91a24du, 0xbe3d353fu, 0xbdba7871u, 0x00000000u,
                                   0x3da2faffu, 0x3e24cae3u, 0x3e7c04ddu, 0x3ead033au,
                                   0x3ee1a4b8u, 0x3f1007abu, 0x3f3913b3u, 0x3f800000u);

// float8 e4m3fn (bias 7, no infinities; the NaN codes are refused at layer
// create) as f32, exactly: subnormals are m x 2^-9.
float e4m3_value(uint v)
{
    uint e = (v >> 3) & 15u, m = v & 7u;
    float f = e == 0u ? float(m) * uintBitsToFloat(0x3b000000u)
                      : uintBitsToFloat(((e + 120u) << 23) | (m << 20));
    return (v & 0x80u) != 0u ? -f : f;
}

// Elements and bytes per block of a format (1 element for f32/f16/bf16).
uint WFMT_BLOCK_ELEMS(uint f)
{
    if (f == MVK_WFMT_F32 || f == MVK_WFMT_F16 || f == MVK_WFMT_BF16)
        return 1u;
    if (f == MVK_WFMT_Q2_K || f == MVK_WFMT_Q3_K || f == MVK_WFMT_Q4_K || f == MVK_WFMT_Q5_K ||
        f == MVK_WFMT_Q6_K || f == MVK_WFMT_IQ4_XS)
        return 256u;
    if (f == MVK_WFMT_NF4)
        return 64u;
    if (f == MVK_WFMT_FP8_E4M3)
        return 128u;
    return 32u;
}

uint WFMT_BLOCK_BYTES(uint f)
{
    switch (f) {
    case MVK_WFMT_F32: return 4u;
    case MVK_WFMT_F16:
    case MVK_WFMT_BF16: return 2u;
    case MVK_WFMT_Q8_0: return 34u;
    case MVK_WFMT_Q4_0: return 18u;
    case MVK_WFMT_Q4_1: return 20u;
    case MVK_WFMT_Q5_0: return 22u;
    case MVK_WFMT_Q5_1: return 24u;
    case MVK_WFMT_Q2_K: return 84u;
    case MVK_WFMT_Q3_K: return 110u;
    case MVK_WFMT_Q4_K: return 144u;
    case MVK_WFMT_Q5_K: return 176u;
    case MVK_WFMT_Q6_K: return 210u;
    case MVK_WFMT_IQ4_NL: return 18u;
    case MVK_WFMT_IQ4_XS: return 136u;
    case MVK_WFMT_MXFP4: return 17u;
    case MVK_WFMT_GPTQ4: return 19u;
    case MVK_WFMT_NF4: return 36u;
    case MVK_WFMT_FP8_E4M3: return 132u;
    }
    return 0u;
}

// The 6-bit scale (x) and min (y) of sub-block j of a Q4_K/Q5_K block whose
// 12 scale bytes start at byte s, given a byte reader R.
#define K_SCALE_MIN(R, s, j)                                                          \
    ((j) < 4u ? uvec2(R((s) + (j)) & 63u, R((s) + (j) + 4u) & 63u)                    \
              : uvec2((R((s) + (j) + 4u) & 15u) | ((R((s) + (j) - 4u) >> 6) << 4),    \
                      (R((s) + (j) + 4u) >> 4) | ((R((s) + (j)) >> 6) << 4)))

// Declares `float NAME(uint row, uint k)`: element k of row `row` of a weight
// matrix of p.K columns in format WFMT, held in word array BUF. Rows are
// whole blocks, consecutive.
#define DEFINE_WEIGHT_LOADER(NAME, BUF, WFMT)                                          \
    uint NAME##_b(uint b) { return (BUF[b >> 2] >> ((b & 3u) << 3)) & 0xffu; }         \
    uint NAME##_h(uint b) { return NAME##_b(b) | (NAME##_b(b + 1u) << 8); }            \
    uint NAME##_w(uint b) { return NAME##_h(b) | (NAME##_h(b + 2u) << 16); }           \
    float NAME(uint row, uint k)                                                       \
    {                                                                                  \
        if (WFMT == MVK_WFMT_F32)                                                      \
            return uintBitsToFloat(BUF[row * p.K + k]);                                \
        if (WFMT == MVK_WFMT_F16 || WFMT == MVK_WFMT_BF16) {                           \
            uint i = row * p.K + k;                                                    \
            return unpack_half_word(BUF[i >> 1], i & 1u, WFMT);                        \
        }                                                                              \
        const uint BE = WFMT_BLOCK_ELEMS(WFMT), BB = WFMT_BLOCK_BYTES(WFMT);           \
        const uint bb = row * (p.K / BE) * BB + (k / BE) * BB, j = k % BE;             \
        precise float v;                                                               \
        if (WFMT == MVK_WFMT_Q8_0) {                                                   \
            int q = int(NAME##_b(bb + 2u + j) << 24) >> 24;                            \
            v = half_bits(NAME##_h(bb)) * float(q);                                    \
        } else if (WFMT == MVK_WFMT_Q4_0 || WFMT == MVK_WFMT_IQ4_NL) {                 \
            uint q = (NAME##_b(bb + 2u + (j & 15u)) >> ((j >> 4) << 2)) & 15u;         \
            float d = half_bits(NAME##_h(bb));                                         \
            v = WFMT == MVK_WFMT_Q4_0 ? d * float(int(q) - 8) : d * float(IQ4NL_VALUES[q]); \
        } else if (WFMT == MVK_WFMT_Q4_1) {                                            \
            uint q = (NAME##_b(bb + 4u + (j & 15u)) >> ((j >> 4) << 2)) & 15u;         \
            precise float dq = half_bits(NAME##_h(bb)) * float(q);                     \
            v = dq + half_bits(NAME##_h(bb + 2u));                                     \
        } else if (WFMT == MVK_WFMT_Q5_0 || WFMT == MVK_WFMT_Q5_1) {                   \
            const uint o = WFMT == MVK_WFMT_Q5_0 ? 2u : 4u;                            \
            uint qh = (NAME##_w(bb + o) >> j) & 1u;                                    \
            uint q = ((NAME##_b(bb + o + 4u + (j & 15u)) >> ((j >> 4) << 2)) & 15u) | (qh << 4); \
            float d = half_bits(NAME##_h(bb));                                         \
            if (WFMT == MVK_WFMT_Q5_0) {                                               \
                v = d * float(int(q) - 16);                                            \
            } else {                                                                   \
                precise float dq = d * float(q);                                       \
                v = dq + half_bits(NAME##_h(bb + 2u));                                 \
            }                                                                          \
        } else if (WFMT == MVK_WFMT_MXFP4) {                                           \
            uint e = NAME##_b(bb);                                                     \
            uint q = (NAME##_b(bb + 1u + (j & 15u)) >> ((j >> 4) << 2)) & 15u;         \
            float d = uintBitsToFloat(e < 2u ? (0x00200000u << e) : ((e - 1u) << 23));  \
            v = d * float(E2M1_DOUBLED[q]);                                            \
        } else if (WFMT == MVK_WFMT_GPTQ4) {                                           \
            uint q = (NAME##_b(bb + 3u + (j & 15u)) >> ((j >> 4) << 2)) & 15u;         \
            v = half_bits(NAME##_h(bb)) * float(int(q) - int(NAME##_b(bb + 2u)));       \
        } else if (WFMT == MVK_WFMT_NF4) {                                             \
            uint q = (NAME##_b(bb + 4u + (j >> 1)) >> ((~j & 1u) << 2)) & 15u;          \
            v = uintBitsToFloat(NF4_BITS[q]) * uintBitsToFloat(NAME##_w(bb));         \
        } else if (WFMT == MVK_WFMT_FP8_E4M3) {                                        \
            v = e4m3_value(NAME##_b(bb + 4u + j)) * uintBitsToFloat(NAME##_w(bb));     \
        } else if (WFMT == MVK_WFMT_Q2_K) {                                            \
            uint sc = NAME##_b(bb + j / 16u);                                          \
            uint q = (NAME##_b(bb + 16u + 32u * (j / 128u) + j % 32u) >> (2u * ((j % 128u) / 32u))) & 3u; \
            precise float dl = half_bits(NAME##_h(bb + 80u)) * float(sc & 15u);        \
            precise float ml = half_bits(NAME##_h(bb + 82u)) * float(sc >> 4);         \
            precise float dq = dl * float(q);                                          \
            v = dq - ml;                                                               \
        } else if (WFMT == MVK_WFMT_Q3_K) {                                            \
            uint s = j / 16u;                                                          \
            uint lo = (s < 8u ? NAME##_b(bb + 96u + s) : NAME##_b(bb + 96u + s - 8u) >> 4) & 15u; \
            uint hi = (NAME##_b(bb + 104u + s % 4u) >> (2u * (s / 4u))) & 3u;          \
            precise float dl = half_bits(NAME##_h(bb + 108u)) * float(int(lo | (hi << 4)) - 32); \
            uint q2 = (NAME##_b(bb + 32u + 32u * (j / 128u) + j % 32u) >> (2u * ((j % 128u) / 32u))) & 3u; \
            uint hb = (NAME##_b(bb + j % 32u) >> (j / 32u)) & 1u;                      \
            v = dl * float(int(q2) - (hb != 0u ? 0 : 4));                              \
        } else if (WFMT == MVK_WFMT_Q4_K || WFMT == MVK_WFMT_Q5_K) {                   \
            uint sb = j / 32u, l = j % 32u;                                            \
            uvec2 sm = K_SCALE_MIN(NAME##_b, bb + 4u, sb);                             \
            const uint qo = WFMT == MVK_WFMT_Q4_K ? 16u : 48u;                         \
            uint q = (NAME##_b(bb + qo + 32u * (sb / 2u) + l) >> (4u * (sb % 2u))) & 15u; \
            if (WFMT == MVK_WFMT_Q5_K)                                                 \
                q |= ((NAME##_b(bb + 16u + l) >> sb) & 1u) << 4;                       \
            precise float d1 = half_bits(NAME##_h(bb)) * float(sm.x);                  \
            precise float m1 = half_bits(NAME##_h(bb + 2u)) * float(sm.y);             \
            precise float dq = d1 * float(q);                                          \
            v = dq - m1;                                                               \
        } else if (WFMT == MVK_WFMT_Q6_K) {                                            \
            uint h = j / 128u, g = (j % 128u) / 32u, l = j % 32u;                      \
            uint lo = (NAME##_b(bb + 64u * h + l + 32u * (g & 1u)) >> (4u * (g / 2u))) & 15u; \
            uint hi = (NAME##_b(bb + 128u + 32u * h + l) >> (2u * g)) & 3u;            \
            int sc = int(NAME##_b(bb + 192u + j / 16u) << 24) >> 24;                   \
            precise float ds = half_bits(NAME##_h(bb + 208u)) * float(sc);             \
            v = ds * float(int(lo | (hi << 4)) - 32);                                  \
        } else {                                                                       \
            /* MVK_WFMT_IQ4_XS */                                                      \
            uint ib = j / 32u, jj = j % 32u;                                           \
            uint ls = ((NAME##_b(bb + 4u + ib / 2u) >> (4u * (ib % 2u))) & 15u) |      \
                      (((NAME##_h(bb + 2u) >> (2u * ib)) & 3u) << 4);                  \
            precise float dl = half_bits(NAME##_h(bb)) * float(int(ls) - 32);          \
            uint q = (NAME##_b(bb + 8u + 16u * ib + (jj & 15u)) >> ((jj >> 4) << 2)) & 15u; \
            v = dl * float(IQ4NL_VALUES[q]);                                           \
        }                                                                              \
        return v;                                                                      \
    }
