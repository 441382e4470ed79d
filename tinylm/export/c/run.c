/* run.c -- tinylm's dependency-free C engine (written by `tinylm export c`).

One C99 file in the spirit of karpathy/llama2.c's run.c: libc and libm only, read top to bottom.
It runs the three tinylm families that declare a C export in their family record:

  llama   pre-norm blocks: RMSNorm, RoPE (half-split, as Hugging Face Llama), grouped-query
          attention, SwiGLU, tied or untied head;
  looped  the same block, one shared block applied `loops` times between unique prelude and
          coda blocks, a learned embedding added before each loop, a rank-r LoRA delta per
          loop (y = W x + B_i A_i x), optional factorized embedding, partial rotary for odd
          head dims, optional block-sparse attention (window + top-k routed blocks);
  bitnet  llama with every block matrix ternary (BitNet b1.58): trits packed 2 bits each,
          one absmean scale per row, inputs quantized per token to 8 bits by absmax.

The model file says which of these pieces it uses; there is one forward pass, not one per
family. Greedy output equals `tinylm generate --temperature 0` (tests/export/test_c_engine.py
compiles this file and compares).

Builds (see the README.txt beside this file):
  hosted        cc -O2 -std=c99 -o run run.c -lm
                ./run model.bin tokenizer.bin --prompt "Once upon" -n 100
  freestanding  -DTINYLM_FREESTANDING: the model and tokenizer come from model_data.h as const
                arrays, every buffer is static (sized by model_data.h), no malloc, no files;
                output goes through one function, platform_write(). Greedy decoding only.
  fixed point   -DTINYLM_FIXED (with TINYLM_FREESTANDING): every number is a Q16.16 int32,
                products accumulate in int64, exp and 1/sqrt are integer approximations, so a
                core without an FPU runs it; model_data.h then holds Q16.16 weights.

Sections: 1 numbers, 2 model file, 3 state, 4 forward, 5 tokenizer, 6 sampler, 7 sha256,
8 platform and main.
*/

#if defined(TINYLM_FREESTANDING) || defined(TINYLM_FIXED)
#define _POSIX_C_SOURCE 200112L /* for write(2) under -std=c99 */
#endif
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(TINYLM_FIXED) && !defined(TINYLM_FREESTANDING)
#define TINYLM_FREESTANDING
#endif

#ifndef TINYLM_FIXED
#include <math.h>
#endif

#ifdef TINYLM_FREESTANDING
#include <unistd.h> /* write(2): the one call platform_write makes; replace it on bare metal */
#include "model_data.h"
#else
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#endif

/* ============================================================================================
 * 1. Numbers: float, or Q16.16 fixed point for cores without an FPU
 * ============================================================================================
 * The forward pass is written once over `num` (a value) and `acc_t` (a sum of products), with
 * a handful of helpers. In fixed point a value v is the int32 round(v * 65536); a product of
 * two values is an int64 with 32 fractional bits, shifted back (rounding) when the sum is
 * done. Q16.16 spans +-32768 with a step of 1.5e-5: ample for tiny models, whose activations
 * stay within a few hundred. */

#ifdef TINYLM_FIXED
typedef int32_t num;
typedef int64_t acc_t;
#define FRAC 16
#define ONE ((num)1 << FRAC)
#define MAC(acc, a, b) ((acc) += (int64_t)(a) * (int64_t)(b))
#define NUM_MIN ((num)INT32_MIN)
static num acc_value(acc_t acc) { return (num)((acc + ((acc_t)1 << (FRAC - 1))) >> FRAC); }
static num mul(num a, num b) { return acc_value((int64_t)a * b); }
static num from_int(int32_t i) { return (num)(i * ONE); }
static num divide(num a, num b) { /* a / b, both Q16.16 */
    int64_t n = (int64_t)a * ONE;
    return (num)((n >= 0) == (b >= 0) ? (n + b / 2) / b : (n - b / 2) / b);
}

/* exp(x) for x <= 0: x = r - k ln2 with r in (-ln2, 0], exp(r) by its Taylor series to x^6
 * (error below 1e-6, under the Q16.16 step), then a right shift by k. */
static num exp_neg(num x) {
    const num ln2 = 45426; /* round(ln 2 * 65536) */
    if (x > 0) x = 0;
    if (x < -16 * ONE) return 0; /* exp(-16) < the smallest Q16.16 step */
    int k = (int)((-x + ln2 - 1) / ln2);
    num r = x + k * ln2; /* in (-ln2, 0] */
    num term = ONE, sum = ONE;
    for (int i = 1; i <= 6; i++) {
        term = mul(term, r) / i;
        sum += term;
    }
    return sum >> k;
}

static num sigmoid(num x) {
    if (x >= 0) {
        num e = exp_neg(-x);
        return (num)(((int64_t)ONE * ONE + (ONE + e) / 2) / (ONE + e));
    }
    num e = exp_neg(x);
    return (num)(((int64_t)e * ONE + (ONE + e) / 2) / (ONE + e));
}

static uint64_t isqrt64(uint64_t n) { /* floor(sqrt(n)), bit by bit */
    uint64_t root = 0, bit = (uint64_t)1 << 62;
    while (bit > n) bit >>= 2;
    while (bit) {
        if (n >= root + bit) {
            n -= root + bit;
            root = (root >> 1) + bit;
        } else {
            root >>= 1;
        }
        bit >>= 2;
    }
    return root;
}

/* 1 / sqrt(mean_sq + eps) for a mean of squares with 32 fractional bits: the mean is shifted
 * left as far as 64 bits allow before the integer square root, so small means keep digits. */
static num rms_inverse(uint64_t mean_sq_q32) {
    if (mean_sq_q32 == 0) mean_sq_q32 = 1;
    int s = 0;
    while (s < 15 && mean_sq_q32 < ((uint64_t)1 << (60 - 2 * s))) s++;
    uint64_t root = isqrt64(mean_sq_q32 << (2 * s)); /* sqrt(m) * 2^(16 + s) */
    return (num)((((uint64_t)1 << (32 + s)) + root / 2) / root);
}
#else
typedef float num;
typedef float acc_t;
#define MAC(acc, a, b) ((acc) += (a) * (b))
#define NUM_MIN (-INFINITY)
static num acc_value(acc_t acc) { return acc; }
static num mul(num a, num b) { return a * b; }
static num from_int(int32_t i) { return (num)i; }
static num divide(num a, num b) { return a / b; }
static num exp_neg(num x) { return expf(x); }
static num sigmoid(num x) { return 1.0f / (1.0f + expf(-x)); }
#endif

static void fail(const char *message);

/* ============================================================================================
 * 2. The model file: header, block table, tensors
 * ============================================================================================
 * Little-endian, every field 4 bytes:
 *   "tinylmC\0" | version | number format (0 float32, 1 Q16.16) | field count | fields
 *   | block applications (block index, loop index or -1) x n_apps | sha256 of the payload
 *   | payload: the tensors, in the order `map_tensors` reads them (c_engine.py writes them)
 * Float block matrices and an untied head are stored in `matvec`'s output tiles.
 * Ternary matrices are one scale per row, then the trits packed four to a byte (trit + 1 in
 * bits 2i..2i+1, as tinylm.export.bitnet_pack's "2bit"), padded to 4 bytes. */

#define MODEL_VERSION 1
enum { F_VOCAB, F_DIM, F_EMB_DIM, F_HEADS, F_KV_HEADS, F_HEAD_DIM, F_FFN, F_CONTEXT, F_BLOCKS,
       F_APPS, F_TIED, F_TERNARY, F_ACT_QUANT, F_LORA_RANK, F_LORA_MASK, F_LORA_SETS,
       F_LORA_BLOCK, F_LOOP_EMBS, F_ROT_HALF, F_SPARSE_BLOCK, F_SPARSE_TOP_K, F_SPARSE_WINDOW,
       F_EPS, N_FIELDS };
