// Loading an ONNX file and reading the tensors it holds: initializers,
// Constant-node values and external data files next to the model.
#pragma once

#include <onnx/onnx_pb.h>

#include <cstdint>
#include <deque>
#include <string>
#include <unordered_map>
#include <vector>

namespace spinel {
namespace onnx_import {

// Parses `path` as an onnx::ModelProto; throws spinel::Error naming the file
// when it cannot be read, is not protobuf, or has no graph. A float16/bfloat16
// model is widened to float32 on the way (onnx_float16.h: weights, Constants,
// Cast targets; the Casts that become no-ops are removed), so everything after
// this sees the f32 graph; `widened` (optional) says what was changed.
struct Float16Widening;
onnx::ModelProto load_model_proto(const std::string& path, Float16Widening* widened = nullptr);

// The directory external data locations are relative to ("." for a bare name).
std::string model_directory(const std::string& onnx_path);

// Where one tensor's bytes live in an external data file, already checked:
// the location is relative, stays inside the model directory (also after
// resolving symlinks), and [offset, offset + length) lies inside the file.
struct ExternalRef {
  std::string path;  // resolved path of the data file
  uint64_t offset = 0;
  uint64_t length = 0;
};
ExternalRef resolve_external_data(const onnx::TensorProto& t, const std::string& model_dir);

// A constant's contents widened to one numeric type.
struct ConstValue {
  int32_t elem_type = 0;  // onnx::TensorProto_DataType
  std::vector<int64_t> dims;
  std::vector<double> values;
  int64_t numel() const { return static_cast<int64_t>(values.size()); }
};

// Every value of the graph that is known at conversion time: initializers,
// outputs of Constant nodes, and Identity nodes applied to either (torch's
// constant folding emits those when two weights are identical).
class ConstantTable {
 public:
  // Checks every external-data reference up front, so a bad path is reported
  // even when the tensor would never be read.
  ConstantTable(const onnx::GraphProto& graph, const std::string& model_dir);

  bool contains(const std::string& name) const { return refs_.count(name) != 0; }
  // Node index of the Constant/Identity node producing `name`, or -1 for an initializer.
  int producer_node(const std::string& name) const;
  const onnx::TensorProto& proto(const std::string& name) const;
  std::vector<int64_t> dims(const std::string& name) const;
  int32_t elem_type(const std::string& name) const;

  // Numeric contents (any int/float type). Meant for small constants.
  ConstValue value(const std::string& name) const;
  // The directory the model file is in (a family reads config.json beside it).
  const std::string& model_dir() const { return model_dir_; }
  // FLOAT/DOUBLE contents as float32, for weights.
  std::vector<float> floats(const std::string& name) const;

 private:
  struct Ref {
    const onnx::TensorProto* t = nullptr;
    int node = -1;
  };
  std::vector<uint8_t> raw_bytes(const onnx::TensorProto& t, size_t elem_size) const;
  const Ref& ref(const std::string& name) const;

  std::string model_dir_;
  std::unordered_map<std::string, Ref> refs_;
  std::deque<onnx::TensorProto> owned_;  // tensors built from Constant attributes
};

}  // namespace onnx_import
}  // namespace spinel
