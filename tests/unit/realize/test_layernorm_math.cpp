// The LayerNorm kernel's row math (templates/layernorm.cuh: row_statistics and
// normalize are __host__ __device__) run on the host, one "thread" holding the
// whole row: two-pass statistics stay accurate where the one-pass
// E[x^2] - E[x]^2 formula cancels, padding slots are ignored, eps is honoured.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "../../../templates/layernorm.cuh"

namespace fact {
namespace {

constexpr int kCols = 768;
constexpr int kSlots = 800;  // 32 padding slots past the row end, marked invalid

struct Row {
  float v[kSlots];
  bool valid[kSlots];
};

Row make_row(double offset, double scale, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  Row r;
  for (int i = 0; i < kSlots; ++i) {
    r.valid[i] = i < kCols;
    r.v[i] = r.valid[i] ? static_cast<float>(offset + scale * normal(gen)) : 1e30f;  // garbage padding
  }
  return r;
}

// The row's mean and biased variance in float64, two passes: the reference.
struct Float64Statistics {
  double mean = 0, var = 0;
};
Float64Statistics float64_statistics(const Row& r) {
  Float64Statistics st;
  for (int i = 0; i < kCols; ++i) st.mean += r.v[i];
  st.mean /= kCols;
  for (int i = 0; i < kCols; ++i) st.var += (r.v[i] - st.mean) * (r.v[i] - st.mean);
  st.var /= kCols;
  return st;
}

auto identity_reduce = [](float value, int) { return value; };  // one thread holds the whole row

TEST(LayerNormMath, TwoPassStatisticsMatchFloat64OnOffsetRows) {
  for (double offset : {0.0, 1e3, -3e4}) {
    Row r = make_row(offset, 1.0, 7);
    float mean = 0, rstd = 0;
    layernorm::row_statistics(r.v, r.valid, kCols, 1e-5f, identity_reduce, mean, rstd);
    const auto [m, var] = float64_statistics(r);
    const double ref_rstd = 1.0 / std::sqrt(var + 1e-5);
    EXPECT_NEAR(mean, m, 1e-6 * std::max(1.0, std::fabs(m))) << "offset " << offset;
    EXPECT_NEAR(rstd, ref_rstd, 1e-5 * ref_rstd) << "offset " << offset;
    // The one-pass formula in fp32 on the same row: shows what two passes avoid.
    float s = 0, s2 = 0;
    for (int i = 0; i < kCols; ++i) s += r.v[i], s2 += r.v[i] * r.v[i];
    const double one_pass_var = s2 / kCols - (s / kCols) * (s / kCols);
    if (offset != 0.0) EXPECT_GT(std::fabs(one_pass_var - var), 1e-2) << "the test row must defeat one pass";
  }
}

TEST(LayerNormMath, NormalizeAppliesWeightBiasAndEps) {
  Row r = make_row(2.0, 0.5, 11);
  std::vector<float> w(kCols), b(kCols);
  for (int i = 0; i < kCols; ++i) w[i] = 0.5f + 0.001f * i, b[i] = -0.25f + 0.002f * i;
  float mean = 0, rstd = 0;
  layernorm::row_statistics(r.v, r.valid, kCols, 1e-5f, identity_reduce, mean, rstd);
  const auto [m, var] = float64_statistics(r);
  const double s = 1.0 / std::sqrt(var + 1e-5);
  for (int i = 0; i < kCols; i += 97) {
    const double ref = (r.v[i] - m) * s * w[i] + b[i];
    EXPECT_NEAR(layernorm::normalize(r.v[i], mean, rstd, w.data(), b.data(), i), ref, 2e-6 * (1 + std::fabs(ref)));
    EXPECT_NEAR(layernorm::normalize(r.v[i], mean, rstd, nullptr, nullptr, i), (r.v[i] - m) * s, 2e-6 * (1 + std::fabs(ref)));
  }
  // A constant row: variance 0, so 1/sqrt(eps) scales (x - mean) = 0 -> exactly the bias.
  Row flat = make_row(3.0, 0.0, 1);
  layernorm::row_statistics(flat.v, flat.valid, kCols, 1e-5f, identity_reduce, mean, rstd);
  EXPECT_FLOAT_EQ(mean, 3.0f);
  EXPECT_NEAR(rstd, 1.0 / std::sqrt(1e-5), 1.0);
  EXPECT_EQ(layernorm::normalize(flat.v[5], mean, rstd, w.data(), b.data(), 5), b[5]);
}

TEST(LayerNormMath, ReductionSlotsSeparateThePasses) {
  Row r = make_row(0.0, 1.0, 3);
  std::vector<int> slots;
  float mean = 0, rstd = 0;
  layernorm::row_statistics(r.v, r.valid, kCols, 1e-5f,
                            [&](float value, int slot) {
                              slots.push_back(slot);
                              return value;
                            },
                            mean, rstd);
  EXPECT_EQ(slots, (std::vector<int>{0, 1}));
}

TEST(LayerNormMath, RmsStatisticsAreOnePassOverSquaresWithMeanZero) {
  for (double offset : {0.0, 3.0}) {
    Row r = make_row(offset, 1.0, 5);
    std::vector<int> slots;
    float mean = 1, rstd = 0;
    layernorm::row_statistics<layernorm::kRmsNorm>(r.v, r.valid, kCols, 1e-6f,
                                                   [&](float value, int slot) {
                                                     slots.push_back(slot);
                                                     return value;
                                                   },
                                                   mean, rstd);
    double squares = 0;
    for (int i = 0; i < kCols; ++i) squares += static_cast<double>(r.v[i]) * r.v[i];
    const double ref = 1.0 / std::sqrt(squares / kCols + 1e-6);
    EXPECT_EQ(mean, 0.0f) << "normalize's x - mean must be x exactly";
    EXPECT_NEAR(rstd, ref, 1e-6 * ref) << "offset " << offset;
    EXPECT_EQ(slots, (std::vector<int>{1})) << "one pass, the padding slots ignored";
    // y = x * rstd * w, no bias.
    std::vector<float> w(kCols, 0.75f);
    EXPECT_NEAR(layernorm::normalize(r.v[7], mean, rstd, w.data(), nullptr, 7), r.v[7] * ref * 0.75,
                2e-6 * (1 + std::fabs(r.v[7] * ref)));
  }
}

}  // namespace
}  // namespace fact
