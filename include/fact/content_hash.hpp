// Content hashes for the caches (kernel cache, capture cache): XXH3-128 over
// length-prefixed fields, so ("ab","c") and ("a","bc") differ. Not a security
// boundary: a cache key, written as 32 hex digits.
#pragma once

#include <memory>
#include <string>

namespace fact {

class ContentHash {
 public:
  ContentHash();
  ~ContentHash();
  ContentHash(const ContentHash&) = delete;
  ContentHash& operator=(const ContentHash&) = delete;

  ContentHash& add(const std::string& field);
  // Adds the file's name and bytes; a missing file adds a marker, so it still changes the key.
  ContentHash& add_file(const std::string& path);
  std::string hex() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace fact
