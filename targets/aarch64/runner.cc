// Runs a Relax VM executable exported as a shared library, for targets whose code cannot run on
// the build machine (aarch64 under qemu-user). Built by targets/toolchain.py against the TVM
// runtime of the target's apache-tvm wheel.
//
//   runner LIB.so OUT_DIR IN_0.npy [IN_1.npy ...] [--repeat N]
//
// Loads LIB.so, creates the VM (vm_load_executable, vm_initialization on CPU with the pooled
// allocator), calls "main" with the inputs in order and writes each output to OUT_DIR/out_<i>.npy.
// With --repeat N, "main" runs N more times and the per-run wall times (ms) are printed as one
// JSON line on stdout. Errors go to stderr with exit status 1.
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace ffi = tvm::ffi;

namespace {

struct CPUAlloc {
  void AllocData(DLTensor* t) {
    size_t n = ffi::GetDataSize(*t);
    t->data = std::malloc(n ? n : 1);
    if (t->data == nullptr) throw std::runtime_error("out of memory");
  }
  void FreeData(DLTensor* t) { std::free(t->data); }
};

struct DType {
  const char* descr;
  DLDataType dl;
};

// .npy descriptors this runner reads and writes (little-endian host).
const DType kTypes[] = {
    {"|i1", {kDLInt, 8, 1}},    {"|u1", {kDLUInt, 8, 1}},  {"<i2", {kDLInt, 16, 1}},
    {"<u2", {kDLUInt, 16, 1}},  {"<i4", {kDLInt, 32, 1}},  {"<u4", {kDLUInt, 32, 1}},
    {"<i8", {kDLInt, 64, 1}},   {"<u8", {kDLUInt, 64, 1}}, {"<f4", {kDLFloat, 32, 1}},
    {"<f8", {kDLFloat, 64, 1}}, {"<f2", {kDLFloat, 16, 1}}, {"|b1", {kDLBool, 8, 1}},
};

DLDataType dtype_of(const std::string& descr, const std::string& path) {
  for (const auto& t : kTypes)
    if (descr == t.descr) return t.dl;
  throw std::runtime_error(path + ": unsupported .npy dtype " + descr);
}

std::string descr_of(DLDataType dl) {
  for (const auto& t : kTypes)
    if (t.dl.code == dl.code && t.dl.bits == dl.bits && t.dl.lanes == dl.lanes) return t.descr;
  throw std::runtime_error("output dtype has no .npy form");
}

std::string header_value(const std::string& header, const std::string& key) {
  size_t k = header.find("'" + key + "'");
  if (k == std::string::npos) throw std::runtime_error("npy header lacks " + key);
  size_t colon = header.find(':', k);
  size_t start = header.find_first_not_of(' ', colon + 1);
  if (header[start] == '(') return header.substr(start, header.find(')', start) - start + 1);
  size_t end = header.find_first_of(",}", start);
  std::string v = header.substr(start, end - start);
  if (!v.empty() && v.front() == '\'') v = v.substr(1, v.size() - 2);
  return v;
}

ffi::Tensor read_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(path + ": cannot open");
  char magic[8];
  f.read(magic, 8);
  if (!f || std::memcmp(magic, "\x93NUMPY", 6) != 0) throw std::runtime_error(path + ": not a .npy file");
  uint32_t hlen = 0;
  if (magic[6] == 1) {
    unsigned char b[2];
    f.read(reinterpret_cast<char*>(b), 2);
    hlen = b[0] | (b[1] << 8);
  } else {
    unsigned char b[4];
    f.read(reinterpret_cast<char*>(b), 4);
    hlen = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint32_t>(b[3]) << 24);
  }
  std::string header(hlen, '\0');
  f.read(&header[0], hlen);
  if (header_value(header, "fortran_order") != "False") throw std::runtime_error(path + ": Fortran order");
  DLDataType dt = dtype_of(header_value(header, "descr"), path);
  std::vector<int64_t> shape;
  std::string dims = header_value(header, "shape");
  std::stringstream ss(dims.substr(1, dims.size() - 2));
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.find_first_not_of(' ') != std::string::npos) shape.push_back(std::stoll(item));
  }
  ffi::Tensor t = ffi::Tensor::FromNDAlloc(CPUAlloc(), ffi::Shape(shape), dt, DLDevice{kDLCPU, 0});
  size_t nbytes = ffi::GetDataSize(t);
  f.read(static_cast<char*>(t.data_ptr()), nbytes);
  if (static_cast<size_t>(f.gcount()) != nbytes) throw std::runtime_error(path + ": truncated data");
  return t;
}

