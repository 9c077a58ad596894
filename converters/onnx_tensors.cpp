#include "converters/onnx_tensors.h"

#include <google/protobuf/io/coded_stream.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <fstream>
#include <memory>

#include "converters/onnx_float16.h"
#include "runtime/error.h"
#include "runtime/util/file_io.h"

namespace spinel {
namespace onnx_import {
namespace {

using onnx::TensorProto;

std::vector<char> read_whole_file(const std::string& path) {
  // protobuf messages are limited to 2 GiB; bigger models need external data.
  return read_regular_file(path, "ONNX model", INT_MAX);
}

size_t elem_size(int32_t type) {
  switch (type) {
    case TensorProto::FLOAT: case TensorProto::INT32: case TensorProto::UINT32: return 4;
    case TensorProto::DOUBLE: case TensorProto::INT64: case TensorProto::UINT64: return 8;
    case TensorProto::INT8: case TensorProto::UINT8: case TensorProto::BOOL: return 1;
    case TensorProto::INT16: case TensorProto::UINT16: case TensorProto::FLOAT16: return 2;
    default: return 0;
  }
}

const char* type_name(int32_t type) {
  return TensorProto::DataType_IsValid(type)
             ? TensorProto::DataType_Name(static_cast<TensorProto::DataType>(type)).c_str()
             : "unknown";
}

// Largest tensor we accept, in bytes: far beyond any encoder weight, and small
// enough that element counts times element sizes cannot overflow.
constexpr uint64_t kMaxTensorBytes = uint64_t{1} << 40;

int64_t element_count(const TensorProto& t) {
  int64_t n = 1;
  for (int64_t d : t.dims()) {
    if (d < 0) fail("tensor '", t.name(), "' has a negative dimension ", d);
    if (d != 0 && n > static_cast<int64_t>(kMaxTensorBytes) / d)
      fail("tensor '", t.name(), "' has more than 2^40 elements");
    n *= d;
  }
  return n;
}

// Bytes of the tensor's data for elements of es bytes; refuses sizes over
// kMaxTensorBytes instead of letting the product wrap around.
uint64_t byte_count(const TensorProto& t, size_t es) {
  const uint64_t n = static_cast<uint64_t>(element_count(t));
  if (es != 0 && n > kMaxTensorBytes / es)
    fail("tensor '", t.name(), "' needs more than 2^40 bytes");
  return n * es;
}

// Strict decimal parse for the offset/length strings of external data.
uint64_t parse_u64(const std::string& s, const std::string& key, const std::string& tensor) {
  if (s.empty() || s.size() > 19 || s.find_first_not_of("0123456789") != std::string::npos)
    fail("tensor '", tensor, "': external data ", key, " '", s, "' is not a non-negative integer");
  return std::stoull(s);
}

std::string real_path(const std::string& p) {
  std::unique_ptr<char, decltype(&free)> r(realpath(p.c_str(), nullptr), &free);
  return r ? std::string(r.get()) : std::string();
}

// A tensor built from a Constant node's value_float / value_ints / ... attribute.
TensorProto tensor_from_attribute(const onnx::AttributeProto& a, const std::string& name) {
  TensorProto t;
  t.set_name(name);
  switch (a.type()) {
    case onnx::AttributeProto::FLOAT:
      t.set_data_type(TensorProto::FLOAT);
      t.add_float_data(a.f());
      break;
    case onnx::AttributeProto::INT:
      t.set_data_type(TensorProto::INT64);
      t.add_int64_data(a.i());
      break;
    case onnx::AttributeProto::FLOATS:
      t.set_data_type(TensorProto::FLOAT);
      t.add_dims(a.floats_size());
      for (float f : a.floats()) t.add_float_data(f);
      break;
    case onnx::AttributeProto::INTS:
      t.set_data_type(TensorProto::INT64);
      t.add_dims(a.ints_size());
      for (int64_t i : a.ints()) t.add_int64_data(i);
      break;
    default:
      fail("Constant '", name, "': attribute '", a.name(), "' is not supported");
  }
  return t;
}

template <typename T>
double load_le(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return static_cast<double>(v);
}

}  // namespace

onnx::ModelProto load_model_proto(const std::string& path, Float16Widening* widened) {
  const std::vector<char> bytes = read_whole_file(path);
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()),
                                            static_cast<int>(bytes.size()));
  in.SetTotalBytesLimit(INT_MAX);
  onnx::ModelProto model;
  if (!model.ParseFromCodedStream(&in) || !in.ConsumedEntireMessage())
    fail(path, ": not an ONNX model (protobuf parsing failed)");
  // Random bytes sometimes parse as a message of unknown fields; a real model has a graph.
  if (!model.has_graph() || model.graph().node_size() == 0)
    fail(path, ": not an ONNX model (no graph, or a graph without nodes)");
  try {
    const Float16Widening w = widen_float16(model, model_directory(path));
    if (widened) *widened = w;
  } catch (const Error& e) {
    fail(path, ": ", e.what());
  }
  return model;
}

