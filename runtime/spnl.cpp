#include "runtime/spnl.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>

#include "runtime/bytes.h"
#include "runtime/error.h"

namespace spinel {
namespace {

enum Section { kConfig = 0, kTokenizer, kGraph, kTensors, kData, kNumSections };
const char* const kSectionNames[kNumSections] = {"config", "tokenizer", "graph", "tensor table",
                                                 "data"};

// Fixed-size header at offset 0.
struct Header {
  char magic[8];
  uint32_t version;
  uint32_t endian;
  uint64_t file_size;
  uint64_t offset[kNumSections];
  uint64_t size[kNumSections];
  uint8_t reserved[128 - 24 - 16 * kNumSections];
};
static_assert(sizeof(Header) == 128, "header layout");

uint64_t align_up(uint64_t v) { return (v + kSpnlAlign - 1) / kSpnlAlign * kSpnlAlign; }

void write_config(ByteWriter& w, const ModelConfig& c) {
  w.put_str(c.architecture);
  w.put<int64_t>(c.vocab_size);
  w.put<int64_t>(c.hidden_size);
  w.put<int64_t>(c.num_layers);
  w.put<int64_t>(c.num_heads);
  w.put<int64_t>(c.intermediate_size);
  w.put<int64_t>(c.max_position);
  w.put<int64_t>(c.type_vocab_size);
  w.put<float>(c.layer_norm_eps);
  w.put<uint32_t>(static_cast<uint32_t>(c.hidden_act));
  w.put_str(c.source);
}

ModelConfig read_config(ByteReader& r) {
  ModelConfig c;
  c.architecture = r.get_str("architecture");
  c.vocab_size = r.get<int64_t>("vocab_size");
  c.hidden_size = r.get<int64_t>("hidden_size");
  c.num_layers = r.get<int64_t>("num_layers");
  c.num_heads = r.get<int64_t>("num_heads");
  c.intermediate_size = r.get<int64_t>("intermediate_size");
  c.max_position = r.get<int64_t>("max_position");
  c.type_vocab_size = r.get<int64_t>("type_vocab_size");
  c.layer_norm_eps = r.get<float>("layer_norm_eps");
  const uint32_t act = r.get<uint32_t>("hidden_act");
  if (act > static_cast<uint32_t>(Activation::GeluTanh)) fail("config: unknown activation ", act);
  c.hidden_act = static_cast<Activation>(act);
  c.source = r.get_str("source");
  if (c.architecture != "bert") fail("config: unsupported architecture '", c.architecture, "'");
  const int64_t limit = int64_t{1} << 31;
  for (int64_t v : {c.vocab_size, c.hidden_size, c.num_layers, c.num_heads, c.intermediate_size,
                    c.max_position, c.type_vocab_size}) {
    if (v < 0 || v > limit) fail("config: a size field holds ", v, ", outside [0, 2^31]");
  }
  return c;
}

void write_graph(ByteWriter& w, const Graph& g) {
  w.put<uint32_t>(static_cast<uint32_t>(g.values.size()));
  for (const Value& v : g.values) {
    w.put_str(v.name);
    w.put<int64_t>(v.width);
  }
  w.put<uint32_t>(static_cast<uint32_t>(g.ops.size()));
  for (const Op& op : g.ops) {
    w.put<uint32_t>(static_cast<uint32_t>(op.kind));
    w.put_str(op.name);
    w.put<int32_t>(op.in0);
    w.put<int32_t>(op.in1);
    w.put<int32_t>(op.out);
    for (int32_t id : op.w) w.put<int32_t>(id);
    w.put<uint32_t>(static_cast<uint32_t>(op.act));
    w.put<uint32_t>(static_cast<uint32_t>(op.precision));
    w.put<float>(op.act_scale);
    w.put<int32_t>(op.act_zp);
    w.put<int32_t>(op.num_heads);
    w.put<float>(op.eps);
    w.put<float>(op.scale);
  }
  w.put<int32_t>(g.output);
}

Graph read_graph(ByteReader& r) {
  Graph g;
  const uint32_t nv = r.get<uint32_t>("value count");
  // Each value takes at least 12 bytes; reject counts the section cannot hold.
  if (nv > r.remaining() / 12) fail("graph: value count ", nv, " exceeds the section");
  g.values.resize(nv);
  for (Value& v : g.values) {
    v.name = r.get_str("value name");
    v.width = r.get<int64_t>("value width");
    if (v.width <= 0 || v.width > (int64_t{1} << 24))
      fail("graph: value '", v.name, "' has width ", v.width);
  }
  const uint32_t nops = r.get<uint32_t>("op count");
  if (nops > r.remaining() / 40) fail("graph: op count ", nops, " exceeds the section");
  g.ops.resize(nops);
  for (Op& op : g.ops) {
    const uint32_t kind = r.get<uint32_t>("op kind");
    if (kind < 1 || kind > static_cast<uint32_t>(OpKind::LayerNorm))
      fail("graph: unknown op kind ", kind);
    op.kind = static_cast<OpKind>(kind);
    op.name = r.get_str("op name");
    op.in0 = r.get<int32_t>("op in0");
    op.in1 = r.get<int32_t>("op in1");
    op.out = r.get<int32_t>("op out");
    for (int32_t& id : op.w) id = r.get<int32_t>("op weight");
    const uint32_t act = r.get<uint32_t>("op activation");
    if (act > static_cast<uint32_t>(Activation::GeluTanh)) fail("graph: unknown activation ", act);
    op.act = static_cast<Activation>(act);
    const uint32_t prec = r.get<uint32_t>("op precision");
    if (prec > static_cast<uint32_t>(Precision::S8Sparse)) fail("graph: unknown precision ", prec);
    op.precision = static_cast<Precision>(prec);
    op.act_scale = r.get<float>("op act_scale");
    op.act_zp = r.get<int32_t>("op act_zp");
    op.num_heads = r.get<int32_t>("op num_heads");
    op.eps = r.get<float>("op eps");
    op.scale = r.get<float>("op scale");
  }
  g.output = r.get<int32_t>("graph output");
  return g;
}

void write_tensors(ByteWriter& w, const std::vector<TensorInfo>& ts) {
  w.put<uint32_t>(static_cast<uint32_t>(ts.size()));
  for (const TensorInfo& t : ts) {
    w.put_str(t.name);
    w.put<uint32_t>(static_cast<uint32_t>(t.dtype));
    w.put_vec(t.shape);
    w.put<uint64_t>(t.offset);
    w.put<uint64_t>(t.nbytes);
  }
}

std::vector<TensorInfo> read_tensors(ByteReader& r, uint64_t data_size) {
  const uint32_t n = r.get<uint32_t>("tensor count");
  if (n > r.remaining() / 32) fail("tensor table: count ", n, " exceeds the section");
  std::vector<TensorInfo> ts(n);
  for (TensorInfo& t : ts) {
    t.name = r.get_str("tensor name");
    const uint32_t dt = r.get<uint32_t>("tensor dtype");
    if (dt < 1 || dt > static_cast<uint32_t>(DType::I64))
      fail("tensor '", t.name, "': unknown dtype code ", dt);
    t.dtype = static_cast<DType>(dt);
    t.shape = r.get_vec<int64_t>("tensor shape");
    if (t.shape.size() > 8) fail("tensor '", t.name, "': ", t.shape.size(), " dimensions");
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0 || static_cast<uint64_t>(d) > data_size)
        fail("tensor '", t.name, "': dimension ", d, " is out of range");
      if (d != 0 && numel > data_size / static_cast<uint64_t>(d))
        fail("tensor '", t.name, "': shape is larger than the data section");
      numel *= static_cast<uint64_t>(d);
    }
    t.offset = r.get<uint64_t>("tensor offset");
    t.nbytes = r.get<uint64_t>("tensor nbytes");
    if (t.nbytes != numel * dtype_size(t.dtype))
      fail("tensor '", t.name, "': ", t.nbytes, " bytes do not match its shape and dtype");
    if (t.offset % kSpnlAlign != 0)
      fail("tensor '", t.name, "': offset ", t.offset, " is not ", kSpnlAlign, "-byte aligned");
    if (t.offset > data_size || t.nbytes > data_size - t.offset)
      fail("tensor '", t.name, "': bytes [", t.offset, ", ", t.offset + t.nbytes,
           ") lie outside the data section of ", data_size, " bytes");
  }
  return ts;
}