void write_npy(const std::string& path, const DLTensor& t) {
  if (t.strides != nullptr && !ffi::IsContiguous(t)) throw std::runtime_error("non-contiguous output");
  std::string dims = "(";
  for (int i = 0; i < t.ndim; ++i) dims += std::to_string(t.shape[i]) + (t.ndim == 1 ? "," : i + 1 < t.ndim ? ", " : "");
  dims += ")";
  std::string header = "{'descr': '" + descr_of(t.dtype) + "', 'fortran_order': False, 'shape': " + dims + ", }";
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::ofstream f(path, std::ios::binary);
  f.write("\x93NUMPY\x01\x00", 8);
  unsigned char len[2] = {static_cast<unsigned char>(header.size() & 0xff), static_cast<unsigned char>(header.size() >> 8)};
  f.write(reinterpret_cast<char*>(len), 2);
  f.write(header.data(), header.size());
  f.write(static_cast<const char*>(t.data) + t.byte_offset, ffi::GetDataSize(t));
  if (!f) throw std::runtime_error(path + ": write failed");
}

std::vector<ffi::Tensor> as_tensors(const ffi::Any& result) {
  if (auto t = result.as<ffi::Tensor>()) return {*t};
  if (auto arr = result.as<ffi::Array<ffi::Any>>()) {
    std::vector<ffi::Tensor> out;
    for (const ffi::Any& item : *arr) {
      auto t = item.as<ffi::Tensor>();
      if (!t) throw std::runtime_error("main returned a tuple holding a non-tensor");
      out.push_back(*t);
    }
    return out;
  }
  throw std::runtime_error("main returned neither a tensor nor a tuple of tensors");
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::vector<std::string> args(argv + 1, argv + argc);
    int repeat = 0;
    for (size_t i = 0; i < args.size(); ++i) {
      if (args[i] == "--repeat" && i + 1 < args.size()) {
        repeat = std::stoi(args[i + 1]);
        args.erase(args.begin() + i, args.begin() + i + 2);
        break;
      }
    }
    if (args.size() < 2) {
      std::cerr << "usage: runner LIB.so OUT_DIR [IN.npy ...] [--repeat N]\n";
      return 2;
    }
    ffi::Module lib = ffi::Module::LoadFromFile(args[0]);
    ffi::Module vm = lib->GetFunction("vm_load_executable").value()().cast<ffi::Module>();
    constexpr int kPooledAllocator = 2;
    vm->GetFunction("vm_initialization").value()(static_cast<int>(kDLCPU), 0, kPooledAllocator);
    ffi::Function main_fn = vm->GetFunction("main").value();

    std::vector<ffi::AnyView> packed;
    std::vector<ffi::Tensor> inputs;
    for (size_t i = 2; i < args.size(); ++i) inputs.push_back(read_npy(args[i]));
    for (const auto& t : inputs) packed.emplace_back(t);
    ffi::Any result;
    main_fn.CallPacked(packed.data(), static_cast<int>(packed.size()), &result);
    std::vector<ffi::Tensor> outs = as_tensors(result);
    for (size_t i = 0; i < outs.size(); ++i) write_npy(args[1] + "/out_" + std::to_string(i) + ".npy", *outs[i].GetDLTensorPtr());

    if (repeat > 0) {
      std::cout << "{\"ms\": [";
      for (int r = 0; r < repeat; ++r) {
        auto t0 = std::chrono::steady_clock::now();
        main_fn.CallPacked(packed.data(), static_cast<int>(packed.size()), &result);
        double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        std::cout << (r ? ", " : "") << ms;
      }
      std::cout << "]}" << std::endl;
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "runner: " << e.what() << std::endl;
    return 1;
  }
}