enum { T_WQKV, T_WO, T_W13, T_W2, N_TARGETS }; /* the four matrices of a block; LoRA targets */

typedef struct {
    const num *w;          /* float or Q16.16 weights in matvec's output tiles; or NULL */
    const num *row_scale;  /* ternary: one scale per output row */
    const uint8_t *trits;  /* ternary: packed 2-bit codes */
    int out, in;
} Matrix;

typedef struct {
    const num *attn_norm, *mlp_norm;
    Matrix m[N_TARGETS];
} BlockWeights;

typedef struct {
    int32_t f[N_FIELDS];
    int n_apps, *app_block, *app_loop;
    int q_dim, kv_dim, qkv_dim;
    num eps;
    const num *tok_emb, *emb_proj, *loop_emb, *norm, *lm_head, *rope_cos, *rope_sin;
    const num *head_t; /* hosted: the tied head in matvec's tiles, made at load; or NULL */
    BlockWeights *blocks;
    const num *lora_a[N_TARGETS], *lora_b[N_TARGETS]; /* (sets, rank, in), (sets, out, rank) */
} Model;

typedef struct { const uint8_t *at, *end; } Reader;

static int32_t read_i32(Reader *r) {
    if (r->end - r->at < 4) fail("model file: truncated header");
    int32_t v = (int32_t)((uint32_t)r->at[0] | (uint32_t)r->at[1] << 8 |
                          (uint32_t)r->at[2] << 16 | (uint32_t)r->at[3] << 24);
    r->at += 4;
    return v;
}

static const num *take(Reader *r, size_t count) {
    if ((size_t)(r->end - r->at) < count * sizeof(num)) fail("model file: truncated tensors");
    const num *p = (const num *)(const void *)r->at; /* the buffer is 4-byte aligned */
    r->at += count * sizeof(num);
    return p;
}

static Matrix take_matrix(Reader *r, const Model *m, int out, int in) {
    Matrix mat = {NULL, NULL, NULL, out, in};
    if (!m->f[F_TERNARY]) {
        mat.w = take(r, (size_t)out * in);
        return mat;
    }
    mat.row_scale = take(r, (size_t)out);
    size_t bytes = ((size_t)out * in + 3) / 4, padded = (bytes + 3) & ~(size_t)3;
    if ((size_t)(r->end - r->at) < padded) fail("model file: truncated ternary weights");
    mat.trits = r->at;
    r->at += padded;
    return mat;
}

/* Point every tensor into the payload, in the order the exporter wrote them. */
static void map_tensors(Model *m, Reader *r, BlockWeights *blocks) {
    const int32_t *f = m->f;
    int dim = f[F_DIM], emb = f[F_EMB_DIM] ? f[F_EMB_DIM] : f[F_DIM], ffn = f[F_FFN];
    int in_of[N_TARGETS] = {dim, m->q_dim, dim, ffn};
    int out_of[N_TARGETS] = {m->qkv_dim, dim, 2 * ffn, dim};
    m->tok_emb = take(r, (size_t)f[F_VOCAB] * emb);
    m->emb_proj = f[F_EMB_DIM] ? take(r, (size_t)dim * emb) : NULL;
    m->blocks = blocks;
    for (int b = 0; b < f[F_BLOCKS]; b++) {
        blocks[b].attn_norm = take(r, dim);
        blocks[b].m[T_WQKV] = take_matrix(r, m, out_of[T_WQKV], in_of[T_WQKV]);
        blocks[b].m[T_WO] = take_matrix(r, m, out_of[T_WO], in_of[T_WO]);
        blocks[b].mlp_norm = take(r, dim);
        blocks[b].m[T_W13] = take_matrix(r, m, out_of[T_W13], in_of[T_W13]);
        blocks[b].m[T_W2] = take_matrix(r, m, out_of[T_W2], in_of[T_W2]);
    }
    for (int t = 0; t < N_TARGETS; t++) {
        m->lora_a[t] = m->lora_b[t] = NULL;
        if (f[F_LORA_RANK] && (f[F_LORA_MASK] >> t & 1)) {
            m->lora_a[t] = take(r, (size_t)f[F_LORA_SETS] * f[F_LORA_RANK] * in_of[t]);
            m->lora_b[t] = take(r, (size_t)f[F_LORA_SETS] * out_of[t] * f[F_LORA_RANK]);
        }
    }
    m->loop_emb = f[F_LOOP_EMBS] ? take(r, (size_t)f[F_LOOP_EMBS] * dim) : NULL;
    m->norm = take(r, dim);
    m->lm_head = f[F_TIED] ? NULL : take(r, (size_t)f[F_VOCAB] * dim);
    m->head_t = NULL;
    m->rope_cos = take(r, (size_t)f[F_CONTEXT] * f[F_ROT_HALF]);
    m->rope_sin = take(r, (size_t)f[F_CONTEXT] * f[F_ROT_HALF]);
    if (r->at != r->end) fail("model file: bytes left after the last tensor");
}

static void check_fields(const Model *m) {
    const int32_t *f = m->f;
    if (f[F_VOCAB] < 1 || f[F_DIM] < 1 || f[F_HEADS] < 1 || f[F_KV_HEADS] < 1 ||
        f[F_HEAD_DIM] < 1 || f[F_FFN] < 1 || f[F_CONTEXT] < 1 || f[F_BLOCKS] < 1 ||
        f[F_APPS] < 1 || f[F_HEADS] % f[F_KV_HEADS] || 2 * f[F_ROT_HALF] > f[F_HEAD_DIM] ||
        (f[F_LORA_RANK] && (f[F_LORA_BLOCK] < 0 || f[F_LORA_BLOCK] >= f[F_BLOCKS])))
        fail("model file: inconsistent header fields");
}

/* Parse a model image that lives in memory (read from a file, or a const array). The block
 * table is copied into `apps` (2 * n_apps ints), block pointers into `blocks`. */
static void parse_model(Model *m, const uint8_t *data, size_t size, int *apps,
                        int max_apps, BlockWeights *blocks, int max_blocks,
                        const uint8_t **digest, const uint8_t **payload) {
    Reader r = {data, data + size};
    if (size < 8 || memcmp(data, "tinylmC\0", 8)) fail("not a tinylm C-engine model file");
    r.at += 8;
    if (read_i32(&r) != MODEL_VERSION) fail("model file: unknown format version");
#ifdef TINYLM_FIXED
    if (read_i32(&r) != 1) fail("model file holds float32 numbers; this build is Q16.16");
#else
    if (read_i32(&r) != 0) fail("model file holds Q16.16 numbers; this build is float32");
#endif
    if (read_i32(&r) != N_FIELDS) fail("model file: unexpected header length");
    for (int i = 0; i < N_FIELDS; i++) m->f[i] = read_i32(&r);
    check_fields(m);
    if (m->f[F_APPS] > max_apps || m->f[F_BLOCKS] > max_blocks) fail("model too deep");
    m->n_apps = m->f[F_APPS];
    m->app_block = apps;
    m->app_loop = apps + m->n_apps;
    for (int a = 0; a < m->n_apps; a++) {
        m->app_block[a] = read_i32(&r);
        m->app_loop[a] = read_i32(&r);
        if (m->app_block[a] < 0 || m->app_block[a] >= m->f[F_BLOCKS] ||
            m->app_loop[a] >= (m->f[F_LOOP_EMBS] > m->f[F_LORA_SETS] ? m->f[F_LOOP_EMBS]
                                                                      : m->f[F_LORA_SETS]))
            fail("model file: bad block table");
    }
    if (r.end - r.at < 32) fail("model file: truncated digest");
    *digest = r.at;
    r.at += 32;
    *payload = r.at;
    m->q_dim = m->f[F_HEADS] * m->f[F_HEAD_DIM];
    m->kv_dim = m->f[F_KV_HEADS] * m->f[F_HEAD_DIM];
    m->qkv_dim = m->q_dim + 2 * m->kv_dim;
#ifdef TINYLM_FIXED
    m->eps = m->f[F_EPS]; /* eps with 32 fractional bits, added to a Q32 mean of squares */
#else
    {
        union { int32_t i; float f; } bits;
        bits.i = m->f[F_EPS];
        m->eps = bits.f;
    }
#endif
    map_tensors(m, &r, blocks);
}

