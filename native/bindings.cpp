// Python module u2edge._native: the CUDA pre/post-processing kernels.
//
// The *_device functions take device pointers and a stream as ints (what u2edge.cuda hands out)
// and only enqueue work; the plain functions take and return numpy arrays, for the tests and for
// callers without device buffers of their own. The submodule `cpu` has the same plain functions,
// running the kernels' per-element code on the CPU.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels.h"

namespace py = pybind11;
using u2edge::Bgr;
using u2edge::Composite;
using u2edge::Normalization;

namespace {

void check(cudaError_t err, const char* what) {
    if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

template <typename T>
T* ptr(std::uintptr_t value) {
    return reinterpret_cast<T*>(value);
}

cudaStream_t stream_of(std::uintptr_t value) { return reinterpret_cast<cudaStream_t>(value); }

Normalization make_norm(std::array<float, 3> mean, std::array<float, 3> std, bool max_normalize, bool swap_rb) {
    Normalization n{};
    for (int c = 0; c < 3; ++c) {
        n.mean[c] = mean[c];
        n.std[c] = std[c];
    }
    n.max_normalize = max_normalize;
    n.swap_rb = swap_rb;
    return n;
}

// A device buffer freed when it goes out of scope (for the numpy conveniences).
struct Device {
    void* p = nullptr;
    explicit Device(size_t bytes) { check(cudaMalloc(&p, bytes ? bytes : 1), "cudaMalloc"); }
    ~Device() { cudaFree(p); }
    Device(const Device&) = delete;
    Device& operator=(const Device&) = delete;
};

using U8 = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;
using F32 = py::array_t<float, py::array::c_style | py::array::forcecast>;

void need_frame(const py::buffer_info& info, const char* name) {
    if (info.ndim != 3 || info.shape[2] != 3)
        throw std::invalid_argument(std::string(name) + " must be an HxWx3 uint8 array");
}

// The numpy conveniences: on the GPU (copy up, run the kernels, copy down), or with OnGpu false
// on the CPU, where the kernels' per-element code runs in a loop (tests without a GPU).
template <bool OnGpu>
py::array preprocess_numpy(U8 frame, int size, std::array<float, 3> mean, std::array<float, 3> std,
                           bool max_normalize, bool swap_rb, bool half_output) {
    auto info = frame.request();
    need_frame(info, "frame");
    int h = static_cast<int>(info.shape[0]), w = static_cast<int>(info.shape[1]);
    auto norm = make_norm(mean, std, max_normalize, swap_rb);
    py::array result(py::dtype(half_output ? "float16" : "float32"), {3, size, size});
    if constexpr (OnGpu) {
        Device src(info.size), out(result.nbytes()), scratch(3L * size * size + 8);
        check(cudaMemcpy(src.p, info.ptr, info.size, cudaMemcpyHostToDevice), "upload");
        check(u2edge::preprocess(static_cast<uint8_t*>(src.p), h, w, w * 3, size, norm, out.p, half_output,
                                 static_cast<uint8_t*>(scratch.p), nullptr),
              "preprocess");
        check(cudaMemcpy(result.mutable_data(), out.p, result.nbytes(), cudaMemcpyDeviceToHost), "download");
    } else {
        u2edge::host::preprocess(static_cast<const uint8_t*>(info.ptr), h, w, w * 3, size, norm,
                                 result.mutable_data(), half_output);
    }
    return result;
}

template <bool OnGpu>
py::array_t<float> postprocess_numpy(F32 pred, int height, int width) {
    auto info = pred.request();
    if (info.ndim != 2 || info.shape[0] != info.shape[1]) throw std::invalid_argument("pred must be an SxS array");
    if (height < 1 || width < 1) throw std::invalid_argument("height and width must be positive");
    int size = static_cast<int>(info.shape[0]);
    py::array_t<float> result({height, width});
    if constexpr (OnGpu) {
        Device src(info.size * sizeof(float)), mask(result.nbytes()), scratch(8);
        check(cudaMemcpy(src.p, info.ptr, info.size * sizeof(float), cudaMemcpyHostToDevice), "upload");
        check(u2edge::postprocess(static_cast<float*>(src.p), size, static_cast<float*>(mask.p), height, width,
                                  scratch.p, nullptr),
              "postprocess");
        check(cudaMemcpy(result.mutable_data(), mask.p, result.nbytes(), cudaMemcpyDeviceToHost), "download");
    } else {
        u2edge::host::postprocess(static_cast<const float*>(info.ptr), size, result.mutable_data(), height, width);
    }
    return result;
}

template <bool OnGpu>
py::array_t<uint8_t> composite_numpy(U8 frame, F32 mask, int mode, std::array<int, 3> color, py::object background,
                                     int blur) {
    auto f = frame.request(), m = mask.request();
    need_frame(f, "frame");
    int h = static_cast<int>(f.shape[0]), w = static_cast<int>(f.shape[1]);
    if (m.ndim != 2 || m.shape[0] != h || m.shape[1] != w) throw std::invalid_argument("mask must be HxW like frame");
    if (mode < 0 || mode > static_cast<int>(Composite::Blur)) throw std::invalid_argument("mode must be 0..3");
    auto kind = static_cast<Composite>(mode);
    U8 back;
    if (kind == Composite::Image) {
        back = U8::ensure(background);
        if (!back || back.ndim() != 3 || back.shape(0) != h || back.shape(1) != w || back.shape(2) != 3)
            throw std::invalid_argument("background must be an HxWx3 uint8 array the frame's size");
    }
    Bgr bgr{{static_cast<uint8_t>(color[0]), static_cast<uint8_t>(color[1]), static_cast<uint8_t>(color[2])}};
    py::array_t<uint8_t> result({h, w, kind == Composite::Cutout ? 4 : 3});
    if constexpr (OnGpu) {
        Device src(f.size), msk(m.size * sizeof(float)), out(result.nbytes()),
            scratch(kind == Composite::Blur ? 6L * h * w : 1), dev_back(kind == Composite::Image ? f.size : 1);
        check(cudaMemcpy(src.p, f.ptr, f.size, cudaMemcpyHostToDevice), "upload");
        check(cudaMemcpy(msk.p, m.ptr, m.size * sizeof(float), cudaMemcpyHostToDevice), "upload");
        if (kind == Composite::Image)
            check(cudaMemcpy(dev_back.p, back.data(), f.size, cudaMemcpyHostToDevice), "upload");
        check(u2edge::composite(static_cast<uint8_t*>(src.p), static_cast<float*>(msk.p), h, w, kind, bgr,
                                static_cast<uint8_t*>(dev_back.p), blur, static_cast<uint8_t*>(scratch.p),
                                static_cast<uint8_t*>(out.p), nullptr),
              "composite");
        check(cudaMemcpy(result.mutable_data(), out.p, result.nbytes(), cudaMemcpyDeviceToHost), "download");
    } else {
        u2edge::host::composite(static_cast<const uint8_t*>(f.ptr), static_cast<const float*>(m.ptr), h, w, kind, bgr,
                                kind == Composite::Image ? back.data() : nullptr, blur, result.mutable_data());
    }
    return result;
}

// The numpy conveniences of one side (the module's own: GPU; its `cpu` submodule: CPU).
template <bool OnGpu>
void def_numpy(py::module_& m, const char* where) {
    m.def("preprocess", &preprocess_numpy<OnGpu>, py::arg("frame"), py::arg("size"), py::arg("mean"),
          py::arg("std"), py::arg("max_normalize") = true, py::arg("swap_rb") = true, py::arg("half") = false,
          (std::string("HxWx3 uint8 frame -> 3xSxS float32 (or float16) network input, ") + where).c_str());
    m.def("postprocess", &postprocess_numpy<OnGpu>, py::arg("pred"), py::arg("height"), py::arg("width"),
          (std::string("SxS fused map -> HxW mask in [0, 1], ") + where).c_str());
    m.def("composite", &composite_numpy<OnGpu>, py::arg("frame"), py::arg("mask"), py::arg("mode"),
          py::arg("color") = std::array<int, 3>{0, 0, 0}, py::arg("background") = py::none(), py::arg("blur") = 0,
          (std::string("frame + mask -> cutout (mode 0, BGRA), color (1), image (2) or blur (3) composite, ") + where)
              .c_str());
}

}  // namespace

PYBIND11_MODULE(_native, m) {
    m.doc() = "u2edge's CUDA pre/post-processing kernels";
    def_numpy<true>(m, "on the GPU");
    auto cpu = m.def_submodule("cpu", "the kernels' per-element code run on the CPU, for tests without a GPU");
    def_numpy<false>(cpu, "the kernels' arithmetic on the CPU");
    m.def(
        "preprocess_device",
        [](std::uintptr_t frame, int height, int width, int pitch, int size, std::array<float, 3> mean,
           std::array<float, 3> std, bool max_normalize, bool swap_rb, std::uintptr_t out, bool half_output,
           std::uintptr_t scratch, std::uintptr_t stream) {
            check(u2edge::preprocess(ptr<const uint8_t>(frame), height, width, pitch, size,
                                     make_norm(mean, std, max_normalize, swap_rb), ptr<void>(out), half_output,
                                     ptr<uint8_t>(scratch), stream_of(stream)),
                  "preprocess");
        },
        "enqueue preprocessing on device buffers (scratch: 3*S*S+8 bytes)");
    m.def(
        "postprocess_device",
        [](std::uintptr_t pred, int size, std::uintptr_t mask, int height, int width, std::uintptr_t scratch,
           std::uintptr_t stream) {
            check(u2edge::postprocess(ptr<const float>(pred), size, ptr<float>(mask), height, width, ptr<void>(scratch),
                                      stream_of(stream)),
                  "postprocess");
        },
        "enqueue postprocessing on device buffers (scratch: 8 bytes)");
    // the same two on host memory, so code written for device buffers (u2edge.framepath) can be
    // tested on the CPU; scratch and stream are ignored
    cpu.def(
        "preprocess_device",
        [](std::uintptr_t frame, int height, int width, int pitch, int size, std::array<float, 3> mean,
           std::array<float, 3> std, bool max_normalize, bool swap_rb, std::uintptr_t out, bool half_output,
           std::uintptr_t /*scratch*/, std::uintptr_t /*stream*/) {
            u2edge::host::preprocess(ptr<const uint8_t>(frame), height, width, pitch, size,
                                     make_norm(mean, std, max_normalize, swap_rb), ptr<void>(out), half_output);
        },
        "preprocessing on host pointers, as preprocess_device does on device ones");
    cpu.def(
        "postprocess_device",
        [](std::uintptr_t pred, int size, std::uintptr_t mask, int height, int width, std::uintptr_t /*scratch*/,
           std::uintptr_t /*stream*/) {
            u2edge::host::postprocess(ptr<const float>(pred), size, ptr<float>(mask), height, width);
        },
        "postprocessing on host pointers, as postprocess_device does on device ones");
#ifdef U2EDGE_CUDA_ARCHITECTURES
    m.attr("CUDA_ARCHITECTURES") = U2EDGE_CUDA_ARCHITECTURES;  // what CMake compiled the kernels for
#endif
    m.attr("CUTOUT") = static_cast<int>(Composite::Cutout);
    m.attr("COLOR") = static_cast<int>(Composite::Color);
    m.attr("IMAGE") = static_cast<int>(Composite::Image);
    m.attr("BLUR") = static_cast<int>(Composite::Blur);
}
