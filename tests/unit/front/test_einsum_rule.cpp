// Two-operand torch.einsum through the GEMM rule: the equation parser, the GemmProblem
// of several equations (each transposed spelling compared field by field with the
// matmul of the equivalent views), and every rejection reason.
#include <gtest/gtest.h>

#include "fact/rules.hpp"
#include "rules3_util.hpp"
#include "test_util.hpp"

namespace fact {
namespace {

using nlohmann::json;
using test::IrBuilder;

const int E = kEinsumEllipsisLabel;

std::vector<int> labels(const std::string& letters) { return std::vector<int>(letters.begin(), letters.end()); }

EinsumSubscripts parsed(const std::string& eq, std::vector<size_t> ranks) {
  std::string why;
  auto s = parse_einsum(eq, ranks, &why);
  EXPECT_TRUE(s) << eq << ": " << why;
  return s.value_or(EinsumSubscripts{});
}

std::string parse_error(const std::string& eq, std::vector<size_t> ranks) {
  std::string why;
  EXPECT_FALSE(parse_einsum(eq, ranks, &why)) << eq;
  return why;
}

TEST(EinsumParse, ExplicitOutputIgnoresWhitespace) {
  EinsumSubscripts s = parsed(" b i j , b j k -> b i k ", {3, 3});
  EXPECT_EQ(s.operands, (std::vector<std::vector<int>>{labels("bij"), labels("bjk")}));
  EXPECT_EQ(s.output, labels("bik"));
}

TEST(EinsumParse, ImplicitOutputIsTorchAlphabeticalOrder) {
  EXPECT_EQ(parsed("bij,bjk", {3, 3}).output, labels("ik"));  // b appears twice: summed
  EXPECT_EQ(parsed("ba,aC", {2, 2}).output, labels("Cb"));    // upper case sorts first, as in torch
}

TEST(EinsumParse, EllipsisDimsAreRightAligned) {
  EinsumSubscripts s = parsed("...ij,...jk->...ik", {3, 4});
  EXPECT_EQ(s.operands[0], (std::vector<int>{E + 1, 'i', 'j'}));
  EXPECT_EQ(s.operands[1], (std::vector<int>{E, E + 1, 'j', 'k'}));
  EXPECT_EQ(s.output, (std::vector<int>{E, E + 1, 'i', 'k'}));
  EXPECT_EQ(parsed("...ij,jk", {4, 2}).output, (std::vector<int>{E, E + 1, 'i', 'k'}));
  EXPECT_EQ(einsum_labels(s.output), "[e0][e1]ik");
}

TEST(EinsumParse, ErrorsNameTheProblem) {
  EXPECT_NE(parse_error("ij,jk->ik", {2}).find("2 operand subscripts for 1 operands"), std::string::npos);
  EXPECT_NE(parse_error("ij,jk->ik", {3, 2}).find("operand 0 has 3 dims, its subscript names 2"), std::string::npos);
  EXPECT_NE(parse_error("i1,jk", {2, 2}).find("the character '1'"), std::string::npos);
  EXPECT_NE(parse_error("ij,jk->ii", {2, 2}).find("output index 'i' appears twice"), std::string::npos);
  EXPECT_NE(parse_error("ij,jk->iz", {2, 2}).find("output index 'z' is in no operand"), std::string::npos);
  EXPECT_NE(parse_error("...i...,j", {3, 1}).find("two ellipses"), std::string::npos);
}

// ---- the rule ----

json einsum_args(const std::string& eq, int operands = 2) {
  json args = json::array({eq});
  for (int i = 0; i < operands; ++i) args.push_back({{"tensor", std::string(1, static_cast<char>('a' + i))}});
  return {{"args", args}, {"kwargs", json::object()}};
}

// out = einsum(eq, a, b) with the given shapes (contiguous unless strides are given).
Graph einsum_graph(const std::string& eq, std::vector<int64_t> a, std::vector<int64_t> b, std::vector<int64_t> out,
                   std::vector<int64_t> a_strides = {}, std::vector<int64_t> b_strides = {},
                   const std::string& dtype = "float32", std::vector<int64_t> out_strides = {}) {
  IrBuilder ir;
  ir.input("a", a, dtype, a_strides).input("b", b, dtype, b_strides);
  ir.node("out", "other:torch.einsum", {"a", "b"}, out, einsum_args(eq), out_strides, dtype).output("out");
  return parse_graph(ir.doc);
}

MatchOutcome run_gemm(const Graph& g, const std::string& root = "out") {
  const Node* node = g.find_node(root);
  EXPECT_NE(node, nullptr) << root;
  auto rules = RuleSet::builtin().for_op(node->op);
  EXPECT_EQ(rules.size(), 1u) << node->op;
  return rules.at(0)->match(g, *node);
}

GemmProblem problem(const Graph& g, Match* out = nullptr) {
  MatchOutcome o = run_gemm(g);
  EXPECT_TRUE(o.match) << o.reason;
  if (!o.match) return {};
  if (out) *out = *o.match;
  return *o.match->gemm;
}

std::string rejection(const Graph& g) {
  MatchOutcome o = run_gemm(g);
  EXPECT_FALSE(o.match);
  EXPECT_TRUE(o.applicable);
  return o.reason;
}

#define EXPECT_REASON(graph, text)                                                  \
  do {                                                                              \
    std::string why_ = rejection(graph);                                            \
    EXPECT_NE(why_.find(text), std::string::npos) << "reason: " << why_;           \
  } while (0)

TEST(EinsumRule, IsARootOpOfTheGemmRule) {
  auto rules = RuleSet::builtin().for_op("other:torch.einsum");
  ASSERT_EQ(rules.size(), 1u);
  EXPECT_EQ(rules[0]->name, "gemm");
}

// A float32 problem without epilogue, spelled as the plan writes it.
json expected_gemm(int64_t batch, int64_t m, int64_t n, int64_t k, GemmOperand a, GemmOperand b, GemmOutput d) {
  GemmProblem p;
  p.batch = batch, p.m = m, p.n = n, p.k = k;
  p.a = a, p.b = b, p.d = d;
  return p.to_json();
}

// The einsum's problem is `expected`, and so is that of the matmul spelling `matmul`
// of the same product (when given): transposes come out exactly as matmul's.
void expect_problem(const Graph& einsum, const json& expected, const IrBuilder* matmul = nullptr) {
  EXPECT_EQ(problem(einsum).to_json(), expected);
  if (!matmul) return;
  MatchOutcome o = run_gemm(parse_graph(matmul->doc));
  ASSERT_TRUE(o.match) << o.reason;
  EXPECT_EQ(o.match->gemm->to_json(), expected) << "the matmul spelling";
}

TEST(EinsumRule, FourDTimesMatrixFoldsIntoOneGemm) {
  // The sweep's einsum4d: m = (b, i, j) merges into one stride.
  Match m;
  Graph g = einsum_graph("bijl,lk->bijk", {8, 64, 128, 512}, {512, 768}, {8, 64, 128, 768});
  expect_problem(g, expected_gemm(1, 8 * 64 * 128, 768, 512, {"a", "row", 512, 0}, {"b", "row", 768, 0},
                                  {"out", 768, 0}));
  problem(g, &m);
  EXPECT_EQ(m.rule, "gemm");
  EXPECT_EQ(m.problem_key, "gemm:f32:b1:m65536:n768:k512:a=row:b=row:ep=none");
  EXPECT_EQ(m.nodes, (std::vector<std::string>{"out"}));
  EXPECT_EQ(m.inputs, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(m.outputs, (std::vector<std::string>{"out"}));
}

TEST(EinsumRule, BatchedMatmul) {
  IrBuilder bmm;
  bmm.input("a", {4, 64, 32}).input("b", {4, 32, 16}).node("out", "bmm", {"a", "b"}, {4, 64, 16}).output("out");
  expect_problem(einsum_graph("bij,bjk->bik", {4, 64, 32}, {4, 32, 16}, {4, 64, 16}),
                 expected_gemm(4, 64, 16, 32, {"a", "row", 32, 64 * 32}, {"b", "row", 16, 32 * 16},
                               {"out", 16, 64 * 16}), &bmm);
}

TEST(EinsumRule, ListFormOperands) {
  IrBuilder ir;
  ir.input("a", {4, 64, 32}).input("b", {4, 32, 16});
  json attrs = {{"args", json::array({"bij,bjk->bik", json::array({{{"tensor", "a"}}, {{"tensor", "b"}}})})},
                {"kwargs", json::object()}};
  ir.node("out", "other:torch.einsum", {"a", "b"}, {4, 64, 16}, attrs).output("out");
  expect_problem(parse_graph(ir.doc), expected_gemm(4, 64, 16, 32, {"a", "row", 32, 64 * 32},
                                                    {"b", "row", 16, 32 * 16}, {"out", 16, 64 * 16}));
}

TEST(EinsumRule, TransposedBIsMatmulOfTheTransposedView) {
  IrBuilder mm;
  mm.input("a", {64, 32}).input("b", {16, 32});
  mm.node("bt", "t", {"b"}, {32, 16}, {}, {1, 32}).node("out", "matmul", {"a", "bt"}, {64, 16}).output("out");
  expect_problem(einsum_graph("ik,jk->ij", {64, 32}, {16, 32}, {64, 16}),
                 expected_gemm(1, 64, 16, 32, {"a", "row", 32, 0}, {"b", "col", 32, 0}, {"out", 16, 0}), &mm);
}

TEST(EinsumRule, TransposedAIsMatmulOfTheTransposedView) {
  IrBuilder mm;
  mm.input("a", {32, 64}).input("b", {32, 16});
  mm.node("at", "t", {"a"}, {64, 32}, {}, {1, 64}).node("out", "matmul", {"at", "b"}, {64, 16}).output("out");
  expect_problem(einsum_graph("ki,kj->ij", {32, 64}, {32, 16}, {64, 16}),
                 expected_gemm(1, 64, 16, 32, {"a", "col", 64, 0}, {"b", "row", 16, 0}, {"out", 16, 0}), &mm);
}

TEST(EinsumRule, AttentionScoresAreMatmulOfTransposedKeys) {
  IrBuilder mm;
  mm.input("a", {2, 4, 64, 32}).input("b", {2, 4, 48, 32});
  mm.node("kt", "transpose", {"b"}, {2, 4, 32, 48}, {{"dim0", -2}, {"dim1", -1}}, {6144, 1536, 1, 32});
  mm.node("out", "matmul", {"a", "kt"}, {2, 4, 64, 48}).output("out");
  expect_problem(einsum_graph("bhqd,bhkd->bhqk", {2, 4, 64, 32}, {2, 4, 48, 32}, {2, 4, 64, 48}),
                 expected_gemm(8, 64, 48, 32, {"a", "row", 32, 64 * 32}, {"b", "col", 32, 48 * 32},
                               {"out", 48, 64 * 48}), &mm);
}

TEST(EinsumRule, OutputListingNBeforeMSwapsTheOperands) {
  // out[b, k, i] = sum_j a[b, i, j] b[b, k, j]: D = b . a^T, so operand 1 is the GEMM's A.
  IrBuilder mm;
  mm.input("a", {4, 64, 32}).input("b", {4, 16, 32});
  mm.node("at", "transpose", {"a"}, {4, 32, 64}, {{"dim0", 1}, {"dim1", 2}}, {2048, 1, 32});
  mm.node("out", "bmm", {"b", "at"}, {4, 16, 64}).output("out");
  expect_problem(einsum_graph("bij,bkj->bki", {4, 64, 32}, {4, 16, 32}, {4, 16, 64}),
                 expected_gemm(4, 16, 64, 32, {"b", "row", 32, 16 * 32}, {"a", "col", 32, 64 * 32},
                               {"out", 64, 16 * 64}), &mm);
}

TEST(EinsumRule, EllipsisBatchFoldsIntoM) {
  expect_problem(einsum_graph("...ij,jk->...ik", {2, 3, 64, 32}, {32, 16}, {2, 3, 64, 16}),
                 expected_gemm(1, 2 * 3 * 64, 16, 32, {"a", "row", 32, 0}, {"b", "row", 16, 0}, {"out", 16, 0}));
}

TEST(EinsumRule, SeveralContractedIndicesMergeIntoK) {
  expect_problem(einsum_graph("ikl,jkl->ij", {64, 4, 8}, {16, 4, 8}, {64, 16}),
                 expected_gemm(1, 64, 16, 4 * 8, {"a", "row", 32, 0}, {"b", "col", 32, 0}, {"out", 16, 0}));
}

TEST(EinsumRule, RowsThatDoNotMergeStayBatchedLikeMatmul) {
  // a is [B, I, K] seen through a permute of an [I, B, K] tensor: (b, i) is no one stride.
  const std::vector<int64_t> a_strides = {32, 8 * 32, 1};
  IrBuilder mm;
  mm.input("a", {8, 64, 32}, "float32", a_strides).input("b", {32, 16});
  mm.node("out", "matmul", {"a", "b"}, {8, 64, 16}).output("out");
  expect_problem(einsum_graph("bik,kn->bin", {8, 64, 32}, {32, 16}, {8, 64, 16}, a_strides),
                 expected_gemm(8, 64, 16, 32, {"a", "row", 8 * 32, 32}, {"b", "row", 16, 0}, {"out", 16, 64 * 16}),
                 &mm);
}

TEST(EinsumRule, HalfPrecision) {
  GemmProblem p = problem(einsum_graph("ij,jk->ik", {64, 32}, {32, 16}, {64, 16}, {}, {}, "bfloat16"));
  EXPECT_EQ(p.element_a, DType::BFloat16);
  EXPECT_EQ(p.element_d, DType::BFloat16);
}

TEST(EinsumRule, PlanAbsorbsTheEpilogueChainAfterIt) {
  IrBuilder ir;
  ir.input("a", {4, 64, 32}).input("b", {4, 32, 16});
  ir.node("out", "other:torch.einsum", {"a", "b"}, {4, 64, 16}, einsum_args("bij,bjk->bik"));
  ir.node("relu", "relu", {"out"}, {4, 64, 16}).output("relu");
  Graph g = parse_graph(ir.doc);
  json plan = test3::plan_checked(g);
  auto gemms = test3::patterns_of(plan, "gemm");
  ASSERT_EQ(gemms.size(), 1u) << plan.dump(2);
  EXPECT_EQ(gemms[0]["root"], "out");
  EXPECT_EQ(gemms[0]["nodes"], json({"out", "relu"}));
  EXPECT_EQ(gemms[0]["outputs"], json({"relu"}));
  EXPECT_EQ(gemms[0]["gemm"]["batch"], 4);
}

// ---- rejections, one reason each ----

TEST(EinsumRule, RejectsOtherOperandCounts) {
  IrBuilder ir;
  ir.input("a", {64, 32}).input("b", {32, 16}).input("c", {16, 8});
  ir.node("out", "other:torch.einsum", {"a", "b", "c"}, {64, 8}, einsum_args("ij,jk,kl->il", 3)).output("out");
  EXPECT_REASON(parse_graph(ir.doc), "has 3 operands; only a two-operand contraction is a GEMM");
  IrBuilder one;
  one.input("a", {64, 32});
  one.node("out", "other:torch.einsum", {"a"}, {32, 64}, einsum_args("ij->ji", 1)).output("out");
  EXPECT_REASON(parse_graph(one.doc), "has 1 operands");
}

TEST(EinsumRule, RejectsTheSublistForm) {
  IrBuilder ir;
  ir.input("a", {64, 32}).input("b", {32, 16});
  json attrs = {{"args", json::array({{{"tensor", "a"}}, {0, 1}, {{"tensor", "b"}}, {1, 2}, {0, 2}})},
                {"kwargs", json::object()}};
  ir.node("out", "other:torch.einsum", {"a", "b"}, {64, 16}, attrs).output("out");
  EXPECT_REASON(parse_graph(ir.doc), "no equation string");
}

TEST(EinsumRule, RejectsADiagonal) {
  EXPECT_REASON(einsum_graph("iij,jk->ik", {64, 64, 32}, {32, 16}, {64, 16}), "index 'i' repeats in operand 0");
}

TEST(EinsumRule, RejectsASumOverOneOperand) {
  EXPECT_REASON(einsum_graph("ijl,jk->ik", {64, 32, 8}, {32, 16}, {64, 16}),
                "index 'l' is only in operand 0 'ijl' and not in the output: summing over it is a reduction");
}

TEST(EinsumRule, RejectsAnOuterProduct) {
  EXPECT_REASON(einsum_graph("ij,kl->ijkl", {8, 8}, {8, 8}, {8, 8, 8, 8}), "contracts no index");
}

TEST(EinsumRule, RejectsAMatrixVectorProduct) {
  EXPECT_REASON(einsum_graph("ij,j->i", {64, 32}, {32}, {64}),
                "operand 1 'j' has no index of its own in the output: a matrix-vector product");
}

TEST(EinsumRule, RejectsABroadcastContraction) {
  EXPECT_REASON(einsum_graph("ij,jk->ik", {64, 1}, {32, 16}, {64, 16}),
                "contracted index 'j' has extent 1 in operand 0 'ij' and 32 in operand 1 'jk'");
}

TEST(EinsumRule, RejectsNonFloatDtypes) {
  EXPECT_REASON(einsum_graph("ij,jk->ik", {64, 32}, {32, 16}, {64, 16}, {}, {}, "int64"),
                "dtype int64 is not supported");
}

TEST(EinsumRule, RejectsAnEquationThatDoesNotFitTheOperands) {
  EXPECT_REASON(einsum_graph("ij,jk->ik", {4, 64, 32}, {32, 16}, {64, 16}), "operand 0 has 3 dims");
}

TEST(EinsumRule, RejectsAnOutputInterleavingBatchAndM) {
  EXPECT_REASON(einsum_graph("bij,bjk->ibk", {4, 64, 32}, {4, 32, 16}, {64, 4, 16}),
                "output 'ibk' does not list batch, then m, then n indices");
}

TEST(EinsumRule, RejectsANonContiguousOutput) {
  EXPECT_REASON(einsum_graph("bij,bjk->ibk", {4, 64, 32}, {4, 32, 16}, {64, 4, 16}, {}, {}, "float32", {16, 1024, 1}),
                "output is not contiguous row-major (strides [16, 1024, 1])");
}

TEST(EinsumRule, RejectsAnOperandListingARunOutOfOrder) {
  // Memory of a is [i, j, l] (a permuted view) but it lists j first: no binding walks it.
  EXPECT_REASON(einsum_graph("jil,lk->ijk", {16, 8, 32}, {32, 16}, {8, 16, 16}, {32, 16 * 32, 1}),
                "operand 0 'jil' does not list its dims as the runs 'ij' and 'l' in either order");
  EXPECT_REASON(einsum_graph("ikl,jlk->ij", {64, 4, 8}, {16, 8, 4}, {64, 16}),
                "operand 1 'jlk' does not list its dims as the runs 'kl' and 'j' in either order");
  // torch's implicit output sums b: k = (b, j) is split by i in a.
  EXPECT_REASON(einsum_graph("bij,bjk", {4, 64, 32}, {4, 32, 16}, {64, 16}),
                "operand 0 'bij' does not list its dims as the runs 'i' and 'bj' in either order");
}

TEST(EinsumRule, RejectsARunThatDoesNotMerge) {
  // k = (k, l) with a padded k stride: not one stride.
  EXPECT_REASON(einsum_graph("ikl,jkl->ij", {64, 4, 8}, {16, 4, 8}, {64, 16}, {64, 16, 1}),
                "indices 'kl' of operand 0 'ikl' (extents [4, 8] strides [16, 1]) do not merge into one stride");
}

TEST(EinsumRule, RejectsAnInnerRunListedFirst) {
  // a is a transposed view (column-major) that lists k last: the binding would read it row-major.
  EXPECT_REASON(einsum_graph("ik,kj->ij", {64, 32}, {32, 16}, {64, 16}, {1, 64}),
                "operand 0 'ik' is col-major by its strides [1, 64] but lists 'k' last");
}

}  // namespace
}  // namespace fact
