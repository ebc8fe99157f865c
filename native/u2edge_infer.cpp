// u2edge_infer ENGINE IMAGE OUT.png [--cutout]
//
// The C++ path for robotics stacks: read an image (OpenCV), preprocess it on the GPU (u2edge's
// kernels), run a u2edge TensorRT engine (tensors bound by name, enqueueV3), postprocess on the
// GPU, and write the 8-bit mask (or, with --cutout, the BGRA cutout) as a PNG.
// Needs TensorRT >= 8.5 (name-based I/O) and OpenCV's C++ library (JetPack has both).
// It preprocesses with the official recipe (RGB, max-normalized, ImageNet mean/std) at the
// engine's input size; for an engine built with other settings (its sidecar's "preprocessing"),
// use the Python runtime, which reads them.
#include <NvInfer.h>
#include <cuda_runtime.h>

#include <opencv2/imgcodecs.hpp>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "kernels.h"

namespace {

class Logger : public nvinfer1::ILogger {
    void log(Severity severity, const char* msg) noexcept override {
        if (severity <= Severity::kERROR) std::cerr << "u2edge_infer: TensorRT: " << msg << "\n";
    }
};

int fail(const std::string& message) {
    std::cerr << "u2edge_infer: error: " << message << "\n";
    return 1;
}

#define CUDA_OK(call)                                                                        \
    do {                                                                                     \
        cudaError_t err_ = (call);                                                           \
        if (err_ != cudaSuccess) return fail(std::string(#call) + ": " + cudaGetErrorString(err_)); \
    } while (0)

}  // namespace

int main(int argc, char** argv) {
    if (argc < 4) {
        std::cerr << "usage: u2edge_infer ENGINE IMAGE OUT.png [--cutout]\n";
        return 2;
    }
    const std::string engine_path = argv[1], image_path = argv[2], out_path = argv[3];
    const bool cutout = argc > 4 && std::string(argv[4]) == "--cutout";

    std::ifstream file(engine_path, std::ios::binary);
    if (!file) return fail("cannot read the engine " + engine_path);
    std::vector<char> plan((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    cv::Mat frame = cv::imread(image_path, cv::IMREAD_COLOR);
    if (frame.empty()) return fail("cannot read the image " + image_path + " (missing, corrupt or not an image)");

    Logger logger;
    std::unique_ptr<nvinfer1::IRuntime> runtime(nvinfer1::createInferRuntime(logger));
    std::unique_ptr<nvinfer1::ICudaEngine> engine(runtime->deserializeCudaEngine(plan.data(), plan.size()));
    if (!engine)
        return fail(engine_path + " does not load with this TensorRT or GPU; rebuild it here with u2edge build");
    std::string input, output;
    std::vector<std::string> outputs;
    for (int i = 0; i < engine->getNbIOTensors(); ++i) {
        const char* name = engine->getIOTensorName(i);
        if (engine->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT) {
            input = name;
        } else {
            outputs.push_back(name);
            if (output.empty() || outputs.back() == "mask") output = name;
        }
    }
    nvinfer1::Dims dims = engine->getTensorShape(input.c_str());
    if (dims.nbDims != 4 || dims.d[1] != 3 || dims.d[2] != dims.d[3])
        return fail(engine_path + " is not a U-2-Net engine (expected one N x 3 x S x S input)");
    const int size = static_cast<int>(dims.d[2]);
    // a fixed-batch engine reads and writes all its items: the image is item 0, the rest are ignored
    const size_t batch = dims.d[0] > 0 ? static_cast<size_t>(dims.d[0]) : 1;
    std::unique_ptr<nvinfer1::IExecutionContext> context(engine->createExecutionContext());
    if (!context) return fail("out of GPU memory creating the execution context");
    if (dims.d[0] == -1) context->setInputShape(input.c_str(), nvinfer1::Dims4{1, 3, size, size});

    const int h = frame.rows, w = frame.cols;
    void *d_frame, *d_input, *d_pred, *d_mask, *d_out, *d_scratch;
    CUDA_OK(cudaMalloc(&d_frame, frame.total() * 3));
    CUDA_OK(cudaMalloc(&d_input, batch * 3 * size * size * sizeof(float)));
    CUDA_OK(cudaMalloc(&d_pred, batch * size * size * sizeof(float)));
    CUDA_OK(cudaMalloc(&d_mask, static_cast<size_t>(h) * w * sizeof(float)));
    CUDA_OK(cudaMalloc(&d_out, static_cast<size_t>(h) * w * 4));
    CUDA_OK(cudaMalloc(&d_scratch, 3UL * size * size + 8));
    cudaStream_t stream;
    CUDA_OK(cudaStreamCreate(&stream));

    cv::Mat contiguous = frame.isContinuous() ? frame : frame.clone();
    CUDA_OK(cudaMemcpyAsync(d_frame, contiguous.data, contiguous.total() * 3, cudaMemcpyHostToDevice, stream));
    // the official U-2-Net recipe: RGB, max-normalized, ImageNet mean/std (OpenCV reads BGR)
    u2edge::Normalization norm{{0.485f, 0.456f, 0.406f}, {0.229f, 0.224f, 0.225f}, true, true};
    CUDA_OK(u2edge::preprocess(static_cast<uint8_t*>(d_frame), h, w, w * 3, size, norm, d_input, false,
                               static_cast<uint8_t*>(d_scratch), stream));
    context->setTensorAddress(input.c_str(), d_input);
    context->setTensorAddress(output.c_str(), d_pred);
    // TensorRT runs only with every output bound: the side maps of a 7-output engine go to scratch
    std::vector<void*> side;
    for (const std::string& name : outputs) {
        if (name == output) continue;
        nvinfer1::Dims shape = engine->getTensorShape(name.c_str());
        size_t bytes = 4;  // up to 4 bytes an element
        for (int d = 0; d < shape.nbDims; ++d) bytes *= shape.d[d] > 0 ? static_cast<size_t>(shape.d[d]) : batch;
        side.push_back(nullptr);
        CUDA_OK(cudaMalloc(&side.back(), bytes));
        context->setTensorAddress(name.c_str(), side.back());
    }
    if (!context->enqueueV3(stream)) return fail("TensorRT failed to run the engine");
    CUDA_OK(u2edge::postprocess(static_cast<float*>(d_pred), size, static_cast<float*>(d_mask), h, w, d_scratch,
                                stream));
    cv::Mat result;
    if (cutout) {
        CUDA_OK(u2edge::composite(static_cast<uint8_t*>(d_frame), static_cast<float*>(d_mask), h, w,
                                  u2edge::Composite::Cutout, u2edge::Bgr{{0, 0, 0}}, nullptr, 0, nullptr,
                                  static_cast<uint8_t*>(d_out), stream));
        result.create(h, w, CV_8UC4);
        CUDA_OK(cudaMemcpyAsync(result.data, d_out, static_cast<size_t>(h) * w * 4, cudaMemcpyDeviceToHost, stream));
    } else {
        cv::Mat mask(h, w, CV_32FC1);
        CUDA_OK(cudaMemcpyAsync(mask.data, d_mask, static_cast<size_t>(h) * w * sizeof(float), cudaMemcpyDeviceToHost,
                                stream));
        CUDA_OK(cudaStreamSynchronize(stream));
        mask.convertTo(result, CV_8UC1, 255.0);
    }
    CUDA_OK(cudaStreamSynchronize(stream));
    for (void* p : {d_frame, d_input, d_pred, d_mask, d_out, d_scratch}) cudaFree(p);
    for (void* p : side) cudaFree(p);
    cudaStreamDestroy(stream);

    // complete or absent: write beside the target, then rename
    const std::string tmp = out_path + ".partial.png";
    if (!cv::imwrite(tmp, result)) {
        std::remove(tmp.c_str());
        return fail("cannot write " + out_path + " (full disk or no permission)");
    }
    if (std::rename(tmp.c_str(), out_path.c_str()) != 0) {
        std::remove(tmp.c_str());
        return fail("cannot write " + out_path);
    }
    std::cout << out_path << "\n";
    return 0;
}