std::string model_directory(const std::string& onnx_path) {
  const size_t slash = onnx_path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return onnx_path.substr(0, slash);
}

ExternalRef resolve_external_data(const TensorProto& t, const std::string& model_dir) {
  std::string location;
  bool has_length = false;
  ExternalRef ref;
  for (const auto& kv : t.external_data()) {
    if (kv.key() == "location") {
      location = kv.value();
    } else if (kv.key() == "offset") {
      ref.offset = parse_u64(kv.value(), "offset", t.name());
    } else if (kv.key() == "length") {
      ref.length = parse_u64(kv.value(), "length", t.name());
      has_length = true;
    }
  }
  const std::string where = "tensor '" + t.name() + "': external data '" + location + "'";
  if (location.empty()) fail("tensor '", t.name(), "': external data without a location");
  if (location[0] == '/')
    fail(where, " is an absolute path; only paths relative to the model directory ", model_dir,
         " are allowed");
  if (location.find('\0') != std::string::npos) fail(where, " contains a NUL byte");

  // Lexical normalisation: a ".." that climbs above the model directory is an escape.
  std::vector<std::string> parts;
  size_t pos = 0;
  while (pos <= location.size()) {
    size_t next = location.find('/', pos);
    if (next == std::string::npos) next = location.size();
    const std::string part = location.substr(pos, next - pos);
    if (part == "..") {
      if (parts.empty()) fail(where, " leaves the model directory ", model_dir, " (\"..\")");
      parts.pop_back();
    } else if (!part.empty() && part != ".") {
      parts.push_back(part);
    }
    pos = next + 1;
  }
  if (parts.empty()) fail(where, " does not name a file");
  std::string joined = model_dir;
  for (const std::string& p : parts) joined += "/" + p;

  // Symlinks (of the file or of a folder on the way) must not lead out either.
  const std::string real_dir = real_path(model_dir);
  const std::string real_file = real_path(joined);
  if (real_dir.empty()) fail(where, ": cannot resolve the model directory ", model_dir);
  if (real_file.empty()) fail(where, ": cannot open ", joined, ": ", std::strerror(errno));
  const std::string prefix = real_dir == "/" ? "/" : real_dir + "/";
  if (real_file.compare(0, prefix.size(), prefix) != 0)
    fail(where, " resolves to ", real_file, ", outside the model directory ", real_dir);

  struct stat st {};
  if (stat(real_file.c_str(), &st) != 0 || !S_ISREG(st.st_mode))
    fail(where, ": ", joined, " is not a regular file");
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (ref.offset > file_size)
    fail(where, ": offset ", ref.offset, " is past the end of ", joined, " (", file_size, " bytes)");
  if (!has_length) ref.length = file_size - ref.offset;
  if (ref.length > file_size - ref.offset)
    fail(where, ": offset ", ref.offset, " + length ", ref.length, " is past the end of ", joined,
         " (", file_size, " bytes)");
  const size_t es = elem_size(t.data_type());
  if (es != 0) {
    const uint64_t want = byte_count(t, es);
    // Without an explicit length the rest of the file is used; it only has to be big enough.
    if ((has_length && ref.length != want) || (!has_length && ref.length < want))
      fail(where, ": holds ", ref.length, " bytes but the tensor's shape needs ", want);
    ref.length = want;
  }
  ref.path = joined;
  return ref;
}

