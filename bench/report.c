/*
 * Bench output: a readable table, JSON, CSV, and an SVG plot of where the
 * time goes and how close each run comes to its floor.
 */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "bench.h"

static double frac_floor(const bench_row *r, const bench_ceilings *c)
{
    return r->ok && r->ms > 0 ? bench_floor_ms(r, c) / r->ms : 0;
}

static double expert_ratio(const double *num, const double *den)
{
    const double n = num[MOEVK_STAGE_EXPERTS_UP] + num[MOEVK_STAGE_EXPERTS_DOWN];
    const double d = den[MOEVK_STAGE_EXPERTS_UP] + den[MOEVK_STAGE_EXPERTS_DOWN];
    return d > 0 ? n / d : 0;
}

double bench_macs_ratio(const bench_row *r)
{
    return expert_ratio(r->work.macs_launched, r->work.macs_useful);
}

double bench_bytes_ratio(const bench_row *r)
{
    return expert_ratio(r->work.weight_bytes_fetched, r->work.weight_bytes_needed);
}

const char *bench_tflops_text(const bench_ceilings *c, int json, char *buf, size_t n)
{
    size_t p = 0;
    buf[0] = '\0';
    for (int dt = 0; dt < BENCH_DTYPES; dt++) {
        if (dt > MOEVK_DTYPE_BF16 && !(c->tflops[dt] > 0))
            continue;
        const char *name = moevk_dtype_name((moevk_dtype)dt);
        int k = json ? snprintf(buf + p, n - p, "%s\"%s\": %.4f", p ? ", " : "", name, c->tflops[dt])
                     : snprintf(buf + p, n - p, "%s%s %.3g", p ? ", " : "", name, c->tflops[dt]);
        if (k < 0 || (size_t)k >= n - p)
            break;
        p += (size_t)k;
    }
    return buf;
}

void bench_print_table(FILE *f, const bench_row *rows, uint32_t n, const bench_ceilings *c)
{
    fprintf(f, "device: %s (%s)\n", c->device, c->driver);
    char tf[1024];
    fprintf(f, "ceilings (measured): read bandwidth %.3g GB/s; matmul %s TFLOP/s\n", c->gb_s,
            bench_tflops_text(c, 0, tf, sizeof tf));
    bool budgets = false;
    for (uint32_t i = 0; i < n; i++)
        budgets |= rows[i].budget[0] != '\0';
    fprintf(f, "\n%-18s %-11s %-5s %-7s ", "preset", "backend", "dtype", "routing");
    if (budgets)
        fprintf(f, "%-6s ", "vram");
    fprintf(f, "%6s %10s %11s %9s %8s %8s %7s %7s %7s %9s %9s %6s %6s %5s\n", "T", "ms",
            "tokens/s", "MB read", "GB/s", "TFLOP/s", "%bw", "%mm", "%floor", "weights", "peak",
            "xMAC", "xbytes", "disp");
    for (uint32_t i = 0; i < n; i++) {
        const bench_row *r = &rows[i];
        fprintf(f, "%-18s %-11s %-5s %-7s ", r->preset, bench_backend_name(r->backend),
                moevk_dtype_name(r->dtype), bench_dist_name(r->dist));
        if (budgets)
            fprintf(f, "%-6s ", r->budget[0] ? r->budget : "-");
        fprintf(f, "%6u ", r->tokens);
        if (!r->ok) {
            fprintf(f, "%s\n", r->note);
            continue;
        }
        double bw = c->gb_s > 0 ? 100 * bench_gb_s(r) / c->gb_s : 0;
        const double peak = r->dtype < BENCH_DTYPES ? c->tflops[r->dtype] : 0;
        double mm = peak > 0 ? 100 * bench_tflops(r) / peak : 0;
        fprintf(f, "%10.3f %11.0f %9.1f %8.3g %8.3g %6.1f%% %6.1f%% %6.1f%% %8.0fM %8.0fM",
                r->ms, r->tokens / (r->ms * 1e-3), r->bytes / 1e6, bench_gb_s(r),
                bench_tflops(r), bw, mm, 100 * frac_floor(r, c), r->weight_bytes / 1048576.0,
                r->peak_bytes / 1048576.0);
        if (r->work.tokens)
            fprintf(f, " %6.3f %6.3f %5u\n", bench_macs_ratio(r), bench_bytes_ratio(r),
                    r->work.dispatches);
        else
            fprintf(f, " %6s %6s %5s\n", "-", "-", "-");
    }
    fprintf(f, "\nMB read: the experts actually touched (each once), the router and x/y. "
               "%%bw, %%mm: achieved over the measured ceilings; %%floor: max(bytes/bandwidth, "
               "FLOPs/matmul) over the time. xMAC: multiply-adds the expert kernels launched "
               "over those the routed rows need; xbytes: expert weight bytes fetched over "
               "those of the experts the pass used; disp: dispatches per pass (from the "
               "GPU-written schedule, any device).%s\n",
            budgets ? " vram: the device-memory budget of the routed experts (weights: the "
                      "device's share)." : "");
}

