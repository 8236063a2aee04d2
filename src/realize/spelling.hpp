// Enum spelling tables of the realize stage: each enum's token (names, reports,
// plan/registry JSON) and C++ spelling (what the templates take) stand in one
// table per enum, looked up both ways.
#pragma once

#include <array>
#include <cstddef>
#include <optional>
#include <stdexcept>
#include <string>

namespace fact {

template <class E>
struct Spelling {
  E value;
  const char* token;
  const char* cpp;
};

// The row of `value`, or nullptr when the table lacks it.
template <class E, size_t N>
const Spelling<E>* find_spelling(const std::array<Spelling<E>, N>& table, E value) {
  for (const auto& s : table)
    if (s.value == value) return &s;
  return nullptr;
}

// The row of `value`; throws std::logic_error naming `what` when the table lacks it.
template <class E, size_t N>
const Spelling<E>& lookup(const std::array<Spelling<E>, N>& table, E value, const char* what) {
  if (const Spelling<E>* s = find_spelling(table, value)) return *s;
  throw std::logic_error(what);
}

template <class E, size_t N>
std::optional<E> from_token(const std::array<Spelling<E>, N>& table, const std::string& text) {
  for (const auto& s : table)
    if (text == s.token) return s.value;
  return std::nullopt;
}

}  // namespace fact