/* ============================================================================================
 * 3. Run state: activations and the KV cache (one slot per block application)
 * ============================================================================================ */

typedef struct {
    num *x, *xb, *xb2, *qkv, *att_out, *hb, *lora_t, *logits, *emb_t;
    num *att;                 /* (context,) attention scores of one head */
    uint8_t *visible;         /* (context,) keys one query attends to (block-sparse) */
    num *block_score;         /* (context / block + 1,) routing scores */
    num *key_cache;           /* (apps, kv_heads, head_dim, context): keys transposed, so the
                                 scores of all positions come out of one vector loop */
    num *value_cache;         /* (apps, context, kv_dim) */
    acc_t *scores;            /* (context,) q . k sums of one head */
} State;

/* ============================================================================================
 * 4. The forward pass: one token at one position -> logits
 * ============================================================================================ */

static void rmsnorm(num *out, const num *x, const num *gain, int n, num eps) {
#ifdef TINYLM_FIXED
    int64_t ss = 0;
    for (int i = 0; i < n; i++) ss += (int64_t)x[i] * x[i];
    num inv = rms_inverse((uint64_t)(ss / n) + (uint64_t)eps);
#else
    float ss = 0.0f;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    num inv = 1.0f / sqrtf(ss / n + eps);
#endif
    for (int i = 0; i < n; i++) out[i] = mul(mul(x[i], inv), gain[i]);
}

/* y = W x for W stored in output tiles: the engine's hot loop, for every block matrix and an
 * untied head. Tile t holds outputs [64t, 64t + 64) as (in, 64) row-major (the last tile is
 * narrower), so one matvec reads its weights as one contiguous stream. Each output is summed
 * over i in order in its own accumulator: the accumulators become vector registers (each x[i]
 * broadcast once for 64 products), no float addition is reordered (no -ffast-math needed) and
 * there is no horizontal sum, so every build, vector or scalar, sums the same way. */
#define OUT_TILE 64
static void matvec(num *y, const num *w, const num *x, int out, int in) {
    int o = 0;
    for (; o + OUT_TILE <= out; o += OUT_TILE) {
        const num *tile = w + (size_t)o * in;
        acc_t acc[OUT_TILE] = {0};
        for (int i = 0; i < in; i++) {
            const num *row = tile + (size_t)i * OUT_TILE;
            num xi = x[i];
            for (int j = 0; j < OUT_TILE; j++) MAC(acc[j], row[j], xi);
        }
        for (int j = 0; j < OUT_TILE; j++) y[o + j] = acc_value(acc[j]);
    }
    if (o == out) return;
    int width = out - o; /* the last, narrower tile */
    const num *tile = w + (size_t)o * in;
    acc_t rest[OUT_TILE] = {0};
    for (int i = 0; i < in; i++)
        for (int j = 0; j < width; j++) MAC(rest[j], tile[(size_t)i * width + j], x[i]);
    for (int j = 0; j < width; j++) y[o + j] = acc_value(rest[j]);
}

/* y = W x for W (out, in) row-major: the tied head (the embedding table's rows), LoRA and
 * the factorized embedding. Eight partial sums per row, in a fixed order. */
static num dot(const num *a, const num *b, int n);
static void matvec_rows(num *y, const num *w, const num *x, int out, int in) {
    for (int o = 0; o < out; o++) y[o] = dot(w + (size_t)o * in, x, in);
}

/* round half to even, as torch.round: adding and removing 1.5 * 2^23 leaves the float
 * rounded in the default rounding mode (|v| < 2^22 here: at most 127 in magnitude). */
#ifndef TINYLM_FIXED
static float round_even(float v) {
    volatile float t = v + 12582912.0f; /* volatile: keep the compiler from folding it away */
    return t - 12582912.0f;
}
#endif

/* y = ternary W x (BitNet b1.58). With act_quant, x is first quantized per token to integers
 * in [-128, 127] with step max|x| / 127; the integer products are exact, and the step and
 * the row's absmean scale multiply the sum. */
static void ternary_matvec(num *y, const Matrix *w, const num *x, int act_quant, num *ints) {
    int in = w->in;
    num step = from_int(1);
    const num *src = x;
    if (act_quant) {
        num amax = 0;
        for (int i = 0; i < in; i++) {
            num a = x[i] < 0 ? -x[i] : x[i];
            if (a > amax) amax = a;
        }
#ifdef TINYLM_FIXED
        if (amax < 1) amax = 1; /* the 1e-5 floor of bitnet.py is below one Q16.16 step */
        step = (amax + 63) / 127;
        if (step < 1) step = 1;
        for (int i = 0; i < in; i++) {
            num q = divide(x[i], step); /* an integer, as Q16.16 */
            q = (q >= 0 ? q + ONE / 2 : q - ONE / 2) / ONE;
            ints[i] = q < -128 ? -128 : q > 127 ? 127 : q;
        }
#else
        if (amax < 1e-5f) amax = 1e-5f;
        step = amax / 127.0f;
        for (int i = 0; i < in; i++) {
            float q = round_even(x[i] / step);
            ints[i] = q < -128.0f ? -128.0f : q > 127.0f ? 127.0f : q;
        }
#endif
        src = ints;
    }
    for (int o = 0; o < w->out; o++) {
        acc_t sum = 0;
        size_t base = (size_t)o * in;
        for (int i = 0; i < in; i++) {
            size_t k = base + i;
            int code = (w->trits[k >> 2] >> ((k & 3) * 2)) & 3; /* trit + 1 */
            if (code == 2) sum += src[i];
            else if (code == 0) sum -= src[i];
        }
#ifdef TINYLM_FIXED
        num total = act_quant ? (num)sum * step : (num)sum; /* sum of integers, or of values */
        y[o] = mul(total, w->row_scale[o]);
#else
        y[o] = act_quant ? sum * (step * w->row_scale[o]) : sum * w->row_scale[o];
#endif
    }
}

/* One block matrix, with loop `loop`'s LoRA delta B A x when it has one. */
static void linear(const Model *m, State *s, int target, const Matrix *w, num *y,
                   const num *x, int loop) {
    if (w->trits) ternary_matvec(y, w, x, m->f[F_ACT_QUANT], s->lora_t);
    else matvec(y, w->w, x, w->out, w->in);
    if (loop < 0 || !m->lora_a[target]) return;
    int rank = m->f[F_LORA_RANK];
    num t[64];
    if (rank > 64) fail("LoRA rank above 64");
    matvec_rows(t, m->lora_a[target] + (size_t)loop * rank * w->in, x, rank, w->in);
    for (int o = 0; o < w->out; o++) {
        const num *row = m->lora_b[target] + ((size_t)loop * w->out + o) * rank;
        acc_t sum = 0;
        for (int r = 0; r < rank; r++) MAC(sum, row[r], t[r]);
        y[o] += acc_value(sum);
    }
}