namespace {

// Elements the typed field of `t` that holds its data has (no raw_data).
int64_t typed_count(const TensorProto& t) {
  switch (t.data_type()) {
    case TensorProto::FLOAT: return t.float_data_size();
    case TensorProto::DOUBLE: return t.double_data_size();
    case TensorProto::INT64: return t.int64_data_size();
    case TensorProto::UINT32: case TensorProto::UINT64: return t.uint64_data_size();
    default: return t.int32_data_size();
  }
}

}  // namespace

ConstantTable::ConstantTable(const onnx::GraphProto& graph, const std::string& model_dir)
    : model_dir_(model_dir) {
  // Every constant's dims must match the bytes it carries before anything
  // (the matcher included) reads its shape.
  auto check_external = [&](const TensorProto& t) {
    if (t.data_location() == TensorProto::EXTERNAL) {
      resolve_external_data(t, model_dir_);
      return;
    }
    const size_t es = elem_size(t.data_type());
    if (es == 0) return;  // strings and exotic types: refused if ever read
    const uint64_t want = byte_count(t, es);
    if (t.has_raw_data()) {
      if (t.raw_data().size() != want)
        fail("tensor '", t.name(), "': raw_data holds ", t.raw_data().size(),
             " bytes, its shape needs ", want);
    } else if (typed_count(t) != static_cast<int64_t>(want / es)) {
      fail("tensor '", t.name(), "' holds ", typed_count(t), " values, its shape needs ", want / es);
    }
  };
  for (const TensorProto& t : graph.initializer()) {
    check_external(t);
    refs_[t.name()] = Ref{&t, -1};
  }
  for (int i = 0; i < graph.node_size(); ++i) {
    const onnx::NodeProto& n = graph.node(i);
    if (n.output_size() < 1) continue;
    const std::string& out = n.output(0);
    if (n.op_type() == "Constant" && (n.domain().empty() || n.domain() == "ai.onnx")) {
      if (n.attribute_size() != 1) fail("Constant node '", n.name(), "' must have one attribute");
      const onnx::AttributeProto& a = n.attribute(0);
      if (a.name() == "value") {
        check_external(a.t());
        refs_[out] = Ref{&a.t(), i};
      } else if (a.name() == "sparse_value") {
        fail("Constant node '", n.name(), "': sparse_value is not supported");
      } else {
        owned_.push_back(tensor_from_attribute(a, out));
        refs_[out] = Ref{&owned_.back(), i};
      }
    } else if (n.op_type() == "Identity" && n.input_size() == 1 && refs_.count(n.input(0))) {
      refs_[out] = Ref{refs_.at(n.input(0)).t, i};
    }
  }
}

const ConstantTable::Ref& ConstantTable::ref(const std::string& name) const {
  auto it = refs_.find(name);
  if (it == refs_.end()) fail("value '", name, "' is not a constant");
  return it->second;
}

int ConstantTable::producer_node(const std::string& name) const { return ref(name).node; }
const TensorProto& ConstantTable::proto(const std::string& name) const { return *ref(name).t; }
int32_t ConstantTable::elem_type(const std::string& name) const { return proto(name).data_type(); }

std::vector<int64_t> ConstantTable::dims(const std::string& name) const {
  const TensorProto& t = proto(name);
  return std::vector<int64_t>(t.dims().begin(), t.dims().end());
}

std::vector<uint8_t> ConstantTable::raw_bytes(const TensorProto& t, size_t es) const {
  const uint64_t want = byte_count(t, es);
  std::vector<uint8_t> bytes;
  if (t.data_location() == TensorProto::EXTERNAL) {
    const ExternalRef ext = resolve_external_data(t, model_dir_);
    const RegularFile in(ext.path, "external data file");
    if (ext.offset > in.size() || want > in.size() - ext.offset)
      fail("tensor '", t.name(), "': external data ", ext.path, " is shorter than its ", want,
           " bytes at offset ", ext.offset);
    bytes.resize(want);
    in.read_at(ext.offset, bytes.data(), bytes.size());
    return bytes;
  }
  if (t.raw_data().size() != want)
    fail("tensor '", t.name(), "': raw_data holds ", t.raw_data().size(), " bytes, its shape needs ",
         want);
  bytes.assign(t.raw_data().begin(), t.raw_data().end());
  return bytes;
}

