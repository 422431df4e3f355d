/* Exact row-wise Top-K for stacks of workers' vectors, optionally fused with error feedback's
 * shift: for rows r = a - b (b may be absent: r = a),
 *
 *     idx[i, :]  = the k largest |r_ij| of row i, ascending; ties at the k-th magnitude go to
 *                  the lowest indices (distopt/compressors/sparse.py's definition)
 *     vals[i, :] = r_i[idx[i, :]]
 *     out[i, :]  = b_i + scatter(idx_i, vals_i)      (EF21's g_i + c_i; optional; out may be
 *                  b itself: a donated state, its k entries updated in place, rows with a NaN
 *                  or an inf left as they were)
 *     bad[i]     = 1 if row i of r holds a NaN or an inf
 *
 * With the error c: r = eta c + (a - b) and eout = c + (a - b) - D (EControl), or, without b,
 * r = eta c + sa a and eout = c + sa a - D (EF14 with eta = 1, sa = lr: p = e + lr g, e = p - D).
 *
 * Magnitudes are ranked by the bit patterns of |r| (for non-negative IEEE floats, integer order
 * is float order; NaN ranks above inf), as the torch path ranks them.
 *
 * Per row, in cache: u_j = bits(|r_j|) into a scratch row; the maxima of G >= 2k groups of
 * gs ~ d / 2k consecutive u (whole 16-entry vectors; the last group ragged); thr = about the
 * k-th largest maximum, never above it (k groups, so k entries, reach thr); the candidates
 * u_j >= thr, read only from the groups whose maximum reaches thr (~k groups); the exact k-th
 * largest candidate; one walk over the candidates (ascending j) emits the selection; then out
 * = b + D in one streaming pass. About one pass over a and b per row, plus O(k) work. The
 * k-th largest: with AVX-512, bit by bit from the top, counting 16 entries per compare
 * (kth_bits_u32); else a histogram + quickselect. (Groups of d/4k, as first written, made
 * the scan 2x slower -- a horizontal maximum per 16 entries -- for 20% fewer candidates.)
 *
 * topk_rows_*: rows [r0, r1) of a stack, split over ``threads`` OpenMP threads (see PARALLEL).
 * topk_row_*: one long row, its groups split over the threads (OpenMP builds only). Row-major,
 * contiguous [n, d] arrays. Return 0, or -1 if scratch could not be allocated. Written for
 * distopt; built by distopt/_native/__init__.py.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef uint32_t cpos_t; /* a candidate's position in its row: rows shorter than 2^32 (the caller checks) */

/* three-way quickselect: the k-th largest (1-based) of v[0..m), reordering v */
#define DEFINE_KTH(NAME, U)                                                          \
    static U NAME(U *v, int64_t m, int64_t k) {                                      \
        int64_t lo = 0, hi = m; /* the answer is the k-th largest of v[lo..hi) */    \
        for (;;) {                                                                   \
            if (hi - lo == 1) return v[lo];                                          \
            U x = v[lo], y = v[lo + (hi - lo) / 2], z = v[hi - 1], p;                \
            p = x < y ? (y < z ? y : (x < z ? z : x)) : (x < z ? x : (y < z ? z : y)); \
            /* [lo, gt) > p, [gt, i) == p, [lt, hi) < p after the sweep */           \
            int64_t gt = lo, i = lo, lt = hi;                                        \
            while (i < lt) {                                                         \
                U e = v[i];                                                          \
                if (e > p) { v[i] = v[gt]; v[gt] = e; gt++; i++; }                   \
                else if (e < p) { lt--; v[i] = v[lt]; v[lt] = e; }                   \
                else i++;                                                            \
            }                                                                        \
            int64_t n_gt = gt - lo, n_eq = lt - gt;                                  \
            if (k <= n_gt) hi = gt;                                                  \
            else if (k <= n_gt + n_eq) return p;                                     \
            else { k -= n_gt + n_eq; lo = lt; }                                      \
        }                                                                            \
    }

#if !defined(__AVX512F__) /* there: kth_bits_u32 below */
DEFINE_KTH(kth_u32, uint32_t)
#endif
DEFINE_KTH(kth_u64, uint64_t)

