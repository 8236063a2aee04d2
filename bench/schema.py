"""Results file of DESIGN.md ("Benchmark results"): build, check, merge, write.

    {"card": "NVIDIA H100 80GB HBM3", "date": "YYYY-MM-DD", "command": "...",
     "records": [{"workload", "system", "tolerance", "precision", "correct",
                  "median_ms", "mean_ms", ...}],
     "optimize": [{"workload", "cold_s", "warm_s", "host_cores", ...}]}

The keys above keep DESIGN.md's meanings; the harness adds fields (never
changes one): per record `passes`, `checks`, `error`, `compile_s`,
`speedup_vs_eager_fp32`, ...; per optimize entry `tolerance`, `cold_rc`, ...
`median_ms`/`mean_ms` are null only for a record that could not be timed
(`correct` false and a non-empty `error`). A `fact` record may carry
`ablation` (the setting's name, e.g. "all", "attention", "mlp": the module ran
with only those patterns bound); a record is identified by (workload, system,
tolerance, ablation). Torch-free: CPU tests import it.
"""
import datetime
import json
import math
import re
from pathlib import Path

# DESIGN.md's list of systems; a record naming anything else is a schema error.
SYSTEMS = (
    "fact", "eager-fp32", "eager-tf32", "eager-bf16", "eager-bf16-sdpa",
    "inductor-default", "inductor-default-bf16", "inductor-max-autotune",
    "inductor-max-autotune-bf16", "cublas-bf16",
)

_NUMBER = (int, float)
RECORD_FIELDS = {
    "workload": str, "system": str, "tolerance": _NUMBER, "precision": str,
    "correct": bool, "median_ms": _NUMBER, "mean_ms": _NUMBER,
}
OPTIMIZE_FIELDS = {"workload": str, "cold_s": _NUMBER, "warm_s": _NUMBER, "host_cores": int}

# Most specific pattern first: "GH200" contains "H200", "H100 PCIe" contains "H100".
_CARD_SLUGS = (
    (r"GH200", "gh200"),
    (r"H200\s*NVL", "h200-nvl"),
    (r"H200", "h200-sxm"),
    (r"H100\s*NVL", "h100-nvl"),
    (r"H100.*PCIe", "h100-pcie"),
    (r"H100", "h100-sxm"),
    (r"H800", "h800"),
    (r"A100.*PCIE", "a100-pcie"),
    (r"A100", "a100-sxm"),
    (r"L40S", "l40s"),
)


def card_slug(device_name):
    """Folder name of a card: 'NVIDIA H100 80GB HBM3' -> 'h100-sxm'; unknown cards are slugified."""
    for pattern, slug in _CARD_SLUGS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return slug
    words = re.sub(r"(?i)\bnvidia\b", " ", device_name)
    slug = re.sub(r"[^a-z0-9]+", "-", words.lower()).strip("-")
    return slug or "unknown-card"


def tol_key(tol):
    """Stable JSON key for a tolerance: 1e-4 -> '0.0001', 1e-2 -> '0.01'."""
    return format(float(tol), "g")


def today():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")


def make_results(card, command, records, optimize=None, date=None, **extra):
    """A results document; `extra` adds top-level fields (e.g. env, run_id)."""
    doc = {"card": card, "date": date or today(), "command": command, "records": list(records)}
    if optimize:
        doc["optimize"] = list(optimize)
    doc.update(extra)
    return doc


def _check_fields(entry, fields, where, problems):
    for key, typ in fields.items():
        if key not in entry:
            problems.append(f"{where}: missing '{key}'")
            continue
        value = entry[key]
        # bool is an int subclass: a True in a number field is still a mistake.
        if isinstance(value, bool) and typ is not bool:
            problems.append(f"{where}: '{key}' is a bool, expected {typ}")
        elif not isinstance(value, typ):
            problems.append(f"{where}: '{key}' has type {type(value).__name__}")


