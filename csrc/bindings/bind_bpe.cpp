// Python bindings of the BPE tokenizer core: convert bytes, lists and
// callbacks, and release the GIL around native work. No logic here.
#include <pybind11/functional.h>
#include <pybind11/stl.h>

#include <atomic>
#include <mutex>
#include <string>
#include <vector>

#include "bindings/registry.h"
#include "shardkit/bpe.h"
#include "shardkit/parallel.h"

namespace py = pybind11;
using shardkit::BpeEncoder;
using shardkit::SplitPattern;
using shardkit::WordCounter;

namespace {

struct Bytes {
  const uint8_t* data;
  int64_t size;
};

Bytes view(const py::bytes& b) {
  char* p = nullptr;
  Py_ssize_t n = 0;
  if (PyBytes_AsStringAndSize(b.ptr(), &p, &n) != 0) throw py::error_already_set();
  return {reinterpret_cast<const uint8_t*>(p), int64_t(n)};
}

py::list to_list(const std::vector<uint32_t>& ids) {
  PyObject* list = PyList_New(Py_ssize_t(ids.size()));
  if (!list) throw py::error_already_set();
  for (size_t i = 0; i < ids.size(); ++i) PyList_SET_ITEM(list, Py_ssize_t(i), PyLong_FromUnsignedLong(ids[i]));
  return py::reinterpret_steal<py::list>(list);
}

// Exclusive use of a counter for one call, or a clear error: a counter
// shared by two Python threads must not be filled by both at once.
class Exclusive {
 public:
  explicit Exclusive(const WordCounter& counter) : lock_(counter.busy(), std::try_to_lock) {
    if (!lock_.owns_lock()) throw py::value_error("counter: in use by another thread");
  }

 private:
  std::unique_lock<std::mutex> lock_;
};

SplitPattern pattern_of(int pattern) { return static_cast<SplitPattern>(pattern); }

void check_offsets(const std::vector<int64_t>& offsets, int64_t size) {
  if (offsets.empty()) throw py::value_error("offsets: expected at least one entry");
  if (offsets.front() != 0 || offsets.back() != size) {
    throw py::value_error("offsets: expected to start at 0 and end at len(data)");
  }
}

}  // namespace

