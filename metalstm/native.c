/* The elementwise work of one meta-learner step as C loops (paper notes 3, 4, 5).

   metalstm/fused.py computes a step with ~25 PyTorch operations forward and ~30 backward,
   each a full sweep over [H, n] arrays. Here each direction is ONE sweep:
     metalstm_layer1_input  the right-hand side [pre(grad_t) | h_{t-1}^T | 1] of layer 1's
                            matrix product (pre: paper notes 4's preprocessing);
     metalstm_forward       from that product z: the gates, c_t, h_t and all of layer 2;
     metalstm_backward      layer 2's and layer 1's elementwise derivatives, down to dz.
   The matrix products themselves stay PyTorch's (MKL's). metalstm/native.py compiles this
   file with the system's C compiler on first use and calls it through ctypes. Arrays are
   float32 and contiguous, a column per coordinate: element (r, j) of an [R, n] array is at
   r * n + j.

   Columns are processed in blocks of BLOCK, so that a block's partial sums for layer 2
   stay in the L1 cache across the row loop. exp, tanh and log are written out (Cephes'
   single-precision polynomials, accurate to a few units in the last place), branch-free,
   so that the compiler vectorises every loop without libm; a NaN stays a NaN. The results
   agree with PyTorch's to rounding, not bit for bit (tests/test_native.py). */
#include <stdint.h>
#include <string.h>

#define BLOCK 256
#define TILE 64

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

/* one row r of layer 1 over m columns: the gates in place of z, c_t, h_t, and h_t's share of
   layer 2's two dot products (each array its own: restrict lets the compiler vectorise freely) */
static void forward_row(int64_t m, float *restrict zi, float *restrict zf, float *restrict zg,
                        float *restrict zo, const float *restrict c, float *restrict c_new,
                        float *restrict h_new, float w_f, float w_i,
                        float *restrict sum_f, float *restrict sum_i)
{
    for (int64_t j = 0; j < m; j++) {
        float i1 = sigmoid_f(zi[j]), f1 = sigmoid_f(zf[j]);
        float g1 = tanh_f(zg[j]), o1 = sigmoid_f(zo[j]);
        float cc = f1 * c[j] + i1 * g1;
        float h = o1 * tanh_f(cc);
        zi[j] = i1;
        zf[j] = f1;
        zg[j] = g1;
        zo[j] = o1;
        c_new[j] = cc;
        h_new[j] = h;
        sum_f[j] += w_f * h;
        sum_i[j] += w_i * h;
    }
}

/* Forward (fused.py's FusedMetaStep.forward after the matrix product):
     acts [4H, n]: on entry z = W_1 [x; h_{t-1}] + b_1, on return [i1; f1; g1; o1]
     c_t = f1 c_{t-1} + i1 g1,  h_t = o1 tanh(c_t)
     a_f = W_F . [h_t, theta_{t-1}, prev_f] + b_F,  f_t = sigmoid(a_f)   (same for i)
     theta_t = f_t theta_{t-1} - i_t grad_t */
void metalstm_forward(int H, int64_t n, float *restrict acts, const float *restrict c,
                      const float *restrict theta, const float *restrict grad,
                      const float *restrict prev_f, const float *restrict prev_i,
                      const float *restrict W_F, const float *restrict W_I, float b_F, float b_I,
                      float *restrict c_new, float *restrict h_new, float *restrict theta_new,
                      float *restrict f, float *restrict i, float *restrict a_f, float *restrict a_i)
{
    for (int64_t j0 = 0; j0 < n; j0 += BLOCK) {
        int64_t m = n - j0 < BLOCK ? n - j0 : BLOCK;
        float sum_f[BLOCK], sum_i[BLOCK];
        for (int64_t j = 0; j < m; j++) {
            sum_f[j] = 0.0f;
            sum_i[j] = 0.0f;
        }
        for (int r = 0; r < H; r++)
            forward_row(m, acts + r * n + j0, acts + (H + r) * n + j0, acts + (2 * H + r) * n + j0,
                        acts + (3 * H + r) * n + j0, c + r * n + j0, c_new + r * n + j0,
                        h_new + r * n + j0, W_F[r], W_I[r], sum_f, sum_i);
        for (int64_t j = 0; j < m; j++) {
            int64_t k = j0 + j;
            float af = sum_f[j] + W_F[H] * theta[k] + W_F[H + 1] * prev_f[k] + b_F;
            float ai = sum_i[j] + W_I[H] * theta[k] + W_I[H + 1] * prev_i[k] + b_I;
            float ff = sigmoid_f(af), ii = sigmoid_f(ai);
            a_f[k] = af;
            a_i[k] = ai;
            f[k] = ff;
            i[k] = ii;
            theta_new[k] = ff * theta[k] - ii * grad[k];
        }
    }
}

/* one row r of the backward over m columns: dz's four rows and d c_{t-1} */
static void backward_row(int64_t m, const float *restrict i1, const float *restrict f1,
                         const float *restrict g1, const float *restrict o1, const float *restrict d_h,
                         const float *restrict d_c, const float *restrict c, const float *restrict c_new,
                         const float *restrict da_f, const float *restrict da_i, float w_f, float w_i,
                         float *restrict dz_i, float *restrict dz_f, float *restrict dz_g,
                         float *restrict dz_o, float *restrict d_c_prev)
{
    for (int64_t j = 0; j < m; j++) {
        float dh = d_h[j] + w_f * da_f[j] + w_i * da_i[j];
        float t = tanh_f(c_new[j]);
        float dc = d_c[j] + dh * o1[j] * (1.0f - t * t);
        dz_i[j] = dc * g1[j] * (i1[j] * (1.0f - i1[j]));
        dz_f[j] = dc * c[j] * (f1[j] * (1.0f - f1[j]));
        dz_g[j] = dc * i1[j] * (1.0f - g1[j] * g1[j]);
        dz_o[j] = dh * t * (o1[j] * (1.0f - o1[j]));
        d_c_prev[j] = dc * f1[j];
    }
}

