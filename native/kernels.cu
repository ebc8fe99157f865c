// CUDA pre/post-processing for u2edge; see kernels.h. The arithmetic follows OpenCV's resize so that
// the GPU path gives the CPU reference's values: INTER_AREA as fractional box weights accumulated
// in float and rounded half to even; 8-bit INTER_LINEAR in 11-bit fixed point; float
// INTER_LINEAR with half-pixel centres and clamped borders.
#include "kernels.h"

#include <cuda_fp16.h>

#include <cmath>

namespace u2edge {
namespace {

constexpr int kThreads = 256;

inline int blocks(long n) { return static_cast<int>((n + kThreads - 1) / kThreads); }

// The source span [start, end) that OpenCV's INTER_AREA averages for output index `o`.
__device__ inline void area_span(int o, float scale, int src, float& start, float& end, float& cell) {
    start = o * scale;
    end = start + scale;
    cell = fminf(scale, src - start);
}

__device__ inline float area_weight(int s, float start, float end) {
    float lo = fmaxf(start, static_cast<float>(s)), hi = fminf(end, static_cast<float>(s + 1));
    float w = hi - lo;
    return w > 1e-3f ? w : 0.f;  // OpenCV drops slivers under 1e-3
}

// INTER_AREA: calls add(x, y, weight) for every source pixel under output pixel (ox, oy).
template <typename Add>
__device__ inline void for_area(int ox, int oy, int src_w, int src_h, int dst_w, int dst_h, Add add) {
    float x0, x1, cw, y0, y1, ch;
    area_span(ox, static_cast<float>(src_w) / dst_w, src_w, x0, x1, cw);
    area_span(oy, static_cast<float>(src_h) / dst_h, src_h, y0, y1, ch);
    for (int y = static_cast<int>(floorf(y0)); y < min(src_h, static_cast<int>(ceilf(y1))); ++y) {
        float wy = area_weight(y, y0, y1) / ch;
        if (wy == 0.f) continue;
        for (int x = static_cast<int>(floorf(x0)); x < min(src_w, static_cast<int>(ceilf(x1))); ++x)
            add(x, y, wy * area_weight(x, x0, x1) / cw);
    }
}

// INTER_LINEAR: the two source taps of output index `o` and the weight of the second, with
// half-pixel centres and OpenCV's clamped borders.
__device__ inline void linear_taps(int o, int src, int dst, int& t0, int& t1, float& f) {
    float pos = (o + 0.5f) * src / dst - 0.5f;
    t0 = static_cast<int>(floorf(pos));
    f = pos - t0;
    if (t0 < 0) { t0 = 0; f = 0.f; }
    if (t0 >= src - 1) { t0 = src - 1; f = 0.f; }
    t1 = min(t0 + 1, src - 1);
}

// Frame -> SxSx3 uint8 (the resized image, channel order unchanged), and its max into *peak.
__global__ void resize_u8(const uint8_t* frame, int h, int w, int pitch, int size, uint8_t* small,
                          unsigned int* peak, bool area) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= size * size) return;
    int ox = i % size, oy = i / size;
    float out[3] = {0.f, 0.f, 0.f};
    if (area) {
        for_area(ox, oy, w, h, size, size, [&](int x, int y, float weight) {
            const uint8_t* px = frame + static_cast<long>(y) * pitch + x * 3;
            for (int c = 0; c < 3; ++c) out[c] += weight * px[c];
        });
        for (int c = 0; c < 3; ++c) out[c] = rintf(out[c]);  // cvRound: half to even
    } else {
        // 8-bit INTER_LINEAR: coefficients rounded to 11 bits each, one rounding at the end
        int x, x1, y, y1;
        float fx, fy;
        linear_taps(ox, w, size, x, x1, fx);
        linear_taps(oy, h, size, y, y1, fy);
        int ax1 = __float2int_rn(fx * 2048.f), ax0 = __float2int_rn((1.f - fx) * 2048.f);
        int by1 = __float2int_rn(fy * 2048.f), by0 = __float2int_rn((1.f - fy) * 2048.f);
        const uint8_t* r0 = frame + static_cast<long>(y) * pitch;
        const uint8_t* r1 = frame + static_cast<long>(y1) * pitch;
        for (int c = 0; c < 3; ++c) {
            int top = r0[x * 3 + c] * ax0 + r0[x1 * 3 + c] * ax1;
            int bottom = r1[x * 3 + c] * ax0 + r1[x1 * 3 + c] * ax1;
            out[c] = static_cast<float>((top * by0 + bottom * by1 + (1 << 21)) >> 22);
        }
    }
    unsigned int local = 0;
    for (int c = 0; c < 3; ++c) {
        uint8_t v = static_cast<uint8_t>(fminf(fmaxf(out[c], 0.f), 255.f));
        small[i * 3 + c] = v;
        local = max(local, static_cast<unsigned int>(v));
    }
    atomicMax(peak, local);
}