void check_fully_read(const ByteReader& r) {
  if (r.remaining() != 0) fail(r.what(), ": ", r.remaining(), " unexpected trailing bytes");
}

}  // namespace

int32_t SpnlWriter::add_tensor(const std::string& name, DType dtype, std::vector<int64_t> shape,
                               const void* data, size_t nbytes) {
  TensorInfo t;
  t.name = name;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.nbytes = nbytes;
  if (static_cast<uint64_t>(t.numel()) * dtype_size(dtype) != nbytes)
    fail("tensor '", name, "': ", nbytes, " bytes do not match its shape");
  tensors_.push_back(t);
  const auto* p = static_cast<const uint8_t*>(data);
  blobs_.emplace_back(p, p + nbytes);
  return static_cast<int32_t>(tensors_.size() - 1);
}

void SpnlWriter::set_tensor(int32_t idx, DType dtype, std::vector<int64_t> shape, const void* data,
                            size_t nbytes) {
  TensorInfo& t = tensors_.at(static_cast<size_t>(idx));
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.nbytes = nbytes;
  if (static_cast<uint64_t>(t.numel()) * dtype_size(dtype) != nbytes)
    fail("tensor '", t.name, "': ", nbytes, " bytes do not match its shape");
  const auto* p = static_cast<const uint8_t*>(data);
  blobs_[static_cast<size_t>(idx)].assign(p, p + nbytes);
}