/* RoPE on one head (Su et al. 2021), half-split as Hugging Face Llama: dims i and i + half
 * rotate together; with an odd head dim the last dim passes through (partial rotary). */
static void rope(num *head, const num *cos_row, const num *sin_row, int half) {
    for (int i = 0; i < half; i++) {
        num x1 = head[i], x2 = head[i + half];
        head[i] = mul(x1, cos_row[i]) - mul(x2, sin_row[i]);
        head[i + half] = mul(x2, cos_row[i]) + mul(x1, sin_row[i]);
    }
}

static num dot(const num *a, const num *b, int n) { /* eight lanes, as matvec's sixteen */
    acc_t part[8] = {0}, sum = 0;
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) MAC(part[j], a[i + j], b[i + j]);
    for (int j = 0; j < 8; j++) sum += part[j];
    for (; i < n; i++) MAC(sum, a[i], b[i]);
    return acc_value(sum);
}

/* Block-sparse attention's key choice for a query at `pos` (sparse_attention.py): the window
 * [s, pos], s = max(0, pos - window + 1), plus the top-k blocks before s, each block scored by
 * q . (mean of its keys before s). */
static void sparse_keys(const Model *m, State *s, const num *q, const num *keys_t, int pos) {
    int bs = m->f[F_SPARSE_BLOCK], top_k = m->f[F_SPARSE_TOP_K], hd = m->f[F_HEAD_DIM];
    int ctx = m->f[F_CONTEXT], start = pos - m->f[F_SPARSE_WINDOW] + 1;
    if (start < 0) start = 0;
    for (int t = 0; t <= pos; t++) s->visible[t] = t >= start;
    int n_cand = (start + bs - 1) / bs;
    if (!n_cand || !top_k) return;
    num mean[256];
    if (hd > 256) fail("head_dim above 256 with block-sparse attention");
    for (int j = 0; j < n_cand; j++) {
        int lo = j * bs, hi = (j + 1) * bs < start ? (j + 1) * bs : start;
        for (int d = 0; d < hd; d++) {
            num sum = 0;
            for (int t = lo; t < hi; t++) sum += keys_t[(size_t)d * ctx + t];
            mean[d] = divide(sum, from_int(hi - lo));
        }
        s->block_score[j] = dot(q, mean, hd);
    }
    for (int k = 0; k < top_k && k < n_cand; k++) {
        int best = -1;
        for (int j = 0; j < n_cand; j++)
            if (s->block_score[j] != NUM_MIN && (best < 0 || s->block_score[j] >
                                                 s->block_score[best]))
                best = j;
        s->block_score[best] = NUM_MIN;
        int hi = (best + 1) * bs < start ? (best + 1) * bs : start;
        for (int t = best * bs; t < hi; t++) s->visible[t] = 1;
    }
}

/* Causal attention of every query head at `pos` over the cached keys of application `app`. */
static void attention(const Model *m, State *s, int app, int pos) {
    int heads = m->f[F_HEADS], hd = m->f[F_HEAD_DIM], group = heads / m->f[F_KV_HEADS];
    int ctx = m->f[F_CONTEXT], kv_dim = m->kv_dim;
#ifdef TINYLM_FIXED
    num scale = rms_inverse((uint64_t)hd << 32); /* 1 / sqrt(head_dim) */
#else
    num scale = 1.0f / sqrtf((float)hd);
#endif
    const num *values_all = s->value_cache + (size_t)app * ctx * kv_dim;
    for (int h = 0; h < heads; h++) {
        const num *q = s->qkv + h * hd, *values = values_all + (h / group) * hd;
        const num *keys_t = s->key_cache + ((size_t)app * m->f[F_KV_HEADS] + h / group) * hd * ctx;
        if (m->f[F_SPARSE_BLOCK]) sparse_keys(m, s, q, keys_t, pos);
        acc_t *sc = s->scores;
        for (int t = 0; t <= pos; t++) sc[t] = 0;
        for (int d = 0; d < hd; d++) { /* q . k for every position at once, d by d */
            const num *k = keys_t + (size_t)d * ctx;
            num qd = q[d];
            for (int t = 0; t <= pos; t++) MAC(sc[t], qd, k[t]);
        }
        num best = NUM_MIN;
        for (int t = 0; t <= pos; t++) {
            if (m->f[F_SPARSE_BLOCK] && !s->visible[t]) continue;
            s->att[t] = mul(acc_value(sc[t]), scale);
            if (s->att[t] > best) best = s->att[t];
        }
        num total = 0;
        for (int t = 0; t <= pos; t++) {
            if (m->f[F_SPARSE_BLOCK] && !s->visible[t]) continue;
            s->att[t] = exp_neg(s->att[t] - best);
            total += s->att[t];
        }
        num *out = s->att_out + h * hd;
        for (int d = 0; d < hd; d++) out[d] = 0;
        for (int t = 0; t <= pos; t++) {
            if (m->f[F_SPARSE_BLOCK] && !s->visible[t]) continue;
            num p = divide(s->att[t], total);
            const num *v = values + (size_t)t * kv_dim;
            for (int d = 0; d < hd; d++) out[d] += mul(p, v[d]);
        }
    }
}

/* One pre-norm block: x + attn(norm(x)), then x + mlp(norm(x)). */
static void block_forward(const Model *m, State *s, const BlockWeights *w, int loop, int app,
                          int pos) {
    int dim = m->f[F_DIM], hd = m->f[F_HEAD_DIM], ffn = m->f[F_FFN], half = m->f[F_ROT_HALF];
    int ctx = m->f[F_CONTEXT];
    rmsnorm(s->xb, s->x, w->attn_norm, dim, m->eps);
    linear(m, s, T_WQKV, &w->m[T_WQKV], s->qkv, s->xb, loop);
    const num *cos_row = m->rope_cos + (size_t)pos * half, *sin_row = m->rope_sin + pos * half;
    for (int h = 0; h < m->f[F_HEADS] + m->f[F_KV_HEADS]; h++) /* q heads, then k heads */
        rope(s->qkv + h * hd, cos_row, sin_row, half);
    num *keys_t = s->key_cache + (size_t)app * m->kv_dim * ctx;
    for (int i = 0; i < m->kv_dim; i++) /* (kv head, d) = i, transposed */
        keys_t[(size_t)i * ctx + pos] = s->qkv[m->q_dim + i];
    size_t at = ((size_t)app * ctx + pos) * m->kv_dim;
    memcpy(s->value_cache + at, s->qkv + m->q_dim + m->kv_dim, m->kv_dim * sizeof(num));
    attention(m, s, app, pos);
    linear(m, s, T_WO, &w->m[T_WO], s->xb2, s->att_out, loop);
    for (int i = 0; i < dim; i++) s->x[i] += s->xb2[i];
    rmsnorm(s->xb, s->x, w->mlp_norm, dim, m->eps);
    linear(m, s, T_W13, &w->m[T_W13], s->hb, s->xb, loop);
    for (int i = 0; i < ffn; i++) /* SwiGLU (Shazeer 2020): silu(gate) * up */
        s->hb[i] = mul(mul(s->hb[i], sigmoid(s->hb[i])), s->hb[ffn + i]);
    linear(m, s, T_W2, &w->m[T_W2], s->xb2, s->hb, loop);
    for (int i = 0; i < dim; i++) s->x[i] += s->xb2[i];
}