/* Rows of the same curve: all but the budget alike. */
static bool same_curve(const bench_row *a, const bench_row *b)
{
    return !strcmp(a->preset, b->preset) && a->dtype == b->dtype && a->dist == b->dist &&
           a->tokens == b->tokens && a->backend == b->backend;
}

/* The best throughput of r's curve (0 if none measured). */
static double curve_best(const bench_row *rows, uint32_t n, const bench_row *r)
{
    double best = 0;
    for (uint32_t i = 0; i < n; i++)
        if (rows[i].ok && rows[i].budget[0] && same_curve(&rows[i], r))
            best = fmax(best, rows[i].tokens / (rows[i].ms * 1e-3));
    return best;
}

void bench_print_budgets(FILE *f, const bench_row *rows, uint32_t n)
{
    fprintf(f, "\nthroughput against the device-memory budget of the routed experts\n");
    fprintf(f, "%-18s %-11s %-5s %-7s %6s %6s %7s %10s %10s %7s %10s %11s %7s\n", "preset",
            "backend", "dtype", "routing", "T", "vram", "%exp", "device MB", "host MB", "hit%",
            "promoted", "tokens/s", "vs best");
    for (uint32_t i = 0; i < n; i++) {
        const bench_row *r = &rows[i];
        if (!r->budget[0])
            continue;
        fprintf(f, "%-18s %-11s %-5s %-7s %6u %6s %6.1f%% ", r->preset,
                bench_backend_name(r->backend), moevk_dtype_name(r->dtype),
                bench_dist_name(r->dist), r->tokens, r->budget, 100 * r->budget_frac);
        if (!r->ok) {
            fprintf(f, "%s\n", r->note);
            continue;
        }
        const double rows_seen = (double)r->cache.hits + (double)r->cache.misses;
        const double tps = r->tokens / (r->ms * 1e-3), best = curve_best(rows, n, r);
        fprintf(f, "%10.1f %10.1f ", r->weight_bytes / 1e6, r->host_bytes / 1e6);
        if (rows_seen > 0)
            fprintf(f, "%6.1f%% %10llu ", 100 * r->cache.hits / rows_seen,
                    (unsigned long long)r->cache.promotions);
        else
            fprintf(f, "%7s %10s ", r->host_bytes > 0 ? "-" : "100%", "-");
        fprintf(f, "%11.0f %6.1f%%\n", tps, best > 0 ? 100 * tps / best : 0);
    }
    fprintf(f, "%%exp: the budget's share of the routed experts' bytes; hit%%: routed rows whose "
               "expert was on the device, over the timed runs (fresh inputs each); promoted: "
               "experts the cache copied to the device during them.\n");
}

