#include "runtime/spnl.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include <cerrno>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>

#include "runtime/bytes.h"
#include "runtime/error.h"
#include "runtime/util/file_io.h"

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
  // XXH3-64 of this header (with this field 0) and of every byte from the
  // end of the header to the data section: config, tokenizer, graph, tensor
  // table and padding. Each weight blob has its own in the tensor table.
  uint64_t meta_checksum;
  uint8_t reserved[128 - 32 - 16 * kNumSections];
};
static_assert(sizeof(Header) == 128, "header layout");

uint64_t meta_checksum(const Header& h, const uint8_t* meta, size_t meta_bytes) {
  Header zeroed = h;
  zeroed.meta_checksum = 0;
  XXH3_state_t* st = XXH3_createState();
  if (!st) throw std::bad_alloc();
  XXH3_64bits_reset(st);
  XXH3_64bits_update(st, &zeroed, sizeof zeroed);
  XXH3_64bits_update(st, meta, meta_bytes);
  const uint64_t d = XXH3_64bits_digest(st);
  XXH3_freeState(st);
  return d;
}

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
  validate_config(c);
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
    w.put<uint64_t>(t.checksum);
  }
}

std::vector<TensorInfo> read_tensors(ByteReader& r, uint64_t data_size) {
  const uint32_t n = r.get<uint32_t>("tensor count");
  if (n > r.remaining() / 40) fail("tensor table: count ", n, " exceeds the section");
  std::vector<TensorInfo> ts(n);
  uint64_t end = 0;  // blobs lie in table order, without overlap
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
    t.checksum = r.get<uint64_t>("tensor checksum");
    if (t.nbytes != numel * dtype_size(t.dtype))
      fail("tensor '", t.name, "': ", t.nbytes, " bytes do not match its shape and dtype");
    if (t.offset % kSpnlAlign != 0)
      fail("tensor '", t.name, "': offset ", t.offset, " is not ", kSpnlAlign, "-byte aligned");
    if (t.offset > data_size || t.nbytes > data_size - t.offset)
      fail("tensor '", t.name, "': bytes [", t.offset, ", +", t.nbytes,
           ") lie outside the data section of ", data_size, " bytes");
    if (t.offset < end)
      fail("tensor '", t.name, "': offset ", t.offset, " overlaps the previous tensor, which ends at ",
           end);
    end = t.offset + t.nbytes;
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

namespace {

// Refuses to replace anything but a regular file (a device, a FIFO, a
// directory or a symlink named by -o is an error, not a target).
void check_destination(const std::string& path) {
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return;
    fail("cannot write '", path, "': ", std::strerror(errno));
  }
  if (S_ISLNK(st.st_mode)) fail("'", path, "' is a symbolic link; refusing to replace it");
  if (!S_ISREG(st.st_mode)) fail("'", path, "' exists and is not a regular file; refusing to replace it");
}

// A new file beside `path` with an unpredictable name, created exclusively
// (O_EXCL: never an existing file or a planted symlink), permissions as a
// plain create would give.
int create_temp_beside(const std::string& path, std::string& tmp) {
  const size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "" : path.substr(0, slash + 1);
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  std::string templ = dir + "." + base + ".tmp-XXXXXX";
  const int fd = mkostemp(templ.data(), O_CLOEXEC);
  if (fd < 0) fail("cannot create a temporary file beside '", path, "': ", std::strerror(errno));
  const mode_t mask = umask(0);
  umask(mask);
  fchmod(fd, 0666 & ~mask);
  tmp = templ;
  return fd;
}

void write_all(int fd, const void* data, size_t n, const std::string& tmp) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) fail("error while writing '", tmp, "': ", std::strerror(w < 0 ? errno : ENOSPC));
    p += w;
    n -= static_cast<size_t>(w);
  }
}

}  // namespace

void SpnlWriter::write(const std::string& path) const {
  validate_graph(graph, tensors_, config);
  if (tokenizer.vocab_size() == 0) fail("no tokenizer was given to the .spnl writer");
  if (static_cast<int64_t>(tokenizer.vocab_size()) > config.vocab_size)
    fail("the tokenizer has ", tokenizer.vocab_size(), " tokens but the model's embedding table has ",
         config.vocab_size, " rows");
  check_destination(path);

  // Lay the blobs out back to back, each 64-byte aligned, with their checksums.
  std::vector<TensorInfo> tensors = tensors_;
  uint64_t end = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    TensorInfo& t = tensors[i];
    t.offset = align_up(end);
    t.checksum = XXH3_64bits(blobs_[i].data(), blobs_[i].size());
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
  std::vector<uint8_t> meta;  // everything between the header and the data section
  for (int s = 0; s < kData; ++s) {
    h.offset[s] = sizeof(Header) + meta.size();
    h.size[s] = sec[s].bytes().size();
    meta.insert(meta.end(), sec[s].bytes().begin(), sec[s].bytes().end());
  }
  h.offset[kData] = align_up(sizeof(Header) + meta.size());
  meta.resize(h.offset[kData] - sizeof(Header), 0);
  h.size[kData] = end;
  h.file_size = h.offset[kData] + h.size[kData];
  h.meta_checksum = meta_checksum(h, meta.data(), meta.size());

  std::string tmp;
  int fd = create_temp_beside(path, tmp);
  try {
    static const uint8_t zeros[kSpnlAlign] = {};
    write_all(fd, &h, sizeof h, tmp);
    write_all(fd, meta.data(), meta.size(), tmp);
    uint64_t at = 0;
    for (size_t i = 0; i < tensors.size(); ++i) {
      write_all(fd, zeros, tensors[i].offset - at, tmp);
      write_all(fd, blobs_[i].data(), blobs_[i].size(), tmp);
      at = tensors[i].offset + tensors[i].nbytes;
    }
    const int rc = ::close(fd);
    fd = -1;  // closed even when close() reports an error
    if (rc != 0) fail("error while writing '", tmp, "': ", std::strerror(errno));
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    ::unlink(tmp.c_str());
    fail("cannot move the new model to '", path, "': ", why);
  }
}

