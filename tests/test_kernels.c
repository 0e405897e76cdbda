/*
 * Every embedded kernel against the kernel table (src/kernels.c), which
 * takes its interface from shaders/interface.h: the SPIR-V module is
 * reflected and its descriptor bindings, push-constant block and
 * specialization-constant ids must be exactly what the C recorders bind,
 * push and specialise. A shader and its recorder cannot drift apart.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "kernels.h"

enum {
    OP_TYPE_INT = 21, OP_TYPE_FLOAT = 22, OP_TYPE_STRUCT = 30, OP_TYPE_POINTER = 32,
    OP_VARIABLE = 59, OP_DECORATE = 71, OP_MEMBER_DECORATE = 72,
    DEC_SPEC_ID = 1, DEC_BINDING = 33, DEC_DESCRIPTOR_SET = 34, DEC_OFFSET = 35,
    SC_PUSH_CONSTANT = 9,
};

#define MAX_IDS 8192

typedef struct reflection {
    uint32_t binding_mask;  /* bit b: a variable decorated Binding b */
    uint32_t nonzero_sets;  /* variables in a descriptor set other than 0 */
    uint32_t spec_mask;     /* bit i: a constant with SpecId i */
    uint32_t push_bytes;    /* end of the last member of the push block */
    uint32_t push_members;
    int push_blocks;
    int push_offsets_dense; /* member i at offset 4 * i, all 32-bit */
} reflection;

static void reflect(const uint32_t *w, size_t words, reflection *r)
{
    static uint32_t type_bytes[MAX_IDS], ptr_to[MAX_IDS], ptr_sc[MAX_IDS];
    static uint32_t member_off[MAX_IDS][32], member_count[MAX_IDS];
    static uint32_t struct_members[MAX_IDS][32];
    memset(r, 0, sizeof *r);
    memset(type_bytes, 0, sizeof type_bytes);
    memset(ptr_to, 0, sizeof ptr_to);
    memset(ptr_sc, 0, sizeof ptr_sc);
    memset(member_count, 0, sizeof member_count);
    cr_assert_eq(w[0], 0x07230203u, "not SPIR-V");
    cr_assert_leq(w[3], MAX_IDS, "id bound %u", w[3]);
    uint32_t push_var_type = 0;
    for (size_t i = 5; i < words;) {
        uint32_t n = w[i] >> 16, op = w[i] & 0xffff;
        cr_assert(n > 0 && i + n <= words, "malformed instruction at word %zu", i);
        const uint32_t *a = w + i + 1;
        if (op == OP_TYPE_INT || op == OP_TYPE_FLOAT)
            type_bytes[a[0]] = a[1] / 8;
        else if (op == OP_TYPE_STRUCT) {
            member_count[a[0]] = n - 2;
            for (uint32_t m = 0; m + 2 < n && m < 32; m++)
                struct_members[a[0]][m] = a[1 + m];
        } else if (op == OP_TYPE_POINTER) {
            ptr_sc[a[0]] = a[1];
            ptr_to[a[0]] = a[2];
        } else if (op == OP_VARIABLE && a[2] == SC_PUSH_CONSTANT) {
            r->push_blocks++;
            push_var_type = ptr_to[a[0]];
        } else if (op == OP_DECORATE && a[1] == DEC_BINDING) {
            r->binding_mask |= 1u << a[2];
        } else if (op == OP_DECORATE && a[1] == DEC_DESCRIPTOR_SET && a[2] != 0) {
            r->nonzero_sets++;
        } else if (op == OP_DECORATE && a[1] == DEC_SPEC_ID) {
            r->spec_mask |= 1u << a[2];
        } else if (op == OP_MEMBER_DECORATE && a[2] == DEC_OFFSET && a[1] < 32) {
            member_off[a[0]][a[1]] = a[3];
        }
        i += n;
    }
    if (!push_var_type)
        return;
    r->push_members = member_count[push_var_type];
    r->push_offsets_dense = 1;
    for (uint32_t m = 0; m < r->push_members; m++) {
        uint32_t bytes = type_bytes[struct_members[push_var_type][m]];
        uint32_t end = member_off[push_var_type][m] + bytes;
        if (end > r->push_bytes)
            r->push_bytes = end;
        if (bytes != 4 || member_off[push_var_type][m] != 4 * m)
            r->push_offsets_dense = 0;
    }
}

Test(kernels, modules_match_the_interface_header)
{
    int n = 0;
    for (uint32_t id = 0; id < MVK_K_COUNT; id++) {
        mvk_kernel_info k;
        if (!mvk_kernel_get(id, &k)) {
            /* only the cooperative-matrix variant is optional (built when
             * the compiler knows the extension) */
            cr_assert_eq(id, MVK_K_EXPERT_GEMM_MU, "kernel %u has no table entry", id);
            n++;
            continue;
        }
        reflection r;
        reflect(k.code, k.code_size / 4, &r);
        uint32_t want_bindings = k.bindings >= 32 ? ~0u : (1u << k.bindings) - 1;
        cr_assert_eq(r.binding_mask, want_bindings,
                     "%s: the shader declares bindings 0x%x, the table %u (0x%x)", k.name,
                     r.binding_mask, k.bindings, want_bindings);
        cr_assert_eq(r.nonzero_sets, 0, "%s: a binding outside set 0", k.name);
        cr_assert_leq(r.push_blocks, 1, "%s: %d push-constant blocks", k.name, r.push_blocks);
        cr_assert_eq(r.push_bytes, k.push_size,
                     "%s: the shader's push block is %u bytes, the C struct %u", k.name,
                     r.push_bytes, k.push_size);
        if (k.push_size) {
            cr_assert_eq(r.push_members, k.push_size / 4, "%s: %u push members for %u bytes",
                         k.name, r.push_members, k.push_size);
            cr_assert(r.push_offsets_dense, "%s: push members are not dense 32-bit words",
                      k.name);
        }
        uint32_t want_spec = (1u << k.nspec) - 1;
        cr_assert_eq(r.spec_mask, want_spec,
                     "%s: the shader has specialization ids 0x%x, the recorders set %u (0x%x)",
                     k.name, r.spec_mask, k.nspec, want_spec);
        n++;
    }
    cr_assert_eq(n, MVK_K_COUNT);
}

/* The reflection itself sees a change: a module whose push block is one
 * word shorter than the table says must not pass. */
Test(kernels, reflection_notices_a_mismatch)
{
    mvk_kernel_info k;
    cr_assert(mvk_kernel_get(MVK_K_BANDWIDTH, &k));
    reflection r;
    reflect(k.code, k.code_size / 4, &r);
    cr_assert_eq(r.push_bytes, 4, "bandwidth pushes one word");
    cr_assert_eq(r.binding_mask, 0x3u);
    cr_assert(mvk_kernel_get(MVK_K_EXPERT_GEMM, &k));
    reflect(k.code, k.code_size / 4, &r);
    cr_assert_gt(r.push_bytes, 4);
    cr_assert_neq(r.push_bytes, 4, "different kernels reflect differently");
}
