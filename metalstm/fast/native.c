/* One meta-learner step as C loops, layer 1's matrix products included (paper notes 3, 4, 5).

   metalstm/fast/fused.py computes a step with ~25 PyTorch operations forward and ~30 backward,
   each a full sweep over [H, n] arrays, around three matrix products (MKL's) whose [4H, n]
   results z and dz go through memory. Here the step is one sweep each way:
     metalstm_step           layer 1's right-hand side x = [pre(grad_t); h_{t-1}; 1]
                             (pre: paper notes 4's preprocessing), z = W' x, the gates,
                             c_t, h_t and all of layer 2;
     metalstm_step_backward  layer 2's and layer 1's derivatives, down to dz, and from dz
                             the weight gradient dW' = dz x^T and d h_{t-1} = W'[h]^T dz.
   Both walk the coordinates in blocks of COLS: a block's x, z and dz live in registers and
   the L1 cache, never in memory (the products run as register-blocked loops on GCC's and
   clang's vector types, which any target lowers to its own vectors). What reaches memory
   is each array the step reads or returns once, and in meta-training the gate activations
   saved for the backward pass. metalstm/fast/native.py compiles this file with the system's C
   compiler on first use and calls it through ctypes. Arrays are float32 and contiguous, a
   column per coordinate: element (r, j) of an [R, n] array is at r * n + j; W' (native.py's W1_folded) is [4H, K]
   row-major, K = H + 3, its columns [pre(grad) (2) | h (H) | bias].

   exp, tanh and log are written out (Cephes' single-precision polynomials, accurate to a few
   units in the last place), branch-free, so that the compiler vectorises every loop without
   libm; a NaN stays a NaN. The results agree with PyTorch's to rounding, not bit for bit
   (tests/package/test_native.py). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* e^x, x clamped to [-87, 88]: 2^k e^r with k = round(x / ln 2) and |r| <= ln(2) / 2.
   (Written branch-free - two clamps, rounding by adding and subtracting 1.5 * 2^23, whose
   float's bits then hold k - so that GCC and clang vectorise the loops that call it.) */
static inline float exp_f(float x)
{
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float shifted = x * 1.44269504088896341f + 12582912.0f;  /* round(x / ln 2) in the low bits */
    float k = shifted - 12582912.0f;
    float r = x - k * 0.693359375f + k * 2.12194440e-4f;     /* ln 2 split in two parts */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    int32_t ki;                         /* k as an integer, read from the bits (no conversion, */
    memcpy(&ki, &shifted, sizeof ki);   /* so a NaN is no undefined behaviour: r carries it)   */
    int32_t bits = (int32_t)((uint32_t)(ki - 0x4b400000 + 127) << 23);   /* 2^k, k in [-126, 127] */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline float sigmoid_f(float x) { return 1.0f / (1.0f + exp_f(-x)); }

/* tanh x: an odd polynomial for |x| < 0.625, else 1 - 2 / (e^{2|x|} + 1), with x's sign */
static inline float tanh_f(float x)
{
    float a = x < 0.0f ? -x : x, z = x * x;
    float small = ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z
                    + 1.33314422036e-1f) * z - 3.33332819422e-1f) * z * x + x;
    float big = 1.0f - 2.0f / (exp_f(2.0f * a) + 1.0f);
    big = x < 0.0f ? -big : big;
    return a < 0.625f ? small : big;
}


/* log x for x > 0 normal (finite): x = 2^e m with m in [sqrt(1/2), sqrt(2)), log x = e log 2 + log m
   (Cephes' single-precision polynomial for log(1 + y), y = m - 1) */
static inline float log_f(float x)
{
    int32_t bits;
    memcpy(&bits, &x, sizeof bits);
    int32_t e = ((bits >> 23) & 0xff) - 126;                 /* x = 2^e m, m in [1/2, 1) */
    int32_t mbits = (bits & 0x007fffff) | 0x3f000000;
    float m;
    memcpy(&m, &mbits, sizeof m);
    int small = m < 0.707106781186547524f;                   /* move m to [sqrt(1/2), sqrt(2)) */
    float fe = (float)(e - small);
    float y = (small ? m + m : m) - 1.0f, z = y * y;
    float p = 7.0376836292e-2f;
    p = p * y - 1.1514610310e-1f;
    p = p * y + 1.1676998740e-1f;
    p = p * y - 1.2420140846e-1f;
    p = p * y + 1.4249322787e-1f;
    p = p * y - 1.6668057665e-1f;
    p = p * y + 2.0000714765e-1f;
    p = p * y - 2.4999993993e-1f;
    p = p * y + 3.3333331174e-1f;
    p = p * y * z;
    p += fe * -2.12194440e-4f;                               /* log 2 split in two parts */
    p -= 0.5f * z;
    return y + p + fe * 0.693359375f;
}

