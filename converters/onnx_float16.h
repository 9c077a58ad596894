// float16 / bfloat16 ONNX files (a torch `model.half()` export, or an f32
// export passed through ONNX Runtime's or onnxconverter-common's float16
// converter) widened to the float32 graph the recognisers know.
#pragma once

#include <onnx/onnx_pb.h>

#include <cstdint>
#include <string>

namespace spinel {
namespace onnx_import {

// IEEE half / bfloat16 bits to float32; exact (every such value is a float).
float half_to_float(uint16_t h);
float bfloat16_to_float(uint16_t b);

struct Float16Widening {
  int64_t tensors = 0;       // FLOAT16/BFLOAT16 initializers and Constant values made FLOAT
  int64_t casts_retargeted = 0;  // Cast(to=FLOAT16/BFLOAT16) now Cast(to=FLOAT)
  int64_t casts_removed = 0;     // Casts that became float -> float and were dropped
  bool any() const { return tensors + casts_retargeted + casts_removed > 0; }
};

// Rewrites `model` in place when it holds any FLOAT16/BFLOAT16 tensor, Cast
// target or graph input/output type; leaves every other model untouched:
//  - initializers and Constant values of those types become FLOAT (external
//    data is read, checked as ConstantTable does, and stored inline);
//  - Cast(to=FLOAT16|BFLOAT16) becomes Cast(to=FLOAT), and graph inputs,
//    outputs and value_info of those types become FLOAT;
//  - a Cast(to=FLOAT) whose input is known to be FLOAT (a small forward type
//    propagation over the ops of encoder graphs; unknown types keep the Cast)
//    is removed, its consumers reading its input; when its output is a graph
//    output the producer's value is renamed to it instead.
// The result computes the fp16 model's weights and constants in float32.
// Throws spinel::Error naming the tensor on malformed data.
Float16Widening widen_float16(onnx::ModelProto& model, const std::string& model_dir);

}  // namespace onnx_import
}  // namespace spinel