/* Backward (fused.py's FusedMetaStep.backward up to dz), for upstream gradients
   d_theta, d_f, d_i, d_af, d_ai [n] and d_h, d_c [H, n] (zeros where none arrived):
     da_f = (d_theta theta_{t-1} + d_f) f (1 - f) + d_af;  da_i = (-d_theta grad + d_i) i (1 - i) + d_ai
     d theta_{t-1} = d_theta f + W_F[theta] da_f + W_I[theta] da_i;  d prev_f = W_F[f] da_f, d prev_i = W_I[i] da_i
     dh = d_h + W_F[h] da_f + W_I[h] da_i;  dc = d_c + dh o1 (1 - tanh(c_t)^2)
     dz = [dc g1 i1 (1 - i1); dc c_{t-1} f1 (1 - f1); dc i1 (1 - g1^2); dh tanh(c_t) o1 (1 - o1)]
     d c_{t-1} = dc f1
   da [2, n] returns (da_f; da_i), for the weight gradients that PyTorch sums. */
void metalstm_backward(int H, int64_t n, const float *restrict d_theta, const float *restrict d_f,
                       const float *restrict d_i, const float *restrict d_af, const float *restrict d_ai,
                       const float *restrict d_h, const float *restrict d_c,
                       const float *restrict theta, const float *restrict grad,
                       const float *restrict acts, const float *restrict c, const float *restrict c_new,
                       const float *restrict f, const float *restrict i,
                       const float *restrict W_F, const float *restrict W_I,
                       float *restrict dz, float *restrict d_c_prev, float *restrict d_theta_prev,
                       float *restrict d_prev_f, float *restrict d_prev_i, float *restrict da)
{
    float *da_f = da, *da_i = da + n;
    for (int64_t j0 = 0; j0 < n; j0 += BLOCK) {
        int64_t m = n - j0 < BLOCK ? n - j0 : BLOCK;
        for (int64_t j = j0; j < j0 + m; j++) {
            float gf = (d_theta[j] * theta[j] + d_f[j]) * (f[j] * (1.0f - f[j])) + d_af[j];
            float gi = (d_i[j] - d_theta[j] * grad[j]) * (i[j] * (1.0f - i[j])) + d_ai[j];
            da_f[j] = gf;
            da_i[j] = gi;
            d_theta_prev[j] = d_theta[j] * f[j] + W_F[H] * gf + W_I[H] * gi;
            d_prev_f[j] = gf * W_F[H + 1];
            d_prev_i[j] = gi * W_I[H + 1];
        }
        for (int r = 0; r < H; r++)
            backward_row(m, acts + r * n + j0, acts + (H + r) * n + j0, acts + (2 * H + r) * n + j0,
                         acts + (3 * H + r) * n + j0, d_h + r * n + j0, d_c + r * n + j0, c + r * n + j0,
                         c_new + r * n + j0, da_f + j0, da_i + j0, W_F[r], W_I[r], dz + r * n + j0,
                         dz + (H + r) * n + j0, dz + (2 * H + r) * n + j0, dz + (3 * H + r) * n + j0,
                         d_c_prev + r * n + j0);
    }
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

/* inputs [n, H + 3] = [pre(grad_t) | h_{t-1}^T | 1], coordinate-major (the layout of fused.py's
   _layer1_input), in one pass: pre is paper notes 4's preprocessing (metalstm/preprocess.py),
       g -> (log|g| / p, sign g)  if |g| >= e^-p,   (-1, e^p g)  otherwise,
   with threshold = e^-p and scale = e^p; TILE coordinates at a time, so that h's rows
   are read from the L1 cache while each coordinate's row of inputs is written */
void metalstm_layer1_input(int H, int64_t n, const float *restrict grad, float p, float threshold,
                           float scale, const float *restrict h, float *restrict inputs)
{
    const int64_t ld = H + 3;
    float mag[TILE], sgn[TILE];
    for (int64_t j0 = 0; j0 < n; j0 += TILE) {
        int64_t m = n - j0 < TILE ? n - j0 : TILE;
        for (int64_t j = 0; j < m; j++) {                       /* pre(grad), vectorised */
            /* the branch chosen by arithmetic (so that the loop vectorises), each term finite
               where it is multiplied by 0; a NaN takes the second branch, as in Python */
            float g = grad[j0 + j], a = g < 0.0f ? -g : g;
            float big = a >= threshold ? 1.0f : 0.0f;
            float magnitude = log_f(a >= threshold ? a : threshold) / p    /* clamped, as in Python */
                              + (a > 3.4028234664e38f ? a : 0.0f);           /* log inf = inf */
            float sign = g > 0.0f ? 1.0f : -1.0f;
            float tiny = (a >= threshold ? 0.0f : g) * scale;              /* |g| < e^-p here */
            mag[j] = big * magnitude + (big - 1.0f);
            sgn[j] = big * sign + (1.0f - big) * tiny;
        }
        for (int64_t j = 0; j < m; j++) {                       /* one coordinate's row of inputs */
            float *row = inputs + (j0 + j) * ld;
            row[0] = mag[j];
            row[1] = sgn[j];
            for (int r = 0; r < H; r++)
                row[2 + r] = h[r * n + j0 + j];
            row[H + 2] = 1.0f;
        }
    }
}
