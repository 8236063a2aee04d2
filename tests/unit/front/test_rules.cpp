// The GEMM rule on every op spelling capture produces, the layouts it derives,
// transposes it absorbs (and one it must not), and each guard's rejection reason.
#include <gtest/gtest.h>

#include "fact/rules.hpp"
#include "test_util.hpp"

namespace fact {
namespace {

using test::IrBuilder;

MatchOutcome run_rule(const Graph& g, const std::string& root) {
  const Node* node = g.find_node(root);
  EXPECT_NE(node, nullptr) << root;
  auto rules = RuleSet::builtin().for_op(node->op);
  EXPECT_EQ(rules.size(), 1u);
  return rules[0]->match(g, *node);
}

GemmProblem matched(const std::string& fixture, const std::string& root, Match* out = nullptr) {
  Graph g = load_graph(test::fixture(fixture));
  MatchOutcome o = run_rule(g, root);
  EXPECT_TRUE(o.match.has_value()) << fixture << ": " << o.reason;
  if (!o.match) return {};
  if (out) *out = *o.match;
  return *o.match->gemm;
}

std::string rejected(const Graph& g, const std::string& root) {
  MatchOutcome o = run_rule(g, root);
  EXPECT_FALSE(o.match.has_value());
  return o.reason;
}

TEST(RuleSet, IndexesByRootOp) {
  const RuleSet& rules = RuleSet::builtin();
  for (const char* op : {"mm", "bmm", "matmul", "linear", "addmm", "baddbmm"}) {
    ASSERT_EQ(rules.for_op(op).size(), 1u) << op;
    EXPECT_EQ(rules.for_op(op)[0]->name, "gemm");
  }
  EXPECT_TRUE(rules.for_op("softmax").empty());
  EXPECT_TRUE(rules.for_op("t").empty());
}

TEST(GemmRule, MmSquare) {
  Match m;
  GemmProblem p = matched("mm_square_4096.json", "mm", &m);
  EXPECT_EQ(p.batch, 1);
  EXPECT_EQ(p.m, 4096);
  EXPECT_EQ(p.n, 4096);
  EXPECT_EQ(p.k, 4096);
  EXPECT_EQ(p.a.layout, "row");
  EXPECT_EQ(p.a.ld, 4096);
  EXPECT_EQ(p.b.layout, "row");
  EXPECT_EQ(p.b.ld, 4096);
  EXPECT_EQ(p.d.ld, 4096);
  EXPECT_EQ(p.epilogue.kind, "none");
  EXPECT_EQ(m.problem_key, "gemm:f32:b1:m4096:n4096:k4096:a=row:b=row:ep=none");
  EXPECT_EQ(m.shape_class, "gemm:f32:b1:m4k:n4k:k4k");
  EXPECT_EQ(m.nodes, (std::vector<std::string>{"mm"}));
  EXPECT_EQ(m.inputs, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(m.outputs, (std::vector<std::string>{"mm"}));
}

TEST(GemmRule, Matmul2d) {
  GemmProblem p = matched("matmul_2d.json", "matmul");
  EXPECT_EQ(p.m, 512);
  EXPECT_EQ(p.n, 1024);
  EXPECT_EQ(p.k, 256);
  EXPECT_EQ(p.b.ld, 1024);
}

TEST(GemmRule, Matmul3dx2dFoldsBatchIntoM) {
  GemmProblem p = matched("matmul_3d_2d.json", "matmul");
  EXPECT_EQ(p.batch, 1);
  EXPECT_EQ(p.m, 8 * 128);
  EXPECT_EQ(p.n, 512);
  EXPECT_EQ(p.k, 256);
  EXPECT_EQ(p.a.batch_stride, 0);
  EXPECT_EQ(p.d.batch_stride, 0);
}

TEST(GemmRule, Matmul3dx2dWithTransposedActivationStaysBatched) {
  // x is [B, M, K] stored as [B, K, M] transposed: rows of batches are not ld apart.
  IrBuilder b;
  b.input("x", {8, 64, 32}, "float32", {2048, 1, 64}).param("w", {32, 16}).node("mm", "matmul", {"x", "w"}, {8, 64, 16}).output("mm");
  Graph g = parse_graph(b.doc);
  MatchOutcome o = run_rule(g, "mm");
  ASSERT_TRUE(o.match) << o.reason;
  const GemmProblem& p = *o.match->gemm;
  EXPECT_EQ(p.batch, 8);
  EXPECT_EQ(p.a.layout, "col");
  EXPECT_EQ(p.a.ld, 64);
  EXPECT_EQ(p.a.batch_stride, 2048);
  EXPECT_EQ(p.b.batch_stride, 0);  // shared by all batches
}

TEST(GemmRule, Bmm) {
  GemmProblem p = matched("bmm_128x512x1024x2048.json", "bmm");
  EXPECT_EQ(p.batch, 128);
  EXPECT_EQ(p.m, 512);
  EXPECT_EQ(p.n, 2048);
  EXPECT_EQ(p.k, 1024);
  EXPECT_EQ(p.a.batch_stride, 512 * 1024);
  EXPECT_EQ(p.b.batch_stride, 1024 * 2048);
  EXPECT_EQ(p.d.batch_stride, 512 * 2048);
}

TEST(GemmRule, NdBatchedBroadcastsA2dOperand) {
  GemmProblem p = matched("matmul_nd_broadcast.json", "matmul");
  EXPECT_EQ(p.batch, 6);
  EXPECT_EQ(p.a.batch_stride, 0);
  EXPECT_EQ(p.b.batch_stride, 32 * 16);
  EXPECT_EQ(p.d.batch_stride, 64 * 16);
}

TEST(GemmRule, LinearWithBias) {
  Match m;
  GemmProblem p = matched("linear_bias.json", "fc", &m);
  EXPECT_EQ(p.m, 64);
  EXPECT_EQ(p.n, 3072);
  EXPECT_EQ(p.k, 768);
  EXPECT_EQ(p.b.tensor, "fc_weight");
  EXPECT_EQ(p.b.layout, "col");
  EXPECT_EQ(p.b.ld, 768);
  EXPECT_EQ(p.epilogue.kind, "bias");
  EXPECT_EQ(p.epilogue.tensor, "fc_bias");
  EXPECT_DOUBLE_EQ(p.epilogue.alpha, 1.0);
  EXPECT_DOUBLE_EQ(p.epilogue.beta, 1.0);
  EXPECT_EQ(m.inputs, (std::vector<std::string>{"x", "fc_weight", "fc_bias"}));
  EXPECT_EQ(m.problem_key, "gemm:f32:b1:m64:n3072:k768:a=row:b=col:ep=bias");
}

TEST(GemmRule, LinearWithoutBias3dInput) {
  GemmProblem p = matched("linear_nobias_3d.json", "proj");
  EXPECT_EQ(p.batch, 1);
  EXPECT_EQ(p.m, 16 * 32);
  EXPECT_EQ(p.epilogue.kind, "none");
  EXPECT_DOUBLE_EQ(p.epilogue.beta, 0.0);
  EXPECT_EQ(p.b.layout, "col");
}

TEST(GemmRule, LinearWithNoneBiasConst) {
  IrBuilder b;
  b.input("x", {16, 64}).param("w", {32, 64}).node("fc", "linear", {"x", "w", "none"}, {16, 32}).output("fc");
  b.doc["tensors"]["none"] = {{"shape", nlohmann::json::array()}, {"dtype", "float32"},
                              {"strides", nlohmann::json::array()}, {"kind", "const"}, {"value", nullptr}};
  Graph g = parse_graph(b.doc);
  MatchOutcome o = run_rule(g, "fc");
  ASSERT_TRUE(o.match) << o.reason;
  EXPECT_EQ(o.match->gemm->epilogue.kind, "none");
}

TEST(GemmRule, LinearOfTransposedWeightReadsItRowMajor) {
  // linear(x, p.t()) computes x @ p: B is p itself, row-major.
  IrBuilder b;
  b.input("x", {16, 64}).param("p", {64, 32});
  b.node("t", "t", {"p"}, {32, 64}, {}, {1, 32});
  b.node("fc", "linear", {"x", "t"}, {16, 32}).output("fc");
  Graph g = parse_graph(b.doc);
  MatchOutcome o = run_rule(g, "fc");
  ASSERT_TRUE(o.match) << o.reason;
  EXPECT_EQ(o.match->gemm->b.tensor, "p");
  EXPECT_EQ(o.match->gemm->b.layout, "row");
  EXPECT_EQ(o.match->gemm->b.ld, 32);
  EXPECT_EQ(o.match->nodes, (std::vector<std::string>{"t", "fc"}));
}

TEST(GemmRule, AddmmRowBias) {
  GemmProblem p = matched("addmm_row_bias.json", "addmm");
  EXPECT_EQ(p.epilogue.kind, "bias");
  EXPECT_EQ(p.epilogue.tensor, "bias");
  EXPECT_DOUBLE_EQ(p.epilogue.beta, 1.0);
  EXPECT_DOUBLE_EQ(p.epilogue.alpha, 1.0);
  EXPECT_EQ(p.a.tensor, "x");
  EXPECT_EQ(p.b.tensor, "w");
}

TEST(GemmRule, AddmmFullC) {
  GemmProblem p = matched("addmm_full_c.json", "addmm");
  EXPECT_EQ(p.epilogue.kind, "c");
  EXPECT_EQ(p.epilogue.tensor, "c");
  EXPECT_EQ(p.epilogue.ld, 1024);
  EXPECT_DOUBLE_EQ(p.epilogue.beta, 0.5);
  EXPECT_DOUBLE_EQ(p.epilogue.alpha, 2.0);
}

TEST(GemmRule, AddmmBetaZeroIgnoresInput) {
  IrBuilder b;
  b.input("c", {16, 32}).input("x", {16, 64}).input("w", {64, 32});
  b.node("addmm", "addmm", {"c", "x", "w"}, {16, 32}, {{"beta", 0}, {"alpha", 3}}).output("addmm");
  Graph g = parse_graph(b.doc);
  MatchOutcome o = run_rule(g, "addmm");
  ASSERT_TRUE(o.match) << o.reason;
  EXPECT_EQ(o.match->gemm->epilogue.kind, "none");
  EXPECT_DOUBLE_EQ(o.match->gemm->epilogue.alpha, 3.0);
  EXPECT_EQ(o.match->inputs, (std::vector<std::string>{"x", "w"}));
}

TEST(GemmRule, AddmmColumnVectorRejected) {
  IrBuilder b;
  b.input("c", {16, 1}).input("x", {16, 64}).input("w", {64, 32});
  b.node("addmm", "addmm", {"c", "x", "w"}, {16, 32}).output("addmm");
  std::string why = rejected(parse_graph(b.doc), "addmm");
  EXPECT_NE(why.find("broadcasts along columns"), std::string::npos) << why;
}

TEST(GemmRule, BaddbmmWithC) {
  GemmProblem p = matched("baddbmm_c.json", "baddbmm");
  EXPECT_EQ(p.batch, 4);
  EXPECT_EQ(p.epilogue.kind, "c");
  EXPECT_EQ(p.epilogue.batch_stride, 64 * 128);
  EXPECT_DOUBLE_EQ(p.epilogue.alpha, 0.125);
}

TEST(GemmRule, XTimesWtAbsorbsT) {
  Match m;
  GemmProblem p = matched("mm_x_wt.json", "mm", &m);
  EXPECT_EQ(p.b.tensor, "w");  // the tensor before the transpose
  EXPECT_EQ(p.b.layout, "col");
  EXPECT_EQ(p.b.ld, 256);
  EXPECT_EQ(p.n, 512);
  EXPECT_EQ(p.k, 256);
  EXPECT_EQ(m.nodes, (std::vector<std::string>{"t", "mm"}));
  EXPECT_EQ(m.inputs, (std::vector<std::string>{"x", "w"}));
}

TEST(GemmRule, TransposeLastTwoAbsorbed) {
  Match m;
  GemmProblem p = matched("bmm_transpose_last2.json", "bmm", &m);
  EXPECT_EQ(p.b.tensor, "k");
  EXPECT_EQ(p.b.layout, "col");
  EXPECT_EQ(p.b.ld, 32);
  EXPECT_EQ(p.b.batch_stride, 64 * 32);
  EXPECT_EQ(m.nodes, (std::vector<std::string>{"transpose", "bmm"}));
}

TEST(GemmRule, PermuteSwapAbsorbed) {
  Match m;
  GemmProblem p = matched("matmul_permute_swap.json", "matmul", &m);
  EXPECT_EQ(p.b.tensor, "b");
  EXPECT_EQ(p.b.layout, "col");
  EXPECT_EQ(p.b.ld, 64);
  EXPECT_EQ(p.batch, 4);
  EXPECT_EQ(m.nodes, (std::vector<std::string>{"permute", "matmul"}));
}

TEST(GemmRule, PermuteMovingBatchDimNotAbsorbedButStridesStillUsed) {
  IrBuilder b;
  b.input("x", {4, 8, 16}).param("w", {16, 32});
  b.node("p", "permute", {"x"}, {8, 4, 16}, {{"dims", {1, 0, 2}}}, {16, 128, 1});
  b.node("mm", "matmul", {"p", "w"}, {8, 4, 32}).output("mm");
  Graph g = parse_graph(b.doc);
  MatchOutcome o = run_rule(g, "mm");
  ASSERT_TRUE(o.match) << o.reason;
  EXPECT_EQ(o.match->nodes, (std::vector<std::string>{"mm"}));
  EXPECT_EQ(o.match->gemm->a.tensor, "p");
  EXPECT_EQ(o.match->gemm->a.ld, 128);
  EXPECT_EQ(o.match->gemm->a.batch_stride, 16);
  EXPECT_EQ(o.match->gemm->batch, 8);
}

TEST(GemmRule, TransposeWithSecondConsumerIsNotAbsorbed) {
  Match m;
  GemmProblem p = matched("transpose_shared.json", "mm", &m);
  EXPECT_EQ(p.b.tensor, "t");  // reads the transposed view PyTorch produces
  EXPECT_EQ(p.b.layout, "col");
  EXPECT_EQ(m.nodes, (std::vector<std::string>{"mm"}));
  ASSERT_EQ(m.notes.count("t"), 1u);
  EXPECT_NE(m.notes["t"].find("2 readers"), std::string::npos) << m.notes["t"];
}

TEST(GemmRule, DoubleTransposeCancels) {
  IrBuilder b;
  b.input("x", {32, 64}).param("w", {64, 48});
  b.node("t1", "t", {"w"}, {48, 64}, {}, {1, 48});
  b.node("t2", "transpose", {"t1"}, {64, 48}, {{"dim0", 0}, {"dim1", 1}});
  b.node("mm", "mm", {"x", "t2"}, {32, 48}).output("mm");
  Graph g = parse_graph(b.doc);
  MatchOutcome o = run_rule(g, "mm");
  ASSERT_TRUE(o.match) << o.reason;
  EXPECT_EQ(o.match->gemm->b.tensor, "w");
  EXPECT_EQ(o.match->gemm->b.layout, "row");
  EXPECT_EQ(o.match->gemm->b.ld, 48);
  EXPECT_EQ(o.match->nodes, (std::vector<std::string>{"t1", "t2", "mm"}));
}

// Alignment is the kernels' business (realize skips each variant a shape misaligns):
// the rule matches misaligned extents and leading dimensions as they are.
TEST(GemmRule, MisalignedShapesMatch) {
  MatchOutcome k3 = run_rule(load_graph(test::fixture("misaligned_k.json")), "mm");
  ASSERT_TRUE(k3.match) << k3.reason;
  EXPECT_EQ(k3.match->gemm->k, 3);

  IrBuilder half;
  half.input("x", {64, 12}, "float16").input("w", {12, 64}, "float16");
  half.node("mm", "mm", {"x", "w"}, {64, 64}, {}, {}, "float16").output("mm");
  MatchOutcome k12 = run_rule(parse_graph(half.doc), "mm");
  ASSERT_TRUE(k12.match) << k12.reason;
  EXPECT_EQ(k12.match->gemm->k, 12);

  IrBuilder strided;
  strided.input("x", {64, 32}, "float32", {34, 1}).input("w", {32, 64});
  strided.node("mm", "mm", {"x", "w"}, {64, 64}).output("mm");
  MatchOutcome ld34 = run_rule(parse_graph(strided.doc), "mm");
  ASSERT_TRUE(ld34.match) << ld34.reason;
  EXPECT_EQ(ld34.match->gemm->a.layout, "row");
  EXPECT_EQ(ld34.match->gemm->a.ld, 34);
}

// Where the bound tensor does not list the operand's dims in the order its layout implies,
// the binding says so (GemmOperand::order), so that the runtime checks its strides in the
// tensor's own order; the conventional cases carry no order.
TEST(GemmRule, OperandOrderFollowsTheBoundTensor) {
  IrBuilder col_input;  // A is a column-major input: the tensor is the transposed view itself
  col_input.input("x", {64, 32}, "float32", {1, 64}).input("w", {32, 48});
  col_input.node("mm", "mm", {"x", "w"}, {64, 48}).output("mm");
  MatchOutcome own = run_rule(parse_graph(col_input.doc), "mm");
  ASSERT_TRUE(own.match) << own.reason;
  EXPECT_EQ(own.match->gemm->a.layout, "col");
  EXPECT_EQ(own.match->gemm->a.order, "rows_cols");
  EXPECT_EQ(own.match->gemm->to_json()["a"]["order"], "rows_cols");
  EXPECT_EQ(own.match->gemm->b.order, "");
  EXPECT_FALSE(own.match->gemm->to_json()["b"].contains("order"));

  IrBuilder absorbed;  // x.t() of that column-major tensor: row-major A bound through x
  absorbed.input("x", {32, 64}, "float32", {1, 32}).input("w", {32, 48});
  absorbed.node("t", "t", {"x"}, {64, 32}, {}, {32, 1});
  absorbed.node("mm", "mm", {"t", "w"}, {64, 48}).output("mm");
  MatchOutcome swapped = run_rule(parse_graph(absorbed.doc), "mm");
  ASSERT_TRUE(swapped.match) << swapped.reason;
  EXPECT_EQ(swapped.match->gemm->a.tensor, "x");
  EXPECT_EQ(swapped.match->gemm->a.layout, "row");
  EXPECT_EQ(swapped.match->gemm->a.order, "cols_rows");
  EXPECT_EQ(GemmProblem::from_json(swapped.match->gemm->to_json()).a.order, "cols_rows");
}

TEST(GemmRule, Fp64Rejected) {
  std::string why = rejected(load_graph(test::fixture("fp64_mm.json")), "mm");
  EXPECT_EQ(why, "dtype float64 is not supported (float32, float16, bfloat16)");
}

TEST(GemmRule, MixedDtypesRejected) {
  IrBuilder b;
  b.input("x", {64, 32}, "float16").input("w", {32, 64}, "bfloat16");
  b.node("mm", "mm", {"x", "w"}, {64, 64}, {}, {}, "float16").output("mm");
  EXPECT_EQ(rejected(parse_graph(b.doc), "mm"), "operand dtypes differ: a is float16, b is bfloat16");
}

TEST(GemmRule, StridedOperandRejected) {
  std::string why = rejected(load_graph(test::fixture("strided_operand.json")), "mm");
  EXPECT_EQ(why, "operand a is not row- or column-major: strides [128, 2]");
}

TEST(GemmRule, DynamicShapeRejected) {
  IrBuilder b;
  b.input("x", {64, 32}).input("w", {32, 64}).node("mm", "mm", {"x", "w"}, {64, 64}).output("mm");
  b.doc["tensors"]["x"]["shape"] = {nullptr, 32};
  std::string why = rejected(parse_graph(b.doc), "mm");
  EXPECT_NE(why.find("dynamic shape"), std::string::npos) << why;
}

TEST(GemmRule, NonContiguousOutputRejected) {
  IrBuilder b;
  b.input("x", {64, 32}).input("w", {32, 64}).node("mm", "mm", {"x", "w"}, {64, 64}, {}, {1, 64}).output("mm");
  EXPECT_EQ(rejected(parse_graph(b.doc), "mm"), "output d is not contiguous row-major: strides [1, 64]");
}

TEST(GemmRule, MatrixVectorRejected) {
  IrBuilder b;
  b.input("x", {64, 32}).input("v", {32}).node("mv", "matmul", {"x", "v"}, {64}).output("mv");
  std::string why = rejected(parse_graph(b.doc), "mv");
  EXPECT_NE(why.find("matrix-vector"), std::string::npos) << why;
}

TEST(GemmRule, PartiallyBroadcastBatchRejected) {
  // b's batch dims are [2, 1] against [2, 3]: stride 0 inside a strided dim cannot be one batch stride.
  IrBuilder b;
  b.input("a", {2, 3, 16, 16}).input("b", {2, 1, 16, 16});
  b.node("mm", "matmul", {"a", "b"}, {2, 3, 16, 16}).output("mm");
  std::string why = rejected(parse_graph(b.doc), "mm");
  EXPECT_NE(why.find("operand b's batch dims"), std::string::npos) << why;
}

TEST(Layout, ClassifyMatrix) {
  auto row = classify_matrix(64, 32, 32, 1);
  EXPECT_TRUE(row.ok);
  EXPECT_EQ(row.layout, "row");
  EXPECT_EQ(row.ld, 32);
  auto col = classify_matrix(64, 32, 1, 64);
  EXPECT_EQ(col.layout, "col");
  EXPECT_EQ(col.ld, 64);
  auto padded = classify_matrix(64, 32, 1, 80);
  EXPECT_EQ(padded.layout, "col");
  EXPECT_EQ(padded.ld, 80);
  EXPECT_FALSE(classify_matrix(64, 32, 64, 2).ok);
  EXPECT_FALSE(classify_matrix(64, 32, 16, 1).ok);  // rows overlap
}

TEST(Layout, BatchStrideCollapse) {
  EXPECT_EQ(collapse_batch_stride({2, 3}, {2, 3}, {30, 10}), 10);
  EXPECT_EQ(collapse_batch_stride({2, 3}, {}, {}), 0);
  EXPECT_EQ(collapse_batch_stride({2, 3}, {3}, {10}), std::nullopt);
  EXPECT_EQ(collapse_batch_stride({1, 5}, {1, 5}, {999, 7}), 7);
  EXPECT_EQ(broadcast_shapes({2, 1}, {3}), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(broadcast_shapes({2}, {3}), std::nullopt);
}

TEST(GemmProblem, JsonRoundTripAndBuckets) {
  GemmProblem p = matched("linear_bias.json", "fc");
  nlohmann::json j = p.to_json();
  EXPECT_EQ(j["b"]["layout"], "col");
  EXPECT_EQ(j["epilogue"]["tensor"], "fc_bias");
  EXPECT_EQ(j["element_d"], "float32");
  GemmProblem back = GemmProblem::from_json(j);
  EXPECT_EQ(back.problem_key(), p.problem_key());
  EXPECT_EQ(back.b.ld, 768);
  j.erase("k");
  EXPECT_THROW(GemmProblem::from_json(j), std::runtime_error);
  EXPECT_EQ(size_bucket(4096), "4k");
  EXPECT_EQ(size_bucket(3000), "4k");
  EXPECT_EQ(size_bucket(768), "1k");
  EXPECT_EQ(size_bucket(100), "128");
  EXPECT_EQ(size_bucket(524288), "512k");
  EXPECT_EQ(size_bucket(1 << 21), "2M");
}

}  // namespace
}  // namespace fact