/* Token `token` at position `pos` -> s->logits; writes keys and values at pos. */
static num *forward(const Model *m, State *s, int token, int pos) {
    const int32_t *f = m->f;
    int dim = f[F_DIM], emb = f[F_EMB_DIM] ? f[F_EMB_DIM] : dim, vocab = f[F_VOCAB];
    const num *row = m->tok_emb + (size_t)token * emb;
    if (m->emb_proj) matvec_rows(s->x, m->emb_proj, row, dim, emb); /* factorized */
    else memcpy(s->x, row, dim * sizeof(num));
    for (int a = 0; a < m->n_apps; a++) {
        int block = m->app_block[a], loop = m->app_loop[a];
        if (loop >= 0 && m->loop_emb)  /* looped: the loop's own embedding, then its block */
            for (int i = 0; i < dim; i++) s->x[i] += m->loop_emb[(size_t)loop * dim + i];
        int lora = block == f[F_LORA_BLOCK] && f[F_LORA_RANK] ? loop : -1;
        block_forward(m, s, &m->blocks[block], lora, a, pos);
    }
    rmsnorm(s->xb, s->x, m->norm, dim, m->eps);
    if (m->lm_head) {
        matvec(s->logits, m->lm_head, s->xb, vocab, dim);
    } else if (m->emb_proj) { /* tied through the factorization: hidden @ emb_proj @ emb^T */
        matvec(s->emb_t, m->emb_proj, s->xb, emb, dim); /* emb_proj (dim, emb) = W^T */
        matvec_rows(s->logits, m->tok_emb, s->emb_t, vocab, emb);
    } else if (m->head_t) {
        matvec(s->logits, m->head_t, s->xb, vocab, dim);
    } else {
        matvec_rows(s->logits, m->tok_emb, s->xb, vocab, dim);
    }
    return s->logits;
}

/* ============================================================================================
 * 5. Tokenizer: bytes (ids 0..255 are bytes, 256 is EOS) or byte-level BPE
 * ============================================================================================
 * tokenizer.bin: "tinylmT\0" | version | kind (0 bytes, 1 BPE) | vocab | eos id
 *   | BPE: byte -> id (256) | merge count | (left, right, merged) per merge, in rank order
 *     | run count | (first code point << 2 | class) per run of equal character class.
 * BPE encodes as Hugging Face `tokenizers` with tinylm's settings (ByteLevel, no prefix
 * space): split the text with GPT-2's pattern, then repeatedly merge the adjacent pair of
 * lowest rank, leftmost first. Bytes that are not UTF-8 become their single-byte tokens, as
 * tinylm does. The pattern's character classes (letter, number, white space) come with the
 * tokenizer as a table of runs over all code points, written from the same classes as
 * tinylm's standalone encoder (tok_bpe.py), since libc has no Unicode tables. */

typedef struct {
    int kind, vocab, eos, n_merges, n_runs;
    int32_t byte_id[256];
    const uint8_t *merges; /* 3 * n_merges little-endian int32 */
    const uint8_t *runs;   /* n_runs words: first code point << 2 | class (S, L, N, P) */
} Tokenizer;

