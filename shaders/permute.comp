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
// PASS 0 (one workgroup per tile of tile_len assignments, in sub-tiles of
//   WG): rank of each assignment within its tile, and the tile's count of
//   every expert (its whole row, zeros included).
// PASS 1 (one workgroup): per-expert prefix over tiles, totals, admitted
//   counts, offsets, dropped count; each expert's kernel path by its row
//   count; the schedule of row tiles path by path and the indirect dispatch
//   arguments of every path's up and down kernels (interface.h, MVK_META_*).
// PASS 2 (one thread per assignment): row of each assignment (-1 when
//   dropped) and the token of each row.
// PASS 3: all three in one workgroup, for at most WG assignments (small
//   passes: one dispatch and no barrier between the passes).
//
// Masked (a chunk of a larger pass, see interface.h): assignments that an
// admission over all tokens dropped (mask entry -1) are left out entirely.
#extension GL_GOOGLE_include_directive : require
#define MVK_KERNEL_PERMUTE
#include "interface.h"
#include "common.glsl"

layout(local_size_x_id = MVK_SPEC_WG) in;
layout(constant_id = MVK_PERMUTE_SPEC_PASS) const uint PASS = 0;

layout(std430, binding = MVK_PERMUTE_BIND_IDS) readonly buffer I { uint ids[]; };
layout(std430, binding = MVK_PERMUTE_BIND_TILE_RANK) coherent buffer TR { uint tile_rank[]; };
layout(std430, binding = MVK_PERMUTE_BIND_TILE_COUNT) coherent buffer TC { uint tile_counts[]; };
layout(std430, binding = MVK_PERMUTE_BIND_TILE_OFF) coherent buffer TO { uint tile_offsets[]; };
layout(std430, binding = MVK_PERMUTE_BIND_META) coherent buffer M { uint meta[]; };
layout(std430, binding = MVK_PERMUTE_BIND_SCHEDULE) coherent buffer SC { uvec2 schedule[]; };
layout(std430, binding = MVK_PERMUTE_BIND_ROW_OF) coherent buffer RO { int row_of[]; };
layout(std430, binding = MVK_PERMUTE_BIND_ROW_TOKEN) coherent buffer RT { uint row_token[]; };
layout(std430, binding = MVK_PERMUTE_BIND_MASK) readonly buffer MK { int mask_row_of[]; };

const uint WG = gl_WorkGroupSize.x;
const uint MAXE = MVK_PERMUTE_MAX_EXPERTS;
const uint NONE = 0xffffffffu;
shared uint sh_e[gl_WorkGroupSize.x];
shared uint sh_run[MAXE];
shared uint sh_tiles[MAXE];
shared uint sh_start[MAXE];
shared uint sh_total[MAXE];
shared uint sh_path[MAXE];

uint path_height(uint q)
{
    return q == MVK_PATH_SKINNY ? MVK_SKINNY_ROWS
                                : (q == MVK_PATH_SMALL ? MVK_SMALL_TILE : MVK_LARGE_TILE);
}

// The path of an expert with `rows` admitted rows (see interface.h).
uint path_of(uint rows)
{
    if (rows <= MVK_SKINNY_ROWS)
        return MVK_PATH_SKINNY;
    return rows <= MVK_SMALL_TILE_MAX_ROWS ? MVK_PATH_SMALL : MVK_PATH_LARGE;
}

// Expert of assignment a (NONE when masked out).
uint expert_of(uint a)
{
    uint j = a / p.T, t = a - j * p.T;
    uint i = (p.tok0 + t) * p.K + j;
    if (p.masked != 0u && mask_row_of[i] < 0)
        return NONE;
    return ids[i];
}

uint group_index()
{
    return gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
}

void pass0(uint tile)
{
    const uint lid = gl_LocalInvocationID.x;
    const uint A = p.T * p.K, E = p.E;
    for (uint e = lid; e < E; e += WG)
        sh_run[e] = 0u;
    for (uint sub = 0u; sub < p.tile_len; sub += WG) {
        const uint a = tile * p.tile_len + sub + lid;
        barrier();
        sh_e[lid] = a < A ? expert_of(a) : NONE;
        barrier();
        const uint e = sh_e[lid];
        if (e != NONE) {
            uint rank = sh_run[e];
            for (uint i = 0; i < lid; i++)
                rank += sh_e[i] == e ? 1u : 0u;
            tile_rank[a] = rank;
        }
        barrier();
        for (uint x = lid; x < E; x += WG) {
            uint count = 0u;
            for (uint i = 0; i < WG; i++)
                count += sh_e[i] == x ? 1u : 0u;
            sh_run[x] += count;
        }
    }
    barrier();
    for (uint e = lid; e < E; e += WG)
        tile_counts[tile * E + e] = sh_run[e];
}

