// CUDA pre/post-processing for u2edge; see kernels.h.
//
// The resizes reproduce cv2.resize, which the CPU path uses, operation for operation, so the
// GPU path gives the CPU reference's values:
// - INTER_AREA with whole-number scales: OpenCV's fast path, integer sums (2x2 rounds half up,
//   as its vector code does; other cells multiply by 1/area in float and round half to even);
// - INTER_AREA otherwise: OpenCV's weight tables (computed in double, kept as float), each
//   source row's weighted sum, then the rows' weighted sum, in float, never fused into FMAs;
// - 8-bit INTER_LINEAR: 11-bit fixed-point weights and the vertical pass's shifts as in
//   OpenCV's vector code; clamped weights at the left and right edges, clamped rows at the top
//   and bottom;
// - float INTER_LINEAR (the mask, when it grows): the same positions, float weights.
//
// Each kernel is a thin wrapper around a __host__ __device__ function that computes one output
// element; namespace host runs the same functions in a loop, so the arithmetic is tested on
// machines without a GPU.
#include "kernels.h"

#include <cuda_fp16.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <vector>

namespace u2edge {
namespace {

constexpr int kThreads = 256;

inline int blocks(long n) { return static_cast<int>((n + kThreads - 1) / kThreads); }

__host__ __device__ inline int imin(int a, int b) { return a < b ? a : b; }
__host__ __device__ inline int clamp(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

__host__ __device__ inline int round_even(float v) {  // cvRound: half to even
#ifdef __CUDA_ARCH__
    return __float2int_rn(v);
#else
    return static_cast<int>(std::nearbyint(v));
#endif
}

__host__ __device__ inline uint8_t saturate_u8(int v) { return static_cast<uint8_t>(clamp(v, 0, 255)); }

// Float multiply and add, each rounded on its own: nvcc would otherwise fuse them into FMAs,
// which OpenCV's x86 build does not use.
__host__ __device__ inline float mul_rn(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}

__host__ __device__ inline float add_rn(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}

enum class Interp { AreaFast, Area, Linear };

// One cv2.resize: sizes, OpenCV's scales (1 / (dst / src), in double) and its choice of method.
struct Resize {
    int src_w, src_h, dst_w, dst_h;
    double scale_x, scale_y;
    Interp interp;
    int cell_x, cell_y;  // AreaFast: the whole-number scales
};

// INTER_AREA (when shrinking) as cv2.resize runs it, else INTER_LINEAR.
Resize plan_resize(int src_w, int src_h, int dst_w, int dst_h, bool area) {
    Resize r{src_w, src_h, dst_w, dst_h, 1.0 / (static_cast<double>(dst_w) / src_w),
             1.0 / (static_cast<double>(dst_h) / src_h), Interp::Linear, 0, 0};
    if (area) {
        r.cell_x = static_cast<int>(std::nearbyint(r.scale_x));
        r.cell_y = static_cast<int>(std::nearbyint(r.scale_y));
        bool whole = std::fabs(r.scale_x - r.cell_x) < DBL_EPSILON && std::fabs(r.scale_y - r.cell_y) < DBL_EPSILON;
        r.interp = whole ? Interp::AreaFast : Interp::Area;
    }
    return r;
}

// One axis of OpenCV's INTER_AREA table for output index o: a partial source pixel before the
// whole ones [first, last), a partial one after them, and their weights.
struct AreaTaps {
    int first, last;
    bool head, tail;
    float head_w, whole_w, tail_w;
};

__host__ __device__ inline AreaTaps area_taps(int o, int src, double scale) {
    double f1 = o * scale, f2 = f1 + scale, cell = fmin(scale, src - f1);
    int last = imin(static_cast<int>(floor(f2)), src - 1);
    int first = imin(static_cast<int>(ceil(f1)), last);
    AreaTaps t;
    t.first = first;
    t.last = last;
    t.head = first - f1 > 1e-3;  // OpenCV drops slivers under 1e-3
    t.tail = f2 - last > 1e-3;
    t.head_w = static_cast<float>((first - f1) / cell);
    t.whole_w = static_cast<float>(1.0 / cell);
    t.tail_w = static_cast<float>(fmin(fmin(f2 - last, 1.0), cell) / cell);
    return t;
}

// Calls visit(source index, weight) for each pixel of `t`, in OpenCV's order.
template <typename Visit>
__host__ __device__ inline void for_taps(const AreaTaps& t, Visit visit) {
    if (t.head) visit(t.first - 1, t.head_w);
    for (int s = t.first; s < t.last; ++s) visit(s, t.whole_w);
    if (t.tail) visit(t.last, t.tail_w);
}

// INTER_AREA (not the fast path) at output pixel (ox, oy) of C channels, reading value(x, y, c).
template <int C, typename Value>
__host__ __device__ inline void area_pixel(int ox, int oy, const Resize& r, Value value, float* out) {
    AreaTaps tx = area_taps(ox, r.src_w, r.scale_x), ty = area_taps(oy, r.src_h, r.scale_y);
    for (int c = 0; c < C; ++c) out[c] = 0.f;
    for_taps(ty, [&](int y, float beta) {
        float row[C];
        for (int c = 0; c < C; ++c) row[c] = 0.f;
        for_taps(tx, [&](int x, float alpha) {
            for (int c = 0; c < C; ++c) row[c] = add_rn(row[c], mul_rn(value(x, y, c), alpha));
        });
        for (int c = 0; c < C; ++c) out[c] = add_rn(out[c], mul_rn(beta, row[c]));
    });
}

// INTER_LINEAR's source position for output index o: the pixel at or before it and the
// fraction past it, computed as OpenCV does (in double, then float).
__host__ __device__ inline void linear_pos(int o, double scale, int& s, float& f) {
    f = static_cast<float>((o + 0.5) * scale - 0.5);
    s = static_cast<int>(floorf(f));
    f -= s;
}

// Along x, OpenCV clamps the position itself at both edges (weight 0 on the missing pixel).
__host__ __device__ inline void linear_x(int o, const Resize& r, int& x0, int& x1, float& fx) {
    linear_pos(o, r.scale_x, x0, fx);
    if (x0 < 0) {
        x0 = 0;
        fx = 0.f;
    }
    if (x0 >= r.src_w - 1) {
        x0 = r.src_w - 1;
        fx = 0.f;
    }
    x1 = imin(x0 + 1, r.src_w - 1);
}

// Along y it keeps the weights and clamps the rows.
__host__ __device__ inline void linear_y(int o, const Resize& r, int& y0, int& y1, float& fy) {
    int y;
    linear_pos(o, r.scale_y, y, fy);
    y0 = clamp(y, 0, r.src_h - 1);
    y1 = clamp(y + 1, 0, r.src_h - 1);
}

// Output pixel i of the frame resized to SxSx3 uint8 (channel order unchanged); returns its
// largest channel, for the image's max.
__host__ __device__ inline unsigned int resize_u8_at(long i, const uint8_t* frame, int pitch, const Resize& r,
                                                     uint8_t* small) {
    int ox = static_cast<int>(i % r.dst_w), oy = static_cast<int>(i / r.dst_w);
    auto pixel = [&](int x, int y) { return frame + static_cast<long>(y) * pitch + x * 3; };
    uint8_t out[3];
    if (r.interp == Interp::AreaFast) {
        int sum[3] = {0, 0, 0};
        for (int y = oy * r.cell_y; y < (oy + 1) * r.cell_y; ++y)
            for (int x = ox * r.cell_x; x < (ox + 1) * r.cell_x; ++x)
                for (int c = 0; c < 3; ++c) sum[c] += pixel(x, y)[c];
        float scale = 1.f / (r.cell_x * r.cell_y);
        bool two_by_two = r.cell_x == 2 && r.cell_y == 2;
        for (int c = 0; c < 3; ++c)
            out[c] = saturate_u8(two_by_two ? (sum[c] + 2) >> 2 : round_even(mul_rn(static_cast<float>(sum[c]), scale)));
    } else if (r.interp == Interp::Area) {
        float v[3];
        area_pixel<3>(ox, oy, r, [&](int x, int y, int c) { return static_cast<float>(pixel(x, y)[c]); }, v);
        for (int c = 0; c < 3; ++c) out[c] = saturate_u8(round_even(v[c]));
    } else {
        int x0, x1, y0, y1;
        float fx, fy;
        linear_x(ox, r, x0, x1, fx);
        linear_y(oy, r, y0, y1, fy);
        int a0 = round_even(mul_rn(1.f - fx, 2048.f)), a1 = round_even(mul_rn(fx, 2048.f));
        int b0 = round_even(mul_rn(1.f - fy, 2048.f)), b1 = round_even(mul_rn(fy, 2048.f));
        for (int c = 0; c < 3; ++c) {
            int top = pixel(x0, y0)[c] * a0 + pixel(x1, y0)[c] * a1;
            int bottom = pixel(x0, y1)[c] * a0 + pixel(x1, y1)[c] * a1;
            // OpenCV's vector code: rows scaled down 4 bits, the high half of each product, then
            // the last 2 bits rounded
            int v = (((top >> 4) * b0) >> 16) + (((bottom >> 4) * b1) >> 16);
            out[c] = saturate_u8((v + 2) >> 2);
        }
    }
    unsigned int peak = 0;
    for (int c = 0; c < 3; ++c) {
        small[i * 3 + c] = out[c];
        peak = out[c] > peak ? out[c] : peak;
    }
    return peak;
}

template <typename T>
__host__ __device__ inline void normalize_at(long i, const uint8_t* small, unsigned int peak, int size,
                                             const Normalization& norm, T* out) {
    float top = norm.max_normalize ? fmaxf(static_cast<float>(peak), 1.f) : 255.f;
    for (int c = 0; c < 3; ++c) {
        int src = norm.swap_rb ? 2 - c : c;
        float scale = 1.f / mul_rn(top, norm.std[c]), shift = norm.mean[c] / norm.std[c];
        float v = add_rn(mul_rn(static_cast<float>(small[i * 3 + src]), scale), -shift);
        out[static_cast<long>(c) * size * size + i] = static_cast<T>(v);
    }
}

// Min-max normalization as the CPU reference does it: bounds[0] is the map's min, bounds[1] the
// float of 1 / (max - min) in double, or 0 for a constant map (which becomes zeros).
__host__ __device__ inline void set_bounds(float lo, float hi, float* bounds) {
    double range = static_cast<double>(hi) - lo;
    bounds[0] = lo;
    bounds[1] = range > 1e-6 ? static_cast<float>(1.0 / range) : 0.f;
}

__host__ __device__ inline float normalized(const float* pred, int size, int x, int y, const float* bounds) {
    return mul_rn(pred[y * size + x] - bounds[0], bounds[1]);
}

// Mask pixel i: the SxS map min-max normalized with `bounds`, resized to HxW as cv2.resize does
// on float (INTER_AREA when shrinking, else INTER_LINEAR), then clipped to [0, 1].
__host__ __device__ inline void resize_mask_at(long i, const float* pred, int size, const float* bounds,
                                               const Resize& r, float* mask) {
    int ox = static_cast<int>(i % r.dst_w), oy = static_cast<int>(i / r.dst_w);
    float v = 0.f;
    if (r.interp == Interp::AreaFast) {
        for (int y = oy * r.cell_y; y < (oy + 1) * r.cell_y; ++y)
            for (int x = ox * r.cell_x; x < (ox + 1) * r.cell_x; ++x)
                v = add_rn(v, normalized(pred, size, x, y, bounds));
        v = mul_rn(v, 1.f / (r.cell_x * r.cell_y));
    } else if (r.interp == Interp::Area) {
        area_pixel<1>(ox, oy, r, [&](int x, int y, int) { return normalized(pred, size, x, y, bounds); }, &v);
    } else {
        int x0, x1, y0, y1;
        float fx, fy;
        linear_x(ox, r, x0, x1, fx);
        linear_y(oy, r, y0, y1, fy);
        auto row = [&](int y) {
            return add_rn(mul_rn(normalized(pred, size, x0, y, bounds), 1.f - fx),
                          mul_rn(normalized(pred, size, x1, y, bounds), fx));
        };
        v = add_rn(mul_rn(1.f - fy, row(y0)), mul_rn(fy, row(y1)));
    }
    mask[i] = fminf(fmaxf(v, 0.f), 1.f);
}

// Tap k (-ksize/2..ksize/2) of cv2.getGaussianKernel(ksize, 0), unnormalized: OpenCV's fixed
// binomial kernels up to 7 taps, a Gaussian of sigma from the size beyond.
__host__ __device__ inline float gaussian_weight(int k, int ksize, float sigma) {
    switch (ksize) {
        case 1: return 1.f;
        case 3: return k == 0 ? 2.f : 1.f;
        case 5: return k == 0 ? 6.f : k == 1 || k == -1 ? 4.f : 1.f;
        case 7: return k == 0 ? 9.f : k == 1 || k == -1 ? 7.f : k == 2 || k == -2 ? 3.5f : 1.f;
        default: return expf(-(k * k) / (2.f * sigma * sigma));
    }
}

// Pixel i of one pass of a separable Gaussian (reflect-101 borders, as OpenCV), along x or y.
__host__ __device__ inline void gaussian_at(long i, const uint8_t* src, uint8_t* dst, int h, int w, int ksize,
                                            float sigma, bool along_x) {
    int x = static_cast<int>(i % w), y = static_cast<int>(i / w), r = ksize / 2;
    float sum[3] = {0.f, 0.f, 0.f}, total = 0.f;
    for (int k = -r; k <= r; ++k) {
        float g = gaussian_weight(k, ksize, sigma);
        int n = along_x ? w : h, p = (along_x ? x : y) + k;
        if (n > 1) {
            while (p < 0 || p >= n) p = p < 0 ? -p : 2 * n - 2 - p;
        } else {
            p = 0;
        }
        long s = along_x ? static_cast<long>(y) * w + p : static_cast<long>(p) * w + x;
        for (int c = 0; c < 3; ++c) sum[c] += g * src[s * 3 + c];
        total += g;
    }
    for (int c = 0; c < 3; ++c) dst[i * 3 + c] = static_cast<uint8_t>(fminf(sum[c] / total + 0.5f, 255.f));
}

// Pixel i of a composite, as u2edge/render.py computes it: alpha as round(mask * 255), or
// back + mask * (frame - back) + 0.5 truncated.
__host__ __device__ inline void blend_at(long i, const uint8_t* frame, const float* mask, Composite mode, Bgr color,
                                         const uint8_t* back, uint8_t* out) {
    float a = mask[i];
    if (mode == Composite::Cutout) {
        for (int c = 0; c < 3; ++c) out[i * 4 + c] = frame[i * 3 + c];
        out[i * 4 + 3] = saturate_u8(round_even(mul_rn(fminf(fmaxf(a, 0.f), 1.f), 255.f)));
        return;
    }
    for (int c = 0; c < 3; ++c) {
        float b = mode == Composite::Color ? color.value[c] : back[i * 3 + c];
        float v = add_rn(add_rn(b, mul_rn(a, static_cast<float>(frame[i * 3 + c]) - b)), 0.5f);
        out[i * 3 + c] = static_cast<uint8_t>(fminf(fmaxf(v, 0.f), 255.f));
    }
}

float blur_sigma(int ksize) { return 0.3f * ((ksize - 1) * 0.5f - 1.f) + 0.8f; }  // cv2.getGaussianKernel, sigma 0

// --- the kernels: one thread per output element

__global__ void resize_u8(const uint8_t* frame, int pitch, Resize r, uint8_t* small, unsigned int* peak) {
    long i = static_cast<long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < static_cast<long>(r.dst_w) * r.dst_h) atomicMax(peak, resize_u8_at(i, frame, pitch, r, small));
}

template <typename T>
__global__ void normalize(const uint8_t* small, const unsigned int* peak, int size, Normalization norm, T* out) {
    long i = static_cast<long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < static_cast<long>(size) * size) normalize_at(i, small, *peak, size, norm, out);
}

__global__ void min_max(const float* pred, int n, float* bounds) {
    __shared__ float lo[kThreads], hi[kThreads];
    float a = INFINITY, b = -INFINITY;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        a = fminf(a, pred[i]);
        b = fmaxf(b, pred[i]);
    }
    lo[threadIdx.x] = a;
    hi[threadIdx.x] = b;
    __syncthreads();
    for (int step = blockDim.x / 2; step > 0; step /= 2) {
        if (threadIdx.x < step) {
            lo[threadIdx.x] = fminf(lo[threadIdx.x], lo[threadIdx.x + step]);
            hi[threadIdx.x] = fmaxf(hi[threadIdx.x], hi[threadIdx.x + step]);
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) set_bounds(lo[0], hi[0], bounds);
}

__global__ void resize_mask(const float* pred, int size, const float* bounds, Resize r, float* mask) {
    long i = static_cast<long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < static_cast<long>(r.dst_w) * r.dst_h) resize_mask_at(i, pred, size, bounds, r, mask);
}