/* The exact k-th largest of v[0..m) (1 <= k <= m; hi = its max), v untouched: a 256-bin
 * histogram of v between its min and max, then a quickselect on the one bin that holds the
 * answer (copied to scratch[m]). Magnitudes' bit patterns are log-scaled, so a bin spans a
 * small fraction of a binade even when the values span many (heavy-tailed gradients, exact
 * zeros): a histogram bound alone was loose there (10x the candidates, 2x the time). */
#define DEFINE_KTH_HIST(NAME, U, KTH)                                                \
    static U NAME(const U *v, int64_t m, int64_t k, U hi, U *scratch) {             \
        U lo = hi;                                                                   \
        for (int64_t g = 0; g < m; g++) lo = v[g] < lo ? v[g] : lo;                  \
        if (lo == hi) return hi;                                                     \
        int s = 0;                                                                   \
        while (((hi - lo) >> s) >= 256) s++;                                         \
        int64_t count[256] = {0};                                                    \
        for (int64_t g = 0; g < m; g++) count[(v[g] - lo) >> s]++;                  \
        int64_t above = 0, b = 255;                                                  \
        for (; b > 0 && above + count[b] < k; b--) above += count[b];                \
        int64_t n = 0;                                                               \
        for (int64_t g = 0; g < m; g++)                                              \
            if ((int64_t)((v[g] - lo) >> s) == b) scratch[n++] = v[g];               \
        return KTH(scratch, n, k - above);                                           \
    }

#if !defined(__AVX512F__)
DEFINE_KTH_HIST(kth_hist_u32, uint32_t, kth_u32)
#endif
DEFINE_KTH_HIST(kth_hist_u64, uint64_t, kth_u64)

/* Append the entries u[i] >= thr of u[0..m) (values to cv, positions pos0 + i to cp) after
 * the c already there; the new count. Branch-free; 16 at a time with AVX-512. */
#define DEFINE_COMPACT(NAME, U, VEC)                                                 \
    static int64_t NAME(const U *u, int64_t m, int64_t pos0, U thr, U *cv, cpos_t *cp, int64_t c) { \
        int64_t j = 0;                                                               \
        VEC                                                                          \
        for (; j < m; j++) { cv[c] = u[j]; cp[c] = (cpos_t)(pos0 + j); c += u[j] >= thr; }    \
        return c;                                                                    \
    }

#if defined(__AVX512F__)
#include <immintrin.h>
#define VEC_U32                                                                      \
    const __m512i t = _mm512_set1_epi32((int)thr);                                   \
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0); \
    for (; j + 16 <= m; j += 16) {                                                   \
        __m512i v = _mm512_loadu_si512((const void *)(u + j));                       \
        __mmask16 hit = _mm512_cmpge_epu32_mask(v, t); /* no branch on it: ~1/3 of  \
                                 the vectors hit, unpredictably (6% of a stack's time) */ \
        __m512i at = _mm512_add_epi32(_mm512_set1_epi32((int)(pos0 + j)), lane);     \
        /* compress in registers, store whole vectors (a compress-store to memory is slow on \
         * some CPUs); the scratch rows have 16 entries of slack for the overhang */ \
        _mm512_storeu_si512((void *)(cv + c), _mm512_maskz_compress_epi32(hit, v));    \
        _mm512_storeu_si512((void *)(cp + c), _mm512_maskz_compress_epi32(hit, at));   \
        c += __builtin_popcount(hit);                                                \
    }
#else
#define VEC_U32
#endif
DEFINE_COMPACT(compact_u32, uint32_t, VEC_U32)
DEFINE_COMPACT(compact_u64, uint64_t, )

#if defined(__AVX512F__)
/* The exact k-th largest of v[0..m) (1 <= k <= m; hi = its max), v untouched: its bits from
 * the top, each kept when at least k entries reach the value so far (a count of 16 compares
 * per instruction); once a bit is kept, the entries below the value so far can no longer
 * count, so they are dropped (the rest compressed into scratch[0..m+16)). Bits below ``low``
 * stay 0: a lower bound then, at most 2^low - 1 below (low = 12 for the group maxima's bound:
 * 1/2048 of a binade, no measurable extra candidates; 0, exact, for the candidates' k-th).
 * 0.6-0.9 us per row where the histogram + quickselect took 1.5-1.7 (dependent counts). */