static uint32_t merge_word(const uint8_t *table, int index) {
    const uint8_t *p = table + 4 * (size_t)index;
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int32_t merge_field(const Tokenizer *t, int index) {
    return (int32_t)merge_word(t->merges, index);
}

static void parse_tokenizer(Tokenizer *t, const uint8_t *data, size_t size) {
    Reader r = {data, data + size};
    if (size < 8 || memcmp(data, "tinylmT\0", 8)) fail("not a tinylm C-engine tokenizer file");
    r.at += 8;
    if (read_i32(&r) != 1) fail("tokenizer file: unknown format version");
    t->kind = read_i32(&r);
    t->vocab = read_i32(&r);
    t->eos = read_i32(&r);
    t->n_merges = t->n_runs = 0;
    if (t->kind == 0) return;
    if (t->kind != 1) fail("tokenizer file: unknown kind");
    for (int b = 0; b < 256; b++) t->byte_id[b] = read_i32(&r);
    t->n_merges = read_i32(&r);
    if (t->n_merges < 0 || (size_t)(r.end - r.at) < 12 * (size_t)t->n_merges)
        fail("tokenizer file: bad merge table");
    t->merges = r.at;
    r.at += 12 * (size_t)t->n_merges;
    t->n_runs = read_i32(&r);
    if (t->n_runs < 1 || (size_t)(r.end - r.at) != 4 * (size_t)t->n_runs)
        fail("tokenizer file: bad character-class table");
    t->runs = r.at;
}

typedef void (*ByteSink)(const uint8_t *bytes, size_t n);

/* The bytes of one id, through the merge table (recursively; no table of strings needed). */
static void emit_token(const Tokenizer *t, int id, ByteSink sink) {
    if (id == t->eos || id < 0 || id >= t->vocab) return;
    if (t->kind == 0) {
        uint8_t b = (uint8_t)id;
        if (id < 256) sink(&b, 1);
        return;
    }
    for (int b = 0; b < 256; b++)
        if (t->byte_id[b] == id) {
            uint8_t byte = (uint8_t)b;
            sink(&byte, 1);
            return;
        }
    for (int j = 0; j < t->n_merges; j++)
        if (merge_field(t, 3 * j + 2) == id) {
            emit_token(t, merge_field(t, 3 * j), sink);
            emit_token(t, merge_field(t, 3 * j + 1), sink);
            return;
        }
}

/* Decode one UTF-8 code point at s (Python's strict rules: no overlong forms, surrogates or
 * values past U+10FFFF); its length, or 0 if the byte at s starts no valid character. */
static int utf8_next(const uint8_t *s, size_t left, uint32_t *cp) {
    uint8_t c = s[0];
    int len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3
              : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (!len || (size_t)len > left) return 0;
    uint32_t v = len == 1 ? c : len == 2 ? c & 0x1F : len == 3 ? c & 0x0F : c & 0x07;
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        v = v << 6 | (s[i] & 0x3F);
    }
    static const uint32_t least[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (v < least[len] || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    *cp = v;
    return len;
}

/* 'S' white space, 'L' letter, 'N' number, 'P' other: the class of the run of code points
 * that holds c (tokenizer.bin lists where each run starts; a binary search finds it). */
static char char_class(const Tokenizer *t, uint32_t c) {
    int lo = 0, hi = t->n_runs - 1;
    while (lo < hi) { /* the last run starting at or before c */
        int mid = (lo + hi + 1) / 2;
        if (merge_word(t->runs, mid) >> 2 <= c) lo = mid;
        else hi = mid - 1;
    }
    return "SLNP"[merge_word(t->runs, lo) & 3];
}

/* Merge one pre-token's symbols (ids) in place; returns the new count. */
static int bpe_merge(const Tokenizer *t, int32_t *sym, int n) {
    while (n > 1) {
        int best_rank = -1, best_at = -1;
        for (int i = 0; i + 1 < n; i++)
            for (int j = 0; j < t->n_merges && (best_rank < 0 || j < best_rank); j++)
                if (merge_field(t, 3 * j) == sym[i] && merge_field(t, 3 * j + 1) == sym[i + 1]) {
                    best_rank = j;
                    best_at = i;
                    break;
                }
        if (best_rank < 0) break;
        sym[best_at] = merge_field(t, 3 * best_rank + 2);
        memmove(sym + best_at + 1, sym + best_at + 2, (size_t)(n - best_at - 2) * sizeof *sym);
        n--;
    }
    return n;
}

/* Encode a run of valid UTF-8 (cps: its code points, starts: their byte offsets) with GPT-2's
 * split: 's|'t|'re|'ve|'m|'ll|'d| ?L+| ?N+| ?[^sLN]+|s+(?!S)|s+ */
static int encode_run(const Tokenizer *t, const uint8_t *text, const uint32_t *cps,
                      const size_t *starts, int n, int32_t *ids) {
    static const char *contractions[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
    int count = 0, i = 0;
    while (i < n) {
        int end = 0;
        if (cps[i] == '\'')
            for (int c = 0; c < 7 && !end; c++) {
                int len = (int)strlen(contractions[c]), k = 0;
                while (k < len && i + k < n && cps[i + k] == (uint32_t)contractions[c][k]) k++;
                if (k == len) end = i + len;
            }
        if (!end && char_class(t, cps[i]) == 'S') {
            int run = i;
            while (run < n && char_class(t, cps[run]) == 'S') run++;
            if (run == n || run - i > 1) end = run == n ? run : run - 1;
            else if (cps[i] != ' ') end = run;
        }
        if (!end) {
            int start = cps[i] == ' ' ? i + 1 : i;
            end = start + 1;
            while (end < n && char_class(t, cps[end]) == char_class(t, cps[start])) end++;
        }
        int first = count;
        for (size_t b = starts[i]; b < starts[end]; b++) ids[count++] = t->byte_id[text[b]];
        count = first + bpe_merge(t, ids + first, count - first);
        i = end;
    }
    return count;
}

/* Text -> ids; `ids` and the scratch arrays hold `len` entries (ids never outnumber bytes). */
static int encode(const Tokenizer *t, const uint8_t *text, size_t len, int32_t *ids,
                  uint32_t *cps, size_t *starts) {
    if (t->kind == 0) {
        for (size_t i = 0; i < len; i++) ids[i] = text[i];
        return (int)len;
    }
    int count = 0;
    size_t at = 0;
    while (at < len) {
        int n = 0;
        uint32_t cp;
        int step;
        while (at < len && (step = utf8_next(text + at, len - at, &cp)) > 0) {
            cps[n] = cp;
            starts[n++] = at;
            at += (size_t)step;
        }
        starts[n] = at;
        count += encode_run(t, text, cps, starts, n, ids + count);
        if (at < len) ids[count++] = t->byte_id[text[at++]]; /* a byte that is not UTF-8 */
    }
    return count;
}

/* ============================================================================================
 * 6. Sampler: repetition penalty, temperature, top-k, top-p (tinylm/infer/sampling.py)
 * ============================================================================================
 * Greedy (temperature 0) picks the first largest logit, as torch.argmax, and is what equals
 * tinylm. Sampling draws from its own generator (xorshift64*, seeded), so a seed gives the
 * same text here every time but not tinylm's text. */

static int argmax(const num *v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

static void apply_repetition_penalty(num *logits, const uint8_t *seen, int n, float penalty) {
#ifdef TINYLM_FIXED
    (void)logits; (void)seen; (void)n; (void)penalty; /* freestanding: greedy only */
#else
    for (int i = 0; i < n; i++)
        if (seen[i]) logits[i] = logits[i] > 0 ? logits[i] / penalty : logits[i] * penalty;
#endif
}

#ifndef TINYLM_FREESTANDING
typedef struct { float temperature, top_p, penalty; int top_k; uint64_t rng; } Sampler;

static float random_unit(Sampler *s) { /* xorshift64* (Vigna 2016) -> [0, 1) */
    s->rng ^= s->rng >> 12;
    s->rng ^= s->rng << 25;
    s->rng ^= s->rng >> 27;
    return (float)((s->rng * 0x2545F4914F6CDD1DULL) >> 40) / 16777216.0f;
}

typedef struct { float logit; int id; } Candidate;

static int by_logit_descending(const void *a, const void *b) {
    const Candidate *x = a, *y = b;
    return x->logit < y->logit ? 1 : x->logit > y->logit ? -1 : x->id - y->id;
}

/* logits -> next id, in tinylm's order of operations; `order` holds n candidates. */
static int sample(Sampler *s, float *logits, const uint8_t *seen, int n, Candidate *order) {
    if (s->penalty != 1.0f) apply_repetition_penalty(logits, seen, n, s->penalty);
    if (s->temperature == 0.0f) return argmax(logits, n);
    for (int i = 0; i < n; i++) order[i] = (Candidate){logits[i] / s->temperature, i};
    qsort(order, (size_t)n, sizeof *order, by_logit_descending);
    int keep = n;
    if (s->top_k > 0 && s->top_k < n) { /* keep every logit >= the k-th largest (ties stay) */
        keep = s->top_k;
        while (keep < n && order[keep].logit >= order[s->top_k - 1].logit) keep++;
    }
    double total = 0.0;
    for (int i = 0; i < keep; i++) total += exp((double)order[i].logit - order[0].logit);
    if (s->top_p < 1.0f) { /* nucleus: keep the first ids whose mass before them is <= p */
        double before = 0.0;
        int nucleus = 0;
        while (nucleus < keep && before <= s->top_p) {
            before += exp((double)order[nucleus].logit - order[0].logit) / total;
            nucleus++;
        }
        keep = nucleus;
        total = 0.0;
        for (int i = 0; i < keep; i++) total += exp((double)order[i].logit - order[0].logit);
    }
    double draw = random_unit(s) * total, cumulative = 0.0;
    for (int i = 0; i < keep; i++) {
        cumulative += exp((double)order[i].logit - order[0].logit);
        if (draw < cumulative) return order[i].id;
    }
    return order[keep - 1].id;
}
#endif

/* ============================================================================================
 * 7. sha256 (FIPS 180-4), to check the model file's payload against its header
 * ============================================================================================ */

#ifndef TINYLM_FREESTANDING
static uint32_t rotr(uint32_t x, int n) { return x >> n | x << (32 - n); }

static void sha256_block(uint32_t h[8], const uint8_t *p) {
    static const uint32_t k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2};
    uint32_t w[64], v[8];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    memcpy(v, h, sizeof v);
    for (int i = 0; i < 64; i++) {
        uint32_t s1 = rotr(v[4], 6) ^ rotr(v[4], 11) ^ rotr(v[4], 25);
        uint32_t t1 = v[7] + s1 + ((v[4] & v[5]) ^ (~v[4] & v[6])) + k[i] + w[i];
        uint32_t s0 = rotr(v[0], 2) ^ rotr(v[0], 13) ^ rotr(v[0], 22);
        uint32_t t2 = s0 + ((v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]));
        memmove(v + 1, v, 7 * sizeof *v);
        v[4] += t1;
        v[0] = t1 + t2;
    }
    for (int i = 0; i < 8; i++) h[i] += v[i];
}

static void sha256(const uint8_t *data, size_t n, uint8_t out[32]) {
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c,
                     0x1f83d9ab, 0x5be0cd19};
    size_t full = n / 64 * 64;
    for (size_t i = 0; i < full; i += 64) sha256_block(h, data + i);
    uint8_t tail[128] = {0};
    size_t rest = n - full, tail_len = rest < 56 ? 64 : 128;
    memcpy(tail, data + full, rest);
    tail[rest] = 0x80;
    uint64_t bits = (uint64_t)n * 8;
    for (int i = 0; i < 8; i++) tail[tail_len - 1 - i] = (uint8_t)(bits >> (8 * i));
    for (size_t i = 0; i < tail_len; i += 64) sha256_block(h, tail + i);
    for (int i = 0; i < 32; i++) out[i] = (uint8_t)(h[i / 4] >> (24 - 8 * (i % 4)));
}
#endif

/* ============================================================================================
 * 8. Platform and main: the decode loop of tinylm/infer/generate.py's decode_batch
 * ============================================================================================
 * The prompt is cut to its last context - 1 ids; when the context is full, the cache is
 * rebuilt from the newest context / 2 ids and decoding goes on, as tinylm does. */

static const Model *g_model;
static State *g_state;

/* Run ids[0..n) from position 0; the logits of the last. */
static num *prefill(const int32_t *ids, int n) {
    num *logits = NULL;
    for (int p = 0; p < n; p++) logits = forward(g_model, g_state, ids[p], p);
    return logits;
}

#ifdef TINYLM_FREESTANDING
/* ---------------------------------------------------------------- freestanding build */

static void platform_write(const uint8_t *bytes, size_t n) { /* replace with a UART on a board */
    while (n) {
        ssize_t done = write(1, bytes, n);
        if (done <= 0) return;
        bytes += done;
        n -= (size_t)done;
    }
}

static void write_text(const char *s) { platform_write((const uint8_t *)s, strlen(s)); }

static void write_int(long long v) {
    char buf[24];
    int i = 23;
    int negative = v < 0;
    unsigned long long u = negative ? (unsigned long long)(-(v + 1)) + 1 : (unsigned long long)v;
    buf[i] = 0;
    do { buf[--i] = (char)('0' + u % 10); u /= 10; } while (u);
    if (negative) buf[--i] = '-';
    write_text(buf + i);
}

static void fail(const char *message) {
    write_text("run: error: ");
    write_text(message);
    write_text("\n");
    _exit(1);
}

/* Every buffer, sized from the model at export time (model_data.h's TL_ constants). */
static num s_x[TL_DIM], s_xb[TL_DIM], s_xb2[TL_DIM], s_qkv[TL_QKV], s_att_out[TL_QDIM];
static num s_hb[2 * TL_FFN], s_lora_t[TL_MAX_IN], s_logits[TL_VOCAB], s_emb_t[TL_EMB + 1];
static num s_att[TL_CONTEXT], s_block_score[TL_CONTEXT + 1];
static uint8_t s_visible[TL_CONTEXT];
static acc_t s_scores[TL_CONTEXT];
static num s_keys[TL_APPS * TL_CONTEXT * TL_KV_DIM], s_values[TL_APPS * TL_CONTEXT * TL_KV_DIM];
static int s_apps[2 * TL_APPS];
static BlockWeights s_blocks[TL_BLOCKS];
static int32_t s_ids[TL_MAX_PROMPT + TL_MAX_NEW], s_window[TL_CONTEXT];
static uint32_t s_cps[TL_MAX_PROMPT + 1];
static size_t s_starts[TL_MAX_PROMPT + 1];

static void sink_write(const uint8_t *bytes, size_t n) { platform_write(bytes, n); }

static int parse_count(const char *s) {
    int v = 0;
    for (; *s >= '0' && *s <= '9'; s++) v = v * 10 + (*s - '0');
    return v;
}

int main(int argc, char **argv) {
    static Model model;
    static State state = {s_x, s_xb, s_xb2, s_qkv, s_att_out, s_hb, s_lora_t, s_logits, s_emb_t,
                          s_att, s_visible, s_block_score, s_keys, s_values, s_scores};
    static Tokenizer tok;
    const uint8_t *digest, *payload;
    parse_model(&model, (const uint8_t *)tl_model_words, sizeof tl_model_words, s_apps, TL_APPS,
                s_blocks, TL_BLOCKS, &digest, &payload);
    parse_tokenizer(&tok, (const uint8_t *)tl_tokenizer_words, TL_TOKENIZER_BYTES);
    g_model = &model;
    g_state = &state;
    /* argv: [prompt [n [--dump-logits]]]; a board without argv uses the compiled defaults */
    const char *prompt = argc > 1 ? argv[1] : TL_DEFAULT_PROMPT;
    int n_new = argc > 2 ? parse_count(argv[2]) : TL_DEFAULT_NEW;
    int dump = argc > 3 && !strcmp(argv[3], "--dump-logits");
    size_t len = strlen(prompt);
    if (len == 0) fail("empty prompt");
    if (len > TL_MAX_PROMPT) fail("prompt longer than TL_MAX_PROMPT bytes");
    if (n_new > TL_MAX_NEW) fail("more new tokens than TL_MAX_NEW");
    int ctx = model.f[F_CONTEXT], vocab = model.f[F_VOCAB];
    int length = encode(&tok, (const uint8_t *)prompt, len, s_ids, s_cps, s_starts);
    if (dump) { /* the logits at every prompt position, as integers (Q16.16) or floats x 1e6 */
        for (int p = 0; p < length && p < ctx; p++) {
            num *logits = forward(&model, &state, s_ids[p], p);
            for (int i = 0; i < vocab; i++) {
#ifdef TINYLM_FIXED
                write_int(logits[i]);
#else
                write_int((long long)(logits[i] * 1e6f));
#endif
                write_text(i + 1 < vocab ? " " : "\n");
            }
        }
        return 0;
    }
    int start = length > ctx - 1 ? length - (ctx - 1) : 0;
    num *logits = prefill(s_ids + start, length - start);
    int pos = length - start, made = 0;
    platform_write((const uint8_t *)prompt, len);
    while (made < n_new) {
        int next = argmax(logits, vocab);
        s_ids[length + made++] = next;
        if (next == tok.eos) break;
        emit_token(&tok, next, sink_write);
        if (made == n_new) break;
        int end = length + made;
        if (pos == ctx) {
            start = end - ctx / 2;
            pos = ctx / 2;
            memcpy(s_window, s_ids + start, (size_t)pos * sizeof *s_window);
            logits = prefill(s_window, pos);
        } else {
            logits = forward(&model, &state, next, pos++);
        }
    }
    (void)apply_repetition_penalty; /* greedy only: no sampler settings to honour */
    write_text("\n");
    return 0;
}

#else
/* ---------------------------------------------------------------- hosted build */

static void fail(const char *message) {
    fprintf(stderr, "run: error: %s\n", message);
    exit(1);
}

static void *allocate(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size);
    if (!p) fail("out of memory");
    return p;
}