__global__ void gaussian_pass(const uint8_t* src, uint8_t* dst, int h, int w, int ksize, float sigma, bool along_x) {
    long i = static_cast<long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < static_cast<long>(h) * w) gaussian_at(i, src, dst, h, w, ksize, sigma, along_x);
}

__global__ void blend(const uint8_t* frame, const float* mask, long n, Composite mode, Bgr color,
                      const uint8_t* back, uint8_t* out) {
    long i = static_cast<long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n) blend_at(i, frame, mask, mode, color, back, out);
}

// The CPU reference's choices: shrink the frame with INTER_AREA only when it is at least SxS;
// shrink the map with it only when the frame is at most SxS.
Resize frame_resize(int height, int width, int size) {
    return plan_resize(width, height, size, size, height >= size && width >= size);
}

Resize mask_resize(int size, int height, int width) {
    return plan_resize(size, size, width, height, height <= size && width <= size);
}

}  // namespace

cudaError_t preprocess(const uint8_t* frame, int height, int width, int pitch, int size, const Normalization& norm,
                       void* out, bool half_output, uint8_t* scratch, cudaStream_t stream) {
    uint8_t* small = scratch;
    auto* peak = reinterpret_cast<unsigned int*>(scratch + ((size * size * 3 + 3) / 4) * 4);
    cudaMemsetAsync(peak, 0, sizeof(unsigned int), stream);
    resize_u8<<<blocks(size * size), kThreads, 0, stream>>>(frame, pitch, frame_resize(height, width, size), small,
                                                             peak);
    if (half_output)
        normalize<__half><<<blocks(size * size), kThreads, 0, stream>>>(small, peak, size, norm,
                                                                         static_cast<__half*>(out));
    else
        normalize<float><<<blocks(size * size), kThreads, 0, stream>>>(small, peak, size, norm,
                                                                        static_cast<float*>(out));
    return cudaGetLastError();
}