static uint32_t kth_bits_u32(const uint32_t *v, int64_t m, int64_t k, uint32_t hi, uint32_t *scratch, int low) {
    uint32_t ans = 0;
    const uint32_t *s = v;
    for (int bit = hi ? 31 - __builtin_clz(hi) : -1; bit >= low; bit--) {
        uint32_t cand = ans | (1u << bit);
        const __m512i t = _mm512_set1_epi32((int)cand);
        int64_t cnt = 0, j = 0;
        for (; j + 16 <= m; j += 16)
            cnt += __builtin_popcount(_mm512_cmpge_epu32_mask(_mm512_loadu_si512((const void *)(s + j)), t));
        __mmask16 tail = (__mmask16)((1u << (m - j)) - 1);
        cnt += __builtin_popcount(_mm512_mask_cmpge_epu32_mask(tail, _mm512_maskz_loadu_epi32(tail, s + j), t));
        if (cnt < k) continue;
        ans = cand;
        if (cnt == m) continue;
        int64_t c = 0; /* keep s >= ans, in place once in scratch (writes never pass reads) */
        for (j = 0; j < m; j += 16) {
            __mmask16 in = m - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (m - j)) - 1);
            __m512i x = _mm512_maskz_loadu_epi32(in, s + j);
            __mmask16 keep = _mm512_mask_cmpge_epu32_mask(in, x, t);
            _mm512_storeu_si512((void *)(scratch + c), _mm512_maskz_compress_epi32(keep, x));
            c += __builtin_popcount(keep);
        }
        s = scratch, m = c;
    }
    return ans;
}
#define BOUND_U32(v, m, k, hi, scratch) kth_bits_u32(v, m, k, hi, scratch, 12)
#define KTH_U32(v, m, k, scratch) kth_bits_u32(v, m, k, 0x7fffffffu, scratch, 0)
#else
#define BOUND_U32(v, m, k, hi, scratch) kth_hist_u32(v, m, k, hi, scratch)
#define KTH_U32(v, m, k, scratch) kth_u32(memcpy(scratch, v, sizeof(uint32_t) * (m)), m, k)
#endif
#define KTH_U64(v, m, k, scratch) kth_u64(memcpy(scratch, v, sizeof(uint64_t) * (m)), m, k)

/* out = b for a row: with streaming stores where AVX-512 is there (the new state is not read
 * again soon, and a normal store first reads each line it writes: ~7% of a round), else memcpy */
static void copy_out(void *dst, const void *src, int64_t bytes) {
#if defined(__AVX512F__)
    char *o = dst;
    const char *i = src;
    int64_t head = (64 - ((uintptr_t)o & 63)) & 63;
    if (head > bytes) head = bytes;
    memcpy(o, i, head);
    o += head, i += head, bytes -= head;
    for (; bytes >= 64; bytes -= 64, o += 64, i += 64)
        _mm512_stream_si512((__m512i *)o, _mm512_loadu_si512((const void *)i));
    memcpy(o, i, bytes);
    _mm_sfence(); /* the patch of the selected entries that follows sees these stores */
#else
    memcpy(dst, src, bytes);
#endif
}

/* out = b, but b + vals[q] at idx[q] (ascending), in one streaming pass: each line patched in
 * registers before it is stored (patching after streaming stores re-read k lines from memory).
 * The sums are the scalar b[j] + vals[q] of torch's scatter_add. Meanwhile it prefetches the
 * next row's a and b (na, nb; NULL for none) line by line, so that the next scan reads them
 * from L2 instead of waiting on memory (all at once, before, it was slower). */