static uint8_t *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "run: error: cannot open %s\n", path);
        exit(1);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (n < 0) fail("cannot read a file");
    /* calloc'd memory is aligned for any type, so floats can be read in place */
    uint8_t *data = allocate((size_t)n + 4, 1);
    if (fread(data, 1, (size_t)n, f) != (size_t)n) fail("cannot read a file");
    fclose(f);
    *size = (size_t)n;
    return data;
}

static void stdout_sink(const uint8_t *bytes, size_t n) { fwrite(bytes, 1, n, stdout); }

static void usage(void) {
    fprintf(stderr,
            "usage: run model.bin tokenizer.bin [options]\n"
            "  --prompt TEXT            the prompt (default: \"Once upon a time\")\n"
            "  --prompt-file PATH       read the prompt from a file instead\n"
            "  -n N                     new tokens (default 200)\n"
            "  --temperature T          0 = greedy (default 0.8)\n"
            "  --top-k K                keep the K most likely ids; 0 disables (default 0)\n"
            "  --top-p P                nucleus sampling; 1 disables (default 1)\n"
            "  --repetition-penalty R   1 disables (default 1)\n"
            "  --seed S                 the sampler's seed (default 0)\n"
            "  --ids                    print the new ids, one line, instead of text\n"
            "  --dump-logits            print the logits at every prompt position and stop\n"
            "  --encode                 print the prompt's ids and stop\n"
            "  --bench                  print new tokens per second (prefill included) to "
            "stderr\n");
    exit(2);
}