int bench_write_json(const char *path, const bench_row *rows, uint32_t n, const bench_ceilings *c)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "moevk bench: cannot write %s\n", path);
        return -1;
    }
    fprintf(f, "{\n  \"device\": \"%s\",\n  \"driver\": \"%s\",\n", c->device, c->driver);
    char tf[1024];
    fprintf(f, "  \"ceilings\": {\"read_gb_s\": %.3f, \"matmul_tflops\": {%s}},\n  \"rows\": [\n",
            c->gb_s, bench_tflops_text(c, 1, tf, sizeof tf));
    for (uint32_t i = 0; i < n; i++) {
        const bench_row *r = &rows[i];
        fprintf(f, "    {\"preset\": \"%s\", \"backend\": \"%s\", \"dtype\": \"%s\", "
                   "\"routing\": \"%s\", \"tokens\": %u, \"H\": %u, \"F\": %u, \"E\": %u, "
                   "\"k\": %u, \"ok\": %s",
                r->preset, bench_backend_name(r->backend), moevk_dtype_name(r->dtype),
                bench_dist_name(r->dist), r->tokens, r->H, r->F, r->E, r->k,
                r->ok ? "true" : "false");
        if (r->ok) {
            fprintf(f, ", \"ms\": %.6f, \"tokens_per_s\": %.3f, \"bytes\": %.0f, \"flops\": %.0f, "
                       "\"gb_s\": %.3f, \"tflops\": %.5f, \"floor_ms\": %.6f, "
                       "\"fraction_of_floor\": %.5f, \"experts_touched\": %u, \"copies\": %u, "
                       "\"weight_bytes\": %.0f, \"scratch_bytes\": %.0f, \"peak_bytes\": %.0f, "
                       "\"stage_ms\": {",
                    r->ms, r->tokens / (r->ms * 1e-3), r->bytes, r->flops, bench_gb_s(r),
                    bench_tflops(r), bench_floor_ms(r, c), frac_floor(r, c), r->experts_touched,
                    r->copies, r->weight_bytes, r->scratch_bytes, r->peak_bytes);
            for (int s = 0; s < MOEVK_STAGE_COUNT; s++)
                fprintf(f, "%s\"%s\": %.6f", s ? ", " : "", moevk_stage_name((moevk_stage)s),
                        r->stage_ms[s]);
            fprintf(f, "}");
            if (r->work.tokens) {
                const moevk_pass_info *w = &r->work;
                fprintf(f, ", \"work\": {\"dispatches\": %u, \"barriers\": %u, "
                           "\"expert_chunks\": %u, \"experts_per_path\": {\"skinny\": %u, "
                           "\"tile16\": %u, \"tile64\": %u}, \"macs_ratio\": %.5f, "
                           "\"bytes_ratio\": %.5f, \"stages\": {",
                        w->dispatches, w->barriers, w->expert_chunks, w->experts_per_path[0],
                        w->experts_per_path[1], w->experts_per_path[2], bench_macs_ratio(r),
                        bench_bytes_ratio(r));
                for (int s = 0; s < MOEVK_STAGE_COUNT; s++)
                    fprintf(f, "%s\"%s\": {\"macs_useful\": %.0f, \"macs_launched\": %.0f, "
                               "\"weight_bytes_needed\": %.0f, \"weight_bytes_fetched\": %.0f}",
                            s ? ", " : "", moevk_stage_name((moevk_stage)s), w->macs_useful[s],
                            w->macs_launched[s], w->weight_bytes_needed[s],
                            w->weight_bytes_fetched[s]);
                fprintf(f, "}}");
            }
        } else {
            fprintf(f, ", \"note\": \"%s\"", r->note);
        }
        if (r->budget[0])
            fprintf(f, ", \"vram_budget\": {\"asked\": \"%s\", \"bytes\": %.0f, "
                       "\"fraction\": %.5f, \"host_weight_bytes\": %.0f, \"device_slots\": %u, "
                       "\"hits\": %llu, \"misses\": %llu, \"promotions\": %llu, "
                       "\"bytes_moved\": %llu}",
                    r->budget, r->vram_budget, r->budget_frac, r->host_bytes,
                    r->cache.device_slots, (unsigned long long)r->cache.hits,
                    (unsigned long long)r->cache.misses,
                    (unsigned long long)r->cache.promotions,
                    (unsigned long long)r->cache.bytes_moved);
        fprintf(f, "}%s\n", i + 1 < n ? "," : "");
    }
    fprintf(f, "  ]\n}\n");
    return fclose(f) ? -1 : 0;
}