#if defined(__AVX512F__)
#define PATCH_VEC(T, V, W, M, SFX)                                                             \
    for (; j + W <= d; j += W) {                                                                \
        V v = _mm512_loadu_##SFX(b + j);                                                        \
        if (q < k && idx[q] < j + W) { /* this line holds selected entries: add them, masked */ \
            M at = 0;                                                                           \
            int64_t q0 = q;                                                                     \
            for (; q < k && idx[q] < j + W; q++) at |= (M)(1u << (idx[q] - j));                 \
            V add = _mm512_maskz_expand_##SFX(at, _mm512_maskz_loadu_##SFX((M)((1u << (q - q0)) - 1), vals + q0)); \
            v = _mm512_mask_add_##SFX(v, at, v, add);                                           \
        }                                                                                       \
        _mm512_stream_##SFX(out + j, v);                                                        \
        if (na) __builtin_prefetch(na + j, 0, 1); /* the next row's a and b, a line each */      \
        if (nb) __builtin_prefetch(nb + j, 0, 1);                                               \
    }                                                                                           \
    _mm_sfence();
#else
#define PATCH_VEC(T, V, W, M, SFX)
#endif
#define DEFINE_COPY_PATCH(T, V, W, M, SFX)                                                      \
    static void copy_patch_##T(T *out, const T *b, int64_t d, const int64_t *idx, const T *vals, int64_t k,  \
                               const T *na, const T *nb) {                              \
        int64_t q = 0, j = 0; /* scalar up to out's first 64-byte line, then whole lines */     \
        int64_t head = (int64_t)(((64 - ((uintptr_t)out & 63)) & 63) / sizeof(T));             \
        for (head = head < d ? head : d; j < head; j++) out[j] = q < k && idx[q] == j ? b[j] + vals[q++] : b[j]; \
        PATCH_VEC(T, V, W, M, SFX)                                                              \
        for (; j < d; j++) out[j] = q < k && idx[q] == j ? b[j] + vals[q++] : b[j];            \
    }
DEFINE_COPY_PATCH(float, __m512, 16, __mmask16, ps)
DEFINE_COPY_PATCH(double, __m512d, 8, __mmask8, pd)

/* One row's inputs and outputs: r = a - b (b NULL: r = a), or EControl's r = eta c + (a - b)
 * with c the error (specs/ef-family.md 3.11: D = C(eta e + g - h)); out = b + D (EF21's g + c,
 * EControl's h + D) and eout = c + (a - b) - D (EControl's e), each optional. With c and no b:
 * r = eta c + sa a, eout = c + sa a - D (EF14, 3.2: p = e + lr g, D = C(p), e = p - D; eta = 1,
 * so eta c is c to the bit). sa is used there only. ahead: the row after this one (a, b, c
 * at + d) is to be prefetched while this one is scanned. */
#define DEFINE_ROWIO(T)                                                                         \
    typedef struct { const T *a, *b, *c; T eta, sa; T *out, *eout; int ahead; } rowio_##T;     \
    static inline rowio_##T rowio_at_##T(const rowio_##T *o, int64_t off) {                   \
        rowio_##T r = {o->a + off, o->b ? o->b + off : NULL, o->c ? o->c + off : NULL, o->eta, o->sa, \
                       o->out ? o->out + off : NULL, o->eout ? o->eout + off : NULL, 0};        \
        return r;                                                                               \
    }                                                                                           \
    static inline T r_at_##T(const rowio_##T *o, int64_t j) {                                  \
        if (o->c) return o->eta * o->c[j] + (o->b ? o->a[j] - o->b[j] : o->sa * o->a[j]);      \
        return o->b ? o->a[j] - o->b[j] : o->a[j];                                              \
    }

DEFINE_ROWIO(float)
DEFINE_ROWIO(double)

/* The per-row phases, over the groups [g0, g1) of a row (G groups of gs, the last ragged):
 * SCAN   u = bits(|r|) (kept in u unless u is NULL) and the group maxima; out = b and
 *        eout = c + (a - b) there; returns the max u;
 * GATHER the candidates u >= thr of the groups whose maximum reaches thr into (cv, cp)
 *        (REGATHER: recomputing u there, for a long row that kept none);
 * EMIT   the exact k-th largest of nc candidates (quickselect on a copy at cv + nc), then the
 *        selection in ascending position -- ties at the k-th magnitude lowest first -- into
 *        (vals, idx), and there out += r, eout += -r (what torch's scatter_add of +-D gives). */
