// swamp_ext._C.testing: the test seams, bound apart from the product. Probes that make internal
// mechanisms observable (particles' forward/backward on every path, the lanes of the threads
// path) and fault injection (a checkpoint write that dies half-way). Nothing in the run's own
// code paths calls these; the suite does (python_tests/), through swamp_ext.testing.
#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <mutex>

#include "../common/lanes.h"
#include "bindings.h"
#include "swamp/checkpoint.h"
#include "swamp/layers.h"
#include "swamp/models.h"

namespace swamp::python {

void bind_testing(py::module_& m) {
  m.def(
      "particles_forward_backward",
      [](const std::string& name, const std::vector<int64_t>& input_shape, int64_t num_classes,
         const std::vector<std::map<std::string, at::Tensor>>& states, const at::Tensor& x,
         const at::Tensor& y, bool stacked, const std::map<std::string, at::Tensor>& masks,
         const std::string& sparse_kernels, bool channels_last) {
        const int64_t N = static_cast<int64_t>(states.size());
        TORCH_CHECK_VALUE(N >= 1, "particles_forward_backward: no particle states");
        TORCH_CHECK_VALUE(
            x.dim() >= 3 && x.size(0) == N && y.dim() == 2 && y.size(0) == N,
            "particles_forward_backward: x must be [N, B, ...] and y [N, B] with N = ", N,
            " particles");
        // state `index` into particle n of a P-particle model
        auto load = [](torch::nn::Module& m, const std::map<std::string, at::Tensor>& st, int64_t P,
                       int64_t n, int64_t index) {
          torch::NoGradGuard no_grad;
          auto put = [&](const std::string& key, const at::Tensor& t) {
            at::Tensor dst = layers::particle_slice(t, P, n);
            auto it = st.find(key);
            TORCH_CHECK_VALUE(it != st.end(), "particles_forward_backward: state ", index,
                              " has no entry '", key, "'");
            TORCH_CHECK_VALUE(it->second.sizes() == dst.sizes(),
                              "particles_forward_backward: state ", index, " entry '", key,
                              "' has shape ", it->second.sizes(), ", expected ", dst.sizes());
            dst.copy_(it->second);
          };
          for (auto& item : m.named_parameters(true)) put(item.key(), item.value());
          for (auto& item : m.named_buffers(true))
            if (item.value().dim() > 0 || n == 0) put(item.key(), item.value());
        };
        // pruned weights multiplied by their mask, then the layers `sparse_kernels` picks go sparse
        auto prune = [&](torch::nn::Module& m, int64_t P) {
          {
            torch::NoGradGuard no_grad;
            auto named = m.named_parameters(true);
            for (const auto& kv : masks) {
              TORCH_CHECK_VALUE(named.contains(kv.first),
                                "particles_forward_backward: mask for unknown parameter '",
                                kv.first, "'");
              at::Tensor p = named[kv.first];
              TORCH_CHECK_VALUE(kv.second.sizes() == layers::particle_slice(p, P, 0).sizes(),
                                "particles_forward_backward: mask '", kv.first, "' has shape ",
                                kv.second.sizes());
              for (int64_t n = 0; n < P; ++n)
                layers::particle_slice(p, P, n).mul_(kv.second.to(p.options()));
            }
          }
          layers::enable_sparse(m, masks, sparse_kernels, 1.0, 1.0);
        };
        // a sparse layer's weight gradient is its values' gradient, as a dense tensor
        auto grads_of = [](torch::nn::Module& m, int64_t P, int64_t n) {
          std::map<std::string, at::Tensor> g;
          for (const auto& item : m.named_parameters(true))
            if (item.value().grad().defined())
              g[item.key()] = layers::particle_slice(item.value().grad(), P, n).clone();
          for (const auto& item : m.named_modules("", /*include_self=*/false))
            if (auto layer = std::dynamic_pointer_cast<layers::SparseWeightLayer>(item.value()))
              if (layer->is_sparse())
                g[item.key() + ".weight"] =
                    layers::particle_slice(layer->dense_from_values(layer->values().grad()), P, n);
          return g;
        };
        std::vector<std::map<std::string, at::Tensor>> grads;
        at::Tensor logits;
        py::gil_scoped_release nogil;
        const layers::ChannelsLastGuard layout(channels_last);  // as the trainer holds it
        if (stacked) {
          ModelPtr model = create_model(name, ModelSpec{input_shape, num_classes, N}, 0);
          model->to(x.scalar_type());
          for (int64_t n = 0; n < N; ++n) load(*model, states[n], N, n, n);
          prune(*model, N);
          model->train(true);
          logits = layers::split_outputs(
              model->forward(layers::channels_last_if_enabled(layers::stack_inputs(x))), N);
          at::cross_entropy_loss(logits.reshape({-1, logits.size(2)}), y.reshape(-1))
              .mul(static_cast<double>(N))
              .backward();
          for (int64_t n = 0; n < N; ++n) grads.push_back(grads_of(*model, N, n));
        } else {
          std::vector<at::Tensor> outs;
          for (int64_t n = 0; n < N; ++n) {
            ModelPtr model = create_model(name, ModelSpec{input_shape, num_classes}, 0);
            model->to(x.scalar_type());
            load(*model, states[n], 1, 0, n);
            prune(*model, 1);
            model->train(true);
            outs.push_back(model->forward(layers::channels_last_if_enabled(x[n])));
            at::cross_entropy_loss(outs.back(), y[n]).backward();
            grads.push_back(grads_of(*model, 1, 0));
          }
          logits = at::stack(outs);
        }
        return std::make_pair(logits.detach(), grads);
      },
      py::arg("name"), py::arg("input_shape"), py::arg("num_classes"), py::arg("states"),
      py::arg("x"), py::arg("y"), py::arg("stacked"),
      py::arg("masks") = std::map<std::string, at::Tensor>{}, py::arg("sparse_kernels") = "off",
      py::arg("channels_last") = false,
      "One training-mode forward and backward of N particles (states), each on its own batch, in "
      "the dtype of x: stacked in one model or one model each, with the weights pruned by `masks` "
      "(single-particle bool masks by parameter name) and the linear layers `sparse_kernels` "
      "picks (off / on / auto at density 1) on the sparse kernels. Returns (logits [N, B, K], "
      "per-particle grads).");
  m.def(
      "conv2d_forward",
      [](const at::Tensor& x, const at::Tensor& weight, int64_t stride, int64_t padding,
         bool channels_last) {
        TORCH_CHECK_VALUE(x.dim() == 4 && weight.dim() == 4 && weight.size(2) == weight.size(3),
                          "conv2d_forward: expected x [B, C, H, W] and a square weight "
                          "[O, C, k, k]");
        layers::Conv2d conv =
            layers::conv2d(weight.size(1), weight.size(0), weight.size(2), stride, padding);
        conv->to(weight.scalar_type());
        {
          torch::NoGradGuard no_grad;
          conv->weight.copy_(weight);
        }
        py::gil_scoped_release nogil;
        const layers::ChannelsLastGuard layout(channels_last);
        return conv->forward(x);
      },
      py::arg("x"), py::arg("weight"), py::arg("stride"), py::arg("padding"),
      py::arg("channels_last"),
      "The zoo's Conv2d layer (dense, no bias) on x with this weight, under a channels-last "
      "scope or not: the output's memory order shows what the layer computed in.");
  // The threads path's mechanism, observable: what each lane sees, and its errors.
  m.def(
      "lanes_probe",
      [](int64_t lanes, int64_t fail_lane) {
        TORCH_CHECK_VALUE(lanes >= 1, "lanes_probe: lanes must be >= 1, got ", lanes);
        std::vector<py::tuple> out;
        std::vector<std::tuple<int64_t, uint64_t, bool, int64_t>> seen;
        std::mutex mu;
        {
          py::gil_scoped_release nogil;
          run_lanes(lanes, [&](int64_t lane) {
            TORCH_CHECK_VALUE(lane != fail_lane, "lane ", lane, " failed on purpose");
            // a reduction big enough that parallel_for would split it outside a lane
            const double s = at::ones({1 << 20}, at::kDouble).sum().item<double>();
            std::lock_guard<std::mutex> lock(mu);
            seen.emplace_back(lane, static_cast<uint64_t>(pthread_self()), at::in_parallel_region(),
                              static_cast<int64_t>(s));
          });
        }
        for (const auto& s : seen)
          out.push_back(
              py::make_tuple(std::get<0>(s), std::get<1>(s), std::get<2>(s), std::get<3>(s)));
        return out;
      },
      py::arg("lanes"), py::arg("fail_lane") = -1,
      "Runs `lanes` lanes; each reports (lane, thread id, in ATen parallel region, a sum). "
      "fail_lane raises ValueError in that lane.");
  m.def(
      "reseal_checkpoint",
      [](const std::string& path) {
        py::gil_scoped_release nogil;
        reseal_checkpoint(path);
      },
      py::arg("path"),
      "Rewrites a checkpoint's trailer for its current body, so that a body edited on purpose "
      "passes the checksum and only the content checks remain (fuzz tests).");
  m.def(
      "crash_in_checkpoint_write",
      [](int64_t nth, int exit_code) {
        TORCH_CHECK_VALUE(nth >= 0, "crash_in_checkpoint_write: nth must be >= 0, got ", nth);
        if (nth == 0) {
          set_checkpoint_write_observer(nullptr);
          return;
        }
        auto count = std::make_shared<std::atomic<int64_t>>(0);
        set_checkpoint_write_observer(
            [count, nth, exit_code](const std::string&, size_t written, size_t total) {
              if (written == total) {  // a write that completes counts once
                ++*count;
                return;
              }
              if (*count + 1 == nth) ::_exit(exit_code);  // half of the nth file is on disk
            });
      },
      py::arg("nth"), py::arg("exit_code") = 86,
      "Makes the process die (_exit(exit_code)) half-way through its nth checkpoint write from "
      "now on (the temporary file half-written, the previous checkpoint intact); 0 disarms it.");
}

}  // namespace swamp::python