/* -- blocks of COLS coordinates ------------------------------------------------------------ */
#define COLS 64                  /* coordinates per block: NV vectors of 16 floats */
#define NV (COLS / 16)
#define MAX_H 64                 /* the largest hidden size the blocks' stack buffers hold */
typedef float vec16 __attribute__((vector_size(64)));

/* Each block function is inlined with m = COLS (every block but the last: the compiler drops
   the j < m tests and vectorises the loops) and once more with the last block's m. */
#define BLOCK_FN static inline __attribute__((always_inline))

/* Ask now for the COLS columns that the next block will read (rw 0) or write (rw 1) in one
   row: a block walks 8-10 [H, n] arrays row by row, more streams than the hardware
   prefetcher follows (docs/speed.md). Only
   while a next block exists (`ahead`), so that no address past an array's end is formed. */
#define PREFETCH_ROW(row, rw)                                                  \
    do {                                                                       \
        if (ahead)                                                             \
            for (int l_ = 0; l_ < COLS; l_ += 16)                              \
                __builtin_prefetch((row) + COLS + l_, (rw), 3);                \
    } while (0)

/* x [K][COLS] = [pre(grad_t); h_{t-1}; 1] for the block's m columns, pre as paper notes 4
   (metalstm/preprocess.py), threshold = e^-p and scale = e^p:
       g -> (log|g| / p, sign g)  if |g| >= e^-p,   (-1, e^p g)  otherwise.
   Columns m .. COLS-1 hold x of a zero gradient and zero h: finite, so that the backward's
   dz, which is exactly 0 there, adds nothing to dW' = dz x^T; the forward discards them. */
BLOCK_FN void layer1_input(int H, int64_t ld, int m, const float *restrict grad, const float *restrict h,
                           float p, float threshold, float scale, vec16 *restrict xv)
{
    float *x = (float *)xv;
    for (int j = 0; j < COLS; j++) {
        /* the branch chosen by arithmetic (so that the loop vectorises), each term finite
           where it is multiplied by 0; a NaN takes the second branch, as in Python */
        float g = j < m ? grad[j] : 0.0f, a = g < 0.0f ? -g : g;
        float big = a >= threshold ? 1.0f : 0.0f;
        float magnitude = log_f(a >= threshold ? a : threshold) / p    /* clamped, as in Python */
                          + (a > 3.4028234664e38f ? a : 0.0f);           /* log inf = inf */
        float sign = g > 0.0f ? 1.0f : -1.0f;
        float tiny = (a >= threshold ? 0.0f : g) * scale;              /* |g| < e^-p here */
        x[j] = big * magnitude + (big - 1.0f);
        x[COLS + j] = big * sign + (1.0f - big) * tiny;
    }
    for (int r = 0; r < H; r++)
        for (int j = 0; j < COLS; j++)
            x[(2 + r) * COLS + j] = j < m ? h[r * ld + j] : 0.0f;
    for (int j = 0; j < COLS; j++)
        x[(H + 2) * COLS + j] = 1.0f;
}

/* x [K, n] = [pre(grad_t); h_{t-1}; 1] as the two kernels compute it block by block (they
   never store it; this is for tests/test_native.py and for reading) */
int metalstm_layer1_input(int H, int64_t n, const float *grad, float p, float threshold, float scale,
                          const float *h, float *x)
{
    if (H < 1 || H > MAX_H)
        return 2;
    const int K = H + 3;
    vec16 xv[(MAX_H + 3) * NV];
    for (int64_t j0 = 0; j0 < n; j0 += COLS) {
        int m = n - j0 < COLS ? (int)(n - j0) : COLS;
        layer1_input(H, n, m, grad + j0, h + j0, p, threshold, scale, xv);
        for (int k = 0; k < K; k++)
            memcpy(x + k * n + j0, (float *)xv + k * COLS, sizeof(float) * m);
    }
    return 0;
}