/* the groups [g0, g1) of one row: u = bits(|r|) (KEEP: stored or not), their maxima, the top */
#define SCAN_GROUPS(U, MAG, LOAD, KEEP)                                                         \
    for (int64_t g = g0; g < g1; g++) {                                                         \
        int64_t j0 = g * gs, j1 = j0 + gs < d ? j0 + gs : d;                                    \
        U m = 0;                                                                                \
        for (int64_t j = j0; j < j1; j++) {                                                     \
            LOAD;                                                                               \
            U bits; memcpy(&bits, &r, sizeof bits);                                             \
            bits &= MAG; m = bits > m ? bits : m;                                               \
            KEEP;                                                                               \
        }                                                                                       \
        gmax[g] = m;                                                                            \
        top = m > top ? m : top;                                                                \
        if (pa) /* the next row's lines of this group, into L2 (see DEFINE_BLOCK) */           \
            for (int64_t j = j0; j < j1; j += 64 / (int64_t)sizeof(*pa)) {                      \
                __builtin_prefetch(pa + j, 0, 2);                                               \
                if (pb) __builtin_prefetch(pb + j, 0, 2);                                       \
                if (pc) __builtin_prefetch(pc + j, 0, 2);                                       \
            }                                                                                   \
    }

#define DEFINE_PHASES(T, U, KTH, COMPACT, MAG)                                                  \
    static inline __attribute__((always_inline)) U scan_##T(const rowio_##T *o, int64_t d,    \
            int64_t gs, int64_t g0, int64_t g1, U *u, U *gmax) {                                \
        const T *a = o->a, *b = o->b, *c = o->c;                                                \
        T eta = o->eta, sa = o->sa, *eo = o->eout;                                              \
        U top = 0; /* one loop per case, so that each vectorizes */                             \
        const T *pa = o->ahead ? a + d : NULL, *pb = pa && b ? b + d : NULL, *pc = pa && c ? c + d : NULL; \
        if (c && !b && u) SCAN_GROUPS(U, MAG, T dd = sa * a[j]; T r = eta * c[j] + dd; eo[j] = c[j] + dd, u[j] = bits) \
        else if (c && !b) SCAN_GROUPS(U, MAG, T dd = sa * a[j]; T r = eta * c[j] + dd; eo[j] = c[j] + dd, (void)0) \
        else if (c && u) SCAN_GROUPS(U, MAG, T dd = a[j] - b[j]; T r = eta * c[j] + dd; eo[j] = c[j] + dd, u[j] = bits) \
        else if (c) SCAN_GROUPS(U, MAG, T dd = a[j] - b[j]; T r = eta * c[j] + dd; eo[j] = c[j] + dd, (void)0) \
        else if (b && u) SCAN_GROUPS(U, MAG, T r = a[j] - b[j], u[j] = bits)                    \
        else if (b) SCAN_GROUPS(U, MAG, T r = a[j] - b[j], (void)0)                             \
        else if (u) SCAN_GROUPS(U, MAG, T r = a[j], u[j] = bits)                                \
        else SCAN_GROUPS(U, MAG, T r = a[j], (void)0)                                           \
        if (o->out && o->out != b) { /* (out == b: D is added in place, in EMIT) */             \
            int64_t j0 = g0 * gs, j1 = g1 * gs < d ? g1 * gs : d;                               \
            copy_out(o->out + j0, b + j0, sizeof(T) * (j1 - j0));                               \
        }                                                                                       \
        return top;                                                                             \
    }                                                                                           \
    static inline __attribute__((always_inline)) int64_t gather_##T(const U *u, const U *gmax,  \
            int64_t d, int64_t gs, int64_t g0, int64_t g1, U thr, U *cv, cpos_t *cp) {         \
        int64_t nc = 0;                                                                         \
        for (int64_t g = g0; g < g1; g++) {                                                     \
            if (gmax[g] < thr) continue;                                                        \
            int64_t j1 = (g + 1) * gs < d ? (g + 1) * gs : d;                                   \
            nc = COMPACT(u + g * gs, j1 - g * gs, g * gs, thr, cv, cp, nc);                     \
        }                                                                                       \
        return nc;                                                                              \
    }                                                                                           \
    /* GATHER without a kept u (a long row): u recomputed piece by piece (a separate function: \
     * the buffer slowed the kept-u loop above 3x when they shared one) */                      \
    static int64_t regather_##T(const rowio_##T *o, const U *gmax, int64_t d, int64_t gs,      \
                                int64_t g0, int64_t g1, U thr, U *cv, cpos_t *cp) {            \
        int64_t nc = 0;                                                                         \
        U tmp[256];                                                                             \
        for (int64_t g = g0; g < g1; g++) {                                                     \
            if (gmax[g] < thr) continue;                                                        \
            int64_t j1 = (g + 1) * gs < d ? (g + 1) * gs : d;                                   \
            for (int64_t j0 = g * gs; j0 < j1; j0 += 256) {                                     \
                int64_t m = j1 - j0 < 256 ? j1 - j0 : 256;                                      \
                for (int64_t i = 0; i < m; i++) {                                               \
                    T r = r_at_##T(o, j0 + i);                                                  \
                    U bits; memcpy(&bits, &r, sizeof bits);                                     \
                    tmp[i] = bits & MAG;                                                        \
                }                                                                               \
                nc = COMPACT(tmp, m, j0, thr, cv, cp, nc);                                      \
            }                                                                                   \
        }                                                                                       \
        return nc;                                                                              \
    }                                                                                           \
    static inline __attribute__((always_inline)) void emit_##T(const rowio_##T *o, U *cv,     \
            const cpos_t *cp, int64_t nc, int64_t k, T *vals, int64_t *idx) {                  \
        U kth = KTH(cv, nc, k, cv + nc); /* cv untouched; scratch after it */                  \
        int64_t need = k; /* ties at kth taken, lowest positions first */                       \
        for (int64_t q = 0; q < nc; q++) need -= cv[q] > kth;                                   \
        int64_t n = 0;                                                                          \
        for (int64_t q = 0; q < nc; q++) {                                                      \
            if (cv[q] > kth || (cv[q] == kth && need-- > 0)) {                                  \
                int64_t j = cp[q];                                                              \
                T r = r_at_##T(o, j);                                                           \
                vals[n] = r;                                                                    \
                idx[n++] = j;                                                                   \
                if (o->out) o->out[j] = o->b[j] + r;                                            \
                if (o->eout) o->eout[j] = o->eout[j] + (-r);                                    \
            }                                                                                   \
        }                                                                                       \
    }