cudaError_t postprocess(const float* pred, int size, float* mask, int height, int width, void* scratch,
                        cudaStream_t stream) {
    auto* bounds = static_cast<float*>(scratch);
    min_max<<<1, kThreads, 0, stream>>>(pred, size * size, bounds);
    resize_mask<<<blocks(static_cast<long>(height) * width), kThreads, 0, stream>>>(
        pred, size, bounds, mask_resize(size, height, width), mask);
    return cudaGetLastError();
}

cudaError_t composite(const uint8_t* frame, const float* mask, int height, int width, Composite mode, Bgr color,
                      const uint8_t* background, int blur, uint8_t* scratch, uint8_t* out, cudaStream_t stream) {
    long n = static_cast<long>(height) * width;
    const uint8_t* back = background;
    if (mode == Composite::Blur) {
        int k = blur | 1;
        uint8_t* pass = scratch + n * 3;
        gaussian_pass<<<blocks(n), kThreads, 0, stream>>>(frame, pass, height, width, k, blur_sigma(k), true);
        gaussian_pass<<<blocks(n), kThreads, 0, stream>>>(pass, scratch, height, width, k, blur_sigma(k), false);
        back = scratch;
    }
    blend<<<blocks(n), kThreads, 0, stream>>>(frame, mask, n, mode, color, back, out);
    return cudaGetLastError();
}