/* z [4][COLS]: the rows r, H + r, 2H + r, 3H + r of W' x (hidden unit r's four gates), as
   4 x NV accumulators: 16 registers with AVX-512's 32; where vectors are narrower (AVX2,
   the -O3 fallback's SSE2) they spill to the L1 cache, and the loop is slower, not wrong */
BLOCK_FN void layer1_rows(int H, int r, const float *restrict W1, const vec16 *restrict xv,
                          float z[4][COLS])
{
    const int K = H + 3;
    vec16 acc[4][NV];
    for (int q = 0; q < 4; q++)
        for (int v = 0; v < NV; v++)
            acc[q][v] = (vec16){0};
    for (int k = 0; k < K; k++) {
        float w0 = W1[r * K + k], w1 = W1[(H + r) * K + k], w2 = W1[(2 * H + r) * K + k],
              w3 = W1[(3 * H + r) * K + k];
        for (int v = 0; v < NV; v++) {
            vec16 xk = xv[k * NV + v];
            acc[0][v] += w0 * xk;
            acc[1][v] += w1 * xk;
            acc[2][v] += w2 * xk;
            acc[3][v] += w3 * xk;
        }
    }
    memcpy(z, acc, sizeof acc);
}

/* dW' rows r, H + r, 2H + r, 3H + r += dz x^T over one block: hidden unit r's four rows of
   dz [4][COLS] against x [K][COLS], into vectors whose 16 lanes `sum_lanes` adds up at the end */
BLOCK_FN void weight_grad_rows(int H, int r, vec16 dzv[4][NV], const vec16 *restrict xv,
                               vec16 *restrict dW)
{
    const int K = H + 3;
    for (int k = 0; k < K; k++)
        for (int q = 0; q < 4; q++) {
            vec16 acc = dW[(q * H + r) * K + k];
            for (int v = 0; v < NV; v++)
                acc += dzv[q][v] * xv[k * NV + v];
            dW[(q * H + r) * K + k] = acc;
        }
}

/* d h_{t-1} [H][COLS] += W'[h]^T dz, hidden unit r's four rows' share (W' columns 2 .. H + 1) */
BLOCK_FN void hidden_grad_rows(int H, int r, const float *restrict W1, vec16 dzv[4][NV],
                               vec16 *restrict dh)
{
    const int K = H + 3;
    for (int r2 = 0; r2 < H; r2++) {
        float w0 = W1[r * K + 2 + r2], w1 = W1[(H + r) * K + 2 + r2],
              w2 = W1[(2 * H + r) * K + 2 + r2], w3 = W1[(3 * H + r) * K + 2 + r2];
        for (int v = 0; v < NV; v++)
            dh[r2 * NV + v] += w0 * dzv[0][v] + w1 * dzv[1][v] + w2 * dzv[2][v] + w3 * dzv[3][v];
    }
}

/* The block's m columns of rows [rows][COLS] into an [rows, ld] array at out */
BLOCK_FN void store_rows(int rows, int64_t ld, int m, const vec16 *restrict v, float *restrict out)
{
    for (int r = 0; r < rows; r++) {
        float row[COLS];
        memcpy(row, &v[r * NV], sizeof row);
        for (int j = 0; j < COLS; j++)
            if (j < m)
                out[r * ld + j] = row[j];
    }
}

/* dW' [4H * K] as floats: each accumulator's 16 lanes summed */
static void sum_lanes(int count, const vec16 *dW, float *dW1)
{
    for (int q = 0; q < count; q++) {
        float lanes[16], sum = 0.0f;
        memcpy(lanes, &dW[q], sizeof lanes);
        for (int l = 0; l < 16; l++)
            sum += lanes[l];
        dW1[q] = sum;
    }
}

/* The arguments of one step, forward and backward (the C functions' own, gathered once). */
struct step {
    int H;
    int64_t n;
    float p, threshold, scale, b_F, b_I;
    const float *grad, *h, *W1, *c, *theta, *prev_f, *prev_i, *W_F, *W_I;
    float *c_new, *h_new, *theta_new, *f, *i, *a_f, *a_i, *acts;         /* forward's outputs */
};