template <typename T>
__global__ void normalize(const uint8_t* small, const unsigned int* peak, int size, Normalization norm, T* out) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= size * size) return;
    float top = norm.max_normalize ? fmaxf(static_cast<float>(*peak), 1.f) : 255.f;
    for (int c = 0; c < 3; ++c) {
        int src = norm.swap_rb ? 2 - c : c;
        float scale = 1.f / (top * norm.std[c]);
        float v = small[i * 3 + src] * scale - norm.mean[c] / norm.std[c];
        out[static_cast<long>(c) * size * size + i] = static_cast<T>(v);
    }
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
    if (threadIdx.x == 0) {
        bounds[0] = lo[0];
        bounds[1] = hi[0];
    }
}

__device__ inline float normalized(const float* pred, int size, int x, int y, const float* bounds) {
    float range = bounds[1] - bounds[0];
    return range > 1e-6f ? (pred[y * size + x] - bounds[0]) * (1.f / range) : 0.f;
}

// SxS map -> HxW mask, min-max normalized: INTER_AREA when shrinking, else float INTER_LINEAR.
__global__ void resize_mask(const float* pred, int size, const float* bounds, float* mask, int h, int w) {
    long i = static_cast<long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= static_cast<long>(h) * w) return;
    int ox = static_cast<int>(i % w), oy = static_cast<int>(i / w);
    float v = 0.f;
    if (h <= size && w <= size) {
        for_area(ox, oy, size, size, w, h,
                 [&](int x, int y, float weight) { v += weight * normalized(pred, size, x, y, bounds); });
    } else {
        int x, x1, y, y1;
        float fx, fy;
        linear_taps(ox, size, w, x, x1, fx);
        linear_taps(oy, size, h, y, y1, fy);
        v = (1.f - fy) * ((1.f - fx) * normalized(pred, size, x, y, bounds) + fx * normalized(pred, size, x1, y, bounds)) +
            fy * ((1.f - fx) * normalized(pred, size, x, y1, bounds) + fx * normalized(pred, size, x1, y1, bounds));
    }
    mask[i] = fminf(fmaxf(v, 0.f), 1.f);
}

// One pass of a separable Gaussian (reflect-101 borders, as OpenCV), along x or y.
__global__ void gaussian_pass(const uint8_t* src, uint8_t* dst, int h, int w, int ksize, float sigma, bool along_x) {
    long i = static_cast<long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= static_cast<long>(h) * w) return;
    int x = static_cast<int>(i % w), y = static_cast<int>(i / w), r = ksize / 2;
    float sum[3] = {0.f, 0.f, 0.f}, total = 0.f;
    for (int k = -r; k <= r; ++k) {
        float g = expf(-(k * k) / (2.f * sigma * sigma));
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

__global__ void blend(const uint8_t* frame, const float* mask, long n, Composite mode, Bgr color,
                      const uint8_t* back, uint8_t* out) {
    long i = static_cast<long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float a = mask[i];
    if (mode == Composite::Cutout) {
        for (int c = 0; c < 3; ++c) out[i * 4 + c] = frame[i * 3 + c];
        out[i * 4 + 3] = static_cast<uint8_t>(__float2int_rn(fminf(fmaxf(a, 0.f), 1.f) * 255.f));
        return;
    }
    for (int c = 0; c < 3; ++c) {
        float b = mode == Composite::Color ? color.value[c] : back[i * 3 + c];
        out[i * 3 + c] = static_cast<uint8_t>(fminf(fmaxf(b + a * (frame[i * 3 + c] - b) + 0.5f, 0.f), 255.f));
    }
}

}  // namespace

cudaError_t preprocess(const uint8_t* frame, int height, int width, int pitch, int size, const Normalization& norm,
                       void* out, bool half_output, uint8_t* scratch, cudaStream_t stream) {
    uint8_t* small = scratch;
    auto* peak = reinterpret_cast<unsigned int*>(scratch + ((size * size * 3 + 3) / 4) * 4);
    cudaMemsetAsync(peak, 0, sizeof(unsigned int), stream);
    bool area = height >= size && width >= size;
    resize_u8<<<blocks(size * size), kThreads, 0, stream>>>(frame, height, width, pitch, size, small, peak, area);
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
    resize_mask<<<blocks(static_cast<long>(height) * width), kThreads, 0, stream>>>(pred, size, bounds, mask, height,
                                                                                    width);
    return cudaGetLastError();
}

cudaError_t composite(const uint8_t* frame, const float* mask, int height, int width, Composite mode, Bgr color,
                      const uint8_t* background, int blur, uint8_t* scratch, uint8_t* out, cudaStream_t stream) {
    long n = static_cast<long>(height) * width;
    const uint8_t* back = background;
    if (mode == Composite::Blur) {
        int k = blur | 1;
        float sigma = 0.3f * ((k - 1) * 0.5f - 1.f) + 0.8f;  // cv2.getGaussianKernel with sigma 0
        uint8_t* pass = scratch + n * 3;
        gaussian_pass<<<blocks(n), kThreads, 0, stream>>>(frame, pass, height, width, k, sigma, true);
        gaussian_pass<<<blocks(n), kThreads, 0, stream>>>(pass, scratch, height, width, k, sigma, false);
        back = scratch;
    }
    blend<<<blocks(n), kThreads, 0, stream>>>(frame, mask, n, mode, color, back, out);
    return cudaGetLastError();
}

}  // namespace u2edge