namespace host {

void preprocess(const uint8_t* frame, int height, int width, int pitch, int size, const Normalization& norm,
                void* out, bool half_output) {
    long n = static_cast<long>(size) * size;
    std::vector<uint8_t> small(n * 3);
    Resize r = frame_resize(height, width, size);
    unsigned int peak = 0;
    for (long i = 0; i < n; ++i) peak = std::max(peak, resize_u8_at(i, frame, pitch, r, small.data()));
    for (long i = 0; i < n; ++i) {
        if (half_output)
            normalize_at(i, small.data(), peak, size, norm, static_cast<__half*>(out));
        else
            normalize_at(i, small.data(), peak, size, norm, static_cast<float*>(out));
    }
}

void postprocess(const float* pred, int size, float* mask, int height, int width) {
    auto [lo, hi] = std::minmax_element(pred, pred + static_cast<long>(size) * size);
    float bounds[2];
    set_bounds(*lo, *hi, bounds);
    Resize r = mask_resize(size, height, width);
    for (long i = 0; i < static_cast<long>(height) * width; ++i) resize_mask_at(i, pred, size, bounds, r, mask);
}

void composite(const uint8_t* frame, const float* mask, int height, int width, Composite mode, Bgr color,
               const uint8_t* background, int blur, uint8_t* out) {
    long n = static_cast<long>(height) * width;
    std::vector<uint8_t> blurred, pass;
    if (mode == Composite::Blur) {
        int k = blur | 1;
        blurred.resize(n * 3);
        pass.resize(n * 3);
        float sigma = blur_sigma(k);
        for (long i = 0; i < n; ++i) gaussian_at(i, frame, pass.data(), height, width, k, sigma, true);
        for (long i = 0; i < n; ++i) gaussian_at(i, pass.data(), blurred.data(), height, width, k, sigma, false);
        background = blurred.data();
    }
    for (long i = 0; i < n; ++i) blend_at(i, frame, mask, mode, color, background, out);
}

}  // namespace host
}  // namespace u2edge
