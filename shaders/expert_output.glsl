// The last step of every expert kernel path: bias, activation, the value
// stored. Expects the push block p, the bias buffers bias0/bias1 and the
// GATED constant of the including kernel; the activation is p.act.
float expert_output(uint e, uint n, float v0, float v1)
{
    if (p.has_bias != 0u) {
        v0 += bias0[e * p.N + n];
        if (GATED != 0u)
            v1 += bias1[e * p.N + n];
    }
    if (GATED != 0u)
        return activate(p.act, v0, v1, p.alpha, p.limit);
    return activate(p.act, 0.0, v0, p.alpha, p.limit);
}
