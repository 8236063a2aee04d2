#include "fact/content_hash.hpp"

#include <xxhash.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace fact {

struct ContentHash::State {
  XXH3_state_t* xxh = XXH3_createState();
  ~State() { XXH3_freeState(xxh); }
};

ContentHash::ContentHash() : state_(std::make_unique<State>()) { XXH3_128bits_reset(state_->xxh); }
ContentHash::~ContentHash() = default;

ContentHash& ContentHash::add(const std::string& field) {
  const uint64_t size = field.size();
  XXH3_128bits_update(state_->xxh, &size, sizeof size);
  XXH3_128bits_update(state_->xxh, field.data(), field.size());
  return *this;
}

ContentHash& ContentHash::add_file(const std::string& path) {
  add(std::filesystem::path(path).filename().string());
  std::ifstream in(path, std::ios::binary);
  if (!in) return add("<missing file>");
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return add(bytes.str());
}

std::string ContentHash::hex() const {
  XXH128_canonical_t canonical;
  XXH128_canonicalFromHash(&canonical, XXH3_128bits_digest(state_->xxh));
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char byte : canonical.digest) {
    out += digits[byte >> 4];
    out += digits[byte & 15];
  }
  return out;
}

}  // namespace fact