/* Forward on columns [j0, j0 + m) (metalstm_step): acts, when saved, = [i1; f1; g1; o1] */
BLOCK_FN void forward_block(const struct step *s, int64_t j0, int m, const int save)
{
    const int H = s->H;
    const int64_t ld = s->n;
    const int ahead = j0 + 2 * COLS <= ld;    /* a whole next block to prefetch */
    vec16 xv[(MAX_H + 3) * NV];
    layer1_input(H, ld, m, s->grad + j0, s->h + j0, s->p, s->threshold, s->scale, xv);
    float sum_f[COLS], sum_i[COLS];           /* h_t's share of layer 2's two dot products */
    for (int j = 0; j < COLS; j++) {
        sum_f[j] = 0.0f;
        sum_i[j] = 0.0f;
    }
    for (int r = 0; r < H; r++) {
        float z[4][COLS];
        layer1_rows(H, r, s->W1, xv, z);
        const float *restrict c = s->c + r * ld + j0;
        float *restrict c_new = s->c_new + r * ld + j0, *restrict h_new = s->h_new + r * ld + j0;
        PREFETCH_ROW(c, 0);
        PREFETCH_ROW(s->h + r * ld + j0, 0);
        PREFETCH_ROW(c_new, 1);
        PREFETCH_ROW(h_new, 1);
        if (save)
            for (int q = 0; q < 4; q++)
                PREFETCH_ROW(s->acts + (q * H + r) * ld + j0, 1);
        float w_f = s->W_F[r], w_i = s->W_I[r];
        for (int j = 0; j < COLS; j++) {
            float i1 = sigmoid_f(z[0][j]), f1 = sigmoid_f(z[1][j]);
            float g1 = tanh_f(z[2][j]), o1 = sigmoid_f(z[3][j]);
            float cc = f1 * (j < m ? c[j] : 0.0f) + i1 * g1;
            float hh = o1 * tanh_f(cc);
            sum_f[j] += w_f * hh;
            sum_i[j] += w_i * hh;
            if (j < m) {
                c_new[j] = cc;
                h_new[j] = hh;
            }
            z[0][j] = i1;                     /* the gate activations, in place of z */
            z[1][j] = f1;
            z[2][j] = g1;
            z[3][j] = o1;
        }
        if (save)                             /* acts rows r, H + r, 2H + r, 3H + r */
            for (int q = 0; q < 4; q++) {
                float *restrict row = s->acts + (q * H + r) * ld + j0;
                for (int j = 0; j < COLS; j++)
                    if (j < m)
                        row[j] = z[q][j];
            }
    }
    const float *W_F = s->W_F, *W_I = s->W_I;
    const float *restrict theta = s->theta + j0, *restrict grad = s->grad + j0;
    const float *restrict prev_f = s->prev_f + j0, *restrict prev_i = s->prev_i + j0;
    float *restrict a_f = s->a_f + j0, *restrict a_i = s->a_i + j0, *restrict f = s->f + j0,
          *restrict i = s->i + j0, *restrict theta_new = s->theta_new + j0;
    for (int j = 0; j < COLS; j++) {
        if (j < m) {
            float af = sum_f[j] + W_F[H] * theta[j] + W_F[H + 1] * prev_f[j] + s->b_F;
            float ai = sum_i[j] + W_I[H] * theta[j] + W_I[H + 1] * prev_i[j] + s->b_I;
            float ff = sigmoid_f(af), ii = sigmoid_f(ai);
            a_f[j] = af;
            a_i[j] = ai;
            f[j] = ff;
            i[j] = ii;
            theta_new[j] = ff * theta[j] - ii * grad[j];
        }
    }
}

/* Forward (fused.py's FusedMetaStep.forward), for H <= MAX_H:
     z = W' [pre(grad_t); h_{t-1}; 1],  i1, f1, o1 = sigmoid(z_i, z_f, z_o),  g1 = tanh(z_g)
     c_t = f1 c_{t-1} + i1 g1,  h_t = o1 tanh(c_t)
     a_f = W_F . [h_t, theta_{t-1}, prev_f] + b_F,  f_t = sigmoid(a_f)   (same for i)
     theta_t = f_t theta_{t-1} - i_t grad_t
   acts [4H, n] receives [i1; f1; g1; o1] for the backward pass, or is NULL (meta-testing).
   Returns 0, or 2 for a hidden size outside [1, MAX_H] (nothing computed). */
