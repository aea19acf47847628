// The process layout: which processes train which particle, and each member's shard of a batch.
#include <ATen/Functions.h>
#include <c10/util/Exception.h>

#include <atomic>
#include <chrono>
#include <memory>

#include "swamp/processes.h"
#include "unit.h"

using Groups = std::vector<std::vector<int64_t>>;

UNIT_TEST(more_processes_than_particles_train_each_particle_data_parallel) {
  EXPECT(swamp::data_parallel_groups(4, 2) == (Groups{{0, 1}, {2, 3}}));
  EXPECT(swamp::data_parallel_groups(4, 1) == (Groups{{0, 1, 2, 3}}));
  // 5 processes, 2 particles: groups of 2, the fifth process sits the round out
  EXPECT(swamp::data_parallel_groups(5, 2) == (Groups{{0, 1}, {2, 3}}));
}

UNIT_TEST(as_many_particles_as_processes_or_more_keep_whole_particles) {
  EXPECT(swamp::data_parallel_groups(2, 2) == (Groups{{0}, {1}}));
  EXPECT(swamp::data_parallel_groups(2, 4) == (Groups{{0}, {0}, {1}, {1}}));
  EXPECT(swamp::data_parallel_groups(1, 3) == (Groups{{0}, {0}, {0}}));
  EXPECT_THROWS(c10::ValueError, swamp::data_parallel_groups(0, 2));
}

UNIT_TEST(the_members_of_a_group_split_every_batch_and_the_first_speaks_for_it) {
  const swamp::ProcessLayout first{4, 2, 1, 2, 0}, second{4, 2, 1, 2, 1};
  EXPECT(first.shard(5) == std::make_pair<int64_t, int64_t>(0, 2));
  EXPECT(second.shard(5) == std::make_pair<int64_t, int64_t>(2, 5));
  EXPECT(first.contributes() == std::make_pair<int64_t, int64_t>(1, 2));
  EXPECT(second.contributes() == std::make_pair<int64_t, int64_t>(1, 1));  // nothing
  const swamp::ProcessLayout alone{1, 1, 0, 4, 0};
  EXPECT(alone.shard(128) == std::make_pair<int64_t, int64_t>(0, 128));
}

UNIT_TEST(one_process_sums_alone_and_its_pending_sums_are_complete) {
  swamp::Processes alone;
  const at::Tensor flat = at::arange(4, at::kFloat);
  const auto before = swamp::PendingSum::Clock::now();
  swamp::PendingSum sum = alone.start_sum_in_group(1, flat);
  sum.wait();
  sum.wait();  // waiting twice is harmless
  EXPECT(at::equal(flat, at::arange(4, at::kFloat)));
  EXPECT(sum.done_at() >= before && sum.done_at() <= swamp::PendingSum::Clock::now());
  std::vector<at::Tensor> t{flat};
  alone.sum_over_all(t);
  EXPECT(at::equal(flat, at::arange(4, at::kFloat)) && alone.rank() == 0);
}

UNIT_TEST(a_pending_sum_is_done_when_its_backend_says_so) {
  auto done = std::make_shared<std::atomic<int64_t>>(0);
  bool waited = false;
  swamp::PendingSum sum([&] { waited = true; }, done);
  const auto at = swamp::PendingSum::Clock::now() - std::chrono::milliseconds(5);
  done->store(std::chrono::duration_cast<std::chrono::nanoseconds>(at.time_since_epoch()).count());
  sum.wait();
  EXPECT(waited && sum.done_at() == at);
}