/* group size: ~d/2k, whole 16-entry vectors where that is >= 16; G = ceil(d / gs) >= 2k */
static int64_t group_size(int64_t d, int64_t k) {
    int64_t gs = d / (2 * k) > 0 ? d / (2 * k) : 1;
    return gs >= 16 ? gs & ~(int64_t)15 : gs;
}

/* Rows [r0, r1) one after another, each in cache: scan, bound, gather, emit. */
#define DEFINE_BLOCK(T, U, BOUND, INF)                                                          \
    static int block_##T(const rowio_##T *io, int64_t d, int64_t k, T *vals, int64_t *idx,     \
                         uint8_t *bad, int64_t r0, int64_t r1) {                                \
        int64_t gs = group_size(d, k), G = (d + gs - 1) / gs;                                   \
        U *u = malloc(sizeof(U) * d);                  /* magnitudes of the row */              \
        U *gmax = malloc(sizeof(U) * (2 * G + 16));    /* group maxima, scratch; slack */       \
        U *cv = malloc(sizeof(U) * (2 * d + 16));      /* candidates, a copy; slack */          \
        cpos_t *cp = malloc(sizeof(cpos_t) * (d + 16));   /* candidates' positions */           \
        int err = !u || !gmax || !cv || !cp;                                                    \
        for (int64_t i = r0; i < r1 && !err; i++) {                                             \
            rowio_##T o = rowio_at_##T(io, i * d);                                              \
            T *out = o.out;        /* written last, in one pass with the selection patched in */ \
            o.out = NULL;                                                                       \
            /* no out streamed (none, or b + D in place): the scan prefetches the next row, one \
             * line of it per line scanned, so that memory keeps streaming while this row's     \
             * threshold, gather and selection run in cache (A/B on a 1000 x 10^4 stack: Top-K  \
             * alone 2.9 -> 2.3 ms, EF21's in-place step 4-12% less; into L1 it gained nothing). \
             * copy_patch prefetches for the streamed form. */                                  \
            o.ahead = i + 1 < r1 && (!out || out == o.b);                                      \
            U top = scan_##T(&o, d, gs, 0, G, u, gmax);                                         \
            bad[i] = top >= INF;                                                                \
            U thr = BOUND(gmax, G, k, top, gmax + G); /* k groups, so k entries, reach thr */   \
            int64_t nc = gather_##T(u, gmax, d, gs, 0, G, thr, cv, cp);                         \
            emit_##T(&o, cv, cp, nc, k, vals + i * k, idx + i * k);                             \
            if (out && out == o.b) { /* donated: b + D in place while the row is in cache (rows  \
                 with a NaN or inf are left as they were); a loop of its own: adding in EMIT, as \
                 the long row does, measured 4-7% slower on a stack (A/B) */                      \
                for (int64_t q = 0; q < k && !bad[i]; q++)                                      \
                    out[idx[i * k + q]] = o.b[idx[i * k + q]] + vals[i * k + q];                \
            } else if (out) /* prefetching the next row meanwhile: 7-10% off a stack's time */   \
                copy_patch_##T(out, o.b, d, idx + i * k, vals + i * k, k, i + 1 < r1 ? io->a + (i + 1) * d : NULL, \
                               i + 1 < r1 && io->b ? io->b + (i + 1) * d : NULL);                 \
        }                                                                                       \
        free(u); free(gmax); free(cv); free(cp);                                                \
        return err ? -1 : 0;                                                                    \
    }