Model::~Model() {
  if (mapped_) munmap(const_cast<uint8_t*>(base_), size_);
  std::free(owned_);
}

const void* Model::tensor_data(int32_t idx) const {
  if (idx < 0 || static_cast<size_t>(idx) >= tensors_.size())
    fail("tensor index ", idx, " out of range (", tensors_.size(), " tensors)");
  return base_ + data_offset_ + tensors_[idx].offset;
}

void Model::verify_weights() const {
  for (const TensorInfo& t : tensors_) {
    const uint64_t got = XXH3_64bits(base_ + data_offset_ + t.offset, t.nbytes);
    if (got != t.checksum)
      fail("tensor '", t.name, "': checksum mismatch, its bytes are damaged");
  }
}

std::shared_ptr<const Model> Model::load(const std::string& path, const LoadOptions& opts) {
  std::shared_ptr<Model> m(new Model());
  m->path_ = path;
  {
    const RegularFile f(path, "model");
    m->size_ = f.size();
    if (m->size_ < sizeof(Header))
      fail("model '", path, "' is not a .spnl file: ", m->size_, " bytes is shorter than the header");
    void* p = mmap(nullptr, m->size_, PROT_READ, MAP_PRIVATE, f.fd(), 0);
    if (p == MAP_FAILED) fail("cannot map model '", path, "': ", std::strerror(errno));
    m->base_ = static_cast<const uint8_t*>(p);
    m->mapped_ = true;
  }
  m->parse(opts);
  return m;
}

std::shared_ptr<const Model> Model::from_memory(const void* data, size_t size, const std::string& name,
                                                const LoadOptions& opts) {
  std::shared_ptr<Model> m(new Model());
  m->path_ = name;
  if (!data && size) fail("model '", name, "': null buffer");
  if (size < sizeof(Header))
    fail("model '", name, "' is not a .spnl file: ", size, " bytes is shorter than the header");
  // Weights are read in place: keep them 64-byte aligned, as in a mapping.
  m->owned_ = std::aligned_alloc(kSpnlAlign, align_up(size));
  if (!m->owned_) throw std::bad_alloc();
  std::memcpy(m->owned_, data, size);
  m->base_ = static_cast<const uint8_t*>(m->owned_);
  m->size_ = size;
  m->parse(opts);
  return m;
}

void Model::parse(const LoadOptions& opts) {
  try {
    Header h;
    std::memcpy(&h, base_, sizeof h);
    if (std::memcmp(h.magic, kSpnlMagic, sizeof h.magic) != 0) fail("not a .spnl file (bad magic)");
    if (h.endian != kSpnlEndianTag) fail("written on a machine of the other byte order");
    if (h.version == 1)
      fail("format version 1 (written by spinel 0.1 without checksums) is no longer read; convert "
           "the ONNX model again with this spinel");
    if (h.version != kSpnlVersion)
      fail("format version ", h.version, " is not supported (this build reads version ",
           kSpnlVersion, ")");
    if (h.file_size != size_)
      fail("truncated or extended: the header says ", h.file_size, " bytes, the file has ", size_);
    for (int s = 0; s < kNumSections; ++s) {
      if (h.offset[s] < sizeof(Header) || h.offset[s] > size_ || h.size[s] > size_ - h.offset[s])
        fail("section '", kSectionNames[s], "' [", h.offset[s], ", +", h.size[s],
             ") lies outside the file of ", size_, " bytes");
    }
    if (h.offset[kData] % kSpnlAlign != 0) fail("data section is not ", kSpnlAlign, "-byte aligned");
    for (int s = 0; s < kData; ++s)
      if (h.offset[s] + h.size[s] > h.offset[kData])
        fail("section '", kSectionNames[s], "' reaches into the data section");
    if (meta_checksum(h, base_ + sizeof(Header), h.offset[kData] - sizeof(Header)) != h.meta_checksum)
      fail("checksum mismatch in the header or metadata: the file is damaged");
    version_ = h.version;
    data_offset_ = h.offset[kData];
    data_size_ = h.size[kData];

    auto reader = [&](Section s) {
      return ByteReader(base_ + h.offset[s], h.size[s], kSectionNames[s]);
    };
    ByteReader rc = reader(kConfig);
    config_ = read_config(rc);
    check_fully_read(rc);
    ByteReader rt = reader(kTokenizer);
    tokenizer_ = WordPieceTokenizer::deserialize(rt);
    check_fully_read(rt);
    ByteReader rg = reader(kGraph);
    graph_ = read_graph(rg);
    check_fully_read(rg);
    ByteReader rw = reader(kTensors);
    tensors_ = read_tensors(rw, data_size_);
    check_fully_read(rw);
    validate_graph(graph_, tensors_, config_);
    if (static_cast<int64_t>(tokenizer_.vocab_size()) > config_.vocab_size)
      fail("tokenizer has ", tokenizer_.vocab_size(), " tokens, more than the ", config_.vocab_size,
           " rows of the embedding table");
    if (opts.verify_weights) verify_weights();
  } catch (const Error& e) {
    fail("invalid model '", path_, "': ", e.what());
  }
}

}  // namespace spinel