void SpnlWriter::write(const std::string& path) const {
  validate_graph(graph, tensors_, config);
  if (tokenizer.vocab_size() == 0) fail("no tokenizer was given to the .spnl writer");
  if (static_cast<int64_t>(tokenizer.vocab_size()) > config.vocab_size)
    fail("the tokenizer has ", tokenizer.vocab_size(), " tokens but the model's embedding table has ",
         config.vocab_size, " rows");

  // Lay the blobs out back to back, each 64-byte aligned.
  std::vector<TensorInfo> tensors = tensors_;
  uint64_t end = 0;
  for (TensorInfo& t : tensors) {
    t.offset = align_up(end);
    end = t.offset + t.nbytes;
  }

  ByteWriter sec[kData];
  write_config(sec[kConfig], config);
  tokenizer.serialize(sec[kTokenizer]);
  write_graph(sec[kGraph], graph);
  write_tensors(sec[kTensors], tensors);

  Header h{};
  std::memcpy(h.magic, kSpnlMagic, sizeof h.magic);
  h.version = kSpnlVersion;
  h.endian = kSpnlEndianTag;
  uint64_t pos = sizeof(Header);
  for (int s = 0; s < kData; ++s) {
    h.offset[s] = pos;
    h.size[s] = sec[s].bytes().size();
    pos += h.size[s];
  }
  h.offset[kData] = align_up(pos);
  h.size[kData] = end;
  h.file_size = h.offset[kData] + h.size[kData];

  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) fail("cannot write '", tmp, "': ", std::strerror(errno));
    const std::vector<char> zeros(kSpnlAlign, 0);
    f.write(reinterpret_cast<const char*>(&h), sizeof h);
    for (int s = 0; s < kData; ++s)
      f.write(reinterpret_cast<const char*>(sec[s].bytes().data()), sec[s].bytes().size());
    f.write(zeros.data(), static_cast<std::streamsize>(h.offset[kData] - pos));
    uint64_t at = 0;
    for (size_t i = 0; i < tensors.size(); ++i) {
      f.write(zeros.data(), static_cast<std::streamsize>(tensors[i].offset - at));
      f.write(reinterpret_cast<const char*>(blobs_[i].data()), blobs_[i].size());
      at = tensors[i].offset + tensors[i].nbytes;
    }
    f.flush();
    if (!f) {
      std::remove(tmp.c_str());
      fail("error while writing '", tmp, "' (disk full?)");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    std::remove(tmp.c_str());
    fail("cannot move the new model to '", path, "': ", why);
  }
}