static State new_state(const Model *m) {
    const int32_t *f = m->f;
    int dim = f[F_DIM], ctx = f[F_CONTEXT], ffn = f[F_FFN];
    int max_in = dim > ffn ? dim : ffn;
    if (m->q_dim > max_in) max_in = m->q_dim;
    State s;
    s.x = allocate(dim, sizeof(num));
    s.xb = allocate(dim, sizeof(num));
    s.xb2 = allocate(dim, sizeof(num));
    s.qkv = allocate(m->qkv_dim, sizeof(num));
    s.att_out = allocate(m->q_dim, sizeof(num));
    s.hb = allocate(2 * (size_t)ffn, sizeof(num));
    s.lora_t = allocate(max_in, sizeof(num));
    s.logits = allocate(f[F_VOCAB], sizeof(num));
    s.emb_t = allocate(f[F_EMB_DIM] + 1, sizeof(num));
    s.att = allocate(ctx, sizeof(num));
    s.visible = allocate(ctx, 1);
    s.block_score = allocate(ctx + 1, sizeof(num));
    s.key_cache = allocate((size_t)m->n_apps * ctx * m->kv_dim, sizeof(num));
    s.value_cache = allocate((size_t)m->n_apps * ctx * m->kv_dim, sizeof(num));
    s.scores = allocate(ctx, sizeof(acc_t));
    return s;
}

int main(int argc, char **argv) {
    if (argc < 3) usage();
    const char *prompt = "Once upon a time";
    const char *prompt_file = NULL;
    int n_new = 200, print_ids = 0, dump = 0, bench = 0, encode_only = 0;
    Sampler sampler = {0.8f, 1.0f, 1.0f, 0, 0};
    unsigned long long seed = 0;
    for (int i = 3; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--ids")) { print_ids = 1; continue; }
        if (!strcmp(a, "--dump-logits")) { dump = 1; continue; }
        if (!strcmp(a, "--bench")) { bench = 1; continue; }
        if (!strcmp(a, "--encode")) { encode_only = 1; continue; }
        if (!v) usage();
        char *rest;
        if (!strcmp(a, "--prompt")) prompt = v;
        else if (!strcmp(a, "--prompt-file")) prompt_file = v;
        else if (!strcmp(a, "-n")) n_new = (int)strtol(v, &rest, 10);
        else if (!strcmp(a, "--temperature")) sampler.temperature = strtof(v, &rest);
        else if (!strcmp(a, "--top-k")) sampler.top_k = (int)strtol(v, &rest, 10);
        else if (!strcmp(a, "--top-p")) sampler.top_p = strtof(v, &rest);
        else if (!strcmp(a, "--repetition-penalty")) sampler.penalty = strtof(v, &rest);
        else if (!strcmp(a, "--seed")) seed = strtoull(v, &rest, 10);
        else usage();
        if (strcmp(a, "--prompt") && strcmp(a, "--prompt-file") && (*rest || rest == v)) usage();
        i++;
    }
    if (n_new < 0 || sampler.temperature < 0 || sampler.top_k < 0 || sampler.top_p <= 0 ||
        sampler.top_p > 1 || sampler.penalty <= 0)
        fail("a sampling setting is out of range (see tinylm generate --help)");
    sampler.rng = seed * 0x9E3779B97F4A7C15ULL + 0x2545F4914F6CDD1DULL;
    if (!sampler.rng) sampler.rng = 1;

    size_t model_size, tok_size;
    uint8_t *model_data = read_file(argv[1], &model_size);
    uint8_t *tok_data = read_file(argv[2], &tok_size);
    Model model;
    const uint8_t *digest, *payload;
    int max_apps = 1 << 16;
    int *apps = allocate(2 * (size_t)max_apps, sizeof(int));
    BlockWeights *blocks = allocate(1 << 12, sizeof(BlockWeights));
    parse_model(&model, model_data, model_size, apps, max_apps, blocks, 1 << 12, &digest,
                &payload);
    uint8_t check[32];
    sha256(payload, model_size - (size_t)(payload - model_data), check);
    if (memcmp(check, digest, 32)) fail("model file: sha256 mismatch (damaged or truncated)");
    Tokenizer tok;
    parse_tokenizer(&tok, tok_data, tok_size);
    if (tok.vocab != model.f[F_VOCAB]) fail("tokenizer and model disagree on the vocabulary");
    if (model.f[F_TIED] && !model.emb_proj) { /* the head as matvec wants it: (dim, vocab) */
        int dim = model.f[F_DIM], vocab = model.f[F_VOCAB];
        num *head_t = allocate((size_t)dim * vocab, sizeof(num));
        for (int v = 0; v < vocab; v++) { /* output v: tile v / 64, column v % 64 */
            int first = v - v % OUT_TILE;
            int width = vocab - first < OUT_TILE ? vocab - first : OUT_TILE;
            for (int i = 0; i < dim; i++)
                head_t[(size_t)first * dim + (size_t)i * width + (v - first)] =
                    model.tok_emb[(size_t)v * dim + i];
        }
        model.head_t = head_t;
    }
    State state = new_state(&model);
    g_model = &model;
    g_state = &state;

    int ctx = model.f[F_CONTEXT], vocab = model.f[F_VOCAB];
    size_t len = strlen(prompt);
    if (prompt_file) prompt = (const char *)read_file(prompt_file, &len); /* may hold NULs */
    int32_t *ids = allocate(len + (size_t)n_new + 1, sizeof(int32_t));
    uint32_t *cps = allocate(len + 1, sizeof(uint32_t));
    size_t *starts = allocate(len + 1, sizeof(size_t));
    int length = encode(&tok, (const uint8_t *)prompt, len, ids, cps, starts);
    if (encode_only) {
        for (int i = 0; i < length; i++) printf(i ? " %d" : "%d", ids[i]);
        printf("\n");
        return 0;
    }
    if (length == 0) fail("empty prompt: give at least one character of text");
    if (dump) {
        for (int p = 0; p < length && p < ctx; p++) {
            num *logits = forward(&model, &state, ids[p], p);
            for (int i = 0; i < vocab; i++) printf("%.9g%c", logits[i], i + 1 < vocab ? ' ' : '\n');
        }
        return 0;
    }
    uint8_t *seen = allocate(vocab, 1);
    for (int i = 0; i < length; i++) seen[ids[i]] = 1;
    Candidate *order = allocate(vocab, sizeof(Candidate));
    int32_t *window = allocate(ctx, sizeof(int32_t));

    clock_t began = clock(); /* --bench: prefill and decoding, in processor time */
    int start = length > ctx - 1 ? length - (ctx - 1) : 0;
    num *logits = prefill(ids + start, length - start);
    int pos = length - start, made = 0;
    if (!print_ids) fwrite(prompt, 1, len, stdout);
    while (made < n_new) {
        int next = sample(&sampler, logits, seen, vocab, order);
        ids[length + made++] = next;
        if (next == tok.eos) break;
        if (print_ids) printf(made > 1 ? " %d" : "%d", next);
        else emit_token(&tok, next, stdout_sink);
        if (made == n_new) break;
        seen[next] = 1;
        int end = length + made;
        if (pos == ctx) { /* the context is full: keep the newest half, rebuild the cache */
            start = end - ctx / 2;
            pos = ctx / 2;
            memcpy(window, ids + start, (size_t)pos * sizeof *window);
            logits = prefill(window, pos);
        } else {
            logits = forward(&model, &state, next, pos++);
        }
    }
    double seconds = (double)(clock() - began) / CLOCKS_PER_SEC;
    printf("\n");
    if (bench && made > 0)
        fprintf(stderr, "generate: %d prompt ids, %d new tokens in %.6f s, %.1f tok/s\n",
                length, made, seconds, made / seconds);
    return 0;
}
#endif
