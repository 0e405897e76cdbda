#version 450
// Expert choice: expert e (one workgroup) takes the C tokens of the pass
// with the largest p[t, e] (ties: the lower token; NaN below every number,
// NaNs by token), interface.h. The route kernel left p in weights[t * E +
// e]. A radix select over order-preserving 32-bit keys finds the C-th
// largest key K* in four 8-bit rounds (histograms in shared memory, integer
// atomics only); the tokens above K* are taken, and of those at K* the
// lowest-numbered ones that complete C. Every result is deterministic.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#define MVK_KERNEL_EXPERT_CHOICE
#include "interface.h"
#include "common.glsl"

layout(local_size_x_id = MVK_SPEC_WG) in;

layout(std430, binding = MVK_EC_BIND_IDS) writeonly buffer I { uint ids[]; };
layout(std430, binding = MVK_EC_BIND_WEIGHTS) buffer W { float weights[]; };

const uint WG = gl_WorkGroupSize.x;
const uint NONE = 0xffffffffu;
shared uint hist[256];
shared uint sh_prefix, sh_want;
shared uint scan[gl_WorkGroupSize.x];

// The ranking key of a score: larger scores give larger keys, -0 and +0 the
// same one, NaN the smallest (0; no number maps there).
uint key_of(float v)
{
    if (isnan(v))
        return 0u;
    if (v == 0.0)
        v = 0.0; // -0 ranks as +0
    uint b = floatBitsToUint(v);
    b = (b & 0x80000000u) != 0u ? ~b : (b | 0x80000000u);
    return max(b, 1u);
}

void main()
{
    const uint e = p.e0 + gl_WorkGroupID.x;
    const uint lid = gl_LocalInvocationID.x;
    const uint T = p.T, E = p.E;
    if (e >= E)
        return;

    // The C-th largest key, digit by digit from the top; want: how many
    // of the tokens whose key matches the prefix so far are still to take.
    if (lid == 0u) {
        sh_prefix = 0u;
        sh_want = p.C;
    }
    uint mask = 0u;
    [[dont_unroll]] for (int shift = 24; shift >= 0; shift -= 8) {
        for (uint b = lid; b < 256u; b += WG)
            hist[b] = 0u;
        barrier();
        const uint prefix = sh_prefix;
        for (uint t = lid; t < T; t += WG) {
            uint k = key_of(weights[t * E + e]);
            if ((k & mask) == prefix)
                atomicAdd(hist[(k >> uint(shift)) & 255u], 1u);
        }
        barrier();
        if (lid == 0u) {
            uint want = sh_want, above = 0u, d = 0u;
            for (int b = 255; b >= 0; b--) {
                uint n = hist[b];
                if (above + n >= want) {
                    d = uint(b);
                    break;
                }
                above += n;
            }
            sh_want = want - above;
            sh_prefix = prefix | (d << uint(shift));
        }
        barrier();
        mask |= 255u << uint(shift);
    }
    const uint kstar = sh_prefix, want = sh_want; // take `want` of the keys == K*

    // Tokens in order, WG at a time: above K* taken; at K* the first `want`.
    uint before = 0u; // tokens at K* in earlier blocks
    for (uint base = 0u; base < T; base += WG) {
        const uint t = base + lid;
        float v = t < T ? weights[t * E + e] : 0.0;
        uint k = t < T ? key_of(v) : 0u;
        const bool at = t < T && k == kstar;
        scan[lid] = at ? 1u : 0u;
        barrier();
        // inclusive scan of the block's flags
        [[dont_unroll]] for (uint s = 1u; s < WG; s <<= 1) {
            uint add = lid >= s ? scan[lid - s] : 0u;
            barrier();
            scan[lid] += add;
            barrier();
        }
        const uint rank = before + scan[lid] - (at ? 1u : 0u);
        const uint block_at = scan[WG - 1u];
        barrier();
        if (t < T) {
            const bool take = p.C > 0u && (k > kstar || (at && rank < want));
            ids[t * E + e] = take ? e : NONE;
            weights[t * E + e] = take ? v * p.scale : 0.0;
        }
        before += block_at;
    }
}