DEFINE_PHASES(float, uint32_t, KTH_U32, compact_u32, 0x7fffffffu)
DEFINE_PHASES(double, uint64_t, KTH_U64, compact_u64, 0x7fffffffffffffffull)
DEFINE_BLOCK(float, uint32_t, BOUND_U32, 0x7f800000u)
DEFINE_BLOCK(double, uint64_t, kth_hist_u64, 0x7ff0000000000000ull)

/* Rows split evenly over ``threads`` parts: with OpenMP, in one parallel region (libgomp is
 * the one PyTorch loaded, so its waiting workers take the parts instead of spinning against
 * us); without, serially -- the caller then runs blocks of rows on its own threads. */
#ifdef _OPENMP
#include <omp.h>
#define PARALLEL(threads, ...)                                                      \
    _Pragma("omp parallel num_threads(threads)") {                                  \
        int part = omp_get_thread_num(), parts = omp_get_num_threads();             \
        __VA_ARGS__                                                                 \
    }
int distopt_openmp(void) { return 1; }
#else
#define PARALLEL(threads, ...) { int part = 0, parts = 1; (void)threads; __VA_ARGS__ }
int distopt_openmp(void) { return 0; }
#endif

/* Entry points (a, b, c, eta, out, eout as in rowio; eta as a double, used in T as torch's
 * scalar multiply does). topk_rows_*: a stack's rows split evenly over the threads. */
