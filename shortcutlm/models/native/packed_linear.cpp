// Packed one-row products for decoding, as an operator whose whole call stays in C++.
//
// Why C++: models/packed.py's Python operator costs 26 us a call for a 384 x 384 weight where
// oneDNN's own product costs 14 us (AMD EPYC, two threads), and a compiled decoding chunk calls it
// through the dispatcher into Python 25 times a token. This operator does the same work (look the
// packed copy up by the weights' identity, repack when a version moved, multiply) without Python:
// 14.8 us a call, and Inductor's C++ wrapper calls it directly.
//
// The packed copies live in a map keyed by the tensors' TensorImpl addresses; each entry keeps weak
// references, so a freed weight is never read and its address reused by a new tensor is a miss.
// Python forgets a weight's entries as it is freed (forget, called from a weakref finalizer while
// the tensor is still alive); expired entries are also swept whenever a new copy is packed.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <map>
#include <mutex>
#include <optional>
#include <vector>

namespace {

using WeakImpl = c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>;
using Key = std::vector<int64_t>;

struct Packed {
  std::vector<WeakImpl> refs;
  std::vector<int64_t> versions;
  at::Tensor weight;
  std::optional<at::Tensor> bias;
};

std::mutex cache_mutex;
std::map<Key, Packed> cache;

int64_t address(const at::Tensor& t) {
  return reinterpret_cast<int64_t>(t.unsafeGetTensorImpl());
}

at::Tensor reorder(const at::Tensor& weight) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mkldnn::_reorder_linear_weight", "")
                       .typed<at::Tensor(const at::Tensor&, std::optional<int64_t>)>();
  return op.call(weight, 1);
}

at::Tensor product(const at::Tensor& rows, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mkldnn::_linear_pointwise", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                                         c10::string_view, c10::List<std::optional<at::Scalar>>,
                                         std::optional<c10::string_view>)>();
  return op.call(rows, weight, bias, "none", c10::List<std::optional<at::Scalar>>(), c10::string_view(""));
}

bool current(const Packed& p, const std::vector<at::Tensor>& tensors) {
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (p.refs[i].lock().get() != tensors[i].unsafeGetTensorImpl() || p.versions[i] != tensors[i]._version()) {
      return false;
    }
  }
  return true;
}

void sweep_expired() {
  for (auto it = cache.begin(); it != cache.end();) {
    bool expired = false;
    for (const auto& ref : it->second.refs) expired = expired || ref.expired();
    it = expired ? cache.erase(it) : std::next(it);
  }
}

// The packed copy of the weights stacked (one matrix), with their biases stacked; made again when a
// weight's or bias's version has moved on. The caller holds cache_mutex.
const Packed& packed_copy(const std::vector<at::Tensor>& weights, const std::vector<at::Tensor>& biases) {
  std::vector<at::Tensor> tensors(weights);
  tensors.insert(tensors.end(), biases.begin(), biases.end());
  Key key;
  for (const auto& t : tensors) key.push_back(address(t));
  auto hit = cache.find(key);
  if (hit != cache.end() && current(hit->second, tensors)) return hit->second;
  sweep_expired();
  at::NoGradGuard no_grad;
  Packed p;
  std::vector<at::Tensor> detached;
  for (const auto& t : tensors) {
    p.refs.emplace_back(t.getIntrusivePtr());
    p.versions.push_back(t._version());
  }
  for (const auto& w : weights) detached.push_back(w.detach());
  p.weight = reorder(detached.size() > 1 ? at::cat(detached) : detached[0]);
  if (!biases.empty()) {
    std::vector<at::Tensor> stacked;
    for (const auto& b : biases) stacked.push_back(b.detach());
    p.bias = stacked.size() > 1 ? at::cat(stacked) : stacked[0];
  }
  return cache[key] = std::move(p);
}

// x [..., in] times each weight (plus its bias), the weights stacked: one product over their stacked
// packed copy, [..., sum of the weights' rows]. The caller splits it (free views), so nothing is
// copied and an operator's output aliases nothing. Up to three weights (q, k and v) as separate
// arguments: a list argument would make Inductor's C++ wrapper call back into Python.
at::Tensor packed_linear(const at::Tensor& x, const at::Tensor& w1, const std::optional<at::Tensor>& b1,
                         const std::optional<at::Tensor>& w2, const std::optional<at::Tensor>& b2,
                         const std::optional<at::Tensor>& w3, const std::optional<at::Tensor>& b3) {
  std::vector<at::Tensor> weights{w1};
  std::vector<at::Tensor> biases;
  for (const auto& w : {w2, w3}) {
    if (w.has_value()) weights.push_back(*w);
  }
  for (const auto& b : {b1, b2, b3}) {
    if (b.has_value()) biases.push_back(*b);
  }
  TORCH_CHECK(biases.empty() || biases.size() == weights.size(), "packed_linear: one bias per weight, or none");
  at::Tensor weight;  // shared with the cache, not copied: the product runs outside the lock
  std::optional<at::Tensor> bias;
  {
    std::lock_guard<std::mutex> guard(cache_mutex);
    const Packed& current = packed_copy(weights, biases);
    weight = current.weight;
    bias = current.bias;
  }
  auto out = product(x.reshape({-1, x.size(-1)}), weight, bias);
  auto shape = x.sizes().vec();
  shape.back() = out.size(-1);
  return out.view(shape);
}

// Drop every packed copy made from a tensor at one of these addresses; how many were dropped.
int64_t forget(c10::List<int64_t> addresses) {
  std::lock_guard<std::mutex> guard(cache_mutex);
  int64_t dropped = 0;
  for (auto it = cache.begin(); it != cache.end();) {
    bool named = false;
    for (int64_t a : addresses) {
      for (int64_t k : it->first) named = named || k == a;
    }
    dropped += named;
    it = named ? cache.erase(it) : std::next(it);
  }
  return dropped;
}

int64_t copies() {
  std::lock_guard<std::mutex> guard(cache_mutex);
  return static_cast<int64_t>(cache.size());
}

}  // namespace

TORCH_LIBRARY(shortcutlm_native, m) {
  m.def("packed_linear(Tensor x, Tensor w1, Tensor? b1, Tensor? w2=None, Tensor? b2=None, Tensor? w3=None,"
        " Tensor? b3=None) -> Tensor");
  m.def("forget(int[] addresses) -> int", forget);
  m.def("copies() -> int", copies);
}

TORCH_LIBRARY_IMPL(shortcutlm_native, CPU, m) {
  m.impl("packed_linear", packed_linear);
}