int bench_write_csv(const char *path, const bench_row *rows, uint32_t n, const bench_ceilings *c)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "moevk bench: cannot write %s\n", path);
        return -1;
    }
    fprintf(f, "preset,backend,dtype,routing,tokens,H,F,E,k,ok,ms,tokens_per_s,bytes,flops,gb_s,"
               "tflops,floor_ms,fraction_of_floor,weight_bytes,peak_bytes");
    for (int s = 0; s < MOEVK_STAGE_COUNT; s++)
        fprintf(f, ",%s_ms", moevk_stage_name((moevk_stage)s));
    fprintf(f, ",dispatches,macs_ratio,bytes_ratio,skinny_experts,tile16_experts,tile64_experts");
    fprintf(f, ",note\n");
    for (uint32_t i = 0; i < n; i++) {
        const bench_row *r = &rows[i];
        fprintf(f, "%s,%s,%s,%s,%u,%u,%u,%u,%u,%d,%.6f,%.3f,%.0f,%.0f,%.3f,%.5f,%.6f,%.5f,%.0f,%.0f",
                r->preset, bench_backend_name(r->backend), moevk_dtype_name(r->dtype),
                bench_dist_name(r->dist), r->tokens, r->H, r->F, r->E, r->k, r->ok, r->ms,
                r->ms > 0 ? r->tokens / (r->ms * 1e-3) : 0, r->bytes, r->flops, bench_gb_s(r),
                bench_tflops(r), bench_floor_ms(r, c), frac_floor(r, c), r->weight_bytes,
                r->peak_bytes);
        for (int s = 0; s < MOEVK_STAGE_COUNT; s++)
            fprintf(f, ",%.6f", r->stage_ms[s]);
        fprintf(f, ",%u,%.5f,%.5f,%u,%u,%u", r->work.dispatches, bench_macs_ratio(r),
                bench_bytes_ratio(r), r->work.experts_per_path[0], r->work.experts_per_path[1],
                r->work.experts_per_path[2]);
        fprintf(f, ",\"%s\"\n", r->note);
    }
    return fclose(f) ? -1 : 0;
}

/* ---- SVG ------------------------------------------------------------------------ */

static const char *const stage_colors[MOEVK_STAGE_COUNT] = {
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#9c755f",
};
static const char *const series_colors[] = {
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
};

/* Left panel: one bar per measured row, its stages as shares of the time,
 * the total in ms at the end. Right panel: fraction of the floor against T
 * (log scale), one line per preset/dtype/backend/routing. */