SHARDKIT_BINDINGS(bpe) {
  m.def(
      "bpe_split",
      [](int pattern, const py::bytes& data) {
        Bytes b = view(data);
        std::vector<int64_t> ends;
        {
          py::gil_scoped_release release;
          shardkit::bpe_split(pattern_of(pattern), b.data, b.size, &ends);
        }
        return ends;
      },
      "End offsets of the chunks of `data` under a named split pattern (0 gpt4, 1 gpt2, 2 o200k).");

  py::class_<WordCounter>(m, "BpeWordCounter", "Unique pre-tokenized chunks with 64-bit counts.")
      .def(py::init<>())
      .def(
          "count_documents",
          [](WordCounter& self, int pattern, const py::bytes& data, const std::vector<int64_t>& offsets,
             int num_threads) {
            Bytes b = view(data);
            check_offsets(offsets, b.size);
            Exclusive use(self);
            py::gil_scoped_release release;
            shardkit::bpe_count_documents(pattern_of(pattern), b.data, offsets.data(), int64_t(offsets.size()) - 1,
                                          num_threads, &self);
          },
          "Split each document data[offsets[i]:offsets[i+1]] and count its chunks.")
      .def(
          "count_file",
          [](WordCounter& self, int pattern, const std::string& path, int num_threads) {
            Exclusive use(self);
            py::gil_scoped_release release;
            return shardkit::bpe_count_file(pattern_of(pattern), path, num_threads, &self);
          },
          "Memory-map a file, split it as one document and count its chunks; returns its size.")
      .def(
          "add",
          [](WordCounter& self, const py::bytes& chunk, int64_t count) {
            Bytes b = view(chunk);
            Exclusive use(self);
            self.add(b.data, b.size, count);
          },
          "Add `count` occurrences of one chunk.")
      .def("__len__", &WordCounter::size)
      .def_property_readonly("total_chunks", &WordCounter::total_chunks)
      .def_property_readonly("total_bytes", &WordCounter::total_bytes)
      .def(
          "items",
          [](const WordCounter& self) {
            Exclusive use(self);
            py::list out;
            self.for_each([&](const uint8_t* p, int64_t n, int64_t c) {
              out.append(py::make_tuple(py::bytes(reinterpret_cast<const char*>(p), size_t(n)), c));
            });
            return out;
          },
          "All (chunk, count) pairs in insertion order.");

  m.def(
      "bpe_train",
      [](const WordCounter& counter, int64_t num_merges, int64_t min_frequency, py::object progress) {
        shardkit::BpeProgress report;
        if (!progress.is_none()) {
          report = [progress](int64_t done, int64_t total) {
            py::gil_scoped_acquire acquire;
            progress(done, total);
          };
        }
        Exclusive use(counter);
        py::gil_scoped_release release;
        return shardkit::bpe_train(counter, num_merges, min_frequency, report);
      },
      py::arg("counter"), py::arg("num_merges"), py::arg("min_frequency"), py::arg("progress") = py::none(),
      "Run the merge loop; returns the merged (left, right) pairs in order.");

  py::class_<BpeEncoder>(m, "BpeEncoder", "Encoder/decoder over a rank table (id = rank).")
      .def(py::init([](int pattern, const std::vector<py::bytes>& tokens,
                       const std::vector<std::pair<int64_t, py::bytes>>& specials) {
             std::vector<std::string> t;
             t.reserve(tokens.size());
             for (const auto& b : tokens) t.emplace_back(b);
             std::vector<std::pair<int64_t, std::string>> s;
             for (const auto& [id, b] : specials) s.emplace_back(id, std::string(b));
             return new BpeEncoder(pattern_of(pattern), t, s);
           }),
           py::arg("pattern"), py::arg("tokens"), py::arg("specials"))
      .def(
          "encode",
          [](const BpeEncoder& self, const py::bytes& data) {
            Bytes b = view(data);
            std::vector<uint32_t> ids;
            {
              py::gil_scoped_release release;
              self.encode(b.data, b.size, &ids);
            }
            return to_list(ids);
          },
          "Split with the named pattern and encode.")
      .def(
          "encode_chunks",
          [](const BpeEncoder& self, const py::bytes& data, const std::vector<int64_t>& offsets) {
            Bytes b = view(data);
            check_offsets(offsets, b.size);
            std::vector<uint32_t> ids;
            {
              py::gil_scoped_release release;
              self.encode_chunks(b.data, offsets.data(), int64_t(offsets.size()) - 1, &ids);
            }
            return to_list(ids);
          },
          "Encode chunks data[offsets[i]:offsets[i+1]] split beforehand (custom patterns).")
      .def(
          "encode_batch",
          [](const BpeEncoder& self, const std::vector<py::bytes>& docs, int num_threads) {
            std::vector<Bytes> views;
            views.reserve(docs.size());
            for (const auto& d : docs) views.push_back(view(d));
            std::vector<std::vector<uint32_t>> out(docs.size());
            {
              py::gil_scoped_release release;
              std::atomic<size_t> next{0};
              shardkit::parallel_run(num_threads, [&](int, int) {
                for (size_t i = next++; i < views.size(); i = next++) self.encode(views[i].data, views[i].size, &out[i]);
              });
            }
            py::list result(out.size());
            for (size_t i = 0; i < out.size(); ++i) result[i] = to_list(out[i]);
            return result;
          },
          "Encode many documents on `num_threads` threads.")
      .def(
          "decode",
          [](const BpeEncoder& self, const std::vector<int64_t>& ids) {
            std::string out;
            {
              py::gil_scoped_release release;
              self.decode(ids.data(), int64_t(ids.size()), &out);
            }
            return py::bytes(out);
          },
          "Concatenate the bytes of `ids`.")
      .def_property_readonly("vocab_size", &BpeEncoder::vocab_size);
}
