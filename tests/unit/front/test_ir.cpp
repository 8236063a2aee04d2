// Graph IR parsing and validation: good files parse into the right structure,
// and every kind of malformed input fails with a message naming file, object and field.
#include <gtest/gtest.h>

#include <fstream>

#include "fact/ir.hpp"
#include "test_util.hpp"

namespace fact {
namespace {

using test::IrBuilder;

// Expects parse_graph to throw IrError whose message contains every fragment.
void expect_error(const nlohmann::json& doc, const std::vector<std::string>& fragments) {
  try {
    parse_graph(doc, "g.json");
    FAIL() << "expected an IrError";
  } catch (const IrError& e) {
    const std::string msg = e.what();
    for (const auto& f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << "'" << f << "' not in: " << msg;
  }
}

IrBuilder simple_mm() {
  IrBuilder b;
  b.input("x", {4, 8}).param("w", {8, 16}).node("mm", "mm", {"x", "w"}, {4, 16}).output("mm");
  return b;
}

TEST(Ir, ParsesFixtureWithProducersAndConsumers) {
  Graph g = load_graph(test::fixture("transpose_shared.json"));
  EXPECT_EQ(g.version, 1);
  EXPECT_EQ(g.module, "Model");
  ASSERT_EQ(g.nodes.size(), 3u);
  EXPECT_EQ(g.nodes[0].op, "t");
  const Tensor& t = g.tensor("t");
  EXPECT_EQ(t.shape, (std::vector<int64_t>{64, 64}));
  EXPECT_EQ(t.strides, (std::vector<int64_t>{1, 64}));
  EXPECT_FALSE(t.is_contiguous());
  EXPECT_EQ(g.tensor("x").kind, TensorKind::Input);
  EXPECT_EQ(g.tensor("w").index, 1);
  ASSERT_NE(g.producer("t"), nullptr);
  EXPECT_EQ(g.producer("t")->id, "t");
  EXPECT_EQ(g.producer("x"), nullptr);
  auto readers = g.consumers("t");
  ASSERT_EQ(readers.size(), 2u);
  EXPECT_EQ(readers[0]->id, "mm");
  EXPECT_EQ(readers[1]->id, "add");
  EXPECT_FALSE(g.single_use("t"));
  EXPECT_TRUE(g.single_use("mm"));
  EXPECT_TRUE(g.is_graph_output("add"));
  EXPECT_FALSE(g.single_use("add"));  // graph output counts as a reader
  EXPECT_EQ(g.use_count("add"), 1);
}

TEST(Ir, CopiedGraphKeepsValidIndices) {
  Graph original = parse_graph(simple_mm().doc);
  Graph copy = original;
  original.nodes.clear();
  ASSERT_EQ(copy.consumers("x").size(), 1u);
  EXPECT_EQ(copy.consumers("x")[0]->id, "mm");
  EXPECT_EQ(copy.producer("mm")->op, "mm");
}

TEST(Ir, DtypesAndConstants) {
  IrBuilder b = simple_mm();
  b.doc["tensors"]["c0"] = {{"shape", nlohmann::json::array()}, {"dtype", "float32"},
                            {"strides", nlohmann::json::array()}, {"kind", "const"}, {"value", 0.5}};
  Graph g = parse_graph(b.doc);
  EXPECT_EQ(g.tensor("c0").kind, TensorKind::Const);
  EXPECT_DOUBLE_EQ(g.tensor("c0").value.get<double>(), 0.5);
  EXPECT_EQ(parse_dtype("bfloat16"), DType::BFloat16);
  EXPECT_FALSE(parse_dtype("float8").has_value());
  EXPECT_EQ(dtype_bytes(DType::Float16), 2);
  EXPECT_STREQ(dtype_short(DType::Float32), "f32");
}

TEST(Ir, DynamicDimIsNull) {
  IrBuilder b = simple_mm();
  b.doc["tensors"]["x"]["shape"] = {nullptr, 8};
  Graph g = parse_graph(b.doc);
  EXPECT_TRUE(g.tensor("x").has_dynamic_dim());
  EXPECT_EQ(g.tensor("x").numel(), -1);
}

TEST(Ir, RejectsMissingOrWrongVersion) {
  IrBuilder b = simple_mm();
  b.doc.erase("fact_ir");
  expect_error(b.doc, {"g.json", "fact_ir", "missing"});
  b.doc["fact_ir"] = 2;
  expect_error(b.doc, {"g.json", "fact_ir", "version 2", "upgrade"});
  b.doc["fact_ir"] = "1";
  expect_error(b.doc, {"fact_ir", "integer"});
}

TEST(Ir, RejectsBadTensorFields) {
  IrBuilder b = simple_mm();
  b.doc["tensors"]["x"]["dtype"] = "float8";
  expect_error(b.doc, {"g.json", "tensor 'x'", "field 'dtype'", "float8"});

  b = simple_mm();
  b.doc["tensors"]["x"]["strides"] = {8};
  expect_error(b.doc, {"tensor 'x'", "field 'strides'", "rank 2"});

  b = simple_mm();
  b.doc["tensors"]["w"].erase("target");
  expect_error(b.doc, {"tensor 'w'", "field 'target'", "missing"});

  b = simple_mm();
  b.doc["tensors"]["x"]["kind"] = "weird";
  expect_error(b.doc, {"tensor 'x'", "field 'kind'", "weird"});

  b = simple_mm();
  b.doc["tensors"]["x"]["shape"] = {4, -2};
  expect_error(b.doc, {"tensor 'x'", "field 'shape'", "negative"});

  b = simple_mm();
  b.doc["tensors"]["x"]["shape"] = {4, "8"};
  expect_error(b.doc, {"tensor 'x'", "field 'shape'", "string"});
}

TEST(Ir, RejectsBadNodes) {
  IrBuilder b = simple_mm();
  b.doc["nodes"][0]["inputs"] = {"x", "nope"};
  expect_error(b.doc, {"node 'mm'", "field 'inputs'", "unknown tensor 'nope'"});

  b = simple_mm();
  b.doc["nodes"][0].erase("op");
  expect_error(b.doc, {"node 'mm'", "field 'op'", "missing"});

  b = simple_mm();
  b.doc["nodes"][0].erase("id");
  expect_error(b.doc, {"node #0", "field 'id'"});

  b = simple_mm();
  b.node("mm2", "mm", {"x", "w"}, {4, 16});
  b.doc["nodes"][1]["outputs"] = {"mm"};
  expect_error(b.doc, {"node 'mm2'", "already produced by node 'mm'"});

  b = simple_mm();
  b.doc["nodes"][0]["outputs"] = {"x"};
  expect_error(b.doc, {"node 'mm'", "field 'outputs'", "kind 'input'"});

  // A value read before it is produced (nodes out of order).
  IrBuilder order;
  order.input("x", {4, 4}).node("a", "relu", {"x"}, {4, 4}).node("b", "relu", {"a"}, {4, 4}).output("b");
  std::swap(order.doc["nodes"][0], order.doc["nodes"][1]);
  expect_error(order.doc, {"node 'b'", "read before any node produces it"});

  b = simple_mm();
  b.doc["nodes"].push_back(b.doc["nodes"][0]);
  expect_error(b.doc, {"node 'mm'", "duplicate"});
}

TEST(Ir, RejectsOrphanValueAndUnknownOutput) {
  IrBuilder b = simple_mm();
  b.doc["tensors"]["ghost"] = {{"shape", {1}}, {"dtype", "float32"}, {"strides", {1}}, {"kind", "value"}};
  expect_error(b.doc, {"tensor 'ghost'", "no node produces it"});

  b = simple_mm();
  b.doc["outputs"] = {"nothing"};
  expect_error(b.doc, {"field 'outputs'", "unknown tensor 'nothing'"});
}

TEST(Ir, LoadReportsMissingFileAndMalformedJson) {
  test::TempDir dir;
  try {
    load_graph(dir.file("absent.json"));
    FAIL();
  } catch (const IrError& e) {
    EXPECT_NE(std::string(e.what()).find("absent.json: cannot open"), std::string::npos) << e.what();
  }
  {
    std::ofstream(dir.file("bad.json")) << "{\"fact_ir\": 1, \"tensors\": {";
  }
  try {
    load_graph(dir.file("bad.json"));
    FAIL();
  } catch (const IrError& e) {
    EXPECT_NE(std::string(e.what()).find("bad.json: malformed JSON"), std::string::npos) << e.what();
  }
}

TEST(Ir, ContiguityAndFormatting) {
  Tensor t;
  t.shape = {2, 1, 3};
  t.strides = {3, 99, 1};  // a size-1 dim's stride does not matter
  EXPECT_TRUE(t.is_contiguous());
  t.strides = {1, 3, 2};
  EXPECT_FALSE(t.is_contiguous());
  EXPECT_EQ(format_dims({4096, 1}), "[4096, 1]");
  EXPECT_EQ(contiguous_strides({2, 3, 4}), (std::vector<int64_t>{12, 4, 1}));
}

}  // namespace
}  // namespace fact