int bench_write_svg(const char *path, const bench_row *rows, uint32_t n, const bench_ceilings *c)
{
    uint32_t nok = 0;
    for (uint32_t i = 0; i < n; i++)
        nok += rows[i].ok;
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "moevk bench: cannot write %s\n", path);
        return -1;
    }
    const double bar_h = 18, top = 70, label_w = 300, bar_w = 420;
    const double left_h = top + (nok ? nok : 1) * bar_h + 70;
    const double px = label_w + bar_w + 140, pw = 460, ph = 300;
    uint32_t nseries = 0;
    for (uint32_t i = 0; i < n; i++)
        nseries += rows[i].ok && (i == 0 || strcmp(rows[i].preset, rows[i - 1].preset) ||
                                  rows[i].dtype != rows[i - 1].dtype ||
                                  rows[i].backend != rows[i - 1].backend ||
                                  rows[i].dist != rows[i - 1].dist);
    const double right_h = top + ph + 80 + 16.0 * nseries;
    const double height = left_h > right_h ? left_h : right_h;
    const double width = px + pw + 260;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
               "font-family=\"sans-serif\" font-size=\"12\">\n", width, height);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(f, "<text x=\"20\" y=\"24\" font-size=\"16\" font-weight=\"bold\">moevk bench — %s"
               "</text>\n", c->device);
    char tf[1024];
    fprintf(f, "<text x=\"20\" y=\"44\">read bandwidth %.3g GB/s, matmul %s TFLOP/s (measured by "
               "moevk's own kernels)</text>\n",
            c->gb_s, bench_tflops_text(c, 0, tf, sizeof tf));

    /* left: time per stage */
    fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" font-weight=\"bold\">Where the time goes (share of "
               "each run; total ms at the right)</text>\n", label_w, top - 8);
    double y = top;
    for (uint32_t i = 0; i < n; i++) {
        const bench_row *r = &rows[i];
        if (!r->ok)
            continue;
        fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"end\">%s %s %s %s T=%u</text>\n",
                label_w - 8, y + 13, r->preset, moevk_dtype_name(r->dtype),
                bench_backend_name(r->backend), bench_dist_name(r->dist), r->tokens);
        double sum = 0;
        for (int s = 0; s < MOEVK_STAGE_COUNT; s++)
            sum += r->stage_ms[s];
        double x = label_w;
        if (sum > 0) {
            for (int s = 0; s < MOEVK_STAGE_COUNT; s++) {
                double w = bar_w * r->stage_ms[s] / sum;
                if (w <= 0)
                    continue;
                fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.0f\" "
                           "fill=\"%s\"><title>%s %.3f ms</title></rect>\n",
                        x, y + 2, w, bar_h - 4, stage_colors[s], moevk_stage_name((moevk_stage)s),
                        r->stage_ms[s]);
                x += w;
            }
        } else {
            fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.0f\" fill=\"#ccc\"/>"
                       "\n", x, y + 2, bar_w, bar_h - 4);
        }
        fprintf(f, "<text x=\"%.0f\" y=\"%.0f\">%.3f ms</text>\n", label_w + bar_w + 6, y + 13,
                r->ms);
        y += bar_h;
    }
    /* stage legend */
    double lx = label_w;
    y += 16;
    for (int s = 0; s < MOEVK_STAGE_COUNT; s++) {
        fprintf(f, "<rect x=\"%.0f\" y=\"%.0f\" width=\"12\" height=\"12\" fill=\"%s\"/>"
                   "<text x=\"%.0f\" y=\"%.0f\">%s</text>\n",
                lx, y, stage_colors[s], lx + 16, y + 11, moevk_stage_name((moevk_stage)s));
        lx += 100;
        if (s == 3) {
            lx = label_w;
            y += 18;
        }
    }

    /* right: fraction of the floor vs T */
    const double py = top + 10;
    fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" font-weight=\"bold\">Fraction of the floor "
               "max(bytes/bandwidth, FLOPs/matmul)</text>\n", px, top - 8);
    fprintf(f, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" "
               "stroke=\"#333\"/>\n", px, py, pw, ph);
    double tmin = 1e30, tmax = 0;
    for (uint32_t i = 0; i < n; i++)
        if (rows[i].ok) {
            tmin = fmin(tmin, rows[i].tokens);
            tmax = fmax(tmax, rows[i].tokens);
        }
    if (tmax <= tmin)
        tmax = tmin * 2;
    const double l0 = log2(tmin > 0 ? tmin : 1), l1 = log2(tmax);
    for (int g = 0; g <= 4; g++) {
        double gy = py + ph - ph * g / 4.0;
        fprintf(f, "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                   "<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\">%.0f%%</text>\n",
                px, gy, px + pw, gy, px - 6, gy + 4, 25.0 * g);
    }
    for (double t = exp2(floor(l0)); t <= tmax * 1.001; t *= 2) {
        if (t < tmin * 0.999)
            continue;
        double gx = px + pw * (log2(t) - l0) / (l1 - l0);
        fprintf(f, "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%.0f</text>\n", gx,
                py + ph + 16, t);
    }
    fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">tokens T (log scale)</text>\n",
            px + pw / 2, py + ph + 34);
    /* a series per (preset, dtype, backend, routing): consecutive rows */
    uint32_t series = 0;
    double ly = py + ph + 56;
    for (uint32_t i = 0; i < n;) {
        uint32_t j = i;
        while (j < n && !strcmp(rows[j].preset, rows[i].preset) &&
               rows[j].dtype == rows[i].dtype && rows[j].backend == rows[i].backend &&
               rows[j].dist == rows[i].dist)
            j++;
        const char *col = series_colors[series % 10];
        bool any = false;
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", col);
        for (uint32_t k = i; k < j; k++) {
            if (!rows[k].ok)
                continue;
            double fr = fmin(frac_floor(&rows[k], c), 1.0);
            fprintf(f, "%.1f,%.1f ", px + pw * (log2(rows[k].tokens) - l0) / (l1 - l0),
                    py + ph - ph * fr);
            any = true;
        }
        fprintf(f, "\"/>\n");
        for (uint32_t k = i; k < j; k++) {
            if (!rows[k].ok)
                continue;
            double fr = fmin(frac_floor(&rows[k], c), 1.0);
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"><title>%s T=%u: "
                       "%.1f%%</title></circle>\n",
                    px + pw * (log2(rows[k].tokens) - l0) / (l1 - l0), py + ph - ph * fr, col,
                    rows[k].preset, rows[k].tokens, 100 * frac_floor(&rows[k], c));
        }
        if (any) {
            fprintf(f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"%s\" "
                       "stroke-width=\"3\"/><text x=\"%.0f\" y=\"%.0f\">%s %s %s %s</text>\n",
                    px, ly, px + 24, ly, col, px + 30, ly + 4, rows[i].preset,
                    moevk_dtype_name(rows[i].dtype), bench_backend_name(rows[i].backend),
                    bench_dist_name(rows[i].dist));
            ly += 16;
            series++;
        }
        i = j;
    }
    fprintf(f, "</svg>\n");
    return fclose(f) ? -1 : 0;
}

