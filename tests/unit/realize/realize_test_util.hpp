// Helpers shared by the realize unit tests: temporary folders, scripts.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace fact {
namespace fs = std::filesystem;

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("fact_realize_test_" + std::to_string(::getpid()) + "_" +
                                        std::to_string(counter()++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  static int& counter() {
    static int c = 0;
    return c;
  }
};

inline void write(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

inline fs::path script(const fs::path& p, const std::string& body) {
  write(p, "#!/bin/sh\n" + body);
  fs::permissions(p, fs::perms::owner_all);
  return p;
}


inline std::string data_file(const std::string& name) {
  return std::string(FACT_TEST_DATA_DIR) + "/unit/realize/data/" + name;
}

}  // namespace fact