Model::~Model() {
  if (base_) munmap(const_cast<uint8_t*>(base_), size_);
}

const void* Model::tensor_data(int32_t idx) const {
  if (idx < 0 || static_cast<size_t>(idx) >= tensors_.size())
    fail("tensor index ", idx, " out of range (", tensors_.size(), " tensors)");
  return base_ + data_offset_ + tensors_[idx].offset;
}

std::shared_ptr<const Model> Model::load(const std::string& path) {
  std::shared_ptr<Model> m(new Model());
  m->path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot open model '", path, "': ", std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("model '", path, "' is not a regular file");
  }
  m->size_ = static_cast<uint64_t>(st.st_size);
  if (m->size_ < sizeof(Header)) {
    ::close(fd);
    fail("model '", path, "' is not a .spnl file: ", m->size_, " bytes is shorter than the header");
  }
  void* p = mmap(nullptr, m->size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) fail("cannot map model '", path, "': ", std::strerror(errno));
  m->base_ = static_cast<const uint8_t*>(p);

  try {
    Header h;
    std::memcpy(&h, m->base_, sizeof h);
    if (std::memcmp(h.magic, kSpnlMagic, sizeof h.magic) != 0) fail("not a .spnl file (bad magic)");
    if (h.endian != kSpnlEndianTag) fail("written on a machine of the other byte order");
    if (h.version != kSpnlVersion)
      fail("format version ", h.version, " is not supported (this build reads version ",
           kSpnlVersion, ")");
    if (h.file_size != m->size_)
      fail("truncated or extended: the header says ", h.file_size, " bytes, the file has ",
           m->size_);
    for (int s = 0; s < kNumSections; ++s) {
      if (h.offset[s] < sizeof(Header) || h.offset[s] > m->size_ || h.size[s] > m->size_ - h.offset[s])
        fail("section '", kSectionNames[s], "' [", h.offset[s], ", +", h.size[s],
             ") lies outside the file of ", m->size_, " bytes");
    }
    if (h.offset[kData] % kSpnlAlign != 0) fail("data section is not ", kSpnlAlign, "-byte aligned");
    m->version_ = h.version;
    m->data_offset_ = h.offset[kData];
    m->data_size_ = h.size[kData];

    auto reader = [&](Section s) {
      return ByteReader(m->base_ + h.offset[s], h.size[s], kSectionNames[s]);
    };
    ByteReader rc = reader(kConfig);
    m->config_ = read_config(rc);
    check_fully_read(rc);
    ByteReader rt = reader(kTokenizer);
    m->tokenizer_ = WordPieceTokenizer::deserialize(rt);
    check_fully_read(rt);
    ByteReader rg = reader(kGraph);
    m->graph_ = read_graph(rg);
    check_fully_read(rg);
    ByteReader rw = reader(kTensors);
    m->tensors_ = read_tensors(rw, m->data_size_);
    check_fully_read(rw);
    validate_graph(m->graph_, m->tensors_, m->config_);
    if (static_cast<int64_t>(m->tokenizer_.vocab_size()) > m->config_.vocab_size)
      fail("tokenizer has ", m->tokenizer_.vocab_size(), " tokens, more than the ",
           m->config_.vocab_size, " rows of the embedding table");
  } catch (const Error& e) {
    fail("invalid model '", path, "': ", e.what());
  }
  return m;
}

}  // namespace spinel