/* Throughput relative to each curve's best against the budget's share of
 * the routed experts' bytes (0 to 100 %), a line per curve. */
int bench_write_budget_svg(const char *path, const bench_row *rows, uint32_t n,
                           const bench_ceilings *c)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "moevk bench: cannot write %s\n", path);
        return -1;
    }
    uint32_t ncurves = 0;
    for (uint32_t i = 0; i < n; i++) {
        bool first = rows[i].budget[0] != '\0';
        for (uint32_t j = 0; first && j < i; j++)
            first = !(rows[j].budget[0] && same_curve(&rows[j], &rows[i]));
        ncurves += first;
    }
    const double px = 90, py = 80, pw = 560, ph = 340;
    const double width = px + pw + 380, height = py + ph + 80 + 16.0 * ncurves;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
               "font-family=\"sans-serif\" font-size=\"12\">\n", width, height);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(f, "<text x=\"20\" y=\"24\" font-size=\"16\" font-weight=\"bold\">moevk bench — "
               "throughput against the experts' device-memory budget — %s</text>\n", c->device);
    fprintf(f, "<text x=\"20\" y=\"44\">the experts that do not fit are read from host memory "
               "inside the pass; the hot ones are cached on the device</text>\n");
    fprintf(f, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" "
               "stroke=\"#333\"/>\n", px, py, pw, ph);
    for (int g = 0; g <= 4; g++) {
        const double gy = py + ph - ph * g / 4.0, gx = px + pw * g / 4.0;
        fprintf(f, "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                   "<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\">%.0f%%</text>\n",
                px, gy, px + pw, gy, px - 6, gy + 4, 25.0 * g);
        fprintf(f, "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%.0f%%</text>\n", gx,
                py + ph + 16, 25.0 * g);
    }
    fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">device-memory budget (share "
               "of the routed experts' bytes)</text>\n", px + pw / 2, py + ph + 34);
    fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" transform=\"rotate(-90 %.0f %.0f)\" "
               "text-anchor=\"middle\">tokens/s relative to the curve's best</text>\n",
            px - 52, py + ph / 2, px - 52, py + ph / 2);
    uint32_t curve = 0;
    double ly = py + ph + 56;
    for (uint32_t i = 0; i < n; i++) {
        bool first = rows[i].budget[0] != '\0';
        for (uint32_t j = 0; first && j < i; j++)
            first = !(rows[j].budget[0] && same_curve(&rows[j], &rows[i]));
        if (!first)
            continue;
        const double best = curve_best(rows, n, &rows[i]);
        const char *col = series_colors[curve % 10];
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", col);
        for (uint32_t k = i; k < n; k++)
            if (rows[k].ok && rows[k].budget[0] && same_curve(&rows[k], &rows[i]) && best > 0)
                fprintf(f, "%.1f,%.1f ", px + pw * fmin(rows[k].budget_frac, 1.0),
                        py + ph - ph * (rows[k].tokens / (rows[k].ms * 1e-3)) / best);
        fprintf(f, "\"/>\n");
        for (uint32_t k = i; k < n; k++)
            if (rows[k].ok && rows[k].budget[0] && same_curve(&rows[k], &rows[i]) && best > 0) {
                const double tps = rows[k].tokens / (rows[k].ms * 1e-3);
                fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"><title>%s: "
                           "%.0f tokens/s</title></circle>\n",
                        px + pw * fmin(rows[k].budget_frac, 1.0), py + ph - ph * tps / best, col,
                        rows[k].budget, tps);
            }
        fprintf(f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"%s\" "
                   "stroke-width=\"3\"/><text x=\"%.0f\" y=\"%.0f\">%s %s %s T=%u %s (best "
                   "%.0f tokens/s)</text>\n",
                px, ly, px + 24, ly, col, px + 30, ly + 4, rows[i].preset,
                moevk_dtype_name(rows[i].dtype), bench_dist_name(rows[i].dist), rows[i].tokens,
                bench_backend_name(rows[i].backend), best);
        ly += 16;
        curve++;
    }
    fprintf(f, "</svg>\n");
    return fclose(f) ? -1 : 0;
}