int metalstm_step(int H, int64_t n, const float *grad, float p, float threshold, float scale,
                   const float *h, const float *W1, const float *c, const float *theta,
                   const float *prev_f, const float *prev_i, const float *W_F, const float *W_I,
                   float b_F, float b_I, float *c_new, float *h_new, float *theta_new, float *f,
                   float *i, float *a_f, float *a_i, float *acts)
{
    if (H < 1 || H > MAX_H)
        return 2;
    struct step s = {H, n, p, threshold, scale, b_F, b_I, grad, h, W1, c, theta, prev_f, prev_i,
                     W_F, W_I, c_new, h_new, theta_new, f, i, a_f, a_i, acts};
    int64_t j0 = 0;
    for (; j0 + COLS <= n; j0 += COLS) {
        if (acts)
            forward_block(&s, j0, COLS, 1);
        else
            forward_block(&s, j0, COLS, 0);
    }
    if (j0 < n) {
        if (acts)
            forward_block(&s, j0, (int)(n - j0), 1);
        else
            forward_block(&s, j0, (int)(n - j0), 0);
    }
    return 0;
}

/* The backward's arrays: upstream gradients (zeros where none arrived), what the forward
   saved, and the outputs. dW is [4H * K] vectors whose 16 lanes are summed at the end. */
struct grads {
    const float *d_theta, *d_f, *d_i, *d_af, *d_ai, *d_h, *d_c, *c_new;
    float *d_c_prev, *d_h_prev, *d_theta_prev, *d_prev_f, *d_prev_i, *da;
    vec16 *dW;
};

/* Backward on columns [j0, j0 + m) (metalstm_step_backward); d_h_prev is skipped if NULL */
BLOCK_FN void backward_block(const struct step *s, const struct grads *d, int64_t j0, int m, const int want_dh)
{
    const int H = s->H;
    const int64_t ld = s->n;
    const int ahead = j0 + 2 * COLS <= ld;    /* a whole next block to prefetch */
    const float *W_F = s->W_F, *W_I = s->W_I;
    const float *restrict f = s->f + j0, *restrict i = s->i + j0, *restrict theta = s->theta + j0,
                *restrict grad = s->grad + j0, *restrict d_theta = d->d_theta + j0,
                *restrict d_f = d->d_f + j0, *restrict d_i = d->d_i + j0, *restrict d_af = d->d_af + j0,
                *restrict d_ai = d->d_ai + j0;
    float *restrict da_f_out = d->da + j0, *restrict da_i_out = d->da + ld + j0,
          *restrict d_theta_prev = d->d_theta_prev + j0, *restrict d_prev_f = d->d_prev_f + j0,
          *restrict d_prev_i = d->d_prev_i + j0;
    float gf[COLS], gi[COLS];                 /* d a_f, d a_i */
    for (int j = 0; j < COLS; j++) {
        float da_f = 0.0f, da_i = 0.0f;
        if (j < m) {
            float ff = f[j], ii = i[j], dt = d_theta[j];
            da_f = (dt * theta[j] + d_f[j]) * (ff * (1.0f - ff)) + d_af[j];
            da_i = (d_i[j] - dt * grad[j]) * (ii * (1.0f - ii)) + d_ai[j];
            da_f_out[j] = da_f;
            da_i_out[j] = da_i;
            d_theta_prev[j] = dt * ff + W_F[H] * da_f + W_I[H] * da_i;
            d_prev_f[j] = da_f * W_F[H + 1];
            d_prev_i[j] = da_i * W_I[H + 1];
        }
        gf[j] = da_f;
        gi[j] = da_i;
    }
    vec16 xv[(MAX_H + 3) * NV];               /* layer 1's right-hand side, recomputed */
    layer1_input(H, ld, m, s->grad + j0, s->h + j0, s->p, s->threshold, s->scale, xv);
    vec16 dh_prev[MAX_H * NV];
    if (want_dh)
        for (int v = 0; v < H * NV; v++)
            dh_prev[v] = (vec16){0};
    for (int r = 0; r < H; r++) {
        const float *restrict i1 = s->acts + r * ld + j0, *restrict f1 = i1 + H * ld,
                    *restrict g1 = i1 + 2 * H * ld, *restrict o1 = i1 + 3 * H * ld;
        const float *restrict c = s->c + r * ld + j0, *restrict c_new = d->c_new + r * ld + j0;
        const float *restrict d_h = d->d_h + r * ld + j0, *restrict d_c = d->d_c + r * ld + j0;
        float *restrict d_c_prev = d->d_c_prev + r * ld + j0;
        PREFETCH_ROW(i1, 0);
        PREFETCH_ROW(f1, 0);
        PREFETCH_ROW(g1, 0);
        PREFETCH_ROW(o1, 0);
        PREFETCH_ROW(c, 0);
        PREFETCH_ROW(c_new, 0);
        PREFETCH_ROW(d_h, 0);
        PREFETCH_ROW(d_c, 0);
        PREFETCH_ROW(s->h + r * ld + j0, 0);
        PREFETCH_ROW(d_c_prev, 1);
        if (want_dh)
            PREFETCH_ROW(d->d_h_prev + r * ld + j0, 1);
        float w_f = W_F[r], w_i = W_I[r];
        float dz[4][COLS];                    /* [dz_i; dz_f; dz_g; dz_o] of hidden unit r */
        for (int j = 0; j < COLS; j++) {
            float zi = 0.0f, zf = 0.0f, zg = 0.0f, zo = 0.0f;
            if (j < m) {
                float dh = d_h[j] + w_f * gf[j] + w_i * gi[j];
                float t = tanh_f(c_new[j]);
                float dc = d_c[j] + dh * o1[j] * (1.0f - t * t);
                zi = dc * g1[j] * (i1[j] * (1.0f - i1[j]));
                zf = dc * c[j] * (f1[j] * (1.0f - f1[j]));
                zg = dc * i1[j] * (1.0f - g1[j] * g1[j]);
                zo = dh * t * (o1[j] * (1.0f - o1[j]));
                d_c_prev[j] = dc * f1[j];
            }
            dz[0][j] = zi;
            dz[1][j] = zf;
            dz[2][j] = zg;
            dz[3][j] = zo;
        }
        vec16 dzv[4][NV];
        memcpy(dzv, dz, sizeof dzv);
        weight_grad_rows(H, r, dzv, xv, d->dW);
        if (want_dh)
            hidden_grad_rows(H, r, s->W1, dzv, dh_prev);
    }
    if (want_dh)
        store_rows(H, ld, m, dh_prev, d->d_h_prev + j0);
}