def validate_results(doc):
    """List of schema problems of a results document (empty when it is valid)."""
    problems = []
    if not isinstance(doc, dict):
        return ["document is not a JSON object"]
    for key in ("card", "command"):
        if not isinstance(doc.get(key), str) or not doc.get(key):
            problems.append(f"'{key}' must be a non-empty string")
    if not isinstance(doc.get("date"), str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", doc.get("date", "")):
        problems.append("'date' must be YYYY-MM-DD")
    records = doc.get("records")
    if not isinstance(records, list):
        problems.append("'records' must be a list")
        records = []
    seen = set()
    for i, rec in enumerate(records):
        where = f"records[{i}]"
        if not isinstance(rec, dict):
            problems.append(f"{where}: not an object")
            continue
        untimed = (rec.get("median_ms") is None or rec.get("mean_ms") is None)
        fields = dict(RECORD_FIELDS)
        if untimed:
            if rec.get("correct") is not False or not rec.get("error"):
                problems.append(f"{where}: null times need correct=false and an 'error'")
            fields.pop("median_ms")
            fields.pop("mean_ms")
        _check_fields(rec, fields, where, problems)
        if rec.get("system") not in SYSTEMS:
            problems.append(f"{where}: unknown system {rec.get('system')!r}")
        tol = rec.get("tolerance")
        if isinstance(tol, _NUMBER) and not isinstance(tol, bool) and not tol > 0:
            problems.append(f"{where}: tolerance must be > 0")
        for key in ("median_ms", "mean_ms"):
            v = rec.get(key)
            if isinstance(v, _NUMBER) and not isinstance(v, bool) and not v > 0:
                problems.append(f"{where}: {key} must be > 0")
        if "ablation" in rec:
            ablation = rec["ablation"]
            if not isinstance(ablation, str) or not ablation:
                problems.append(f"{where}: 'ablation' must be a non-empty string (the setting's name)")
            if rec.get("system") != "fact":
                problems.append(f"{where}: only fact records have an 'ablation', not {rec.get('system')!r}")
        ident = (rec.get("workload"), rec.get("system"), rec.get("tolerance"), rec.get("ablation"))
        if ident in seen:
            problems.append(f"{where}: duplicate record {ident}")
        seen.add(ident)
    if "optimize" in doc:
        if not isinstance(doc["optimize"], list):
            problems.append("'optimize' must be a list")
        else:
            for i, entry in enumerate(doc["optimize"]):
                if not isinstance(entry, dict):
                    problems.append(f"optimize[{i}]: not an object")
                    continue
                _check_fields(entry, OPTIMIZE_FIELDS, f"optimize[{i}]", problems)
    return problems


def merge_results(old, new):
    """`new` plus the records/optimize entries of `old` for workloads `new` does not cover.

    A workload's systems always come from one run (DESIGN.md: claims compare
    systems of one run), so merging replaces whole workloads, never single
    records. Refuses (ValueError) to merge files of different cards.
    """
    if old.get("card") != new.get("card"):
        raise ValueError(f"cannot merge results of '{old.get('card')}' into '{new.get('card')}'")
    covered = {r["workload"] for r in new["records"]}
    merged = dict(new)
    kept = [r for r in old.get("records", []) if r.get("workload") not in covered]
    merged["records"] = kept + list(new["records"])
    new_opt = {(e.get("workload"), e.get("tolerance")) for e in new.get("optimize", [])}
    opt = [e for e in old.get("optimize", []) if (e.get("workload"), e.get("tolerance")) not in new_opt]
    opt += list(new.get("optimize", []))
    if opt:
        merged["optimize"] = opt
    runs = list(old.get("runs") or [{"date": old.get("date"), "command": old.get("command"),
                                     "workloads": sorted({r.get("workload") for r in old.get("records", [])})}])
    runs.append({"date": new.get("date"), "command": new.get("command"), "workloads": sorted(covered)})
    merged["runs"] = runs
    return merged


def results_path(out_dir, card, suite):
    return Path(out_dir) / card_slug(card) / f"{suite}.json"


def _json_safe(value):
    """Non-finite floats (an error of a NaN output) as strings: JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def load_results(path):
    """The results document at `path`, or None when there is none."""
    path = Path(path)
    if not path.exists():
        return None
    with open(path) as f:
        return json.load(f)


def write_results(out_dir, suite, doc, base=None):
    """Validate and write `doc` to OUT_DIR/<card slug>/<suite>.json; returns the path.

    With `base` (the file's content before this run, from load_results) the
    workloads this run did not cover are kept (merge_results). Pass the same
    base to every incremental write of one run. Raises ValueError listing the
    problems of an invalid document; nothing is written then.
    """
    path = results_path(out_dir, doc["card"], suite)
    if base is not None:
        doc = merge_results(base, doc)
    doc = _json_safe(doc)
    problems = validate_results(doc)
    if problems:
        raise ValueError("results do not match DESIGN.md's schema:\n  " + "\n  ".join(problems))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2, allow_nan=False)
        f.write("\n")
    tmp.replace(path)
    return path


def load_optimize_times(path):
    """Entries of the optimize-times JSON list that scripts/gpu_run.sh writes; ValueError if malformed."""
    with open(path) as f:
        entries = json.load(f)
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a JSON list of optimize entries")
    problems = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            problems.append(f"{path}[{i}]: not an object")
        else:
            _check_fields(entry, OPTIMIZE_FIELDS, f"{path}[{i}]", problems)
    if problems:
        raise ValueError("\n".join(problems))
    return entries
