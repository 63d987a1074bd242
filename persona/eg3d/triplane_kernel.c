/* Tri-plane sampling of EG3D, fused with the mean over the three planes (issue #16).
 *
 * The same values as persona.eg3d.rendering.sample_planes followed by the decoder's mean over the
 * planes (torch.nn.functional.grid_sample: bilinear, zero padding, align_corners=False; plane 0 at
 * (x, y), plane 1 at (x, z), plane 2 at (z, x)), to float rounding, in one pass over the points
 * with the channels of a texel contiguous (planes [B,3,H,W,C]), forward and backward (the gradient
 * of the planes; the points get none: persona.eg3d.triplane_kernel falls back to PyTorch when they
 * need one). Plain C99, no Python or PyTorch headers: loaded with ctypes, which releases the GIL,
 * so Python threads can run disjoint parts side by side. Every function writes only its own range
 * and sums in a fixed order: deterministic.
 */
#include <math.h>
#include <stdint.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define PERSONA_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define PERSONA_CLONES
#endif

/* plane p's four corners of a point (x, y, z), already scaled by 2/box_warp: texel offsets (-1 when
 * outside) and bilinear weights, as grid_sample. Plane p is sampled at (gx: width, gy: height) =
 * (x, y), (x, z), (z, x) for p = 0, 1, 2. */
static inline void corners(int p, const float *pt, int64_t h, int64_t w, int64_t *offset, float *weight) {
    const float gx = p == 2 ? pt[2] : pt[0], gy = p == 0 ? pt[1] : (p == 1 ? pt[2] : pt[0]);
    float ix = ((gx + 1.0f) * (float)w - 1.0f) * 0.5f;
    float iy = ((gy + 1.0f) * (float)h - 1.0f) * 0.5f;
    if (!(fabsf(ix) < 1e9f && fabsf(iy) < 1e9f)) {  /* NaN, inf or far outside: no corner inside */
        for (int k = 0; k < 4; k++) { offset[k] = -1; weight[k] = 0.0f; }
        return;
    }
    float fx = floorf(ix), fy = floorf(iy);
    int64_t x0 = (int64_t)fx, y0 = (int64_t)fy, x1 = x0 + 1, y1 = y0 + 1;
    float e = (fx + 1.0f) - ix, s = (fy + 1.0f) - iy;  /* distances to the east column, south row */
    float wx = ix - fx, ny = iy - fy;
    weight[0] = e * s;    /* north-west (x0, y0) */
    weight[1] = wx * s;   /* north-east (x1, y0) */
    weight[2] = e * ny;   /* south-west (x0, y1) */
    weight[3] = wx * ny;  /* south-east (x1, y1) */
    int64_t xs[4] = {x0, x1, x0, x1}, ys[4] = {y0, y0, y1, y1};
    for (int k = 0; k < 4; k++)
        offset[k] = (xs[k] >= 0 && xs[k] < w && ys[k] >= 0 && ys[k] < h) ? ys[k] * w + xs[k] : -1;
}

/* out[b, m, :] = mean over the planes of the bilinear samples, for points [m0, m1) of batch b.
 * planes [B,3,H,W,C], points [B,M,3], out [B,M,C]. */
PERSONA_CLONES
void triplane_sample_mean(const float *planes, const float *points, float *out, int64_t b, int64_t m0, int64_t m1,
                          int64_t n_points, int64_t h, int64_t w, int64_t c) {
    const float third = 1.0f / 3.0f;
    for (int64_t m = m0; m < m1; m++) {
        const float *pt = points + (b * n_points + m) * 3;
        float *restrict o = out + (b * n_points + m) * c;
        for (int64_t j = 0; j < c; j++) o[j] = 0.0f;
        for (int p = 0; p < 3; p++) {
            const float *plane = planes + (b * 3 + p) * h * w * c;
            float weight[4];
            int64_t offset[4];
            corners(p, pt, h, w, offset, weight);
            for (int k = 0; k < 4; k++) {
                if (offset[k] < 0) continue;
                const float *restrict texel = plane + offset[k] * c;
                const float wk = weight[k];
                for (int64_t j = 0; j < c; j++) o[j] += wk * texel[j];
            }
        }
        for (int64_t j = 0; j < c; j++) o[j] *= third;
    }
}

/* grad_planes[b] += the gradient of the three planes of batch b from grad_out [B,M,C]: all points in
 * order, each point's corners computed once for its three planes. grad_planes [B,3,H,W,C] must start
 * at zero; one b per call, so calls on different b never write the same memory. */
PERSONA_CLONES
void triplane_sample_mean_backward(const float *grad_out, const float *points, float *grad_planes, int64_t b,
                                   int64_t n_points, int64_t h, int64_t w, int64_t c) {
    const float third = 1.0f / 3.0f;
    for (int64_t m = 0; m < n_points; m++) {
        const float *pt = points + (b * n_points + m) * 3;
        const float *restrict g = grad_out + (b * n_points + m) * c;
        for (int p = 0; p < 3; p++) {
            float *plane = grad_planes + (b * 3 + p) * h * w * c;
            float weight[4];
            int64_t offset[4];
            corners(p, pt, h, w, offset, weight);
            for (int k = 0; k < 4; k++) {
                if (offset[k] < 0) continue;
                float *restrict texel = plane + offset[k] * c;
                const float wk = weight[k] * third;
                for (int64_t j = 0; j < c; j++) texel[j] += wk * g[j];
            }
        }
    }
}