/* Backward (fused.py's FusedMetaStep.backward), for upstream gradients d_theta, d_f, d_i,
   d_af, d_ai [n] and d_h, d_c [H, n] (zeros where none arrived):
     da_f = (d_theta theta_{t-1} + d_f) f (1 - f) + d_af;  da_i = (-d_theta grad + d_i) i (1 - i) + d_ai
     d theta_{t-1} = d_theta f + W_F[theta] da_f + W_I[theta] da_i;  d prev_f = W_F[f] da_f, d prev_i = W_I[i] da_i
     dh = d_h + W_F[h] da_f + W_I[h] da_i;  dc = d_c + dh o1 (1 - tanh(c_t)^2)
     dz = [dc g1 i1 (1 - i1); dc c_{t-1} f1 (1 - f1); dc i1 (1 - g1^2); dh tanh(c_t) o1 (1 - o1)]
     d c_{t-1} = dc f1;  dW' = dz x^T [4H, K];  d h_{t-1} = W'[h]^T dz (skipped if d_h_prev is NULL)
   da [2, n] returns (da_f; da_i), for layer 2's weight gradients, which PyTorch sums.
   Returns 0, 1 when the dW' accumulators could not be allocated, or 2 for a hidden size
   outside [1, MAX_H] (nothing computed). */
int metalstm_step_backward(int H, int64_t n, const float *d_theta, const float *d_f, const float *d_i,
                           const float *d_af, const float *d_ai, const float *d_h, const float *d_c,
                           const float *grad, float p, float threshold, float scale, const float *h,
                           const float *W1, const float *theta, const float *acts, const float *c,
                           const float *c_new, const float *f, const float *i, const float *W_F,
                           const float *W_I, float *d_c_prev, float *d_h_prev, float *d_theta_prev,
                           float *d_prev_f, float *d_prev_i, float *da, float *dW1)
{
    if (H < 1 || H > MAX_H)
        return 2;
    const int K = H + 3;
    vec16 *dW = aligned_alloc(sizeof(vec16), sizeof(vec16) * 4 * H * K);
    if (!dW)
        return 1;
    for (int q = 0; q < 4 * H * K; q++)
        dW[q] = (vec16){0};
    struct step s = {H, n, p, threshold, scale, 0.0f, 0.0f, grad, h, W1, c, theta, NULL, NULL,
                     W_F, W_I, NULL, NULL, NULL, (float *)f, (float *)i, NULL, NULL, (float *)acts};
    struct grads d = {d_theta, d_f, d_i, d_af, d_ai, d_h, d_c, c_new,
                      d_c_prev, d_h_prev, d_theta_prev, d_prev_f, d_prev_i, da, dW};
    int64_t j0 = 0;
    for (; j0 + COLS <= n; j0 += COLS) {
        if (d_h_prev)
            backward_block(&s, &d, j0, COLS, 1);
        else
            backward_block(&s, &d, j0, COLS, 0);
    }
    if (j0 < n) {
        if (d_h_prev)
            backward_block(&s, &d, j0, (int)(n - j0), 1);
        else
            backward_block(&s, &d, j0, (int)(n - j0), 0);
    }
    sum_lanes(4 * H * K, dW, dW1);
    free(dW);
    return 0;
}

