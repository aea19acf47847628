// Predictions of several models and of their ensemble (the mean of their probabilities): the
// imp_ensemble baseline, from the round-k models of independent runs.
#include <c10/util/Exception.h>

#include "subject.h"

namespace swamp {

EnsembleScores ensemble_scores(const Config& cfg, const RunParts& parts,
                               const std::vector<State>& states) {
  TORCH_CHECK_VALUE(!states.empty(), "ensemble_scores: no models");
  analysis::Subject subject(cfg, parts);
  EnsembleScores out;
  std::vector<at::Tensor> logps;
  for (size_t i = 0; i < states.size(); ++i) {
    const std::string what = "model " + std::to_string(i);
    subject.load(states[i], what.c_str());
    logps.push_back(subject.evaluator().log_probs(subject.model()));
    const engine::Metrics m = subject.evaluator().metrics(logps.back());
    out.members.push_back({m.acc, m.nll, m.ece});
  }
  const engine::Metrics e = subject.evaluator().ensemble_metrics(logps);
  out.ensemble = {e.acc, e.nll, e.ece};
  return out;
}

}  // namespace swamp
