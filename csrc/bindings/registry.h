// Each bind_*.cpp registers its part of the module here, so a new feature
// adds one file and touches no shared list. The bindings only convert
// arguments and release the GIL; they hold no logic.
#pragma once

#include <pybind11/pybind11.h>

#include <algorithm>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace shardkit::bindings {

using Binder = std::function<void(pybind11::module_&)>;

inline std::vector<std::pair<std::string, Binder>>& binders() {
  static std::vector<std::pair<std::string, Binder>> all;
  return all;
}

struct Registrar {
  Registrar(const char* name, Binder binder) { binders().emplace_back(name, std::move(binder)); }
};

// Runs every registered binder on `m` (in name order: static-initialiser
// order across files is unspecified) and lists them in `m.features`.
inline void bind_all(pybind11::module_& m) {
  auto& all = binders();
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  pybind11::list features;
  for (auto& [name, bind] : all) {
    bind(m);
    features.append(name);
  }
  m.attr("features") = features;
}

}  // namespace shardkit::bindings

#define SHARDKIT_BINDINGS(name)                                                       \
  static void shardkit_bind_##name(pybind11::module_& m);                            \
  static ::shardkit::bindings::Registrar shardkit_registrar_##name(#name, shardkit_bind_##name); \
  static void shardkit_bind_##name(pybind11::module_& m)
