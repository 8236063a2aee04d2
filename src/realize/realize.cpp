// fact realize: plan.json -> candidates per pattern -> parallel nvcc into the
// kernel cache -> verify + time in worker processes -> registry -> realized.json.
#include "fact/realize.hpp"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "fact/build.hpp"
#include "fact/emit.hpp"
#include "fact/epilogue_emit.hpp"
#include "fact/env.hpp"
#include "fact/log.hpp"
#include "fact/realized.hpp"
#include "fact/registry.hpp"
#include "fact/pattern_realizer.hpp"
#include "fact/variant.hpp"
#include "fact/worker_client.hpp"

namespace fs = std::filesystem;
using nlohmann::json;

namespace fact {

static std::vector<std::string> reduce_to_gemm_core(nlohmann::json& pattern);

namespace {

struct Candidate {
  GemmVariant variant;  // GEMM candidates only; a rule realizer's candidate has just name/math/flags/source
  std::string name;
  std::string math;     // the math-mode token the report and registry state
  std::vector<std::string> flags;
  std::string source;
  CompileResult compile;
  bool compiled = false;  // compile attempted
  bool deferred = false;  // held back until its math mode's accuracy probe passed (hold_for_probes)
  std::optional<CandidateResult> result;
};

struct PatternWork {
  json pattern;
  std::string id, rule, dtype, arch, problem_key, shape_class;
  std::optional<GemmProblemDesc> problem;
  std::string fallback_reason;  // set when the pattern cannot be attempted at all
  std::vector<std::string> left_to_pytorch;  // epilogue-chain nodes of the plan pattern the kernel does not compute
  // Set while the pattern's epilogue chain is realized in the kernel (sm90 EVT
  // variants, epilogue_emit.hpp); cleared when it falls back to the GEMM core.
  std::optional<ChainPlan> chain;
  // Warm path: the other candidates' outcomes as the registry recorded them
  // (latest per variant, same tolerance and toolchain), so the report still
  // shows what the winner was chosen over.
  std::vector<CandidateOutcome> recorded;
  std::vector<Candidate> candidates;
  std::vector<SkippedVariant> skipped;
  bool from_registry = false;
  // The reused winner kept the registry's verification and timing (no worker ran):
  // nothing new to record.
  bool reused_verification = false;
  const PatternRealizer* realizer = nullptr;  // non-GEMM rules (pattern_realizer.hpp); null for GEMM patterns
};

std::string str(const json& obj, const char* key) {
  return obj.contains(key) && obj.at(key).is_string() ? obj.at(key).get<std::string>() : std::string();
}

std::string eta_text(double elapsed, int done, int total) {
  if (done <= 0 || done >= total) return "";
  return ", ETA " + log::format_seconds(elapsed / done * (total - done));
}

// `chain`: the pattern's epilogue chain, required by a variant with a chain key.
Candidate make_candidate(const GemmVariant& v, const std::string& target_arch, const ChainPlan* chain) {
  Candidate c;
  c.variant = v;
  c.name = v.name();
  c.math = token(v.math);
  c.flags = nvcc_flags(v.arch, target_arch);
  if (v.chain_key.empty()) {
    c.source = emit_variant_source(v);
  } else {
    if (!chain) throw std::invalid_argument(c.name + " runs an epilogue chain, but the pattern has none to emit");
    c.source = emit_chain_variant_source(v, *chain);
  }
  return c;
}

Candidate make_candidate(RealizerCandidate rc) {
  Candidate c;
  c.name = std::move(rc.name);
  c.math = std::move(rc.math);
  c.flags = std::move(rc.flags);
  c.source = std::move(rc.source);
  return c;
}

// RealizeOptions::filter: '|'-separated substrings, any of which a kept variant's name contains.
bool passes_filter(const std::string& name, const std::string& filter) {
  if (filter.empty()) return true;
  size_t begin = 0;
  while (true) {
    const size_t end = filter.find('|', begin);
    const std::string part = filter.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
    if (!part.empty() && name.find(part) != std::string::npos) return true;
    if (end == std::string::npos) return false;
    begin = end + 1;
  }
}

std::string filter_reason(const std::string& filter) {
  return fmt::format("no variant name contains the filter '{}'", filter);
}

// A rule realizer's candidates (LayerNorm, attention); a malformed payload falls back with its reason.
void enumerate_with_realizer(PatternWork& w, double tolerance, VariantSet set, const std::string& filter) {
  RealizerEnumeration e;
  try {
    e = w.realizer->enumerate(w.pattern, tolerance, w.arch, set);
  } catch (const std::exception& ex) {
    w.fallback_reason = ex.what();
    return;
  }
  w.skipped = e.skipped;
  for (auto& rc : e.candidates) {
    if (!passes_filter(rc.name, filter)) continue;
    w.candidates.push_back(make_candidate(std::move(rc)));
  }
  if (w.candidates.empty())
    w.fallback_reason = !e.reason.empty() ? e.reason : filter_reason(filter);
}

// Gives up fusing the pattern's epilogue chain: the kernel computes the GEMM core (§6).
void drop_chain(PatternWork& w) {
  w.chain.reset();
  w.pattern.erase("fused_epilogue");
  w.left_to_pytorch = reduce_to_gemm_core(w.pattern);
}

void enumerate_cold(PatternWork& w, double tolerance, VariantSet set, const std::string& filter) {
  w.candidates.clear();
  w.skipped.clear();
  w.from_registry = false;
  w.reused_verification = false;
  if (w.realizer) return enumerate_with_realizer(w, tolerance, set, filter);
  Enumeration e = enumerate_gemm_variants(*w.problem, tolerance, w.arch, set);
  if (w.chain) {
    Enumeration fused = chain_variants(e, *w.chain);
    if (!fused.variants.empty()) {
      e = std::move(fused);
    } else {
      // No sm90 variant is legal for this problem: the other families may still run its GEMM core.
      log::info("[realize] {}: {}; realizing its GEMM core with the epilogue chain in PyTorch", w.id, fused.reason);
      drop_chain(w);
    }
  }
  w.skipped = e.skipped;
  for (const auto& v : e.variants) {
    if (!passes_filter(v.name(), filter)) continue;
    w.candidates.push_back(make_candidate(v, w.arch, w.chain ? &*w.chain : nullptr));
  }
  if (w.candidates.empty())
    w.fallback_reason = !e.reason.empty() ? e.reason : filter_reason(filter);
}

// Re-enumerates `w` after a round in which none of its candidates passed: the candidates
// it tried stay first (and in the report); those enumerated again under the same name are
// dropped. Returns how many untried candidates it now has.
size_t reenumerate_keeping_tried(PatternWork& w, double tolerance, VariantSet set, const std::string& filter) {
  std::vector<Candidate> tried = std::move(w.candidates);
  std::set<std::string> tried_names;
  for (const auto& c : tried) tried_names.insert(c.name);
  enumerate_cold(w, tolerance, set, filter);
  w.candidates.erase(std::remove_if(w.candidates.begin(), w.candidates.end(),
                                    [&](const Candidate& c) { return tried_names.count(c.name) > 0; }),
                     w.candidates.end());
  const size_t fresh = w.candidates.size();
  w.candidates.insert(w.candidates.begin(), std::make_move_iterator(tried.begin()),
                      std::make_move_iterator(tried.end()));
  return fresh;
}

// The registry's winner for this pattern rebuilt as a candidate, or none when there is
// no winner or it no longer fits the pattern.
std::optional<Candidate> winner_candidate(const PatternWork& w, const Winner& winner, double tolerance) {
  if (w.realizer) {
    auto rc = w.realizer->candidate_named(w.pattern, winner.variant, tolerance, w.arch);
    if (!rc) return std::nullopt;
    return make_candidate(std::move(*rc));
  }
  auto variant = parse_variant_name(winner.variant);
  // A recorded winner computes what this pattern's binding needs only when both
  // run the same epilogue chain (fused) or neither does (GEMM core).
  const bool same_binding = variant && (w.chain ? variant->chain_key == w.chain->key8 : variant->chain_key.empty());
  if (!variant || !same_binding || variant_illegal_reason(*variant, *w.problem)) return std::nullopt;
  return make_candidate(*variant, w.arch, w.chain ? &*w.chain : nullptr);
}

// Warm path: a recorded winner whose library is already cached becomes the pattern's only
// candidate; the other outcomes recorded at the winner's tolerance and toolchain are kept,
// latest per variant, for the report. Unless `reverify`, the winner keeps the verification
// and timing recorded with it: the cache key covers its source, flags, templates and
// toolchain, so the cached library is the binary that was verified.
void adopt_cached_winner(PatternWork& w, const Registry& registry, double tolerance, const Toolchain& tc,
                         const std::string& cache_root, const std::string& toolchain_id, bool reverify) {
  auto winner = registry.find_winner(w.rule, w.dtype, w.arch, w.problem_key, tolerance);
  if (!winner) return;
  std::optional<Candidate> c = winner_candidate(w, *winner, tolerance);
  if (!c) return;
  const std::string key =
      kernel_cache_key(tc.cutlass_commit, tc.nvcc_version, c->flags, c->source,
                       templates_digest(tc.source_dir, c->source));
  if (!fs::exists(cached_library_path(cache_root, key, c->name))) return;
  w.candidates.push_back(std::move(*c));
  w.from_registry = true;
  std::map<std::string, CandidateOutcome> latest;  // outcomes_for is in recording order
  std::optional<CandidateOutcome> verified;        // the winner's own latest passing record
  for (auto& o : registry.outcomes_for(w.problem_key)) {
    if (o.tolerance != winner->tolerance || o.toolchain != toolchain_id) continue;
    if (o.variant == winner->variant) {
      if (o.status == "winner" || o.status == "ok") verified = o;
    } else {
      latest[o.variant] = std::move(o);
    }
  }
  for (auto& [name, o] : latest) w.recorded.push_back(std::move(o));
  Candidate& c0 = w.candidates[0];
  if (!reverify && verified && winner->median_ms > 0) {
    CandidateResult r;
    r.name = c0.name;
    r.status = "ok";
    r.median_ms = winner->median_ms;
    r.mean_ms = verified->mean_ms;
    r.baseline_median_ms = winner->baseline_ms;
    r.max_abs_err = verified->max_abs_err;
    r.fail_frac = verified->fail_frac;
    r.reason = "reused: verified and timed when recorded in the registry on " + verified->created_at;
    c0.result = std::move(r);
    w.reused_verification = true;
    log::info("[realize] {}: registry winner {} is cached and was verified on {}; reusing it (--reverify checks it "
              "again)", w.id, c0.name, verified->created_at);
  } else {
    log::info("[realize] {}: registry winner {} is cached; verifying it only", w.id, c0.name);
  }
}

// What makes two candidates one compile job: name, flags and source. The source
// is part of it because an EVT variant's name carries only the chain's key, so two
// patterns may emit different sources under one name (sharing by name once
// verified one pattern with the other's kernel).
std::string compile_identity(const Candidate& c) {
  std::string id = c.name;
  for (const auto& f : c.flags) id += " " + f;
  return id + "\n" + c.source;
}

// Compiles every not-yet-compiled candidate of `works` together (deduplicated by
// compile_identity), with live progress.
double compile_pending(std::vector<PatternWork*>& works, const Toolchain& tc, const std::string& cache_root,
                       int jobs) {
  std::vector<CompileJob> compile_jobs;
  std::map<std::string, size_t> index;  // compile_identity -> job
  for (auto* w : works)
    for (auto& c : w->candidates) {
      if (c.compiled || c.deferred) continue;
      const std::string id = compile_identity(c);
      if (!index.count(id)) {
        index[id] = compile_jobs.size();
        compile_jobs.push_back({c.name, c.source, c.flags});
      }
    }
  if (compile_jobs.empty()) return 0.0;
  const int effective_jobs = jobs > 0 ? jobs : env::jobs();
  log::info("[realize] compile: {} kernel(s), {} nvcc job(s) at once", compile_jobs.size(),
            std::min<size_t>(effective_jobs, compile_jobs.size()));
  log::Stopwatch clock;
  int cached = 0, failed = 0;
  auto results = compile_all(tc, cache_root, compile_jobs, effective_jobs,
                             [&](const CompileResult& r, int finished, int total) {
                               cached += r.cached ? 1 : 0;
                               failed += r.ok ? 0 : 1;
                               const std::string first = r.reason.substr(0, r.reason.find('\n'));
                               log::info("[realize] compile {}/{} ({} cached, {} failed) {} {} | {}{}", finished,
                                         total, cached, failed, r.ok ? "ok" : "FAILED", r.name,
                                         log::format_seconds(clock.seconds()),
                                         eta_text(clock.seconds(), finished, total));
                               if (!r.ok) log::debug("[realize]   {}: {}", r.name, first);
                             });
  for (auto* w : works)
    for (auto& c : w->candidates) {
      if (c.compiled || c.deferred) continue;
      c.compile = results[index[compile_identity(c)]];
      c.compiled = true;
    }
  return clock.seconds();
}

// Accuracy probes. The relaxed-only math modes (bf16, f16, tf32, bf16x3: admitted at 1e-2,
// not at 1e-4) pass or fail a pattern's verification by the mode's operand rounding, not
// by the tile or schedule, and on fp32 data they often fail DESIGN's accuracy rule. So of
// each such mode with several candidates only one (a split-family kernel where there is
// one: ~15 s of nvcc against ~45 s for a CUTLASS 3.x TU) is compiled and verified first;
// the others wait (Candidate::deferred). 16-bit I/O variants round no operand and are
// never held (variant_admitted). Returns the number held back.
int hold_for_probes(std::vector<PatternWork*>& works) {
  int held = 0;
  for (auto* w : works) {
    if (!w->problem || w->from_registry) continue;  // GEMM candidates only; a warm winner is alone
    std::map<MathMode, Candidate*> probe;
    for (auto& c : w->candidates) {
      const MathMode m = c.variant.math;
      if (c.compiled || variant_admitted(c.variant, ToleranceClass::Fp32Faithful)) continue;
      auto it = probe.find(m);
      if (it == probe.end()) {
        probe[m] = &c;
      } else if (c.variant.arch == KernelArch::Sm90Split && it->second->variant.arch != KernelArch::Sm90Split) {
        it->second->deferred = true;  // a cheaper probe of the same mode
        it->second = &c;
      } else {
        c.deferred = true;
      }
    }
    for (auto& c : w->candidates) held += c.deferred ? 1 : 0;
  }
  return held;
}

// After the probes ran: a held-back candidate whose mode's probe failed verification
// ("wrong") is skipped with that reason; every other one goes on (a probe that crashed
// or did not compile says nothing about the mode's accuracy).
void release_probed(std::vector<PatternWork*>& works) {
  for (auto* w : works) {
    std::map<MathMode, const Candidate*> failed;
    for (const auto& c : w->candidates)
      if (!c.deferred && c.result && c.result->status == "wrong") failed.emplace(c.variant.math, &c);
    std::vector<Candidate> kept;
    for (auto& c : w->candidates) {
      auto it = c.deferred ? failed.find(c.variant.math) : failed.end();
      if (it == failed.end()) {
        c.deferred = false;
        kept.push_back(std::move(c));
        continue;
      }
      w->skipped.push_back({c.name, fmt::format("not compiled: math mode {} failed this pattern's verification "
                                                "with {} ({})", c.math, it->second->name,
                                                it->second->result->reason)});
    }
    w->candidates = std::move(kept);
  }
}

// Verifies and times every compiled candidate of `works`, one worker job per pattern.
double verify_pending(std::vector<PatternWork*>& works, const std::string& ir, double tolerance,
                      const std::string& job_dir, const WorkerCommand& command) {
  int total = 0;
  for (auto* w : works)
    for (auto& c : w->candidates)
      if (c.compile.ok && !c.result) ++total;
  if (total == 0) return 0.0;
  log::info("[realize] verify + tune: {} candidate(s) over {} pattern(s)", total, works.size());
  log::Stopwatch clock;
  int verified = 0, tuned = 0;
  for (auto* w : works) {
    WorkerJob job;
    job.ir = ir;
    job.pattern = w->pattern;
    job.tolerance = tolerance;
    std::map<std::string, Candidate*> by_name;
    for (auto& c : w->candidates)
      if (c.compile.ok && !c.result) {
        job.candidates.push_back({c.name, c.compile.library, c.math});
        by_name[c.name] = &c;
      }
    if (job.candidates.empty()) continue;
    auto results = run_worker_job(job, command, job_dir, [&](const CandidateResult& r) {
      ++verified;
      if (r.status == "ok") ++tuned;
      log::info("[realize] verify {}/{} ({} passed+tuned) {} {}: {}{} | {}{}", verified, total, tuned, w->id, r.name,
                r.status, r.median_ms && r.status == "ok" ? fmt::format(" {:.4f} ms", *r.median_ms) : "",
                log::format_seconds(clock.seconds()), eta_text(clock.seconds(), verified, total));
    });
    for (auto& r : results)
      if (auto it = by_name.find(r.name); it != by_name.end()) it->second->result = r;
  }
  return clock.seconds();
}

// Candidates whose medians are within this fraction of the fastest one tie: repeated
// timings of one kernel on the H100 spread ~1%, so the order among them is noise.
constexpr double kTimeTieFraction = 0.01;

// The winner: the fastest verified candidate, except that among the candidates tied
// with it (kTimeTieFraction) the most accurate one (smallest max abs error) wins, the
// faster one at equal error. A tie goes to accuracy because it is free, and because
// it keeps modes consistent across patterns (bf16x3 and f16x3 pre kernels within 1%
// of each other: f16x3 wins, and neighbouring f16x3 GEMMs can hand operands over).
const Candidate* best_candidate(const PatternWork& w) {
  std::vector<const Candidate*> ok;
  for (const auto& c : w.candidates)
    if (c.result && c.result->status == "ok" && c.result->median_ms) ok.push_back(&c);
  if (ok.empty()) return nullptr;
  const auto ms = [](const Candidate* c) { return *c->result->median_ms; };
  const auto err = [](const Candidate* c) { return c->result->max_abs_err.value_or(HUGE_VAL); };
  const Candidate* fastest = *std::min_element(ok.begin(), ok.end(), [&](auto* a, auto* b) { return ms(a) < ms(b); });
  const Candidate* best = fastest;
  for (const Candidate* c : ok) {
    if (ms(c) > ms(fastest) * (1.0 + kTimeTieFraction)) continue;
    if (err(c) < err(best) || (err(c) == err(best) && ms(c) < ms(best))) best = c;
  }
  return best;
}

std::string candidate_status(const Candidate& c) {
  if (c.result) return c.result->status;
  if (c.compiled && !c.compile.ok) return "compile_error";
  if (c.compiled) return "compiled";
  return "not_compiled";
}

std::string candidate_reason(const Candidate& c) {
  if (c.result) return c.result->reason;
  if (c.compiled && !c.compile.ok) return c.compile.reason;
  return "";
}

RealizedPattern summarize(const PatternWork& w, bool compile_only) {
  RealizedPattern p;
  p.id = w.id;
  p.rule = w.rule;
  p.problem_key = w.problem_key;
  p.from_registry = w.from_registry;
  p.verification_reused = w.reused_verification;
  if (!w.left_to_pytorch.empty()) {
    p.bound_nodes = w.pattern.at("nodes").get<std::vector<std::string>>();
    p.bound_outputs = w.pattern.at("outputs").get<std::vector<std::string>>();
    p.left_to_pytorch = w.left_to_pytorch;
  }
  for (const auto& c : w.candidates) {
    RealizedCandidate rc;
    rc.name = c.name;
    rc.status = candidate_status(c);
    rc.reason = candidate_reason(c);
    if (c.result) {
      rc.median_ms = c.result->median_ms;
      rc.max_abs_err = c.result->max_abs_err;
      rc.fail_frac = c.result->fail_frac;
    }
    if (c.compile.ok) rc.library = c.compile.library;
    p.candidates.push_back(rc);
  }
  for (const auto& s : w.skipped) p.candidates.push_back({s.name, "skipped", s.reason, {}, {}, {}, ""});
  if (!w.fallback_reason.empty()) {
    p.status = "fallback";
    p.reason = w.fallback_reason;
    return p;
  }
  if (compile_only) {
    p.status = "fallback";
    int ok = 0;
    for (const auto& c : w.candidates) ok += c.compile.ok ? 1 : 0;
    p.reason = fmt::format("compile-only run: {} of {} candidate(s) compiled, none verified", ok, w.candidates.size());
    return p;
  }
  if (const Candidate* best = best_candidate(w)) {
    p.status = "realized";
    p.variant = best->name;
    p.library = best->compile.library;
    p.math = best->math;
    p.median_ms = best->result->median_ms;
    p.baseline_median_ms = best->result->baseline_median_ms;
    p.max_abs_err = best->result->max_abs_err;
    p.fail_frac = best->result->fail_frac;
    for (auto& rc : p.candidates)
      if (rc.name == best->name) rc.status = "winner";
    if (!best->variant.chain_key.empty() && w.pattern.contains("fused_epilogue"))
      p.fused_epilogue = w.pattern.at("fused_epilogue");
    // A kernel that is not faster than PyTorch on its own pattern would only slow the
    // module down: the pattern stays in PyTorch unless FACT_SLOWER=keep. The winner is
    // still recorded (record), so a warm run decides the same without timing again.
    if (p.median_ms && p.baseline_median_ms && *p.median_ms >= *p.baseline_median_ms &&
        !env::keep_slower_kernels()) {
      p.status = "fallback";
      p.reason = fmt::format("PyTorch is faster on this pattern: eager {:.4f} ms, the fastest verified kernel ({}) "
                             "{:.4f} ms; FACT_SLOWER=keep binds it anyway",
                             *p.baseline_median_ms, p.variant, *p.median_ms);
    }
    if (w.from_registry) {
      // What the re-verified winner was chosen over, as the registry recorded it.
      for (const auto& o : w.recorded) {
        RealizedCandidate rc;
        rc.name = o.variant;
        rc.status = o.status == "winner" ? "ok" : o.status;  // an earlier run's winner that lost since
        rc.reason = "recorded in the registry" + (o.created_at.empty() ? std::string() : " on " + o.created_at) +
                    (o.reason.empty() ? std::string() : ": " + o.reason);
        rc.median_ms = o.median_ms;
        rc.max_abs_err = o.max_abs_err;
        rc.fail_frac = o.fail_frac;
        p.candidates.push_back(std::move(rc));
      }
    }
    return p;
  }
  p.status = "fallback";
  p.reason = fallback_reason_from_candidates(p.candidates);
  return p;
}

void record(Registry& registry, const PatternWork& w, const RealizedPattern& p, double tolerance,
            const std::string& toolchain) {
  if (w.reused_verification) return;
  for (const auto& c : w.candidates) {
    CandidateOutcome o;
    o.rule = w.rule, o.dtype = w.dtype, o.arch = w.arch, o.problem_key = w.problem_key, o.shape_class = w.shape_class;
    o.tolerance = tolerance;
    o.variant = c.name;
    o.math = c.math;
    // The fastest verified candidate is the winner even where PyTorch was faster still
    // (summarize): a warm run then reuses its timing instead of tuning again.
    o.status = (!p.variant.empty() && p.variant == c.name) ? "winner" : candidate_status(c);
    o.reason = candidate_reason(c);
    if (c.result) {
      o.median_ms = c.result->median_ms, o.mean_ms = c.result->mean_ms;
      o.baseline_ms = c.result->baseline_median_ms;
      o.max_abs_err = c.result->max_abs_err, o.fail_frac = c.result->fail_frac;
    }
    o.toolchain = toolchain;
    registry.record_outcome(o);
  }
  if (!p.variant.empty()) {  // realized, or left to PyTorch as slower (summarize)
    Winner win;
    win.rule = w.rule, win.dtype = w.dtype, win.arch = w.arch, win.problem_key = w.problem_key;
    win.shape_class = w.shape_class, win.tolerance = tolerance;
    win.variant = p.variant, win.math = p.math;
    win.median_ms = p.median_ms.value_or(0.0);
    win.baseline_ms = p.baseline_median_ms.value_or(0.0);
    win.toolchain = toolchain;
    registry.record_winner(win);
  }
}

}  // namespace

// Why no kernel is built for a plan pattern whose cost model (discover's "cost") is
// memory-bound with no gain: eager already moves the bytes the best kernel would (a
// matrix-vector product, a K = 16 GEMM writing a large D), so every candidate would
// only be compiled and timed to lose (FACT_SLOWER's fallback). nullopt otherwise, and
// for plans without these fields.
static std::optional<std::string> no_expected_gain(const nlohmann::json& pattern) {
  const nlohmann::json cost = pattern.value("cost", nlohmann::json::object());
  if (!cost.value("memory_bound", false) || cost.value("expected_gain_ms", 1.0) > 0.0) return std::nullopt;
  return fmt::format("no kernel can beat PyTorch here: the pattern is memory-bound and eager already moves its "
                     "bytes (cost model: eager {:.4g} ms, best kernel {:.4g} ms); nothing built (FACT_SLOWER=keep "
                     "builds it anyway)",
                     cost.value("eager_ms_est", 0.0), cost.value("best_ms_est", 0.0));
}

// A plan pattern whose output is computed after the GEMM (an epilogue chain
// that is not fused into an sm90 EVT epilogue: a skip reason, another arch, or
// no EVT candidate passed) is realized as its GEMM core: the nodes up to and
// including the root, with D as the output; the chain's nodes stay in PyTorch
// and read D. Returns the chain's node ids (empty when the pattern's output
// already is D).
static std::vector<std::string> reduce_to_gemm_core(nlohmann::json& pattern) {
  const std::string d = pattern.at("gemm").at("d").value("tensor", "");
  const auto& outputs = pattern.value("outputs", nlohmann::json::array());
  if (outputs.size() == 1 && outputs[0] == d) return {};
  const std::string root = pattern.value("root", "");
  std::vector<std::string> core, chain;
  bool after_root = false;
  for (const auto& node : pattern.value("nodes", nlohmann::json::array())) {
    (after_root ? chain : core).push_back(node.get<std::string>());
    if (node == root) after_root = true;
  }
  if (!after_root) throw std::runtime_error("pattern root '" + root + "' is not among its nodes");
  pattern["nodes"] = core;
  pattern["outputs"] = nlohmann::json::array({d});
  return chain;
}

int run_realize(const RealizeOptions& options) {
  log::Stopwatch total_clock;
  // ---- plan ----
  json plan;
  {
    std::ifstream in(options.plan_path);
    if (!in) {
      log::error("realize: cannot read plan '{}'", options.plan_path);
      return 2;
    }
    plan = json::parse(in, nullptr, /*allow_exceptions=*/false);
  }
  if (!plan.is_object() || !plan.contains("fact_plan") || !plan.contains("patterns") ||
      !plan.at("patterns").is_array()) {
    log::error("realize: '{}' is not a FACT plan (expected {{\"fact_plan\": 1, \"patterns\": [...]}})",
               options.plan_path);
    return 2;
  }
  if (plan.at("fact_plan") != 1) {
    log::error("realize: plan version {} is not supported (this build reads version 1)", plan.at("fact_plan").dump());
    return 2;
  }
  const fs::path plan_abs = fs::absolute(options.plan_path);
  std::string ir = str(plan, "ir");
  if (!ir.empty() && fs::path(ir).is_relative()) ir = (plan_abs.parent_path() / ir).lexically_normal().string();
  double tolerance = options.tolerance ? *options.tolerance : plan.value("tolerance", 1e-4);
  VariantSet set;
  try {
    set = parse_variant_set(options.variant_set.empty() ? env::variants() : options.variant_set);
  } catch (const std::exception& e) {
    log::error("realize: {}", e.what());
    return 2;
  }

  // ---- toolchain ----
  std::string why;
  auto tc = resolve_toolchain(&why);
  if (!tc) {
    log::error("realize: {}", why);
    log::error("realize: `fact doctor` checks the whole setup; README.md has the one-line setup command.");
    return 3;
  }
  const std::string cache_root = env::cache_dir();
  const std::string toolchain_id = tc->id();
  log::info("[realize] toolchain: {} ({}); cache {}", toolchain_id, tc->cutlass_dir, cache_root);

  std::unique_ptr<Registry> registry;
  if (options.use_registry || !options.compile_only) {
    try {
      registry = std::make_unique<Registry>(options.registry_path.empty() ? Registry::default_path()
                                                                          : options.registry_path);
    } catch (const std::exception& e) {
      log::warn("realize: registry unavailable ({}); continuing without reuse or recording", e.what());
    }
  }

  // ---- patterns ----
  std::vector<PatternWork> works;
  for (const auto& pat : plan.at("patterns")) {
    PatternWork w;
    w.pattern = pat;
    w.id = str(pat, "id");
    w.rule = str(pat, "rule");
    w.dtype = str(pat, "dtype");
    w.arch = str(pat, "arch").empty() ? str(plan, "arch") : str(pat, "arch");
    if (w.arch.empty()) w.arch = env::arch();
    w.problem_key = str(pat, "problem_key");
    w.shape_class = str(pat, "shape_class");
    if (auto why = no_expected_gain(pat); why && !env::keep_slower_kernels()) {
      w.fallback_reason = *why;
    } else if (const PatternRealizer* realizer = find_pattern_realizer(w.rule)) {
      w.realizer = realizer;
    } else if (!pat.contains("gemm") || !pat.at("gemm").is_object()) {
      w.fallback_reason =
          fmt::format("no realizer for rule '{}' (realized rules: gemm, layernorm, attention)", w.rule);
    } else {
      try {
        std::string chain_skip;
        if (pat.contains("epilogue_chain")) {
          ChainPlan plan = plan_chain_epilogue(pat);
          if (w.arch != "sm90a" && w.arch != "sm90")
            chain_skip = fmt::format("arch {} has no EVT epilogue family (sm90a only)", w.arch);
          else
            chain_skip = plan.skip_reason;
          if (chain_skip.empty()) {
            w.pattern["fused_epilogue"] = fused_epilogue_json(plan);
            log::info("[realize] {}: fusing its epilogue chain ({} values, {} epilogue input(s)) into sm90 EVT "
                      "variants", w.id, plan.chain.at("values").size(), plan.inputs.size());
            w.chain = std::move(plan);
          }
        }
        if (!w.chain) {
          w.left_to_pytorch = reduce_to_gemm_core(w.pattern);
          if (!w.left_to_pytorch.empty())
            log::info("[realize] {}: realizing the GEMM core; its epilogue chain ({}) stays in PyTorch{}", w.id,
                      fmt::join(w.left_to_pytorch, ", "), chain_skip.empty() ? "" : ": " + chain_skip);
        }
        w.problem = gemm_problem_from_json(pat.at("gemm"));
      } catch (const std::exception& e) {
        w.fallback_reason = e.what();
      }
    }
    works.push_back(std::move(w));
  }

  // Warm path: a recorded winner whose library is already cached is verified alone.
  std::vector<PatternWork*> active;
  for (auto& w : works) {
    if (!w.problem && !w.realizer) continue;
    if (options.use_registry && registry && options.filter.empty()) {
      try {
        adopt_cached_winner(w, *registry, tolerance, *tc, cache_root, toolchain_id, options.reverify);
      } catch (const std::exception& e) {
        log::warn("realize: registry lookup for {} failed: {}", w.id, e.what());
      }
    }
    if (!w.from_registry) enumerate_cold(w, tolerance, set, options.filter);
    if (w.fallback_reason.empty()) active.push_back(&w);
  }

  // Relaxed-only math modes are probed first (hold_for_probes); a compile-only run cannot
  // verify, so it compiles everything.
  const int held = options.compile_only ? 0 : hold_for_probes(active);
  if (held > 0)
    log::info("[realize] {} candidate(s) of the relaxed math modes wait for one accuracy probe per mode", held);
  double compile_s = compile_pending(active, *tc, cache_root, options.jobs);
  double verify_s = 0.0;
  if (!options.compile_only) {
    const std::string job_dir = (fs::path(cache_root) / "jobs").string();
    const WorkerCommand command = default_worker_command();
    verify_s += verify_pending(active, ir, tolerance, job_dir, command);
    // One more compile + verify round over `round` (its pending candidates only).
    auto run_round = [&](std::vector<PatternWork*>& round) {
      if (round.empty()) return;
      compile_s += compile_pending(round, *tc, cache_root, options.jobs);
      verify_s += verify_pending(round, ir, tolerance, job_dir, command);
    };
    if (held > 0) {
      release_probed(active);
      run_round(active);
    }
    // A recorded winner that no longer passes: realize the pattern from scratch.
    std::vector<PatternWork*> retry;
    for (auto* w : active)
      if (w->from_registry && !best_candidate(*w)) {
        log::warn("[realize] {}: the registry winner did not pass again ({}); enumerating all candidates", w->id,
                  w->candidates.empty() ? "" : candidate_status(w->candidates[0]));
        enumerate_cold(*w, tolerance, set, options.filter);
        if (w->fallback_reason.empty()) retry.push_back(w);
      }
    run_round(retry);
    // A fused epilogue chain that no EVT candidate ran correctly: realize the GEMM
    // core instead (the chain stays in PyTorch); the EVT candidates stay in the report.
    std::vector<PatternWork*> core_retry;
    for (auto* w : active)
      if (w->chain && !best_candidate(*w)) {
        log::warn("[realize] {}: no EVT candidate passed; realizing its GEMM core with the epilogue chain in "
                  "PyTorch", w->id);
        drop_chain(*w);
        w->fallback_reason.clear();
        reenumerate_keeping_tried(*w, tolerance, set, options.filter);
        if (w->fallback_reason.empty()) core_retry.push_back(w);
      }
    run_round(core_retry);
    // A layernorm / attention pattern none of whose default-set candidates passed: widen to
    // every variant of its realizer (on sm90 the attention's sm80 family too) and try the
    // ones not tried yet; the tried ones stay in the report.
    std::vector<PatternWork*> widened;
    if (set == VariantSet::Default)
      for (auto* w : active)
        if (w->realizer && w->fallback_reason.empty() && !best_candidate(*w)) {
          const size_t fresh = reenumerate_keeping_tried(*w, tolerance, VariantSet::All, options.filter);
          if (fresh == 0) continue;
          log::warn("[realize] {}: no candidate of the default set passed; trying the {} other variant(s)", w->id,
                    fresh);
          widened.push_back(w);
        }
    run_round(widened);
  }

  // ---- results ----
  RealizedFile out;
  out.plan = plan_abs.string();
  out.ir = ir;
  out.tolerance = tolerance;
  int realized = 0;
  for (const auto& w : works) {
    RealizedPattern p = summarize(w, options.compile_only);
    if (registry && !options.compile_only && (w.problem || w.realizer) && w.fallback_reason.empty()) {
      try {
        record(*registry, w, p, tolerance, toolchain_id);
      } catch (const std::exception& e) {
        log::warn("realize: could not record {} in the registry: {}", w.id, e.what());
      }
    }
    realized += p.status == "realized" ? 1 : 0;
    log::info("[realize] {}: {}{}", p.id, p.status,
              p.status == "realized" ? fmt::format(" {} ({}, {:.4f} ms vs eager {:.4f} ms)", p.variant, p.math,
                                                   p.median_ms.value_or(0), p.baseline_median_ms.value_or(0))
                                     : " - " + p.reason.substr(0, p.reason.find('\n')));
    out.patterns.push_back(std::move(p));
  }
  out.compile_s = compile_s;
  out.verify_s = verify_s;
  out.total_s = total_clock.seconds();
  try {
    write_realized(out, options.output_path);
  } catch (const std::exception& e) {
    log::error("realize: {}", e.what());
    return 4;
  }
  log::info("[realize] done: {} of {} pattern(s) realized in {} -> {}", realized, works.size(),
            log::format_seconds(out.total_s), options.output_path);
  return 0;
}

}  // namespace fact