/* metalstm_products on columns [j0, j0 + m) */
BLOCK_FN void products_block(int H, int64_t n, int64_t j0, int m, const float *restrict W1,
                             const float *restrict x, const float *restrict dz, float *restrict z,
                             vec16 *restrict dW, float *restrict dh)
{
    const int K = H + 3;
    const int ahead = j0 + 2 * COLS <= n;     /* a whole next block to prefetch */
    vec16 xv[(MAX_H + 3) * NV];
    float *x_block = (float *)xv;
    for (int k = 0; k < K; k++) {             /* columns m .. COLS-1 zero: they add nothing */
        PREFETCH_ROW(x + k * n + j0, 0);
        for (int j = 0; j < COLS; j++)
            x_block[k * COLS + j] = j < m ? x[k * n + j0 + j] : 0.0f;
    }
    vec16 dh_block[MAX_H * NV];
    for (int v = 0; dz && v < H * NV; v++)
        dh_block[v] = (vec16){0};
    for (int r = 0; r < H; r++) {
        float zr[4][COLS];
        layer1_rows(H, r, W1, xv, zr);
        for (int q = 0; q < 4; q++) {
            float *restrict row = z + (q * H + r) * n + j0;
            PREFETCH_ROW(row, 1);
            for (int j = 0; j < COLS; j++)
                if (j < m)
                    row[j] = zr[q][j];
        }
        if (dz) {
            vec16 dzv[4][NV];
            float *dz_block = (float *)dzv;
            for (int q = 0; q < 4; q++) {
                const float *restrict row = dz + (q * H + r) * n + j0;
                PREFETCH_ROW(row, 0);
                for (int j = 0; j < COLS; j++)
                    dz_block[q * COLS + j] = j < m ? row[j] : 0.0f;
            }
            weight_grad_rows(H, r, dzv, xv, dW);
            hidden_grad_rows(H, r, W1, dzv, dh_block);
        }
    }
    if (dz)
        store_rows(H, n, m, dh_block, dh + j0);
}

/* Layer 1's three products alone, with the step's own loops, for the benchmark's (g_C) and
   (g_fwd_C) (metalstm/tools/bench.py): z = W' x [4H, n], and with backward set (dz given),
   dW' = dz x^T [4H, K] and d h = W'[h]^T dz [H, n]. Unlike the step, they read x [K, n]
   and dz [4H, n] from memory and write z and d h to it, as separate products (PyTorch's,
   in (g)) must. Returns 0, 1 when the dW' accumulators could not be allocated, or 2 for a
   hidden size outside [1, MAX_H] (nothing computed). */
int metalstm_products(int H, int64_t n, int backward, const float *W1, const float *x, const float *dz,
                      float *z, float *dW1, float *dh)
{
    if (H < 1 || H > MAX_H)
        return 2;
    const int K = H + 3;
    vec16 *dW = NULL;
    if (backward) {
        dW = aligned_alloc(sizeof(vec16), sizeof(vec16) * 4 * H * K);
        if (!dW)
            return 1;
        for (int q = 0; q < 4 * H * K; q++)
            dW[q] = (vec16){0};
    } else
        dz = NULL;                            /* the blocks test dz: the forward product alone */
    int64_t j0 = 0;
    for (; j0 + COLS <= n; j0 += COLS) {
        if (backward)
            products_block(H, n, j0, COLS, W1, x, dz, z, dW, dh);
        else
            products_block(H, n, j0, COLS, W1, x, NULL, z, NULL, NULL);
    }
    if (j0 < n)
        products_block(H, n, j0, (int)(n - j0), W1, x, dz, z, dW, dh);
    if (backward) {                           /* n = 0: dW' is zeros */
        sum_lanes(4 * H * K, dW, dW1);
        free(dW);
    }
    return 0;
}
