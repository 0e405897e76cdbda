#version 450
// Counting, capacity, prefix sums and the expert tile schedule, in three
// passes selected by the PASS specialization constant. No floating point and
// no order-dependent atomics: every result is deterministic.
//
// Assignments are visited in priority order a = j * T + t (all slot-0
// choices in token order, then slot 1, ...). An assignment's rank is the
// number of earlier assignments to the same expert; it is admitted when
// rank < capacity, and its row is offsets[e] + rank, so the rows of an
// expert are its admitted assignments in priority order.
//
// PASS 0 (one workgroup per tile of WG assignments): in-tile rank of each
//   assignment, and the tile's count of every expert (its whole row).
// PASS 1 (one workgroup): per-expert prefix over tiles, totals, admitted
//   counts, offsets, dropped count, the GEMM tile schedule and the indirect
//   dispatch arguments of the two expert GEMMs.
// PASS 2 (one thread per assignment): row of each assignment (-1 when
//   dropped) and the token of each row.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint PASS = 0;

layout(std430, binding = 0) readonly buffer I { uint ids[]; };
layout(std430, binding = 1) buffer TR { uint tile_rank[]; };
layout(std430, binding = 2) buffer TC { uint tile_counts[]; };   // [ntiles][E]
layout(std430, binding = 3) buffer TO { uint tile_offsets[]; };  // [ntiles][E]
// meta: [0..E) totals, [E..2E) admitted counts, [2E..3E+1) offsets,
//       then dropped, then indirect args up {x,y,z}, down {x,y,z}
layout(std430, binding = 4) buffer M { uint meta[]; };
layout(std430, binding = 5) buffer SC { uvec2 schedule[]; };     // (expert, m tile)
layout(std430, binding = 6) buffer RO { int row_of[]; };         // [T*K]
layout(std430, binding = 7) buffer RT { uint row_token[]; };     // [rows]

layout(push_constant) uniform P {
    uint T, K, E, capacity, ntiles, tile_m, n_up, n_down;
} p;

const uint WG = gl_WorkGroupSize.x;
shared uint sh_e[gl_WorkGroupSize.x];
shared uint sh_tiles[1024];
shared uint sh_start[1024];
shared uint sh_total[1024];

uint expert_of(uint a)
{
    uint j = a / p.T, t = a - j * p.T;
    return ids[t * p.K + j];
}

void main()
{
    const uint lid = gl_LocalInvocationID.x;
    const uint A = p.T * p.K;
    const uint E = p.E;
    if (PASS == 0u) {
        const uint tile = gl_WorkGroupID.x;
        const uint a = tile * WG + lid;
        sh_e[lid] = a < A ? expert_of(a) : 0xffffffffu;
        barrier();
        // Every expert's count in this tile, zeros included, so the row
        // needs no clearing beforehand.
        for (uint e = lid; e < E; e += WG) {
            uint count = 0;
            for (uint i = 0; i < WG; i++)
                count += sh_e[i] == e ? 1u : 0u;
            tile_counts[tile * E + e] = count;
        }
        if (a >= A)
            return;
        const uint e = sh_e[lid];
        uint rank = 0;
        for (uint i = 0; i < lid; i++)
            rank += sh_e[i] == e ? 1u : 0u;
        tile_rank[a] = rank;
    } else if (PASS == 1u) {
        for (uint e = lid; e < E; e += WG) {
            uint run = 0;
            for (uint tile = 0; tile < p.ntiles; tile++) {
                tile_offsets[tile * E + e] = run;
                run += tile_counts[tile * E + e];
            }
            uint admitted = min(run, p.capacity);
            meta[e] = run;
            meta[E + e] = admitted;
            sh_total[e] = run;
            sh_tiles[e] = (admitted + p.tile_m - 1u) / p.tile_m;
            sh_start[e] = admitted; // rows, replaced by the row offset below
        }
        barrier();
        if (lid == 0) {
            uint rows = 0, tiles = 0, dropped = 0;
            for (uint e = 0; e < E; e++) {
                uint admitted = sh_start[e];
                meta[2u * E + e] = rows;
                rows += admitted;
                dropped += sh_total[e] - admitted;
                uint nt = sh_tiles[e];
                sh_start[e] = tiles;
                tiles += nt;
            }
            meta[3u * E] = rows;
            meta[3u * E + 1u] = dropped;
            meta[3u * E + 2u] = tiles;
            meta[3u * E + 3u] = p.n_up;
            meta[3u * E + 4u] = 1u;
            meta[3u * E + 5u] = tiles;
            meta[3u * E + 6u] = p.n_down;
            meta[3u * E + 7u] = 1u;
        }
        barrier();
        for (uint e = lid; e < E; e += WG) {
            uint s0 = sh_start[e];
            for (uint m = 0; m < sh_tiles[e]; m++)
                schedule[s0 + m] = uvec2(e, m);
        }
    } else {
        const uint a = gl_WorkGroupID.x * WG + lid;
        if (a >= A)
            return;
        const uint j = a / p.T, t = a - j * p.T;
        const uint e = ids[t * p.K + j];
        const uint rank = tile_offsets[(a / WG) * E + e] + tile_rank[a];
        if (rank < p.capacity) {
            uint row = meta[2u * E + e] + rank;
            row_of[t * p.K + j] = int(row);
            row_token[row] = t;
        } else {
            row_of[t * p.K + j] = -1;
        }
    }
}