void pass1()
{
    const uint lid = gl_LocalInvocationID.x;
    const uint A = p.T * p.K, E = p.E;
    for (uint e = lid; e < E; e += WG) {
        uint run = 0;
        for (uint tile = 0; tile < p.ntiles; tile++) {
            tile_offsets[tile * E + e] = run;
            run += tile_counts[tile * E + e];
        }
        uint admitted = min(run, p.capacity);
        meta[MVK_META_TOTALS(E) + e] = run;
        meta[MVK_META_COUNTS(E) + e] = admitted;
        sh_total[e] = run;
        uint path = p.force_path != 0u ? p.force_path - 1u : path_of(admitted);
        // identity experts have rows but no tiles: no kernel runs them
        sh_path[e] = admitted == 0u || e >= p.n_ffn ? NONE : path;
        sh_tiles[e] = (admitted + path_height(path) - 1u) / path_height(path);
        sh_start[e] = admitted; // rows, replaced by the tile start below
    }
    barrier();
    if (lid == 0) {
        // Schedule segments, path by path (room for A / height + E each).
        uint base[MVK_PATHS], tiles[MVK_PATHS];
        uint at = 0u;
        for (uint q = 0u; q < MVK_PATHS; q++) {
            base[q] = at;
            tiles[q] = 0u;
            at += A / path_height(q) + E;
        }
        uint rows = 0, dropped = 0;
        for (uint e = 0; e < E; e++) {
            uint admitted = sh_start[e];
            meta[MVK_META_OFFSETS(E) + e] = rows;
            rows += admitted;
            dropped += sh_total[e] - admitted;
            uint q = sh_path[e];
            if (q != NONE) {
                sh_start[e] = base[q] + tiles[q];
                tiles[q] += sh_tiles[e];
            } else {
                sh_tiles[e] = 0u;
            }
        }
        meta[MVK_META_ROWS(E)] = rows;
        meta[MVK_META_DROPPED(E)] = dropped;
        for (uint q = 0u; q < MVK_PATHS; q++) {
            const bool skinny = q == MVK_PATH_SKINNY;
            meta[MVK_META_ARGS(E, q, 0u) + 0u] = tiles[q];
            meta[MVK_META_ARGS(E, q, 0u) + 1u] = skinny ? p.skinny_up : p.tiled_up;
            meta[MVK_META_ARGS(E, q, 0u) + 2u] = 1u;
            meta[MVK_META_ARGS(E, q, 1u) + 0u] = tiles[q];
            meta[MVK_META_ARGS(E, q, 1u) + 1u] = skinny ? p.skinny_down : p.tiled_down;
            meta[MVK_META_ARGS(E, q, 1u) + 2u] = 1u;
            meta[MVK_META_SCHED_BASE(E, q)] = base[q];
            meta[MVK_META_TILES(E, q)] = tiles[q];
        }
    }
    barrier();
    for (uint e = lid; e < E; e += WG) {
        uint s0 = sh_start[e];
        for (uint m = 0; m < sh_tiles[e]; m++)
            schedule[s0 + m] = uvec2(e, m);
    }
}

void pass2(uint a)
{
    const uint A = p.T * p.K, E = p.E;
    if (a >= A)
        return;
    const uint j = a / p.T, t = a - j * p.T;
    const uint e = expert_of(a);
    if (e == NONE) {
        row_of[t * p.K + j] = -1;
        return;
    }
    const uint rank = tile_offsets[(a / p.tile_len) * E + e] + tile_rank[a];
    if (rank < p.capacity) {
        uint row = meta[MVK_META_OFFSETS(E) + e] + rank;
        row_of[t * p.K + j] = int(row);
        row_token[row] = p.tok0 + t;
    } else {
        row_of[t * p.K + j] = -1;
    }
}

void main()
{
    if (PASS == 0u) {
        const uint tile = group_index();
        if (tile < p.ntiles)
            pass0(tile);
    } else if (PASS == 1u) {
        pass1();
    } else if (PASS == 2u) {
        pass2(group_index() * WG + gl_LocalInvocationID.x);
    } else {
        // One workgroup, at most WG assignments (one counting tile): the
        // three passes in one dispatch, buffer writes made visible between.
        pass0(0u);
        memoryBarrierBuffer();
        barrier();
        pass1();
        memoryBarrierBuffer();
        barrier();
        pass2(gl_LocalInvocationID.x);
    }
}