#define DEFINE_ROWS(NAME, T)                                                                    \
    int NAME(const T *a, const T *b, const T *c, double eta, double sa, T *out, T *eout, int64_t d, \
             int64_t k, T *vals, int64_t *idx, uint8_t *bad, int64_t r0, int64_t r1,            \
             int threads) {                                                                     \
        rowio_##T io = {a, b, c, (T)eta, (T)sa, out, eout, 0};                                     \
        int err = 0;                                                                            \
        PARALLEL(threads, {                                                                     \
            int64_t lo = r0 + (r1 - r0) * part / parts, hi = r0 + (r1 - r0) * (part + 1) / parts; \
            if (block_##T(&io, d, k, vals, idx, bad, lo, hi)) err = -1;                         \
        })                                                                                      \
        return err;                                                                             \
    }

DEFINE_ROWS(topk_rows_f32, float)
DEFINE_ROWS(topk_rows_f64, double)

/* topk_row_*: one long row on ``threads`` threads (a DDP bucket, one vector of 10^7): each
 * thread scans and gathers its own range of groups; one thread takes the threshold from all
 * the group maxima between the two, and the k-th largest and the selection after. */
#ifdef _OPENMP
#define MAX_PARTS 64
#define DEFINE_ROW(NAME, T, U, BOUND, INF)                                                      \
    int NAME(const T *a, const T *b, const T *c, double eta, double sa, T *out, T *eout, int64_t d, \
             int64_t k, T *vals, int64_t *idx, uint8_t *bad, int threads) {                     \
        rowio_##T io = {a, b, c, (T)eta, (T)sa, out, eout, 0};                                     \
        int64_t gs = group_size(d, k), G = (d + gs - 1) / gs;                                   \
        U *gmax = malloc(sizeof(U) * (2 * G + 16)); /* group maxima, scratch; slack */          \
        U *cv = malloc(sizeof(U) * (2 * d + 16));                                               \
        cpos_t *cp = malloc(sizeof(cpos_t) * (d + 16));                                         \
        U tops[MAX_PARTS], thr = 0;                                                             \
        U *pcv[MAX_PARTS];                                                                      \
        cpos_t *pcp[MAX_PARTS];                                                                 \
        int64_t counts[MAX_PARTS];                                                              \
        int err = !gmax || !cv || !cp;                                                          \
        if (threads > MAX_PARTS) threads = MAX_PARTS;                                           \
        if (!err) {                                                                             \
            _Pragma("omp parallel num_threads(threads)") {                                      \
                int p = omp_get_thread_num(), P = omp_get_num_threads();                        \
                int64_t g0 = G * p / P, g1 = G * (p + 1) / P;                                   \
                int64_t len = (g1 * gs < d ? g1 * gs : d) - g0 * gs;                            \
                tops[p] = scan_##T(&io, d, gs, g0, g1, NULL, gmax);                             \
                pcv[p] = malloc(sizeof(U) * (len + 16));                                        \
                pcp[p] = malloc(sizeof(cpos_t) * (len + 16));                                    \
                _Pragma("omp barrier")                                                          \
                _Pragma("omp single") {                                                         \
                    U top = 0;                                                                  \
                    for (int q = 0; q < P; q++) top = tops[q] > top ? tops[q] : top;            \
                    bad[0] = top >= INF;                                                        \
                    thr = BOUND(gmax, G, k, top, gmax + G);                                     \
                }                                                                               \
                counts[p] = pcv[p] && pcp[p]                                                    \
                    ? regather_##T(&io, gmax, d, gs, g0, g1, thr, pcv[p], pcp[p]) : -1;          \
                _Pragma("omp barrier")                                                          \
                _Pragma("omp single") {                                                         \
                    int64_t nc = 0;                                                             \
                    for (int q = 0; q < P && !err; q++) {                                       \
                        if (counts[q] < 0) { err = 1; break; }                                  \
                        memcpy(cv + nc, pcv[q], sizeof(U) * counts[q]);                         \
                        memcpy(cp + nc, pcp[q], sizeof(cpos_t) * counts[q]);                     \
                        nc += counts[q];                                                        \
                    }                                                                           \
                    if (bad[0] && io.out == io.b) io.out = NULL; /* donated b: left as it was */ \
                    if (!err) emit_##T(&io, cv, cp, nc, k, vals, idx);                          \
                }                                                                               \
                free(pcv[p]); free(pcp[p]);                                                     \
            }                                                                                   \
        }                                                                                       \
        free(gmax); free(cv); free(cp);                                                         \
        return err ? -1 : 0;                                                                    \
    }
DEFINE_ROW(topk_row_f32, float, uint32_t, BOUND_U32, 0x7f800000u)
DEFINE_ROW(topk_row_f64, double, uint64_t, kth_hist_u64, 0x7ff0000000000000ull)
#endif
