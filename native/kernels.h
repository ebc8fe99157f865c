// u2edge's CUDA pre/post-processing: the frame path stays on the GPU.
//
// Every function enqueues its kernels on `stream` and returns at once; pointers are device
// pointers. The results match u2edge/processing.py and u2edge/render.py (the CPU reference):
// OpenCV's INTER_AREA when shrinking and INTER_LINEAR otherwise, uint8 rounding of the resized
// image, max-normalization over the resized image, ImageNet mean/std.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

namespace u2edge {

struct Normalization {
    float mean[3];
    float std[3];
    bool max_normalize;  // divide by the resized image's own max (official U-2-Net); else by 255
    bool swap_rb;        // the frame's channel order differs from the network's
};

// HxWx3 uint8 frame -> 3xSxS network input (float32, or float16 with half_output).
// `scratch` holds S*S*3 bytes plus 4 (the resized image and its max).
cudaError_t preprocess(const uint8_t* frame, int height, int width, int pitch, int size, const Normalization& norm,
                       void* out, bool half_output, uint8_t* scratch, cudaStream_t stream);

// SxS fused map -> HxW float mask in [0, 1]: min-max normalization (a constant map gives zeros),
// then the resize back. `scratch` holds 8 bytes (min and max).
cudaError_t postprocess(const float* pred, int size, float* mask, int height, int width, void* scratch,
                        cudaStream_t stream);

enum class Composite { Cutout = 0, Color = 1, Image = 2, Blur = 3 };

struct Bgr {
    uint8_t value[3];
};

// Frame + mask -> output. Cutout: HxWx4 BGRA with the mask as alpha. Color: over `color` (BGR).
// Image: over `background` (HxWx3, already the frame's size). Blur: over the frame blurred with a
// Gaussian of odd size `blur` (sigma from the size, as cv2.GaussianBlur with sigma 0); `scratch`
// holds 2*H*W*3 bytes for the two blur passes.
cudaError_t composite(const uint8_t* frame, const float* mask, int height, int width, Composite mode, Bgr color,
                      const uint8_t* background, int blur, uint8_t* scratch, uint8_t* out, cudaStream_t stream);

// The same per-element code on the CPU, one element after another, on host pointers: for tests on
// machines without a CUDA device (the arithmetic is the kernels' own; only the launch differs).
namespace host {

void preprocess(const uint8_t* frame, int height, int width, int pitch, int size, const Normalization& norm,
                void* out, bool half_output);
void postprocess(const float* pred, int size, float* mask, int height, int width);
void composite(const uint8_t* frame, const float* mask, int height, int width, Composite mode, Bgr color,
               const uint8_t* background, int blur, uint8_t* out);

}  // namespace host
}  // namespace u2edge
