// Helpers shared by the front-end unit tests: fixture paths, temporary folders,
// and a tiny builder for in-memory IR documents.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace fact::test {

inline std::string fixture(const std::string& name) {
  return std::string(FACT_TEST_DATA_DIR) + "/fixtures/ir/" + name;
}

// A fresh folder under $TMPDIR, removed when the object goes out of scope.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "fact-test-XXXXXX").string();
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    if (!mkdtemp(buf.data())) std::abort();
    path_ = buf.data();
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Sets an environment variable for the scope of the object.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (had_) setenv(name_, old_.c_str(), 1);
    else unsetenv(name_);
  }

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

inline std::vector<int64_t> contiguous(const std::vector<int64_t>& shape) {
  std::vector<int64_t> s(shape.size(), 1);
  int64_t r = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    s[i] = r;
    r *= shape[i];
  }
  return s;
}

// Builds graph.json documents in memory, following docs/CONTRACTS.md §1.
struct IrBuilder {
  nlohmann::json doc = {{"fact_ir", 1},
                        {"module", "Model"},
                        {"source", "/test.py"},
                        {"init_inputs", nlohmann::json::array()},
                        {"tensors", nlohmann::json::object()},
                        {"nodes", nlohmann::json::array()},
                        {"outputs", nlohmann::json::array()}};
  int inputs = 0;

  IrBuilder& input(const std::string& id, std::vector<int64_t> shape, const std::string& dtype = "float32",
                   std::vector<int64_t> strides = {}) {
    if (strides.empty()) strides = contiguous(shape);
    doc["tensors"][id] = {{"shape", shape}, {"dtype", dtype}, {"strides", strides}, {"kind", "input"},
                          {"index", inputs++}};
    return *this;
  }
  IrBuilder& param(const std::string& id, std::vector<int64_t> shape, const std::string& dtype = "float32") {
    doc["tensors"][id] = {{"shape", shape}, {"dtype", dtype}, {"strides", contiguous(shape)}, {"kind", "param"},
                          {"target", id}};
    return *this;
  }
  IrBuilder& node(const std::string& id, const std::string& op, std::vector<std::string> inputs,
                  std::vector<int64_t> shape, nlohmann::json attrs = nlohmann::json::object(),
                  std::vector<int64_t> strides = {}, const std::string& dtype = "float32") {
    if (strides.empty()) strides = contiguous(shape);
    doc["tensors"][id] = {{"shape", shape}, {"dtype", dtype}, {"strides", strides}, {"kind", "value"}};
    doc["nodes"].push_back({{"id", id}, {"op", op}, {"inputs", inputs}, {"outputs", {id}}, {"attrs", attrs},
                            {"origin", "test"}});
    return *this;
  }
  IrBuilder& output(const std::string& id) {
    doc["outputs"].push_back(id);
    return *this;
  }
};

}  // namespace fact::test