ConstValue ConstantTable::value(const std::string& name) const {
  const TensorProto& t = proto(name);
  ConstValue v;
  v.elem_type = t.data_type();
  v.dims.assign(t.dims().begin(), t.dims().end());
  const int64_t n = element_count(t);
  const size_t es = elem_size(t.data_type());
  if (es == 0 || t.data_type() == TensorProto::FLOAT16)
    fail("tensor '", name, "' has unsupported element type ", type_name(t.data_type()));
  const bool raw = t.data_location() == TensorProto::EXTERNAL || t.has_raw_data();
  if (raw) {
    const std::vector<uint8_t> b = raw_bytes(t, es);  // size checked against n
    v.values.reserve(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      const uint8_t* p = b.data() + i * es;
      switch (t.data_type()) {
        case TensorProto::FLOAT: v.values.push_back(load_le<float>(p)); break;
        case TensorProto::DOUBLE: v.values.push_back(load_le<double>(p)); break;
        case TensorProto::INT64: v.values.push_back(load_le<int64_t>(p)); break;
        case TensorProto::UINT64: v.values.push_back(load_le<uint64_t>(p)); break;
        case TensorProto::INT32: v.values.push_back(load_le<int32_t>(p)); break;
        case TensorProto::UINT32: v.values.push_back(load_le<uint32_t>(p)); break;
        case TensorProto::INT16: v.values.push_back(load_le<int16_t>(p)); break;
        case TensorProto::UINT16: v.values.push_back(load_le<uint16_t>(p)); break;
        case TensorProto::INT8: v.values.push_back(load_le<int8_t>(p)); break;
        default: v.values.push_back(load_le<uint8_t>(p)); break;  // UINT8, BOOL
      }
    }
    return v;
  }
  // Typed fields: which one holds the data depends on the element type.
  switch (t.data_type()) {
    case TensorProto::FLOAT: v.values.assign(t.float_data().begin(), t.float_data().end()); break;
    case TensorProto::DOUBLE: v.values.assign(t.double_data().begin(), t.double_data().end()); break;
    case TensorProto::INT64: v.values.assign(t.int64_data().begin(), t.int64_data().end()); break;
    case TensorProto::UINT32: case TensorProto::UINT64:
      v.values.assign(t.uint64_data().begin(), t.uint64_data().end());
      break;
    default: v.values.assign(t.int32_data().begin(), t.int32_data().end()); break;
  }
  if (static_cast<int64_t>(v.values.size()) != n)
    fail("tensor '", name, "' holds ", v.values.size(), " values, its shape needs ", n);
  return v;
}

std::vector<float> ConstantTable::floats(const std::string& name) const {
  const TensorProto& t = proto(name);
  if (t.data_type() == TensorProto::FLOAT) {
    const bool raw = t.data_location() == TensorProto::EXTERNAL || t.has_raw_data();
    if (raw) {
      const std::vector<uint8_t> b = raw_bytes(t, 4);
      std::vector<float> out(b.size() / 4);
      if (!out.empty()) std::memcpy(out.data(), b.data(), b.size());
      return out;
    }
    const int64_t n = element_count(t);
    if (t.float_data_size() != n)
      fail("tensor '", name, "' holds ", t.float_data_size(), " floats, its shape needs ", n);
    return std::vector<float>(t.float_data().begin(), t.float_data().end());
  }
  if (t.data_type() == TensorProto::DOUBLE) {
    const ConstValue v = value(name);
    return std::vector<float>(v.values.begin(), v.values.end());
  }
  fail("tensor '", name, "' is ", type_name(t.data_type()), ", expected FLOAT weights");
}

}  // namespace onnx_import
}  // namespace spinel
